"""Catalog writes per second: `Catalog.write_results` on SQLite vs PostgreSQL, each vs its bare driver.

What is written: what a worker writes, batches of 8 processed frames with 2 detections each (one
`write_results` call per batch = one transaction: 8 `frames` rows, 8 `results` upserts, the 8 frames'
old detections deleted, 16 `detections` rows). Frame ids, cameras (4), times, sizes, archive URIs and
boxes are built deterministically; every frame is new, so each batch inserts (the worker's normal case).

Batches per writer: 400 (3,200 frames) quick, 2,500 (20,000 frames) full. Metric: frames written per
second of write time (8 frames per call).

Four writers, each into its own empty catalog created by `open_catalog` (so the schema and its
indexes are visionlake's):

- visionlake on SQLite: `open_catalog(DIR/catalog.db)` (WAL, synchronous=NORMAL, BEGIN IMMEDIATE);
- bare sqlite3 on a second file with the same pragmas: per batch BEGIN IMMEDIATE, `executemany` of the
  same four statements (INSERT .. ON CONFLICT DO NOTHING, INSERT .. ON CONFLICT DO UPDATE, DELETE,
  INSERT) with the same rows, COMMIT;
- visionlake on PostgreSQL: `open_catalog("postgresql://...")` on a throwaway PostgreSQL cluster that
  this benchmark creates with `initdb` and starts with `pg_ctl` (server defaults: fsync on,
  synchronous_commit on; TCP on 127.0.0.1), stopped and deleted at the end;
- bare psycopg on a second database of the same server: one connection, per batch the same four
  statements with `cursor.executemany` in one transaction, then `commit()`.

The four are interleaved: the batches are split into chunks of CHUNK batches and each chunk is written
by all four writers in turn (the order rotates from chunk to chunk), so all of them see the same
outside load on this shared machine. Only the `write_results` calls (resp. the bare transactions)
are timed; building the `FrameResult`s / row tuples is not.

Durability differs between the two databases at their defaults: SQLite in WAL mode with
synchronous=NORMAL does not fsync at commit (only at checkpoints), PostgreSQL waits for the WAL fsync
of every commit. A fifth writer, visionlake on a PostgreSQL database with ``synchronous_commit=off``
(`ALTER DATABASE ... SET`; still crash-safe, the last commits can be lost on power failure, as with
SQLite's NORMAL), shows how much of the difference is that fsync.

Skipped (one JSON line with "skipped") when the PostgreSQL server binaries (initdb, pg_ctl) or psycopg
are missing, or when the cluster does not start; the SQLite line is still printed.
"""

from __future__ import annotations

import glob
import hashlib
import os
import shutil
import socket
import sqlite3
import subprocess
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import common
import numpy as np
from common import emit, say
from log_throughput import _fs_of

from visionlake.catalog import FrameResult, open_catalog
from visionlake.catalog.base import naive_utc
from visionlake.frames import FrameMeta, make_frame_id
from visionlake.types import Detections

BATCH = 8  # frames per write_results call, the worker's default --batch-size
DETS = 2  # detections per frame
CHUNK = 25  # batches per writer turn
MODEL, VERSION = "bench-model", "1"
CAMERAS = 4

# -- data -------------------------------------------------------------------------------------------


def make_batches(n_batches: int, tag: str) -> list[list[FrameResult]]:
    """`n_batches` batches of BATCH new frames (ids unique per `tag`), DETS detections each."""
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    now = datetime.now(UTC)
    out = []
    seq = 0
    for _ in range(n_batches):
        batch = []
        for _ in range(BATCH):
            cam = f"{tag}-cam-{seq % CAMERAS}"
            ts = t0 + timedelta(seconds=seq / 15)
            fid = make_frame_id(cam, seq, ts)
            meta = FrameMeta(fid, cam, seq, ts, 640, 480)
            x = float(seq % 500)
            det = Detections(
                np.array([[x, 10, x + 64, 138], [x + 100, 20, x + 160, 140]], np.float32)[:DETS],
                np.array([0.91, 0.57], np.float32)[:DETS],
                np.array(["person", "person"], object)[:DETS],
            )
            batch.append(
                FrameResult(
                    meta=meta,
                    nbytes=52_000 + seq % 997,
                    sha256=hashlib.sha256(fid.encode()).hexdigest(),
                    uri=f"file:///var/lib/visionlake/archive/{cam}/2026/01/01/{fid}.jpg",
                    topic="frames",
                    partition=seq % CAMERAS,
                    offset=seq // CAMERAS,
                    model=MODEL,
                    model_version=VERSION,
                    detections=det,
                    latency_ms=31.5 + seq % 7,
                    processed_at=now + timedelta(milliseconds=seq),
                )
            )
            seq += 1
        out.append(batch)
    return out


