"""Reports over the catalog without writing SQL: counts over time, busy hours, top and latest frames.

Every report reads one model version per model and frame: the version given, or else each model's
newest registered version (models.created_at) that has a result for the frame, the rule of
`Catalog.detections_for`. A replay with a new version therefore never double-counts a frame, and a
frame the replay has not reached yet still counts with the older version.

`frames` is always the number of frames processed (with a result, found something or not), so counts
over time stay honest about empty hours; `detections` is the number of boxes (of `label`, if given).
The queries are SQLAlchemy Core and run the same on SQLite and PostgreSQL (see `_sql`).

`counts` and `hours` read the hourly roll-up `rollup_hours` (kept by the writers, docs/catalog.md)
for whole hours and the raw tables only for partial hours at the ends of the window, so their cost
does not grow with the history; minute buckets, and versions written without a `models` row, count
the raw tables (`exact=True` forces that). `top` and `latest` read the raw tables.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ..catalog import schema as S
from ..catalog.base import Catalog, naive_utc
from ..catalog.versions import (
    ALL,
    NEWEST,
    VERSION,
    one_version_per_model,
    registered_versions,
    rollup_versions_registered,
)
from ..errors import InputError
from ._sql import as_datetime, check_bucket, engine_of, hour_of_day, time_bucket

#: `by` names accepted by `counts` (and the CLI's --by).
GROUPS = ("camera", "label", "model-version")
MAX_LIMIT = 1_000_000


class UnknownModel(InputError):
    """A model or model version the catalog has no record of; the message lists what exists."""


@dataclass(frozen=True)
class ReportFilter:
    """Which frames and detections a report reads. Times are capture times: [since, until)."""

    camera: str | None = None
    label: str | None = None
    model: str | None = None
    model_version: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def describe(self) -> str:
        """The filter in words, for titles."""
        parts = []
        if self.model:
            parts.append(self.model + (f" {self.model_version}" if self.model_version else ""))
        elif self.model_version:
            parts.append(f"version {self.model_version}")
        if self.label:
            parts.append(f"label {self.label}")
        if self.camera:
            parts.append(f"camera {self.camera}")
        if self.since:
            parts.append(f"since {naive_utc(self.since):%Y-%m-%d %H:%M}")
        if self.until:
            parts.append(f"until {naive_utc(self.until):%Y-%m-%d %H:%M}")
        if not self.model_version:
            parts.append("newest version per model")
        return ", ".join(parts)


@dataclass(frozen=True)
class Report:
    """A report's table (like `QueryResult`), and what it is, so that plots and titles can follow."""

    kind: str  # counts | hours | top | latest
    columns: list[str]
    rows: list[tuple]
    title: str
    bucket: str | None = None  # counts: minute | hour | day
    by: tuple[str, ...] = field(default=())  # counts: the group columns

    def as_dicts(self) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, r, strict=True)) for r in self.rows]


# --- building blocks ---------------------------------------------------------------------------------


def check_model(conn: Connection, model: str | None, version: str | None) -> None:
    """UnknownModel naming `model` / `version` and listing what the catalog has."""
    if model is None and version is None:
        return
    known = registered_versions(conn)
    if model is not None and model not in known:
        have = ", ".join(sorted(known)) or "none yet"
        raise UnknownModel(f"no model {model!r} in the catalog (models: {have})")
    if version is None:
        return
    if model is not None:
        if version not in known[model]:
            have = ", ".join(sorted(known[model]))
            raise UnknownModel(f"model {model!r} has no version {version!r} (versions: {have})")
    elif not any(version in vs for vs in known.values()):
        have = "; ".join(f"{m}: {', '.join(sorted(vs))}" for m, vs in sorted(known.items())) or "none yet"
        raise UnknownModel(f"no model has a version {version!r} (versions: {have})")


def version_rule(conn: Connection, flt: ReportFilter) -> list[sa.ColumnElement]:
    """Conditions on `results` that keep one model version per model and frame (see the module doc)."""
    return one_version_per_model(conn, flt.model, flt.model_version)


