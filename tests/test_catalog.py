"""The SQL catalog on real SQLite files: schema contract, idempotent writes, search, safe user SQL."""

from __future__ import annotations

import hashlib
import multiprocessing
import sqlite3
import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from media import jpeg, video_frames

from visionlake.archive import Archive
from visionlake.catalog import FrameResult, SearchFilter, open_catalog
from visionlake.errors import CatalogError, InputError, ModelVersionConflict, QueryError, ReadOnlyViolation
from visionlake.frames import FrameMeta, make_frame_id
from visionlake.types import Detections

T0 = datetime(2026, 11, 3, 8, 0, tzinfo=UTC)

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
    "results": ["frame_id", "model", "model_version", "n_detections", "processed_at", "latency_ms"],
    "detections": ["frame_id", "model", "model_version", "label", "score", "x1", "y1", "x2", "y2"],
}


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


def rows(path: Path, sql: str, *args) -> list[tuple]:
    """Read with a plain sqlite3 connection, independently of the catalog code."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def snapshot(path: Path) -> tuple:
    """Everything a user query could change: content, schema, user_version, journal mode."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return (
            list(conn.iterdump()),
            conn.execute("PRAGMA user_version").fetchone(),
            conn.execute("PRAGMA journal_mode").fetchone(),
            conn.execute("PRAGMA page_size").fetchone(),
        )
    finally:
        conn.close()


@pytest.fixture
def db(tmp_path) -> Path:
    return tmp_path / "lake" / "catalog.db"


@pytest.fixture
def catalog(db):
    cat = open_catalog(str(db))
    yield cat
    cat.close()


@pytest.fixture
def filled(catalog, db):
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


def test_schema_has_version_1_and_the_design_columns(catalog, db):
    assert db.is_file()
    assert catalog.schema_version() == 1
    assert rows(db, "SELECT version FROM schema_version") == [(1,)]
    for table, columns in DESIGN_COLUMNS.items():
        info = rows(db, f"PRAGMA table_info({table})")
        assert [c[1] for c in info] == columns, table
    pk = {
        t: [c[1] for c in sorted(rows(db, f"PRAGMA table_info({t})"), key=lambda c: c[5]) if c[5]]
        for t in DESIGN_COLUMNS
    }
    assert pk["frames"] == ["frame_id"]
    assert pk["results"] == ["frame_id", "model", "model_version"]
    assert pk["models"] == ["model", "model_version"]


def test_sqlite_url_and_plain_path_open_the_same_file(db, filled):
    cat = open_catalog(f"sqlite:///{db}")
    try:
        assert cat.frame(filled["a"][0].frame_id) is not None
    finally:
        cat.close()


def test_reopening_keeps_data_and_does_not_migrate_again(db, filled, catalog):
    before = snapshot(db)
    catalog.close()
    for _ in range(3):
        again = open_catalog(str(db))
        assert again.schema_version() == 1
        assert again.frame(filled["a"][1].frame_id)["camera"] == "cam-a"
        again.close()
    assert rows(db, "SELECT count(*) FROM schema_version") == [(1,)]
    assert snapshot(db) == before


def test_newer_schema_is_refused(db, catalog):
    catalog.close()
    conn = sqlite3.connect(db)
    conn.execute("INSERT INTO schema_version VALUES (99, '2030-01-01 00:00:00')")
    conn.commit()
    conn.close()
    with pytest.raises(CatalogError) as e:
        open_catalog(str(db))
    assert "99" in str(e.value) and "upgrade" in str(e.value)


# --- models ---------------------------------------------------------------------------------------


def test_ensure_model_is_idempotent_and_refuses_other_params(catalog, db):
    catalog.ensure_model("haar-face", "1", {"scale_factor": 1.1, "min_neighbors": 5})
    catalog.ensure_model("haar-face", "1", {"min_neighbors": 5, "scale_factor": 1.1})  # same, other order
    catalog.ensure_model("haar-face", "1+abc", {"min_neighbors": 3, "scale_factor": 1.1})
    with pytest.raises(ModelVersionConflict) as e:
        catalog.ensure_model("haar-face", "1", {"scale_factor": 1.1, "min_neighbors": 3})
    assert "haar-face" in str(e.value) and "'1'" in str(e.value)
    stored = rows(db, "SELECT model, model_version, params FROM models ORDER BY model_version")
    assert [r[:2] for r in stored] == [("haar-face", "1"), ("haar-face", "1+abc")]
    assert '"min_neighbors": 5' in stored[0][2]  # the first registration is kept


