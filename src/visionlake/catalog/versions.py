"""One model version per model and frame: the rule `show`, `search`, the reports and the dashboard share.

A replay writes a new version's results beside the old ones. Whoever reads them without naming a
version gets, for each frame, each model's newest registered version (models.created_at) that has a
result for that frame, so nothing is shown or counted twice and frames a replay has not reached yet
still count with the older version.

The hourly roll-up (`rollup_hours`, docs/catalog.md) keeps the counts of that rule up to date:
`update_rollup` runs inside `write_results`' transaction and moves a frame's contribution from the
version that was newest for it to a newer one; `rebuild_rollup` computes the same rows from the raw
tables (the schema 3 migration's backfill, and the repair when a version that already has results
gets registered).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import NamedTuple

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from . import schema as S
from .rawsql import DELETE_EMPTY_ROLLUP, UPSERT_ROLLUP, Raw


def registered_versions(conn: Connection, model: str | None = None) -> dict[str, list[str]]:
    """Each model's registered versions, newest first (created_at, then version, descending)."""
    m = S.models.c
    stmt = sa.select(m.model, m.model_version).order_by(m.model, m.created_at.desc(), m.model_version.desc())
    if model is not None:
        stmt = stmt.where(m.model == model)
    found: dict[str, list[str]] = defaultdict(list)
    for mod, ver in conn.execute(stmt):
        found[mod].append(ver)
    return dict(found)


def one_version_per_model(
    conn: Connection, model: str | None = None, model_version: str | None = None
) -> list[sa.ColumnElement]:
    """Conditions on `results` that keep one model version per model and frame: `model_version` if
    given, else each model's newest registered version that has a result for the frame.

    With several versions of a model, a result of version v counts when the frame has no result of
    a newer version: a NOT EXISTS on results' primary key (frame_id, model, model_version), one index
    lookup per row. Models with a single version need no check at all.
    """
    r = S.results.c
    conds: list[sa.ColumnElement] = []
    if model is not None:
        conds.append(r.model == model)
    if model_version is not None:
        conds.append(r.model_version == model_version)
        return conds
    multi = {m: vs for m, vs in registered_versions(conn, model).items() if len(vs) > 1}
    if not multi:
        return conds
    conds.append(_newest_of(multi, unlisted=True))
    return conds


def _newest_of(multi: Mapping[str, list[str]], unlisted: bool) -> sa.ColumnElement:
    """A result of a model in `multi` counts when no version listed before its own has a result for
    the frame (`unlisted`: versions missing from the list count when no listed version has one)."""
    r = S.results.c
    newer = S.results.alias("newer")
    n = newer.c

    def no_newer(name: str, versions: list[str]) -> sa.ColumnElement:
        return ~sa.exists().where(n.frame_id == r.frame_id, n.model == name, n.model_version.in_(versions))

    alts: list[sa.ColumnElement] = [r.model.not_in(list(multi))]
    for name, versions in multi.items():
        alts.append((r.model == name) & (r.model_version == versions[0]))
        for i, v in enumerate(versions[1:], 1):
            alts.append((r.model == name) & (r.model_version == v) & no_newer(name, versions[:i]))
        if unlisted:  # a version with results but no models row (not written through the API): the oldest
            alts.append((r.model == name) & r.model_version.not_in(versions) & no_newer(name, versions))
    return sa.or_(*alts)


# --- the hourly roll-up ----------------------------------------------------------------------------

VERSION, NEWEST = "version", "newest"  # rollup_hours.view
ALL = ""  # rollup_hours.model of the distinct-frame rows; label of the totals rows

#: (view, model, model_version, label, camera, hour)
RollupKey = tuple[str, str, str, str, str, datetime]


def hour_start(col: sa.ColumnElement, dialect: str) -> sa.ColumnElement:
    """`col` truncated to its hour, stored the way SQLAlchemy stores a DateTime on this backend."""
    if dialect == "sqlite":
        return sa.func.strftime("%Y-%m-%d %H:00:00.000000", col)
    return sa.func.date_trunc(sa.literal_column("'hour'"), col)