def frame_conditions(
    flt: ReportFilter, captured_at: sa.ColumnElement | None = None
) -> list[sa.ColumnElement]:
    """Conditions on `frames`: camera and capture time (the frames(camera, captured_at) index), the
    time on `captured_at` when given (a count index's own copy of it)."""
    f = S.frames.c
    ts = f.captured_at if captured_at is None else captured_at
    conds: list[sa.ColumnElement] = []
    if flt.camera is not None:
        conds.append(f.camera == flt.camera)
    if flt.since is not None:
        conds.append(ts >= naive_utc(flt.since))
    if flt.until is not None:
        conds.append(ts < naive_utc(flt.until))
    return conds


def _frames_results() -> sa.FromClause:
    return S.frames.join(S.results, S.results.c.frame_id == S.frames.c.frame_id)


def _with_detections(base: sa.FromClause) -> sa.FromClause:
    r, d = S.results.c, S.detections.c
    return base.join(
        S.detections, (d.frame_id == r.frame_id) & (d.model == r.model) & (d.model_version == r.model_version)
    )


def _check_limit(limit: int) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise InputError(f"limit must be an integer from 1 to {MAX_LIMIT}, got {limit!r}")
    return limit


def _normalize_by(by: Iterable[str]) -> tuple[str, ...]:
    out: list[str] = []
    for g in by:
        name = g.replace("_", "-")
        if name not in GROUPS:
            raise InputError(f"cannot group by {g!r}: use {', '.join(GROUPS)}")
        if name not in out:
            out.append(name)
    return tuple(out)


def _int(v: Any) -> int:
    return int(v or 0)  # PostgreSQL's sum() of an empty group is NULL; of bigints, a Decimal


# --- reports -----------------------------------------------------------------------------------------


def counts(
    catalog: Catalog,
    flt: ReportFilter | None = None,
    bucket: str = "hour",
    by: Sequence[str] = ("camera",),
    *,
    exact: bool = False,
) -> Report:
    """Frames and detections per time bucket, grouped by camera, label and/or model version.

    Columns: the bucket (a naive UTC datetime, named after the bucket), then `camera`, `label`,
    `model` and `model_version` as grouped, then `frames` and `detections`. Grouped by label, each
    bucket lists the labels found (with the frames processed in that bucket and group); a bucket
    where nothing was found shows one row with no label and 0 detections.

    Hour and day buckets are read from the hourly roll-up (`rollup_hours`) where it answers exactly
    (see `_use_rollup`), with the partial hours at the ends of [since, until) counted from the raw
    tables; minute buckets, and `exact=True`, count the raw tables.
    """
    flt = flt or ReportFilter()
    check_bucket(bucket)
    groups = _normalize_by(by)
    engine = engine_of(catalog)
    by_label = "label" in groups
    with engine.connect() as conn:
        check_model(conn, flt.model, flt.model_version)
        totals, per_label = _counts(conn, flt, bucket, groups, exact)
    rows: list[tuple] = []
    for key, (frames_n, dets_n) in totals.items():
        if by_label:
            found = per_label.get(key) or {flt.label: 0}
            rows += [(*key, lab, frames_n, n) for lab, n in sorted(found.items(), key=lambda x: x[0] or "")]
        elif flt.label is not None:
            rows.append((*key, frames_n, sum(per_label.get(key, {}).values())))
        else:
            rows.append((*key, frames_n, dets_n))
    columns = [bucket, *_group_names(groups)]
    if by_label:  # the label goes where --by put it among the group columns: after them, simply
        columns.append("label")
    columns += ["frames", "detections"]
    rows.sort(key=lambda t: tuple("" if v is None else v for v in t[:-2]))
    title = f"Detections per {bucket} ({flt.describe()})"
    return Report("counts", columns, rows, title, bucket=bucket, by=groups)


def _group_names(groups: tuple[str, ...]) -> list[str]:
    names: list[str] = []
    for g in groups:
        if g == "camera":
            names.append("camera")
        elif g == "model-version":
            names += ["model", "model_version"]
    return names


#: (bucket, *group values) -> [frames, detections]; and -> {label: detections}
Totals = dict[tuple, list[int]]
PerLabel = dict[tuple, dict[str | None, int]]


