"""The catalog contract suite: every backend (SQLite file, real PostgreSQL server) passes the same tests.

`catalog_url` is parametrized over the backends; tests that are about one backend only pin it with
`sqlite_only` / `postgres_only` and live in the sections at the end. Assertions read the database
through an independent connection (`store`: plain sqlite3 or plain psycopg), never through the catalog
code under test.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import socket
import sqlite3
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from media import jpeg, video_frames
from servers.postgres import create_password_role

from visionlake.archive import Archive
from visionlake.catalog import FrameResult, SearchFilter, open_catalog
from visionlake.catalog.schema import SCHEMA_VERSION, USER_TABLES
from visionlake.errors import (
    AmbiguousFrameId,
    BackendUnavailable,
    CatalogError,
    ConfigError,
    InputError,
    MissingDependency,
    ModelVersionConflict,
    QueryError,
    ReadOnlyViolation,
    UnknownFrame,
)
from visionlake.frames import FrameMeta, make_frame_id
from visionlake.types import Detections

T0 = datetime(2026, 11, 3, 8, 0, tzinfo=UTC)
ALL_VERSIONS = [(v,) for v in range(1, SCHEMA_VERSION + 1)]

#: The column contract of DESIGN.md, in order.
DESIGN_COLUMNS = {
    "frames": [
        "frame_id",
        "camera",
        "seq",
        "captured_at",
        "width",
        "height",
        "bytes",
        "sha256",
        "uri",
        "topic",
        "partition",
        "offset",
    ],
    "models": ["model", "model_version", "params", "created_at"],
    "results": [
        "frame_id",
        "model",
        "model_version",
        "n_detections",
        "processed_at",
        "latency_ms",
        "frame_captured_at",
    ],
    "detections": [
        "frame_id",
        "model",
        "model_version",
        "label",
        "score",
        "x1",
        "y1",
        "x2",
        "y2",
        "track_id",
    ],
}

sqlite_only = pytest.mark.parametrize("catalog_url", ["sqlite"], indirect=True)
postgres_only = pytest.mark.parametrize("catalog_url", ["postgres"], indirect=True)


def dets(*items: tuple[str, float, tuple[float, float, float, float]]) -> Detections:
    return Detections.from_list([{"label": lab, "score": s, "box": list(b)} for lab, s, b in items])


def meta(camera: str, seq: int, at: datetime = T0, size: tuple[int, int] = (768, 576)) -> FrameMeta:
    return FrameMeta(make_frame_id(camera, seq, at), camera, seq, at, *size)


def result(
    m: FrameMeta,
    detections: Detections | None = None,
    model: str = "haar-face",
    version: str = "1",
    uri: str | None = None,
    offset: int | None = None,
) -> FrameResult:
    return FrameResult(
        meta=m,
        nbytes=1000 + m.seq,
        sha256=hashlib.sha256(m.frame_id.encode()).hexdigest(),
        uri=uri or f"/archive/{m.camera}/{m.frame_id}.jpg",
        topic="frames",
        partition=0,
        offset=m.seq if offset is None else offset,
        model=model,
        model_version=version,
        detections=detections if detections is not None else Detections.empty(),
        latency_ms=12.5,
        processed_at=m.captured_at + timedelta(seconds=1),
    )


# --- independent access to the catalog's database -----------------------------------------------


def is_postgres(url: str) -> bool:
    return url.startswith(("postgresql://", "postgres://", "postgresql+psycopg://"))


class Store:
    """Reads (and, for set-up, writes) the catalog's database without the catalog code."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.kind = "postgres" if is_postgres(url) else "sqlite"
        self.path = None if self.kind == "postgres" else Path(url.removeprefix("sqlite:///"))
        self._pg = None

    def _pg_conn(self):
        import psycopg

        if self._pg is None:
            self._pg = psycopg.connect(self.url, autocommit=True, connect_timeout=5)
        return self._pg

    def close(self) -> None:
        if self._pg is not None:
            self._pg.close()
            self._pg = None

    def rows(self, sql: str, *args) -> list[tuple]:
        """Run a read with `?` placeholders (translated for PostgreSQL)."""
        if self.kind == "postgres":
            return self._pg_conn().execute(sql.replace("?", "%s"), args).fetchall()
        conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
        try:
            return conn.execute(sql, args).fetchall()
        finally:
            conn.close()

    def execute(self, sql: str) -> None:
        """A committed write behind the catalog's back."""
        if self.kind == "postgres":
            self._pg_conn().execute(sql)
            return
        conn = sqlite3.connect(self.path)
        try:
            conn.execute(sql)
            conn.commit()
        finally:
            conn.close()

    def columns(self, table: str) -> list[str]:
        if self.kind == "postgres":
            got = self.rows(
                "SELECT column_name FROM information_schema.columns "
                "WHERE table_schema = current_schema() AND table_name = ? ORDER BY ordinal_position",
                table,
            )
            return [r[0] for r in got]
        return [c[1] for c in self.rows(f"PRAGMA table_info({table})")]

    def primary_key(self, table: str) -> list[str]:
        if self.kind == "postgres":
            got = self.rows(
                "SELECT a.attname FROM pg_index i JOIN pg_attribute a "
                "ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) "
                "WHERE i.indrelid = ?::regclass AND i.indisprimary "
                "ORDER BY array_position(i.indkey::int2[], a.attnum)",
                table,
            )
            return [r[0] for r in got]
        return [c[1] for c in sorted(self.rows(f"PRAGMA table_info({table})"), key=lambda c: c[5]) if c[5]]

    def snapshot(self) -> tuple:
        """Everything a user query could change: content, schema, settings, server-side objects."""
        if self.kind == "sqlite":
            conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
            try:
                return (
                    list(conn.iterdump()),
                    conn.execute("PRAGMA user_version").fetchone(),
                    conn.execute("PRAGMA journal_mode").fetchone(),
                    conn.execute("PRAGMA page_size").fetchone(),
                )
            finally:
                conn.close()
        tables = self.rows(
            "SELECT table_schema, table_name, table_type FROM information_schema.tables "
            "WHERE table_schema NOT IN ('pg_catalog', 'information_schema') ORDER BY 1, 2"
        )
        content = {
            t: sorted(map(repr, self.rows(f'SELECT * FROM "{s}"."{t}"')))
            for s, t, kind in tables
            if kind == "BASE TABLE"
        }
        return (
            tables,
            content,
            self.rows(
                "SELECT table_name, column_name, data_type, column_default FROM information_schema.columns "
                "WHERE table_schema NOT IN ('pg_catalog', 'information_schema') ORDER BY 1, ordinal_position"
            ),
            self.rows("SELECT schemaname, indexname, indexdef FROM pg_indexes ORDER BY 1, 2"),
            self.rows(
                "SELECT n.nspname, p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
                "WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1, 2"
            ),
            self.rows("SELECT nspname FROM pg_namespace ORDER BY 1"),
            self.rows("SELECT extname FROM pg_extension ORDER BY 1"),
            self.rows("SELECT count(*) FROM pg_largeobject_metadata"),
            self.rows("SELECT setdatabase, setrole, setconfig FROM pg_db_role_setting ORDER BY 1, 2"),
            self.rows("SELECT rolname, rolsuper, rolcanlogin FROM pg_roles ORDER BY 1"),
        )

    @contextmanager
    def uncommitted(self, sql: str) -> Iterator[None]:
        """Hold a transaction that ran `sql` and has not committed, then roll it back."""
        if self.kind == "postgres":
            import psycopg

            conn = psycopg.connect(self.url, connect_timeout=5)
            try:
                conn.execute(sql)
                yield
            finally:
                conn.rollback()
                conn.close()
            return
        writer = sqlite3.connect(self.path, isolation_level=None)
        try:
            writer.execute("BEGIN IMMEDIATE")
            writer.execute(sql)
            yield
        finally:
            writer.execute("ROLLBACK")
            writer.close()


