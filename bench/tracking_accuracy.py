"""Person tracks on 100 hand-labelled frames of vtest.avi: MOTA and IDF1 of each tracker setting.

Ground truth: tests/data/vtest_tracks.json (frames 0, 2, ..., 198; 9 people with ids, boxes of people
too small, hidden or cut off flagged as ignored; how they were made is in tests/data/README.md). The
boxes come from hog-person (version 2 defaults) on those frames, decoded sequentially, so every
tracker sees the same detections at 5 frames a second of capture time (every 2nd frame of a 10 fps
video). Scores: `visionlake.detectors.evaluate.mot_scores` (the motmetrics package; IoU >= 0.5).

One JSON line per setting: `value` is IDF1, the baseline the same with SORT's defaults as shipped by
the library (min_frames 3, min_iou 0.3), so the lines say what each choice adds. `ms_per_frame` is the
tracker's update time per frame, `detector_ms_per_frame` hog-person's, and `cost_ratio` the tracker's
share of the two (the worker with tracking does both).

    python bench/tracking_accuracy.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from common import emit, loadavg, say
from hog_accuracy import read_frames

from visionlake.detectors.evaluate import TrackFrame, mot_scores, xywh_to_xyxy
from visionlake.detectors.hog import HogPersonDetector
from visionlake.tracking import CameraTracker, TrackerSettings

LABELS = Path(__file__).resolve().parent.parent / "tests" / "data" / "vtest_tracks.json"
METRIC = "tracking_idf1"
#: The video's own rate; the labelled frames are every 2nd, so the tracker sees 5 frames a second.
FPS = 10.0
BASELINE_SETTING = "sort, library defaults"
SETTINGS = {
    BASELINE_SETTING: TrackerSettings(kind="sort", min_frames=3, min_iou=0.3, lost_seconds=1.0),
    "bytetrack, visionlake defaults": TrackerSettings(),
    "sort, visionlake defaults": TrackerSettings(kind="sort"),
}
GRID = {
    "bytetrack, lost 1 s": TrackerSettings(lost_seconds=1.0),
    "bytetrack, lost 4 s": TrackerSettings(lost_seconds=4.0),
    "bytetrack, min_iou 0.3": TrackerSettings(min_iou=0.3),
    "bytetrack, min_frames 1": TrackerSettings(min_frames=1),
    "bytetrack, min_frames 3": TrackerSettings(min_frames=3),
    "bytetrack, min_score 1.5": TrackerSettings(min_score=1.5),
}


def load_truth() -> dict[int, list[dict]]:
    data = json.loads(LABELS.read_text())
    return {int(k): v for k, v in data["frames"].items()}


def detect(indices: list[int]) -> tuple[dict, float]:
    """hog-person's boxes on the frames at `indices` (decoded sequentially) and its ms per frame."""
    detector = HogPersonDetector()
    out, elapsed = {}, 0.0
    for i, frame in read_frames(indices).items():
        t = time.perf_counter()
        out[i] = detector.detect(frame)
        elapsed += time.perf_counter() - t
    return out, 1000.0 * elapsed / len(indices)


def track(settings: TrackerSettings, detections: dict, truth: dict) -> tuple[dict, float]:
    """(mot_scores, tracker ms per frame) of one setting over the labelled frames."""
    tracker = CameraTracker("vtest", "hog-person", "2", settings)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    frames, elapsed = [], 0.0
    for i in sorted(truth):
        dets = detections[i]
        t = time.perf_counter()
        ids = tracker.update(dets, f"frame-{i}", start + timedelta(seconds=i / FPS))
        elapsed += time.perf_counter() - t
        boxes = truth[i]
        confirmed = ids >= 0
        frames.append(
            TrackFrame(
                [b["id"] for b in boxes],
                xywh_to_xyxy([b["box"] for b in boxes]),
                [bool(b.get("ignore", False)) for b in boxes],
                ids[confirmed],
                dets.xyxy[confirmed],
            )
        )
    return mot_scores(frames), 1000.0 * elapsed / len(truth)


def run(quick: bool, tmp: Path | None = None) -> list[dict]:
    truth = load_truth()
    detections, det_ms = detect(sorted(truth))
    say(f"hog-person on {len(truth)} frames: {det_ms:.0f} ms a frame")
    settings = dict(SETTINGS) if quick else {**SETTINGS, **GRID}
    scored = {name: track(s, detections, truth) for name, s in settings.items()}
    base = scored[BASELINE_SETTING][0]
    out = []
    for name, (sc, ms) in scored.items():
        say(f"{name}: IDF1 {sc['idf1']:.3f} MOTA {sc['mota']:.3f} switches {sc['num_switches']:.0f}")
        out.append(
            emit(
                METRIC,
                sc["idf1"],
                "idf1",
                f"{BASELINE_SETTING} (IDF1)",
                base["idf1"],
                setting=name,
                mota=sc["mota"],
                baseline_mota=base["mota"],
                id_switches=int(sc["num_switches"]),
                false_positives=int(sc["num_false_positives"]),
                misses=int(sc["num_misses"]),
                truth_boxes=int(sc["num_objects"]),
                motp_iou=sc["motp_iou"],
                ms_per_frame=ms,
                detector_ms_per_frame=det_ms,
                cost_ratio=ms / (ms + det_ms),
                settings=settings[name].as_dict(),
                frames=len(truth),
                loadavg_1m=loadavg(),
            )
        )
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="the shipped settings only, no grid")
    run(ap.parse_args(argv).quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