def batch_rows(batch: list[FrameResult]) -> tuple[list[tuple], list[tuple], list[tuple], list[tuple]]:
    """The same rows write_results writes, as plain tuples for a bare driver (times as naive UTC)."""
    frames, results, keys, dets = [], [], [], []
    for r in batch:
        m = r.meta
        frames.append(
            (m.frame_id, m.camera, m.seq, naive_utc(m.captured_at), m.width, m.height, r.nbytes, r.sha256)
            + (r.uri, r.topic, r.partition, r.offset)
        )
        results.append(
            (m.frame_id, r.model, r.model_version, len(r.detections), naive_utc(r.processed_at), r.latency_ms)
        )
        keys.append((m.frame_id, r.model, r.model_version))
        for b, s, lab in zip(r.detections.xyxy, r.detections.score, r.detections.label, strict=True):
            dets.append(
                (m.frame_id, r.model, r.model_version, str(lab), float(s))
                + (float(b[0]), float(b[1]), float(b[2]), float(b[3]))
            )
    return frames, results, keys, dets


_FRAMES_COLS = (
    'frame_id, camera, seq, captured_at, width, height, bytes, sha256, uri, topic, partition, "offset"'
)
_RESULTS_COLS = "frame_id, model, model_version, n_detections, processed_at, latency_ms"
_DET_COLS = "frame_id, model, model_version, label, score, x1, y1, x2, y2"
_UPSERT_TAIL = (
    " ON CONFLICT (frame_id, model, model_version) DO UPDATE SET n_detections = excluded.n_detections,"
    " processed_at = excluded.processed_at, latency_ms = excluded.latency_ms"
)


def _statements(ph: str) -> tuple[str, str, str, str]:
    """The four statements of one batch, with `ph` as the driver's placeholder."""

    def marks(n: int) -> str:
        return ", ".join([ph] * n)

    return (
        f"INSERT INTO frames ({_FRAMES_COLS}) VALUES ({marks(12)}) ON CONFLICT DO NOTHING",
        f"INSERT INTO results ({_RESULTS_COLS}) VALUES ({marks(6)})" + _UPSERT_TAIL,
        f"DELETE FROM detections WHERE frame_id = {ph} AND model = {ph} AND model_version = {ph}",
        f"INSERT INTO detections ({_DET_COLS}) VALUES ({marks(9)})",
    )


# -- writers --------------------------------------------------------------------------------------


class VisionlakeWriter:
    def __init__(self, name: str, url: str) -> None:
        self.name = name
        self.catalog = open_catalog(url)
        self.catalog.ensure_model(MODEL, VERSION, {"bench": True})
        self.seconds = 0.0
        self.frames = 0

    def write(self, batches: list[list[FrameResult]], rows: list) -> None:
        write = self.catalog.write_results
        t = time.perf_counter()
        for b in batches:
            write(b)
        self.seconds += time.perf_counter() - t
        self.frames += sum(map(len, batches))

    def close(self) -> None:
        self.catalog.close()


class BareSqliteWriter:
    """sqlite3 with visionlake's pragmas and BEGIN IMMEDIATE; executemany per statement."""

    def __init__(self, name: str, path: Path) -> None:
        self.name = name
        open_catalog(str(path)).close()  # the schema, as visionlake creates it
        self.conn = sqlite3.connect(path, timeout=60, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.execute("PRAGMA foreign_keys=ON")
        self.sql = _statements("?")
        self.seconds = 0.0
        self.frames = 0

    def write(self, batches: list, rows: list) -> None:
        ins_f, ins_r, del_d, ins_d = self.sql
        conn = self.conn
        t = time.perf_counter()
        for frames, results, keys, dets in rows:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(ins_f, frames)
            conn.executemany(ins_r, results)
            conn.executemany(del_d, keys)
            conn.executemany(ins_d, dets)
            conn.execute("COMMIT")
        self.seconds += time.perf_counter() - t
        self.frames += sum(len(r[0]) for r in rows)

    def close(self) -> None:
        self.conn.close()


class BarePsycopgWriter:
    """One psycopg connection; per batch executemany of the four statements, one commit."""

    def __init__(self, name: str, url: str) -> None:
        import psycopg

        self.name = name
        open_catalog(url).close()  # the schema, as visionlake creates it
        self.conn = psycopg.connect(url)
        self.sql = _statements("%s")
        self.seconds = 0.0
        self.frames = 0

    def write(self, batches: list, rows: list) -> None:
        ins_f, ins_r, del_d, ins_d = self.sql
        conn = self.conn
        t = time.perf_counter()
        for frames, results, keys, dets in rows:
            with conn.cursor() as cur:
                cur.executemany(ins_f, frames)
                cur.executemany(ins_r, results)
                cur.executemany(del_d, keys)
                cur.executemany(ins_d, dets)
            conn.commit()
        self.seconds += time.perf_counter() - t
        self.frames += sum(len(r[0]) for r in rows)

    def close(self) -> None:
        self.conn.close()


# -- a throwaway PostgreSQL cluster -----------------------------------------------------------------


def pg_bin_dir() -> Path | None:
    """initdb and pg_ctl: on the PATH first, then the newest /usr/lib/postgresql/*/bin."""
    initdb = shutil.which("initdb")
    if initdb and shutil.which("pg_ctl"):
        return Path(os.path.realpath(initdb)).parent
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"),
        key=lambda p: int(Path(p).parent.name) if Path(p).parent.name.isdigit() else 0,
    )
    for d in reversed(found):
        if (Path(d) / "initdb").is_file() and (Path(d) / "pg_ctl").is_file():
            return Path(d)
    return None


