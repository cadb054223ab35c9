"""The catalog interface and its SQLAlchemy Core implementation shared by SQLite and PostgreSQL.

Idempotent writes are the point: a frame processed twice (a crash before the offset commit, a
rebalance, a re-ingest) leaves one `frames` row, one `results` row per model version and one set of
`detections`, because everything for a batch commits in one transaction keyed on
(frame_id, model, model_version).
"""

from __future__ import annotations

import abc
import json
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from ..errors import (
    AmbiguousFrameId,
    BackendUnavailable,
    CatalogError,
    InputError,
    ModelVersionConflict,
    QueryError,
    UnknownFrame,
)
from ..frames import FrameMeta
from ..limits import DEFAULT_QUERY_MAX_BYTES
from ..types import Detections
from . import schema as S
from .faces import attach_seen, replace_seen, seen_rows
from .rawsql import (
    DELETE_DETECTIONS,
    DELETE_LABELS,
    INSERT_DETECTIONS,
    INSERT_FRAMES,
    INSERT_LABELS,
    UPSERT_RESULTS,
    Raw,
)
from .tracks import tracks_before, update_tracks
from .versions import one_version_per_model, rebuild_rollup, update_rollup

#: The fewest characters of a frame id taken as a prefix (`show 4ac3`).
MIN_PREFIX = 4


def naive_utc(ts: datetime) -> datetime:
    return ts.astimezone(UTC).replace(tzinfo=None) if ts.tzinfo else ts


@dataclass(frozen=True)
class FrameResult:
    """Everything a worker writes for one processed frame."""

    meta: FrameMeta
    nbytes: int
    sha256: str
    uri: str
    topic: str | None
    partition: int | None
    offset: int | None
    model: str
    model_version: str
    detections: Detections
    latency_ms: float
    processed_at: datetime


@dataclass(frozen=True)
class TrackerState:
    """A camera's tracker for one model version, as saved with the results it produced."""

    camera: str
    model: str
    model_version: str
    state: bytes
    last_frame_id: str
    last_captured_at: datetime


@dataclass(frozen=True)
class StoredFrame:
    """A frame as the catalog knows it: enough to read it back from the archive."""

    frame_id: str
    camera: str
    seq: int
    captured_at: datetime  # UTC
    width: int
    height: int
    uri: str


#: Position in the catalog's frame order, (captured_at, frame_id): where an archive replay resumes.
Cursor = tuple[datetime, str]


@dataclass(frozen=True)
class QueryResult:
    columns: list[str]
    rows: list[tuple]
    truncated: bool  # more rows existed than the row cap allowed


def check_query_limits(max_rows: int, max_bytes: int, timeout: float) -> None:
    """The same refusals on every backend (a NaN timeout would never fire on SQLite)."""
    if isinstance(max_rows, bool) or not isinstance(max_rows, int) or max_rows < 0:
        raise QueryError(f"max_rows must be an integer >= 0, got {max_rows!r}")
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1:
        raise QueryError(f"max_bytes must be an integer >= 1, got {max_bytes!r}")
    if not (isinstance(timeout, int | float) and math.isfinite(timeout) and timeout > 0):
        raise QueryError(f"timeout must be a finite number of seconds > 0, got {timeout!r}")


def value_bytes(v: object) -> int:
    """What a result value counts against the byte cap: its data, and at least 8 bytes (a number)."""
    if v is None or isinstance(v, int | float):
        return 8
    if isinstance(v, bytes | bytearray):
        n = len(v)
    elif isinstance(v, str):
        n = len(v) if v.isascii() else len(v.encode("utf-8", "surrogatepass"))
    else:
        n = len(str(v))
    return max(n, 8)


def too_big(max_bytes: int) -> QueryError:
    cap = f"{max_bytes} bytes" + (f" ({max_bytes / 2**20:.4g} MiB)" if max_bytes >= 2**20 else "")
    return QueryError(
        f"query result is larger than the size cap of {cap} and was stopped; select fewer or smaller "
        "values (a LIMIT, substr()), or raise the cap (--max-bytes)"
    )


