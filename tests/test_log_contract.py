"""The frame-log contract: every backend (embedded SQLite now, Kafka later) must pass all of it."""

from __future__ import annotations

import errno
import resource
import time

import pytest

from visionlake.errors import (
    InputError,
    LogCorrupted,
    LogError,
    LogWriteFailed,
    RecordTooLarge,
    UnknownTopic,
)
from visionlake.log import sqlite as sqlite_log
from visionlake.log.base import FrameLog, TopicConfig, partition_for
from visionlake.log.sqlite import SqliteLog


def produce(
    lg: FrameLog, topic: str, n: int, key: bytes | None = b"cam", ts0: int = 1_700_000_000_000, size: int = 10
):
    with lg.producer() as p:
        for i in range(n):
            p.send(
                topic,
                bytes([i % 256]) * size,
                key=key,
                headers=[("i", str(i).encode())],
                timestamp_ms=ts0 + i,
            )
        return p.flush()


def drain(consumer, expect: int | None = None, timeout: float = 10.0):
    out, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = consumer.poll(100, timeout=0.2)
        out.extend(got)
        if expect is not None and len(out) >= expect:
            break
        if expect is None and not got:
            break
    return out


def settle(*consumers, partitions: int, timeout: float = 15.0) -> None:
    """Poll (reading nothing) until the members hold disjoint assignments covering every partition."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for c in consumers:
            c.poll(0, 0.05)
        owned = [tp for c in consumers for tp in c.assignment()]
        if len(owned) == len(set(owned)) == partitions and all(c.assignment() for c in consumers):
            return
    raise AssertionError(f"group did not settle: {[c.assignment() for c in consumers]}")


def test_create_topic_and_describe(frame_log):
    frame_log.create_topic("frames", TopicConfig(partitions=3, retention_ms=60_000, max_record_bytes=2048))
    cfg = frame_log.topic_config("frames")
    assert (cfg.partitions, cfg.retention_ms, cfg.max_record_bytes) == (3, 60_000, 2048)
    (info,) = [t for t in frame_log.topics() if t.name == "frames"]
    assert [p.partition for p in info.partitions] == [0, 1, 2]
    assert info.records == 0
    with pytest.raises(InputError):
        frame_log.create_topic("frames", exist_ok=False)
    frame_log.create_topic("frames")  # exist_ok by default


def test_alter_topic_changes_only_the_given_settings(frame_log):
    frame_log.create_topic("t", TopicConfig(2, 60_000, 10_000_000, 2048))
    produce(frame_log, "t", 3)
    assert frame_log.alter_topic("t", retention_ms=3_600_000) == {"retention_ms": (60_000, 3_600_000)}
    assert frame_log.topic_config("t") == TopicConfig(2, 3_600_000, 10_000_000, 2048)
    assert frame_log.alter_topic("t", max_record_bytes=4096) == {"max_record_bytes": (2048, 4096)}
    assert frame_log.alter_topic("t", retention_bytes=None) == {"retention_bytes": (10_000_000, None)}
    assert frame_log.topic_config("t") == TopicConfig(2, 3_600_000, None, 4096)
    assert frame_log.alter_topic("t", partitions=2, retention_ms=3_600_000) == {}  # already so
    assert frame_log.alter_topic("t") == {}
    assert frame_log.topic_config("t") == TopicConfig(2, 3_600_000, None, 4096)
    with frame_log.producer() as p:  # a new producer applies the new limit
        p.send("t", b"x" * 4096)
        with pytest.raises(RecordTooLarge):
            p.send("t", b"x" * 4097)
    with frame_log.consumer(["t"]) as c:
        assert len(drain(c, 4)) == 4


def test_alter_topic_refuses_bad_values_and_fewer_partitions(frame_log):
    frame_log.create_topic("t", TopicConfig(partitions=2, retention_ms=60_000))
    with pytest.raises(UnknownTopic, match="nope"):
        frame_log.alter_topic("nope", retention_ms=1000)
    with pytest.raises(InputError, match="'t' has 2 partitions: the count can only grow, not shrink to 1"):
        frame_log.alter_topic("t", partitions=1, retention_ms=1000)
    for bad in ({"retention_ms": -1}, {"retention_bytes": -5}, {"max_record_bytes": 0}, {"partitions": 0}):
        with pytest.raises(InputError, match="'t'"):
            frame_log.alter_topic("t", **bad)
    assert frame_log.topic_config("t") == TopicConfig(partitions=2, retention_ms=60_000)


def test_alter_topic_more_partitions_is_done_or_refused_never_ignored(frame_log):
    frame_log.create_topic("t", TopicConfig(partitions=2))
    produce(frame_log, "t", 5)
    if isinstance(frame_log, SqliteLog):
        with pytest.raises(InputError, match="'t' has 2 partitions"):
            frame_log.alter_topic("t", partitions=3, retention_ms=1000)
        assert frame_log.topic_config("t") == TopicConfig(partitions=2)
        return
    try:
        changes = frame_log.alter_topic("t", partitions=3, retention_ms=1000)
    except LogError as e:
        if "not supported" not in str(e):
            raise
        assert frame_log.topic_config("t") == TopicConfig(partitions=2)  # nothing changed half-way
        pytest.skip(f"the broker cannot add partitions (tansu 0.6 has no CreatePartitions): {e}")
    assert changes == {"partitions": (2, 3), "retention_ms": (None, 1000)}
    assert frame_log.topic_config("t") == TopicConfig(partitions=3, retention_ms=1000)
    with frame_log.consumer(["t"]) as c:
        assert len(drain(c, 5)) == 5


def test_bad_topic_names_and_unknown_topic(frame_log):
    for bad in ["", "a/b", "..", "x" * 300, "sp ace"]:
        with pytest.raises(InputError):
            frame_log.create_topic(bad)
    with pytest.raises(UnknownTopic, match="nope"):
        frame_log.topic_config("nope")


def test_keyed_records_keep_order_in_one_partition(frame_log):
    frame_log.create_topic("frames", TopicConfig(partitions=4))
    md = produce(frame_log, "frames", 50, key=b"lobby")
    parts = {m.partition for m in md}
    assert parts == {partition_for(b"lobby", 4)}
    assert [m.offset for m in md] == list(range(50))
    with frame_log.consumer(["frames"]) as c:
        recs = drain(c, 50)
    assert [r.offset for r in recs] == list(range(50))
    assert [r.header("i") for r in recs] == [str(i) for i in range(50)]
    assert all(r.key == b"lobby" and r.topic == "frames" for r in recs)
    assert [r.timestamp_ms for r in recs] == [1_700_000_000_000 + i for i in range(50)]


def test_values_and_headers_round_trip_binary(frame_log):
    value = bytes(range(256)) * 40
    with frame_log.producer() as p:
        p.send("bin", value, key=b"k", headers=[("a", b"\x00\xff"), ("a", b"second"), ("empty", b"")])
        (m,) = p.flush()
    with frame_log.consumer(["bin"], partitions=[m.partition]) as c:
        (r,) = drain(c, 1)
    assert r.value == value
    assert r.headers == [("a", b"\x00\xff"), ("a", b"second"), ("empty", b"")]
    assert r.header("a") == "second"


def test_record_size_limit(frame_log):
    frame_log.create_topic("small", TopicConfig(partitions=1, max_record_bytes=1000))
    with frame_log.producer() as p:
        p.send("small", b"x" * 1000)
        with pytest.raises(RecordTooLarge, match="1001 bytes"):
            p.send("small", b"x" * 1001)
    assert frame_log.topics()[0].records == 1


def test_keys_spread_over_partitions(frame_log):
    frame_log.create_topic("frames", TopicConfig(partitions=4))
    with frame_log.producer() as p:
        for cam in range(40):
            p.send("frames", b"v", key=f"camera-{cam}".encode())
        md = p.flush()
    assert len({m.partition for m in md}) == 4


def test_group_commits_and_resumes(frame_log):
    frame_log.create_topic("frames", TopicConfig(partitions=2))
    produce(frame_log, "frames", 30, key=None)
    with frame_log.consumer(["frames"], group="g") as c:
        first = drain(c, 10)[:10]
        c.commit({(r.topic, r.partition): r.offset + 1 for r in first})
    with frame_log.consumer(["frames"], group="g") as c:
        rest = drain(c, None)
    seen = {(r.partition, r.offset) for r in first} | {(r.partition, r.offset) for r in rest}
    assert len(seen) == 30
    committed = frame_log.group_offsets("g", "frames")
    assert sum(committed.values()) <= 30


def test_commit_default_is_everything_polled(frame_log):
    produce(frame_log, "t", 20)
    with frame_log.consumer(["t"], group="g") as c:
        assert len(drain(c, 20)) == 20
        c.commit()
    (g,) = [g for g in frame_log.groups() if g.group == "g"]
    assert g.lag == 0
    assert sum(p.committed or 0 for p in g.partitions) == 20


def test_new_group_earliest_or_latest(frame_log):
    produce(frame_log, "t", 5)
    with frame_log.consumer(["t"], group="late", offset_reset="latest") as c:
        assert drain(c, None) == []
        produce(frame_log, "t", 3)
        assert len(drain(c, 3)) == 3
    with frame_log.consumer(["t"], group="early", offset_reset="earliest") as c:
        assert len(drain(c, 8)) == 8


def test_group_members_share_partitions_and_rebalance(frame_log):
    frame_log.create_topic("frames", TopicConfig(partitions=4))
    a = frame_log.consumer(["frames"], group="workers")
    b = frame_log.consumer(["frames"], group="workers")
    settle(a, b, partitions=4)
    assert set(a.assignment()).isdisjoint(b.assignment())
    assert len(a.assignment()) + len(b.assignment()) == 4
    b.close()
    deadline = time.monotonic() + 10
    while len(a.assignment()) < 4 and time.monotonic() < deadline:
        a.poll(1, 0.05)
    assert len(a.assignment()) == 4
    a.close()


def test_members_split_work_without_overlap(frame_log):
    frame_log.create_topic("frames", TopicConfig(partitions=4))
    with frame_log.producer() as p:
        for i in range(200):
            p.send("frames", str(i).encode(), key=f"cam{i % 8}".encode())
    a = frame_log.consumer(["frames"], group="g")
    b = frame_log.consumer(["frames"], group="g")
    settle(a, b, partitions=4)
    ra, rb = drain(a, None, 5), drain(b, None, 5)
    a.close()
    b.close()
    keys = [(r.partition, r.offset) for r in ra + rb]
    assert len(keys) == len(set(keys)) == 200


def test_seek_offset_earliest_latest_and_time(frame_log):
    frame_log.create_topic("t", TopicConfig(partitions=1))
    produce(frame_log, "t", 10, ts0=1000)
    with frame_log.consumer(["t"], group="s") as c:
        drain(c, 10)
        c.seek("t", 0, 7)
        assert [r.offset for r in drain(c, 3)] == [7, 8, 9]
        c.seek_to("earliest")
        assert c.position("t", 0) == 0
        c.seek_to("latest")
        assert c.position("t", 0) == 10
        c.seek_to_time(1004)
        assert c.position("t", 0) == 4
        c.seek_to_time(10**15)
        assert c.position("t", 0) == 10
    assert frame_log.offsets_for_time("t", 1006) == {0: 6}


def test_commit_group_offsets_from_outside(frame_log):
    frame_log.create_topic("t", TopicConfig(partitions=1))
    produce(frame_log, "t", 10)
    frame_log.commit_group_offsets("replay", "t", {0: 6})
    assert frame_log.group_offsets("replay", "t") == {0: 6}
    with frame_log.consumer(["t"], group="replay") as c:
        assert [r.offset for r in drain(c, 4)] == [6, 7, 8, 9]


def test_groups_report_lag(frame_log):
    frame_log.create_topic("t", TopicConfig(partitions=2))
    produce(frame_log, "t", 10, key=None)
    with frame_log.consumer(["t"], group="lagging") as c:
        drain(c, 10)
        c.commit({("t", 0): 2})
        (g,) = [g for g in frame_log.groups() if g.group == "lagging"]
        assert g.members
        by_p = {p.partition: p for p in g.partitions}
        assert by_p[0].committed == 2
        assert g.lag == 8


def test_retention_by_size_keeps_newest(log_factory):
    lg = log_factory(segment_bytes=1000)
    lg.create_topic("t", TopicConfig(partitions=1, retention_bytes=3000))
    for _ in range(10):
        produce(lg, "t", 5, size=100)  # 500 bytes per batch, segments roll every ~1000 bytes
    removed = lg.enforce_retention()
    assert removed > 0
    (info,) = [t for t in lg.topics() if t.name == "t"]
    p = info.partitions[0]
    assert p.end_offset == 50 and p.start_offset > 0 and p.bytes <= 3000 + 1000
    with lg.consumer(["t"]) as c:
        recs = drain(c, None)
    assert recs[0].offset == p.start_offset and recs[-1].offset == 49


def test_retention_by_age(log_factory):
    lg = log_factory(segment_bytes=500)
    lg.create_topic("t", TopicConfig(partitions=1, retention_ms=60_000))
    now = int(time.time() * 1000)
    produce(lg, "t", 20, ts0=now - 3_600_000, size=100)  # an hour old
    produce(lg, "t", 10, ts0=now, size=100)
    lg.enforce_retention()
    with lg.consumer(["t"]) as c:
        recs = drain(c, None)
    assert all(r.timestamp_ms >= now - 3_600_000 for r in recs)
    assert min(r.offset for r in recs) >= 15  # old full segments are gone
    assert max(r.offset for r in recs) == 29


def test_consumer_past_retention_resumes_at_start(log_factory):
    lg = log_factory(segment_bytes=500)
    lg.create_topic("t", TopicConfig(partitions=1, retention_bytes=1000))
    produce(lg, "t", 5, size=100)
    lg.commit_group_offsets("old", "t", {0: 1})
    for _ in range(6):
        produce(lg, "t", 5, size=100)
    lg.enforce_retention()
    start = [t for t in lg.topics() if t.name == "t"][0].partitions[0].start_offset
    assert start > 1
    with lg.consumer(["t"], group="old") as c:
        recs = drain(c, None)
    assert recs[0].offset == start


def test_standalone_consumer_cannot_commit(frame_log):
    produce(frame_log, "t", 1)
    with frame_log.consumer(["t"]) as c, pytest.raises(InputError):
        c.commit({("t", 0): 1})


# --- the embedded log only: its files -----------------------------------------------------------


def read_all(lg: FrameLog, topic: str, n: int) -> list:
    with lg.consumer([topic]) as c:
        return sorted(drain(c, n), key=lambda r: (r.partition, r.offset))


def test_flush_past_the_file_size_limit_keeps_the_batch(tmp_path):
    """Writes past RLIMIT_FSIZE fail with EFBIG (Python ignores SIGXFSZ), after a partial write."""
    lg = SqliteLog(tmp_path / "log")
    lg.create_topic("t", TopicConfig(partitions=1))
    values = [bytes([i]) * 100_000 for i in range(15)]
    p = lg.producer()
    for v in values[:5]:
        p.send("t", v)
    assert [m.offset for m in p.flush()] == [0, 1, 2, 3, 4]
    seg = lg.segment_path("t", 0, 0)
    for v in values[5:10]:
        p.send("t", v)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (seg.stat().st_size + 150_000, hard))
    try:
        with pytest.raises(LogWriteFailed, match="file too large") as failed:
            p.flush()
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert str(lg.root) in str(failed.value) and "5 queued records are kept" in str(failed.value)
    assert seg.stat().st_size > 500_000  # the partial write: bytes no index row refers to
    assert [m.offset for m in p.flush()] == [5, 6, 7, 8, 9]  # the retry writes the kept batch
    for v in values[10:]:
        p.send("t", v)
    assert [m.offset for m in p.flush()] == [10, 11, 12, 13, 14]
    assert p.flush() == []
    p.close()
    recs = read_all(lg, "t", 15)
    assert [r.offset for r in recs] == list(range(15))
    assert [r.value for r in recs] == values


def test_flush_failing_after_the_bytes_are_written_keeps_the_batch(tmp_path, monkeypatch):
    """Disk full after one partition's values are appended: the index is not committed, nothing is lost."""
    lg = SqliteLog(tmp_path / "log")
    lg.create_topic("t", TopicConfig(partitions=2))
    p = lg.producer()
    sent = [(part, f"{part}-{i}".encode() * 50) for i in range(4) for part in (0, 1)]
    for part, v in sent:
        p.send("t", v, partition=part)
    real, calls = sqlite_log._write_all, []

    def write_then_fail(fd, chunks):
        real(fd, chunks)  # the bytes land in the segment...
        calls.append(fd)
        if len(calls) == 2:  # ...and the second partition's fail as if the disk filled up
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(sqlite_log, "_write_all", write_then_fail)
    with pytest.raises(LogWriteFailed, match="disk full") as failed:
        p.flush()
    assert str(lg.root) in str(failed.value)
    assert [i.end_offset for i in lg.topics()[0].partitions] == [0, 0]
    monkeypatch.setattr(sqlite_log, "_write_all", real)
    md = p.flush()
    assert [(m.partition, m.offset) for m in md] == [(part, i) for i in range(4) for part in (0, 1)]
    p.close()
    recs = read_all(lg, "t", 8)
    assert [(r.partition, r.offset, r.value) for r in recs] == [
        (part, i, f"{part}-{i}".encode() * 50) for part in (0, 1) for i in range(4)
    ]


