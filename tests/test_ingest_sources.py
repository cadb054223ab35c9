"""Frame sources and the motion gate, on real media with real OpenCV (no mocks).

Media: Debian's opencv-doc examples (vtest.avi: 795 frames 768x576 at 10 fps; Megamind.avi:
270 frames 720x528 at 23.976 fps; sample JPEG/PNG images). Camera tests stream MJPEG over HTTP
from a small server in a thread, which OpenCV's FFmpeg backend reads like an IP camera.
"""

from __future__ import annotations

import hashlib
import http.server
import itertools
import logging
import os
import shutil
import socket
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cv2
import numpy as np
import pytest

from visionlake.errors import InputError, SourceError, SourceUnreachable
from visionlake.ingest import (
    CameraSource,
    CapturedFrame,
    ImageFolderSource,
    MotionGate,
    SkippedFile,
    VideoFileSource,
    parse_size,
)

DATA = Path("/usr/share/doc/opencv-doc/examples/data")
VTEST = DATA / "vtest.avi"
MEGAMIND = DATA / "Megamind.avi"

pytestmark = pytest.mark.skipif(
    not VTEST.exists(), reason="needs Debian's opencv-doc sample data (apt-get install opencv-doc)"
)


@pytest.fixture(scope="module")
def vtest_frames() -> list[np.ndarray]:
    """The first 60 frames of vtest.avi, read with a bare OpenCV loop."""
    cap = cv2.VideoCapture(str(VTEST))
    frames = []
    for _ in range(60):
        ok, image = cap.read()
        assert ok
        frames.append(image)
    cap.release()
    return frames


# --- parse_size --------------------------------------------------------------------------------


def test_parse_size() -> None:
    assert parse_size("640x480") == (640, 480)
    assert parse_size(" 320 X 240 ") == (320, 240)
    assert parse_size(None) is None
    for bad in ["640", "640x", "x480", "0x480", "640x-1", "axb", "640x480x3", "99999x10", ""]:
        with pytest.raises(InputError, match="invalid size") as info:
            parse_size(bad)
        assert repr(bad) in str(info.value)


# --- video files -------------------------------------------------------------------------------


def test_video_file_counts_and_deterministic_times() -> None:
    start = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    src = VideoFileSource(VTEST, start_time=start)
    assert src.native_fps == pytest.approx(10.0)
    assert src.frame_count == 795
    assert src.size == (768, 576)

    def summary() -> list[tuple[int, datetime, str]]:
        out = []
        for frame in src:
            assert frame.image.shape == (576, 768, 3) and frame.image.dtype == np.uint8
            assert frame.data is None
            out.append((frame.seq, frame.captured_at, frame.source))
        return out

    first = summary()
    assert len(first) == 795
    assert [seq for seq, _, _ in first] == list(range(795))
    assert first[0][1] == start
    assert first[10][1] == start + timedelta(seconds=1)
    assert first[-1][1] == start + timedelta(milliseconds=79400)
    assert all(ts.tzinfo is not None and ts.utcoffset() == timedelta(0) for _, ts, _ in first)
    assert first[12][2] == f"{VTEST}#frame=12"
    assert summary() == first  # iterating again gives the same frames


def test_video_file_default_start_is_mtime_and_times_increase() -> None:
    # Megamind.avi reports a position of 0.0 for its last frame: times must still increase.
    src = VideoFileSource(MEGAMIND)
    mtime = datetime.fromtimestamp(MEGAMIND.stat().st_mtime_ns / 1e9, UTC)
    times = [(f.seq, f.captured_at) for f in src]
    assert len(times) == 270
    assert times[0][1] >= mtime and times[0][1] - mtime < timedelta(seconds=1)
    assert all(a[1] < b[1] for a, b in itertools.pairwise(times))
    assert times[-1][1] - times[0][1] == pytest.approx(timedelta(seconds=269 / 23.976), abs=timedelta(0.05))
    assert [(f.seq, f.captured_at) for f in src] == times


def test_video_file_fps_sampling_keeps_original_indexes() -> None:
    src = VideoFileSource(VTEST, fps=5, start_time=datetime(2024, 1, 1, tzinfo=UTC))
    assert src.expected_frames == 398
    seqs = [frame.seq for frame in src]
    assert len(seqs) == 398
    assert seqs == list(range(0, 795, 2))
    # Asking for more than the source rate gives every frame, never more.
    fast = VideoFileSource(MEGAMIND, fps=100)
    assert sum(1 for _ in fast) == 270
    # Sampling Megamind (23.976 fps) at 2 fps: about one frame in twelve.
    slow = [f.seq for f in VideoFileSource(MEGAMIND, fps=2)]
    assert len(slow) in range(22, 25)
    assert all(11 <= b - a <= 13 for a, b in itertools.pairwise(slow))