def _rank_keys(conn: Connection, models: Iterable[str]) -> dict[str, dict[str, tuple]]:
    """(1, created_at, version) of each registered version of `models`: larger is newer."""
    names = sorted(set(models))
    out: dict[str, dict[str, tuple]] = defaultdict(dict)
    raw = Raw(conn)
    for mod, ver, created in raw.rows_in(
        "SELECT model, model_version, created_at FROM models WHERE model IN {ids}", names
    ):
        out[mod][ver] = (1, raw.read_time(created), ver)
    return out


def _rank(keys: Mapping[str, Mapping[str, tuple]], model: str, version: str) -> tuple:
    # a version without a models row ranks below every registered one (reports do not use the
    # roll-up's newest view for such a model; see `rollup_versions_registered`)
    return keys.get(model, {}).get(version) or (0, datetime.min, version)


class Stored(NamedTuple):
    """What `update_rollup` found stored for a batch before it was written."""

    frames: dict[str, tuple[str, datetime]]  # frame_id -> (camera, captured_at) of the stored frames
    results: set[tuple[str, str, str]]  # the (frame_id, model, version) written that had a result


def update_rollup(
    conn: Connection,
    frames: Mapping[str, tuple[str, datetime]],
    written: Mapping[tuple[str, str, str], tuple[int, Counter]],
) -> Stored:
    """Bring `rollup_hours` up to date for results about to be written, in the writer's transaction.

    `frames`: frame_id -> (camera, captured_at) of the batch (a stored frame row wins); `written`:
    (frame_id, model, version) -> (n_detections, boxes per label), each key once. Call it after the
    frames are inserted and before the results and detections are replaced: it reads what is stored
    for those frames (locking their rows on PostgreSQL, so that two writers of one frame take turns)
    and applies the difference: a result rewritten replaces its old counts; a version newer (by
    models.created_at, then version) than every version of its model stored for the frame takes the
    frame over in the newest view from the previous newest; an older version changes nothing there.
    Returns the stored (camera, captured_at) of the batch's frames, which the results rows copy, and
    which of the written results were stored already (only those have boxes to replace: detections
    and result_labels are only ever written with their result).

    Runs hand-written SQL (rawsql.py): this is on every batch a worker writes.
    """
    if not written:
        return Stored({}, set())
    raw = Raw(conn)
    lock = "" if raw.sqlite else " FOR UPDATE"  # SQLite: BEGIN IMMEDIATE holds the whole file
    fids = sorted(frames)
    stored_frames: dict[str, tuple[str, datetime]] = {}
    # per frame: model -> version -> (n_detections, labels or None when not read)
    state: dict[str, dict[str, dict[str, tuple[int, Counter | None]]]] = defaultdict(dict)
    for fid, cam, ts in raw.rows_in(  # PostgreSQL: one writer per frame at a time
        "SELECT frame_id, camera, captured_at FROM frames WHERE frame_id IN {ids} ORDER BY frame_id" + lock,
        fids,
    ):
        stored_frames[fid] = (cam, raw.read_time(ts))
    for fid, mod, ver, n in raw.rows_in(
        "SELECT frame_id, model, model_version, n_detections FROM results WHERE frame_id IN {ids}", fids
    ):
        state[fid].setdefault(mod, {})[ver] = (n, None)
    touched = {(fid, mod) for fid, mod, _ in written}
    had = {k for k in written if k[2] in state.get(k[0], {}).get(k[1], ())}
    need = sorted(
        {
            fid
            for fid, mods in state.items()
            for mod, vs in mods.items()
            if (fid, mod) in touched and any(n for n, _ in vs.values())
        }
    )
    labels: dict[tuple[str, str, str], Counter] = defaultdict(Counter)
    for fid, mod, ver, lab, cnt in raw.rows_in(
        "SELECT frame_id, model, model_version, label, count(*) FROM detections "
        "WHERE frame_id IN {ids} GROUP BY frame_id, model, model_version, label",
        need,
    ):
        if (fid, mod) in touched:
            labels[(fid, mod, ver)][lab] = int(cnt)
    for fid, mods in state.items():
        for mod, vs in mods.items():
            if (fid, mod) in touched:
                for ver, (n, _) in vs.items():
                    vs[ver] = (n, labels.get((fid, mod, ver), Counter()))
    # versions are ranked only where a frame has (or gets) two versions of a model: with one, the
    # written version is the newest whatever its rank, and the models table need not be read
    seen: dict[tuple[str, str], set[str]] = defaultdict(set)
    for fid, mod, ver in written:
        seen[(fid, mod)].add(ver)
    ranked = {mod for (fid, mod), vs in seen.items() if len(vs | set(state.get(fid, {}).get(mod, ()))) > 1}
    keys = _rank_keys(conn, ranked) if ranked else {}

    delta: dict[RollupKey, list[int]] = defaultdict(lambda: [0, 0])

    def add(key: tuple[str, str, str, str, datetime], n: int, labs: Counter, sign: int) -> None:
        view, mod, ver, cam, hour = key
        t = delta[(view, mod, ver, ALL, cam, hour)]
        t[0] += sign
        t[1] += sign * n
        for lab, c in labs.items():
            x = delta[(view, mod, ver, lab, cam, hour)]
            x[0] += sign
            x[1] += sign * c

    for fid, mod, ver in sorted(written):
        n, labs = written[(fid, mod, ver)]
        cam, ts = stored_frames.get(fid) or frames[fid]
        hour = ts.replace(minute=0, second=0, microsecond=0)
        per_model = state[fid]
        if not any(per_model.values()):  # the frame's first result: one more frame in the newest view
            delta[(NEWEST, ALL, ALL, ALL, cam, hour)][0] += 1
        if not any(ver in vs for vs in per_model.values()):  # first result of this version name
            delta[(VERSION, ALL, ver, ALL, cam, hour)][0] += 1
        versions = per_model.setdefault(mod, {})
        old = versions.get(ver)
        if old is not None:
            add((VERSION, mod, ver, cam, hour), old[0], old[1] or Counter(), -1)
        add((VERSION, mod, ver, cam, hour), n, labs, +1)
        newest = max(versions, key=lambda v: _rank(keys, mod, v)) if versions else None
        if newest is None or _rank(keys, mod, ver) >= _rank(keys, mod, newest):
            if newest is not None:
                prev = versions[newest]
                add((NEWEST, mod, newest, cam, hour), prev[0], prev[1] or Counter(), -1)
            add((NEWEST, mod, ver, cam, hour), n, labs, +1)
        versions[ver] = (n, labs)
    _apply(raw, delta)
    return Stored(stored_frames, had)


