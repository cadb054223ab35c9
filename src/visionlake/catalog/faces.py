"""Face identities and embeddings in the catalog: enrol, list, remove, the gallery, seen faces written
with their results, clusters of unknown faces, retention.

Embeddings are personal data. What is kept: each enrolled photo's embedding (with the photo's path,
not the photo), and for every face a face-id worker found, its embedding with the frame and box. What
`remove_identity` deletes: the identity, its embeddings (enrolled and seen) and its name on stored
boxes, which become "unknown" (their result's per-label counts and roll-up follow). `forget_unknown`
deletes unknown faces' embeddings older than a cutoff.

Every change runs in one transaction: an error leaves the catalog as it was.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ..errors import InputError
from ..types import Detections
from . import schema as S
from .rawsql import chunks
from .versions import update_rollup

ENROLLED, SEEN = "enrolled", "seen"
UNKNOWN = "unknown"


class UnknownName(InputError):
    """A name no identity has; the message lists the enrolled ones."""


@dataclass(frozen=True)
class StoredFace:
    """One stored face embedding and where it came from."""

    face_id: int
    source: str
    identity: str | None
    frame_id: str | None
    model: str | None
    model_version: str | None
    box: tuple[float, float, float, float] | None
    photo: str | None
    captured_at: datetime
    cluster: int | None


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _blob(vector: np.ndarray) -> bytes:
    return np.asarray(vector, dtype="<f4").tobytes()


def _vectors(blobs: Sequence[bytes]) -> np.ndarray:
    if not blobs:
        return np.zeros((0, 0), np.float32)
    return np.stack([np.frombuffer(b, dtype="<f4") for b in blobs]).astype(np.float32)


# --- written with the results -----------------------------------------------------------------------


def replace_seen(conn: Connection, keys: Sequence[tuple[str, str, str]], rows: Sequence[dict]) -> None:
    """The seen faces of these (frame, model, version) results are `rows` from now on (each: frame_id,
    model, model_version, label, x1..y2, captured_at, embedding bytes)."""
    e = S.face_embeddings.c
    conn.execute(
        sa.delete(S.face_embeddings).where(
            e.source == SEEN,
            e.frame_id == sa.bindparam("k_frame"),
            e.model == sa.bindparam("k_model"),
            e.model_version == sa.bindparam("k_version"),
        ),
        [{"k_frame": f, "k_model": m, "k_version": v} for f, m, v in keys],
    )
    if rows:
        conn.execute(
            sa.insert(S.face_embeddings),
            [
                dict(
                    source=SEEN,
                    identity=None if r["label"] == UNKNOWN else r["label"],
                    frame_id=r["frame_id"],
                    model=r["model"],
                    model_version=r["model_version"],
                    x1=r["x1"],
                    y1=r["y1"],
                    x2=r["x2"],
                    y2=r["y2"],
                    photo=None,
                    captured_at=r["captured_at"],
                    cluster=None,
                    distance=r["distance"],
                    embedding=r["embedding"],
                )
                for r in rows
            ],
        )


def seen_rows(batch_rows: Iterable[tuple[tuple[str, str, str], Detections, datetime]]) -> list[dict]:
    """The face_embeddings rows of results whose detections carry embeddings."""
    out = []
    for (fid, model, version), dets, at in batch_rows:
        if dets.embedding is None:
            continue
        dist = dets.distance if dets.distance is not None else [None] * len(dets)
        for box, label, vector, d in zip(dets.xyxy, dets.label, dets.embedding, dist, strict=True):
            x1, y1, x2, y2 = (float(v) for v in box)
            out.append(
                {
                    "frame_id": fid,
                    "model": model,
                    "model_version": version,
                    "label": str(label),
                    "x1": x1,
                    "y1": y1,
                    "x2": x2,
                    "y2": y2,
                    "captured_at": at,
                    "embedding": _blob(vector),
                    "distance": None if d is None or not np.isfinite(d) else float(d),
                }
            )
    return out


def attach_seen(
    conn: Connection, found: dict[str, Detections], model: str, version: str
) -> dict[str, Detections]:
    """Stored detections of `model`/`version` with the embeddings stored beside them, where any are."""
    e = S.face_embeddings.c
    kept: dict[tuple, tuple[bytes, float | None]] = {}
    for chunk in chunks(sorted(found)):
        for fid, x1, y1, x2, y2, blob, dist in conn.execute(
            sa.select(e.frame_id, e.x1, e.y1, e.x2, e.y2, e.embedding, e.distance).where(
                e.source == SEEN, e.frame_id.in_(chunk), e.model == model, e.model_version == version
            )
        ):
            kept[(fid, round(x1, 2), round(y1, 2), round(x2, 2), round(y2, 2))] = (blob, dist)
    if not kept:
        return found
    out = dict(found)
    for fid, dets in found.items():
        faces_ = [kept.get((fid, *(round(float(v), 2) for v in box))) for box in dets.xyxy]
        if len(dets) and all(f is not None for f in faces_):
            dist = np.array([np.inf if f[1] is None else f[1] for f in faces_], np.float32)
            vectors = _vectors([f[0] for f in faces_])
            out[fid] = Detections(dets.xyxy, dets.score, dets.label, dets.track_id, vectors, dist)
    return out


# --- identities -------------------------------------------------------------------------------------


def enrol(conn: Connection, name: str, photos: Sequence[str], embeddings: np.ndarray) -> int:
    """Add `name` (if new) and one enrolled embedding per photo; returns the identity's photo count."""
    i, e = S.identities.c, S.face_embeddings.c
    now = _now()
    if conn.execute(sa.select(i.name).where(i.name == name)).first() is None:
        conn.execute(sa.insert(S.identities).values(name=name, created_at=now))
    conn.execute(
        sa.insert(S.face_embeddings),
        [
            dict(source=ENROLLED, identity=name, photo=str(photo), captured_at=now, embedding=_blob(vector))
            for photo, vector in zip(photos, embeddings, strict=True)
        ],
    )
    return conn.execute(
        sa.select(sa.func.count()).where(e.identity == name, e.source == ENROLLED)
    ).scalar_one()