# --- fixtures -------------------------------------------------------------------------------------


@pytest.fixture
def store(catalog_url) -> Iterator[Store]:
    s = Store(catalog_url)
    yield s
    s.close()


@pytest.fixture
def filled(catalog):
    """Three frames of cam-a, two of cam-b; faces by haar-face, people by hog-person."""
    a = [meta("cam-a", i, T0 + timedelta(minutes=i)) for i in range(3)]
    b = [meta("cam-b", i, T0 + timedelta(minutes=10 + i)) for i in range(2)]
    face = ("face", 0.9, (10, 20, 50, 80))
    person = ("person", 0.7, (100, 50, 160, 250))
    catalog.write_results(
        [
            result(a[0], dets()),
            result(a[1], dets(face)),
            result(a[2], dets(face, face)),
            result(b[0], dets(face)),
            result(b[1], dets()),
        ]
    )
    catalog.write_results(
        [
            result(a[0], dets(person), model="hog-person"),
            result(b[1], dets(person, person, person), model="hog-person"),
        ]
    )
    return {"a": a, "b": b}


# --- schema -------------------------------------------------------------------------------------


def test_schema_is_the_newest_version_with_the_design_columns(catalog, store):
    assert catalog.schema_version() == SCHEMA_VERSION
    assert store.rows("SELECT version FROM schema_version ORDER BY 1") == ALL_VERSIONS
    for table, columns in DESIGN_COLUMNS.items():
        assert store.columns(table) == columns, table
    assert store.primary_key("frames") == ["frame_id"]
    assert store.primary_key("results") == ["frame_id", "model", "model_version"]
    assert store.primary_key("models") == ["model", "model_version"]


def test_reopening_keeps_data_and_does_not_migrate_again(catalog_url, store, filled, catalog):
    before = store.snapshot()
    catalog.close()
    for _ in range(3):
        again = open_catalog(catalog_url)
        assert again.schema_version() == SCHEMA_VERSION
        assert again.frame(filled["a"][1].frame_id)["camera"] == "cam-a"
        again.close()
    assert store.rows("SELECT count(*) FROM schema_version") == [(SCHEMA_VERSION,)]
    assert store.snapshot() == before


def _schema(catalog) -> dict:
    """Tables, columns, primary keys and indexes as the database reports them (the table `other`
    left out)."""
    import sqlalchemy as sa

    insp = sa.inspect(catalog.engine)
    return {
        t: (
            [(c["name"], str(c["type"]), c["nullable"]) for c in insp.get_columns(t)],
            insp.get_pk_constraint(t)["constrained_columns"],
            sorted((i["name"], tuple(i["column_names"]), bool(i["unique"])) for i in insp.get_indexes(t)),
        )
        for t in sorted(insp.get_table_names())
        if t != "other"
    }


def test_a_fresh_catalog_has_the_schema_the_migrations_build(catalog_url, store, catalog):
    """An empty database gets the newest tables in one go; a database that holds anything (here an
    unrelated table) is migrated one version after the other. Both end with the same schema."""
    fresh = _schema(catalog)
    catalog.close()
    for table in (*USER_TABLES, "schema_version"):
        store.execute(f"DROP TABLE {table}")
    store.execute("CREATE TABLE other (x INTEGER)")
    migrated = open_catalog(catalog_url)
    try:
        assert _schema(migrated) == fresh
        assert migrated.schema_version() == SCHEMA_VERSION
    finally:
        migrated.close()
    assert store.rows("SELECT version FROM schema_version ORDER BY 1") == ALL_VERSIONS
    assert set(fresh) == {*USER_TABLES, "schema_version"}


def test_newer_schema_is_refused(catalog_url, store, catalog):
    catalog.close()
    store.execute("INSERT INTO schema_version VALUES (99, '2030-01-01 00:00:00')")
    with pytest.raises(CatalogError) as e:
        open_catalog(catalog_url)
    assert "99" in str(e.value) and "upgrade" in str(e.value)


# --- models ---------------------------------------------------------------------------------------


def test_ensure_model_is_idempotent_and_refuses_other_params(catalog, store):
    catalog.ensure_model("haar-face", "1", {"scale_factor": 1.1, "min_neighbors": 5})
    catalog.ensure_model("haar-face", "1", {"min_neighbors": 5, "scale_factor": 1.1})  # same, other order
    catalog.ensure_model("haar-face", "1+abc", {"min_neighbors": 3, "scale_factor": 1.1})
    with pytest.raises(ModelVersionConflict) as e:
        catalog.ensure_model("haar-face", "1", {"scale_factor": 1.1, "min_neighbors": 3})
    assert "haar-face" in str(e.value) and "'1'" in str(e.value)
    stored = store.rows("SELECT model, model_version, params FROM models ORDER BY model_version")
    assert [r[:2] for r in stored] == [("haar-face", "1"), ("haar-face", "1+abc")]
    assert '"min_neighbors": 5' in stored[0][2]  # the first registration is kept


# --- writes ---------------------------------------------------------------------------------------


def test_write_results_stores_frames_results_and_detections(catalog, store, filled):
    a1 = filled["a"][1]
    row = catalog.frame(a1.frame_id)
    assert row["camera"] == "cam-a" and row["seq"] == 1 and (row["width"], row["height"]) == (768, 576)
    assert row["uri"] == f"/archive/cam-a/{a1.frame_id}.jpg" and row["offset"] == 1
    assert row["captured_at"] == (T0 + timedelta(minutes=1)).replace(tzinfo=None)  # UTC, no zone
    assert store.rows("SELECT count(*) FROM frames") == [(5,)]
    assert store.rows("SELECT count(*) FROM results") == [(7,)]
    found = catalog.detections_for(a1.frame_id)
    assert [(d["label"], d["model"], d["model_version"]) for d in found] == [("face", "haar-face", "1")]
    assert (found[0]["x1"], found[0]["y1"], found[0]["x2"], found[0]["y2"]) == (10, 20, 50, 80)
    assert catalog.detections_for(filled["b"][1].frame_id, model="haar-face") == []
    assert len(catalog.detections_for(filled["b"][1].frame_id, model="hog-person")) == 3


