"""Model-version comparison: box matching on a worked example, the comparison on a hand-made catalog
(SQLite and PostgreSQL), and end to end on real faces: haar-face version 1, a replay as version 2
with other parameters, then `visionlake compare`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from itertools import islice
from pathlib import Path

import numpy as np
import pytest
from media import sample
from test_reports import fill

from visionlake.analytics.compare import compare_versions, iou_matrix, match_boxes
from visionlake.analytics.reports import ReportFilter, UnknownModel
from visionlake.catalog import open_catalog
from visionlake.detectors import load_detector
from visionlake.errors import InputError
from visionlake.ingest.publish import ingest
from visionlake.ingest.sources import VideoFileSource
from visionlake.lake import Lake
from visionlake.workers.worker import Worker

# --- matching, by hand --------------------------------------------------------------------------------
#
#   A (label, score, box)               B (label, box)          IoU with its A box
#   0 face   0.9 [0, 0, 10, 10]        0 face [1, 0, 11, 10]   90 / 110 = 0.818  match
#   1 face   0.8 [20, 0, 30, 10]       1 face [20, 0, 30, 10]  1                 match
#   2 face   0.7 [40, 0, 50, 10]       2 face [44, 0, 54, 10]  60 / 140 = 0.429  below 0.5: none
#   3 person 0.6 [60, 0, 70, 10]       3 face [60, 0, 70, 10]  1, other label    none

A_BOXES = [[0, 0, 10, 10], [20, 0, 30, 10], [40, 0, 50, 10], [60, 0, 70, 10]]
A_SCORES = [0.9, 0.8, 0.7, 0.6]
A_LABELS = ["face", "face", "face", "person"]
B_BOXES = [[1, 0, 11, 10], [20, 0, 30, 10], [44, 0, 54, 10], [60, 0, 70, 10]]
B_LABELS = ["face", "face", "face", "face"]


def test_iou_matrix_by_hand():
    m = iou_matrix(np.array(A_BOXES), np.array(B_BOXES))
    assert m.shape == (4, 4)
    assert m[0, 0] == pytest.approx(90 / 110) and m[1, 1] == 1.0 and m[3, 3] == 1.0
    assert m[2, 2] == pytest.approx(60 / 140)
    assert m[0, 1] == 0.0 and m[1, 0] == 0.0  # disjoint boxes
    flat = iou_matrix(np.array([[5, 5, 5, 9]]), np.array([[5, 5, 5, 9], [0, 0, 1, 1]]))
    assert flat.tolist() == [[0.0, 0.0]]  # a box without area overlaps nothing (no NaN)
    assert iou_matrix(np.zeros((0, 4)), np.array(B_BOXES)).shape == (0, 4)


def test_matching_by_hand():
    m = match_boxes(A_BOXES, A_SCORES, A_LABELS, B_BOXES, B_LABELS, iou=0.5)
    assert m.pairs == [(0, 0), (1, 1)]
    assert (m.matched, m.only_a, m.only_b) == (2, 2, 2)
    assert np.mean(m.ious) == pytest.approx((90 / 110 + 1) / 2)
    # at IoU 0.4 the shifted box matches too; the other label still never does
    m = match_boxes(A_BOXES, A_SCORES, A_LABELS, B_BOXES, B_LABELS, iou=0.4)
    assert m.pairs == [(0, 0), (1, 1), (2, 2)] and (m.only_a, m.only_b) == (1, 1)


def test_matching_is_greedy_by_score():
    """The higher-scored A box takes B's box, although the lower-scored one overlaps it more."""
    low_but_exact = [0, 0, 10, 10]
    high_but_shifted = [0, 0, 10, 14]  # IoU with B's box: 100 / 140 = 0.714
    m = match_boxes(
        [low_but_exact, high_but_shifted], [0.3, 0.9], ["face", "face"], [[0, 0, 10, 10]], ["face"]
    )
    assert m.pairs == [(1, 0)] and m.ious == [pytest.approx(100 / 140)]
    assert (m.only_a, m.only_b) == (1, 0)
    empty = match_boxes(np.zeros((0, 4)), [], [], B_BOXES, B_LABELS)
    assert (empty.matched, empty.only_a, empty.only_b) == (0, 0, 4)