class PgCluster:
    """initdb + pg_ctl in a temp directory, server defaults except listen/socket/port (as root: run as
    the `postgres` user, which PostgreSQL requires). Same approach as tests/servers/postgres.py, but
    with fsync left on: this measures the server as it would run."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        # its own temp directory (the bench's is 0700 root-owned: the postgres user could not enter it)
        self.root = root = Path(tempfile.mkdtemp(prefix="visionlake-bench-pg-"))
        self.data = root / "data"
        self.port = 0
        self.as_root = os.geteuid() == 0
        if self.as_root:
            import pwd

            pw = pwd.getpwnam("postgres")  # checked by _postgres_missing
            os.chown(root, pw.pw_uid, pw.pw_gid)
        os.chmod(root, 0o755)

    def _run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if self.as_root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, cwd=self.root, stdin=subprocess.DEVNULL
        )

    def url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> PgCluster:
        done = self._run(
            "initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "--encoding=UTF8", "--locale=C"
        )
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed ({done.returncode}): {done.stderr[-2000:]}")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        opts = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root}"
        done = self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.root / "server.log"), "-o", opts, "-w", "start"
        )
        if done.returncode != 0:
            log = (self.root / "server.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"pg_ctl start failed ({done.returncode}): {done.stderr}\n{log}")
        return self

    def sql(self, statement: str) -> list[tuple]:
        import psycopg

        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            cur = conn.execute(statement)
            return cur.fetchall() if cur.description else []

    def stop(self) -> None:
        if self.port:
            self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop", timeout=60)
        shutil.rmtree(self.root, ignore_errors=True)


def _postgres_missing() -> str | None:
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg not installed (pip install 'visionlake[postgres]')"
    if pg_bin_dir() is None:
        return "PostgreSQL server binaries (initdb, pg_ctl) not found (apt-get install postgresql)"
    if os.geteuid() == 0:
        import pwd

        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no 'postgres' user to run the server as"
    return None


# -- the benchmark --------------------------------------------------------------------------------


def _interleave(writers: list, chunks: list[tuple[list, list]]) -> None:
    for i, (batches, rows) in enumerate(chunks):
        k = i % len(writers)
        for w in writers[k:] + writers[:k]:  # rotate who goes first
            w.write(batches, rows)


def _db_counts_sqlite(path: Path) -> tuple[int, int, int]:
    conn = sqlite3.connect(path)
    try:
        return tuple(
            conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
            for t in ("frames", "results", "detections")
        )
    finally:
        conn.close()


def run(quick: bool, tmp: Path) -> list[dict]:
    n_batches = 400 if quick else 2500  # 3,200 / 20,000 frames per writer
    tmp.mkdir(parents=True, exist_ok=True)
    missing = _postgres_missing()
    say(
        f"catalog: {n_batches} batches x {BATCH} frames x {DETS} detections per writer, "
        f"chunks of {CHUNK} batches interleaved" + (f"; PostgreSQL skipped: {missing}" if missing else "")
    )
    batches = make_batches(n_batches, "c")
    rows = [batch_rows(b) for b in batches]
    chunks = [(batches[i : i + CHUNK], rows[i : i + CHUNK]) for i in range(0, n_batches, CHUNK)]
    n = n_batches * BATCH

    cluster = None
    writers: list = []
    pg_version = None
    try:
        vl_sqlite = VisionlakeWriter("visionlake sqlite", str(tmp / "vl.db"))
        bare_sqlite = BareSqliteWriter("bare sqlite3", tmp / "bare.db")
        writers = [vl_sqlite, bare_sqlite]
        if missing is None:
            cluster = PgCluster(pg_bin_dir())
            try:
                cluster.start()
            except (RuntimeError, OSError, subprocess.SubprocessError) as e:
                missing = f"PostgreSQL did not start: {e}"[:1000]
                say(f"catalog: {missing}")
                cluster.stop()
                cluster = None
        if cluster is not None:
            for db in ("vl", "bare", "vl_async"):
                cluster.sql(f"CREATE DATABASE {db}")
            cluster.sql("ALTER DATABASE vl_async SET synchronous_commit = off")
            pg_version = cluster.sql("SHOW server_version")[0][0]
            settings = dict(
                cluster.sql(
                    "SELECT name, setting FROM pg_settings WHERE name IN "
                    "('fsync', 'synchronous_commit', 'wal_sync_method', 'shared_buffers')"
                )
            )
            vl_pg = VisionlakeWriter("visionlake postgresql", cluster.url("vl"))
            bare_pg = BarePsycopgWriter("bare psycopg", cluster.url("bare"))
            vl_pg_async = VisionlakeWriter("visionlake postgresql async", cluster.url("vl_async"))
            writers += [vl_pg, bare_pg, vl_pg_async]
        busy0, total0 = common.machine_cpu()
        t0 = time.perf_counter()
        _interleave(writers, chunks)
        wall = time.perf_counter() - t0
        busy1, total1 = common.machine_cpu()
        for w in writers:
            assert w.frames == n, (w.name, w.frames, n)
        for p in (tmp / "vl.db", tmp / "bare.db"):
            got = _db_counts_sqlite(p)
            assert got == (n, n, n * DETS), (p, got)
        if cluster is not None:
            import psycopg

            for db in ("vl", "bare", "vl_async"):
                with psycopg.connect(cluster.url(db)) as conn:
                    got = tuple(
                        conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                        for t in ("frames", "results", "detections")
                    )
                assert got == (n, n, n * DETS), (db, got)
    finally:
        for w in writers:
            w.close()
        if cluster is not None:
            cluster.stop()

    fps = {w.name: n / w.seconds for w in writers}
    common_extra = {
        "n": n,
        "batch_frames": BATCH,
        "detections_per_frame": DETS,
        "chunk_batches": CHUNK,
        "ms_per_batch": {w.name: w.seconds / n_batches * 1000 for w in writers},
        "machine_busy_cores": (busy1 - busy0) / wall,
        "fs": _fs_of(tmp),
        "loadavg_1m": common.loadavg(),
    }
    out = [
        emit(
            "catalog_write_sqlite",
            fps["visionlake sqlite"],
            "frames/s",
            "bare sqlite3 executemany of the same rows (same pragmas, one transaction per batch)",
            fps["bare sqlite3"],
            **common_extra,
            notes=(
                f"Catalog.write_results of batches of {BATCH} frames x {DETS} detections (one transaction "
                "each: frames insert, results upsert, detections delete + insert), WAL + synchronous=NORMAL "
                "(no fsync per commit); both on ext4 files in the temp dir, interleaved by chunk"
            ),
        )
    ]
    if cluster is None:
        for metric, baseline in (
            ("catalog_write_postgresql_vs_sqlite", "visionlake on SQLite"),
            ("catalog_write_postgresql", "bare psycopg executemany of the same rows"),
        ):
            out.append(common.emit_skipped(metric, "frames/s", baseline, missing))
        return out
    pg_extra = {**common_extra, "postgresql": pg_version, "pg_settings": settings}
    out.append(
        emit(
            "catalog_write_postgresql_vs_sqlite",
            fps["visionlake postgresql"],
            "frames/s",
            "visionlake on SQLite (same batches, same run)",
            fps["visionlake sqlite"],
            postgresql_synchronous_commit_off=fps["visionlake postgresql async"],
            ratio_synchronous_commit_off=fps["visionlake postgresql async"] / fps["visionlake sqlite"],
            **pg_extra,
            notes=(
                "PostgreSQL on 127.0.0.1 TCP, a fresh cluster at server defaults (fsync on, "
                "synchronous_commit on: every batch waits for a WAL fsync); SQLite WAL + synchronous=NORMAL "
                "does not fsync per commit; postgresql_synchronous_commit_off = the same writer on a "
                "database with synchronous_commit=off (durability comparable to SQLite's NORMAL)"
            ),
        )
    )
    out.append(
        emit(
            "catalog_write_postgresql",
            fps["visionlake postgresql"],
            "frames/s",
            "bare psycopg executemany of the same rows (one connection, one transaction per batch)",
            fps["bare psycopg"],
            **pg_extra,
            notes="both at synchronous_commit on, same server, interleaved by chunk",
        )
    )
    return out
