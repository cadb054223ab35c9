"""Catalog tables (the contract users write SQL against; see docs/catalog.md) and migrations.

Times are stored as UTC without a zone. Migrations are plain functions keyed by the version they
produce; `schema_version` records each one applied, so opening an older catalog upgrades it in place.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    inspect,
    text,
)
from sqlalchemy.engine import Connection

SCHEMA_VERSION = 6

metadata = MetaData()

frames = Table(
    "frames",
    metadata,
    Column("frame_id", String(64), primary_key=True),
    Column("camera", String(128), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("captured_at", DateTime, nullable=False),
    Column("width", Integer, nullable=False),
    Column("height", Integer, nullable=False),
    Column("bytes", Integer, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("uri", Text, nullable=False),
    Column("topic", String(249)),
    Column("partition", Integer),
    Column("offset", BigInteger),
    Index("frames_camera_time", "camera", "captured_at"),
    Index("frames_time", "captured_at"),
)

models = Table(
    "models",
    metadata,
    Column("model", String(128), nullable=False),
    Column("model_version", String(64), nullable=False),
    Column("params", Text, nullable=False),  # JSON object
    Column("created_at", DateTime, nullable=False),
    PrimaryKeyConstraint("model", "model_version"),
)

results = Table(
    "results",
    metadata,
    Column("frame_id", String(64), nullable=False),
    Column("model", String(128), nullable=False),
    Column("model_version", String(64), nullable=False),
    Column("n_detections", Integer, nullable=False),
    Column("processed_at", DateTime, nullable=False),
    Column("latency_ms", Float, nullable=False),
    # schema 4: a copy of frames.captured_at, so the frames with the most detections, newest first
    # among equal counts, are one walk of the results_top index (added by a migration: nullable).
    # Not named captured_at: `frames JOIN results USING (frame_id)` keeps an unambiguous captured_at
    Column("frame_captured_at", DateTime),
    PrimaryKeyConstraint("frame_id", "model", "model_version"),
    Index("results_model_time", "model", "model_version", "processed_at"),
    Index("results_top", "model", "n_detections", "frame_captured_at", "frame_id"),
)

detections = Table(
    "detections",
    metadata,
    Column("frame_id", String(64), nullable=False),
    Column("model", String(128), nullable=False),
    Column("model_version", String(64), nullable=False),
    Column("label", String(128), nullable=False),
    Column("score", Float, nullable=False),
    Column("x1", Float, nullable=False),
    Column("y1", Float, nullable=False),
    Column("x2", Float, nullable=False),
    Column("y2", Float, nullable=False),
    # schema 6: the track the box belongs to (`worker --track`); NULL when untracked
    Column("track_id", BigInteger),
    Index("detections_frame", "frame_id", "model", "model_version"),
    Index("detections_label", "label"),
    Index(
        "detections_track",
        "track_id",
        sqlite_where=text("track_id IS NOT NULL"),
        postgresql_where=text("track_id IS NOT NULL"),
    ),
)

#: Schema 5: the boxes of each label per result, kept by `write_results` with the detections, so the
#: frames with the most boxes of one label are one walk of result_labels_top (`report top --label`).
result_labels = Table(
    "result_labels",
    metadata,
    Column("frame_id", String(64), nullable=False),
    Column("model", String(128), nullable=False),
    Column("model_version", String(64), nullable=False),
    Column("label", String(128), nullable=False),
    Column("n_detections", Integer, nullable=False),  # boxes of this label (>= 1)
    Column("frame_captured_at", DateTime, nullable=False),  # a copy of frames.captured_at
    PrimaryKeyConstraint("frame_id", "model", "model_version", "label"),
    Index("result_labels_top", "model", "label", "n_detections", "frame_captured_at", "frame_id"),
)

#: Schema 6: one row per track (an object followed across a camera's frames by `worker --track`),
#: kept by `write_results` from the detections it writes, in the same transaction.
tracks = Table(
    "tracks",
    metadata,
    Column("track_id", BigInteger, primary_key=True, autoincrement=False),
    Column("camera", String(128), nullable=False),
    Column("model", String(128), nullable=False),
    Column("model_version", String(64), nullable=False),
    Column("label", String(128), nullable=False),
    Column("first_seen", DateTime, nullable=False),  # capture time of its first and last frame
    Column("last_seen", DateTime, nullable=False),
    Column("frames", Integer, nullable=False),  # frames with a box of the track
    Column("best_frame_id", String(64), nullable=False),  # the frame of its highest-scoring box
    Column("best_score", Float, nullable=False),
    Column("best_x1", Float, nullable=False),
    Column("best_y1", Float, nullable=False),
    Column("best_x2", Float, nullable=False),
    Column("best_y2", Float, nullable=False),
    Index("tracks_camera_time", "camera", "first_seen"),
    Index("tracks_model_time", "model", "model_version", "first_seen"),
)

#: Schema 6: each camera's tracker for one model version, saved with the results it produced (in
#: their transaction), so a restarted worker, or the next owner of the camera's partition, continues
#: the same tracks.
tracker_states = Table(
    "tracker_states",
    metadata,
    Column("camera", String(128), nullable=False),
    Column("model", String(128), nullable=False),
    Column("model_version", String(64), nullable=False),
    Column("state", LargeBinary, nullable=False),
    Column("last_frame_id", String(64), nullable=False),
    Column("last_captured_at", DateTime, nullable=False),
    Column("updated_at", DateTime, nullable=False),
    PrimaryKeyConstraint("camera", "model", "model_version"),
)

#: Schema 6: people enrolled for face identity (`visionlake faces enroll`).
identities = Table(
    "identities",
    metadata,
    Column("name", String(128), primary_key=True),
    Column("created_at", DateTime, nullable=False),
)

#: Schema 6: face embeddings (personal data: see docs/catalog.md). source "enrolled": a photo of an
#: identity (or a named cluster's face); source "seen": a face a face-id worker found in a frame,
#: written with its result (replaced with it), identity NULL while unknown.
face_embeddings = Table(
    "face_embeddings",
    metadata,
    Column("face_id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("source", String(8), nullable=False),
    Column("identity", String(128)),
    Column("frame_id", String(64)),
    Column("model", String(128)),
    Column("model_version", String(64)),
    Column("x1", Float),
    Column("y1", Float),
    Column("x2", Float),
    Column("y2", Float),
    Column("photo", Text),  # enrolled from a photo: its path as given
    Column("captured_at", DateTime, nullable=False),  # the frame's capture time, or the enrolment time
    Column("cluster", Integer),  # unknown faces: the group `faces cluster` put them in
    Column("distance", Float),  # a seen face: its distance to the nearest enrolled face when found
    Column("embedding", LargeBinary, nullable=False),  # float32 little-endian
    Index("face_embeddings_frame", "frame_id", "model", "model_version"),
    Index("face_embeddings_identity", "identity", "source"),
    Index("face_embeddings_time", "source", "captured_at"),
)

replay_cursors = Table(
    "replay_cursors",
    metadata,
    Column("name", String(300), primary_key=True),  # the replay's group name
    Column("captured_at", DateTime, nullable=False),  # last frame done, in (captured_at, frame_id) order
    Column("frame_id", String(64), nullable=False),
    Column("updated_at", DateTime, nullable=False),
)

#: Hourly roll-up of the results, kept by `write_results` in the same transaction (docs/catalog.md).
#: view "version": every result of every model version; view "newest": each model's newest version
#: per frame (the rule of versions.py). label "" is the totals row (frames with a result, sum of
#: n_detections); a label row counts the frames with at least one such box and the boxes. model ""
#: rows count distinct frames over all models (frames only, detections 0): in view "version" per
#: model_version, in view "newest" with model_version "".
rollup_hours = Table(
    "rollup_hours",
    metadata,
    Column("view", String(8), nullable=False),
    Column("model", String(128), nullable=False),
    Column("model_version", String(64), nullable=False),
    Column("label", String(128), nullable=False),
    Column("camera", String(128), nullable=False),
    Column("hour", DateTime, nullable=False),  # capture hour (UTC), the start of the hour
    Column("frames", BigInteger, nullable=False),
    Column("detections", BigInteger, nullable=False),
    PrimaryKeyConstraint("view", "model", "model_version", "label", "camera", "hour"),
    Index("rollup_hours_time", "view", "hour"),
)

schema_version = Table(
    "schema_version",
    metadata,
    Column("version", Integer, primary_key=True),
    Column("applied_at", DateTime, nullable=False),
)

USER_TABLES = (
    "frames",
    "models",
    "results",
    "detections",
    "replay_cursors",
    "rollup_hours",
    "result_labels",
    "tracks",
    "tracker_states",
    "identities",
    "face_embeddings",
)


def _v1(conn: Connection) -> None:
    metadata.create_all(conn)


def _v2(conn: Connection) -> None:
    replay_cursors.create(conn, checkfirst=True)


def _v3(conn: Connection) -> None:
    from .versions import rebuild_rollup  # versions.py imports this module

    rollup_hours.create(conn, checkfirst=True)
    # the index `top` walked in schema 3; schema 4 replaces it with results_top
    conn.execute(text("CREATE INDEX IF NOT EXISTS results_n_detections ON results (n_detections)"))
    rebuild_rollup(conn)  # backfill from frames/results/detections, in the migration's transaction


def _v4(conn: Connection) -> None:
    """results.frame_captured_at, copied from frames, and the results_top index in place of
    results_n_detections."""
    if "frame_captured_at" not in {c["name"] for c in inspect(conn).get_columns("results")}:  # v1 made it?
        kind = DateTime().compile(dialect=conn.dialect)
        conn.execute(text(f"ALTER TABLE results ADD COLUMN frame_captured_at {kind}"))
        conn.execute(
            text(
                "UPDATE results SET frame_captured_at = "
                "(SELECT f.captured_at FROM frames f WHERE f.frame_id = results.frame_id)"
            )
        )
    conn.execute(text("DROP INDEX IF EXISTS results_n_detections"))
    for index in results.indexes:
        if index.name == "results_top":
            index.create(conn, checkfirst=True)


def _v5(conn: Connection) -> None:
    """result_labels, filled from detections (one GROUP BY, in the migration's transaction)."""
    result_labels.create(conn, checkfirst=True)
    conn.execute(text("DELETE FROM result_labels"))  # a rebuild: the same result however often it runs
    conn.execute(
        text(
            "INSERT INTO result_labels "
            "(frame_id, model, model_version, label, n_detections, frame_captured_at) "
            "SELECT d.frame_id, d.model, d.model_version, d.label, count(*), f.captured_at "
            "FROM detections d JOIN frames f ON f.frame_id = d.frame_id "
            "GROUP BY d.frame_id, d.model, d.model_version, d.label, f.captured_at"
        )
    )


def _v6(conn: Connection) -> None:
    """detections.track_id (NULL for every stored box: nothing was tracked before) with a partial
    index, the tracks table, the tracker states, identities and face embeddings."""
    if "track_id" not in {c["name"] for c in inspect(conn).get_columns("detections")}:  # v1 made it?
        kind = BigInteger().compile(dialect=conn.dialect)
        conn.execute(text(f"ALTER TABLE detections ADD COLUMN track_id {kind}"))
    for index in detections.indexes:
        if index.name == "detections_track":
            index.create(conn, checkfirst=True)
    for table in (tracks, tracker_states, identities, face_embeddings):
        table.create(conn, checkfirst=True)


#: version -> migration producing it from version - 1; append, never edit a released one.
MIGRATIONS: dict[int, Callable[[Connection], None]] = {1: _v1, 2: _v2, 3: _v3, 4: _v4, 5: _v5, 6: _v6}