def gallery_rows(conn: Connection) -> tuple[list[str], np.ndarray]:
    """Every enrolled embedding with its identity's name."""
    e = S.face_embeddings.c
    rows = conn.execute(
        sa.select(e.identity, e.embedding).where(e.source == ENROLLED).order_by(e.identity, e.face_id)
    ).all()
    return [r[0] for r in rows], _vectors([r[1] for r in rows])


def list_identities(conn: Connection) -> list[tuple]:
    """(name, enrolled, created_at, faces seen, first seen, last seen) per identity, by name."""
    i, e = S.identities.c, S.face_embeddings.c
    enrolled = dict(
        conn.execute(
            sa.select(e.identity, sa.func.count()).where(e.source == ENROLLED).group_by(e.identity)
        ).all()
    )
    seen = {
        row[0]: row[1:]
        for row in conn.execute(
            sa.select(e.identity, sa.func.count(), sa.func.min(e.captured_at), sa.func.max(e.captured_at))
            .where(e.source == SEEN, e.identity.is_not(None))
            .group_by(e.identity)
        )
    }
    return [
        (name, enrolled.get(name, 0), created, *seen.get(name, (0, None, None)))
        for name, created in conn.execute(sa.select(i.name, i.created_at).order_by(i.name))
    ]


def check_identity(conn: Connection, name: str) -> None:
    i = S.identities.c
    if conn.execute(sa.select(i.name).where(i.name == name)).first() is None:
        have = ", ".join(conn.execute(sa.select(i.name).order_by(i.name)).scalars()) or "none yet"
        raise UnknownName(f"no identity {name!r} is enrolled (enrolled: {have})")


