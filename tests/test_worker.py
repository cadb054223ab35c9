"""Detector workers on real frames: results, dead letters, claim checks, crashes, rebalancing, replay."""

from __future__ import annotations

import csv
import io
import json
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path

import cv2
import numpy as np
import pytest
import sqlalchemy as sa
from media import cameras_covering

from visionlake.detectors import load_detector
from visionlake.frames import encode_jpeg
from visionlake.ingest.publish import ingest
from visionlake.ingest.sources import VideoFileSource
from visionlake.lake import Lake
from visionlake.log.base import DEFAULT_PARTITIONS, TopicConfig
from visionlake.replay import prepare_replay
from visionlake.workers.worker import Worker, default_group

DATA = Path("/usr/share/doc/opencv-doc/examples/data")


def video(name: str) -> Path:
    p = DATA / name
    if not p.is_file():
        pytest.skip(f"{p} missing: apt-get install opencv-doc")
    return p


def publish(lake: Lake, camera: str, n: int, name: str = "vtest.avi", size=(320, 240)) -> int:
    src = VideoFileSource(video(name), resize=size)
    return ingest(lake, islice(src, n), camera).frames


def scalar(lake: Lake, sql: str):
    return lake.catalog.query(sql).rows[0][0]


def cli(lake: Lake, *args: str) -> list[str]:
    return [sys.executable, "-m", "visionlake", "--lake", str(lake.root), *args]