# --- writes ---------------------------------------------------------------------------------------


def test_write_results_stores_frames_results_and_detections(catalog, db, filled):
    a1 = filled["a"][1]
    row = catalog.frame(a1.frame_id)
    assert row["camera"] == "cam-a" and row["seq"] == 1 and (row["width"], row["height"]) == (768, 576)
    assert row["uri"] == f"/archive/cam-a/{a1.frame_id}.jpg" and row["offset"] == 1
    assert row["captured_at"] == (T0 + timedelta(minutes=1)).replace(tzinfo=None)  # UTC, no zone
    assert rows(db, "SELECT count(*) FROM frames") == [(5,)]
    assert rows(db, "SELECT count(*) FROM results") == [(7,)]
    found = catalog.detections_for(a1.frame_id)
    assert [(d["label"], d["model"], d["model_version"]) for d in found] == [("face", "haar-face", "1")]
    assert (found[0]["x1"], found[0]["y1"], found[0]["x2"], found[0]["y2"]) == (10, 20, 50, 80)
    assert catalog.detections_for(filled["b"][1].frame_id, model="haar-face") == []
    assert len(catalog.detections_for(filled["b"][1].frame_id, model="hog-person")) == 3


def test_a_frame_with_nothing_found_has_a_result_row(catalog, db, filled):
    a0 = filled["a"][0]
    assert rows(
        db, "SELECT n_detections FROM results WHERE frame_id = ? AND model = 'haar-face'", a0.frame_id
    ) == [(0,)]
    assert rows(
        db, "SELECT count(*) FROM detections WHERE frame_id = ? AND model = 'haar-face'", a0.frame_id
    ) == [(0,)]


def test_write_results_same_batch_twice_is_idempotent(catalog, db):
    batch = [result(meta("cam", i), dets(("face", 0.5 + i / 10, (i, i, i + 5, i + 5)))) for i in range(4)]
    catalog.write_results(batch)
    first = {t: sorted(rows(db, f"SELECT * FROM {t}")) for t in ("frames", "results", "detections")}
    catalog.write_results(batch)
    catalog.write_results(list(reversed(batch)))
    assert {t: sorted(rows(db, f"SELECT * FROM {t}")) for t in first} == first
    assert rows(db, "SELECT count(*) FROM frames") == [(4,)]
    assert rows(db, "SELECT count(*) FROM results") == [(4,)]
    assert rows(db, "SELECT count(*) FROM detections") == [(4,)]


def test_rewrite_replaces_detections_of_that_model_version(catalog, db):
    m = meta("cam", 1)
    catalog.write_results([result(m, dets(("face", 0.9, (1, 2, 3, 4)), ("face", 0.8, (5, 6, 7, 8))))])
    catalog.write_results([result(m, dets(("face", 0.95, (1, 2, 3, 4))), version="2")])  # another version
    later = result(
        m, dets(("cat", 0.6, (10, 10, 20, 20)), ("dog", 0.4, (0, 0, 9, 9)), ("dog", 0.3, (1, 1, 2, 2)))
    )
    catalog.write_results([later])
    assert rows(db, "SELECT model_version, n_detections FROM results ORDER BY model_version") == [
        ("1", 3),
        ("2", 1),
    ]
    assert rows(db, "SELECT label, score FROM detections WHERE model_version = '1' ORDER BY score DESC") == [
        ("cat", pytest.approx(0.6)),
        ("dog", pytest.approx(0.4)),
        ("dog", pytest.approx(0.3)),
    ]
    assert rows(db, "SELECT count(*) FROM detections WHERE model_version = '2'") == [(1,)]
    catalog.write_results([result(m, Detections.empty())])  # found nothing this time
    assert rows(db, "SELECT n_detections FROM results WHERE model_version = '1'") == [(0,)]
    assert rows(db, "SELECT count(*) FROM detections WHERE model_version = '1'") == [(0,)]
    assert rows(db, "SELECT count(*) FROM frames") == [(1,)]


