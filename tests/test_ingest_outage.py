"""A camera that goes away while it is being ingested: frames received before the outage reach the log
at once, SIGTERM ends the ingest promptly (exit 0, nothing lost), and every reconnect attempt shows.

Real components only: the MJPEG "IP camera" of test_ingest_sources (an HTTP server in a thread, read by
OpenCV's FFmpeg backend), the embedded frame log, and `python -m visionlake` as a subprocess.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import pytest
from test_ingest_sources import VTEST, MjpegServer

from visionlake.ingest import CameraSource
from visionlake.ingest.publish import ingest
from visionlake.lake import FRAMES_TOPIC, Lake

pytestmark = pytest.mark.skipif(
    not VTEST.exists(), reason="needs Debian's opencv-doc sample data (apt-get install opencv-doc)"
)

PER_CONNECTION = 5


class FlakyCamera(MjpegServer):
    """Serves `PER_CONNECTION` frames on the connections numbered in `up` (1, 2, ...); the others get
    503, as a camera that is down. The URL stays the same, so the camera can come back."""

    def __init__(self, jpegs: list[bytes], up: set[int]) -> None:
        self.up = up
        super().__init__(jpegs, per_connection=PER_CONNECTION)

    def serve(self, handler) -> None:
        if self.connections + 1 not in self.up:
            self.connections += 1
            handler.send_error(503)
            return
        super().serve(handler)


@pytest.fixture(scope="module")
def jpegs() -> list[bytes]:
    cap = cv2.VideoCapture(str(VTEST))
    out = []
    for _ in range(PER_CONNECTION):
        ok, image = cap.read()
        assert ok
        out.append(cv2.imencode(".jpg", cv2.resize(image, (320, 240)))[1].tobytes())
    cap.release()
    return out


@pytest.fixture
def camera(jpegs: list[bytes]) -> Iterator[Callable[[set[int]], FlakyCamera]]:
    servers: list[FlakyCamera] = []

    def start(up: set[int]) -> FlakyCamera:
        servers.append(FlakyCamera(jpegs, up))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


def frames_on_log(lake_dir: Path, timeout: float = 0.5) -> int:
    """Frame records a separate reader of the lake finds now (what survives a kill -9 of the ingest)."""
    with Lake(lake=lake_dir) as lake:
        if FRAMES_TOPIC not in {t.name for t in lake.log.topics()}:
            return 0
        with lake.log.consumer([FRAMES_TOPIC]) as consumer:
            count = 0
            while batch := consumer.poll(100, timeout=timeout):
                count += len(batch)
            return count


def wait_for(what: Callable[[], object], timeout: float, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if what():
            return True
        time.sleep(step)
    return bool(what())


def test_frames_before_an_outage_reach_the_log_while_reconnecting(camera, tmp_path: Path) -> None:
    server = camera({1})  # five frames, then down for good
    lake_dir = tmp_path / "lake"
    source = CameraSource(server.url, backoff_initial=0.05, backoff_max=0.2, open_timeout=3, stall_timeout=3)
    stop = threading.Event()
    result: dict = {}

    def run() -> None:
        with Lake(lake=lake_dir) as lake:
            result["stats"] = ingest(lake, source, "cam1", should_stop=stop.is_set)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        assert wait_for(lambda: server.connections >= 2, 10), "the stream never dropped"
        outage = time.monotonic()
        # Without a timer, the last frames wait in memory for a next frame that does not come.
        assert wait_for(lambda: frames_on_log(lake_dir, 0.1) == PER_CONNECTION, 2), frames_on_log(lake_dir)
        assert time.monotonic() - outage < 2.5
        assert wait_for(lambda: server.connections >= 3, 2)  # and it keeps reconnecting
        assert thread.is_alive()
        stop.set()
        thread.join(3)
        assert not thread.is_alive(), "the ingest did not stop while the camera was down"
    finally:
        stop.set()
        server.up = set(range(1000))  # an ingest that ignores the stop flag at least sees a frame
        thread.join(10)
    assert result["stats"].frames == PER_CONNECTION
    assert source.stopped_reason is None


def test_sigterm_during_outage_ends_the_cli_promptly_with_everything_flushed(camera, tmp_path: Path) -> None:
    # Up, down twice, up again (the 3rd reconnect attempt succeeds), then down for good.
    server = camera({1, 4})
    lake_dir = tmp_path / "lake"
    env = {k: v for k, v in os.environ.items() if not k.startswith("VISIONLAKE_")}
    env["COLUMNS"] = "1000"  # Rich would wrap long log lines
    cmd = [sys.executable, "-m", "visionlake", "--lake", str(lake_dir), "ingest", "camera", server.url]
    proc = subprocess.Popen(
        [*cmd, "--camera", "cam1", "--format", "json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stderr.readline, "")), daemon=True)
    reader.start()

    def attempts() -> list[str]:
        return [line for line in list(lines) if "reconnecting in" in line]

    try:
        # First outage (default backoff: 0.5 s, 1 s): the five frames are durable while it lasts.
        assert wait_for(lambda: len(attempts()) >= 2, 15), "".join(lines)
        assert proc.poll() is None
        assert wait_for(lambda: frames_on_log(lake_dir, 0.1) == PER_CONNECTION, 2)
        # The camera comes back, then goes away again; SIGTERM arrives in the second outage.
        assert wait_for(lambda: any("reconnected" in line for line in list(lines)), 15), "".join(lines)
        assert wait_for(lambda: len(attempts()) >= 5, 15), "".join(lines)
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        out, _ = proc.communicate(timeout=10)
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    reader.join(5)
    stderr = "".join(lines)
    assert proc.returncode == 0, stderr
    assert took < 3, f"SIGTERM took {took:.1f} s"
    assert json.loads(out)["frames"] == 2 * PER_CONNECTION
    assert frames_on_log(lake_dir) == 2 * PER_CONNECTION
    # Every attempt and the reconnect show at the default verbosity, in order.
    shown = [line for line in lines if "reconnect" in line]
    assert [("(attempt" in line, "reconnected after 3 attempts" in line) for line in shown[:4]] == [
        (True, False),
        (True, False),
        (True, False),
        (False, True),
    ], stderr
    assert [f"(attempt {n})" in line for n, line in zip([1, 2, 3, 1, 2], attempts(), strict=False)] == [
        True
    ] * 5, stderr