def test_video_file_resize() -> None:
    src = VideoFileSource(MEGAMIND, resize="320x240")
    assert src.size == (320, 240) and src.native_size == (720, 528)
    frames = list(itertools.islice(src, 3))  # islice closes the generator: capture released
    assert [f.image.shape for f in frames] == [(240, 320, 3)] * 3
    bigger = next(iter(VideoFileSource(MEGAMIND, resize=(1000, 800))))
    assert bigger.image.shape == (800, 1000, 3)


def test_video_file_errors(tmp_path: Path) -> None:
    missing = tmp_path / "nope.avi"
    with pytest.raises(SourceError, match="nope.avi") as info:
        VideoFileSource(missing)
    assert "no such file" in str(info.value)
    with pytest.raises(SourceError, match="directory"):
        VideoFileSource(tmp_path)
    text = tmp_path / "x.avi"
    text.write_text("this is not a video\n" * 100)
    with pytest.raises(SourceError, match=r"cannot open video '.*x\.avi'"):
        VideoFileSource(text)
    empty = tmp_path / "empty.avi"
    empty.write_bytes(b"")
    with pytest.raises(SourceError, match="empty file"):
        VideoFileSource(empty)
    # A video cut in the middle of its header is not a video either.
    cut = tmp_path / "cut.avi"
    cut.write_bytes(VTEST.read_bytes()[:2000])
    with pytest.raises(SourceError, match="cut.avi"):
        VideoFileSource(cut)
    for fps in [0, -1, float("nan"), "5"]:
        with pytest.raises(InputError, match="fps"):
            VideoFileSource(VTEST, fps=fps)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="size"):
        VideoFileSource(VTEST, resize=(0, 10))


# --- image folders -----------------------------------------------------------------------------


