"""`/metrics` of `visionlake serve`: the lake's state in Prometheus text format, read at scrape time.

Workers and ingest processes export what happens inside them on their own `--metrics-port`
(counters and histograms, see `visionlake.metrics`). What no single process knows, the dashboard
reads from the lake itself when Prometheus scrapes: end offsets per topic partition, committed
offsets and lag per consumer group and partition, frames and results in the catalog, dead letters by
reason, and whether each backend answered. Catalog counts scan whole tables, so they are kept for
`catalog_ttl` seconds between scrapes; the log's offsets are read at every scrape.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

from ..errors import VisionlakeError
from ..lake import Lake
from . import queries as Q

#: Seconds the catalog's counts are reused between scrapes.
CATALOG_TTL_S = 30.0


class LakeCollector:
    """A prometheus_client collector that reads a lake at each scrape (no background thread)."""

    def __init__(self, lake: Lake, catalog_ttl: float = CATALOG_TTL_S) -> None:
        self.lake = lake
        self.catalog_ttl = catalog_ttl
        self._lock = threading.Lock()
        self._catalog: tuple[float, dict[str, list[tuple]]] | None = None

    def _catalog_counts(self) -> dict[str, list[tuple]]:
        with self._lock:
            now = time.monotonic()
            if self._catalog is None or now - self._catalog[0] > self.catalog_ttl:
                self._catalog = (now, self.lake.catalog.counts())  # type: ignore[attr-defined]
            return self._catalog[1]

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        up = GaugeMetricFamily(
            "visionlake_backend_up", "1 if the backend answered this scrape", labels=["backend"]
        )
        end = GaugeMetricFamily(
            "visionlake_topic_end_offset",
            "Next offset of each topic partition",
            labels=["topic", "partition"],
        )
        records = GaugeMetricFamily(
            "visionlake_topic_records", "Records kept in each topic partition", labels=["topic", "partition"]
        )
        committed = GaugeMetricFamily(
            "visionlake_group_committed_offset",
            "Offset a consumer group has committed",
            labels=["group", "topic", "partition"],
        )
        lag = GaugeMetricFamily(
            "visionlake_group_lag",
            "Records a consumer group has not processed",
            labels=["group", "topic", "partition"],
        )
        members = GaugeMetricFamily(
            "visionlake_group_members", "Members of a consumer group", labels=["group"]
        )
        try:
            for t in self.lake.log.topics():
                for p in t.partitions:
                    end.add_metric([t.name, str(p.partition)], p.end_offset)
                    records.add_metric([t.name, str(p.partition)], p.records)
            for g in self.lake.log.groups():
                members.add_metric([g.group], len(g.members))
                for p in g.partitions:
                    labels = [g.group, p.topic, str(p.partition)]
                    if p.committed is not None:
                        committed.add_metric(labels, p.committed)
                    lag.add_metric(labels, p.lag)
            dead = Q.dead_letters(self.lake)
            up.add_metric(["log"], 1)
        except VisionlakeError:
            up.add_metric(["log"], 0)
            dead = None
        yield end
        yield records
        yield committed
        yield lag
        yield members
        if dead is not None:
            reasons = GaugeMetricFamily(
                "visionlake_dead_letters",
                "Dead letters by reason among the newest records of the dead-letter topic",
                labels=["reason"],
            )
            for reason, n in dead["reasons"].items():
                reasons.add_metric([reason], n)
            yield reasons
            yield GaugeMetricFamily(
                "visionlake_dead_letter_records", "Records in the dead-letter topic", value=dead["records"]
            )
        frames = GaugeMetricFamily("visionlake_catalog_frames", "Frames in the catalog", labels=["camera"])
        results = GaugeMetricFamily(
            "visionlake_catalog_results",
            "Frames processed per model version",
            labels=["model", "model_version"],
        )
        detections = GaugeMetricFamily(
            "visionlake_catalog_detections", "Detections per model version", labels=["model", "model_version"]
        )
        try:
            counts = self._catalog_counts()
            for camera, n, *_ in counts["cameras"]:
                frames.add_metric([camera], n)
            for model, version, n, d in counts["models"]:
                results.add_metric([model, version], n)
                detections.add_metric([model, version], int(d or 0))
            up.add_metric(["catalog"], 1)
        except VisionlakeError:
            up.add_metric(["catalog"], 0)
        yield frames
        yield results
        yield detections
        yield up


def lake_registry(lake: Lake) -> Any:
    """A prometheus_client registry holding one LakeCollector (prometheus_client: the metrics extra)."""
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry(auto_describe=False)
    registry.register(LakeCollector(lake))
    return registry
