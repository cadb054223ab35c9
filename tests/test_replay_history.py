"""Replay over the whole history: frames the log has dropped by retention are read back from the
catalog and the archive, with the same bookkeeping as a replay from the log."""

from __future__ import annotations

import json
import subprocess
import sys
from itertools import islice

import pytest
from media import sample

from visionlake.detectors import load_detector
from visionlake.errors import InputError
from visionlake.ingest.publish import ingest
from visionlake.ingest.sources import VideoFileSource
from visionlake.lake import Lake
from visionlake.replay import choose_source, prepare_replay, replay_group
from visionlake.workers.worker import Worker

N = 12


def publish(lake: Lake, camera: str, n: int, skip: int = 0) -> int:
    src = VideoFileSource(sample("vtest.avi"), resize=(320, 240))
    return ingest(lake, islice(src, skip, skip + n), camera).frames


def versions(lake: Lake) -> list[tuple]:
    return lake.catalog.query(
        "SELECT model_version, count(*), count(DISTINCT frame_id) FROM results GROUP BY 1 ORDER BY 1"
    ).rows


@pytest.fixture
def trimmed(lake) -> Lake:
    """A lake whose log has dropped its oldest frames by retention, all of them processed once."""
    lake.log.segment_bytes = 40_000  # a few frames a segment, so retention can drop whole segments
    for i in range(N):  # one flush a frame: a segment rolls at the first flush past its size
        publish(lake, "lobby", 1, skip=i)
    assert Worker(lake, load_detector("haar-face"), until_idle=True, idle_timeout=0.3).run().processed == N
    lake.log.alter_topic("frames", retention_bytes=1)
    assert lake.log.enforce_retention() > 0
    kept = sum(p.records for t in lake.log.topics() if t.name == "frames" for p in t.partitions)
    assert 0 < kept < N
    return lake


def test_replay_reads_the_archive_once_the_log_has_dropped_frames(trimmed):
    lake = trimmed
    det = load_detector("haar-face", {"min_neighbors": "3"})
    assert choose_source(lake, replay_group(det.name, "2"), "frames") == "archive"
    stats = prepare_replay(lake, det, version="2").run()
    assert stats.source == "archive" and stats.processed == N and stats.dead_lettered == 0
    assert versions(lake) == [("1", N, N), ("2", N, N)]
    # the log alone would have missed what retention dropped
    from_log = prepare_replay(lake, load_detector("haar-face"), version="3", source="log").run()
    assert from_log.source == "log" and from_log.processed < N


def test_an_interrupted_archive_replay_resumes_where_it_stopped(trimmed):
    lake = trimmed
    det = load_detector("haar-face", {"min_neighbors": "4"})
    w = prepare_replay(lake, det, version="2", source="archive")
    w.max_frames = 5
    assert w.run().processed == 5
    cursor = lake.catalog.replay_cursor(replay_group("haar-face", "2"))
    assert cursor is not None
    # resumes on the archive by itself (the cursor says where), does only the rest
    rest = prepare_replay(lake, det, version="2").run()
    assert rest.source == "archive" and rest.processed == N - 5 and rest.reused == 0
    assert versions(lake) == [("1", N, N), ("2", N, N)]
    # a finished replay finds nothing more; --restart reads everything again, reusing stored results
    assert prepare_replay(lake, det, version="2").run().processed == 0
    again = prepare_replay(lake, det, version="2", restart=True, source="archive").run()
    assert again.processed == N and again.reused == N
    assert versions(lake) == [("1", N, N), ("2", N, N)]


def test_archive_replay_keeps_to_its_time_window(trimmed):
    lake = trimmed
    times = [r[0] for r in lake.catalog.query("SELECT captured_at FROM frames ORDER BY 1").rows]
    det = load_detector("haar-face", {"min_neighbors": "5"})
    stats = prepare_replay(
        lake, det, version="2", source="archive", start=str(times[3]) + "+00:00", end=str(times[7]) + "+00:00"
    ).run()
    assert stats.processed == 5


def test_a_frame_missing_from_the_archive_goes_to_the_dead_letters(trimmed):
    lake = trimmed
    (uri,) = lake.catalog.query("SELECT uri FROM frames ORDER BY captured_at LIMIT 1").rows[0]
    import os

    os.unlink(uri)
    stats = prepare_replay(lake, load_detector("haar-face"), version="2", source="archive").run()
    assert stats.processed == N - 1 and stats.dead_lettered == 1
    with lake.log.consumer(["frames.dlq"]) as c:
        (dead,) = c.poll(10, 2.0)
    assert "claim-check reference unreadable" in dead.header("vl-error")
    assert dead.header("vl-ref") == uri


def test_replay_source_is_checked(lake):
    with pytest.raises(InputError, match="--source must be one of auto, log, archive"):
        prepare_replay(lake, load_detector("haar-face"), source="tape")


def test_replay_cli_says_which_source_it_read(trimmed):
    lake = trimmed
    out = subprocess.run(
        [sys.executable, "-m", "visionlake", "--lake", str(lake.root), "replay", "--detector", "haar-face"]
        + ["--model-version", "2", "--format", "json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["replay"]["source"] == "archive" and doc["replay"]["processed"] == N


def test_replay_cli_reads_the_source_it_is_told(trimmed):
    lake = trimmed
    base = [sys.executable, "-m", "visionlake", "--lake", str(lake.root), "replay", "--detector", "haar-face"]
    out = subprocess.run(
        [*base, "--model-version", "3", "--source", "log", "--format", "csv"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "from the log" in out.stderr
    bad = subprocess.run([*base, "--source", "tape"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "--source must be one of" in bad.stderr