@pytest.fixture
def image_tree(tmp_path: Path) -> Path:
    root = tmp_path / "images"
    (root / "a").mkdir(parents=True)
    (root / "b" / "c").mkdir(parents=True)
    (root / ".git").mkdir()
    shutil.copy(DATA / "HappyFish.jpg", root / "fish.jpg")
    shutil.copy(DATA / "baboon.jpg", root / "a" / "baboon.jpg")
    shutil.copy(DATA / "LinuxLogo.jpg", root / "b" / "logo.jpg")
    shutil.copy(DATA / "pic1.png", root / "b" / "c" / "pic1.png")
    shutil.copy(DATA / "HappyFish.jpg", root / ".hidden.jpg")
    shutil.copy(DATA / "HappyFish.jpg", root / ".git" / "inside-hidden-dir.jpg")
    baboon = (DATA / "baboon.jpg").read_bytes()
    (root / "a" / "truncated.jpg").write_bytes(baboon[: len(baboon) // 2])
    (root / "b" / "c" / "random.jpg").write_bytes(np.random.default_rng(7).bytes(4096))
    (root / "b" / "empty.png").write_bytes(b"")
    (root / "notes.txt").write_text("not an image\n")
    return root


def _items(src: ImageFolderSource) -> tuple[dict[str, CapturedFrame], dict[str, SkippedFile]]:
    frames: dict[str, CapturedFrame] = {}
    skipped: dict[str, SkippedFile] = {}
    for item in src:
        if isinstance(item, SkippedFile):
            skipped[item.path] = item
        else:
            assert isinstance(item, CapturedFrame)
            frames[item.source] = item
    return frames, skipped


def test_image_folder_frames_and_skips(image_tree: Path) -> None:
    when = datetime(2023, 3, 4, 5, 6, 7, tzinfo=UTC)
    os.utime(image_tree / "a" / "baboon.jpg", (when.timestamp(), when.timestamp()))
    src = ImageFolderSource(image_tree)
    frames, skipped = _items(src)

    assert set(frames) == {"a/baboon.jpg", "b/c/pic1.png", "b/logo.jpg", "fish.jpg"}
    # notes.txt is not an image by name, as for `dataset pack`: counted, not an error
    assert set(skipped) == {"a/truncated.jpg", "b/c/random.jpg", "b/empty.png"}
    assert src.ignored == 1
    assert src.count() == 7 and src.ignored == 1  # items yielded, for a progress bar; nothing hidden
    for reason in (skipped["a/truncated.jpg"].reason, skipped["b/c/random.jpg"].reason):
        assert reason == "cannot decode image (not an image or corrupt)"
    assert skipped["b/empty.png"].reason == "empty file"

    baboon = frames["a/baboon.jpg"]
    assert baboon.data == (DATA / "baboon.jpg").read_bytes()  # JPEG bytes kept, not re-encoded
    assert np.array_equal(baboon.image, cv2.imread(str(DATA / "baboon.jpg")))
    assert baboon.captured_at == when
    assert frames["b/c/pic1.png"].data is None  # PNG: pixels only, the publisher encodes
    assert frames["b/c/pic1.png"].image.ndim == 3 and frames["b/c/pic1.png"].image.shape[2] == 3
    for rel, frame in frames.items():
        expected = int.from_bytes(hashlib.blake2b(rel.encode(), digest_size=8).digest(), "big") >> 1
        assert frame.seq == expected == ImageFolderSource.seq_for(rel)
        assert 0 <= frame.seq < 2**63
        assert frame.captured_at.tzinfo is not None

    # Deterministic order, and seq stable when a file is added (in the root and in a sub-folder).
    order = [getattr(item, "source", None) or item.path for item in src]
    assert order == [getattr(item, "source", None) or item.path for item in src]
    shutil.copy(DATA / "apple.jpg", image_tree / "a" / "aaa-new.jpg")
    shutil.copy(DATA / "apple.jpg", image_tree / "0-new.jpg")
    frames2, _ = _items(ImageFolderSource(image_tree))
    assert set(frames2) == set(frames) | {"a/aaa-new.jpg", "0-new.jpg"}
    assert {rel: f.seq for rel, f in frames.items()} == {rel: frames2[rel].seq for rel in frames}


def test_image_folder_resize_drops_original_bytes(image_tree: Path) -> None:
    frames, skipped = _items(ImageFolderSource(image_tree, resize=(64, 48)))
    assert len(frames) == 4 and len(skipped) == 3
    for frame in frames.values():
        assert frame.image.shape == (48, 64, 3)
        assert frame.data is None


def test_image_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="missing-dir"):
        ImageFolderSource(tmp_path / "missing-dir")
    a_file = tmp_path / "file.jpg"
    shutil.copy(DATA / "HappyFish.jpg", a_file)
    with pytest.raises(SourceError, match="not a directory"):
        ImageFolderSource(a_file)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert list(ImageFolderSource(empty)) == [] and ImageFolderSource(empty).count() == 0


def test_image_folder_skips_oversized_and_broken_links(tmp_path: Path) -> None:
    root = tmp_path / "r"
    root.mkdir()
    shutil.copy(DATA / "baboon.jpg", root / "big.jpg")
    shutil.copy(DATA / "HappyFish.jpg", root / "small.jpg")
    (root / "dangling.jpg").symlink_to(tmp_path / "does-not-exist.jpg")
    items = list(ImageFolderSource(root, max_file_bytes=100_000))
    reasons = {i.path: i.reason for i in items if isinstance(i, SkippedFile)}
    assert reasons["big.jpg"].startswith("file too large")
    assert reasons["dangling.jpg"] == "broken symbolic link"
    assert [i.source for i in items if isinstance(i, CapturedFrame)] == ["small.jpg"]


# --- motion gate -------------------------------------------------------------------------------


def test_motion_gate_identical_frames_pass_only_warmup(vtest_frames: list[np.ndarray]) -> None:
    gate = MotionGate()
    results = [gate.check(vtest_frames[0].copy()) for _ in range(10)]
    assert results == [True] + [False] * 9
    assert (gate.passed, gate.skipped) == (1, 9)
    gate3 = MotionGate(warmup=3)
    assert [gate3.check(vtest_frames[0]) for _ in range(5)] == [True, True, True, False, False]


def test_motion_gate_passes_walking_people(vtest_frames: list[np.ndarray]) -> None:
    gate = MotionGate()
    results = [gate.check(frame) for frame in vtest_frames]
    assert sum(results) >= 0.8 * len(results)
    assert gate.passed + gate.skipped == len(vtest_frames)


def test_motion_gate_bright_rectangle_on_static_scene(vtest_frames: list[np.ndarray]) -> None:
    static = vtest_frames[0]
    gate = MotionGate()
    for _ in range(5):
        gate.check(static)
    assert not gate.check(static)
    # Slight sensor noise is not motion.
    noisy = cv2.add(static, np.random.default_rng(1).integers(0, 6, static.shape, dtype=np.uint8))
    assert not gate.check(noisy)
    painted = static.copy()
    cv2.rectangle(painted, (200, 150), (400, 350), (255, 255, 255), thickness=-1)
    assert gate.check(painted)
    assert gate.last_fraction > 0.05


def test_motion_gate_validates_and_handles_size_change(vtest_frames: list[np.ndarray]) -> None:
    for kwargs in [{"threshold": 300}, {"min_area": 2.0}, {"learning_rate": 0}, {"warmup": -1}, {"width": 2}]:
        with pytest.raises(InputError):
            MotionGate(**kwargs)
    gate = MotionGate()
    assert gate.check(vtest_frames[0])
    assert not gate.check(cv2.resize(vtest_frames[0], (320, 240)))  # same 160x120 work size
    assert gate.check(cv2.resize(vtest_frames[0], (320, 320)))  # another shape: warm-up again
    gray = cv2.cvtColor(vtest_frames[0], cv2.COLOR_BGR2GRAY)
    gray_gate = MotionGate()
    assert [gray_gate.check(gray) for _ in range(3)] == [True, False, False]


# --- cameras and streams -----------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MjpegServer:
    """An HTTP MJPEG 'IP camera' on 127.0.0.1 serving vtest frames.

    Each connection gets `per_connection` frames (None = endless), then the server either closes
    the connection or, with `hang=True`, keeps it open without sending anything. Connections
    after `max_connections` get a 404. `client_gone` is set when a write fails because the
    client closed its end.
    """

    def __init__(
        self,
        jpegs: list[bytes],
        per_connection: int | None = None,
        *,
        hang: bool = False,
        max_connections: int | None = None,
        interval: float = 0.005,
    ) -> None:
        self.jpegs = jpegs
        self.per_connection = per_connection
        self.hang = hang
        self.max_connections = max_connections
        self.interval = interval
        self.connections = 0
        self.frames_sent = 0
        self.stopping = threading.Event()
        self.client_gone = threading.Event()
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

            def do_GET(self) -> None:  # noqa: N802
                owner.serve(self)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = False  # server_close() joins the handler threads
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/stream"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05})
        self.thread.start()

    def serve(self, handler: http.server.BaseHTTPRequestHandler) -> None:
        self.connections += 1
        if self.max_connections is not None and self.connections > self.max_connections:
            handler.send_error(404)
            return
        handler.send_response(200)
        handler.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
        handler.end_headers()
        try:
            for i in itertools.count():
                if self.stopping.is_set() or (self.per_connection is not None and i >= self.per_connection):
                    break
                jpeg = self.jpegs[self.frames_sent % len(self.jpegs)]
                part = b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(jpeg)
                handler.wfile.write(part + jpeg + b"\r\n")
                handler.wfile.flush()
                self.frames_sent += 1
                time.sleep(self.interval)
            if self.hang:
                self.stopping.wait(30)
        except (BrokenPipeError, ConnectionResetError):
            self.client_gone.set()

    def stop(self) -> None:
        self.stopping.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


@pytest.fixture
def mjpeg(vtest_frames: list[np.ndarray]):
    jpegs = [cv2.imencode(".jpg", cv2.resize(f, (320, 240)))[1].tobytes() for f in vtest_frames[:20]]
    servers: list[MjpegServer] = []

    def start(*args, **kwargs) -> MjpegServer:
        server = MjpegServer(jpegs, *args, **kwargs)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()
    assert not any(t.name.startswith("Thread") and "process_request" in t.name for t in threading.enumerate())


FAST = {"backoff_initial": 0.05, "backoff_max": 0.2, "open_timeout": 3.0, "stall_timeout": 3.0}


def test_camera_source_validation() -> None:
    for bad in ["ftp://x", "file:///dev/video0", "/tmp/video.avi", "rtsp://", "camera", -1, True, 1.5]:
        with pytest.raises(InputError):
            CameraSource(bad)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="ftp://x"):
        CameraSource("ftp://x")
    assert CameraSource("0").device == 0 and CameraSource(2).device == 2
    assert CameraSource("rtsp://cam.local:554/live").url == "rtsp://cam.local:554/live"
    secret = CameraSource("rtsp://admin:hunter2@cam.local/live")
    assert "hunter2" not in secret.name and "admin:***@cam.local" in secret.name
    with pytest.raises(InputError, match="fps"):
        CameraSource(0, fps=0)
    with pytest.raises(InputError, match="backoff_max"):
        CameraSource(0, backoff_initial=5, backoff_max=1)
    with pytest.raises(InputError, match="open_attempts"):
        CameraSource(0, open_attempts=0)


