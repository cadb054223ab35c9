"""hog-person precision, recall and F1 on 20 hand-labelled frames of vtest.avi, old vs new defaults.

Ground truth: tests/data/vtest_people.json (100 people to find, 25 ignored; how the boxes were made is
in tests/data/README.md). A prediction is a hit when it overlaps an unmatched person at IoU >= 0.5,
matched greedily by score (`visionlake.detectors.evaluate.match_boxes`); a prediction on an ignored
person counts neither way.

One JSON line per setting, all with the same baseline (the version 1 defaults):
- `before`: hog-person version 1 (no upscale, windows as boxes), rebuilt from its parameters;
- `after`: the current defaults (version 2);
- full mode only: the main other points of the grid the new defaults were picked from.
`ms_per_frame` is the detect() time per 768x576 frame, the best of the passes (1 quick, 3 full),
with OpenCV's default threads; `f1_tune` / `f1_holdout` are F1 on the even / odd labelled frames
(the defaults were picked on the even ones).

    python bench/hog_accuracy.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np
from common import VIDEO, emit, loadavg, say

from visionlake.detectors.evaluate import MatchCounts, match_boxes, xywh_to_xyxy
from visionlake.detectors.hog import HogPersonDetector

LABELS = Path(__file__).resolve().parent.parent / "tests" / "data" / "vtest_people.json"
METRIC = "hog_person_f1"
BASELINE = "hog-person version 1 defaults"
#: hog-person version 1's defaults, expressed in version 2's parameters.
VERSION_1 = {
    "upscale": 1.0,
    "max_width": 800,
    "scale": 1.05,
    "min_score": 0.3,
    "box_width": 1.0,
    "box_height": 1.0,
}
#: Other points of the grid the version 2 defaults were chosen from (full mode only).
GRID = {
    "upscale 1.0, narrowed boxes": {"upscale": 1.0, "min_score": 0.3},
    "upscale 1.25": {"upscale": 1.25, "min_score": 0.0},
    "upscale 2.0": {"upscale": 2.0},
    "scale 1.05": {"scale": 1.05},
    "scale 1.2": {"scale": 1.2, "min_score": 0.0},
    "win_stride 4": {"win_stride": 4},
    "min_score 0.5": {"min_score": 0.5},
    "windows as boxes": {"box_width": 1.0, "box_height": 1.0},
}


def load_truth() -> dict[int, list[dict]]:
    """Frame index -> labelled boxes, from tests/data/vtest_people.json."""
    data = json.loads(LABELS.read_text())
    return {int(k): v for k, v in data["frames"].items()}


def read_frames(indices: list[int]) -> dict[int, np.ndarray]:
    """The frames of vtest.avi at `indices`, decoded sequentially (exact frame numbers, no seeking)."""
    if not VIDEO.is_file():
        raise SystemExit(f"{VIDEO} not found: install the Debian package opencv-doc")
    cap = cv2.VideoCapture(str(VIDEO))
    wanted, out, i = set(indices), {}, 0
    try:
        while len(out) < len(wanted):
            ok, frame = cap.read()
            if not ok:
                raise SystemExit(f"{VIDEO} ended before frame {max(wanted)}")
            if i in wanted:
                out[i] = frame
            i += 1
    finally:
        cap.release()
    return out


def score(
    detector: HogPersonDetector, frames: dict[int, np.ndarray], truth: dict[int, list[dict]], passes: int
):
    """(counts over all frames, {frame: counts}, best ms per frame over `passes` passes)."""
    per_frame: dict[int, MatchCounts] = {}
    best = float("inf")
    for _ in range(passes):
        elapsed = 0.0
        for i, image in frames.items():
            t = time.perf_counter()
            dets = detector.detect(image)
            elapsed += time.perf_counter() - t
            boxes = truth[i]
            per_frame[i] = match_boxes(
                dets.xyxy,
                dets.score,
                xywh_to_xyxy([b["box"] for b in boxes]),
                [bool(b.get("ignore", False)) for b in boxes],
            )
        best = min(best, 1000.0 * elapsed / len(frames))
    total = sum(per_frame.values(), MatchCounts())
    return total, per_frame, best


def run(quick: bool, tmp: Path | None = None) -> list[dict]:
    truth = load_truth()
    frames = read_frames(sorted(truth))
    order = sorted(truth)
    tune, holdout = order[0::2], order[1::2]
    passes = 1 if quick else 3
    settings = {"before": VERSION_1, "after": {}}
    if not quick:
        settings.update(GRID)
    results = {}
    for name, params in settings.items():
        detector = HogPersonDetector(**params)
        results[name] = (detector, *score(detector, frames, truth, passes))
        say(f"hog {name}: F1 {results[name][1].f1:.3f} at {results[name][3]:.0f} ms/frame")
    base = results["before"][1]
    out = []
    for name, (detector, total, per_frame, ms) in results.items():
        halves = {
            part: sum((per_frame[i] for i in idx), MatchCounts()).f1
            for part, idx in (("f1_tune", tune), ("f1_holdout", holdout))
        }
        out.append(
            emit(
                METRIC,
                total.f1,
                "f1",
                BASELINE,
                base.f1,
                setting=name,
                model_version=detector.model_version,
                precision=total.precision,
                recall=total.recall,
                tp=total.tp,
                fp=total.fp,
                fn=total.fn,
                mean_iou=total.mean_iou,
                ms_per_frame=ms,
                baseline_ms_per_frame=results["before"][3],
                frames=len(frames),
                frame_size="768x576",
                **halves,
                params=detector.params,
                loadavg_1m=loadavg(),
            )
        )
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="before and after only, one timing pass")
    args = ap.parse_args(argv)
    run(args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
