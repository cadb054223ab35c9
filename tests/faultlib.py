"""Helpers of the fault-injection suite (tests/test_faults_*.py): seeds, processes, small file systems,
restartable servers.

Every fault test draws its schedule from `fault_rng`, which prints ``seed=N``; set
``VISIONLAKE_FAULT_SEED=N`` to replay a failing run with the same schedule.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from itertools import islice
from pathlib import Path

import pytest
import sqlalchemy as sa
from media import sample
from servers.kafka import KafkaBroker, _accepts, free_port
from servers.s3 import _PORT_FLAGS, SeaweedServer, _free_ports, s3_filesystem

from visionlake.ingest.publish import ingest
from visionlake.ingest.sources import VideoFileSource
from visionlake.lake import Lake
from visionlake.log import open_log

SEED_ENV = "VISIONLAKE_FAULT_SEED"


# --- seeds -----------------------------------------------------------------------------------------


def fault_rng(name: str) -> tuple[random.Random, int]:
    """A random schedule for one test: the seed comes from VISIONLAKE_FAULT_SEED or is drawn, and printed."""
    env = os.environ.get(SEED_ENV)
    seed = int(env) if env else random.SystemRandom().randrange(2**31)
    print(f"seed={seed} ({name}; replay with {SEED_ENV}={seed})")
    return random.Random(seed), seed


# --- waiting ---------------------------------------------------------------------------------------


def wait_for(pred: Callable[[], object], timeout: float = 60.0, what: str = "condition", every: float = 0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


# --- the lake --------------------------------------------------------------------------------------


def publish(
    lake: Lake, camera: str, n: int, video: str = "vtest.avi", size=(160, 120), start: int = 0
) -> int:
    """Frames `start` to `start + n` of a sample video, published in-process for `camera`."""
    src = VideoFileSource(sample(video), resize=size)
    return ingest(lake, islice(src, start, start + n), camera).frames


def scalar(lake: Lake, sql: str, default=0):
    """One value from the catalog, `default` while it cannot be read (schema missing, server down)."""
    try:
        with lake.catalog.engine.connect() as conn:
            return conn.execute(sa.text(sql)).scalar()
    except Exception:  # noqa: BLE001 - a test polling through an outage
        return default


def results_count(lake: Lake) -> int:
    return scalar(lake, "SELECT count(*) FROM results") or 0


def kafka_url(bootstrap: str, prefix: str | None = None, **options: object) -> str:
    """A kafka:// URL with a private topic namespace and visionlake options in the query."""
    opts = {"topic_prefix": prefix or f"f{uuid.uuid4().hex[:10]}.", **options}
    return f"kafka://{bootstrap}?" + "&".join(f"{k}={v}" for k, v in opts.items())


#: Kafka options of the fault tests: a killed member's partitions move after 1 s, not 6.
FAST_GROUP = {"session_timeout": 1, "heartbeat_interval": 0.3}


def log_opener(lake: Lake) -> Callable:
    """Opens another client of the lake's log (for a thread of its own)."""
    settings = lake.settings
    return lambda: open_log(settings.log, **settings.log_options)


# --- processes -------------------------------------------------------------------------------------


_RUNNING: list[VL] = []


def reap_processes() -> Iterator[None]:
    """For an autouse fixture: SIGKILL whatever `VL` process a test left running (a failed test)."""
    yield
    while _RUNNING:
        proc = _RUNNING.pop()
        if proc.poll() is None:
            proc.kill9()


class VL:
    """One `python -m visionlake` process; stdout and stderr go to files (no pipe can fill up)."""

    def __init__(self, argv: list[str], workdir: Path, name: str, env: dict | None = None, **popen) -> None:
        _RUNNING.append(self)
        workdir.mkdir(parents=True, exist_ok=True)
        self.argv = argv
        self.out_path = workdir / f"{name}.out"
        self.err_path = workdir / f"{name}.err"
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(
                argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env, **popen
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def poll(self) -> int | None:
        return self.proc.poll()

    def kill9(self) -> int:
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGKILL)
        return self.proc.wait(30)

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
        self.kill9()
        raise AssertionError(f"{self.argv[3:]} did not finish within {timeout:g} s:\n{self.stderr()[-3000:]}")

    def stdout(self) -> str:
        return self.out_path.read_text(errors="replace")

    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")


def vl_argv(
    lake: Lake, *args: str, log: str | None = None, catalog: str | None = None, archive: str | None = None
) -> list[str]:
    argv = [sys.executable, "-m", "visionlake", "--lake", str(lake.root)]
    for flag, value in (("--log", log), ("--catalog", catalog), ("--archive", archive)):
        if value:
            argv += [flag, value]
    return argv + list(args)