def _counts(
    conn: Connection, flt: ReportFilter, bucket: str, groups: tuple[str, ...], exact: bool
) -> tuple[Totals, PerLabel]:
    """The counts' numbers: from the roll-up for whole hours plus the raw tables for partial ones,
    or all from the raw tables."""
    if exact or not _use_rollup(conn, flt, bucket):
        return _counts_exact(conn, flt, bucket, groups)
    whole, edges = _split_hours(flt)
    totals: Totals = {}
    per_label: PerLabel = defaultdict(dict)
    parts = [_counts_rollup(conn, whole, bucket, groups)] if whole is not None else []
    parts += [_counts_exact(conn, e, bucket, groups) for e in edges]
    for t, pl in parts:
        for key, (nf, nd) in t.items():
            acc = totals.setdefault(key, [0, 0])
            acc[0] += nf
            acc[1] += nd
        for key, labs in pl.items():
            for lab, n in labs.items():
                per_label[key][lab] = per_label[key].get(lab, 0) + n
    return totals, per_label


def _use_rollup(conn: Connection, flt: ReportFilter, bucket: str) -> bool:
    """Whether the roll-up answers exactly: hour or day buckets (minutes are not in it) and, without a
    pinned version, every version of the model(s) with results registered in `models`, since only
    then is the roll-up's newest view the rule of `one_version_per_model` (which counts versions
    written without a models row in its own way)."""
    if bucket == "minute":
        return False
    if flt.since is not None and flt.until is not None and naive_utc(flt.since) >= naive_utc(flt.until):
        return False
    return flt.model_version is not None or rollup_versions_registered(conn, flt.model)


def _floor_hour(ts: datetime) -> datetime:
    return ts.replace(minute=0, second=0, microsecond=0)


def _split_hours(flt: ReportFilter) -> tuple[ReportFilter | None, list[ReportFilter]]:
    """[since, until) as whole hours (None: there are none) and the partial hours at its ends."""
    since = naive_utc(flt.since) if flt.since is not None else None
    until = naive_utc(flt.until) if flt.until is not None else None
    lo = (
        None
        if since is None
        else _floor_hour(since) + (timedelta(hours=1) if since != _floor_hour(since) else timedelta())
    )
    hi = None if until is None else _floor_hour(until)
    if lo is not None and hi is not None and lo > hi:  # inside one hour
        return None, [flt]
    edges = []
    if since is not None and lo != since:
        edges.append(replace(flt, since=since, until=lo))
    if until is not None and hi != until:
        edges.append(replace(flt, since=hi, until=until))
    whole = replace(flt, since=lo, until=hi)
    return (None if lo is not None and lo == hi else whole), edges


def _counts_exact(
    conn: Connection, flt: ReportFilter, bucket: str, groups: tuple[str, ...]
) -> tuple[Totals, PerLabel]:
    """The counts from frames, results and detections (a GROUP BY over every matching row)."""
    f, r, d = S.frames.c, S.results.c, S.detections.c
    b = time_bucket(f.captured_at, bucket, conn.dialect.name).label("bucket")
    gcols: list[sa.ColumnElement] = []
    for g in groups:
        if g == "camera":
            gcols.append(f.camera)
        elif g == "model-version":
            gcols += [r.model, r.model_version]
    where = [*frame_conditions(flt), *version_rule(conn, flt)]
    totals: Totals = {
        (as_datetime(row[0]), *row[1:-2]): [_int(row[-2]), _int(row[-1])]
        for row in conn.execute(
            sa.select(b, *gcols, sa.func.count(sa.distinct(f.frame_id)), sa.func.sum(r.n_detections))
            .select_from(_frames_results())
            .where(*where)
            .group_by(b, *gcols)
        )
    }
    per_label: PerLabel = defaultdict(dict)
    if flt.label is not None or "label" in groups:
        stmt = (
            sa.select(b, *gcols, d.label, sa.func.count())
            .select_from(_with_detections(_frames_results()))
            .where(*where)
            .group_by(b, *gcols, d.label)
        )
        if flt.label is not None:
            stmt = stmt.where(d.label == flt.label)
        for row in conn.execute(stmt):
            per_label[(as_datetime(row[0]), *row[1:-2])][row[-2]] = _int(row[-1])
    return totals, per_label


