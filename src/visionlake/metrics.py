"""Prometheus metrics of worker and ingest processes (`--metrics-port`).

`prometheus_client` is an optional extra (`metrics`); this module imports it only when metrics are
asked for, so a process without `--metrics-port` neither needs nor loads it.

Every process keeps its metrics in a registry of its own (`Metrics`, never prometheus_client's global
default), served by `serve_metrics` from a daemon thread. Label values stay bounded: camera, model,
model_version, a dead letter's reason *kind* (`reason_kind`), backend, a detector's labels (at most
`MAX_LABELS` a worker, the rest counted as "other"); never a frame id, an offset or an error text.

The worker records through a small object bound to its model version (`WorkerMetrics`), called where
`WorkerStats` is updated: once per batch and once per outage waited out. Without `--metrics-port` it
holds `NO_WORKER_METRICS`, whose methods do nothing, so metrics cost nothing when they are off.

Metrics (counters end in `_total`):

- ingest: `visionlake_frames_ingested_total{camera}`, `visionlake_ingest_bytes_total{camera}` (encoded
  frame bytes), `visionlake_ingest_errors_total{camera}` (files or frames reported as errors);
- worker: `visionlake_frames_processed_total{model,model_version}`,
  `visionlake_processing_seconds{model,model_version}` (histogram: reading, decoding and detecting one
  frame), `visionlake_publish_to_catalog_seconds{model,model_version}` (histogram: from the frame's
  capture time, the record's timestamp, to the commit of the catalog transaction holding its result),
  `visionlake_dead_letters_total{model,model_version,reason}`, `visionlake_backend_errors_total{backend}`
  (each outage of archive, catalog or log that the worker waits out),
  `visionlake_detections_total{model,model_version,label}` and
  `visionlake_worker_info{worker,model,model_version,group}` (always 1).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from typing import Any

from .errors import InputError, MissingDependency

#: Distinct detection labels one worker reports; further labels are counted under "other".
MAX_LABELS = 64
OTHER = "other"

#: Seconds to read, decode and detect one frame: 1 ms to 10 s.
PROCESSING_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: Seconds from capture to catalog: a live camera's frames take well under a second to minutes when
#: workers lag; a replay of last week lands in the top buckets.
PUBLISH_BUCKETS = (
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
    900.0,
    3600.0,
    21600.0,
    86400.0,
)

#: Dead-letter reasons (see docs/architecture.md) -> the bounded `reason` label; first match wins.
_REASONS: list[tuple[str, re.Pattern[str]]] = [
    ("empty", re.compile(r"^empty record")),
    ("oversized", re.compile(r"^oversized record")),
    ("conflict", re.compile(r"^conflict")),
    ("claim_check", re.compile(r"^claim-check reference")),
    ("detector_failed", re.compile(r"^detector .* failed")),
    ("pixel_budget", re.compile(r"exceeds this worker's budget")),
    ("absurd_dimensions", re.compile(r"absurd dimensions")),
    ("size_mismatch", re.compile(r"^header says \d+x\d+ but the image is")),
    ("undecodable", re.compile(r"^undecodable|^truncated JPEG|^image data far too short")),
    ("bad_header", re.compile(r"^header |^record key|^capture time|camera id|not a usable time")),
]


def reason_kind(reason: str) -> str:
    """The `reason` label of a dead letter: one of a fixed set of words, never the message itself."""
    for kind, pattern in _REASONS:
        if pattern.search(reason):
            return kind
    return OTHER


def _prometheus() -> Any:
    try:
        import prometheus_client
    except ImportError as e:
        err = MissingDependency("--metrics-port (Prometheus metrics)", "metrics", "prometheus_client")
        err.args = (f"{err}; in a checkout: scripts/setup.sh metrics, or pip install -e '.[metrics]'",)
        raise err from e
    return prometheus_client


class Metrics:
    """The metrics of one process, in a registry of its own. Families are made on first use, so an
    ingest process shows ingest metrics only, a worker worker metrics only."""

    def __init__(self, registry: Any = None) -> None:
        self.prom = _prometheus()
        self.registry = registry if registry is not None else self.prom.CollectorRegistry()
        self._families: dict[str, Any] = {}

    def _family(self, kind: str, name: str, doc: str, labels: Sequence[str], **kw: Any) -> Any:
        family = self._families.get(name)
        if family is None:
            cls = getattr(self.prom, kind)
            family = self._families[name] = cls(name, doc, list(labels), registry=self.registry, **kw)
        return family

    def worker(self, worker: str, model: str, model_version: str, group: str) -> WorkerMetrics:
        """What one worker records, bound to its model version."""
        return WorkerMetrics(self, worker, model, model_version, group)

    def ingest(self, camera: str) -> IngestMetrics:
        """What an ingest of one camera records."""
        return IngestMetrics(self, camera)

    def serve(self, port: int, host: str = "127.0.0.1") -> Any:
        return serve_metrics(port, host, self.registry)


def serve_metrics(port: int, host: str = "127.0.0.1", registry: Any = None) -> Any:
    """Serve `registry` at http://HOST:PORT/metrics from a daemon thread; returns the server
    (`server.server_address[1]` is the port, chosen by the system for port 0; `server.shutdown()`
    stops it). A port in use or an address that cannot be bound is an InputError naming them."""
    prom = _prometheus()
    if registry is None:
        registry = prom.CollectorRegistry()
    try:
        server, _thread = prom.start_http_server(port, addr=host, registry=registry)
    except OSError as e:
        why = e.strerror or str(e)
        raise InputError(
            f"--metrics-port {port}: cannot serve metrics on {host}:{port}: {why}"
            + (" (another process listens there; choose another port)" if "in use" in why else "")
        ) from None
    return server


# --- worker ----------------------------------------------------------------------------------------


class NoWorkerMetrics:
    """The recorder of a worker without metrics: every call does nothing."""

    __slots__ = ()

    def batch(self, rows: Sequence[Any], dead: Sequence[tuple[Any, str]], committed_at: float) -> None:
        """A batch durable: its result rows (`FrameResult`), dead letters (record, reason) and the time
        (time.time()) its catalog transaction committed."""

    def backend_error(self, backend: str) -> None:
        """An outage of `backend` (archive, catalog or log) waited out."""


NO_WORKER_METRICS = NoWorkerMetrics()


class WorkerMetrics(NoWorkerMetrics):
    """The metrics of one worker (one model version), children bound once so a batch costs a few
    increments and one observation per frame and histogram."""

    __slots__ = ("_m", "_mv", "_processed", "_processing", "_publish", "_detections", "_dead", "_labels")

    def __init__(self, metrics: Metrics, worker: str, model: str, model_version: str, group: str) -> None:
        f = metrics._family
        mv = (model, model_version)
        self._m = metrics
        self._mv = mv
        f(
            "Gauge",
            "visionlake_worker_info",
            "A running worker: its name, model version and consumer group (always 1)",
            ("worker", "model", "model_version", "group"),
        ).labels(worker, model, model_version, group).set(1)
        self._processed = f(
            "Counter",
            "visionlake_frames_processed",
            "Frames with a result written to the catalog",
            ("model", "model_version"),
        ).labels(*mv)
        self._processing = f(
            "Histogram",
            "visionlake_processing_seconds",
            "Seconds to read, decode and detect one frame",
            ("model", "model_version"),
            buckets=PROCESSING_BUCKETS,
        ).labels(*mv)
        self._publish = f(
            "Histogram",
            "visionlake_publish_to_catalog_seconds",
            "Seconds from a frame's capture time (its record's timestamp) to the catalog commit of its result",
            ("model", "model_version"),
            buckets=PUBLISH_BUCKETS,
        ).labels(*mv)
        self._detections = f(
            "Counter",
            "visionlake_detections",
            f"Detections written, by label (at most {MAX_LABELS} labels a worker, then '{OTHER}')",
            ("model", "model_version", "label"),
        )
        self._dead = f(
            "Counter",
            "visionlake_dead_letters",
            "Records sent to the dead-letter topic, by kind of reason",
            ("model", "model_version", "reason"),
        )
        f(
            "Counter",
            "visionlake_backend_errors",
            "Outages of a backend (archive, catalog, log) that the worker waited out",
            ("backend",),
        )
        self._labels: dict[str, Any] = {}

    def batch(self, rows: Sequence[Any], dead: Sequence[tuple[Any, str]], committed_at: float) -> None:
        if rows:
            self._processed.inc(len(rows))
            observe_processing, observe_publish = self._processing.observe, self._publish.observe
            labels: Counter[str] = Counter()
            for row in rows:
                observe_processing(row.latency_ms / 1000.0)
                observe_publish(max(0.0, committed_at - row.meta.captured_at.timestamp()))
                if len(row.detections):
                    labels.update(row.detections.label.tolist())
            for label, n in labels.items():
                self._label(label).inc(n)
        for _record, reason in dead:
            self._dead.labels(*self._mv, reason_kind(reason)).inc()

    def _label(self, label: str) -> Any:
        child = self._labels.get(label)
        if child is None:
            name = str(label) if len(self._labels) < MAX_LABELS else OTHER
            child = self._detections.labels(*self._mv, name)
            if name != OTHER:
                self._labels[label] = child
        return child

    def backend_error(self, backend: str) -> None:
        self._m._families["visionlake_backend_errors"].labels(backend).inc()


# --- ingest ----------------------------------------------------------------------------------------


class IngestMetrics:
    """The metrics of one camera's ingest."""

    __slots__ = ("_frames", "_bytes", "_errors")

    def __init__(self, metrics: Metrics, camera: str) -> None:
        f = metrics._family
        self._frames = f(
            "Counter", "visionlake_frames_ingested", "Frames published to the frame log", ("camera",)
        ).labels(camera)
        self._bytes = f(
            "Counter", "visionlake_ingest_bytes", "Encoded frame bytes published", ("camera",)
        ).labels(camera)
        self._errors = f(
            "Counter",
            "visionlake_ingest_errors",
            "Files or frames of a source that could not be ingested",
            ("camera",),
        ).labels(camera)

    def frame(self, nbytes: int) -> None:
        self._frames.inc()
        self._bytes.inc(nbytes)

    def error(self) -> None:
        self._errors.inc()
