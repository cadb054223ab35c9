"""Reports over a real catalog (SQLite file and PostgreSQL server), against counts worked out by hand.

The catalog holds a partial replay: haar-face version 2 processed only a0 and a1, so those two
frames count with version 2 and every other frame with version 1 (the rule of `detections_for`);
counting both versions would double-count a0 and a1. hog-person has one version.

    frame  camera  captured  haar-face v1  haar-face v2  hog-person v1
    a0     cam-a   08:05     1 face        2 faces       2 persons
    a1     cam-a   08:40     2 faces       0
    a2     cam-a   09:10     0
    a3     cam-a   10:30     3 faces
    b0     cam-b   08:20     1 face
    b1     cam-b   09:50     0                           1 person
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from test_catalog import dets, meta, result

from visionlake.analytics.reports import ReportFilter, UnknownModel, counts, hours, latest, top
from visionlake.errors import InputError, MissingDependency
from visionlake.lake import Lake

DAY = datetime(2026, 11, 3, tzinfo=UTC)
FACE = ("face", 0.9, (10, 20, 50, 80))
PERSON = ("person", 0.7, (100, 50, 160, 250))


def at(hh: int, mm: int) -> datetime:
    return DAY + timedelta(hours=hh, minutes=mm)


def h(hh: int, mm: int = 0) -> datetime:
    """A bucket or capture time as reports return it: naive UTC."""
    return datetime(2026, 11, 3, hh, mm)


def fill(catalog) -> dict[str, str]:
    """The catalog of the module docstring; returns frame name -> frame id."""
    m = {
        "a0": meta("cam-a", 0, at(8, 5)),
        "a1": meta("cam-a", 1, at(8, 40)),
        "a2": meta("cam-a", 2, at(9, 10)),
        "a3": meta("cam-a", 3, at(10, 30)),
        "b0": meta("cam-b", 0, at(8, 20)),
        "b1": meta("cam-b", 1, at(9, 50)),
    }
    catalog.ensure_model("haar-face", "1", {"min_neighbors": 5})
    catalog.ensure_model("hog-person", "1", {})
    faces = {"a0": 1, "a1": 2, "a2": 0, "a3": 3, "b0": 1, "b1": 0}
    catalog.write_results([result(m[k], dets(*[FACE] * n)) for k, n in faces.items()])
    catalog.write_results(
        [
            result(m["a0"], dets(PERSON, PERSON), model="hog-person"),
            result(m["b1"], dets(PERSON), model="hog-person"),
        ]
    )
    catalog.ensure_model("haar-face", "2", {"min_neighbors": 2})  # registered after version 1: newer
    catalog.write_results(
        [result(m["a0"], dets(FACE, FACE), version="2"), result(m["a1"], dets(), version="2")]
    )
    return {k: v.frame_id for k, v in m.items()}


# --- fixtures (as in test_catalog.py: every backend passes the same tests) ----------------------------


@pytest.fixture
def ids(catalog) -> dict[str, str]:
    return fill(catalog)


# --- counts ---------------------------------------------------------------------------------------------


def test_counts_per_hour_and_camera_take_the_newest_version_of_each_frame(catalog, ids):
    rep = counts(catalog)
    assert rep.columns == ["hour", "camera", "frames", "detections"]
    assert rep.rows == [
        (h(8), "cam-a", 2, 4),  # a0: v2's 2 faces + 2 persons; a1: v2's 0 faces (v1 would add 3 more)
        (h(8), "cam-b", 1, 1),
        (h(9), "cam-a", 1, 0),
        (h(9), "cam-b", 1, 1),
        (h(10), "cam-a", 1, 3),
    ]


def test_counts_by_model_version_and_label(catalog, ids):
    flt = ReportFilter(model="haar-face", label="face")
    rep = counts(catalog, flt, bucket="hour", by=("label", "model-version"))
    assert rep.columns == ["hour", "model", "model_version", "label", "frames", "detections"]
    assert rep.rows == [
        (h(8), "haar-face", "1", "face", 1, 1),  # b0
        (h(8), "haar-face", "2", "face", 2, 2),  # a0, a1 (replayed)
        (h(9), "haar-face", "1", "face", 2, 0),  # a2, b1: processed, nothing found
        (h(10), "haar-face", "1", "face", 1, 3),
    ]
    # grouped by label over every model: labels side by side, frames are the frames processed
    rep = counts(catalog, bucket="day", by=["label"])
    assert rep.rows == [(h(0), "face", 6, 6), (h(0), "person", 6, 3)]


def test_counts_per_day_minute_and_pinned_version(catalog, ids):
    assert counts(catalog, bucket="day", by=()).rows == [(h(0), 6, 9)]
    v1 = ReportFilter(model="haar-face", model_version="1")
    assert counts(catalog, v1, bucket="day", by=()).rows == [(h(0), 6, 7)]  # every v1 face, once
    v2 = ReportFilter(model="haar-face", model_version="2")
    assert counts(catalog, v2, bucket="day", by=()).rows == [(h(0), 2, 2)]
    cam_a = ReportFilter(model="haar-face", camera="cam-a")
    assert counts(catalog, cam_a, bucket="minute").rows == [
        (h(8, 5), "cam-a", 1, 2),
        (h(8, 40), "cam-a", 1, 0),
        (h(9, 10), "cam-a", 1, 0),
        (h(10, 30), "cam-a", 1, 3),
    ]
    window = ReportFilter(since=at(9, 0), until=at(10, 0))  # [since, until)
    assert counts(catalog, window).rows == [(h(9), "cam-a", 1, 0), (h(9), "cam-b", 1, 1)]
    assert counts(catalog, ReportFilter(since=at(11, 0))).rows == []


def test_hour_of_day_histogram(catalog, ids):
    rep = hours(catalog)
    assert rep.columns == ["hour", "frames", "detections"] and [r[0] for r in rep.rows] == list(range(24))
    busy = {r[0]: r[1:] for r in rep.rows if r[1]}
    assert busy == {8: (3, 5), 9: (2, 1), 10: (1, 3)}
    assert all(r[1:] == (0, 0) for r in rep.rows if r[0] not in busy)
    faces = {r[0]: r[1:] for r in hours(catalog, ReportFilter(label="face")).rows if r[1]}
    assert faces == {8: (3, 3), 9: (2, 0), 10: (1, 3)}


def test_top_and_latest_frames(catalog, ids):
    rep = top(catalog, limit=3)
    assert rep.columns == ["frame_id", "camera", "captured_at", "count", "uri"]
    # ties: the later capture first (b1 at 09:50 before b0 at 08:20)
    assert [(r[0], r[3]) for r in rep.rows] == [(ids["a0"], 4), (ids["a3"], 3), (ids["b1"], 1)]
    assert rep.rows[0][1:3] == ("cam-a", h(8, 5)) and rep.rows[0][4].endswith(f"{ids['a0']}.jpg")
    faces = top(catalog, ReportFilter(label="face"))
    assert [(r[0], r[3]) for r in faces.rows] == [(ids["a3"], 3), (ids["a0"], 2), (ids["b0"], 1)]
    people = top(catalog, ReportFilter(model="hog-person", label="person"))
    assert [(r[0], r[3]) for r in people.rows] == [(ids["a0"], 2), (ids["b1"], 1)]

    rep = latest(catalog, limit=3)
    assert [(r[0], r[2], r[3]) for r in rep.rows] == [
        (ids["a3"], h(10, 30), 3),
        (ids["b1"], h(9, 50), 1),
        (ids["a2"], h(9, 10), 0),
    ]
    faces = latest(catalog, ReportFilter(model="haar-face", label="face"), limit=3)
    assert [(r[0], r[3]) for r in faces.rows] == [(ids["a3"], 3), (ids["b1"], 0), (ids["a2"], 0)]
    people = latest(catalog, ReportFilter(model="hog-person"))
    assert [(r[0], r[3]) for r in people.rows] == [(ids["b1"], 1), (ids["a0"], 2)]
    replayed = latest(catalog, ReportFilter(model="haar-face", model_version="2", camera="cam-a"))
    assert [(r[0], r[3]) for r in replayed.rows] == [(ids["a1"], 0), (ids["a0"], 2)]


def test_unknown_models_and_versions_are_named_with_what_exists(catalog, ids):
    with pytest.raises(
        UnknownModel, match=r"no model 'yolo' in the catalog \(models: haar-face, hog-person\)"
    ):
        counts(catalog, ReportFilter(model="yolo"))
    with pytest.raises(UnknownModel, match=r"'haar-face' has no version '9' \(versions: 1, 2\)"):
        top(catalog, ReportFilter(model="haar-face", model_version="9"))
    with pytest.raises(InputError, match="bucket must be one of minute, hour, day"):
        counts(catalog, bucket="week")
    with pytest.raises(InputError, match="cannot group by 'score'"):
        counts(catalog, by=("score",))


# --- CLI and plots (SQLite) ---------------------------------------------------------------------------

RUNNER = (
    "from visionlake.cli import app, main\n"
    "from visionlake.cli_analytics import register\n"
    "register(app)\n"
    "main()\n"
)


def cli(lake: Path, *args: object) -> subprocess.CompletedProcess:
    """`visionlake --lake LAKE ARGS` with the analytics commands registered, as users run it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VISIONLAKE_")}
    cmd = [sys.executable, "-c", RUNNER, "--lake", str(lake), *map(str, args)]
    return subprocess.run(cmd, env={**env, "COLUMNS": "120"}, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def lake(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("reports") / "lake"
    with Lake(lake=root) as lk:
        fill(lk.catalog)
    return root


def test_cli_reports_print_json_and_csv(lake):
    out = cli(lake, "report", "counts", "--model", "haar-face", "--by", "model-version", "--format", "json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == [
        {
            "hour": "2026-11-03T08:00:00",
            "model": "haar-face",
            "model_version": "1",
            "frames": 1,
            "detections": 1,
        },
        {
            "hour": "2026-11-03T08:00:00",
            "model": "haar-face",
            "model_version": "2",
            "frames": 2,
            "detections": 2,
        },
        {
            "hour": "2026-11-03T09:00:00",
            "model": "haar-face",
            "model_version": "1",
            "frames": 2,
            "detections": 0,
        },
        {
            "hour": "2026-11-03T10:00:00",
            "model": "haar-face",
            "model_version": "1",
            "frames": 1,
            "detections": 3,
        },
    ]
    out = cli(lake, "report", "top", "--label", "face", "--limit", "2", "--format", "csv")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "frame_id,camera,captured_at,count,uri" and len(lines) == 3
    assert lines[1].split(",")[3] == "3"


def test_cli_plots_png_and_svg(lake, tmp_path):
    pytest.importorskip("matplotlib")
    import cv2
    import numpy as np

    png = tmp_path / "hours.png"
    out = cli(lake, "report", "counts", "--by", "camera", "--by", "label", "--plot", png)
    assert out.returncode == 0, out.stderr
    assert "cam-a" in out.stdout and f"wrote {png}" in out.stderr.replace("\n", "")
    img = cv2.imread(str(png))
    assert img is not None and img.shape == (500, 1000, 3)
    assert np.count_nonzero(img.min(axis=2) < 200) > 5000  # lines, axes and text, not a blank page
    assert len(np.unique(img.reshape(-1, 3), axis=0)) > 20  # coloured lines, antialiased
    svg = tmp_path / "hours.svg"
    out = cli(lake, "report", "hours", "--label", "face", "--plot", svg, "--format", "csv")
    assert out.returncode == 0, out.stderr
    text = svg.read_text()
    assert "<svg" in text and "hour of day (UTC)" in text


def test_cli_bad_plot_names_and_unknown_versions_are_exit_2(lake, tmp_path):
    bad = tmp_path / "top.gif"
    out = cli(lake, "report", "top", "--plot", bad)
    assert out.returncode == 2 and "top.gif" in out.stderr and ".png or .svg" in out.stderr
    assert not bad.exists()
    out = cli(lake, "report", "latest", "--model", "haar-face", "--model-version", "7")
    assert out.returncode == 2
    assert "'haar-face' has no version '7'" in out.stderr and "versions: 1, 2" in out.stderr


def test_plot_without_matplotlib_names_the_extra(monkeypatch, tmp_path):
    from visionlake.analytics.plots import plot_report
    from visionlake.analytics.reports import Report

    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")] + ["matplotlib"]:
        monkeypatch.setitem(sys.modules, name, None)
    rep = Report("hours", ["hour", "frames", "detections"], [(8, 1, 1)], "t")
    with pytest.raises(
        MissingDependency, match=r"scripts/setup.sh dashboard.*pip install -e '\.\[dashboard\]'"
    ):
        plot_report(rep, tmp_path / "x.png")
