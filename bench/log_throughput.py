"""Embedded frame log: produce and consume ~50 KB JPEG records vs a raw file append / read.

Produce: `SqliteProducer.send` for every record, flushed in the producer's default batches (it flushes
by itself every `batch_records` records or `batch_bytes` bytes) plus one final `flush`; a flushed
batch is committed (segment bytes written, then the index rows committed in one SQLite transaction).
Baseline: the same bytes appended to one plain file with `write()` per record and `flush()` at the
same batch boundaries. Neither side fsyncs (the log's default is `fsync=False`).

Consume: a group consumer `poll(500)` and one `commit()` per polled batch until every record is read.
Baseline: the raw file read back with `read()` in the same record-sized chunks. Both read a file that
was just written, so both are served from the page cache.

Records: the 795 frames of vtest.avi at 640x480, JPEG quality 80 (mean 52.9 KB), repeated to N
(5,000 quick, 20,000 full), keyed by 4 camera ids that hash to the 4 partitions. Three rounds, each
on a fresh log and file; the median round is reported (`per_round` lists all).
"""

from __future__ import annotations

import os
import shutil
import statistics
from pathlib import Path

import common
from common import Timer, emit, say

from visionlake.log.base import TopicConfig
from visionlake.log.sqlite import SqliteLog

SIZE = (640, 480)
QUALITY = 80  # 640x480 frames of vtest.avi at quality 80 average about 53 KB
TOPIC = "bench"
PRODUCE_TARGET = 10_000.0  # records/s
CONSUME_TARGET = 20_000.0  # records/s


def _one_round(values: list[bytes], keys: list[bytes], tmp: Path) -> dict[str, float]:
    tmp.mkdir(parents=True)
    n = len(values)
    log = SqliteLog(tmp / "log")
    log.create_topic(TOPIC, TopicConfig(partitions=4))
    producer = log.producer()
    batch_records, batch_bytes = producer.batch_records, producer.batch_bytes

    # -- raw append baseline: write() per record, flush() where the producer flushes ------------
    raw_path = tmp / "raw.bin"
    with Timer() as raw_w, open(raw_path, "ab") as f:
        pending = pending_bytes = 0
        for v in values:
            f.write(v)
            pending += 1
            pending_bytes += len(v)
            if pending >= batch_records or pending_bytes >= batch_bytes:
                f.flush()
                pending = pending_bytes = 0
        f.flush()

    # -- log produce ---------------------------------------------------------------------------
    with Timer() as log_w:
        for v, k in zip(values, keys, strict=True):
            producer.send(TOPIC, v, key=k)
        producer.flush()
    producer.close()
    info = {t.name: t for t in log.topics()}[TOPIC]
    assert info.records == n, f"log holds {info.records} records, expected {n}"

    # -- raw read baseline: record-sized chunks --------------------------------------------------
    got = 0
    with Timer() as raw_r, open(raw_path, "rb") as f:
        for v in values:
            got += len(f.read(len(v)))
    assert got == sum(map(len, values))

    # -- log consume: group consumer, poll(500) + commit per batch --------------------------------
    consumer = log.consumer([TOPIC], group="bench")
    count = nbytes = polls = 0
    with Timer() as log_r:
        while count < n:
            records = consumer.poll(500, timeout=1.0)
            if not records:
                raise RuntimeError(f"consumer stalled after {count} of {n} records")
            count += len(records)
            nbytes += sum(len(r.value) for r in records)
            consumer.commit()
            polls += 1
    consumer.close()
    assert count == n and nbytes == got, (count, nbytes, got)
    lag = sum(g.lag for g in log.groups() if g.group == "bench")
    assert lag == 0, f"group lag {lag} after consuming everything"
    log.close()
    shutil.rmtree(tmp)
    return {
        "raw_w": raw_w.seconds,
        "log_w": log_w.seconds,
        "raw_r": raw_r.seconds,
        "log_r": log_r.seconds,
        "polls": polls,
        "batch_records": batch_records,
        "batch_bytes": batch_bytes,
    }


def run(quick: bool, tmp: Path) -> list[dict]:
    n = 5_000 if quick else 20_000
    rounds = 3
    frames = common.jpeg_frames(SIZE, QUALITY)
    values = common.cycle(frames, n)
    cams = [c.encode() for c in common.cameras_on_distinct_partitions(4)]
    keys = [cams[i % len(cams)] for i in range(n)]
    total = sum(map(len, values))
    mean_kb = total / n / 1000
    say(
        f"log: {n} records of {len(frames)} distinct {SIZE[0]}x{SIZE[1]} q{QUALITY} JPEGs, "
        f"mean {mean_kb:.1f} KB, {total / 1e6:.0f} MB, {rounds} round(s)"
    )
    results = [_one_round(values, keys, tmp / f"log-round{i}") for i in range(rounds)]  # median reported
    med = {k: statistics.median(r[k] for r in results) for k in ("raw_w", "log_w", "raw_r", "log_r")}
    r0 = results[0]
    common_extra = {
        "n": n,
        "rounds": rounds,
        "record_kb_mean": round(mean_kb, 1),
        "frame_size": f"{SIZE[0]}x{SIZE[1]}",
        "jpeg_quality": QUALITY,
        "fs": _fs_of(tmp),
        "loadavg_1m": common.loadavg(),
    }
    out = []
    out.append(
        emit(
            "log_produce_throughput",
            n / med["log_w"],
            "records/s",
            "raw file append (write per record + flush per batch)",
            n / med["raw_w"],
            mb_per_s=total / med["log_w"] / 1e6,
            baseline_mb_per_s=total / med["raw_w"] / 1e6,
            per_round=[n / r["log_w"] for r in results],
            baseline_per_round=[n / r["raw_w"] for r in results],
            target=PRODUCE_TARGET,
            target_met=n / med["log_w"] >= PRODUCE_TARGET,
            **common_extra,
            notes=(
                f"SqliteProducer.send x{n} (4 camera keys over 4 partitions) with its default batches "
                f"({r0['batch_records']} records or {r0['batch_bytes'] >> 20} MiB per flush) and a final flush; "
                "a flushed batch is committed (segment write then one SQLite index transaction); "
                "fsync=False on both sides (log default), so durable against a process crash, not power loss"
            ),
        )
    )
    out.append(
        emit(
            "log_consume_throughput",
            n / med["log_r"],
            "records/s",
            "raw file read in the same record-sized chunks",
            n / med["raw_r"],
            mb_per_s=total / med["log_r"] / 1e6,
            baseline_mb_per_s=total / med["raw_r"] / 1e6,
            per_round=[n / r["log_r"] for r in results],
            baseline_per_round=[n / r["raw_r"] for r in results],
            target=CONSUME_TARGET,
            target_met=n / med["log_r"] >= CONSUME_TARGET,
            polls=r0["polls"],
            **common_extra,
            notes=(
                "one group consumer, poll(500) + commit() per polled batch until all records are read; "
                "both sides read data just written, i.e. from the page cache"
            ),
        )
    )
    return out


def _fs_of(path: Path) -> str:
    """Filesystem type of the temp directory (tmpfs vs a disk changes the numbers a lot)."""
    best, fstype = "", "unknown"
    target = os.path.realpath(path)
    try:
        with open("/proc/mounts") as f:
            for line in f:
                parts = line.split()
                mnt = parts[1]
                if (target == mnt or target.startswith(mnt.rstrip("/") + "/")) and len(mnt) > len(best):
                    best, fstype = mnt, parts[2]
    except OSError:
        pass
    return fstype
