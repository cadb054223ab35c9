"""One busy camera on several workers: `ingest --spread N` sends a camera's frames round-robin to N
partitions, on the embedded log and on Kafka, so the N members of a group share it; its frames are
then processed out of order, so a tracking worker stores them without track ids and says why."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from itertools import islice

import pytest
from faultlib import kafka_url
from media import sample

from visionlake.errors import InputError
from visionlake.ingest.publish import ingest
from visionlake.ingest.sources import VideoFileSource
from visionlake.lake import Lake
from visionlake.log.base import DEFAULT_PARTITIONS, partition_for


def frames(n: int, size=(160, 120)):
    return islice(VideoFileSource(sample("vtest.avi"), resize=size), n)


@pytest.mark.parametrize("backend", ["sqlite", "kafka"])
def test_a_spread_camera_goes_round_robin_over_its_partitions(backend, tmp_path, request):
    url = kafka_url(request.getfixturevalue("kafka_broker")) if backend == "kafka" else None
    lake = Lake(lake=tmp_path / "lake", log=url)
    assert ingest(lake, frames(12), "door", spread=3).frames == 12
    first = partition_for(b"door", DEFAULT_PARTITIONS)
    want = [(first + i) % DEFAULT_PARTITIONS for i in range(3)]
    consumer = lake.log.consumer(["frames"])
    got: list = []
    for _ in range(50):
        got += consumer.poll(100, timeout=0.5)
        if len(got) >= 12:
            break
    consumer.close()
    counts = Counter(r.partition for r in got)
    assert sorted(counts) == sorted(want) and set(counts.values()) == {4}
    assert {r.header("vl-spread") for r in got} == {"3"} and {r.key for r in got} == {b"door"}
    with pytest.raises(InputError, match="1 to 4"):
        ingest(lake, frames(1), "door", spread=DEFAULT_PARTITIONS + 1)
    lake.close()


def vl(root, *args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "visionlake", "--lake", str(root), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_two_workers_share_one_spread_camera_and_tracking_leaves_it_alone(tmp_path):
    root = tmp_path / "lake"
    video = str(sample("vtest.avi"))
    out = vl(
        root,
        "ingest",
        "video",
        video,
        "--camera",
        "hall",
        "--resize",
        "320x240",
        "--fps",
        "5",
        "--spread",
        "2",
    )
    assert out.returncode == 0, out.stderr
    run = vl(
        root,
        "worker",
        "-d",
        "haar-face",
        "--processes",
        "2",
        "--until-idle",
        "--idle-timeout",
        "2",
        "-f",
        "json",
    )
    assert run.returncode == 0, run.stderr
    workers = json.loads(run.stdout)
    assert len(workers) == 2 and all(w["processed"] > 0 for w in workers), workers  # both took frames
    with Lake(lake=root) as lake:
        n = lake.catalog.query("SELECT count(*) FROM frames").rows[0][0]
        assert lake.catalog.query("SELECT count(*) FROM results").rows == [(n,)]
    tracked = vl(root, "worker", "-d", "hog-person", "--track", "--until-idle", "--idle-timeout", "1")
    assert tracked.returncode == 0, tracked.stderr
    assert "spread over several partitions" in tracked.stderr and "without track ids" in tracked.stderr
    with Lake(lake=root) as lake:
        assert lake.catalog.query("SELECT count(*) FROM detections WHERE track_id IS NOT NULL").rows == [(0,)]
        assert lake.catalog.query("SELECT count(*) FROM tracks").rows == [(0,)]
    bad = vl(root, "ingest", "video", video, "--camera", "x", "--spread", "9")
    assert bad.returncode == 2 and "--spread 9" in bad.stderr