def test_times_are_stored_as_utc_without_a_zone(catalog, store):
    plus2 = timezone(timedelta(hours=2))
    m = meta("cam", 1, (T0 + timedelta(hours=5)).astimezone(plus2))  # 15:00+02:00 is 13:00 UTC
    catalog.write_results([result(m)])
    (captured,) = store.rows("SELECT captured_at FROM frames")[0]
    expected = datetime(2026, 11, 3, 13, 0)
    assert str(captured).startswith("2026-11-03 13:00:00")  # SQLite: text; PostgreSQL: timestamp
    assert catalog.frame(m.frame_id)["captured_at"] == expected


def test_a_frame_with_nothing_found_has_a_result_row(catalog, store, filled):
    a0 = filled["a"][0]
    assert store.rows(
        "SELECT n_detections FROM results WHERE frame_id = ? AND model = 'haar-face'", a0.frame_id
    ) == [(0,)]
    assert store.rows(
        "SELECT count(*) FROM detections WHERE frame_id = ? AND model = 'haar-face'", a0.frame_id
    ) == [(0,)]


def test_write_results_same_batch_twice_is_idempotent(catalog, store):
    batch = [result(meta("cam", i), dets(("face", 0.5 + i / 10, (i, i, i + 5, i + 5)))) for i in range(4)]
    catalog.write_results(batch)
    first = {t: sorted(store.rows(f"SELECT * FROM {t}")) for t in ("frames", "results", "detections")}
    catalog.write_results(batch)
    catalog.write_results(list(reversed(batch)))
    assert {t: sorted(store.rows(f"SELECT * FROM {t}")) for t in first} == first
    assert store.rows("SELECT count(*) FROM frames") == [(4,)]
    assert store.rows("SELECT count(*) FROM results") == [(4,)]
    assert store.rows("SELECT count(*) FROM detections") == [(4,)]


def test_rewrite_replaces_detections_of_that_model_version(catalog, store):
    m = meta("cam", 1)
    catalog.write_results([result(m, dets(("face", 0.9, (1, 2, 3, 4)), ("face", 0.8, (5, 6, 7, 8))))])
    catalog.write_results([result(m, dets(("face", 0.95, (1, 2, 3, 4))), version="2")])  # another version
    later = result(
        m, dets(("cat", 0.6, (10, 10, 20, 20)), ("dog", 0.4, (0, 0, 9, 9)), ("dog", 0.3, (1, 1, 2, 2)))
    )
    catalog.write_results([later])
    assert store.rows("SELECT model_version, n_detections FROM results ORDER BY model_version") == [
        ("1", 3),
        ("2", 1),
    ]
    assert store.rows(
        "SELECT label, score FROM detections WHERE model_version = '1' ORDER BY score DESC"
    ) == [
        ("cat", pytest.approx(0.6)),
        ("dog", pytest.approx(0.4)),
        ("dog", pytest.approx(0.3)),
    ]
    assert store.rows("SELECT count(*) FROM detections WHERE model_version = '2'") == [(1,)]
    catalog.write_results([result(m, Detections.empty())])  # found nothing this time
    assert store.rows("SELECT n_detections FROM results WHERE model_version = '1'") == [(0,)]
    assert store.rows("SELECT count(*) FROM detections WHERE model_version = '1'") == [(0,)]
    assert store.rows("SELECT count(*) FROM frames") == [(1,)]


def test_a_frame_twice_in_one_batch_leaves_one_set_of_detections(catalog, store):
    """A retried publish puts the same frame (same deterministic id) twice on the log: one poll can
    return both records, and the worker passes both results to one write_results call."""
    m = meta("cam", 1)
    r = result(m, dets(("face", 0.9, (1, 2, 3, 4))))
    catalog.write_results([r, r])
    assert store.rows("SELECT n_detections FROM results") == [(1,)]
    assert store.rows("SELECT count(*) FROM detections") == [(1,)]
    other = meta("cam", 0)  # sorts before `m`: the last result of `m` still wins
    later = result(m, dets(("cat", 0.5, (1, 1, 2, 2)), ("cat", 0.4, (2, 2, 3, 3))))
    catalog.write_results([r, result(other), later])
    assert store.rows("SELECT n_detections FROM results WHERE frame_id = ?", m.frame_id) == [(2,)]
    assert store.rows("SELECT label, count(*) FROM detections GROUP BY label") == [("cat", 2)]


def test_existing_results_returns_stored_detections(catalog, filled):
    a = filled["a"]
    ids = [a[0].frame_id, a[1].frame_id, a[2].frame_id, "not-processed", a[1].frame_id]
    got = catalog.existing_results(ids, "haar-face", "1")
    assert set(got) == {a[0].frame_id, a[1].frame_id, a[2].frame_id}
    assert all(isinstance(d, Detections) for d in got.values())
    assert len(got[a[0].frame_id]) == 0  # processed, nothing found: present and empty
    d2 = got[a[2].frame_id]
    assert len(d2) == 2 and list(d2.label) == ["face", "face"]
    assert d2.xyxy.tolist() == [[10, 20, 50, 80]] * 2
    assert d2.score == pytest.approx([0.9, 0.9])
    assert catalog.existing_results(ids, "haar-face", "2") == {}
    assert list(catalog.existing_results([a[0].frame_id], "hog-person", "1")[a[0].frame_id].label) == [
        "person"
    ]
    assert catalog.existing_results([], "haar-face", "1") == {}


def test_counts(catalog, filled):
    c = catalog.counts()
    assert [(cam, n) for cam, n, *_ in c["cameras"]] == [("cam-a", 3), ("cam-b", 2)]
    assert [tuple(x) for x in c["models"]] == [("haar-face", "1", 5, 4), ("hog-person", "1", 2, 4)]


# --- search ---------------------------------------------------------------------------------------


@pytest.fixture
def archived(tmp_path, catalog):
    """Frames whose images really are in an archive, as a worker leaves them."""
    archive = Archive(str(tmp_path / "archive"))
    images = video_frames("vtest.avi", 4, size=(320, 240))
    out = []
    for i, image in enumerate(images):
        camera = "door" if i % 2 == 0 else "yard"
        m = meta(camera, i, T0 + timedelta(hours=i), size=(320, 240))
        data = jpeg(image)
        uri = archive.put(archive.key(camera, m.captured_at, m.frame_id), data)
        found = dets(*[("person", 0.8, (0, 0, 10, 30))] * i)
        out.append((m, data, uri))
        catalog.write_results([result(m, found, model="hog-person", uri=uri)])
    return archive, out


def test_search_returns_archive_uris_that_can_be_read(catalog, archived):
    archive, frames = archived
    res = catalog.search(SearchFilter())
    assert res.columns[0] == "frame_id" and "uri" in res.columns and not res.truncated
    uri = res.columns.index("uri")
    assert [r[0] for r in res.rows] == [m.frame_id for m, _, _ in frames]  # in time order
    for row, (_, data, expected) in zip(res.rows, frames, strict=True):
        assert row[uri] == expected
        assert archive.get(row[uri]) == data