# --- on a hand-made catalog (see test_reports.py's docstring) -----------------------------------------


@pytest.fixture(params=["sqlite", "postgres"])
def catalog(request, tmp_path):
    url = (
        str(tmp_path / "lake" / "catalog.db")
        if request.param == "sqlite"
        else request.getfixturevalue("postgres_url")
    )
    cat = open_catalog(url)
    yield cat
    cat.close()


def h(hh: int) -> datetime:
    return datetime(2026, 11, 3, hh)


@pytest.mark.parametrize("page", [500, 1])
def test_compare_versions_on_a_partial_replay(catalog, page):
    ids = fill(catalog)
    c = compare_versions(catalog, "haar-face", "1", "2", page=page)
    # frames of both: a0 (v1: 1 face; v2: 2 faces, one the same box) and a1 (v1: 2 faces; v2: none)
    assert c.agreement == {
        "model": "haar-face",
        "a": "1",
        "b": "2",
        "iou_threshold": 0.5,
        "frames_a": 6,
        "frames_b": 2,
        "frames_both": 2,
        "detections_a": 3,
        "detections_b": 2,
        "matched": 1,
        "only_a": 2,
        "only_b": 1,
        "mean_iou": 1.0,
    }
    assert c.side_by_side.columns == [
        "camera",
        "hour",
        "frames_a",
        "detections_a",
        "frames_b",
        "detections_b",
    ]
    assert c.side_by_side.rows == [
        ("cam-a", h(8), 2, 3, 2, 2),
        ("cam-a", h(9), 1, 0, 0, 0),
        ("cam-a", h(10), 1, 3, 0, 0),
        ("cam-b", h(8), 1, 1, 0, 0),
        ("cam-b", h(9), 1, 0, 0, 0),
    ]
    assert [(r[0], r[3], r[4]) for r in c.worst.rows] == [(ids["a1"], 2, 0), (ids["a0"], 0, 1)]
    only_b = compare_versions(catalog, "haar-face", "1", "2", ReportFilter(camera="cam-b"))
    assert only_b.agreement["frames_both"] == 0 and only_b.agreement["mean_iou"] is None
    with pytest.raises(UnknownModel, match=r"'haar-face' has no version '3' \(versions: 1, 2\)"):
        compare_versions(catalog, "haar-face", "1", "3")
    with pytest.raises(InputError, match="two different versions"):
        compare_versions(catalog, "haar-face", "1", "1")


# --- end to end: real faces, a replay with other parameters, the CLI --------------------------------

RUNNER = "from visionlake.cli import app, main\nfrom visionlake.cli_analytics import register\nregister(app)\nmain()\n"
N = 20


