"""What `visionlake status` and the demo report: cameras, topics, groups with lag, model versions."""

from __future__ import annotations

from .lake import Lake
from .redact import redact_url


def lake_status(lake: Lake) -> dict:
    counts = lake.catalog.counts()
    return {
        "lake": str(lake.root),
        # The archive keeps its URL as given (it connects with it); the others are redacted twice.
        "log": redact_url(lake.log.url),
        "catalog": redact_url(lake.catalog.url),
        "archive": redact_url(lake.archive.url),
        "cameras": [
            {"camera": c, "frames": n, "first": str(a), "last": str(b)} for c, n, a, b in counts["cameras"]
        ],
        "topics": [
            {"topic": t.name, "partitions": len(t.partitions), "records": t.records, "bytes": t.bytes}
            for t in lake.log.topics()
        ],
        "groups": [{"group": g.group, "members": len(g.members), "lag": g.lag} for g in lake.log.groups()],
        "models": [
            {"model": m, "model_version": v, "frames": n, "detections": int(d or 0)}
            for m, v, n, d in counts["models"]
        ],
    }