def test_a_frame_twice_in_one_batch_leaves_one_set_of_detections(catalog, db):
    """A retried publish puts the same frame (same deterministic id) twice on the log: one poll can
    return both records, and the worker passes both results to one write_results call."""
    m = meta("cam", 1)
    r = result(m, dets(("face", 0.9, (1, 2, 3, 4))))
    catalog.write_results([r, r])
    assert rows(db, "SELECT n_detections FROM results") == [(1,)]
    assert rows(db, "SELECT count(*) FROM detections") == [(1,)]


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
        ("CREATE TABLE evil (a)", None),
        ("CREATE TEMP TABLE evil (a)", None),
        ("CREATE VIEW v AS SELECT 1", None),
        ("ALTER TABLE frames ADD COLUMN evil", None),
        ("ATTACH DATABASE '{tmp}/evil.db' AS evil", "attach"),
        ("PRAGMA journal_mode=DELETE", "journal_mode"),
        ("PRAGMA user_version=5", "user_version"),
        ("PRAGMA writable_schema=ON", "writable_schema"),
        ("VACUUM", None),
        ("VACUUM INTO '{tmp}/copy.db'", None),
        ("REINDEX", None),
        ("BEGIN IMMEDIATE", None),
        ("WITH x AS (SELECT 1) DELETE FROM frames", "delete"),
    ],
)
def test_query_refuses_writes_with_a_clear_message(tmp_path, catalog, db, filled, sql, says):
    before = snapshot(db)
    with pytest.raises(ReadOnlyViolation) as e:
        catalog.query(sql.replace("{tmp}", str(tmp_path)))
    msg = str(e.value)
    assert "read-only" in msg
    if says:
        assert says in msg.lower()
    assert snapshot(db) == before
    assert not (tmp_path / "evil.db").exists() and not (tmp_path / "copy.db").exists()


@pytest.mark.parametrize(
    "sql",
    ["SELECT 1; SELECT 2", "SELECT count(*) FROM frames; DELETE FROM frames", "SELECT 1;;DROP TABLE results"],
)
def test_query_refuses_two_statements(catalog, db, filled, sql):
    before = snapshot(db)
    with pytest.raises(QueryError) as e:
        catalog.query(sql)
    assert "one statement" in str(e.value)
    assert snapshot(db) == before


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
    res = catalog.query("PRAGMA table_info(frames)")
    assert [r[1] for r in res.rows] == DESIGN_COLUMNS["frames"]
    res = catalog.query(
        "SELECT r.model, d.label, count(*) FROM results r JOIN detections d "
        "USING (frame_id, model, model_version) GROUP BY 1, 2 ORDER BY 1"
    )
    assert res.rows == [("haar-face", "face", 4), ("hog-person", "person", 4)]


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
    res = catalog.query(
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT x FROM c", max_rows=100
    )
    assert res.rows == [(i,) for i in range(1, 101)] and res.truncated  # an endless result stops at the cap


def test_query_while_a_writer_holds_the_lock(catalog, db, filled):
    """Readers are not blocked by a writer (WAL) and see the last committed state."""
    writer = sqlite3.connect(db, isolation_level=None)
    try:
        writer.execute("BEGIN IMMEDIATE")
        writer.execute("DELETE FROM detections")
        assert catalog.query("SELECT count(*) FROM detections", timeout=2).rows == [(8,)]
    finally:
        writer.execute("ROLLBACK")
        writer.close()


# --- two processes ------------------------------------------------------------------------------


def _concurrent_writer(path: str, barrier, rounds: int) -> None:
    """Child process: open the catalog itself (both may create it) and write the same frames as its twin."""
    cat = open_catalog(path)
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
        for k in range(0, len(batch), 6):
            cat.write_results(batch[k : k + 6])
    cat.close()


def test_two_processes_writing_the_same_frames_leave_no_duplicates(tmp_path):
    db = tmp_path / "shared" / "catalog.db"
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    procs = [ctx.Process(target=_concurrent_writer, args=(str(db), barrier, 6)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        if p.is_alive():  # never leave a stuck child behind
            p.kill()
            p.join()
    assert [p.exitcode for p in procs] == [0, 0]
    assert rows(db, "SELECT count(*), count(DISTINCT frame_id) FROM frames") == [(24, 24)]
    assert rows(db, "SELECT count(*) FROM results") == [(48,)]  # 24 frames x 2 versions
    twice = "SELECT 1 FROM results GROUP BY frame_id, model, model_version HAVING count(*) > 1"
    assert rows(db, f"SELECT count(*) FROM ({twice})") == [(0,)]
    expected = sum(i % 3 for i in range(24)) * 2
    assert rows(db, "SELECT count(*) FROM detections") == [(expected,)]
    stored = (
        "SELECT count(*) FROM detections d WHERE d.frame_id = r.frame_id "
        "AND d.model = r.model AND d.model_version = r.model_version"
    )
    assert rows(db, f"SELECT count(*) FROM results r WHERE n_detections != ({stored})") == [(0,)]
    assert rows(db, "SELECT count(*) FROM schema_version") == [(1,)]
