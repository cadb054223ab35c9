"""One model version per model and frame: the rule `show`, `search`, the reports and the dashboard share.

A replay writes a new version's results beside the old ones. Whoever reads them without naming a
version gets, for each frame, each model's newest registered version (models.created_at) that has a
result for that frame, so nothing is shown or counted twice and frames a replay has not reached yet
still count with the older version.
"""

from __future__ import annotations

from collections import defaultdict

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from . import schema as S


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
    newer = S.results.alias("newer")
    n = newer.c

    def no_newer(name: str, versions: list[str]) -> sa.ColumnElement:
        return ~sa.exists().where(n.frame_id == r.frame_id, n.model == name, n.model_version.in_(versions))

    alts: list[sa.ColumnElement] = [r.model.not_in(list(multi))]
    for name, versions in multi.items():
        alts.append((r.model == name) & (r.model_version == versions[0]))
        for i, v in enumerate(versions[1:], 1):
            alts.append((r.model == name) & (r.model_version == v) & no_newer(name, versions[:i]))
        # a version with results but no models row (not written through the API): the oldest
        alts.append((r.model == name) & r.model_version.not_in(versions) & no_newer(name, versions))
    conds.append(sa.or_(*alts))
    return conds
