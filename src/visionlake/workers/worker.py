"""The detector worker: poll → process (decode, detect) → persist → publish → commit.

`Worker._handle` fixes the order. A record is finished once its image is in the archive, its rows are
in the catalog and its event or dead letter is flushed; the `Checkpoint` commits per partition only
the offsets after a contiguous run of finished records. Every write is idempotent, so killing a worker
at any point loses no frame and counts none twice: the records after the last commit are processed
again (their stored results are reused, not recomputed).

With tracking on (`tracking=TrackerSettings(...)`, `worker --track`), each camera's boxes go through
its tracker in capture order between detection and persistence, and the tracker's state is written in
the same catalog transaction as the results it produced (`tracks.BatchTracker`).

With `shared=SharedReading(...)` (`worker --shared`) the worker is a member of a share group instead:
several workers take records of the same partition one by one, each finished record is acknowledged
on its own, and a record handed out more than `max_deliveries` times (its workers kept dying on it)
is dead-lettered without being decoded.

A record that cannot be a frame (empty, undecodable, oversized, absurd dimensions, other content under
a stored frame id) or that makes the detector fail goes to the dead-letter topic with its reason; the
worker keeps going.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from ..catalog import FrameResult, TrackerState
from ..detectors.base import Detector
from ..errors import (
    ArchiveConflict,
    ArchiveError,
    BackendUnavailable,
    FrameError,
    InputError,
    VisionlakeError,
)
from ..frames import FrameMeta, check_dimensions, decode_image, image_format, iso, meta_from_record
from ..lake import FRAMES_TOPIC, Lake, detections_topic, dlq_topic
from ..limits import DEFAULT_MAX_PIXELS
from ..log.base import DEFAULT_LEASE_S, DEFAULT_MAX_DELIVERIES, Consumer, OffsetReset, ShareConsumer
from ..metrics import NO_WORKER_METRICS, Metrics
from ..tracking import TrackerSettings
from ..types import Detections, Record
from .archive_reader import ArchiveReader
from .batching import DEFAULT_BATCH_SECONDS, DEFAULT_BATCH_SIZE, BatchSizer
from .checkpoint import Checkpoint, ShareCheckpoint
from .tracks import BatchTracker

log = logging.getLogger("visionlake.worker")

ARCHIVE_EXT = {"jpeg": "jpg", "png": "png"}
#: With --until-idle, how long a member with no partitions waits for an assignment before it stops
#: (a rebalance after an outage takes seconds; a group with more members than partitions never does).
UNASSIGNED_GRACE = 20.0


@dataclass
class WorkerStats:
    worker: str
    model: str
    model_version: str
    group: str
    source: str = "log"  # where the frames came from: "log", or "archive" for a replay of the history
    processed: int = 0  # frames with a result written by this worker
    reused: int = 0  # of those, results found already stored (re-delivery after a crash or rebalance)
    dead_lettered: int = 0
    retries: int = 0  # batches retried because a backend was unreachable
    beyond_range: int = 0  # records past --to, left alone
    detections: int = 0
    seconds: float = 0.0  # wall time of the run, idle waits included
    busy_seconds: float = 0.0  # time spent handling batches: what frames/s is measured against
    per_camera: dict[str, int] = field(default_factory=dict)
    dlq_reasons: dict[str, int] = field(default_factory=dict)

    @property
    def fps(self) -> float:
        return self.processed / self.busy_seconds if self.busy_seconds > 0 else 0.0

    def as_dict(self) -> dict:
        d = {k: v for k, v in self.__dict__.items()}
        d["fps"] = round(self.fps, 2)
        d["seconds"] = round(self.seconds, 3)
        d["busy_seconds"] = round(self.busy_seconds, 3)
        return d


@dataclass(frozen=True)
class SharedReading:
    """`worker --shared`: read the frames through a share group, record by record."""

    lease_s: float = DEFAULT_LEASE_S
    max_deliveries: int = DEFAULT_MAX_DELIVERIES


@dataclass
class _Result:
    """A frame read and detected, not yet durable."""

    record: Record
    meta: FrameMeta
    data: bytes  # what the archive gets; empty for a claim-checked frame (already archived)
    nbytes: int
    sha256: str
    key: str  # archive key, checked before detection
    detections: Detections
    latency_ms: float
    reused: bool = False  # the detections were stored already (a re-delivered frame)


@dataclass
class _Batch:
    results: list[_Result] = field(default_factory=list)
    dead: list[tuple[Record, str]] = field(default_factory=list)
    finished: list[Record] = field(default_factory=list)  # committable once persisted and published
    rows: list[FrameResult] = field(default_factory=list)
    committed_at: float = 0.0  # time.time() when the catalog transaction of `rows` committed
    trackers: list[TrackerState] = field(default_factory=list)  # saved with `rows`


class Worker:
    """One member of a consumer group running one detector over the frames topic."""

    def __init__(
        self,
        lake: Lake,
        detector: Detector,
        *,
        group: str | None = None,
        topic: str = FRAMES_TOPIC,
        offset_reset: OffsetReset = "earliest",
        batch_size: int = DEFAULT_BATCH_SIZE,
        batch_seconds: float = DEFAULT_BATCH_SECONDS,
        until_idle: bool = False,
        idle_timeout: float = 3.0,
        max_frames: int | None = None,
        until_ms: int | None = None,
        name: str | None = None,
        version: str | None = None,
        on_batch: Callable[[WorkerStats], None] | None = None,
        threads: int | None = None,
        retry_initial: float = 0.5,
        retry_max: float = 30.0,
        source: Consumer | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        metrics: Metrics | None = None,
        tracking: TrackerSettings | None = None,
        shared: SharedReading | None = None,
    ) -> None:
        self.lake = lake
        self.detector = detector
        self.model = detector.name
        self.model_version = version or detector.model_version
        self.group = group or default_group(self.model, self.model_version, shared is not None)
        self.topic = topic
        self.offset_reset = offset_reset
        self.sizer = BatchSizer(batch_size, batch_seconds)  # records per poll, up to batch_size
        self.until_idle = until_idle
        self.idle_timeout = idle_timeout
        self.max_frames = max_frames
        self.until_ms = until_ms
        self.name = name or f"{socket.gethostname()}-{os.getpid()}"
        self.on_batch = on_batch
        self.threads = threads  # OpenCV threads; 1 when several workers share the cores
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        self.max_pixels = max_pixels  # per frame: the decoded image's memory is 3 bytes a pixel
        self.source = source  # frames from elsewhere than the log (an ArchiveReader), else a group member
        self._stop = False
        self.stats = WorkerStats(self.name, self.model, self.model_version, self.group)
        if source is not None:
            self.stats.source = "archive" if isinstance(source, ArchiveReader) else type(source).__name__
        # Prometheus metrics (--metrics-port), recorded where the stats are counted; without, a no-op
        self.metrics = (
            metrics.worker(self.name, self.model, self.model_version, self.group)
            if metrics is not None
            else NO_WORKER_METRICS
        )
        self._backend = "log"  # the backend the batch in hand is using: what an outage is counted on
        self._warned_spread: set[str] = set()
        self.shared = shared
        check_reading(shared, tracking)
        if shared is not None and source is not None:
            raise InputError("--shared reads the frame log; it cannot be combined with another source")
        self.tracker = (
            BatchTracker(lake.catalog, self.model, self.model_version, tracking)
            if tracking is not None
            else None
        )

    def stop(self, *_args: object) -> None:
        """Ask the worker to finish the frame in hand, commit and return (signal-handler safe)."""
        self._stop = True

    def run(self) -> WorkerStats:
        if self.threads is not None:
            self.detector.limit_threads(self.threads)
        lake = self.lake
        lake.log.ensure_topic(self.topic)
        self.max_bytes = lake.log.topic_config(self.topic).max_record_bytes
        lake.log.ensure_topic(detections_topic(self.topic))
        self.event_limit = lake.log.topic_config(detections_topic(self.topic)).max_record_bytes
        lake.catalog.ensure_model(self.model, self.model_version, self.detector.params)
        bind = getattr(self.detector, "bind_catalog", None)
        if callable(bind):  # a detector that reads the catalog (face-id: the enrolled people)
            bind(lake.catalog)
        consumer = self.source or self._consumer()
        producer = lake.log.producer()
        self.checkpoint = (
            ShareCheckpoint(consumer) if isinstance(consumer, ShareConsumer) else Checkpoint(consumer)
        )
        start = time.monotonic()
        last_data = start
        log.info(
            "worker %s: %s %s in group %s on %s",
            self.name,
            self.model,
            self.model_version,
            self.group,
            self.topic,
        )
        assigned_since: float | None = start
        delay = self.retry_initial
        try:
            while not self._stop:
                budget = self.sizer.next()
                if self.max_frames is not None:
                    budget = min(budget, self.max_frames - self.stats.processed - self.stats.dead_lettered)
                    if budget <= 0:
                        break
                try:
                    records = consumer.poll(budget, timeout=0.25)
                except BackendUnavailable as e:  # the log itself is down or full: wait, do not die
                    self._wait_out(e, delay, backend="log")
                    delay = min(delay * 2, self.retry_max)
                    continue
                delay = self.retry_initial
                if not records:
                    now = time.monotonic()
                    # a member between assignments (a rebalance after an outage) is not idle yet: idle
                    # time counts from its last data or from when it got partitions again
                    if consumer.assignment():
                        if assigned_since is None:
                            assigned_since = now
                        idle, limit = now - max(last_data, assigned_since), self.idle_timeout
                    else:
                        assigned_since = None
                        idle, limit = now - last_data, max(self.idle_timeout, UNASSIGNED_GRACE)
                    if self.until_idle and idle >= limit:
                        break
                    continue
                batch_start, retries = time.monotonic(), self.stats.retries
                self._handle_with_retry(records, consumer, producer)
                last_data = time.monotonic()  # an outage ridden out in the batch is not idle time
                self.stats.busy_seconds += last_data - batch_start
                if self.stats.retries == retries:  # an outage's waits say nothing of the detector's speed
                    self.sizer.observe(len(records), last_data - batch_start)
                if self.on_batch is not None:
                    self.on_batch(self.stats)
        finally:
            self.stats.seconds = time.monotonic() - start
            for close in (producer.close, consumer.close):
                try:
                    close()
                except VisionlakeError as e:  # keep the error that got us here, if any
                    log.warning("worker %s: while closing: %s", self.name, e)
        log.info(
            "worker %s done: %d processed, %d dead-lettered in %.1f s",
            self.name,
            self.stats.processed,
            self.stats.dead_lettered,
            self.stats.seconds,
        )
        return self.stats

    def _consumer(self) -> Consumer | ShareConsumer:
        """A member of the group: ordered (a consumer group), or record by record (a share group)."""
        if self.shared is None:
            return self.lake.log.consumer([self.topic], group=self.group, offset_reset=self.offset_reset)
        return self.lake.log.share_consumer(
            [self.topic],
            self.group,
            self.offset_reset,
            lease_s=self.shared.lease_s,
            max_deliveries=self.shared.max_deliveries,
            start_from=default_group(self.model, self.model_version),  # the model's ordered workers
        )

    # -- one batch ---------------------------------------------------------------------------

    def _handle_with_retry(self, records: list[Record], consumer, producer) -> None:
        """Handle a batch; while the archive, catalog or log is unreachable, retry it with backoff.

        Nothing of the batch is committed until its results are durable and every write is
        idempotent, so a retry (or a stop during the outage) loses nothing and counts nothing twice.
        """
        delay = self.retry_initial
        self._queued = False  # this batch's events and dead letters are not in the producer yet
        while True:
            try:
                self._handle(records, producer)
                return
            except BackendUnavailable as e:
                if self._stop:
                    raise
                self._wait_out(e, delay, "retrying the batch", self._backend)
                delay = min(delay * 2, self.retry_max)

    def _wait_out(
        self, e: BackendUnavailable, delay: float, what: str = "polling again", backend: str = "log"
    ) -> None:
        """Log the outage and sleep `delay` seconds, waking at once on a stop request."""
        self.stats.retries += 1
        self.metrics.backend_error(backend)
        log.warning("worker %s: %s; %s in %.1f s", self.name, e, what, delay)
        deadline = time.monotonic() + delay
        while time.monotonic() < deadline and not self._stop:
            time.sleep(0.1)

    def _handle(self, records: list[Record], producer) -> None:
        """One batch in the only safe order: process, persist, publish, then commit what is durable."""
        self.checkpoint.track(records)
        batch = self._process(records)
        if self.tracker is not None:
            ordered = [r for r in batch.results if not self._spread(r)]
            tracked, batch.trackers = self.tracker.track([(r.meta, r.detections, r.reused) for r in ordered])
            for res, dets in zip(ordered, tracked, strict=True):
                res.detections = dets
        self._persist(batch)
        self._publish(batch, producer)
        for r in batch.finished:
            self.checkpoint.finish(r)
        self.checkpoint.commit()
        self._count(batch)

    def _process(self, records: list[Record]) -> _Batch:
        """Read and detect frame by frame (one decoded image in memory at a time).

        A stop request ends the batch after the frame in hand; the records not reached stay
        unfinished, so they are not committed and the partition's next reader gets them.
        """
        batch = _Batch()
        self._backend = "catalog"
        parsed: list[tuple[Record, FrameMeta]] = []
        for r in records:
            if self.until_ms is not None and r.timestamp_ms > self.until_ms:
                self.stats.beyond_range += 1
                batch.finished.append(r)
                continue
            if self.shared is not None and r.delivery_count > self.shared.max_deliveries:
                batch.dead.append((r, self._poison(r)))
                batch.finished.append(r)
                continue
            try:
                parsed.append((r, self._meta(r)))
            except FrameError as e:
                batch.dead.append((r, e.reason))
                batch.finished.append(r)
        hashes = self.lake.catalog.frame_hashes([m.frame_id for _, m in parsed])
        # results are written with their frame row: only frames already stored can have any
        stored = self.lake.catalog.existing_results(list(hashes), self.model, self.model_version)
        for n, (r, meta) in enumerate(parsed):
            if self._stop and n > 0:
                break
            try:
                batch.results.append(self._frame(r, meta, stored.get(meta.frame_id), hashes))
            except FrameError as e:
                batch.dead.append((r, e.reason))
            batch.finished.append(r)
        return batch

    def _poison(self, r: Record) -> str:
        return (
            f"poison: delivered {r.delivery_count} times and never finished (the workers holding it died "
            f"or ran past their {self.shared.lease_s:g} s lease); the limit is {self.shared.max_deliveries}"
        )

    def _spread(self, res: _Result) -> bool:
        """A frame of a camera spread over several partitions (`ingest --spread`): several workers
        process that camera out of order, so it is not tracked (said once per camera)."""
        if res.record.header("vl-spread") in (None, "1"):
            return False
        if res.meta.camera not in self._warned_spread:
            self._warned_spread.add(res.meta.camera)
            log.warning(
                "camera %s is spread over several partitions (ingest --spread): its frames arrive out of "
                "order, so they are stored without track ids; ingest it without --spread to track it",
                res.meta.camera,
            )
        return True

    def _meta(self, r: Record) -> FrameMeta:
        if len(r.value) > self.max_bytes:
            raise FrameError(f"oversized record: {len(r.value)} bytes, the limit is {self.max_bytes}")
        return meta_from_record(r)

    def _frame(
        self, r: Record, meta: FrameMeta, stored: Detections | None, hashes: dict[str, str]
    ) -> _Result:
        """Decode, check and detect one frame (or reuse its stored detections)."""
        t0 = time.perf_counter()
        if meta.ref:
            self._backend = "archive"
            try:
                data = self.lake.archive.get(meta.ref)
            except ArchiveError as e:
                raise FrameError(f"claim-check reference unreadable: {e}") from None
        else:
            data = r.value
        sha = hashlib.sha256(data).hexdigest()
        known = hashes.get(meta.frame_id)  # stored, or taken by an earlier frame of this batch
        if known is not None and known != sha:
            raise FrameError(
                f"conflict: frame {meta.frame_id} of camera {meta.camera!r} is already stored with "
                f"other content (sha256 {known[:12]}, this one {sha[:12]}); a frame id names one image. "
                "To keep both, ingest the source again under another camera name"
            )
        image = decode_image(data, self.max_pixels)
        fmt = image_format(data)
        h, w = image.shape[:2]
        if (meta.width, meta.height) == (0, 0):
            meta = FrameMeta(meta.frame_id, meta.camera, meta.seq, meta.captured_at, w, h, meta.ref)
        elif (meta.width, meta.height) != (w, h):
            raise FrameError(f"header says {meta.width}x{meta.height} but the image is {w}x{h}")
        check_dimensions(w, h, "decoded image")
        try:
            key = self.lake.archive.key(meta.camera, meta.captured_at, meta.frame_id, ext=ARCHIVE_EXT[fmt])
        except ArchiveError as e:
            raise FrameError(str(e)) from None
        if stored is not None:
            dets = stored
            self.stats.reused += 1  # counted once: a retried batch reads its stored results again
        else:
            try:
                dets = self.detector.detect(image)
            except Exception as e:  # a plugin bug on one frame must not kill the worker
                log.exception("detector %s failed on frame %s", self.model, meta.frame_id)
                raise FrameError(f"detector {self.model} failed: {type(e).__name__}: {e}") from None
        del image
        hashes[meta.frame_id] = sha
        kept = b"" if meta.ref else data  # a claim-checked image is archived already: hold no copy
        return _Result(
            r, meta, kept, len(data), sha, key, dets, (time.perf_counter() - t0) * 1000, stored is not None
        )

    def _persist(self, batch: _Batch) -> None:
        """Archive objects first, then every catalog row of the batch in one transaction."""
        rows: list[FrameResult] = []
        self._backend = "archive"
        for res in batch.results:
            try:
                uri = res.meta.ref or self.lake.archive.put(res.key, res.data)
            except ArchiveConflict as e:
                batch.dead.append((res.record, f"conflict: {e}"))
                continue
            r = res.record
            rows.append(
                FrameResult(
                    meta=res.meta,
                    nbytes=res.nbytes,
                    sha256=res.sha256,
                    uri=uri,
                    topic=r.topic,
                    partition=r.partition,
                    offset=r.offset,
                    model=self.model,
                    model_version=self.model_version,
                    detections=res.detections,
                    latency_ms=res.latency_ms,
                    processed_at=datetime.now(UTC),
                )
            )
        self._backend = "catalog"
        self.lake.catalog.write_results(rows, batch.trackers)
        batch.committed_at = time.time()
        batch.rows = rows

    def _publish(self, batch: _Batch, producer) -> None:
        """Detection events and dead letters, flushed before anything is committed.

        A producer keeps what a failed flush could not write, so a retried batch only flushes again:
        queueing its events a second time would publish them twice.
        """
        self._backend = "log"
        if self._queued:
            producer.flush()
            return
        det_topic, dead_topic = detections_topic(self.topic), dlq_topic(self.topic)
        for row in batch.rows:
            event = self._event(row)
            value = json.dumps(event).encode()
            if len(value) > self.event_limit:  # the catalog has every box; the event says how many
                event["detections"] = []
                event["detections_omitted"] = len(row.detections)
                value = json.dumps(event).encode()
            producer.send(det_topic, value, key=row.meta.camera.encode())
        for r, reason in batch.dead:
            producer.send(dead_topic, r.value, key=r.key, headers=_dlq_headers(r, reason, self.model))
            log.warning("dead-lettered %s/%d@%d: %s", r.topic, r.partition, r.offset, reason)
        self._queued = True
        producer.flush()

    def _count(self, batch: _Batch) -> None:
        st = self.stats
        for row in batch.rows:
            st.processed += 1
            st.detections += len(row.detections)
            st.per_camera[row.meta.camera] = st.per_camera.get(row.meta.camera, 0) + 1
        for _r, reason in batch.dead:
            st.dead_lettered += 1
            kind = reason.split(":")[0]
            st.dlq_reasons[kind] = st.dlq_reasons.get(kind, 0) + 1
        self.metrics.batch(batch.rows, batch.dead, batch.committed_at)

    def _event(self, res: FrameResult) -> dict:
        return {
            "frame_id": res.meta.frame_id,
            "camera": res.meta.camera,
            "captured_at": iso(res.meta.captured_at),
            "model": res.model,
            "model_version": res.model_version,
            "detections": res.detections.to_list(),
            "latency_ms": round(res.latency_ms, 2),
            "uri": res.uri,
            "topic": res.topic,
            "partition": res.partition,
            "offset": res.offset,
        }


def check_reading(shared: SharedReading | None, tracking: TrackerSettings | None) -> None:
    """Refuse tracking on shared reading: a tracker needs each camera's frames in capture order."""
    if shared is not None and tracking is not None:
        raise InputError(
            "--shared hands a camera's frames to several workers in any order, and --track needs them "
            "in capture order: drop one of the two (a tracked camera scales by running one worker per "
            "camera partition)"
        )


def default_group(model: str, version: str, shared: bool = False) -> str:
    """`model.version`; a share group's name gets `.shared` (a group is one kind or the other)."""
    return f"{model}.{version}.shared" if shared else f"{model}.{version}"


def _dlq_headers(r: Record, reason: str, model: str) -> list[tuple[str, bytes]]:
    return [
        *r.headers,
        ("vl-error", reason.encode()),
        ("vl-source", f"{r.topic}/{r.partition}@{r.offset}".encode()),
        ("vl-failed-by", model.encode()),
        ("vl-failed-at", iso(datetime.now(UTC)).encode()),
    ]