def remove_identity(conn: Connection, name: str) -> dict[str, int]:
    """Delete `name`, its embeddings, and its name on stored boxes (they become "unknown")."""
    check_identity(conn, name)
    e = S.face_embeddings.c
    seen = conn.execute(
        sa.select(e.frame_id, e.model, e.model_version, e.x1, e.y1, e.x2, e.y2).where(
            e.source == SEEN, e.identity == name
        )
    ).all()
    relabelled = relabel(conn, [tuple(r) for r in seen], name, UNKNOWN)
    deleted = conn.execute(sa.delete(S.face_embeddings).where(e.identity == name)).rowcount
    conn.execute(sa.delete(S.identities).where(S.identities.c.name == name))
    return {"embeddings": deleted, "boxes_relabelled": relabelled}


def relabel(conn: Connection, boxes: Sequence[tuple], old: str, new: str) -> int:
    """Give these stored boxes (frame_id, model, version, x1, y1, x2, y2) labelled `old` the label
    `new`, with result_labels and the roll-up of their results brought along. Returns boxes changed."""
    d, f, r = S.detections.c, S.frames.c, S.results.c
    moving: Counter = Counter()
    for fid, model, version, x1, y1, x2, y2 in boxes:
        moving[(fid, model, version)] += conn.execute(
            sa.select(sa.func.count()).where(*_box(fid, model, version, old, (x1, y1, x2, y2)))
        ).scalar_one()
    keys = sorted(k for k, n in moving.items() if n)
    if not keys:
        return 0
    frames: dict[str, tuple[str, datetime]] = {}
    written: dict[tuple[str, str, str], tuple[int, Counter]] = {}
    for fid, model, version in keys:
        frames[fid] = tuple(conn.execute(sa.select(f.camera, f.captured_at).where(f.frame_id == fid)).one())
        n = conn.execute(
            sa.select(r.n_detections).where(r.frame_id == fid, r.model == model, r.model_version == version)
        ).scalar_one()
        labels = Counter(
            dict(
                conn.execute(
                    sa.select(d.label, sa.func.count())
                    .where(d.frame_id == fid, d.model == model, d.model_version == version)
                    .group_by(d.label)
                ).all()
            )
        )
        labels[old] -= moving[(fid, model, version)]
        labels[new] += moving[(fid, model, version)]
        written[(fid, model, version)] = (n, +labels)
    update_rollup(conn, frames, written)  # reads the stored counts, applies the difference
    changed = 0
    for fid, model, version, x1, y1, x2, y2 in boxes:
        changed += conn.execute(
            sa.update(S.detections).where(*_box(fid, model, version, old, (x1, y1, x2, y2))).values(label=new)
        ).rowcount
    _recount_labels(conn, keys)
    return changed


def _box(fid: str, model: str, version: str, label: str, box: tuple) -> list[sa.ColumnElement]:
    """The stored box of a result with this label and these exact coordinates."""
    d = S.detections.c
    x1, y1, x2, y2 = box
    return [
        d.frame_id == fid, d.model == model, d.model_version == version, d.label == label,
        d.x1 == x1, d.y1 == y1, d.x2 == x2, d.y2 == y2,
    ]  # fmt: skip


def _recount_labels(conn: Connection, keys: Sequence[tuple[str, str, str]]) -> None:
    """result_labels of these results, counted again from their detections."""
    rl, d, f = S.result_labels.c, S.detections.c, S.frames.c
    for fid, model, version in keys:
        conn.execute(
            sa.delete(S.result_labels).where(
                rl.frame_id == fid, rl.model == model, rl.model_version == version
            )
        )
        conn.execute(
            sa.insert(S.result_labels).from_select(
                ["frame_id", "model", "model_version", "label", "n_detections", "frame_captured_at"],
                sa.select(d.frame_id, d.model, d.model_version, d.label, sa.func.count(), f.captured_at)
                .join(S.frames, f.frame_id == d.frame_id)
                .where(d.frame_id == fid, d.model == model, d.model_version == version)
                .group_by(d.frame_id, d.model, d.model_version, d.label, f.captured_at),
            )
        )


# --- unknown faces ----------------------------------------------------------------------------------


