"""Tracks: `CameraTracker` over the `trackers` package, and MOT scoring on hand-labelled vtest.avi tracks.

The labels (tests/data/vtest_tracks.json, how they were made in tests/data/README.md) are the people
of frames 0, 2, ..., 198 with ids. Measured with hog-person version 2 and the default tracker settings
(ByteTrack): IDF1 0.598, MOTA 0.747, 17 identity switches (`bench/tracking_accuracy.py`).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from media import frames_at

from visionlake.detectors.evaluate import TrackFrame, mot_scores, xywh_to_xyxy
from visionlake.errors import InputError
from visionlake.tracking import CameraTracker, TrackerSettings
from visionlake.types import Detections

LABELS = Path(__file__).parent / "data" / "vtest_tracks.json"
T0 = datetime(2026, 11, 3, 8, 0, tzinfo=UTC)
#: Measured values minus a margin (other OpenCV builds may differ by a detection or two).
MIN_IDF1, MIN_MOTA = 0.55, 0.68


def walkers(t: int) -> Detections:
    """Two people walking apart and a bag, frame t (5 frames a second)."""
    return Detections.from_list(
        [
            {"label": "person", "score": 0.9, "box": [100 + 6 * t, 100, 140 + 6 * t, 200]},
            {"label": "person", "score": 0.8, "box": [400 - 6 * t, 120, 440 - 6 * t, 220]},
            {"label": "bag", "score": 0.7, "box": [300, 300, 330, 330]},
        ]
    )


def feed(tracker: CameraTracker, frames: range, make=walkers) -> list[list[int]]:
    return [tracker.update(make(t), f"f{t}", T0 + timedelta(seconds=t / 5)).tolist() for t in frames]


def test_each_box_gets_its_track_id_in_input_order():
    ids = feed(CameraTracker("door", "hog-person", "2"), range(12))
    assert ids[0] == [-1, -1, -1]  # the library confirms a track on its second matched frame
    first = ids[1]
    assert all(i > 0 for i in first) and len(set(first)) == 3
    assert all(row == first for row in ids[1:])  # each box keeps its track
    reversed_ids = CameraTracker("door", "hog-person", "2").update(
        Detections(walkers(0).xyxy[::-1], walkers(0).score[::-1], walkers(0).label[::-1]), "f0", T0
    )
    assert len(reversed_ids) == 3  # aligned with whatever order the boxes come in


def test_a_restored_state_continues_the_same_tracks_with_the_same_ids():
    whole = feed(CameraTracker("door", "hog-person", "2"), range(20))
    first = CameraTracker("door", "hog-person", "2")
    part = feed(first, range(8))
    again = CameraTracker.restore(first.state, {"camera": "door", "model": "hog-person"})
    assert again.last_frame == "f7"
    assert part + feed(again, range(8, 20)) == whole
    with pytest.raises(InputError, match="camera 'door', not 'gate'"):
        CameraTracker.restore(first.state, {"camera": "gate"})


def test_ids_differ_between_cameras_versions_and_tracker_starts():
    a = feed(CameraTracker("door", "hog-person", "2"), range(3))[-1]
    b = feed(CameraTracker("gate", "hog-person", "2"), range(3))[-1]
    c = feed(CameraTracker("door", "hog-person", "3"), range(3))[-1]
    d = feed(CameraTracker("door", "hog-person", "2"), range(1, 4))[-1]  # a tracker started later
    assert len({*a, *b, *c, *d}) == 12


def test_a_track_survives_missed_frames_within_lost_seconds():
    def gappy(t: int) -> Detections:
        return walkers(t) if t not in (5, 6, 7) else Detections.empty()

    ids = feed(CameraTracker("door", "hog-person", "2", TrackerSettings(lost_seconds=2.0)), range(12), gappy)
    assert ids[4] == ids[8] and ids[5] == []
    short = feed(
        CameraTracker("door", "hog-person", "2", TrackerSettings(lost_seconds=0.5)), range(12), gappy
    )
    assert min(short[4]) > 0 and min(short[9]) > 0
    assert not set(short[4]) & set(short[9])  # gone for 0.8 s, longer than 0.5 s: new tracks


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": "deepsort"}, "tracker 'deepsort' is not one of bytetrack, sort"),
        ({"lost_seconds": 0}, "lost_seconds must be positive"),
        ({"min_iou": 1.5}, "min_iou must be in"),
        ({"min_frames": 0}, "min_frames must be 1-100"),
    ],
)
def test_bad_settings_are_named(kwargs, message):
    with pytest.raises(InputError, match=message):
        TrackerSettings(**kwargs)


def test_mot_scores_on_a_worked_example():
    a, b, c = [0, 0, 10, 10], [50, 50, 60, 60], [100, 100, 110, 110]
    frames = [
        # an ignored person (c) with a track box on it: dropped, not a false positive
        TrackFrame([1, 2, 3], np.array([a, b, c]), [False, False, True], [10, 20, 30], np.array([a, b, c])),
        # the two tracks swap people: two identity switches; an ignored person nobody found: no miss
        TrackFrame([1, 2, 3], np.array([a, b, c]), [False, False, True], [20, 10], np.array([a, b])),
    ]
    s = mot_scores(frames)
    # MOTA = 1 - (misses 0 + false positives 0 + switches 2) / 4 objects; IDF1 = 2 * 2 / (4 + 4)
    assert s["num_switches"] == 2 and s["num_false_positives"] == 0 and s["num_misses"] == 0
    assert s["num_objects"] == 4
    assert s["mota"] == pytest.approx(0.5) and s["idf1"] == pytest.approx(0.5)
    assert s["motp_iou"] == pytest.approx(1.0)


def test_labels_file_is_consistent():
    data = json.loads(LABELS.read_text())
    frames = data["frames"]
    assert sorted(map(int, frames)) == list(range(0, 200, 2))
    boxes = [b for fr in frames.values() for b in fr]
    counts = data["about"]["counts"]
    assert counts["boxes"] == len(boxes) and counts["tracks"] == len({b["id"] for b in boxes})
    assert counts["ignored_boxes"] == sum(bool(b.get("ignore")) for b in boxes)
    for fr in frames.values():
        assert len({b["id"] for b in fr}) == len(fr)  # an id once per frame
        for b in fr:
            x, y, w, h = b["box"]
            assert min(x, y) >= 0 and w > 0 and h > 0 and x + w <= 768 and y + h <= 576
            assert b.get("ignore") or h >= 60


def test_bytetrack_on_hog_person_boxes_of_the_labelled_frames():
    from visionlake.detectors import load_detector

    truth = {int(k): v for k, v in json.loads(LABELS.read_text())["frames"].items()}
    detector = load_detector("hog-person")
    tracker = CameraTracker("vtest", "hog-person", "2")
    frames = []
    for i, image in sorted(frames_at("vtest.avi", truth).items()):
        dets = detector.detect(image)
        ids = tracker.update(dets, f"f{i}", T0 + timedelta(seconds=i / 10))
        boxes = truth[i]
        frames.append(
            TrackFrame(
                [b["id"] for b in boxes],
                xywh_to_xyxy([b["box"] for b in boxes]),
                [bool(b.get("ignore")) for b in boxes],
                ids[ids >= 0],
                dets.xyxy[ids >= 0],
            )
        )
    s = mot_scores(frames)
    assert s["idf1"] >= MIN_IDF1 and s["mota"] >= MIN_MOTA, s