def _counts_rollup(
    conn: Connection, flt: ReportFilter, bucket: str, groups: tuple[str, ...]
) -> tuple[Totals, PerLabel]:
    """The counts from `rollup_hours` (since/until on whole hours).

    The view is "version" for a pinned version, else "newest". Frames are distinct per group: per
    model version they come from that model's totals rows (one per frame in the newest view), over
    all models from the model "" rows; detections always add up the models' rows."""
    t = S.rollup_hours.c
    b = time_bucket(t.hour, bucket, conn.dialect.name).label("bucket")
    gcols: list[sa.ColumnElement] = []
    for g in groups:
        if g == "camera":
            gcols.append(t.camera)
        elif g == "model-version":
            gcols += [t.model, t.model_version]
    where = [t.view == (VERSION if flt.model_version is not None else NEWEST)]
    if flt.camera is not None:
        where.append(t.camera == flt.camera)
    if flt.since is not None:
        where.append(t.hour >= naive_utc(flt.since))
    if flt.until is not None:
        where.append(t.hour < naive_utc(flt.until))
    if flt.model_version is not None:
        where.append(t.model_version == flt.model_version)
    per_model = [t.model != ALL] + ([t.model == flt.model] if flt.model is not None else [])
    if flt.model is not None or "model-version" in groups:
        stmt = sa.select(b, *gcols, sa.func.sum(t.frames), sa.func.sum(t.detections)).where(
            *where, *per_model, t.label == ALL
        )
    else:
        all_models = t.model == ALL
        stmt = sa.select(
            b,
            *gcols,
            sa.func.sum(sa.case((all_models, t.frames), else_=0)),
            sa.func.sum(sa.case((all_models, 0), else_=t.detections)),
        ).where(*where, t.label == ALL)
    totals: Totals = {
        (as_datetime(row[0]), *row[1:-2]): [_int(row[-2]), _int(row[-1])]
        for row in conn.execute(stmt.group_by(b, *gcols))
    }
    per_label: PerLabel = defaultdict(dict)
    if flt.label is not None or "label" in groups:
        stmt = (
            sa.select(b, *gcols, t.label, sa.func.sum(t.detections))
            .where(*where, *per_model, t.label != ALL)
            .group_by(b, *gcols, t.label)
        )
        if flt.label is not None:
            stmt = stmt.where(t.label == flt.label)
        for row in conn.execute(stmt):
            per_label[(as_datetime(row[0]), *row[1:-2])][row[-2]] = _int(row[-1])
    return totals, per_label


def hours(catalog: Catalog, flt: ReportFilter | None = None, *, exact: bool = False) -> Report:
    """The hour-of-day histogram (UTC, 0-23, every hour present): frames and detections.

    Read from the hourly roll-up where it answers exactly (as `counts`), else (`exact=True` too)
    from the raw tables."""
    flt = flt or ReportFilter()
    engine = engine_of(catalog)
    with engine.connect() as conn:
        check_model(conn, flt.model, flt.model_version)
        if exact or not _use_rollup(conn, flt, "hour"):
            frames_n, dets_n = _hours_exact(conn, flt)
        else:
            frames_n, dets_n = defaultdict(int), defaultdict(int)
            totals, per_label = _counts(conn, flt, "hour", (), exact=False)
            for key, (nf, nd) in totals.items():
                frames_n[key[0].hour] += nf
                dets_n[key[0].hour] += sum(per_label.get(key, {}).values()) if flt.label is not None else nd
    rows = [(hour, frames_n.get(hour, 0), dets_n.get(hour, 0)) for hour in range(24)]
    title = f"Detections by hour of day, UTC ({flt.describe()})"
    return Report("hours", ["hour", "frames", "detections"], rows, title)


