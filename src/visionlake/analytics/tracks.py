"""Who and how many: tracks listed, and visitors per camera and time bucket, from the tracks table.

A track is one object followed across a camera's frames (`worker --track`). Counting tracks instead
of detections answers the attendance questions: a person in front of the camera for ten seconds is
one visitor, not fifty detections.

- `tracks`: the tracks seen in a time window, longest first or newest first, with dwell time (last
  minus first capture time) and the best frame to look at;
- `visitors`: per bucket, camera and label, the tracks seen during the bucket (`visitors`), those
  that started in it (`entries`) and their mean dwell time. A track that spans two hours is a visitor
  in both and an entry in the first.

Tracks belong to one model version. Without --model-version, each model's newest registered version
that has tracks is read, so a replay's tracks never add to the live ones. `min_frames` drops short
tracks (a person walking past the edge, a false detection that lasted a frame or two).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ..catalog import schema as S
from ..catalog.base import Catalog, naive_utc
from ..errors import InputError
from ._sql import BUCKET_STEPS, check_bucket, engine_of, floor_time
from .reports import Report, ReportFilter, check_model

ORDERS = ("first-seen", "dwell", "frames")
MAX_TRACKS = 100_000


@dataclass(frozen=True)
class TrackFilter:
    """Which tracks count: a report filter (times are capture times, a track counts where it overlaps
    [since, until)) and the fewest frames a track needs."""

    report: ReportFilter = ReportFilter()
    min_frames: int = 2

    def __post_init__(self) -> None:
        if isinstance(self.min_frames, bool) or not isinstance(self.min_frames, int) or self.min_frames < 1:
            raise InputError(f"min_frames must be an integer >= 1, got {self.min_frames!r}")


def _versions(conn: Connection, flt: ReportFilter) -> list[tuple[str, str]]:
    """The (model, version) pairs whose tracks count: the given version, else each model's newest
    registered version that has tracks."""
    check_model(conn, flt.model, flt.model_version)
    t, m = S.tracks.c, S.models.c
    stmt = sa.select(t.model, t.model_version).distinct()
    if flt.model is not None:
        stmt = stmt.where(t.model == flt.model)
    if flt.model_version is not None:
        stmt = stmt.where(t.model_version == flt.model_version)
    have = set(conn.execute(stmt).all())
    if flt.model_version is not None:
        return sorted(have)
    ranked = conn.execute(
        sa.select(m.model, m.model_version).order_by(m.model, m.created_at.desc(), m.model_version.desc())
    ).all()
    chosen: dict[str, str] = {}
    for model, version in ranked:
        if (model, version) in have and model not in chosen:
            chosen[model] = version
    return sorted(chosen.items())


def _rows(
    conn: Connection,
    tf: TrackFilter,
    versions: list[tuple[str, str]],
    order: str | None = None,
    limit: int = MAX_TRACKS,
) -> list[sa.Row]:
    """The tracks of `versions` that `tf` keeps; with `order` first-seen or frames, the first `limit`
    in that order (descending), else up to `limit` + 1 (so that the caller sees it was too many)."""
    flt, t = tf.report, S.tracks.c
    stmt = sa.select(S.tracks).where(
        sa.or_(*[(t.model == m) & (t.model_version == v) for m, v in versions]), t.frames >= tf.min_frames
    )
    if flt.camera is not None:
        stmt = stmt.where(t.camera == flt.camera)
    if flt.label is not None:
        stmt = stmt.where(t.label == flt.label)
    if flt.until is not None:
        stmt = stmt.where(t.first_seen < naive_utc(flt.until))
    if flt.since is not None:
        stmt = stmt.where(t.last_seen >= naive_utc(flt.since))
    if order == "first-seen":
        return list(conn.execute(stmt.order_by(t.first_seen.desc(), t.track_id.desc()).limit(limit)))
    if order == "frames":
        return list(conn.execute(stmt.order_by(t.frames.desc(), t.track_id.desc()).limit(limit)))
    return list(conn.execute(stmt.limit(limit + 1)))


def _too_many() -> InputError:
    return InputError(
        f"more than {MAX_TRACKS} tracks in the window; narrow it (--since/--until, --camera) or raise "
        "--min-frames"
    )


def _dwell(row: sa.Row) -> float:
    return round((row.last_seen - row.first_seen).total_seconds(), 3)


def tracks(
    catalog: Catalog, tf: TrackFilter | None = None, *, order: str = "first-seen", limit: int = 100
) -> Report:
    """The tracks overlapping the window: newest first, or the longest (dwell) or the most frames first."""
    tf = tf or TrackFilter()
    if order not in ORDERS:
        raise InputError(f"order must be one of {', '.join(ORDERS)}, got {order!r}")
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_TRACKS:
        raise InputError(f"limit must be an integer from 1 to {MAX_TRACKS}, got {limit!r}")
    with engine_of(catalog).connect() as conn:
        versions = _versions(conn, tf.report)
        rows = _rows(conn, tf, versions, order, limit) if versions else []
    if order == "dwell":  # last minus first seen: computed here, the same way on every backend
        if len(rows) > MAX_TRACKS:
            raise _too_many()
        rows.sort(key=lambda r: (_dwell(r), r.track_id), reverse=True)
    columns = [
        "track_id", "camera", "label", "model", "model_version", "first_seen", "last_seen",
        "dwell_s", "frames", "best_frame_id", "best_score",
    ]  # fmt: skip
    out = [
        (
            r.track_id,
            r.camera,
            r.label,
            r.model,
            r.model_version,
            r.first_seen,
            r.last_seen,
            _dwell(r),
            r.frames,
            r.best_frame_id,
            round(float(r.best_score), 4),
        )  # fmt: skip
        for r in rows[:limit]
    ]
    return Report("tracks", columns, out, f"Tracks ({_describe(tf)}), by {order}")


def visitors(catalog: Catalog, tf: TrackFilter | None = None, bucket: str = "hour") -> Report:
    """Per bucket, camera and label: visitors (tracks seen in the bucket), entries (tracks that
    started in it) and the mean dwell seconds of those entries. Buckets outside [since, until) are
    left out; a bucket with no track has no row."""
    tf = tf or TrackFilter()
    check_bucket(bucket)
    flt = tf.report
    with engine_of(catalog).connect() as conn:
        versions = _versions(conn, flt)
        rows = _rows(conn, tf, versions) if versions else []
    if len(rows) > MAX_TRACKS:
        raise _too_many()
    lo = floor_time(naive_utc(flt.since), bucket) if flt.since else None
    hi = naive_utc(flt.until) if flt.until else None
    seen: dict[tuple, int] = defaultdict(int)
    entries: dict[tuple, list[float]] = defaultdict(list)
    step = BUCKET_STEPS[bucket]
    for r in rows:
        start = floor_time(r.first_seen, bucket)
        b = start if lo is None else max(start, lo)
        while b <= r.last_seen and (hi is None or b < hi):
            seen[(b, r.camera, r.label)] += 1
            b += step
        if (lo is None or start >= lo) and (hi is None or r.first_seen < hi):
            entries[(start, r.camera, r.label)].append(_dwell(r))
    out = []
    for key in sorted(seen):
        dwell = entries.get(key, [])
        out.append((*key, seen[key], len(dwell), round(sum(dwell) / len(dwell), 1) if dwell else None))
    columns = [bucket, "camera", "label", "visitors", "entries", "mean_dwell_s"]
    return Report(
        "visitors", columns, out, f"Visitors per {bucket} ({_describe(tf)})", bucket=bucket, by=("camera",)
    )


def track(catalog: Catalog, track_id: int) -> dict | None:
    """One track's row, or None."""
    with engine_of(catalog).connect() as conn:
        row = conn.execute(sa.select(S.tracks).where(S.tracks.c.track_id == track_id)).mappings().first()
    return dict(row) if row else None


def _describe(tf: TrackFilter) -> str:
    return f"{tf.report.describe()}, tracks of {tf.min_frames}+ frames"
