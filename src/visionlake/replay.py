"""Replay: re-run a model version over the history, under its own consumer group.

Two sources. The log holds what retention has kept; the catalog and the archive hold every frame ever
processed. `source="auto"` reads the log while it still has everything and the archive once retention
has dropped records (or when the replay already started there). Either way the replay starts where
asked (earliest or a capture time) the first time and resumes from its own commits (group offsets on
the log, a replay cursor in the catalog) after an interruption. Results carry the replayed model
version, so they sit beside the older version's and the two can be compared (`compare_versions`).
"""

from __future__ import annotations

import sqlalchemy as sa

from .catalog import schema as S
from .detectors.base import Detector
from .errors import InputError, UnknownTopic
from .lake import FRAMES_TOPIC, Lake
from .timeutil import parse_time
from .tracking import TrackerSettings
from .workers.archive_reader import ArchiveReader
from .workers.worker import Worker

SOURCES = ("auto", "log", "archive")


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
    source: str = "auto",
    tracking: TrackerSettings | None = None,
) -> Worker:
    """A worker that replays frames captured from `start` to `end` from `source`, then stops."""
    if source not in SOURCES:
        raise InputError(f"--source must be one of {', '.join(SOURCES)}, not {source!r}")
    version = version or detector.model_version
    group = replay_group(detector.name, version)
    since = None if start == "earliest" else parse_time(start, "--from")
    until = parse_time(end, "--to") if end else None
    if source == "auto":
        source = choose_source(lake, group, topic, restart)
    common = dict(group=group, topic=topic, until_idle=True, version=version, tracking=tracking)
    if source == "archive":  # a finished archive replay has nothing more coming: stop soon
        reader = ArchiveReader(lake.catalog, group, since=since, until=until, restart=restart)
        return Worker(lake, detector, idle_timeout=0.2, source=reader, **common)
    lg = lake.log
    lg.topic_config(topic)  # clear error for a missing topic
    if restart or not lg.group_offsets(group, topic):
        if since is None:
            offsets = {t.partition: t.start_offset for t in _partitions(lake, topic)}
        else:
            offsets = lg.offsets_for_time(topic, int(since.timestamp() * 1000))
        lg.commit_group_offsets(group, topic, offsets)
    until_ms = int(until.timestamp() * 1000) if until else None
    return Worker(lake, detector, idle_timeout=2.0, until_ms=until_ms, **common)


def choose_source(lake: Lake, group: str, topic: str, restart: bool = False) -> str:
    """'archive' once the log has dropped records by retention (or the replay began there), else 'log'."""
    if not restart:
        if lake.catalog.replay_cursor(group) is not None:
            return "archive"
        try:
            if lake.log.group_offsets(group, topic):
                return "log"
        except UnknownTopic:
            return "archive"
    try:
        parts = _partitions(lake, topic)
    except StopIteration:
        return "archive"  # no such topic on the log: only the archive can have its frames
    return "archive" if any(p.start_offset > 0 for p in parts) else "log"


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