def no_traceback(stderr: str, what: str) -> None:
    assert "Traceback (most recent call last)" not in stderr, (
        f"{what} died with a traceback:\n{stderr[-4000:]}"
    )


# --- a small file system that fills up -------------------------------------------------------------


class SmallFS:
    """A tmpfs of `size_kib` mounted at `path` (needs root and mount rights); `fill` leaves little room."""

    def __init__(self, path: Path, size_kib: int) -> None:
        self.path = path
        self.size_kib = size_kib
        self.mounted = False
        self.filler = path / ".filler"

    @staticmethod
    def why_not(probe: Path) -> str | None:
        """None when a tmpfs can be mounted here, else the reason."""
        if os.geteuid() != 0:
            return "mounting a small tmpfs needs root"
        probe.mkdir(parents=True, exist_ok=True)
        try:
            done = subprocess.run(
                ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(probe)],
                capture_output=True,
                text=True,
            )
        except OSError as e:
            return f"cannot run mount: {e}"
        if done.returncode != 0:
            return f"mount -t tmpfs failed: {(done.stderr or done.stdout).strip()}"
        subprocess.run(["umount", str(probe)], capture_output=True)
        return None

    def mount(self) -> SmallFS:
        self.path.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={self.size_kib}k", "tmpfs", str(self.path)],
            check=True,
            capture_output=True,
        )
        self.mounted = True
        return self

    def free_bytes(self) -> int:
        st = os.statvfs(self.path)
        return st.f_bavail * st.f_frsize

    def fill(self, leave: int = 0) -> None:
        """Grow the filler file until only about `leave` bytes are free."""
        with open(self.filler, "ab") as f:
            chunk = b"\0" * 65536
            while self.free_bytes() > leave + len(chunk):
                f.write(chunk)
                f.flush()
            rest = self.free_bytes() - leave
            if rest > 0:
                with contextlib.suppress(OSError):
                    f.write(b"\0" * rest)
                    f.flush()

    def make_room(self) -> None:
        self.filler.unlink(missing_ok=True)

    def umount(self) -> None:
        if self.mounted:
            subprocess.run(["umount", "-l", str(self.path)], capture_output=True)
            self.mounted = False


def small_filesystems(tmp_path: Path) -> Iterator[Callable[[str, int], SmallFS]]:
    """For a fixture: makes small tmpfs file systems under tmp_path (`make(name, size_kib, why_tmpfs)`),
    skipping the test with the reason (and why no fallback works) when mounting is refused; unmounts
    them all at the end."""
    made: list[SmallFS] = []
    reason = SmallFS.why_not(tmp_path / ".mount-probe")

    def make(name: str, size_kib: int, why_tmpfs: str = "") -> SmallFS:
        if reason:
            pytest.skip(f"cannot mount a small tmpfs here ({reason}); no fallback: {why_tmpfs}")
        fs = SmallFS(tmp_path / name, size_kib).mount()
        made.append(fs)
        return fs

    make.reason = reason  # type: ignore[attr-defined]
    yield make
    for fs in made:
        fs.umount()


# --- restartable servers ---------------------------------------------------------------------------