def test_search_by_camera(catalog, archived):
    _, frames = archived
    ids = [m.frame_id for m, _, _ in frames]

    def found(**kw) -> list[str]:
        return [r[0] for r in catalog.search(SearchFilter(**kw)).rows]

    assert found(camera="door") == [ids[0], ids[2]]
    assert found(camera="yard") == [ids[1], ids[3]]
    assert found(camera="nowhere") == []


def test_search_by_label_and_count(catalog, archived):
    _, frames = archived
    ids = [m.frame_id for m, _, _ in frames]

    def found(**kw) -> list[str]:
        return [r[0] for r in catalog.search(SearchFilter(**kw)).rows]

    assert found(label="person") == ids[1:]
    assert found(label="person", min_count=2) == ids[2:]
    assert found(label="person", min_count=3) == [ids[3]]
    assert found(label="person", min_count=4) == []
    assert found(label="person", min_count=0) == ids  # processed frames, also those with no person
    assert found(label="face") == []
    assert found(label="person", camera="yard", min_count=2) == [ids[3]]
    res = catalog.search(SearchFilter(label="person", min_count=2))
    count = res.columns.index("count")
    assert [r[count] for r in res.rows] == [2, 3]


def test_search_by_model_and_version(catalog, archived):
    _, frames = archived
    ids = [m.frame_id for m, _, _ in frames]
    catalog.write_results([result(frames[0][0], dets(("face", 0.9, (1, 1, 5, 5))), model="haar-face")])

    def found(**kw) -> list[str]:
        return [r[0] for r in catalog.search(SearchFilter(**kw)).rows]

    assert found(model="haar-face") == [ids[0]]
    assert found(model="hog-person") == ids[1:]
    assert found(model="hog-person", min_count=0) == ids
    assert found(model="hog-person", model_version="1") == ids[1:]
    assert found(model="hog-person", model_version="2") == []
    assert found(model="nope", min_count=0) == []


def test_search_by_time(catalog, archived):
    _, frames = archived
    ids = [m.frame_id for m, _, _ in frames]

    def found(**kw) -> list[str]:
        return [r[0] for r in catalog.search(SearchFilter(**kw)).rows]

    assert found(since=T0 + timedelta(hours=1)) == ids[1:]  # since is inclusive
    assert found(until=T0 + timedelta(hours=2)) == ids[:2]  # until is exclusive
    assert found(since=T0 + timedelta(minutes=30), until=T0 + timedelta(hours=2, minutes=30)) == ids[1:3]
    plus2 = timezone(timedelta(hours=2))
    assert found(since=(T0 + timedelta(hours=3)).astimezone(plus2)) == [ids[3]]  # any zone, same instant
    assert found(since=(T0 + timedelta(hours=3)).replace(tzinfo=None)) == [ids[3]]  # naive is UTC
    assert found(camera="door", since=T0 + timedelta(hours=1)) == [ids[2]]


def test_search_limit_and_bad_count(catalog, archived):
    res = catalog.search(SearchFilter(limit=3))
    assert len(res.rows) == 3 and res.truncated
    assert not catalog.search(SearchFilter(limit=4)).truncated
    with pytest.raises(InputError):
        catalog.search(SearchFilter(label="person", min_count=-1))


# --- read-only user SQL ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sql", "says"),
    [
        ("INSERT INTO models VALUES ('m', '1', '{}', '2026-01-01')", "insert"),
        ("UPDATE frames SET camera = 'x'", "update"),
        ("DELETE FROM frames", "delete"),
        ("DROP TABLE frames", None),
        ("DROP INDEX frames_time", None),
        ("CREATE TABLE evil (a int)", None),
        ("CREATE TEMP TABLE evil (a int)", None),
        ("CREATE VIEW v AS SELECT 1", None),
        ("ALTER TABLE frames ADD COLUMN evil int", None),
        ("VACUUM", None),
        ("REINDEX", None),
        ("WITH x AS (SELECT 1) DELETE FROM frames", "delete"),
    ],
)
def test_query_refuses_writes_with_a_clear_message(catalog, store, filled, sql, says):
    before = store.snapshot()
    with pytest.raises(ReadOnlyViolation) as e:
        catalog.query(sql)
    msg = str(e.value)
    assert "read-only" in msg and "nothing was changed" in msg
    if says:
        assert says in msg.lower()
    assert store.snapshot() == before


@pytest.mark.parametrize(
    "sql",
    ["SELECT 1; SELECT 2", "SELECT count(*) FROM frames; DELETE FROM frames", "SELECT 1;;DROP TABLE results"],
)
def test_query_refuses_two_statements(catalog, store, filled, sql):
    before = store.snapshot()
    with pytest.raises(QueryError) as e:
        catalog.query(sql)
    assert "one statement" in str(e.value)
    assert store.snapshot() == before


@pytest.mark.parametrize("sql", ["SELEC nonsense", "SELECT * FROM nowhere", "", "   "])
def test_query_reports_bad_sql(catalog, sql):
    with pytest.raises(QueryError) as e:
        catalog.query(sql)
    assert str(e.value)


def test_query_allows_reads(catalog, filled):
    res = catalog.query("SELECT camera, count(*) AS n FROM frames GROUP BY camera ORDER BY camera")
    assert res.columns == ["camera", "n"] and res.rows == [("cam-a", 3), ("cam-b", 2)] and not res.truncated
    res = catalog.query(
        "WITH per AS (SELECT frame_id, count(*) AS n FROM detections GROUP BY frame_id) "
        "SELECT f.camera, sum(per.n) FROM frames f JOIN per USING (frame_id) GROUP BY f.camera ORDER BY 1"
    )
    assert res.rows == [("cam-a", 4), ("cam-b", 4)]
    assert all(type(r[1]) is int for r in res.rows)  # not a Decimal from PostgreSQL's numeric sum
    res = catalog.query(
        "SELECT r.model, d.label, count(*) FROM results r JOIN detections d "
        "USING (frame_id, model, model_version) GROUP BY 1, 2 ORDER BY 1"
    )
    assert res.rows == [("haar-face", "face", 4), ("hog-person", "person", 4)]
    res = catalog.query(
        "-- the cameras\nSELECT DISTINCT camera FROM frames WHERE camera LIKE 'cam-%' ORDER BY 1;"
    )
    assert res.rows == [("cam-a",), ("cam-b",)]


def test_query_time_limit(catalog):
    started = time.monotonic()
    with pytest.raises(QueryError) as e:
        catalog.query(
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 1000000000) "
            "SELECT count(*) FROM c",
            timeout=0.5,
        )
    elapsed = time.monotonic() - started
    assert "time limit" in str(e.value) and "0.5" in str(e.value)
    assert 0.4 < elapsed < 5
    assert catalog.query("SELECT 1").rows == [(1,)]  # the catalog still answers