def _apply(raw: Raw, delta: Mapping[RollupKey, list[int]]) -> None:
    rows = [
        dict(
            view=k[0],
            model=k[1],
            model_version=k[2],
            label=k[3],
            camera=k[4],
            hour=raw.time(k[5]),
            frames=v[0],
            detections=v[1],
        )
        for k, v in sorted(delta.items())
        if v[0] or v[1]
    ]
    raw.many(UPSERT_ROLLUP, rows)
    raw.many(  # rows that may have dropped to nothing (a frame moved to a newer version)
        DELETE_EMPTY_ROLLUP,
        [
            {"k_" + c: row[c] for c in ("view", "model", "model_version", "label", "camera", "hour")}
            for row in rows
            if row["frames"] < 0
        ],
    )


def ranked_versions(conn: Connection, model: str | None = None) -> dict[str, list[str]]:
    """Each model's versions with results, newest first, in the roll-up's order: registered versions
    by (created_at, version), then versions without a models row (by version). Reads the roll-up's
    version view, so call it once that is complete."""
    t = S.rollup_hours.c
    stmt = sa.select(t.model, t.model_version).distinct().where(t.view == VERSION, t.model != ALL)
    if model is not None:
        stmt = stmt.where(t.model == model)
    reg = registered_versions(conn, model)
    extra: dict[str, list[str]] = defaultdict(list)
    for mod, ver in conn.execute(stmt):
        if ver not in reg.get(mod, ()):
            extra[mod].append(ver)
    return {m: reg.get(m, []) + sorted(extra.get(m, []), reverse=True) for m in set(reg) | set(extra)}