def wait_for(pred, timeout: float = 60.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def results_count(lake: Lake) -> int:
    try:
        return scalar(lake, "SELECT count(*) FROM results")
    except Exception:
        return 0


def assert_exactly_once(lake: Lake, n: int, model: str) -> None:
    assert scalar(lake, "SELECT count(*) FROM frames") == n
    assert scalar(lake, f"SELECT count(*) FROM results WHERE model='{model}'") == n
    # each frame's detections stored once: the stored rows match the counts in results
    assert scalar(lake, "SELECT coalesce(sum(n_detections), 0) FROM results") == scalar(
        lake, "SELECT count(*) FROM detections"
    )


def test_worker_end_to_end(lake):
    # full-size frames: at 320x240 the pedestrians are too small for hog-person to find anyone
    n = publish(lake, "vtest", 20, size=(768, 576))
    stats = Worker(lake, load_detector("hog-person"), until_idle=True, idle_timeout=1.0).run()
    assert stats.processed == n == 20 and stats.dead_lettered == 0
    assert_exactly_once(lake, n, "hog-person")
    assert stats.detections >= n  # several people in every frame of the street
    rows = lake.catalog.query("SELECT uri, width, height, bytes, sha256, topic FROM frames").rows
    for uri, w, h, nbytes, sha, topic in rows:
        assert Path(uri).is_file() and Path(uri).stat().st_size == nbytes
        assert (w, h, topic, len(sha)) == (768, 576, "frames", 64)
    events = []
    with lake.log.consumer(["frames.detections"]) as c:
        while got := c.poll(100, 0.5):
            events += [json.loads(r.value) for r in got]
    assert len(events) == n
    assert {"frame_id", "camera", "model", "model_version", "detections", "latency_ms"} <= set(events[0])
    (g,) = [g for g in lake.log.groups() if g.group == default_group("hog-person", "2")]
    assert g.lag == 0


def test_bad_records_go_to_dead_letters_and_the_rest_flow(lake):
    publish(lake, "vtest", 3)
    good = encode_jpeg(cv2.resize(cv2.imread(str(DATA / "baboon.jpg")), (320, 240)))
    huge = bytearray(good)
    sof = next(i for i in range(len(huge) - 1) if huge[i] == 0xFF and huge[i + 1] in (0xC0, 0xC2))
    huge[sof + 5 : sof + 9] = (60000).to_bytes(2, "big") * 2
    bad = {
        "truncated": good[: len(good) // 3],
        "empty": b"",
        "random": np.random.default_rng(1).bytes(5000),
        "huge": bytes(huge),
    }
    with lake.log.producer() as p:
        for name, value in bad.items():
            p.send("frames", value, key=b"vtest", headers=[("test-case", name.encode())])
        p.send(
            "frames",
            good,
            key=b"vtest",
            headers=[("vl-width", b"100000"), ("vl-height", b"10"), ("test-case", b"absurd-header")],
        )
    publish(lake, "other", 3)
    stats = Worker(lake, load_detector("haar-face"), until_idle=True, idle_timeout=1.0).run()
    assert stats.processed == 6 and stats.dead_lettered == 5
    dead = {}
    with lake.log.consumer(["frames.dlq"]) as c:
        while got := c.poll(100, 0.5):
            dead.update({r.header("test-case"): r for r in got})
    assert set(dead) == {"truncated", "empty", "random", "huge", "absurd-header"}
    assert "undecodable" in dead["truncated"].header("vl-error")
    assert "empty" in dead["empty"].header("vl-error")
    assert "undecodable" in dead["random"].header("vl-error")
    assert "absurd dimensions" in dead["huge"].header("vl-error")
    assert "absurd dimensions" in dead["absurd-header"].header("vl-error")
    assert dead["random"].value == bad["random"]  # original value kept
    assert all(r.header("vl-source").startswith("frames/") for r in dead.values())
    assert_exactly_once(lake, 6, "haar-face")


def test_records_from_a_plain_producer_are_processed(lake):
    """No visionlake headers at all: JPEG value and a camera key, as any Kafka client would send."""
    src = VideoFileSource(video("Megamind.avi"), resize=(320, 240))
    with lake.log.producer() as p:
        for f in islice(src, 5):
            p.send("frames", encode_jpeg(f.image), key=b"kiosk-1")
    stats = Worker(lake, load_detector("haar-face"), until_idle=True, idle_timeout=1.0).run()
    assert stats.processed == 5
    assert lake.catalog.query("SELECT DISTINCT camera, width, height FROM frames").rows == [
        ("kiosk-1", 320, 240)
    ]


def test_frames_over_the_record_limit_are_claim_checked(lake):
    lake.log.create_topic("frames", TopicConfig(partitions=2, max_record_bytes=20_000))
    src = VideoFileSource(video("vtest.avi"))  # 768x576 frames are ~100 KB as JPEG
    stats = ingest(lake, islice(src, 3), "big")
    assert stats.claim_checked == 3 and stats.frames == 3
    with lake.log.consumer(["frames"]) as c:
        recs = c.poll(10, 1.0)
    assert all(r.value == b"" and r.header("vl-ref") for r in recs)
    w = Worker(lake, load_detector("hog-person"), until_idle=True, idle_timeout=1.0).run()
    assert w.processed == 3 and w.dead_lettered == 0
    uris = {u for (u,) in lake.catalog.query("SELECT uri FROM frames").rows}
    assert uris == {r.header("vl-ref") for r in recs}


def test_reprocessing_reuses_results_and_changes_nothing(lake):
    publish(lake, "vtest", 10)
    Worker(lake, load_detector("hog-person"), until_idle=True, idle_timeout=0.5).run()
    before = lake.catalog.query("SELECT frame_id, n_detections FROM results ORDER BY 1").rows
    group = default_group("hog-person", "2")
    lake.log.commit_group_offsets(group, "frames", {p: 0 for p in range(4)})  # as if never committed
    again = Worker(lake, load_detector("hog-person"), until_idle=True, idle_timeout=0.5).run()
    assert again.processed == 10 and again.reused == 10
    assert lake.catalog.query("SELECT frame_id, n_detections FROM results ORDER BY 1").rows == before
    assert_exactly_once(lake, 10, "hog-person")


def test_kill_9_mid_stream_then_restart_loses_nothing_and_counts_nothing_twice(lake):
    n = publish(lake, "vtest", 120)
    lake.catalog  # noqa: B018 - schema in place before the child races
    proc = subprocess.Popen(
        cli(lake, "worker", "--detector", "hog-person", "--batch-size", "4"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for(lambda: results_count(lake) >= 20, what="first results")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    done_before = results_count(lake)
    assert 20 <= done_before < n
    out = subprocess.run(
        cli(
            lake,
            "worker",
            "--detector",
            "hog-person",
            "--until-idle",
            "--idle-timeout",
            "1",
            "--format",
            "json",
        ),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    stats = json.loads(out.stdout)
    assert stats["processed"] >= n - done_before
    assert_exactly_once(lake, n, "hog-person")
    (g,) = [g for g in lake.log.groups() if g.group == "hog-person.2"]
    assert g.lag == 0 and not g.members


def test_sigterm_finishes_the_frame_commits_and_exits_0(lake):
    publish(lake, "vtest", 200)
    lake.catalog  # noqa: B018
    proc = subprocess.Popen(
        cli(lake, "worker", "--detector", "hog-person", "--format", "json"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for(lambda: results_count(lake) >= 10, what="first results")
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    stats = json.loads(out)
    committed = sum(lake.log.group_offsets("hog-person.2", "frames").values())
    assert committed == stats["processed"] == results_count(lake) < 200


def test_three_workers_share_the_stream_and_survive_a_kill(lake):
    # one camera on each partition: whatever the assignment, every member has frames to do
    videos = ("vtest.avi", "Megamind.avi")
    n = sum(
        publish(lake, camera, 40, name=videos[i % 2])
        for i, camera in enumerate(cameras_covering(DEFAULT_PARTITIONS))
    )
    lake.catalog  # noqa: B018
    cmd = cli(
        lake,
        "worker",
        "--detector",
        "haar-face",
        "--group",
        "shared",
        "--until-idle",
        "--idle-timeout",
        "4",
        "--batch-size",
        "2",
        "--format",
        "json",
    )
    procs = [
        subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(3)
    ]
    try:
        wait_for(
            lambda: len([g for g in lake.log.groups() if g.group == "shared" and len(g.members) == 3]) == 1,
            what="three members",
        )
        wait_for(lambda: results_count(lake) >= 15, what="first results")
        procs[0].send_signal(signal.SIGKILL)
        outs = [p.communicate(timeout=180) for p in procs[1:]]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, (_out, err) in zip(procs[1:], outs, strict=True):
        assert p.returncode == 0, err
    survivors = [json.loads(o) for o, _ in outs]
    assert all(s["processed"] > 0 for s in survivors)  # both shared the work
    assert_exactly_once(lake, n, "haar-face")
    (g,) = [g for g in lake.log.groups() if g.group == "shared"]
    assert g.lag == 0


def test_replay_new_version_sits_beside_the_old(lake):
    publish(lake, "vtest", 12)
    Worker(lake, load_detector("haar-face"), until_idle=True, idle_timeout=0.5).run()
    det = load_detector("haar-face", {"min_neighbors": "3"})
    w = prepare_replay(lake, det, version="2")
    stats = w.run()
    assert stats.processed == 12 and stats.group == "replay.haar-face.2"
    rows = lake.catalog.query("SELECT model_version, count(*) FROM results GROUP BY 1 ORDER BY 1").rows
    assert rows == [("1", 12), ("2", 12)]
    params = dict(lake.catalog.query("SELECT model_version, params FROM models").rows)
    assert json.loads(params["2"])["min_neighbors"] == 3


def test_replay_cli_json_and_csv_are_machine_readable(lake):
    # --format json used to print the versions table after the JSON object
    publish(lake, "vtest", 6)
    Worker(lake, load_detector("haar-face"), until_idle=True, idle_timeout=0.5).run()
    lake.catalog  # noqa: B018
    args = ("replay", "--detector", "haar-face", "--model-version", "2", "-p", "min_neighbors=3")
    out = subprocess.run(cli(lake, *args, "--format", "json"), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["replay"]["processed"] == 6 and doc["replay"]["model_version"] == "2"
    assert [(v["model_version"], v["frames"]) for v in doc["versions"]] == [("1", 6), ("2", 6)]

    out = subprocess.run(
        cli(lake, *args, "--restart", "--format", "csv"), capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    table = list(csv.reader(io.StringIO(out.stdout)))
    assert table[0] == ["model_version", "frames", "detections", "per_frame", "latency_ms"]
    assert [r[:2] for r in table[1:]] == [["1", "6"], ["2", "6"]]


def test_replay_time_window(lake):
    publish(lake, "vtest", 20)  # vtest: 10 fps, so 2 s of capture time
    with lake.log.consumer(["frames"]) as c:
        recs = []
        while got := c.poll(100, 0.5):
            recs += got
    ts = sorted(r.timestamp_ms for r in recs)
    start, end = ts[5], ts[14]
    iso = lambda ms: datetime.fromtimestamp(ms / 1000, UTC).isoformat()  # noqa: E731
    w = prepare_replay(lake, load_detector("hog-person"), version="window", start=iso(start), end=iso(end))
    stats = w.run()
    assert stats.processed == 10
    with lake.catalog.engine.connect() as conn:
        n = conn.execute(sa.text("SELECT count(*) FROM results WHERE model_version='window'")).scalar()
    assert n == 10


def test_worker_pid_is_not_left_in_group_after_exit(lake):
    publish(lake, "vtest", 2)
    Worker(lake, load_detector("hog-person"), until_idle=True, idle_timeout=0.3).run()
    assert all(not g.members for g in lake.log.groups())