def faces(
    conn: Connection,
    *,
    source: str | None = None,
    unknown_only: bool = False,
    since: datetime | None = None,
    until: datetime | None = None,
    cluster: int | None = None,
) -> tuple[list[StoredFace], np.ndarray]:
    """Stored faces (in face_id order) and their embeddings as one matrix."""
    e = S.face_embeddings.c
    stmt = sa.select(S.face_embeddings).order_by(e.face_id)
    if source is not None:
        stmt = stmt.where(e.source == source)
    if unknown_only:
        stmt = stmt.where(e.identity.is_(None))
    if since is not None:
        stmt = stmt.where(e.captured_at >= since.astimezone(UTC).replace(tzinfo=None))
    if until is not None:
        stmt = stmt.where(e.captured_at < until.astimezone(UTC).replace(tzinfo=None))
    if cluster is not None:
        stmt = stmt.where(e.cluster == cluster)
    rows = conn.execute(stmt).mappings().all()
    stored = [
        StoredFace(
            r["face_id"],
            r["source"],
            r["identity"],
            r["frame_id"],
            r["model"],
            r["model_version"],
            None if r["x1"] is None else (r["x1"], r["y1"], r["x2"], r["y2"]),
            r["photo"],
            r["captured_at"],
            r["cluster"],
        )  # fmt: skip
        for r in rows
    ]
    return stored, _vectors([r["embedding"] for r in rows])


def set_clusters(conn: Connection, assignment: dict[int, int]) -> None:
    """face_id -> cluster number, for unknown faces (the previous clustering is forgotten)."""
    e = S.face_embeddings.c
    conn.execute(sa.update(S.face_embeddings).where(e.cluster.is_not(None)).values(cluster=None))
    if assignment:
        conn.execute(
            sa.update(S.face_embeddings)
            .where(e.face_id == sa.bindparam("k_id"))
            .values(cluster=sa.bindparam("k_c")),
            [{"k_id": fid, "k_c": c} for fid, c in assignment.items()],
        )


def name_cluster(conn: Connection, cluster: int, name: str) -> dict[str, int]:
    """The unknown faces of `cluster` are `name`: enrolled as examples of it (so later frames match),
    and their stored boxes relabelled."""
    stored, vectors = faces(conn, source=SEEN, unknown_only=True, cluster=cluster)
    if not stored:
        raise InputError(f"no unknown faces in cluster {cluster}; run `visionlake faces cluster` first")
    e, i = S.face_embeddings.c, S.identities.c
    if conn.execute(sa.select(i.name).where(i.name == name)).first() is None:
        conn.execute(sa.insert(S.identities).values(name=name, created_at=_now()))
    conn.execute(
        sa.insert(S.face_embeddings),
        [
            dict(
                source=ENROLLED,
                identity=name,
                frame_id=f.frame_id,
                model=f.model,
                model_version=f.model_version,
                x1=f.box[0],
                y1=f.box[1],
                x2=f.box[2],
                y2=f.box[3],
                captured_at=f.captured_at,
                embedding=_blob(v),
            )  # fmt: skip
            for f, v in zip(stored, vectors, strict=True)
            if f.box is not None
        ],
    )
    boxes = [(f.frame_id, f.model, f.model_version, *f.box) for f in stored if f.box is not None]
    relabelled = relabel(conn, boxes, UNKNOWN, name)
    conn.execute(
        sa.update(S.face_embeddings)
        .where(e.face_id.in_([f.face_id for f in stored]))
        .values(identity=name, cluster=None)
    )
    return {"faces": len(stored), "boxes_relabelled": relabelled}


def forget_unknown(conn: Connection, before: datetime) -> int:
    """Delete the embeddings of unknown faces seen before `before`; returns how many."""
    e = S.face_embeddings.c
    return conn.execute(
        sa.delete(S.face_embeddings).where(
            e.source == SEEN,
            e.identity.is_(None),
            e.captured_at < before.astimezone(UTC).replace(tzinfo=None),
        )
    ).rowcount