def rollup_versions_registered(conn: Connection, model: str | None = None) -> bool:
    """Whether every version with results (of `model`) has a models row: then the roll-up's newest
    view is the rule of `one_version_per_model` (which counts unregistered versions differently)."""
    t, m = S.rollup_hours.c, S.models.c
    stmt = sa.select(sa.literal(1)).where(
        t.view == VERSION,
        t.model != ALL,
        t.label == ALL,
        ~sa.exists().where(m.model == t.model, m.model_version == t.model_version),
    )
    if model is not None:
        stmt = stmt.where(t.model == model)
    return conn.execute(stmt.limit(1)).first() is None


def rebuild_rollup(conn: Connection, model: str | None = None) -> None:
    """Compute `rollup_hours` from frames, results and detections: everything, or (with `model`) that
    model's rows of the newest view (after a version with results got registered)."""
    t = S.rollup_hours
    f, r, d = S.frames.c, S.results.c, S.detections.c
    hour = hour_start(f.captured_at, conn.dialect.name)
    base = S.frames.join(S.results, r.frame_id == f.frame_id)
    with_dets = base.join(
        S.detections, (d.frame_id == r.frame_id) & (d.model == r.model) & (d.model_version == r.model_version)
    )
    cols = ["view", "model", "model_version", "label", "camera", "hour", "frames", "detections"]

    def fill(view: str, where: list[sa.ColumnElement]) -> None:
        v = sa.literal(view)
        totals = (
            sa.select(
                v,
                r.model,
                r.model_version,
                sa.literal(ALL),
                f.camera,
                hour,
                sa.func.count(),
                sa.func.sum(r.n_detections),
            )
            .select_from(base)
            .where(*where)
            .group_by(r.model, r.model_version, f.camera, hour)
        )
        per_label = (
            sa.select(
                v,
                r.model,
                r.model_version,
                d.label,
                f.camera,
                hour,
                sa.func.count(sa.distinct(r.frame_id)),
                sa.func.count(),
            )
            .select_from(with_dets)
            .where(*where)
            .group_by(r.model, r.model_version, d.label, f.camera, hour)
        )
        conn.execute(sa.insert(t).from_select(cols, totals))
        conn.execute(sa.insert(t).from_select(cols, per_label))

    c = t.c
    if model is not None:
        conn.execute(sa.delete(t).where(c.view == NEWEST, c.model == model))
        order = ranked_versions(conn, model).get(model, [])
        fill(
            NEWEST,
            [r.model == model, *([_newest_of({model: order}, unlisted=False)] if len(order) > 1 else [])],
        )
        return
    conn.execute(sa.delete(t))
    fill(VERSION, [])
    distinct = sa.func.count(sa.distinct(f.frame_id))
    conn.execute(
        sa.insert(t).from_select(
            cols,
            sa.select(
                sa.literal(VERSION),
                sa.literal(ALL),
                r.model_version,
                sa.literal(ALL),
                f.camera,
                hour,
                distinct,
                sa.literal(0),
            )
            .select_from(base)
            .group_by(r.model_version, f.camera, hour),
        )
    )
    conn.execute(
        sa.insert(t).from_select(
            cols,
            sa.select(
                sa.literal(NEWEST),
                sa.literal(ALL),
                sa.literal(ALL),
                sa.literal(ALL),
                f.camera,
                hour,
                distinct,
                sa.literal(0),
            )
            .select_from(base)
            .group_by(f.camera, hour),
        )
    )
    multi = {m: vs for m, vs in ranked_versions(conn).items() if len(vs) > 1}
    fill(NEWEST, [_newest_of(multi, unlisted=False)] if multi else [])