def test_query_row_cap(catalog, filled):
    res = catalog.query("SELECT frame_id FROM frames ORDER BY frame_id", max_rows=2)
    assert len(res.rows) == 2 and res.truncated
    res = catalog.query("SELECT frame_id FROM frames", max_rows=5)
    assert len(res.rows) == 5 and not res.truncated
    started = time.monotonic()
    res = catalog.query(
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT x FROM c", max_rows=100
    )
    assert res.rows == [(i,) for i in range(1, 101)] and res.truncated  # an endless result stops at the cap
    assert time.monotonic() - started < 5  # stopped at the cap, not at the time limit


def test_query_while_a_writer_holds_the_lock(catalog, store, filled):
    """Readers are not blocked by a writer and see the last committed state."""
    with store.uncommitted("DELETE FROM detections"):
        assert catalog.query("SELECT count(*) FROM detections", timeout=2).rows == [(8,)]
    assert catalog.query("SELECT count(*) FROM detections", timeout=2).rows == [(8,)]


# --- several processes --------------------------------------------------------------------------


def _concurrent_writer(url: str, barrier, rounds: int, backwards: bool) -> None:
    """Child process: open the catalog itself (both may create it) and write the same frames as its twin,
    the second one in the opposite order (batches and frames within them), to provoke lock-order trouble."""
    cat = open_catalog(url)
    barrier.wait(60)  # both catalogs are open: start writing together
    cams = ["cam-a", "cam-b"]
    for n in range(rounds):
        batch = [
            result(
                meta(cams[i % 2], i, T0 + timedelta(seconds=i)),
                dets(*[("face", 0.5, (i, i, i + 10, i + 10))] * (i % 3)),
                version=str(1 + n % 2),
            )
            for i in range(24)
        ]
        if backwards:
            batch.reverse()
        for k in range(0, len(batch), 6):
            cat.write_results(batch[k : k + 6])
    cat.close()


def _run_children(target, args_list, timeout: float = 120) -> list[int | None]:
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=target, args=args) for args in args_list]
    for p in procs:
        p.start()
    deadline = time.monotonic() + timeout
    for p in procs:
        p.join(max(0.1, deadline - time.monotonic()))
        if p.is_alive():  # never leave a stuck child behind
            p.kill()
            p.join()
    return [p.exitcode for p in procs]


def test_two_processes_writing_the_same_frames_leave_no_duplicates(catalog_url, store):
    barrier = multiprocessing.get_context("spawn").Barrier(2)
    codes = _run_children(
        _concurrent_writer, [(catalog_url, barrier, 6, False), (catalog_url, barrier, 6, True)]
    )
    assert codes == [0, 0]
    assert store.rows("SELECT count(*), count(DISTINCT frame_id) FROM frames") == [(24, 24)]
    assert store.rows("SELECT count(*) FROM results") == [(48,)]  # 24 frames x 2 versions
    twice = "SELECT 1 FROM results GROUP BY frame_id, model, model_version HAVING count(*) > 1"
    assert store.rows(f"SELECT count(*) FROM ({twice}) AS t") == [(0,)]
    expected = sum(i % 3 for i in range(24)) * 2
    assert store.rows("SELECT count(*) FROM detections") == [(expected,)]
    stored = (
        "SELECT count(*) FROM detections d WHERE d.frame_id = r.frame_id "
        "AND d.model = r.model AND d.model_version = r.model_version"
    )
    assert store.rows(f"SELECT count(*) FROM results r WHERE n_detections != ({stored})") == [(0,)]
    assert store.rows("SELECT count(*) FROM schema_version") == [(SCHEMA_VERSION,)]


def _open_at_once(url: str, barrier) -> None:
    barrier.wait(60)
    cat = open_catalog(url)
    assert cat.schema_version() == SCHEMA_VERSION
    cat.write_results([result(meta("cam", 0))])
    cat.close()


def test_processes_opening_a_fresh_catalog_at_once_migrate_it_once(catalog_url, store):
    n = 2
    barrier = multiprocessing.get_context("spawn").Barrier(n)
    assert _run_children(_open_at_once, [(catalog_url, barrier)] * n) == [0] * n
    assert store.rows("SELECT version FROM schema_version ORDER BY 1") == ALL_VERSIONS
    assert store.rows("SELECT count(*) FROM frames") == [(1,)]
    for table, columns in DESIGN_COLUMNS.items():
        assert store.columns(table) == columns, table


# --- SQLite only ----------------------------------------------------------------------------------


@sqlite_only
def test_sqlite_catalog_is_one_file_and_its_url_and_path_agree(catalog_url, catalog, filled):
    assert Path(catalog_url).is_file()
    assert catalog.url == f"sqlite:///{catalog_url}"
    cat = open_catalog(f"sqlite:///{catalog_url}")
    try:
        assert cat.frame(filled["a"][0].frame_id) is not None
    finally:
        cat.close()


@sqlite_only
@pytest.mark.parametrize(
    ("sql", "says"),
    [
        ("ATTACH DATABASE '{tmp}/evil.db' AS evil", "attach"),
        ("PRAGMA journal_mode=DELETE", "journal_mode"),
        ("PRAGMA user_version=5", "user_version"),
        ("PRAGMA writable_schema=ON", "writable_schema"),
        ("VACUUM INTO '{tmp}/copy.db'", None),
        ("BEGIN IMMEDIATE", None),
        ("CREATE TABLE evil (a)", None),
        ("ALTER TABLE frames ADD COLUMN evil", None),
    ],
)
def test_sqlite_query_refuses_attach_pragmas_and_vacuum_into(tmp_path, catalog, store, filled, sql, says):
    before = store.snapshot()
    with pytest.raises(ReadOnlyViolation) as e:
        catalog.query(sql.replace("{tmp}", str(tmp_path)))
    msg = str(e.value)
    assert "read-only" in msg
    if says:
        assert says in msg.lower()
    assert store.snapshot() == before
    assert not (tmp_path / "evil.db").exists() and not (tmp_path / "copy.db").exists()


@sqlite_only
def test_sqlite_query_allows_read_pragmas(catalog, filled):
    res = catalog.query("PRAGMA table_info(frames)")
    assert [r[1] for r in res.rows] == DESIGN_COLUMNS["frames"]


# --- PostgreSQL only ------------------------------------------------------------------------------


@postgres_only
def test_postgres_url_spellings_open_the_same_database(catalog_url, catalog, filled):
    assert catalog.url == catalog_url  # no password in it: nothing to hide here
    rest = catalog_url.removeprefix("postgresql://")
    for spelling in (f"postgres://{rest}", f"postgresql+psycopg://{rest}", f"{catalog_url}?sslmode=disable"):
        cat = open_catalog(spelling)
        try:
            assert cat.frame(filled["a"][0].frame_id)["camera"] == "cam-a"
            assert cat.url.startswith("postgresql://")
        finally:
            cat.close()