def test_camera_unreachable_url_raises_quickly(caplog: pytest.LogCaptureFixture) -> None:
    url = f"http://127.0.0.1:{_free_port()}/stream"
    src = CameraSource(url, open_attempts=3, backoff_initial=0.05, backoff_max=0.1, open_timeout=1.0)
    started = time.monotonic()
    with (
        caplog.at_level(logging.WARNING, logger="visionlake.ingest"),
        pytest.raises(SourceUnreachable) as info,
    ):
        next(iter(src))
    assert time.monotonic() - started < 5
    assert url in str(info.value) and "3 attempts" in str(info.value)
    assert info.value.exit_code == 3
    assert sum("retrying" in r.getMessage() for r in caplog.records) == 2


def test_camera_missing_device_raises() -> None:
    src = CameraSource(99, open_attempts=2, backoff_initial=0.01, backoff_max=0.01)
    with pytest.raises(SourceUnreachable, match="device:99"):
        next(iter(src))


def test_camera_reconnects_after_drop(mjpeg, caplog: pytest.LogCaptureFixture) -> None:
    server = mjpeg(per_connection=5)
    src = CameraSource(server.url, max_frames=17, **FAST)
    with caplog.at_level(logging.WARNING, logger="visionlake.ingest"):
        frames = list(src)
    assert len(frames) == 17 > 5
    assert [f.seq for f in frames] == list(range(17))
    assert all(f.image.shape == (240, 320, 3) for f in frames)
    assert all(f.source == server.url for f in frames)
    times = [f.captured_at for f in frames]
    assert all(a <= b for a, b in itertools.pairwise(times)) and times[0].tzinfo is not None
    assert src.reconnects >= 3 and server.connections >= 4
    drops = [r for r in caplog.records if r.name == "visionlake.ingest" and r.levelno == logging.WARNING]
    assert drops and "dropped" in drops[0].getMessage() and "reconnecting in 0.05 s" in drops[0].getMessage()