def _hours_exact(conn: Connection, flt: ReportFilter) -> tuple[dict[int, int], dict[int, int]]:
    f, r, d = S.frames.c, S.results.c, S.detections.c
    h = hour_of_day(f.captured_at, conn.dialect.name).label("hour")
    frames_n: dict[int, int] = {}
    dets_n: dict[int, int] = {}
    where = [*frame_conditions(flt), *version_rule(conn, flt)]
    for hour, nf, nd in conn.execute(
        sa.select(h, sa.func.count(sa.distinct(f.frame_id)), sa.func.sum(r.n_detections))
        .select_from(_frames_results())
        .where(*where)
        .group_by(h)
    ):
        frames_n[int(hour)], dets_n[int(hour)] = _int(nf), _int(nd)
    if flt.label is not None:
        dets_n = {
            int(hour): _int(n)
            for hour, n in conn.execute(
                sa.select(h, sa.func.count())
                .select_from(_with_detections(_frames_results()))
                .where(*where, d.label == flt.label)
                .group_by(h)
            )
        }
    return frames_n, dets_n


def top(catalog: Catalog, flt: ReportFilter | None = None, limit: int = 10, *, exact: bool = False) -> Report:
    """The `limit` frames with the most matching detections (at least one), most first, the newest
    first among equal counts.

    The answer comes from an index of counts per result: results_top (model, n_detections,
    frame_captured_at, frame_id), or with a label result_labels_top (model, label, n_detections, ...).
    Where a frame counts one result (one model), it is the first `limit` rows of that model's part
    of the index (`_top_by_index`); with several models, the candidate frames come from each model's
    part (`_top_candidates`) instead of a sum per frame over every result; a small camera/time window
    is ranked from the frames index (`_few_frames`). `exact=True` counts over every detection."""
    flt = flt or ReportFilter()
    _check_limit(limit)
    engine = engine_of(catalog)
    f, d = S.frames.c, S.detections.c
    with engine.connect() as conn:
        check_model(conn, flt.model, flt.model_version)
        models, per_frame = _counting_models(conn, flt)
        few = _few_frames(conn, flt, models, limit)
        walk = not exact and models and not few
        if walk and len(models) == per_frame == 1:
            rows = _top_by_index(conn, flt, models[0], limit)
        else:
            rule = version_rule(conn, flt)
            where = [*frame_conditions(flt), *rule]
            if flt.label is None:
                n = sa.func.sum(S.results.c.n_detections)
                src = _frames_results()
            elif exact:
                n = sa.func.count()
                src = _with_detections(_frames_results())
                where.append(d.label == flt.label)
            else:  # the label's boxes per result, counted when they were written
                c = _counts_of(flt)
                n, src = sa.func.sum(c.n), c.source
                where.extend(c.conds)
            stmt = (
                sa.select(f.frame_id, f.camera, f.captured_at, n.label("count"), f.uri)
                .select_from(src)
                .where(*where)
                .group_by(f.frame_id, f.camera, f.captured_at, f.uri)
                .having(n >= 1)
                .order_by(n.desc(), f.captured_at.desc(), f.frame_id.desc())
                .limit(limit)
            )
            if few:  # the window's frames from their index first (else SQLite scans every frame)
                stmt = stmt.where(f.frame_id.in_(sa.select(f.frame_id).where(*frame_conditions(flt))))
            elif walk:
                stmt = stmt.where(
                    f.frame_id.in_(_top_candidates(conn, flt, rule, stmt, limit, models, per_frame))
                )
            rows = conn.execute(stmt).all()
    rows = [(fid, cam, as_datetime(ts), _int(c), uri) for fid, cam, ts, c, uri in rows]
    title = f"Top {limit} frames by detections ({flt.describe()})"
    return Report("top", ["frame_id", "camera", "captured_at", "count", "uri"], rows, title)