@postgres_only
def test_postgres_column_types(catalog, store):
    types = dict(
        store.rows(
            "SELECT table_name || '.' || column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = current_schema()"
        )
    )
    assert types["frames.captured_at"] == "timestamp without time zone"  # UTC, no zone, as in SQLite
    assert types["results.processed_at"] == "timestamp without time zone"
    assert types["frames.offset"] == "bigint" and types["frames.seq"] == "bigint"
    assert types["detections.score"] == "double precision"
    assert types["models.params"] == "text"


PG_REFUSED = [
    ("COPY frames TO '{tmp}/evil.csv'", "copy"),
    ("COPY (SELECT 1) TO PROGRAM 'touch {tmp}/evil'", "copy"),
    ("copy frames from '/etc/hostname'", "copy"),
    ("SET default_transaction_read_only = off", "set"),
    ("SET SESSION AUTHORIZATION DEFAULT", "set"),
    ("RESET ALL", "reset"),
    ("DO $$ BEGIN DELETE FROM frames; END $$", "do"),
    ("CALL nothing()", "call"),
    ("LOCK TABLE frames", "lock"),
    ("TRUNCATE frames", "truncate"),
    ("GRANT SELECT ON frames TO PUBLIC", "grant"),
    ("BEGIN", "begin"),
    ("PREPARE p AS DELETE FROM frames", "prepare"),
    ("CREATE EXTENSION dblink", "create"),
    ("  /* sneaky */ delete from frames", "delete"),
    ("SELECT * FROM frames FOR UPDATE", "for update"),
    ("SELECT frame_id FROM frames FOR SHARE", "for share"),
    ("SELECT * INTO evil FROM frames", "into"),
    ("WITH gone AS (DELETE FROM detections RETURNING *) SELECT count(*) FROM gone", "with"),
    ("EXPLAIN ANALYZE DELETE FROM frames", "delete"),
    ("SELECT pg_terminate_backend(pid) FROM pg_stat_activity", "pg_terminate_backend"),
    ("SELECT pg_catalog.pg_cancel_backend(pid) FROM pg_stat_activity", "pg_cancel_backend"),
    ("SELECT pg_reload_conf()", "pg_reload_conf"),
    ("SELECT pg_read_file('/etc/hostname')", "pg_read_file"),
    ("SELECT * FROM pg_ls_dir('.')", "pg_ls_dir"),
    ("SELECT lo_export(lo_from_bytea(0, 'x'), '{tmp}/evil.bin')", "lo_"),
    ("SELECT lo_import('/etc/hostname')", "lo_import"),
    ("SELECT pg_advisory_lock(1)", "pg_advisory_lock"),
    ("SELECT set_config('default_transaction_read_only', 'off', false)", "set_config"),
    ("SELECT query_to_xml('DELETE FROM frames RETURNING 1', true, true, '')", "query_to_xml"),
    ("SELECT dblink_exec('dbname=postgres', 'CREATE TABLE evil (a int)')", "dblink"),
    ("SELECT pg_notify('x', 'y')", "pg_notify"),
]


@postgres_only
@pytest.mark.parametrize(("sql", "says"), PG_REFUSED)
def test_postgres_query_refuses_writes_files_settings_and_side_effects(
    tmp_path, catalog, store, filled, sql, says
):
    tmp_path.chmod(0o777)  # were the server (user postgres) ever to write there, the file would show
    before = store.snapshot()
    with pytest.raises(ReadOnlyViolation) as e:
        catalog.query(sql.replace("{tmp}", str(tmp_path)))
    msg = str(e.value)
    assert "read-only" in msg and "nothing was changed" in msg
    assert says in msg.lower()
    assert store.snapshot() == before
    assert list(tmp_path.iterdir()) == []
    assert catalog.query("SHOW default_transaction_read_only").rows == [("on",)]
    assert catalog.query("SELECT count(*) FROM frames").rows == [(5,)]
    assert store.rows("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'") == [(0,)]


@postgres_only
def test_postgres_server_still_refuses_when_the_keyword_guards_are_off(
    monkeypatch, tmp_path, catalog, store, filled
):
    """The lexical guards only give clear messages early: the read-only transaction, the cursor and
    DISCARD ALL hold on their own."""
    from visionlake.catalog import postgres as pgmod

    monkeypatch.setattr(pgmod, "_REFUSED_COMMANDS", set())
    monkeypatch.setattr(pgmod, "_DENIED_FUNCTIONS", pgmod.re.compile(r"(?!x)x"))
    tmp_path.chmod(0o777)
    before = store.snapshot()
    for sql in (
        "SELECT query_to_xml('DELETE FROM frames RETURNING 1', true, true, '')",
        "SELECT * FROM results FOR UPDATE",
        "SELECT set_config('transaction_read_only', 'off', true)",
    ):
        with pytest.raises(ReadOnlyViolation):
            catalog.query(sql)
    for sql in ("INSERT INTO frames SELECT * FROM frames", "CREATE TABLE evil (a int)"):
        with pytest.raises(ReadOnlyViolation):  # not even a query where DECLARE wants one
            catalog.query(sql)
    for sql in (f"COPY frames TO '{tmp_path}/evil.csv'", "SET work_mem = '1GB'", "DO $$ BEGIN END $$"):
        with pytest.raises(QueryError, match="bad SQL"):
            catalog.query(sql)
    # what a read-only transaction allows is undone before the session goes back to the pool
    catalog.query("SELECT set_config('default_transaction_read_only', 'off', false)")
    catalog.query("SELECT set_config('work_mem', '1GB', false)")
    catalog.query("SELECT pg_advisory_lock(4242)")
    catalog.query("SELECT lo_from_bytea(0, 'x')")  # PostgreSQL 15 allows it read-only; rolled back
    assert store.rows("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'") == [(0,)]
    assert catalog.query("SHOW default_transaction_read_only").rows == [("on",)]
    assert catalog.query("SHOW work_mem").rows != [("1GB",)]
    assert store.snapshot() == before
    assert list(tmp_path.iterdir()) == []


@postgres_only
def test_postgres_statement_timeout_stops_pg_sleep(catalog):
    started = time.monotonic()
    with pytest.raises(QueryError) as e:
        catalog.query("SELECT pg_sleep(5)", timeout=0.5)
    assert "time limit of 0.5 s" in str(e.value)
    assert 0.4 < time.monotonic() - started < 2
    assert catalog.query("SELECT 1").rows == [(1,)]


@postgres_only
def test_postgres_query_waiting_on_a_lock_stops_at_the_time_limit(catalog, store, filled):
    with store.uncommitted("LOCK TABLE frames IN ACCESS EXCLUSIVE MODE"):
        started = time.monotonic()
        with pytest.raises(QueryError, match="time limit"):
            catalog.query("SELECT count(*) FROM frames", timeout=0.5)
        assert time.monotonic() - started < 2
    assert catalog.query("SELECT count(*) FROM frames").rows == [(5,)]