def test_camera_reconnects_after_stall(mjpeg, caplog: pytest.LogCaptureFixture) -> None:
    server = mjpeg(per_connection=3, hang=True)
    src = CameraSource(server.url, max_frames=5, **{**FAST, "stall_timeout": 0.8})
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="visionlake.ingest"):
        seqs = [f.seq for f in src]
    assert seqs == [0, 1, 2, 3, 4]
    assert src.reconnects == 1
    assert time.monotonic() - started < 6
    assert any("stalled" in r.getMessage() for r in caplog.records)


def test_camera_gives_up_after_max_reconnects(mjpeg, caplog: pytest.LogCaptureFixture) -> None:
    server = mjpeg(per_connection=4, max_connections=1)  # later connections get 404
    src = CameraSource(server.url, max_reconnects=2, **FAST)
    with caplog.at_level(logging.WARNING, logger="visionlake.ingest"):
        seqs = [f.seq for f in src]
    assert seqs == [0, 1, 2, 3]
    assert src.reconnects == 0
    assert src.stopped_reason is not None and "2 failed reconnects" in src.stopped_reason
    assert server.connections == 3
    assert any(r.levelno == logging.ERROR for r in caplog.records)


def test_camera_fps_throttle_and_close_releases(mjpeg) -> None:
    server = mjpeg(per_connection=None, interval=0.01)  # endless ~100 fps stream
    src = CameraSource(server.url, fps=5, **FAST)
    frames = []
    gen = iter(src)
    for frame in gen:
        frames.append(frame)
        if len(frames) == 4:
            break
    span = (frames[-1].captured_at - frames[0].captured_at).total_seconds()
    assert span >= 3 * 0.2 * 0.9  # at most 5 frames per second
    assert src.throttled > 10
    gen.close()  # closing the generator releases the capture: the server sees the client leave
    assert server.client_gone.wait(5)