def _counting_models(conn: Connection, flt: ReportFilter) -> tuple[list[str], int]:
    """The models whose results count under `flt`, and how many results a frame's count can add up:
    one per model (one per model version when some version has no models row), from the roll-up's
    (model, version) pairs."""
    t = S.rollup_hours.c
    cols = [t.model] if rollup_versions_registered(conn, flt.model) else [t.model, t.model_version]
    pairs = sa.select(*cols).distinct().where(t.view == VERSION, t.model != ALL, t.label == ALL)
    if flt.model is not None:
        pairs = pairs.where(t.model == flt.model)
    if flt.model_version is not None:
        pairs = pairs.where(t.model_version == flt.model_version)
    found = conn.execute(pairs).all()
    return sorted({p[0] for p in found}), max(1, len(found))


def _few_frames(conn: Connection, flt: ReportFilter, models: list[str], limit: int) -> bool:
    """Whether ranking the frames of `flt`'s window (camera, since/until) beats walking results_top:
    a walk passes over about limit * all / window rows to find the window's top, ranking reads the
    window's frames, so the window is few when window ** 2 <= limit * all. Frame counts from the
    roll-up (whole hours around the window: an estimate that picks the plan, never the answer)."""
    if flt.camera is None and flt.since is None and flt.until is None:
        return False
    t = S.rollup_hours.c
    conds = [t.model.in_(models), t.label == (ALL if flt.label is None else flt.label)]
    if flt.model_version is not None:
        conds += [t.view == VERSION, t.model_version == flt.model_version]
    else:
        conds.append(t.view == NEWEST)
    window = []
    if flt.camera is not None:
        window.append(t.camera == flt.camera)
    if flt.since is not None:
        window.append(t.hour >= _floor_hour(naive_utc(flt.since)))
    if flt.until is not None:
        window.append(t.hour < naive_utc(flt.until))
    total, n = conn.execute(
        sa.select(
            sa.func.coalesce(sa.func.sum(t.frames), 0),
            sa.func.coalesce(sa.func.sum(sa.case((sa.and_(*window), t.frames), else_=0)), 0),
        ).where(*conds)
    ).one()
    return _int(n) ** 2 <= limit * _int(total)


def _walk(conn: Connection, flt: ReportFilter, model: str) -> list[sa.ColumnElement]:
    """Conditions on `results` that keep `model`'s results counted under `flt`, written so that the
    planner walks the count index in order: a version is compared as an expression (`|| ''`), else
    SQLite takes results_model_time (model, model_version, processed_at) for the two equalities and
    sorts every result of the version."""
    r = S.results.c
    if flt.model_version is not None:
        return [r.model == model, (r.model_version + "") == flt.model_version]
    return one_version_per_model(conn, model)


@dataclass(frozen=True)
class _Counts:
    """Where a result's count is read: results (all boxes) or result_labels (one label's boxes)."""

    counted: sa.FromClause  # results [JOIN result_labels]
    n: sa.ColumnElement
    captured_at: sa.ColumnElement
    frame_id: sa.ColumnElement
    model: sa.ColumnElement
    conds: tuple[sa.ColumnElement, ...]

    @property
    def source(self) -> sa.FromClause:
        return S.frames.join(self.counted, S.frames.c.frame_id == S.results.c.frame_id)


def _counts_of(flt: ReportFilter) -> _Counts:
    r = S.results.c
    if flt.label is None:
        return _Counts(S.results, r.n_detections, r.frame_captured_at, r.frame_id, r.model, ())
    rl = S.result_labels.c
    counted = S.results.join(
        S.result_labels,
        (rl.frame_id == r.frame_id) & (rl.model == r.model) & (rl.model_version == r.model_version),
    )
    return _Counts(
        counted, rl.n_detections, rl.frame_captured_at, rl.frame_id, rl.model, (rl.label == flt.label,)
    )


def _top_by_index(conn: Connection, flt: ReportFilter, model: str, limit: int) -> list:
    """Top frames when each frame counts one result, of `model`: that result's count (of boxes, or
    of one label's boxes) is the frame's count, so the answer is a walk of the count index from the
    end of the model's part, the time window checked on the index's own copy of the capture time."""
    f = S.frames.c
    c = _counts_of(flt)
    conds = [
        c.model == model,
        *c.conds,
        *_walk(conn, flt, model),
        c.n >= 1,
        *frame_conditions(flt, c.captured_at),
    ]
    return conn.execute(
        sa.select(c.frame_id, f.camera, c.captured_at, c.n, f.uri)
        .select_from(c.source)
        .where(*conds)
        .order_by(c.n.desc(), c.captured_at.desc(), c.frame_id.desc())
        .limit(limit)
    ).all()