@postgres_only
def test_postgres_query_reads_catalog_metadata_explain_and_show(catalog, filled):
    res = catalog.query(
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'frames' ORDER BY ordinal_position"
    )
    assert [r[0] for r in res.rows] == DESIGN_COLUMNS["frames"]
    plan = catalog.query("EXPLAIN SELECT * FROM frames WHERE camera = 'cam-a'")
    assert plan.columns == ["QUERY PLAN"] and plan.rows
    assert catalog.query("SHOW statement_timeout", timeout=2.5).rows == [("2500ms",)]  # the time limit
    res = catalog.query(
        "SELECT captured_at, avg(score) FROM frames JOIN detections USING (frame_id) GROUP BY 1 LIMIT 1"
    )
    assert isinstance(res.rows[0][0], datetime) and isinstance(res.rows[0][1], float)
    with pytest.raises(QueryError, match="one statement"):
        catalog.query("EXPLAIN SELECT 1; DELETE FROM frames")
    with pytest.raises(QueryError, match="division by zero"):
        catalog.query("SELECT 1 / 0")


def test_postgres_many_writers_in_random_order_neither_deadlock_nor_duplicate(monkeypatch, postgres_url):
    """Threads share one catalog (one pool, so really concurrent transactions) and write overlapping
    batches in shuffled order; the sorted write order means no deadlock, so not even a retry."""
    import random

    from visionlake.catalog.base import SqlCatalog

    attempts: list[int] = []
    real_write = SqlCatalog.write_results

    def counted(self, batch, trackers=()):
        attempts.append(len(batch))
        return real_write(self, batch, trackers)

    monkeypatch.setattr(SqlCatalog, "write_results", counted)
    cat = open_catalog(postgres_url)
    errors: list[BaseException] = []
    frames = [meta(f"cam-{i % 3}", i) for i in range(16)]

    def work(seed: int) -> None:
        rnd = random.Random(seed)
        try:
            for n in range(15):
                batch = [
                    result(m, dets(*[("face", 0.5, (1, 1, 2, 2))] * ((i + n) % 3)), version=str(n % 2))
                    for i, m in enumerate(frames)
                ]
                rnd.shuffle(batch)
                cat.write_results(batch[:8])
                cat.write_results(batch[8:])
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    store = Store(postgres_url)
    try:
        assert errors == []
        assert len(attempts) == 4 * 15 * 2  # every write went through at its first attempt
        assert store.rows("SELECT count(*) FROM frames") == [(16,)]
        assert store.rows("SELECT count(*) FROM results") == [(32,)]
        stored = (
            "SELECT count(*) FROM detections d WHERE d.frame_id = r.frame_id "
            "AND d.model = r.model AND d.model_version = r.model_version"
        )
        assert store.rows(f"SELECT count(*) FROM results r WHERE n_detections != ({stored})") == [(0,)]
    finally:
        store.close()
        cat.close()


@postgres_only
def test_postgres_catalog_survives_its_connections_being_terminated(
    postgres_cluster, catalog_url, catalog, filled
):
    db = catalog_url.rsplit("/", 1)[1]
    catalog.query("SELECT 1")  # a pooled query session too
    killed = postgres_cluster.sql(
        f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{db}' AND pid <> pg_backend_pid()"
    )
    assert len(killed) >= 2
    catalog.write_results([result(meta("cam-c", 1))])  # the pool pings, finds the dead session, reconnects
    assert catalog.query("SELECT count(*) FROM frames").rows == [(6,)]


def test_postgres_server_going_away_is_backend_unavailable_and_coming_back_is_fine(postgres_cluster):
    server = type(postgres_cluster)(postgres_cluster.bindir).init().start()
    try:
        server.sql("CREATE DATABASE lake")
        cat = open_catalog(server.url("lake"))
        cat.write_results([result(meta("cam", 1))])
        server.stop(keep=True)
        for call in (
            lambda: cat.write_results([result(meta("cam", 2))]),
            lambda: cat.query("SELECT 1"),
            lambda: cat.search(SearchFilter()),
        ):
            with pytest.raises(BackendUnavailable) as e:
                call()
            assert f"127.0.0.1:{server.port}" in str(e.value) and "'lake'" in str(e.value)
        server.start(keep_port=True)
        cat.write_results([result(meta("cam", 2))])
        assert cat.query("SELECT count(*) FROM frames").rows == [(2,)]
        cat.close()
    finally:
        server.stop()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_postgres_unreachable_port_fails_fast_naming_host_port_and_database():
    port = _free_port()
    started = time.monotonic()
    with pytest.raises(BackendUnavailable) as e:
        open_catalog(f"postgresql://vl:s3cret-pw@127.0.0.1:{port}/lakedb")
    assert time.monotonic() - started < 5
    msg = str(e.value)
    assert f"127.0.0.1:{port}" in msg and "lakedb" in msg and "s3cret-pw" not in msg
    assert e.value.exit_code == 3


