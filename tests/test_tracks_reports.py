"""Tracks as reports, on every catalog backend: `tracks` (newest, longest, most frames first) and
`visitors` per bucket (a track spanning two hours is a visitor in both and an entry in the first),
filters, the model version chosen, and the CLI over them."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import timedelta

import pytest
from test_catalog import T0, meta, result
from test_tracks_catalog import tracked

from visionlake.analytics.reports import ReportFilter, UnknownModel
from visionlake.analytics.tracks import TrackFilter, tracks, visitors
from visionlake.errors import InputError
from visionlake.lake import Lake

H = timedelta(hours=1)


def visit(catalog, camera: str, track: int, start, seconds: int, label: str = "person", version: str = "1"):
    """One track seen in a frame every 10 s for `seconds` seconds (a frame each, its own seq range)."""
    rows = []
    for k in range(seconds // 10 + 1):
        at = start + timedelta(seconds=10 * k)
        m = meta(camera, track * 1000 + k, at)
        rows.append(result(m, tracked((label, 0.5 + k / 1000, (k, 0, k + 10, 20), track)), version=version))
    catalog.ensure_model("haar-face", version, {"v": version})
    catalog.write_results(rows)


@pytest.fixture
def hall(catalog):
    """Camera hall: track 1 08:00-08:05, track 2 08:50-09:20 (two hours), track 3 09:10 for 10 s and
    a one-frame track 4; camera door: track 5 (a face) at 08:30."""
    visit(catalog, "hall", 1, T0, 300)
    visit(catalog, "hall", 2, T0 + 50 * timedelta(minutes=1), 1800)
    visit(catalog, "hall", 3, T0 + H + timedelta(minutes=10), 10)
    visit(catalog, "hall", 4, T0 + H + timedelta(minutes=30), 0)
    visit(catalog, "door", 5, T0 + timedelta(minutes=30), 60, label="face")
    return catalog


def at(hours: float = 0, minutes: float = 0):
    return (T0 + timedelta(hours=hours, minutes=minutes)).replace(tzinfo=None)


def test_visitors_per_hour_count_each_track_in_every_hour_it_was_seen(hall):
    rep = visitors(hall, TrackFilter(), "hour")
    assert rep.columns == ["hour", "camera", "label", "visitors", "entries", "mean_dwell_s"]
    assert rep.rows == [
        (at(0), "door", "face", 1, 1, 60.0),
        (at(0), "hall", "person", 2, 2, 1050.0),  # tracks 1 (300 s) and 2 (1800 s) came
        (at(1), "hall", "person", 2, 1, 10.0),  # track 2 still there, track 3 came; track 4: 1 frame
    ]
    with_short = visitors(hall, TrackFilter(min_frames=1), "hour")
    assert with_short.rows[-1] == (at(1), "hall", "person", 3, 2, 5.0)


def test_visitors_in_a_window_count_who_was_there_and_entries_only_in_it(hall):
    flt = ReportFilter(camera="hall", since=T0 + H, until=T0 + 2 * H)
    assert visitors(hall, TrackFilter(flt), "hour").rows == [(at(1), "hall", "person", 2, 1, 10.0)]
    minutes = visitors(
        hall, TrackFilter(ReportFilter(camera="hall", until=T0 + timedelta(minutes=52))), "minute"
    )
    assert [r[0].minute for r in minutes.rows] == [0, 1, 2, 3, 4, 5, 50, 51]
    assert visitors(hall, TrackFilter(ReportFilter(label="face")), "day").rows == [
        (at(0) - timedelta(hours=8), "door", "face", 1, 1, 60.0)
    ]


def test_tracks_newest_longest_or_most_frames_first(hall):
    newest = tracks(hall)
    assert [r[0] for r in newest.rows] == [3, 2, 5, 1]  # track 4 has one frame: left out
    assert newest.columns[:3] == ["track_id", "camera", "label"] and newest.rows[1][7] == 1800.0
    assert [r[0] for r in tracks(hall, order="dwell").rows] == [2, 1, 5, 3]
    assert [r[0] for r in tracks(hall, order="frames", limit=2).rows] == [2, 1]
    in_window = TrackFilter(ReportFilter(since=T0 + timedelta(minutes=20), until=T0 + H))
    assert {r[0] for r in tracks(hall, in_window).rows} == {2, 5}
    best = tracks(hall, TrackFilter(ReportFilter(camera="door"))).rows[0]
    assert best[9] == meta("door", 5006, T0 + timedelta(minutes=31)).frame_id  # the highest score
    with pytest.raises(InputError, match="order"):
        tracks(hall, order="name")
    with pytest.raises(InputError, match="min_frames"):
        TrackFilter(min_frames=0)


def test_each_model_counts_with_its_newest_version_that_has_tracks(hall):
    visit(hall, "hall", 9, T0, 100, version="2")  # a replay's tracks: version 2 is newer
    assert [(r[0], r[4]) for r in tracks(hall).rows] == [(9, "2")]
    assert {r[0] for r in tracks(hall, TrackFilter(ReportFilter(model_version="1"))).rows} == {1, 2, 3, 5}
    with pytest.raises(UnknownModel, match="no model 'yolo'"):
        visitors(hall, TrackFilter(ReportFilter(model="yolo")))


def test_no_tracks_is_an_empty_report(catalog):
    assert visitors(catalog).rows == [] and tracks(catalog).rows == []


def test_cli_tracks_and_visitors_for_people_and_scripts(tmp_path):
    lake = Lake(lake=tmp_path / "lake")
    visit(lake.catalog, "hall", 1, T0, 300)
    visit(lake.catalog, "hall", 2, T0 + 50 * timedelta(minutes=1), 1800)
    lake.close()

    def vl(*args: str) -> subprocess.CompletedProcess:
        argv = [sys.executable, "-m", "visionlake", "--lake", str(tmp_path / "lake"), *args]
        return subprocess.run(argv, capture_output=True, text=True, timeout=60)

    out = vl("tracks", "--order", "dwell", "--format", "json")
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert [(r["track_id"], r["dwell_s"], r["frames"]) for r in rows] == [(2, 1800.0, 181), (1, 300.0, 31)]
    out = vl("report", "visitors", "--format", "csv", "--plot", str(tmp_path / "v.png"))
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        "hour,camera,label,visitors,entries,mean_dwell_s",
        "2026-11-03T08:00:00,hall,person,2,2,1050.0",
        "2026-11-03T09:00:00,hall,person,1,0,",
    ]
    assert (tmp_path / "v.png").read_bytes()[:4] == b"\x89PNG"
    bad = vl("tracks", "--min-frames", "0")
    assert bad.returncode == 2 and "--min-frames" in bad.stderr
    unknown = vl("report", "visitors", "--model", "yolo")
    assert unknown.returncode == 2 and "no model 'yolo'" in unknown.stderr
