"""The detector worker: poll → decode → detect → archive → catalog → events → commit.

`Worker._handle` is the one place that fixes the order. Offsets are committed only after the image is
in the archive, the results are in the catalog and the events are flushed, and every write is
idempotent, so killing a worker at any point loses no frame and counts none twice: the frames after
the last commit are simply processed again (their stored results are reused, not recomputed).

A record that cannot be a frame (empty, undecodable, oversized, absurd dimensions) or that makes the
detector fail goes to the dead-letter topic with its reason; the worker keeps going.
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

import cv2
import numpy as np

from ..catalog import FrameResult
from ..detectors.base import Detector
from ..errors import ArchiveError, BackendUnavailable, FrameError
from ..frames import FrameMeta, check_dimensions, decode_image, iso, meta_from_record
from ..lake import FRAMES_TOPIC, Lake, detections_topic, dlq_topic
from ..log.base import OffsetReset
from ..types import Detections, Record

log = logging.getLogger("visionlake.worker")


@dataclass
class WorkerStats:
    worker: str
    model: str
    model_version: str
    group: str
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


@dataclass
class _Item:
    record: Record
    meta: FrameMeta
    data: bytes
    image: np.ndarray
    key: str  # archive key, checked at decode time
    decode_ms: float


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
        batch_size: int = 8,
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
    ) -> None:
        self.lake = lake
        self.detector = detector
        self.model = detector.name
        self.model_version = version or detector.model_version
        self.group = group or default_group(self.model, self.model_version)
        self.topic = topic
        self.offset_reset = offset_reset
        self.batch_size = batch_size
        self.until_idle = until_idle
        self.idle_timeout = idle_timeout
        self.max_frames = max_frames
        self.until_ms = until_ms
        self.name = name or f"{socket.gethostname()}-{os.getpid()}"
        self.on_batch = on_batch
        self.threads = threads  # OpenCV threads; 1 when several workers share the cores
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        self._stop = False
        self.stats = WorkerStats(self.name, self.model, self.model_version, self.group)

    def stop(self, *_args: object) -> None:
        """Ask the worker to finish the frame in hand, commit and return (signal-handler safe)."""
        self._stop = True

    def run(self) -> WorkerStats:
        if self.threads is not None:
            cv2.setNumThreads(self.threads)
        lake = self.lake
        lake.log.ensure_topic(self.topic)
        self.max_bytes = lake.log.topic_config(self.topic).max_record_bytes
        lake.catalog.ensure_model(self.model, self.model_version, self.detector.params)
        consumer = lake.log.consumer([self.topic], group=self.group, offset_reset=self.offset_reset)
        producer = lake.log.producer()
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
        try:
            while not self._stop:
                budget = self.batch_size
                if self.max_frames is not None:
                    budget = min(budget, self.max_frames - self.stats.processed - self.stats.dead_lettered)
                    if budget <= 0:
                        break
                records = consumer.poll(budget, timeout=0.25)
                if not records:
                    if self.until_idle and time.monotonic() - last_data >= self.idle_timeout:
                        break
                    continue
                last_data = time.monotonic()
                self._handle_with_retry(records, consumer, producer)
                self.stats.busy_seconds += time.monotonic() - last_data
                if self.on_batch is not None:
                    self.on_batch(self.stats)
        finally:
            self.stats.seconds = time.monotonic() - start
            producer.close()
            consumer.close()
        log.info(
            "worker %s done: %d processed, %d dead-lettered in %.1f s",
            self.name,
            self.stats.processed,
            self.stats.dead_lettered,
            self.stats.seconds,
        )
        return self.stats

    # -- one batch ---------------------------------------------------------------------------

    def _handle_with_retry(self, records: list[Record], consumer, producer) -> None:
        """Handle a batch; while the archive, catalog or log is unreachable, retry it with backoff.

        Nothing of the batch is committed until it succeeds and every write is idempotent, so a retry
        (or a stop during the outage) loses nothing and counts nothing twice.
        """
        delay = self.retry_initial
        while True:
            try:
                self._handle(records, consumer, producer)
                return
            except BackendUnavailable as e:
                if self._stop:
                    raise
                self.stats.retries += 1
                log.warning("worker %s: %s; retrying the batch in %.1f s", self.name, e, delay)
                deadline = time.monotonic() + delay
                while time.monotonic() < deadline and not self._stop:
                    time.sleep(0.1)
                delay = min(delay * 2, self.retry_max)

    def _handle(self, records: list[Record], consumer, producer) -> None:
        """Process a polled batch in the only safe order: results durable, then offsets."""
        done: list[Record] = []
        dead: list[tuple[Record, str]] = []
        items: list[_Item] = []
        for r in records:
            if self.until_ms is not None and r.timestamp_ms > self.until_ms:
                self.stats.beyond_range += 1
                done.append(r)
                continue
            try:
                items.append(self._decode(r))
            except FrameError as e:
                dead.append((r, e.reason))
            done.append(r)
        stored = self.lake.catalog.existing_results(
            [i.meta.frame_id for i in items], self.model, self.model_version
        )
        results: list[FrameResult] = []
        for n, item in enumerate(items):
            if self._stop and n > 0:  # finish the frame in hand only; the rest are not committed
                done = [r for r in done if not _after(r, item.record)]
                break
            try:
                results.append(self._detect(item, stored.get(item.meta.frame_id)))
            except FrameError as e:
                dead.append((item.record, e.reason))
        self.lake.catalog.write_results(results)
        det_topic, dead_topic = detections_topic(self.topic), dlq_topic(self.topic)
        for res in results:
            producer.send(det_topic, json.dumps(self._event(res)).encode(), key=res.meta.camera.encode())
        for r, reason in dead:
            producer.send(dead_topic, r.value, key=r.key, headers=_dlq_headers(r, reason, self.model))
            self.stats.dead_lettered += 1
            kind = reason.split(":")[0]
            self.stats.dlq_reasons[kind] = self.stats.dlq_reasons.get(kind, 0) + 1
            log.warning("dead-lettered %s/%d@%d: %s", r.topic, r.partition, r.offset, reason)
        producer.flush()
        consumer.commit(_next_offsets(done))
        for res in results:
            self.stats.processed += 1
            self.stats.detections += len(res.detections)
            self.stats.per_camera[res.meta.camera] = self.stats.per_camera.get(res.meta.camera, 0) + 1

    def _decode(self, r: Record) -> _Item:
        t0 = time.perf_counter()
        if len(r.value) > self.max_bytes:
            raise FrameError(f"oversized record: {len(r.value)} bytes, the limit is {self.max_bytes}")
        meta = meta_from_record(r)
        if meta.ref:
            try:
                data = self.lake.archive.get(meta.ref)
            except ArchiveError as e:
                raise FrameError(f"claim-check reference unreadable: {e}") from None
        else:
            data = r.value
        image = decode_image(data)
        h, w = image.shape[:2]
        if (meta.width, meta.height) == (0, 0):
            meta = FrameMeta(meta.frame_id, meta.camera, meta.seq, meta.captured_at, w, h, meta.ref)
        elif (meta.width, meta.height) != (w, h):
            raise FrameError(f"header says {meta.width}x{meta.height} but the image is {w}x{h}")
        check_dimensions(w, h, "decoded image")
        try:
            key = self.lake.archive.key(meta.camera, meta.captured_at, meta.frame_id)
        except ArchiveError as e:
            raise FrameError(str(e)) from None
        return _Item(r, meta, data, image, key, (time.perf_counter() - t0) * 1000)

    def _detect(self, item: _Item, stored: Detections | None) -> FrameResult:
        t0 = time.perf_counter()
        if stored is not None:
            dets = stored
            self.stats.reused += 1
        else:
            try:
                dets = self.detector.detect(item.image)
            except Exception as e:  # a plugin bug on one frame must not kill the worker
                log.exception("detector %s failed on frame %s", self.model, item.meta.frame_id)
                raise FrameError(f"detector {self.model} failed: {type(e).__name__}: {e}") from None
        latency = item.decode_ms + (time.perf_counter() - t0) * 1000
        meta = item.meta
        uri = meta.ref or self.lake.archive.put(item.key, item.data)
        r = item.record
        return FrameResult(
            meta=meta,
            nbytes=len(item.data),
            sha256=hashlib.sha256(item.data).hexdigest(),
            uri=uri,
            topic=r.topic,
            partition=r.partition,
            offset=r.offset,
            model=self.model,
            model_version=self.model_version,
            detections=dets,
            latency_ms=latency,
            processed_at=datetime.now(UTC),
        )

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


def default_group(model: str, version: str) -> str:
    return f"{model}.{version}"


def _after(r: Record, pivot: Record) -> bool:
    return r.partition == pivot.partition and r.topic == pivot.topic and r.offset >= pivot.offset


def _next_offsets(records: list[Record]) -> dict[tuple[str, int], int]:
    out: dict[tuple[str, int], int] = {}
    for r in records:
        tp = (r.topic, r.partition)
        out[tp] = max(out.get(tp, 0), r.offset + 1)
    return out


def _dlq_headers(r: Record, reason: str, model: str) -> list[tuple[str, bytes]]:
    return [
        *r.headers,
        ("vl-error", reason.encode()),
        ("vl-source", f"{r.topic}/{r.partition}@{r.offset}".encode()),
        ("vl-failed-by", model.encode()),
        ("vl-failed-at", iso(datetime.now(UTC)).encode()),
    ]
