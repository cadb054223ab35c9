"""Worker frames/s with tracking (`tracking=TrackerSettings()`, `worker --track`) against the same
worker without, on the same frames, and the tracker's own cost per frame against the detector's.

Each run is a real `Worker` over a fresh temp lake (embedded log, SQLite catalog, file archive) with
the frames of one camera published first; frames/s is `stats.fps` (frames over the time spent handling
batches: poll, decode, detect, track, archive, catalog, events, commit; no idle wait). Runs alternate
without / with tracking, `ROUNDS` times, so both see the same machine load; the medians are compared.

With tracking a worker also saves each camera's tracker state and updates the tracks table in every
batch's catalog transaction: the ratio covers that too. The tracker alone is timed in a separate
loop (`CameraTracker.update` over the detections the worker stored).
"""

from __future__ import annotations

import statistics
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import common
from common import emit, say

from visionlake.catalog import schema as S
from visionlake.detectors import load_detector
from visionlake.ingest.publish import FramePublisher
from visionlake.ingest.sources import CapturedFrame
from visionlake.lake import Lake
from visionlake.tracking import CameraTracker, TrackerSettings
from visionlake.types import Detections
from visionlake.workers.worker import Worker

QUALITY = 90
ROUNDS = 3
TARGET_RATIO = 0.9
#: (detector, frame size, frames per run quick, full): people at 640x480 are what hog-person finds;
#: haar-face at 320x240 is a fast detector, where any fixed cost of tracking shows most
CASES = (("hog-person", (640, 480), 32, 120), ("haar-face", (320, 240), 96, 400))
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _run(name: str, det, jpegs: list[bytes], images: list, tmp: Path, track: bool) -> tuple[float, Lake]:
    lake = Lake(lake=tmp)
    pub = FramePublisher(lake, "cam-0")
    for i, (im, j) in enumerate(zip(images, jpegs, strict=True)):
        pub.publish(CapturedFrame(im, i, T0 + timedelta(seconds=i / 10), f"vtest.avi#{i}", data=j))
    pub.close()
    stats = Worker(
        lake,
        det,
        group=f"bench-{name}",
        until_idle=True,
        idle_timeout=0.5,
        tracking=TrackerSettings() if track else None,
    ).run()
    if stats.processed != len(jpegs) or stats.dead_lettered:
        raise RuntimeError(f"{name}: processed {stats.processed}/{len(jpegs)}, {stats.dead_lettered} dead")
    return stats.fps, lake


def _tracker_ms(lake: Lake, name: str) -> tuple[float, int]:
    """ms per frame of CameraTracker.update alone, over the boxes the worker stored, in capture order."""
    f, d = S.frames.c, S.detections.c
    import sqlalchemy as sa

    with lake.catalog.engine.connect() as conn:
        order = conn.execute(sa.select(f.frame_id, f.captured_at).order_by(f.captured_at)).all()
        boxes: dict[str, list[dict]] = {fid: [] for fid, _ in order}
        for fid, lab, s, x1, y1, x2, y2 in conn.execute(
            sa.select(d.frame_id, d.label, d.score, d.x1, d.y1, d.x2, d.y2)
        ):
            boxes[fid].append({"label": lab, "score": s, "box": [x1, y1, x2, y2]})
    tracker = CameraTracker("cam-0", name, "bench")
    t = time.perf_counter()
    for fid, at in order:
        tracker.update(Detections.from_list(boxes[fid]), fid, at.replace(tzinfo=UTC))
    return (time.perf_counter() - t) / len(order) * 1000, sum(len(b) for b in boxes.values())


def run(quick: bool, tmp: Path) -> list[dict]:
    out = []
    for name, size, n_quick, n_full in CASES:
        n = n_quick if quick else n_full
        det = load_detector(name)
        images = common.cycle(common.video_frames(size), n)
        jpegs = common.cycle(common.jpeg_frames(size, QUALITY), n)
        det.detect(common.decode(jpegs[0]))  # warm-up
        fps: dict[bool, list[float]] = {False: [], True: []}
        tracks = 0
        for r in range(ROUNDS):
            for track in (False, True):
                value, lake = _run(name, det, jpegs, images, tmp / f"{name}-{r}-{track}", track)
                fps[track].append(value)
                if track:
                    tracks = lake.catalog.query("SELECT count(*) FROM tracks").rows[0][0]
                    tracker_ms, boxes = _tracker_ms(lake, name)
                lake.close()
            say(f"tracking: {name} round {r + 1}: {fps[False][-1]:.1f} / {fps[True][-1]:.1f} frames/s")
        without, with_ = statistics.median(fps[False]), statistics.median(fps[True])
        out.append(
            emit(
                f"worker_tracking_{name}",
                with_,
                "frames/s",
                "the same worker without tracking, same frames (median of alternating runs)",
                without,
                target=TARGET_RATIO,
                target_on="ratio",
                target_met=with_ / without >= TARGET_RATIO,
                n=n,
                frame_size=f"{size[0]}x{size[1]}",
                rounds=ROUNDS,
                fps_without=fps[False],
                fps_with=fps[True],
                tracker_ms_per_frame=tracker_ms,
                worker_ms_per_frame=1000 / without,
                tracker_to_worker_cost=tracker_ms / (1000 / without),
                boxes=boxes,
                tracks=tracks,
                loadavg_1m=common.loadavg(),
                notes="frames/s = processed / busy seconds of Worker.run(); tracking adds the tracker, its state "
                "saved and the tracks table updated in every batch's transaction; tracker_ms_per_frame times "
                "CameraTracker.update alone over the stored boxes",
            )
        )
    return out


if __name__ == "__main__":
    import argparse
    import tempfile

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="vl-bench-tracking-") as d:
        run(args.quick, Path(d))