class ByteBudget:
    """Counts a result's bytes row by row and stops at the cap, before the rows pile up in memory."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.used = 0

    def add(self, row: Sequence[object]) -> None:
        self.used += sum(value_bytes(v) for v in row)
        if self.used > self.max_bytes:
            raise too_big(self.max_bytes)


@dataclass(frozen=True)
class SearchFilter:
    camera: str | None = None
    label: str | None = None
    min_count: int = 1
    since: datetime | None = None
    until: datetime | None = None
    model: str | None = None
    model_version: str | None = None
    limit: int = 100


class Catalog(abc.ABC):
    """Frame metadata, model versions and detections in SQL."""

    url: str

    @abc.abstractmethod
    def ensure_model(self, model: str, version: str, params: dict) -> None:
        """Record a model version; ModelVersionConflict if it exists with other parameters."""

    @abc.abstractmethod
    def write_results(self, batch: Sequence[FrameResult], trackers: Sequence[TrackerState] = ()) -> None:
        """Write frames, results and detections of a batch in one transaction, idempotently, with the
        tracks their boxes are on and the states of the trackers that produced them."""

    @abc.abstractmethod
    def tracker_states(self, model: str, version: str, cameras: Iterable[str]) -> dict[str, TrackerState]:
        """The tracker states saved for a model version, by camera, of those cameras that have one."""

    @abc.abstractmethod
    def existing_results(self, frame_ids: Iterable[str], model: str, version: str) -> dict[str, Detections]:
        """Detections already stored for those frames by that model version."""

    @abc.abstractmethod
    def frame_hashes(self, frame_ids: Iterable[str]) -> dict[str, str]:
        """SHA-256 of the image stored under each of those frame ids that has a row."""

    @abc.abstractmethod
    def frames_after(
        self,
        cursor: Cursor | None,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100,
    ) -> list[StoredFrame]:
        """Frames in (captured_at, frame_id) order after `cursor`, within [since, until]."""

    @abc.abstractmethod
    def replay_cursor(self, name: str) -> Cursor | None:
        """Where the archive replay `name` left off (None: it has not started)."""

    @abc.abstractmethod
    def set_replay_cursor(self, name: str, cursor: Cursor | None) -> None:
        """Record (or, with None, forget) where the archive replay `name` is."""

    @abc.abstractmethod
    def query(
        self,
        sql: str,
        *,
        max_rows: int = 1000,
        timeout: float = 10.0,
        max_bytes: int = DEFAULT_QUERY_MAX_BYTES,
    ) -> QueryResult:
        """Run one read-only statement with a time limit, a row cap and a byte cap.

        Past `max_rows` the result is cut (`truncated`); past `max_bytes` the query is an error
        (QueryError), since a cut at a byte count would hand back a part of a row.
        """

    @abc.abstractmethod
    def search(self, flt: SearchFilter) -> QueryResult: ...

    @abc.abstractmethod
    def frame(self, frame_id: str) -> dict | None: ...

    @abc.abstractmethod
    def frame_ids_starting(self, prefix: str, limit: int = 10) -> list[str]:
        """Up to `limit` frame ids that start with `prefix`, in order."""

    def resolve_frame_id(self, text: str) -> str:
        """The frame id `text` names: an id, or a unique prefix of at least MIN_PREFIX characters
        (as git takes commit ids). Raises UnknownFrame or AmbiguousFrameId, naming the input."""
        if self.frame(text) is not None:
            return text
        if len(text) < MIN_PREFIX:
            raise UnknownFrame(
                f"no frame {text!r} in the catalog {self.url} (a prefix needs {MIN_PREFIX} characters or more)"
            )
        found = self.frame_ids_starting(text, limit=6)
        if not found:
            raise UnknownFrame(f"no frame id starts with {text!r} in the catalog {self.url}")
        if len(found) > 1:
            shown = ", ".join(found[:5]) + (", ..." if len(found) > 5 else "")
            raise AmbiguousFrameId(f"frame id prefix {text!r} is ambiguous: {shown}; give more characters")
        return found[0]

    @abc.abstractmethod
    def detections_for(
        self, frame_id: str, model: str | None = None, model_version: str | None = None
    ) -> list[dict]:
        """A frame's detections, of one model version per model: `model_version` if given, else
        each model's newest version (by registration) that has a result for the frame."""

    @abc.abstractmethod
    def schema_version(self) -> int: ...

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""