class PersistentKafkaBroker(KafkaBroker):
    """tansu keeping its topics, offsets and groups in S3 (a SeaweedFS bucket): a restart keeps them.

    The suite's usual broker stores in memory, so a restarted one is empty; with `s3://` storage a
    SIGKILL and a start on the same port is a real broker outage that loses nothing.
    """

    def __init__(self, workdir: Path, s3: SeaweedServer, bucket: str) -> None:
        super().__init__(workdir)
        self.s3 = s3
        self.bucket = bucket

    def start(self, port: int | None = None, timeout: float = 15.0) -> PersistentKafkaBroker:
        self.port = port or self.port or free_port()
        listener = f"tcp://127.0.0.1:{self.port}"
        self.workdir.mkdir(parents=True, exist_ok=True)
        env = dict(
            os.environ,
            AWS_ACCESS_KEY_ID=self.s3.key,
            AWS_SECRET_ACCESS_KEY=self.s3.secret,
            AWS_ENDPOINT=self.s3.endpoint_url,
            AWS_ALLOW_HTTP="true",
            AWS_DEFAULT_REGION="us-east-1",
        )
        with open(self.workdir / "tansu.log", "ab") as logfile:
            self.proc = subprocess.Popen(
                [
                    str(self.binary),
                    "broker",
                    "--listener-url",
                    listener,
                    "--advertised-listener-url",
                    listener,
                    "--storage-engine",
                    f"s3://{self.bucket}/",
                ],
                cwd=self.workdir,
                stdout=logfile,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            if _accepts(self.port):
                return self
            time.sleep(0.02)
        tail = (self.workdir / "tansu.log").read_text(errors="replace")[-2000:]
        self.stop()
        raise RuntimeError(f"tansu (s3 storage) did not start on port {self.port}:\n{tail}")

    def restart(self) -> PersistentKafkaBroker:
        self.stop()
        return self.start(self.port)


class RestartableSeaweed(SeaweedServer):
    """A SeaweedServer whose master elects itself in 1 s after a restart (the default 10 s election
    timeout makes a restart on the same data take some 20 s)."""

    EXTRA_FLAGS = {"-master.electionTimeout": "1s"}

    def start(self, timeout: float = 30.0, keep_ports: bool = False) -> RestartableSeaweed:
        # the base class passes every entry of `ports` as a flag: the extra settings ride along
        for _attempt in range(3):
            if not (keep_ports and self.ports):
                self.ports = dict(zip(_PORT_FLAGS, _free_ports(len(_PORT_FLAGS)), strict=True))
            self.ports.update(self.EXTRA_FLAGS)  # type: ignore[arg-type]
            try:
                super().start(timeout, keep_ports=True)
                return self
            except RuntimeError:
                if keep_ports:
                    raise
        raise RuntimeError("SeaweedFS did not start on three sets of free ports")


def restartable_seaweed(tmp_path_factory) -> Iterator[SeaweedServer]:
    """For a fixture: a SeaweedFS of its own, to kill and start again (same ports, same data)."""
    try:
        import s3fs  # noqa: F401
    except ImportError:
        pytest.skip("s3fs not installed: pip install 'visionlake[s3]'")
    server = RestartableSeaweed(tmp_path_factory.mktemp("seaweedfs-faults"))
    server.start()
    try:
        yield server
    finally:
        server.kill()


def make_bucket(server: SeaweedServer) -> str:
    name = f"vl-{uuid.uuid4().hex[:12]}"
    s3_filesystem(server.info()).mkdir(name)
    return name


# --- crash points: a real SIGKILL, or a disk filling up, at an exact step of the worker -------------

#: steps of a worker's batch where a fault can be placed (the real step still runs)
CRASH_POINTS = {
    "archive-put": ("visionlake.archive", "Archive", "put"),  # one image stored, the rest not yet
    "catalog-write": ("visionlake.workers.worker", "Worker", "_persist"),  # images and rows stored
    "publish": ("visionlake.workers.worker", "Worker", "_publish"),  # events and dead letters flushed
    "commit": ("visionlake.workers.checkpoint", "Checkpoint", "commit"),  # offsets committed
}


#: the step of a shared worker (`worker --shared`) that takes the place of the offset commit
SHARE_CRASH_POINTS = {
    **{k: v for k, v in CRASH_POINTS.items() if k != "commit"},
    "acknowledge": ("visionlake.workers.checkpoint", "ShareCheckpoint", "commit"),  # records acknowledged
}


def crash_argv(point: str, nth: int, argv: list[str], action: str = "kill") -> list[str]:
    """`argv` (a `vl_argv` command line) run with a fault at the `nth` call of the step `point`:

    - ``kill``: the process SIGKILLs itself right after the step returned;
    - ``fill:PATH``: right before the step, the file system holding PATH is filled up by writing
      PATH (the test deletes it to make room again).
    """
    assert point in {**CRASH_POINTS, **SHARE_CRASH_POINTS} and argv[1:3] == ["-m", "visionlake"], (
        point,
        argv,
    )
    spec = f"{point}:{nth}:{action}"
    return [sys.executable, str(Path(__file__).resolve()), "--fault", spec, "--", *argv[3:]]


def fill_up(path: str) -> None:
    """Write `path` until its file system has no room left (ENOSPC), whatever the block size."""
    with open(path, "ab", buffering=0) as f:
        for size in (1 << 20, 1 << 16, 1 << 12, 1 << 9, 1):
            try:
                while True:
                    f.write(b"\0" * size)
            except OSError:
                pass


def _run_with_fault(spec: str, args: list[str]) -> None:
    import importlib

    point, nth, action = spec.split(":", 2)
    module, cls_name, method = {**CRASH_POINTS, **SHARE_CRASH_POINTS}[point]
    cls = getattr(importlib.import_module(module), cls_name)
    real = getattr(cls, method)
    calls = {"n": 0}

    def step(*a, **kw):
        calls["n"] += 1
        hit = calls["n"] == int(nth)
        if hit and action.startswith("fill:"):
            fill_up(action.removeprefix("fill:"))
        out = real(*a, **kw)
        if hit and action == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        return out

    setattr(cls, method, step)
    from visionlake.cli import main

    sys.argv = ["visionlake", *args]
    main()


if __name__ == "__main__":  # python tests/faultlib.py --fault POINT:N:ACTION -- <visionlake arguments>
    assert sys.argv[1] == "--fault" and sys.argv[3] == "--", sys.argv
    _run_with_fault(sys.argv[2], sys.argv[4:])
