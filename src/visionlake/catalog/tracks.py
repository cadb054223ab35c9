"""The tracks table, kept from the detections `write_results` writes, in its transaction.

A track's row sums up its boxes: camera, model version, label, first and last capture time, the
number of frames and its best box. Most batches only add frames to tracks, so the row is merged with
what the batch adds (O(batch), however long the track). A result written again (a re-delivered
frame) with the same track ids changes nothing; when a rewrite takes boxes away from a track (other
ids than before, or no ids), that track is recomputed from its stored boxes, and deleted when none
are left.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from . import schema as S
from .rawsql import Raw, chunks

_BOX = ("best_x1", "best_y1", "best_x2", "best_y2")


@dataclass
class _Track:
    """A track's summary, being built from boxes."""

    camera: str
    model: str
    model_version: str
    label: str
    first_seen: datetime
    last_seen: datetime
    frames: int = 0
    best: tuple[float, str, tuple[float, float, float, float]] | None = None
    frame_ids: set[str] = field(default_factory=set)

    def add(self, frame_id: str, at: datetime, score: float, box: tuple[float, float, float, float]) -> None:
        self.frame_ids.add(frame_id)
        self.frames += 1
        self.first_seen, self.last_seen = min(self.first_seen, at), max(self.last_seen, at)
        if self.best is None or score > self.best[0]:  # equal scores: the earlier box stays best
            self.best = (score, frame_id, box)

    def row(self, track_id: int) -> dict:
        assert self.best is not None
        score, frame_id, box = self.best
        return dict(
            track_id=track_id,
            camera=self.camera,
            model=self.model,
            model_version=self.model_version,
            label=self.label,
            first_seen=self.first_seen,
            last_seen=self.last_seen,
            frames=self.frames,
            best_frame_id=frame_id,
            best_score=score,
            **dict(zip(_BOX, box, strict=True)),
        )


def tracks_before(conn: Connection, keys: Sequence[tuple[str, str, str]]) -> dict[int, set[str]]:
    """Track id -> frame ids of the boxes stored on a track for these (frame, model, version)
    results: read before they are replaced."""
    wanted = set(keys)
    out: dict[int, set[str]] = defaultdict(set)
    for fid, mod, ver, tid in Raw(conn).rows_in(
        "SELECT frame_id, model, model_version, track_id FROM detections "
        "WHERE frame_id IN {ids} AND track_id IS NOT NULL",
        sorted({k[0] for k in wanted}),
    ):
        if (fid, mod, ver) in wanted:
            out[tid].add(fid)
    return out


def update_tracks(
    conn: Connection,
    insert: Callable[[sa.Table], sa.Insert],
    before: Mapping[int, set[str]],
    boxes: Sequence[Mapping],
    frames: Mapping[str, tuple[str, datetime]],
) -> None:
    """Bring the tracks of `boxes` (detection rows just inserted) and of `before` up to date.

    `insert` is the dialect's INSERT with ON CONFLICT; `frames` gives each frame's stored camera and
    capture time.
    """
    added: dict[int, _Track] = {}
    for b in boxes:
        tid = b["track_id"]
        if tid is None:
            continue
        camera, at = frames[b["frame_id"]]
        track = added.get(tid)
        if track is None:
            track = added[tid] = _Track(camera, b["model"], b["model_version"], b["label"], at, at)
        track.add(b["frame_id"], at, b["score"], (b["x1"], b["y1"], b["x2"], b["y2"]))
    shrunk = {tid for tid, fids in before.items() if fids - added.get(tid, _NO_TRACK).frame_ids}
    merged = [
        _merge(tid, track, before.get(tid, set()), stored)
        for tid, track, stored in _with_stored(conn, {t: a for t, a in added.items() if t not in shrunk})
    ]
    _upsert(conn, insert, merged)
    if shrunk:
        recompute(conn, insert, sorted(shrunk))


_NO_TRACK = _Track("", "", "", "", datetime.min, datetime.min)


def _with_stored(conn: Connection, added: Mapping[int, _Track]) -> Iterable[tuple[int, _Track, dict | None]]:
    """Each added track with its stored row (locked on PostgreSQL: two writers of one track take turns)."""
    t = S.tracks.c
    stored: dict[int, dict] = {}
    for chunk in chunks(sorted(added)):
        for row in conn.execute(
            sa.select(S.tracks).where(t.track_id.in_(chunk)).order_by(t.track_id).with_for_update()
        ).mappings():
            stored[row["track_id"]] = dict(row)
    for tid, track in added.items():
        yield tid, track, stored.get(tid)


def _merge(tid: int, track: _Track, had: set[str], stored: dict | None) -> dict:
    """The stored row plus the batch's boxes; frames the track already had are not counted again."""
    row = track.row(tid)
    if stored is None:
        return row
    row["frames"] = stored["frames"] + len(track.frame_ids - had)
    row["first_seen"] = min(stored["first_seen"], track.first_seen)
    row["last_seen"] = max(stored["last_seen"], track.last_seen)
    if stored["best_score"] >= row["best_score"]:
        row.update(
            best_frame_id=stored["best_frame_id"],
            best_score=stored["best_score"],
            **{k: stored[k] for k in _BOX},
        )
    return row


def recompute(conn: Connection, insert: Callable[[sa.Table], sa.Insert], track_ids: list[int]) -> None:
    """Rebuild these tracks' rows from their stored boxes (in capture order); delete the empty ones."""
    d, f = S.detections.c, S.frames.c
    built: dict[int, _Track] = {}
    for chunk in chunks(track_ids):
        for row in conn.execute(
            sa.select(
                d.track_id,
                d.frame_id,
                d.model,
                d.model_version,
                d.label,
                d.score,
                d.x1,
                d.y1,
                d.x2,
                d.y2,
                f.camera,
                f.captured_at,
            )  # fmt: skip
            .join(S.frames, f.frame_id == d.frame_id)
            .where(d.track_id.in_(chunk))
            .order_by(d.track_id, f.captured_at, d.frame_id)
        ):
            track = built.get(row.track_id)
            if track is None:
                track = built[row.track_id] = _Track(
                    row.camera, row.model, row.model_version, row.label, row.captured_at, row.captured_at
                )
            track.add(row.frame_id, row.captured_at, row.score, (row.x1, row.y1, row.x2, row.y2))
    t = S.tracks.c
    gone = [tid for tid in track_ids if tid not in built]
    for chunk in chunks(gone):
        conn.execute(sa.delete(S.tracks).where(t.track_id.in_(chunk)))
    _upsert(conn, insert, [track.row(tid) for tid, track in built.items()])


def _upsert(conn: Connection, insert: Callable[[sa.Table], sa.Insert], rows: list[dict]) -> None:
    if not rows:
        return
    ins = insert(S.tracks)
    conn.execute(
        ins.on_conflict_do_update(
            index_elements=["track_id"],
            set_={c.name: ins.excluded[c.name] for c in S.tracks.columns if c.name != "track_id"},
        ),
        rows,
    )