def test_missing_segment_stops_the_reader_with_its_path(tmp_path):
    lg = SqliteLog(tmp_path / "log", segment_bytes=500)
    lg.create_topic("t", TopicConfig(partitions=1))
    produce(lg, "t", 5, size=100)
    produce(lg, "t", 5, size=100)  # a second segment, offsets 5-9
    produce(lg, "t", 5, size=100)
    gone = lg.segment_path("t", 0, 5)
    gone.unlink()  # not retention: the index still lists offsets 5-9
    with lg.consumer(["t"]) as c:
        assert [r.offset for r in c.poll(5, timeout=1)] == [0, 1, 2, 3, 4]
        with pytest.raises(LogCorrupted) as lost:
            c.poll(100, timeout=1)
    msg = str(lost.value)
    assert str(gone) in msg and "t/0" in msg and "offsets 5-9" in msg and "past offset 9" in msg


def test_segment_removed_by_retention_while_reading_resumes_at_start(tmp_path):
    """Retention may remove a segment between the consumer's index query and its read."""
    lg = SqliteLog(tmp_path / "log", segment_bytes=500)
    lg.create_topic("t", TopicConfig(partitions=1, retention_bytes=1000))
    for _ in range(6):
        produce(lg, "t", 5, size=100)
    with lg.consumer(["t"]) as c:
        real = c._segments.read

        def retention_first(*args):
            c._segments.read = real
            assert lg.enforce_retention() > 0
            return real(*args)

        c._segments.read = retention_first
        recs = drain(c, None)
    start = lg.topics()[0].partitions[0].start_offset
    assert start > 0
    assert [r.offset for r in recs] == list(range(start, 30))
