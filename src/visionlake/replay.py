"""Replay: re-run a model version over the frames still on the log, under its own consumer group.

The replay group starts where asked (earliest or a capture time) the first time, and resumes from its
own commits after an interruption. Results carry the replayed model version, so they sit beside the
older version's in the catalog and the two can be compared with SQL (`compare_versions`).
"""

from __future__ import annotations

import sqlalchemy as sa

from .catalog import schema as S
from .detectors.base import Detector
from .lake import FRAMES_TOPIC, Lake
from .timeutil import parse_time
from .workers.worker import Worker


def replay_group(model: str, version: str) -> str:
    return f"replay.{model}.{version}"


def prepare_replay(
    lake: Lake,
    detector: Detector,
    *,
    version: str | None = None,
    start: str = "earliest",
    end: str | None = None,
    topic: str = FRAMES_TOPIC,
    restart: bool = False,
) -> Worker:
    """A worker that replays `topic` from `start` to `end` (capture times) and then stops."""
    version = version or detector.model_version
    group = replay_group(detector.name, version)
    until_ms = int(parse_time(end, "--to").timestamp() * 1000) if end else None
    lg = lake.log
    lg.topic_config(topic)  # clear error for a missing topic
    if restart or not lg.group_offsets(group, topic):
        if start == "earliest":
            offsets = {t.partition: t.start_offset for t in _partitions(lake, topic)}
        else:
            offsets = lg.offsets_for_time(topic, int(parse_time(start, "--from").timestamp() * 1000))
        lg.commit_group_offsets(group, topic, offsets)
    return Worker(
        lake,
        detector,
        group=group,
        topic=topic,
        until_idle=True,
        idle_timeout=2.0,
        until_ms=until_ms,
        version=version,
    )


def _partitions(lake: Lake, topic: str):
    return next(t for t in lake.log.topics() if t.name == topic).partitions


def compare_versions(lake: Lake, model: str) -> tuple[list[str], list[tuple]]:
    """Per version of `model`: frames processed, detections, mean detections per frame, mean latency."""
    r = S.results.c
    stmt = (
        sa.select(
            r.model_version,
            sa.func.count().label("frames"),
            sa.func.sum(r.n_detections).label("detections"),
            # numeric casts: PostgreSQL has round(numeric, int) but not round(double, int)
            sa.func.round(sa.cast(sa.func.avg(r.n_detections), sa.Numeric), 3).label("per_frame"),
            sa.func.round(sa.cast(sa.func.avg(r.latency_ms), sa.Numeric), 1).label("latency_ms"),
        )
        .where(r.model == model)
        .group_by(r.model_version)
        .order_by(r.model_version)
    )
    with lake.catalog.engine.connect() as conn:  # type: ignore[attr-defined]
        res = conn.execute(stmt)
        return list(res.keys()), [tuple(x) for x in res]