def test_postgres_silent_server_times_out_within_connect_timeout():
    """A host that accepts the TCP connection but never answers (a hung server, a wrong service)."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # never accept(): the kernel completes the handshake, nothing ever answers
        port = silent.getsockname()[1]
        started = time.monotonic()
        with pytest.raises(BackendUnavailable) as e:
            open_catalog(f"postgresql://vl:s3cret-pw@127.0.0.1:{port}/lakedb?connect_timeout=2")
        elapsed = time.monotonic() - started
    assert 1.5 < elapsed < 8
    assert "did not answer within 2 s" in str(e.value) and "s3cret-pw" not in str(e.value)


def test_postgres_wrong_credentials_are_config_errors_naming_user_and_database(
    postgres_cluster, postgres_url
):
    user = f"vl_{uuid.uuid4().hex[:10]}"
    create_password_role(postgres_cluster, user, "right-pw")
    db = postgres_url.rsplit("/", 1)[1]
    postgres_cluster.sql(f"ALTER DATABASE {db} OWNER TO {user}")
    base = f"127.0.0.1:{postgres_cluster.port}/{db}"
    for url in (f"postgresql://{user}:wrong-pw@{base}", f"postgresql://{user}@{base}"):
        started = time.monotonic()
        with pytest.raises(ConfigError) as e:
            open_catalog(url)
        assert time.monotonic() - started < 5
        msg = str(e.value)
        assert user in msg and db in msg and "password" in msg and "wrong-pw" not in msg
        assert e.value.exit_code == 2
    with pytest.raises(ConfigError, match="nobody_here"):
        open_catalog(f"postgresql://nobody_here@{base}")
    cat = open_catalog(f"postgresql://{user}:right-pw@{base}")
    try:
        assert cat.schema_version() == SCHEMA_VERSION and "right-pw" not in cat.url and "***" in cat.url
    finally:
        cat.close()


def test_postgres_missing_database_is_a_config_error(postgres_cluster):
    with pytest.raises(ConfigError) as e:
        open_catalog(f"postgresql://postgres@127.0.0.1:{postgres_cluster.port}/no_such_lake")
    assert (
        "no_such_lake" in str(e.value)
        and "does not exist" in str(e.value)
        and "CREATE DATABASE" in str(e.value)
    )


def test_postgres_read_only_role_opens_a_current_catalog_and_queries(postgres_cluster, postgres_url):
    open_catalog(postgres_url).close()  # migrated by the owner
    db = postgres_url.rsplit("/", 1)[1]
    reader = f"vl_reader_{uuid.uuid4().hex[:8]}"
    postgres_cluster.sql(f"CREATE ROLE {reader} LOGIN")
    postgres_cluster.sql(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {reader}", database=db)
    cat = open_catalog(f"postgresql://{reader}@127.0.0.1:{postgres_cluster.port}/{db}")
    try:
        assert cat.query("SELECT count(*) FROM frames").rows == [(0,)]
        with pytest.raises(ReadOnlyViolation):
            cat.query("DELETE FROM frames")
        with pytest.raises(QueryError, match="not permitted"):
            cat.query("SELECT * FROM pg_authid")
    finally:
        cat.close()


@pytest.mark.parametrize(
    "url", ["postgresql+asyncpg://u@127.0.0.1/db", "postgresql://u@127.0.0.1:5432/", "mysql://u@h/db"]
)
def test_unsupported_catalog_urls_are_config_errors(url):
    with pytest.raises(ConfigError):
        open_catalog(url)


def test_postgres_without_psycopg_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "psycopg", None)
    with pytest.raises(MissingDependency) as e:
        open_catalog("postgresql://u@127.0.0.1:1/db")
    assert "visionlake[postgres]" in str(e.value)


# --- reading the history back: frame hashes, frame order, replay cursors (schema version 2) -------


def test_frame_hashes_name_the_stored_image(catalog, filled):
    a0, b1 = filled["a"][0], filled["b"][1]
    got = catalog.frame_hashes([a0.frame_id, b1.frame_id, "no-such-frame"])
    assert got == {f.frame_id: hashlib.sha256(f.frame_id.encode()).hexdigest() for f in (a0, b1)}
    assert catalog.frame_hashes([]) == {}


def test_frames_after_walks_the_history_in_capture_order(catalog, filled):
    # two frames at the same instant are ordered by frame id, so a cursor never skips one
    twin = meta("cam-c", 7, filled["a"][1].captured_at)
    catalog.write_results([result(twin)])
    everything = sorted([*filled["a"], *filled["b"], twin], key=lambda m: (m.captured_at, m.frame_id))
    seen, cursor = [], None
    while page := catalog.frames_after(cursor, limit=2):
        assert len(page) <= 2
        seen.extend(page)
        cursor = (page[-1].captured_at, page[-1].frame_id)
    assert [f.frame_id for f in seen] == [m.frame_id for m in everything]
    first = seen[0]
    assert first.captured_at == T0 and first.captured_at.tzinfo is not None
    assert (first.camera, first.seq, first.width, first.height) == ("cam-a", 0, 768, 576)
    assert first.uri.endswith(f"{first.frame_id}.jpg")
    window = catalog.frames_after(None, since=T0 + timedelta(minutes=1), until=T0 + timedelta(minutes=10))
    assert [f.frame_id for f in window] == [m.frame_id for m in everything[1:5]]


def test_replay_cursors_are_kept_per_replay(catalog):
    assert catalog.replay_cursor("replay.x.2") is None
    catalog.set_replay_cursor("replay.x.2", (T0, "f1"))
    catalog.set_replay_cursor("replay.x.2", (T0 + timedelta(hours=1), "f9"))
    catalog.set_replay_cursor("replay.y.1", (T0, "f0"))
    assert catalog.replay_cursor("replay.x.2") == (T0 + timedelta(hours=1), "f9")
    catalog.set_replay_cursor("replay.x.2", None)
    assert catalog.replay_cursor("replay.x.2") is None
    assert catalog.replay_cursor("replay.y.1") == (T0, "f0")


def test_a_version_1_catalog_is_upgraded_in_place(catalog_url, store, filled, catalog):
    catalog.close()
    store.execute("DROP TABLE replay_cursors")
    store.execute("DROP TABLE rollup_hours")
    store.execute("DELETE FROM schema_version WHERE version >= 2")
    data = "SELECT (SELECT count(*) FROM frames), (SELECT count(*) FROM results), (SELECT count(*) FROM detections)"
    before = store.rows(data)
    again = open_catalog(catalog_url)
    try:
        assert again.schema_version() == SCHEMA_VERSION
        again.set_replay_cursor("r", (T0, "f"))
        assert again.replay_cursor("r") == (T0, "f")
    finally:
        again.close()
    assert store.rows(data) == before == [(5, 7, 8)]
    assert store.rows("SELECT version FROM schema_version ORDER BY 1") == ALL_VERSIONS


# --- one frame: ids by prefix, one version per model ---------------------------------------------


def test_a_frame_is_found_by_a_unique_prefix_of_its_id(catalog, filled):
    a1 = filled["a"][1].frame_id
    assert catalog.resolve_frame_id(a1) == a1
    assert catalog.resolve_frame_id(a1[:8]) == a1
    with pytest.raises(UnknownFrame, match="4 characters"):
        catalog.resolve_frame_id(a1[:3])
    with pytest.raises(UnknownFrame, match="starts with"):
        catalog.resolve_frame_id("zzzz")


def test_a_prefix_two_frames_share_is_refused_naming_both(catalog):
    seen: dict[str, FrameMeta] = {}
    for seq in range(100_000):  # two ids with the same first 4 characters (birthday: ~300 tries)
        m = meta("cam", seq)
        if m.frame_id[:4] in seen:
            pair = [seen[m.frame_id[:4]], m]
            break
        seen[m.frame_id[:4]] = m
    catalog.write_results([result(m) for m in pair])
    with pytest.raises(AmbiguousFrameId) as e:
        catalog.resolve_frame_id(pair[0].frame_id[:4])
    assert all(m.frame_id in str(e.value) for m in pair)


def test_a_frames_detections_are_of_each_models_newest_version_unless_one_is_chosen(catalog):
    m = meta("cam", 7)
    face = ("face", 0.9, (10, 20, 50, 80))
    catalog.ensure_model("haar-face", "1", {"min_neighbors": 5})
    catalog.write_results([result(m, dets(face))])
    catalog.ensure_model("haar-face", "2", {"min_neighbors": 3})
    catalog.write_results([result(m, dets(face, face), version="2")])
    catalog.ensure_model("hog-person", "1", {})
    catalog.write_results([result(m, dets(("person", 0.5, (0, 0, 9, 9))), model="hog-person")])

    def drawn(**kw: str) -> list[tuple[str, str]]:
        return [(d["model"], d["model_version"]) for d in catalog.detections_for(m.frame_id, **kw)]

    assert drawn() == [("haar-face", "2"), ("haar-face", "2"), ("hog-person", "1")]
    assert drawn(model_version="1") == [("haar-face", "1"), ("hog-person", "1")]
    assert drawn(model="haar-face", model_version="1") == [("haar-face", "1")]
    assert drawn(model="haar-face", model_version="9") == []
