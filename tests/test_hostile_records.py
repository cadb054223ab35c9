"""Records that used to take a worker down or jam its group: decompression bombs by the byte, poison
keys and headers, oversized events, formats other than JPEG. Each goes to the dead-letter topic with
its reason before any side effect, and the frames around it flow on."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from itertools import islice

import cv2
import numpy as np
from media import sample

from visionlake.detectors import load_detector
from visionlake.detectors.base import Detector
from visionlake.frames import FrameMeta, frame_headers, make_frame_id
from visionlake.ingest.publish import ingest
from visionlake.ingest.sources import VideoFileSource
from visionlake.lake import Lake
from visionlake.types import Detections, Record
from visionlake.workers.worker import Worker


def publish(lake: Lake, camera: str, n: int) -> int:
    return ingest(lake, islice(VideoFileSource(sample("vtest.avi"), resize=(320, 240)), n), camera).frames


def dead_letters(lake: Lake) -> dict[str, Record]:
    out: dict[str, Record] = {}
    with lake.log.consumer(["frames.dlq"]) as c:
        while got := c.poll(100, 0.5):
            out.update({r.header("test-case") or f"#{r.offset}": r for r in got})
    return out


def bomb(width: int = 16000, height: int = 6000) -> bytes:
    """A tiny flat JPEG whose header claims `width` x `height`: libjpeg fills the rest with grey."""
    ok, buf = cv2.imencode(".jpg", np.full((16, 16, 3), 128, np.uint8))
    data = bytearray(buf.tobytes())
    sof = next(i for i in range(len(data) - 1) if data[i] == 0xFF and data[i + 1] == 0xC0)
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def test_decompression_bombs_by_the_byte_are_refused_and_memory_stays_small(lake):
    data = bomb()
    assert len(data) < 1000
    with lake.log.producer() as p:
        for i in range(16):
            p.send("frames", data, key=b"bomb", headers=[("test-case", f"bomb-{i}".encode())])
    publish(lake, "vtest", 2)
    lake.catalog  # noqa: B018 - schema in place before the child
    # the CLI worker in a fresh process that reports its own peak RSS (VmHWM starts afresh at exec)
    wrapper = (
        "import sys\nfrom pathlib import Path\nfrom visionlake.cli import main\n"
        "try:\n    main()\nfinally:\n"
        "    s = Path('/proc/self/status').read_text()\n"
        "    print(next(x for x in s.splitlines() if x.startswith('VmHWM:')), file=sys.stderr)\n"
    )
    args = ["--lake", str(lake.root), "worker", "--detector", "haar-face", "--until-idle"]
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            wrapper,
            *args,
            "--idle-timeout",
            "0.5",
            "--batch-size",
            "16",
            "--format",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    peak_mb = int(out.stderr.split("VmHWM:")[1].split()[0]) / 1024
    stats = json.loads(out.stdout)
    assert stats["processed"] == 2 and stats["dead_lettered"] == 16
    dead = dead_letters(lake)
    assert all("far too short for its size" in dead[f"bomb-{i}"].header("vl-error") for i in range(16))
    # one 16000x6000 decode alone is 288 MB; sixteen were 4.6 GB
    assert peak_mb < 400, f"worker peaked at {peak_mb:.0f} MB"


def test_a_frame_over_the_pixel_budget_is_refused_before_decoding(lake):
    image = cv2.resize(cv2.imread(str(sample("baboon.jpg"))), (1280, 960))
    ok, buf = cv2.imencode(".jpg", image)
    with lake.log.producer() as p:
        p.send("frames", buf.tobytes(), key=b"big", headers=[("test-case", b"big")])
    publish(lake, "vtest", 1)
    stats = Worker(
        lake, load_detector("haar-face"), until_idle=True, idle_timeout=0.5, max_pixels=1_000_000
    ).run()
    assert stats.processed == 1 and stats.dead_lettered == 1
    reason = dead_letters(lake)["big"].header("vl-error")
    assert "1228800 pixels exceeds this worker's budget of 1000000" in reason


def test_poison_keys_and_headers_are_dead_lettered_and_the_group_moves_on(lake):
    good = cv2.imencode(".jpg", np.full((240, 320, 3), 90, np.uint8))[1].tobytes()
    meta = FrameMeta(make_frame_id("cam", 1, _t()), "cam", 1, _t(), 320, 240)
    base = [
        (k, v) for k, v in frame_headers(meta) if k not in ("vl-seq", "vl-camera", "vl-ts", "vl-frame-id")
    ]
    cases: dict[str, tuple[bytes | None, list[tuple[str, bytes]]]] = {
        "10 MB key": (b"k" * 10_000_000, []),
        "40-digit seq": (b"cam", [("vl-seq", b"9" * 40)]),
        "seq not a number": (b"cam", [("vl-seq", "١٢".encode())]),
        "NUL in camera": (b"cam", [("vl-camera", b"ca\x00m")]),
        "invalid UTF-8 key": (b"\xff\xfe\xfd", []),
        "invalid UTF-8 header": (b"cam", [("vl-camera", b"\xc3\x28")]),
        "time before the epoch": (b"cam", [("vl-ts", b"0001-01-01T00:00:00+01:00")]),
        "time not a time": (b"cam", [("vl-ts", b"yesterday")]),
        "long frame id": (b"cam", [("vl-frame-id", b"f" * 65)]),
        "frame id with a slash": (b"cam", [("vl-frame-id", b"../../etc")]),
        "huge header": (b"cam", [("vl-ref", b"x" * 5000)]),
    }
    with lake.log.producer() as p:
        for name, (key, headers) in cases.items():
            p.send("frames", good, key=key, headers=[*base, *headers, ("test-case", name.encode())])
    publish(lake, "vtest", 3)
    stats = Worker(lake, load_detector("haar-face"), until_idle=True, idle_timeout=0.5).run()
    assert stats.processed == 3 and stats.dead_lettered == len(cases)
    dead = dead_letters(lake)
    expect = {
        "10 MB key": "too long for a camera id",
        "40-digit seq": "out of range",
        "seq not a number": "not an integer",
        "NUL in camera": "control characters",
        "invalid UTF-8 key": "not valid UTF-8",
        "invalid UTF-8 header": "not valid UTF-8",
        "time before the epoch": "not a usable time",
        "time not a time": "not a usable time",
        "long frame id": "is not a frame id",
        "frame id with a slash": "is not a frame id",
        "huge header": "the limit is 4096",
    }
    for name, words in expect.items():
        assert words in dead[name].header("vl-error"), (name, dead[name].header("vl-error"))
    (group,) = [g for g in lake.log.groups() if g.group == stats.group]
    assert group.lag == 0
    assert lake.catalog.query("SELECT count(*) FROM frames").rows == [(3,)]


def test_a_group_that_never_committed_shows_its_lag_on_every_partition(lake):
    publish(lake, "vtest", 3)
    with lake.log.consumer(["frames"], group="stuck") as c:
        assert c.poll(10, 2.0)  # read, never committed, then gone
    (group,) = [g for g in lake.log.groups() if g.group == "stuck"]
    assert not group.members and len(group.partitions) == 4
    assert group.lag == 3


class ManyBoxes(Detector):
    """Finds far more boxes than one detection event may carry."""

    name = "many-boxes"
    version = "1"

    def detect(self, image) -> Detections:
        n = 40_000
        boxes = np.tile(np.array([[1.0, 2.0, 30.0, 40.0]]), (n, 1))
        return Detections(boxes, np.full(n, 0.5), np.array(["thing"] * n))


def test_an_event_too_large_for_its_topic_omits_the_boxes_the_catalog_keeps(lake):
    publish(lake, "vtest", 2)
    stats = Worker(lake, ManyBoxes(), until_idle=True, idle_timeout=0.5).run()
    assert stats.processed == 2 and stats.dead_lettered == 0
    assert lake.catalog.query("SELECT count(*) FROM detections").rows == [(80_000,)]
    with lake.log.consumer(["frames.detections"]) as c:
        events = [json.loads(r.value) for r in c.poll(10, 2.0)]
    assert [(e["detections"], e["detections_omitted"]) for e in events] == [([], 40_000)] * 2
    group = next(g for g in lake.log.groups() if g.group == stats.group)
    assert group.lag == 0


def test_png_frames_are_archived_as_png_and_other_formats_refused(lake):
    image = cv2.resize(cv2.imread(str(sample("baboon.jpg"))), (320, 240))
    png = cv2.imencode(".png", image)[1].tobytes()
    bmp = cv2.imencode(".bmp", image)[1].tobytes()
    with lake.log.producer() as p:
        p.send("frames", png, key=b"pngcam", headers=[("test-case", b"png")])
        p.send("frames", bmp, key=b"bmpcam", headers=[("test-case", b"bmp")])
    stats = Worker(lake, load_detector("haar-face"), until_idle=True, idle_timeout=0.5).run()
    assert stats.processed == 1 and stats.dead_lettered == 1
    ((uri, sha),) = lake.catalog.query("SELECT uri, sha256 FROM frames").rows
    assert uri.endswith(".png") and lake.archive.get(uri) == png
    assert "not JPEG or PNG" in dead_letters(lake)["bmp"].header("vl-error")


def _t():
    from datetime import UTC, datetime

    return datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
