"""Face identity over a lake: what `visionlake faces ...` runs (enrol, list, remove, who, cluster,
name a cluster, similar faces, forget unknown faces).

The catalog side (tables, one transaction per change) is `catalog.faces`; this module adds the image
work (reading photos and frames, embedding) and the checks that name the bad input. A photo with no
face or several, a corrupt photo, an unknown name and an empty gallery are InputErrors (exit code 2),
raised before anything is written.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..catalog import faces as F
from ..errors import InputError
from ..frames import decode_image
from .cluster import cluster_faces
from .embed import FaceEmbedder
from .enrol import default_face_detector, enrol_photos
from .errors import EmptyGallery
from .match import THRESHOLD, EmbeddingIndex, Gallery, check_name, check_threshold


def _engine(lake: Any) -> Any:
    return lake.catalog.engine


def enrol(lake: Any, name: str, photos: Sequence[str]) -> int:
    """Enrol `photos` (each exactly one face) as `name`; returns the identity's photo count. Every
    photo is checked and embedded before the catalog is touched."""
    name = check_name(name)
    if name == F.UNKNOWN:
        raise InputError(f"{F.UNKNOWN!r} is the label of faces nobody enrolled; choose another name")
    vectors = enrol_photos(photos)
    with _engine(lake).begin() as conn:
        return F.enrol(conn, name, [str(p) for p in photos], vectors)


def identities(lake: Any) -> list[tuple]:
    with _engine(lake).connect() as conn:
        return F.list_identities(conn)


def remove(lake: Any, name: str) -> dict[str, int]:
    with _engine(lake).begin() as conn:
        return F.remove_identity(conn, name)


def gallery(lake: Any, threshold: float = THRESHOLD) -> Gallery:
    """The enrolled people; EmptyGallery when there are none."""
    with _engine(lake).connect() as conn:
        names, vectors = F.gallery_rows(conn)
    if not names:
        raise EmptyGallery("no identities are enrolled: `visionlake faces enroll NAME PHOTO...` first")
    return Gallery(names, vectors, threshold=check_threshold(threshold))


@dataclass(frozen=True)
class FaceInFrame:
    box: tuple[float, float, float, float]
    name: str
    distance: float
    nearest: str


def who(lake: Any, frame_id: str, threshold: float = THRESHOLD) -> tuple[str, list[FaceInFrame]]:
    """The faces in a stored frame, each with the nearest enrolled person (or "unknown") and the
    distance, found now with today's gallery."""
    people = gallery(lake, threshold)
    fid = lake.catalog.resolve_frame_id(frame_id)
    image = decode_image(lake.archive.get(lake.catalog.frame(fid)["uri"]))
    found = default_face_detector().detect(image)
    if not len(found):
        return fid, []
    matches = people.identify(FaceEmbedder().embed(image, found.xyxy))
    return fid, [
        FaceInFrame(tuple(round(float(v), 1) for v in box), m.name, round(m.distance, 4), m.nearest)
        for box, m in zip(found.xyxy, matches, strict=True)
    ]


@dataclass(frozen=True)
class Cluster:
    number: int
    faces: int
    first_seen: datetime
    last_seen: datetime
    cameras: list[str]
    example_frame: str


def cluster(
    lake: Any, since: datetime | None = None, until: datetime | None = None, threshold: float = THRESHOLD
) -> list[Cluster]:
    """Group the unknown faces seen in [since, until) into people (their cluster numbers are kept, so
    `name_cluster` can name one)."""
    with _engine(lake).begin() as conn:
        stored, vectors = F.faces(conn, source=F.SEEN, unknown_only=True, since=since, until=until)
        if not stored:
            F.set_clusters(conn, {})
            return []
        labels = cluster_faces(vectors, check_threshold(threshold))
        F.set_clusters(conn, {f.face_id: int(c) for f, c in zip(stored, labels, strict=True)})
    cameras = _cameras(lake, {f.frame_id for f in stored if f.frame_id})
    out = []
    for c in range(int(labels.max()) + 1):
        members = [f for f, lab in zip(stored, labels, strict=True) if lab == c]
        out.append(
            Cluster(
                c,
                len(members),
                min(f.captured_at for f in members),
                max(f.captured_at for f in members),
                sorted({cameras.get(f.frame_id or "", "?") for f in members}),
                members[len(members) // 2].frame_id or "",
            )
        )
    return out


def _cameras(lake: Any, frame_ids: set[str]) -> dict[str, str]:
    import sqlalchemy as sa

    from ..catalog import schema as S
    from ..catalog.rawsql import chunks

    f = S.frames.c
    out: dict[str, str] = {}
    with _engine(lake).connect() as conn:
        for part in chunks(sorted(frame_ids)):
            out.update(conn.execute(sa.select(f.frame_id, f.camera).where(f.frame_id.in_(part))).all())
    return out


def name_cluster(lake: Any, number: int, name: str) -> dict[str, int]:
    name = check_name(name)
    if name == F.UNKNOWN:
        raise InputError(f"{F.UNKNOWN!r} is the label of faces nobody enrolled; choose another name")
    with _engine(lake).begin() as conn:
        return F.name_cluster(conn, number, name)


def similar(lake: Any, frame_id: str, face: int = 0, limit: int = 10) -> list[tuple[F.StoredFace, float]]:
    """The stored faces nearest to face number `face` (0 = the first, by box order) of a frame that a
    face-id worker processed, nearest first (the face itself excluded)."""
    if limit < 1:
        raise InputError(f"limit must be >= 1, got {limit}")
    fid = lake.catalog.resolve_frame_id(frame_id)
    with _engine(lake).connect() as conn:
        stored, vectors = F.faces(conn, source=F.SEEN)
    mine = [i for i, f in enumerate(stored) if f.frame_id == fid]
    if not mine:
        raise InputError(f"frame {fid} has no stored faces: a face-id worker has not processed it")
    mine.sort(key=lambda i: stored[i].box or (0, 0, 0, 0))
    if not 0 <= face < len(mine):
        raise InputError(f"frame {fid} has {len(mine)} stored face(s): --face must be 0 to {len(mine) - 1}")
    query = mine[face]
    k = min(limit + 1, len(stored))
    idx, dist = EmbeddingIndex(vectors).search(vectors[query : query + 1], k=k)
    return [(stored[i], round(float(d), 4)) for i, d in zip(idx[0], dist[0], strict=True) if i != query][
        :limit
    ]


def forget(lake: Any, before: datetime) -> int:
    """Delete unknown faces' embeddings seen before `before`."""
    with _engine(lake).begin() as conn:
        return F.forget_unknown(conn, before)