class SqlCatalog(Catalog):
    """SQLAlchemy Core implementation; dialect subclasses add connection settings and safe queries."""

    def __init__(self, engine: Engine, url: str) -> None:
        self.engine = engine
        self.url = url
        self.migrate()

    # -- schema ------------------------------------------------------------------------------

    def migrate(self) -> int:
        """Bring the schema to SCHEMA_VERSION; returns the version found before."""
        try:
            with self.engine.begin() as conn:
                self._lock_for_migration(conn)
                found = self._current_version(conn)
                if found > S.SCHEMA_VERSION:
                    raise CatalogError(
                        f"catalog {self.url} has schema version {found}, newer than this visionlake "
                        f"({S.SCHEMA_VERSION}); upgrade visionlake"
                    )
                if found == 0 and not sa.inspect(conn).get_table_names():
                    # an empty database: the tables as they are now, in one go; the migrations
                    # would build the same on no rows, one version after the other (a worker's
                    # first catalog opens twice as fast)
                    S.metadata.create_all(conn, checkfirst=False)
                    now = datetime.now(UTC)
                    conn.execute(
                        sa.insert(S.schema_version),
                        [dict(version=v, applied_at=now) for v in range(1, S.SCHEMA_VERSION + 1)],
                    )
                    return found
                for v in range(found + 1, S.SCHEMA_VERSION + 1):
                    S.MIGRATIONS[v](conn)
                    S.schema_version.create(conn, checkfirst=True)
                    conn.execute(sa.insert(S.schema_version).values(version=v, applied_at=datetime.now(UTC)))
        except sa.exc.OperationalError as e:
            raise BackendUnavailable(f"cannot open catalog {self.url}: {e.orig}") from e
        return found

    def _lock_for_migration(self, conn: Connection) -> None:  # noqa: B027 - dialect hook
        """Serialise concurrent migrations (SQLite: BEGIN IMMEDIATE; PostgreSQL: advisory lock)."""

    @staticmethod
    def _current_version(conn: Connection) -> int:
        if not sa.inspect(conn).has_table("schema_version"):
            return 0
        return conn.execute(sa.select(sa.func.max(S.schema_version.c.version))).scalar() or 0

    def schema_version(self) -> int:
        with self.engine.connect() as conn:
            return self._current_version(conn)

    # -- writes ------------------------------------------------------------------------------

    def _insert(self, table: sa.Table):  # dialect-specific INSERT supporting ON CONFLICT
        raise NotImplementedError

    def ensure_model(self, model: str, version: str, params: dict) -> None:
        text = json.dumps(params, sort_keys=True)
        with self.engine.begin() as conn:
            added = conn.execute(
                self._insert(S.models)
                .values(
                    model=model, model_version=version, params=text, created_at=naive_utc(datetime.now(UTC))
                )
                .on_conflict_do_nothing()
            ).rowcount
            r = S.results.c
            if (
                added
                and conn.execute(
                    sa.select(sa.literal(1)).where(r.model == model, r.model_version == version).limit(1)
                ).first()
            ):  # results written before the version was registered: it now ranks newest
                rebuild_rollup(conn, model)
            stored = conn.execute(
                sa.select(S.models.c.params).where(
                    S.models.c.model == model, S.models.c.model_version == version
                )
            ).scalar_one()
        if json.loads(stored) != json.loads(text):
            raise ModelVersionConflict(
                f"model {model!r} version {version!r} is already recorded with params {stored}, "
                f"not {text}; choose another --version"
            )

    def write_results(self, batch: Sequence[FrameResult], trackers: Sequence[TrackerState] = ()) -> None:
        if not batch:
            return
        frame_rows = {
            r.meta.frame_id: dict(
                frame_id=r.meta.frame_id,
                camera=r.meta.camera,
                seq=r.meta.seq,
                captured_at=naive_utc(r.meta.captured_at),
                width=r.meta.width,
                height=r.meta.height,
                bytes=r.nbytes,
                sha256=r.sha256,
                uri=r.uri,
                topic=r.topic,
                partition=r.partition,
                offset=r.offset,
            )
            for r in batch
        }
        result_rows = {
            (r.meta.frame_id, r.model, r.model_version): dict(
                frame_id=r.meta.frame_id,
                model=r.model,
                model_version=r.model_version,
                n_detections=len(r.detections),
                processed_at=naive_utc(r.processed_at),
                latency_ms=float(r.latency_ms),
            )
            for r in batch
        }
        det_rows = [
            dict(
                frame_id=fid,
                model=m,
                model_version=v,
                label=str(lab),
                score=float(s),
                x1=float(b[0]),
                y1=float(b[1]),
                x2=float(b[2]),
                y2=float(b[3]),
                track_id=r.detections.track_of(i),
            )
            for (fid, m, v), r in {(r.meta.frame_id, r.model, r.model_version): r for r in batch}.items()
            for i, (b, s, lab) in enumerate(
                zip(r.detections.xyxy, r.detections.score, r.detections.label, strict=True)
            )
        ]  # a frame twice in one batch (re-delivered) keeps its last set of detections only
        with self.engine.begin() as conn:
            raw = Raw(conn)  # hand-written SQL: these statements run for every batch (rawsql.py)
            raw.many(INSERT_FRAMES, [raw.with_times(row, "captured_at") for row in frame_rows.values()])
            labels: dict[tuple[str, str, str], Counter] = {k: Counter() for k in result_rows}
            for row in det_rows:
                labels[(row["frame_id"], row["model"], row["model_version"])][row["label"]] += 1
            stored = update_rollup(  # the hourly roll-up, in this transaction (reads what is stored first)
                conn,
                {fid: (row["camera"], row["captured_at"]) for fid, row in frame_rows.items()},
                {k: (row["n_detections"], labels[k]) for k, row in result_rows.items()},
            )
            for (fid, _, _), row in result_rows.items():  # the stored frame's time (a frame row wins)
                row["frame_captured_at"] = (
                    stored.frames[fid][1] if fid in stored.frames else frame_rows[fid]["captured_at"]
                )
            raw.many(
                UPSERT_RESULTS,
                [raw.with_times(row, "processed_at", "frame_captured_at") for row in result_rows.values()],
            )
            # Only a result stored before has boxes (and per-label counts) to replace: they are only
            # ever written with it, in this transaction. A first write (the usual case) skips the
            # deletes and the read of the tracks its boxes were on.
            replaced = [k for k in result_rows if k in stored.results]
            before = tracks_before(conn, replaced)  # the tracks of the boxes about to go
            keys = [{"k_frame": f, "k_model": m, "k_version": v} for f, m, v in replaced]
            raw.many(DELETE_DETECTIONS, keys)  # one prepared DELETE, executed for every key
            raw.many(DELETE_LABELS, keys)
            raw.many(INSERT_DETECTIONS, det_rows)
            raw.many(
                INSERT_LABELS,
                [
                    dict(
                        frame_id=k[0],
                        model=k[1],
                        model_version=k[2],
                        label=label,
                        n_detections=n,
                        frame_captured_at=raw.time(result_rows[k]["frame_captured_at"]),
                    )
                    for k, per_label in labels.items()
                    for label, n in sorted(per_label.items())
                ],
            )
            by_key = {(r.meta.frame_id, r.model, r.model_version): r for r in batch}
            embedded = [k for k, r in by_key.items() if r.detections.embedding is not None]
            if embedded:  # the faces a face-id worker found, replaced with their result
                replace_seen(
                    conn,
                    embedded,
                    seen_rows(
                        (k, by_key[k].detections, result_rows[k]["frame_captured_at"]) for k in embedded
                    ),
                )
            if before or any(row["track_id"] is not None for row in det_rows):
                where = {
                    fid: stored.frames.get(fid, (row["camera"], row["captured_at"]))
                    for fid, row in frame_rows.items()
                }
                update_tracks(conn, self._insert, before, det_rows, where)
            if trackers:
                self._save_trackers(conn, trackers)

    def _save_trackers(self, conn: Connection, trackers: Sequence[TrackerState]) -> None:
        ins = self._insert(S.tracker_states)
        now = naive_utc(datetime.now(UTC))
        conn.execute(
            ins.on_conflict_do_update(
                index_elements=["camera", "model", "model_version"],
                set_={
                    k: ins.excluded[k] for k in ("state", "last_frame_id", "last_captured_at", "updated_at")
                },
            ),
            [
                dict(
                    camera=t.camera,
                    model=t.model,
                    model_version=t.model_version,
                    state=t.state,
                    last_frame_id=t.last_frame_id,
                    last_captured_at=naive_utc(t.last_captured_at),
                    updated_at=now,
                )
                for t in {(t.camera, t.model, t.model_version): t for t in trackers}.values()
            ],
        )

    def tracker_states(self, model: str, version: str, cameras: Iterable[str]) -> dict[str, TrackerState]:
        t = S.tracker_states.c
        wanted = sorted(set(cameras))
        if not wanted:
            return {}
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(t.camera, t.state, t.last_frame_id, t.last_captured_at).where(
                    t.model == model, t.model_version == version, t.camera.in_(wanted)
                )
            ).all()
        return {
            cam: TrackerState(cam, model, version, bytes(state), last, at.replace(tzinfo=UTC))
            for cam, state, last, at in rows
        }

    # -- reads -------------------------------------------------------------------------------

    def existing_results(self, frame_ids: Iterable[str], model: str, version: str) -> dict[str, Detections]:
        ids = list(dict.fromkeys(frame_ids))
        if not ids:
            return {}
        d = S.detections.c
        with self.engine.connect() as conn:
            done = {
                fid
                for (fid,) in Raw(conn).rows_in(
                    "SELECT frame_id FROM results WHERE frame_id IN {ids} "
                    "AND model = :model AND model_version = :version",
                    ids,
                    {"model": model, "version": version},
                )
            }
            if not done:
                return {}
            found: dict[str, list[dict]] = {fid: [] for fid in done}
            for row in conn.execute(
                sa.select(d.frame_id, d.label, d.score, d.x1, d.y1, d.x2, d.y2, d.track_id).where(
                    d.frame_id.in_(done), d.model == model, d.model_version == version
                )
            ):
                found[row.frame_id].append(
                    {
                        "label": row.label,
                        "score": row.score,
                        "box": [row.x1, row.y1, row.x2, row.y2],
                        "track_id": row.track_id,
                    }
                )
            out = {fid: Detections.from_list(items) for fid, items in found.items()}
            return attach_seen(conn, out, model, version)

    def frame_hashes(self, frame_ids: Iterable[str]) -> dict[str, str]:
        ids = list(dict.fromkeys(frame_ids))
        if not ids:
            return {}
        with self.engine.connect() as conn:  # hand-written SQL: asked for every batch (rawsql.py)
            return dict(Raw(conn).rows_in("SELECT frame_id, sha256 FROM frames WHERE frame_id IN {ids}", ids))

    def frames_after(
        self,
        cursor: Cursor | None,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100,
    ) -> list[StoredFrame]:
        f = S.frames.c
        stmt = sa.select(f.frame_id, f.camera, f.seq, f.captured_at, f.width, f.height, f.uri)
        if cursor is not None:
            stmt = stmt.where(
                sa.tuple_(f.captured_at, f.frame_id) > sa.tuple_(naive_utc(cursor[0]), cursor[1])
            )
        if since is not None:
            stmt = stmt.where(f.captured_at >= naive_utc(since))
        if until is not None:
            stmt = stmt.where(f.captured_at <= naive_utc(until))
        stmt = stmt.order_by(f.captured_at, f.frame_id).limit(limit)
        with self.engine.connect() as conn:
            return [
                StoredFrame(fid, cam, seq, ts.replace(tzinfo=UTC), w, h, uri)
                for fid, cam, seq, ts, w, h, uri in conn.execute(stmt)
            ]

    def replay_cursor(self, name: str) -> Cursor | None:
        c = S.replay_cursors.c
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(c.captured_at, c.frame_id).where(c.name == name)).first()
        return (row[0].replace(tzinfo=UTC), row[1]) if row else None

    def set_replay_cursor(self, name: str, cursor: Cursor | None) -> None:
        t = S.replay_cursors
        with self.engine.begin() as conn:
            conn.execute(sa.delete(t).where(t.c.name == name))
            if cursor is not None:
                conn.execute(
                    sa.insert(t).values(
                        name=name,
                        captured_at=naive_utc(cursor[0]),
                        frame_id=cursor[1],
                        updated_at=naive_utc(datetime.now(UTC)),
                    )
                )

    def search(self, flt: SearchFilter) -> QueryResult:
        f, r, d = S.frames.c, S.results.c, S.detections.c
        if flt.min_count < 0:
            raise InputError(f"--min-count must be >= 0, got {flt.min_count}")
        if flt.label is None and flt.model is None:
            stmt = sa.select(f.frame_id, f.camera, f.captured_at, f.width, f.height, f.uri)
        else:
            count = sa.func.count(d.label)
            join_on = sa.and_(
                d.frame_id == r.frame_id, d.model == r.model, d.model_version == r.model_version
            )
            if flt.label is not None:
                join_on = sa.and_(join_on, d.label == flt.label)
            stmt = (
                sa.select(
                    f.frame_id, f.camera, f.captured_at, r.model, r.model_version, count.label("count"), f.uri
                )
                .join(S.results, r.frame_id == f.frame_id)
                .outerjoin(S.detections, join_on)
                .group_by(f.frame_id, f.camera, f.captured_at, r.model, r.model_version, f.uri)
                .having(count >= flt.min_count)
            )
        with self.engine.connect() as conn:
            if flt.label is not None or flt.model is not None:  # one version per model: no frame twice
                stmt = stmt.where(*one_version_per_model(conn, flt.model, flt.model_version))
            return self._search(conn, stmt, flt)

    def _search(self, conn: Connection, stmt: sa.Select, flt: SearchFilter) -> QueryResult:
        f = S.frames.c
        if flt.camera is not None:
            stmt = stmt.where(f.camera == flt.camera)
        if flt.since is not None:
            stmt = stmt.where(f.captured_at >= naive_utc(flt.since))
        if flt.until is not None:
            stmt = stmt.where(f.captured_at < naive_utc(flt.until))
        stmt = stmt.order_by(f.captured_at, f.frame_id).limit(flt.limit + 1)
        res = conn.execute(stmt)
        rows = [tuple(row) for row in res]
        return QueryResult(list(res.keys()), rows[: flt.limit], len(rows) > flt.limit)

    def frame(self, frame_id: str) -> dict | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(S.frames).where(S.frames.c.frame_id == frame_id)).mappings().first()
        return dict(row) if row else None

    def frame_ids_starting(self, prefix: str, limit: int = 10) -> list[str]:
        f = S.frames.c
        stmt = sa.select(f.frame_id).where(f.frame_id.startswith(prefix, autoescape=True))
        with self.engine.connect() as conn:
            return list(conn.execute(stmt.order_by(f.frame_id).limit(limit)).scalars())

    def detections_for(
        self, frame_id: str, model: str | None = None, model_version: str | None = None
    ) -> list[dict]:
        d, r = S.detections.c, S.results.c
        with self.engine.connect() as conn:
            chosen = conn.execute(
                sa.select(r.model, r.model_version).where(
                    r.frame_id == frame_id, *one_version_per_model(conn, model, model_version)
                )
            ).all()
            if not chosen:
                return []
            stmt = sa.select(S.detections).where(
                d.frame_id == frame_id,
                sa.or_(*[(d.model == mod) & (d.model_version == ver) for mod, ver in chosen]),
            )
            return [
                dict(row)
                for row in conn.execute(stmt.order_by(d.model, d.model_version, d.score.desc())).mappings()
            ]

    def counts(self) -> dict[str, list[tuple]]:
        """Summary tables for `status` and the demo."""
        f, r = S.frames.c, S.results.c
        with self.engine.connect() as conn:
            cameras = conn.execute(
                sa.select(f.camera, sa.func.count(), sa.func.min(f.captured_at), sa.func.max(f.captured_at))
                .group_by(f.camera)
                .order_by(f.camera)
            ).all()
            per_model = conn.execute(
                sa.select(r.model, r.model_version, sa.func.count(), sa.func.sum(r.n_detections))
                .group_by(r.model, r.model_version)
                .order_by(r.model, r.model_version)
            ).all()
            per_camera_model = conn.execute(
                sa.select(f.camera, r.model, r.model_version, sa.func.count(), sa.func.sum(r.n_detections))
                .join(S.results, r.frame_id == f.frame_id)
                .group_by(f.camera, r.model, r.model_version)
                .order_by(f.camera, r.model, r.model_version)
            ).all()
        return {
            "cameras": [tuple(x) for x in cameras],
            "models": [tuple(x) for x in per_model],
            "camera_models": [tuple(x) for x in per_camera_model],
        }

    def close(self) -> None:
        self.engine.dispose()
