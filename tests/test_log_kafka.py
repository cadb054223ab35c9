"""The Kafka frame log beyond the shared contract: interop with plain Kafka clients, options,
an unreachable or stalled broker, and worker processes sharing a group. Real tansu brokers throughout."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from itertools import islice

import cv2
import numpy as np
import pytest
from media import cameras_covering, jpeg, sample, video_frames

from visionlake.detectors import load_detector
from visionlake.errors import BackendUnavailable, ConfigError
from visionlake.ingest.publish import FramePublisher, ingest
from visionlake.ingest.sources import CapturedFrame, VideoFileSource
from visionlake.lake import Lake
from visionlake.log import open_log
from visionlake.log.base import TopicConfig, partition_for
from visionlake.workers.worker import Worker

ck = pytest.importorskip("confluent_kafka")
from visionlake.log.kafka import KafkaLog  # noqa: E402

SIZE = (320, 240)


def plain_consumer(bootstrap: str, topic: str, group: str):
    c = ck.Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 500,
        }
    )
    c.subscribe([topic])
    return c


def consume_n(c, n: int, timeout: float = 30.0) -> list:
    out, deadline = [], time.monotonic() + timeout
    while len(out) < n and time.monotonic() < deadline:
        out.extend(m for m in c.consume(n - len(out), 0.5) if m.error() is None)
    return out


def drain(consumer, n: int, timeout: float = 30.0) -> list:
    out, deadline = [], time.monotonic() + timeout
    while len(out) < n and time.monotonic() < deadline:
        out.extend(consumer.poll(500, 0.2))
    return out


def scalar(lake: Lake, sql: str):
    return lake.catalog.query(sql).rows[0][0]


def cli(lake: Lake, url: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "visionlake", "--lake", str(lake.root), "--log", url, *args]


# -- options -----------------------------------------------------------------------------------


def test_url_options_pass_through_and_secrets_stay_out_of_the_url(kafka_broker):
    lg = open_log(
        f"kafka://{kafka_broker}?topic_prefix=opts.&connect_timeout=5&sasl_username=alice",
        security_protocol="PLAINTEXT",
        **{"sasl.password": "s3cret", "producer.linger.ms": 20, "session_timeout": 7},
    )
    try:
        assert isinstance(lg, KafkaLog)
        assert lg.url == f"kafka://{kafka_broker}" and "s3cret" not in lg.url
        assert (lg.topic_prefix, lg.connect_timeout, lg.session_timeout) == ("opts.", 5.0, 7.0)
        assert lg._common["security.protocol"] == "PLAINTEXT"
        assert lg._common["sasl.username"] == "alice" and lg._common["sasl.password"] == "s3cret"
        assert lg._targeted["producer"] == {"linger.ms": 20}
        lg.create_topic("x", TopicConfig(partitions=2, retention_bytes=10_000_000))
        assert [t.name for t in lg.topics()] == ["x"]  # the namespace hides everything else
        assert lg.topic_config("x") == TopicConfig(2, None, 10_000_000, 1024 * 1024)
        lg.alter_topic("x", retention_ms=3_600_000, max_record_bytes=2_000_000)
        assert lg.topic_config("x") == TopicConfig(2, 3_600_000, 10_000_000, 2_000_000)
        assert lg.enforce_retention() == 0  # the brokers do it
    finally:
        lg.close()
    with pytest.raises(ConfigError, match="no.such.setting"):
        KafkaLog(f"kafka://{kafka_broker}", no_such_setting="1")
    for bad in ("kafka://", "kafka://host:notaport", "kafka://h:9092?connect_timeout=soon"):
        with pytest.raises(ConfigError):
            KafkaLog(bad)


# -- interop ----------------------------------------------------------------------------------


def test_frames_published_by_visionlake_are_read_by_a_plain_kafka_consumer(private_kafka, tmp_path):
    lake = Lake(lake=tmp_path / "lake", log=private_kafka.url)
    t0 = datetime(2026, 11, 5, 12, 0, tzinfo=UTC)
    frames = video_frames("vtest.avi", 6, SIZE)
    pub = FramePublisher(lake, "lobby")
    metas = [
        pub.publish(CapturedFrame(img, i, t0 + timedelta(seconds=i), "vtest"))[0]
        for i, img in enumerate(frames)
    ]
    pub.close()
    lake.close()

    c = plain_consumer(private_kafka.bootstrap, "frames", "plain-reader")
    try:
        msgs = consume_n(c, 6)
    finally:
        c.close()
    assert len(msgs) == 6
    assert {m.partition() for m in msgs} == {partition_for(b"lobby", 4)}
    for m, meta, original in zip(sorted(msgs, key=lambda m: m.offset()), metas, frames, strict=True):
        image = cv2.imdecode(np.frombuffer(m.value(), np.uint8), cv2.IMREAD_COLOR)
        assert image.shape == original.shape == (240, 320, 3)
        assert np.abs(image.astype(int) - original.astype(int)).mean() < 8  # JPEG, not bit-exact
        assert m.key() == b"lobby"
        headers = dict(m.headers())
        assert headers["vl-frame-id"] == meta.frame_id.encode()
        assert headers["vl-camera"] == b"lobby"
        assert headers["vl-seq"] == str(meta.seq).encode()
        assert headers["vl-ts"].decode().startswith("2026-11-05T12:00:0")
        assert (headers["vl-width"], headers["vl-height"]) == (b"320", b"240")
        assert headers["content-type"] == b"image/jpeg" and headers["vl-schema"] == b"1"
        assert m.timestamp()[1] == int(meta.captured_at.timestamp() * 1000)


def test_jpegs_from_a_plain_producer_are_processed_by_a_worker(private_kafka, tmp_path):
    lake = Lake(lake=tmp_path / "lake", log=private_kafka.url)
    lake.log.ensure_topic("frames")
    p = ck.Producer({"bootstrap.servers": private_kafka.bootstrap})
    landed = []
    for img in video_frames("vtest.avi", 12, SIZE):  # JPEG value, camera key, no headers
        p.produce(
            "frames", jpeg(img), key=b"door-cam", on_delivery=lambda e, m: landed.append((e, m.partition()))
        )
    assert p.flush(30) == 0
    assert {e for e, _ in landed} == {None}
    # librdkafka's default partitioner and visionlake's agree on where a camera lives
    assert {part for _, part in landed} == {partition_for(b"door-cam", 4)}

    stats = Worker(lake, load_detector("hog-person"), until_idle=True, idle_timeout=2.0).run()
    assert stats.processed == 12 and stats.dead_lettered == 0
    assert scalar(lake, "SELECT count(*) FROM frames") == 12
    assert lake.catalog.query("SELECT DISTINCT camera, width, height FROM frames").rows == [
        ("door-cam", 320, 240)
    ]
    assert scalar(lake, "SELECT count(*) FROM results WHERE model='hog-person'") == 12
    (g,) = [g for g in lake.log.groups() if g.group == "hog-person.2"]
    assert g.lag == 0 and sum(p.committed or 0 for p in g.partitions) == 12
    with lake.log.consumer(["frames.detections"]) as c:  # one JSON event per frame
        events = [json.loads(r.value) for r in drain(c, 12)]
    assert len(events) == 12 and {e["camera"] for e in events} == {"door-cam"}
    lake.close()


# -- failures ---------------------------------------------------------------------------------


def test_unreachable_broker_is_a_clear_error_within_a_bounded_time(tmp_path):
    t0 = time.monotonic()
    with pytest.raises(BackendUnavailable, match=r"kafka://127\.0\.0\.1:1 within 2 s"):
        KafkaLog("kafka://127.0.0.1:1", connect_timeout=2)
    assert time.monotonic() - t0 < 6

    t0 = time.monotonic()
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "visionlake",
            "--lake",
            str(tmp_path / "lake"),
            "--log",
            "kafka://127.0.0.1:1",
            "log",
            "topics",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 3, out.stderr
    assert "kafka://127.0.0.1:1" in out.stderr and "cannot reach" in out.stderr
    assert time.monotonic() - t0 < 25  # the default connect_timeout is 10 s


def test_a_broker_stall_loses_nothing(private_kafka):
    lg = KafkaLog(private_kafka.url, heartbeat_interval=0.5)
    lg.create_topic("t", TopicConfig(partitions=2))
    prod = lg.producer()
    reader = lg.consumer(["t"], group="during-stall")
    sent = 0

    def send(n: int) -> None:
        nonlocal sent
        for _ in range(n):
            prod.send(
                "t", b"%06d" % sent, key=f"cam{sent % 3}".encode(), headers=[("seq", str(sent).encode())]
            )
            sent += 1

    send(100)
    prod.flush()
    got = drain(reader, 100)
    assert len(got) == 100
    private_kafka.pause()  # the broker hangs: every request waits, nothing is refused
    try:
        send(100)  # queued in librdkafka
        assert reader.poll(100, 1.0) == []  # the consumer just sees no records
        threading.Timer(3.0, private_kafka.resume).start()
        t0 = time.monotonic()
        md = prod.flush()  # waits for the broker, then everything is acknowledged
        assert time.monotonic() - t0 > 2
    finally:
        private_kafka.resume()
    assert len(md) == 100 and len({(m.partition, m.offset) for m in md}) == 100
    expected = {}
    for r in got:
        expected[(r.topic, r.partition)] = max(expected.get((r.topic, r.partition), 0), r.offset + 1)
    private_kafka.pause()
    threading.Timer(2.0, private_kafka.resume).start()
    t0 = time.monotonic()
    try:
        assert reader.commit() == expected  # waits out the stall
    finally:
        private_kafka.resume()
    assert time.monotonic() - t0 > 1.5
    send(100)
    prod.flush()
    got += drain(reader, 200)
    reader.commit()
    seqs = [int(r.value) for r in got]
    assert sorted(seqs) == list(range(300))  # nothing lost, nothing twice
    for cam in range(3):  # and each key still in order
        mine = [
            int(r.value)
            for r in sorted(got, key=lambda r: (r.partition, r.offset))
            if r.key == f"cam{cam}".encode()
        ]
        assert mine == sorted(mine)
    (g,) = [g for g in lg.groups() if g.group == "during-stall"]
    assert g.lag == 0
    reader.close()
    prod.close()
    lg.close()


def test_a_worker_rides_out_a_broker_stall(private_kafka, tmp_path):
    """Frames keep their exactly-once processing when the broker hangs in the middle of a run."""
    lake = Lake(lake=tmp_path / "lake", log=private_kafka.url)
    n = ingest(lake, islice(VideoFileSource(sample("vtest.avi"), resize=SIZE), 40), "hall").frames
    lake.catalog  # noqa: B018
    worker = Worker(lake, load_detector("hog-person"), until_idle=True, idle_timeout=6.0, batch_size=2)
    done: list = []
    thread = threading.Thread(target=lambda: done.append(worker.run()))
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while worker.stats.processed < 6 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert worker.stats.processed >= 6
        private_kafka.pause()
        time.sleep(4)
        assert worker.stats.processed < n  # it really waited for the broker
    finally:
        private_kafka.resume()
        thread.join(120)
    assert not thread.is_alive() and done
    assert done[0].processed >= n and done[0].dead_lettered == 0
    assert scalar(lake, "SELECT count(*) FROM frames") == n
    assert scalar(lake, "SELECT count(DISTINCT frame_id) FROM results WHERE model='hog-person'") == n
    assert scalar(lake, "SELECT count(*) FROM results") == n
    (g,) = [g for g in lake.log.groups() if g.group == "hog-person.2"]
    assert g.lag == 0
    lake.close()


# -- scaling ----------------------------------------------------------------------------------


def test_two_worker_processes_share_the_partitions_and_process_every_frame_once(private_kafka, tmp_path):
    lake = Lake(lake=tmp_path / "lake", log=private_kafka.url)
    lake.log.create_topic("frames", TopicConfig(partitions=4))
    n = sum(
        ingest(lake, islice(VideoFileSource(sample("vtest.avi"), resize=SIZE), 15), cam).frames
        for cam in cameras_covering(4)
    )
    assert n == 60
    lake.catalog  # noqa: B018 - schema in place before the children race
    cmd = cli(
        lake,
        private_kafka.url,
        "worker",
        "--detector",
        "hog-person",
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
        subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)
    ]
    try:
        outs = [p.communicate(timeout=120) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, (_out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err
    stats = [json.loads(o) for o, _ in outs]
    assert all(s["processed"] > 0 for s in stats), stats  # both members got partitions
    assert sum(s["processed"] for s in stats) >= n
    assert scalar(lake, "SELECT count(*) FROM frames") == n
    assert scalar(lake, "SELECT count(*) FROM results WHERE model='hog-person'") == n
    assert scalar(lake, "SELECT count(DISTINCT frame_id) FROM results") == n
    assert scalar(lake, "SELECT coalesce(sum(n_detections), 0) FROM results") == scalar(
        lake, "SELECT count(*) FROM detections"
    )
    groups = subprocess.run(
        cli(lake, private_kafka.url, "log", "groups", "--format", "json"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert groups.returncode == 0, groups.stderr
    rows = [r for r in json.loads(groups.stdout) if r["group"] == "shared"]
    assert len(rows) == 4 and all(r["lag"] == 0 for r in rows) and sum(r["end"] for r in rows) == n
    status = subprocess.run(
        cli(lake, private_kafka.url, "status", "--format", "json"), capture_output=True, text=True, timeout=60
    )
    assert status.returncode == 0, status.stderr
    st = json.loads(status.stdout)
    assert st["log"] == private_kafka.url
    assert {"group": "shared", "members": 0, "lag": 0} in st["groups"]
    assert [t["records"] for t in st["topics"] if t["topic"] == "frames"] == [n]
    lake.close()