def run(lake: Path, *args: object, analytics: bool = False) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VISIONLAKE_")}
    head = ["-c", RUNNER] if analytics else ["-m", "visionlake"]
    cmd = [sys.executable, *head, "--lake", str(lake), *map(str, args)]
    out = subprocess.run(cmd, env={**env, "COLUMNS": "120"}, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr
    return out


@pytest.fixture(scope="module")
def replayed(tmp_path_factory) -> Path:
    """20 Megamind frames: haar-face version 1 by a worker, then version 2 (min_neighbors=2) by replay."""
    root = tmp_path_factory.mktemp("compare") / "lake"
    with Lake(lake=root) as lk:
        start = datetime.now(UTC) - timedelta(hours=1)
        src = VideoFileSource(sample("Megamind.avi"), fps=2, resize=(320, 240), start_time=start)
        assert ingest(lk, islice(src, N), "megamind").frames == N
        stats = Worker(lk, load_detector("haar-face"), until_idle=True, idle_timeout=0.3).run()
        assert stats.processed == N and stats.detections > 0
    run(root, "replay", "--detector", "haar-face", "--model-version", "2", "--param", "min_neighbors=2")
    return root


def test_compare_cli_end_to_end(replayed):
    doc = json.loads(
        run(replayed, "compare", "haar-face", "1", "2", "--format", "json", analytics=True).stdout
    )
    assert set(doc) == {"agreement", "side_by_side", "worst"}
    ag = doc["agreement"]
    with Lake(lake=replayed) as lk:
        per = {
            v: lk.catalog.existing_results(
                [f.frame_id for f in lk.catalog.frames_after(None, limit=1000)], "haar-face", v
            )
            for v in ("1", "2")
        }
    assert len(per["1"]) == len(per["2"]) == N
    n1 = sum(len(d) for d in per["1"].values())
    n2 = sum(len(d) for d in per["2"].values())
    assert n2 > n1  # fewer neighbours needed: more faces (true and false)
    assert ag["frames_a"] == ag["frames_b"] == ag["frames_both"] == N
    assert (ag["detections_a"], ag["detections_b"]) == (n1, n2)
    assert ag["matched"] + ag["only_a"] == n1 and ag["matched"] + ag["only_b"] == n2
    assert ag["matched"] > 0 and 0.5 <= ag["mean_iou"] <= 1
    assert sum(r["frames_a"] for r in doc["side_by_side"]) == N
    assert sum(r["detections_b"] for r in doc["side_by_side"]) == n2

    # the worst frames, worked out independently from each frame's stored boxes
    def disagreement(fid: str) -> int:
        a, b = per["1"][fid], per["2"][fid]
        m = match_boxes(a.xyxy, a.score, a.label, b.xyxy, b.label)
        return m.only_a + m.only_b

    expected = sorted((d, fid) for fid in per["1"] if (d := disagreement(fid)) > 0)
    worst = doc["worst"]
    assert worst and len(worst) == min(20, len(expected))
    shown = [r["only_a"] + r["only_b"] for r in worst]
    assert shown == sorted(shown, reverse=True)
    assert shown[0] == max(d for d, _ in expected)
    assert sorted(shown, reverse=True) == sorted((d for d, _ in expected), reverse=True)[: len(shown)]
    for r in worst:
        assert r["only_a"] + r["only_b"] == disagreement(r["frame_id"]) and r["camera"] == "megamind"

    table = run(replayed, "compare", "haar-face", "1", "2", "--worst", "3", analytics=True).stdout
    assert "frames both" in table and "only a" in table and worst[0]["frame_id"] in table
    csv = run(replayed, "compare", "haar-face", "1", "2", "--format", "csv", analytics=True).stdout
    assert csv.splitlines()[0] == "camera,hour,frames_a,detections_a,frames_b,detections_b"


def test_matching_a_page_at_once_agrees_with_matching_each_frame():
    """`match_page` (what compare_versions runs) gives `match_boxes`'s answer on random frames."""
    from visionlake.analytics.compare import match_page

    rng = np.random.default_rng(7)
    rows_a, rows_b, frames = [], [], {}
    for f in range(300):
        fid = f"f{f:03d}"
        made = {}
        for side, rows in (("a", rows_a), ("b", rows_b)):
            n = int(rng.integers(0, 5))
            xy = rng.uniform(0, 40, (n, 2)).round()  # coarse grid: overlaps, ties and exact repeats
            wh = rng.uniform(5, 30, (n, 2)).round()
            boxes = np.hstack([xy, xy + wh])
            scores = rng.choice([0.5, 0.7, 0.9], n)
            labels = rng.choice(["face", "person"], n)
            rows += [
                (fid, side, str(lab), float(s), *map(float, b))
                for b, s, lab in zip(boxes, scores, labels, strict=True)
            ]
            made[side] = (boxes, scores, labels)
        frames[fid] = made
    for thr in (0.3, 0.5):
        got = match_page(rows_a, rows_b, thr)
        for fid, made in frames.items():
            (ba, sa, la), (bb, _, lb) = made["a"], made["b"]
            m = match_boxes(ba, sa, la, bb, lb, thr)
            n_a, n_b, matched, iou_sum = got.get(fid, (0, 0, 0, 0.0))
            assert (n_a, n_b, matched) == (m.n_a, m.n_b, m.matched), fid
            assert iou_sum == pytest.approx(sum(m.ious))