def _top_candidates(
    conn: Connection,
    flt: ReportFilter,
    rule: list[sa.ColumnElement],
    stmt: sa.Select,
    limit: int,
    models: list[str],
    per_frame: int,
) -> sa.Select | list[str]:
    """Frames that include the top `limit` by summed counts, from the count index.

    A frame's count adds at most `per_frame` results (`_counting_models`). Seed: the
    `limit * per_frame` results with the highest counts (the best of each model's first
    `limit * per_frame` in the index), which hold at least `limit` frames; T, the `limit`-th best
    count among those frames, is at most the true `limit`-th best count. So every frame of the true
    top has a count >= T, hence a result with a count >= ceil(T / per_frame): those frames (one
    index range per model) are the candidates, and the caller's query ranks them exactly as it ranks
    all frames.
    """
    f = S.frames.c
    c = _counts_of(flt)
    size = limit * per_frame
    best: list[tuple[int, str]] = []
    for model in models:
        best += conn.execute(
            sa.select(c.n, c.frame_id)
            .select_from(c.source)
            .where(c.model == model, *c.conds, *_walk(conn, flt, model), *frame_conditions(flt), c.n >= 1)
            .order_by(c.n.desc())
            .limit(size)
        ).all()
    seed = sorted({fid for _, fid in sorted(best, reverse=True)[:size]})
    if len(best) < size:  # every result that counts is in the seed
        return seed
    ranked = conn.execute(stmt.where(f.frame_id.in_(seed))).all()
    if len(ranked) < limit:  # cannot happen (a frame has at most per_frame results); be safe
        return sa.select(S.results.c.frame_id).where(*rule).correlate(None)
    need = max(1, -(-_int(ranked[-1][3]) // per_frame))
    # the rule's conditions name `results`: in this subquery they bind to its own FROM
    return (
        sa.select(c.frame_id)
        .select_from(c.counted)
        .where(c.model.in_(models), *c.conds, c.n >= need, *rule)
        .correlate(None)
    )


def latest(catalog: Catalog, flt: ReportFilter | None = None, limit: int = 10) -> Report:
    """The `limit` most recently captured frames with a result, newest first, with their counts.

    Two steps, so the newest frames come from the frames(captured_at) index instead of a sort of
    every result: first the frames, then the counts of just those frames.
    """
    flt = flt or ReportFilter()
    _check_limit(limit)
    engine = engine_of(catalog)
    f, r, d = S.frames.c, S.results.c, S.detections.c
    with engine.connect() as conn:
        check_model(conn, flt.model, flt.model_version)
        rule = version_rule(conn, flt)
        has_result = sa.exists().where(r.frame_id == f.frame_id, *rule)
        frames = conn.execute(
            sa.select(f.frame_id, f.camera, f.captured_at, f.uri)
            .where(*frame_conditions(flt), has_result)
            .order_by(f.captured_at.desc(), f.frame_id.desc())
            .limit(limit)
        ).all()
        ids = [row[0] for row in frames]
        if flt.label is None:
            stmt = sa.select(r.frame_id, sa.func.sum(r.n_detections))
        else:
            stmt = sa.select(r.frame_id, sa.func.count(d.label)).select_from(
                S.results.outerjoin(
                    S.detections,
                    (d.frame_id == r.frame_id)
                    & (d.model == r.model)
                    & (d.model_version == r.model_version)
                    & (d.label == flt.label),
                )
            )
        found = (
            dict(conn.execute(stmt.where(r.frame_id.in_(ids), *rule).group_by(r.frame_id)).all())
            if ids
            else {}
        )
    rows = [(fid, cam, as_datetime(ts), _int(found.get(fid)), uri) for fid, cam, ts, uri in frames]
    title = f"Latest {limit} frames ({flt.describe()})"
    return Report("latest", ["frame_id", "camera", "captured_at", "count", "uri"], rows, title)
