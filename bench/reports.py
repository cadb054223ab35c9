"""Dashboard questions on a catalog of 10 million detections: roll-up reports vs the raw GROUP BY.

    python bench/reports.py [--quick] [--postgres] [--workdir DIR] [--runs N]
    python bench/run.py --only reports [--quick]

The catalog is generated WITH THE CATALOG API, as workers would write it: `ensure_model` then
`write_results` in batches of BATCH results. Two cameras, one frame every 5 s each, haar-face version
1 on every frame in capture order, then version 2 registered and replayed over the last third of the
history (so a third of the frames move to version 2 in the newest-version view). Detections per
result: uniform 0..4 at night (20:00-08:00 UTC) and 0..24 by day, labels person/face/bag (70/20/10 %),
deterministic (seeded). Full mode: enough frames for 10 million detections (31 days); `--quick`: 1
million (3 days), SQLite only unless `--postgres` (the full mode runs both).

The generated catalogs are kept under `--workdir` (default /tmp/visionlake-bench-reports): a SQLite
file, and a PostgreSQL cluster (initdb + pg_ctl as tests/servers/postgres.py does, fsync off, data
kept, started again on a rerun); a `done.json` marker beside each makes reruns skip generation
(delete the folder to start over). After generating, PostgreSQL gets `VACUUM ANALYZE`; SQLite is
left as a worker leaves it (no ANALYZE).

Each question is asked `--runs` times (20) after one warm-up; p50 and p99 in ms. The baseline is the
same question answered by a plain GROUP BY over the raw tables, in the same run: `exact=True` of the
reports API for counts and hours (the code path before the roll-up), and for top, latest and the
gallery the plain one-query forms (GROUP BY per frame, OFFSET paging). Baselines that take seconds
are asked fewer times (until 60 s are spent, at least 3): `baseline_runs` says how many.
One JSON line per question and backend, with `target_ms: 200` and `target_met` (p99 <= 200 ms).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import common  # noqa: E402
import numpy as np  # noqa: E402
import sqlalchemy as sa  # noqa: E402
from catalog_writes import _postgres_missing, pg_bin_dir  # noqa: E402
from common import emit, emit_skipped, say  # noqa: E402

from visionlake.analytics.reports import ReportFilter, counts, hours, latest, top  # noqa: E402
from visionlake.catalog import FrameResult, open_catalog  # noqa: E402
from visionlake.catalog import schema as S  # noqa: E402
from visionlake.frames import FrameMeta, make_frame_id  # noqa: E402
from visionlake.types import Detections  # noqa: E402

BATCH = 2000  # results per write_results call
CAMERAS = ("gate", "hall")
STEP_S = 5  # seconds between frames of a camera
T0 = datetime(2026, 10, 1, tzinfo=UTC)
MEAN_DETS = 7  # (2 at night + 12 by day) / 2
TARGET_MS = 200.0
GENERATOR = 1  # bump when the generated data changes
LABELS = ("person", "face", "bag")


def plan(detections: int) -> int:
    """Frames per camera for about `detections` boxes (version 2 on a third: 4/3 results per frame)."""
    return int(round(detections / (len(CAMERAS) * MEAN_DETS * 4 / 3)))


def _pool(rng: random.Random) -> dict[int, list[Detections]]:
    out: dict[int, list[Detections]] = {}
    for n in range(25):
        variants = []
        for _ in range(8):
            labels = np.array(rng.choices(LABELS, weights=(70, 20, 10), k=n), dtype=object)
            boxes = np.array([[10.0 * i, 20.0, 10.0 * i + 40, 120.0] for i in range(n)], np.float32).reshape(
                -1, 4
            )
            variants.append(Detections(boxes, np.full(n, 0.8, np.float32), labels))
        out[n] = variants
    return out


def generate(cat, per_camera: int) -> dict:
    """Write the catalog; returns counts and seconds."""
    rng = random.Random(20261203)
    pool = _pool(rng)
    metas = []
    for i in range(per_camera):
        at = T0 + timedelta(seconds=i * STEP_S)
        for k, cam in enumerate(CAMERAS):
            ts = at + timedelta(milliseconds=137 * k)
            metas.append(FrameMeta(make_frame_id(cam, i, ts), cam, i, ts, 768, 576))

    def results(version: str, frames: list[FrameMeta]):
        for m in frames:
            busy = 8 <= m.captured_at.hour < 20
            n = rng.randint(0, 24 if busy else 4)
            yield FrameResult(
                meta=m,
                nbytes=40_000,
                sha256="0" * 64,
                uri=f"/archive/{m.camera}/{m.frame_id}.jpg",
                topic="frames",
                partition=0,
                offset=m.seq,
                model="haar-face",
                model_version=version,
                detections=rng.choice(pool[n]),
                latency_ms=12.0,
                processed_at=m.captured_at + timedelta(seconds=1),
            )

    t0 = time.perf_counter()
    written = dets = 0
    for version, frames in (("1", metas), ("2", metas[-len(metas) // 3 :])):
        cat.ensure_model("haar-face", version, {"version": version})
        batch: list[FrameResult] = []
        for r in results(version, frames):
            batch.append(r)
            dets += len(r.detections)
            if len(batch) == BATCH:
                cat.write_results(batch)
                written += len(batch)
                batch = []
                if written % (BATCH * 100) == 0:
                    say(f"  {written} results, {dets} detections, {time.perf_counter() - t0:.0f} s")
        if batch:
            cat.write_results(batch)
            written += len(batch)
    return {
        "frames": len(metas),
        "results": written,
        "detections": dets,
        "generation_s": time.perf_counter() - t0,
    }


# --- PostgreSQL, data kept in the workdir ------------------------------------------------------------


class KeptCluster:
    """A PostgreSQL cluster whose data directory stays in `root` between runs."""

    def __init__(self, root: Path) -> None:
        self.bindir = pg_bin_dir()
        self.root = root
        self.data = root / "data"
        self.port = 0
        self.as_root = os.geteuid() == 0
        root.mkdir(parents=True, exist_ok=True)
        if self.as_root:
            import pwd

            pw = pwd.getpwnam("postgres")
            os.chown(root, pw.pw_uid, pw.pw_gid)
        os.chmod(root, 0o755)

    def _run(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if self.as_root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, cwd=self.root, stdin=subprocess.DEVNULL
        )

    def url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> KeptCluster:
        import socket

        if not (self.data / "PG_VERSION").exists():
            shutil.rmtree(self.data, ignore_errors=True)
            done = self._run(
                "initdb",
                "-D",
                str(self.data),
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
                "--encoding=UTF8",
                "--locale=C",
            )
            if done.returncode != 0:
                raise RuntimeError(f"initdb failed: {done.stderr[-2000:]}")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        opts = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} -c fsync=off "
            "-c full_page_writes=off -c shared_buffers=512MB -c max_wal_size=4GB"
        )
        done = self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.root / "server.log"), "-o", opts, "-w", "start"
        )
        if done.returncode != 0:
            raise RuntimeError(f"pg_ctl start failed: {done.stderr[-2000:]}")
        return self

    def sql(self, statement: str, database: str = "postgres") -> list[tuple]:
        import psycopg

        with psycopg.connect(self.url(database), autocommit=True) as conn:
            cur = conn.execute(statement)
            return cur.fetchall() if cur.description else []

    def stop(self) -> None:
        if self.port:
            self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop", timeout=120)


# --- the questions -----------------------------------------------------------------------------------


def _timed(fn, runs: int, budget_s: float | None = None, min_runs: int = 3) -> list[float]:
    """Milliseconds of `runs` calls after a warm-up; with `budget_s`, stop once that many seconds
    were spent and `min_runs` done (min_runs 1: no warm-up either, for baselines of minutes)."""
    if min_runs > 1 or budget_s is None:
        fn()  # warm-up (caches, prepared plans)
    out: list[float] = []
    t_start = time.perf_counter()
    while len(out) < runs:
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
        if budget_s is not None and len(out) >= min_runs and time.perf_counter() - t_start > budget_s:
            break
    return out


def questions(cat) -> list[tuple[str, object, object, str]]:
    """(name, fast call, baseline call, baseline description)."""
    from visionlake.web.queries import Filters, gallery, make_cursor

    engine = cat.engine
    f, r = S.frames.c, S.results.c
    with engine.connect() as conn:
        first, last, n_frames = conn.execute(
            sa.select(sa.func.min(f.captured_at), sa.func.max(f.captured_at), sa.func.count())
        ).one()
        first, last = (x if isinstance(x, datetime) else datetime.fromisoformat(x) for x in (first, last))
        mid = conn.execute(
            sa.select(f.captured_at, f.frame_id)
            .order_by(f.captured_at.desc(), f.frame_id.desc())
            .offset(n_frames // 2)
            .limit(1)
        ).one()
    mid_ts = mid[0] if isinstance(mid[0], datetime) else datetime.fromisoformat(mid[0])
    day = (first + (last - first) / 2).replace(hour=0, minute=0, second=0, microsecond=0)
    one_day = ReportFilter(since=day.replace(tzinfo=UTC), until=(day + timedelta(days=1)).replace(tzinfo=UTC))
    last_24h = ReportFilter(since=(last - timedelta(hours=24, minutes=-7, seconds=13)).replace(tzinfo=UTC))
    hour = (day + timedelta(hours=14)).replace(tzinfo=UTC)
    one_hour = ReportFilter(since=hour, until=hour + timedelta(hours=1))
    face = ReportFilter(label="face")
    bag_hour = ReportFilter(label="bag", since=hour, until=hour + timedelta(hours=1))
    v1_gate = ReportFilter(camera=CAMERAS[0], model="haar-face", model_version="1")
    cursor = make_cursor(mid_ts.replace(tzinfo=UTC), mid[1])
    page = 48

    def plain_top():
        stmt = (
            sa.select(f.frame_id, f.camera, f.captured_at, sa.func.sum(r.n_detections).label("n"), f.uri)
            .select_from(S.frames.join(S.results, r.frame_id == f.frame_id))
            .group_by(f.frame_id, f.camera, f.captured_at, f.uri)
            .order_by(sa.desc("n"), f.captured_at.desc(), f.frame_id.desc())
            .limit(10)
        )
        with engine.connect() as conn:
            return conn.execute(stmt).all()

    def plain_latest():
        stmt = (
            sa.select(f.frame_id, f.camera, f.captured_at, sa.func.sum(r.n_detections), f.uri)
            .select_from(S.frames.join(S.results, r.frame_id == f.frame_id))
            .group_by(f.frame_id, f.camera, f.captured_at, f.uri)
            .order_by(f.captured_at.desc(), f.frame_id.desc())
            .limit(10)
        )
        with engine.connect() as conn:
            return conn.execute(stmt).all()

    def offset_page(offset: int):
        stmt = (
            sa.select(f.frame_id, f.camera, f.captured_at, f.width, f.height)
            .order_by(f.captured_at.desc(), f.frame_id.desc())
            .offset(offset)
            .limit(page + 1)
        )
        with engine.connect() as conn:
            rows = conn.execute(stmt).all()
            ids = [x[0] for x in rows[:page]]
            return conn.execute(sa.select(r.frame_id, r.n_detections).where(r.frame_id.in_(ids))).all()

    exact = (
        "reports API with exact=True: GROUP BY over frames/results/detections (the code before the roll-up)"
    )
    return [
        ("counts_hourly_all_time", lambda: counts(cat), lambda: counts(cat, exact=True), exact),
        ("counts_one_day", lambda: counts(cat, one_day), lambda: counts(cat, one_day, exact=True), exact),
        (
            "counts_last_24h_partial_hours",
            lambda: counts(cat, last_24h),
            lambda: counts(cat, last_24h, exact=True),
            exact,
        ),
        ("hours_histogram", lambda: hours(cat), lambda: hours(cat, exact=True), exact),
        (
            "counts_by_label_daily",
            lambda: counts(cat, bucket="day", by=("label",)),
            lambda: counts(cat, bucket="day", by=("label",), exact=True),
            exact,
        ),
        (
            "counts_face_v1_by_camera_hourly",
            lambda: counts(cat, ReportFilter(model="haar-face", model_version="1", label="face")),
            lambda: counts(cat, ReportFilter(model="haar-face", model_version="1", label="face"), exact=True),
            exact,
        ),
        (
            "top_10",
            lambda: top(cat, limit=10),
            plain_top,
            "one GROUP BY per frame over frames JOIN results, ORDER BY sum LIMIT 10",
        ),
        (
            "top_10_version_1_one_camera",
            lambda: top(cat, v1_gate, limit=10),
            lambda: top(cat, v1_gate, limit=10, exact=True),
            "reports API with exact=True: one GROUP BY per frame over the filtered results",
        ),
        (
            "top_10_one_hour",
            lambda: top(cat, one_hour, limit=10),
            lambda: top(cat, one_hour, limit=10, exact=True),
            "reports API with exact=True: one GROUP BY per frame over the filtered results",
        ),
        (
            "top_10_label_face",
            lambda: top(cat, face, limit=10),
            lambda: top(cat, face, limit=10, exact=True),
            "reports API with exact=True: boxes of the label counted per frame over detections",
        ),
        (
            "top_10_label_bag_one_hour",
            lambda: top(cat, bag_hour, limit=10),
            lambda: top(cat, bag_hour, limit=10, exact=True),
            "reports API with exact=True: boxes of the label counted per frame over detections",
        ),
        (
            "latest_10",
            lambda: latest(cat, limit=10),
            plain_latest,
            "one GROUP BY per frame, ORDER BY captured_at DESC LIMIT 10",
        ),
        (
            "gallery_first_page",
            lambda: gallery(cat, Filters(), limit=page),
            lambda: offset_page(0),
            "OFFSET 0 page + counts",
        ),
        (
            "gallery_deep_page",
            lambda: gallery(cat, Filters(), before=cursor, limit=page),
            lambda: offset_page(n_frames // 2),
            "the same page by OFFSET (half the frames) + counts",
        ),
    ]


def check_equal(cat) -> None:
    """The roll-up answers what the raw tables answer (a sanity check of the generated catalog)."""
    for fast, slow in ((counts(cat, bucket="day"), counts(cat, bucket="day", exact=True)),):
        if fast.rows != slow.rows:
            raise AssertionError("roll-up counts differ from the exact counts")


def bench_backend(
    name: str,
    url: str,
    stats: dict,
    runs: int,
    budget_s: float,
    min_baseline_runs: int = 3,
    check: bool = True,
) -> None:
    cat = open_catalog(url)
    try:
        if check:
            check_equal(cat)
        for q, fast, slow, base in questions(cat):
            t_fast = _timed(fast, runs)
            t_slow = _timed(slow, runs, budget_s, min_baseline_runs)
            p50, p99 = common.percentile(t_fast, 50), common.percentile(t_fast, 99)
            b50, b99 = common.percentile(t_slow, 50), common.percentile(t_slow, 99)
            say(
                f"  {name} {q}: p50 {p50:.1f} ms p99 {p99:.1f} ms; baseline p50 {b50:.0f} ms ({len(t_slow)} runs)"
            )
            emit(
                f"report_{q}_{name}_p99",
                p99,
                "ms",
                base,
                b99,
                p50_ms=p50,
                baseline_p50_ms=b50,
                runs=len(t_fast),
                baseline_runs=len(t_slow),
                baseline_warm_up=min_baseline_runs > 1,
                target_ms=TARGET_MS,
                target_met=p99 <= TARGET_MS,
                backend=name,
                **stats,
                loadavg_1m=common.loadavg(),
            )
    finally:
        cat.close()


def prepared(marker: Path, make) -> dict:
    if marker.exists():
        stats = json.loads(marker.read_text())
        if stats.get("generator") == GENERATOR:
            say(f"  reusing {marker.parent} (generated in {stats['generation_s']:.0f} s)")
            return stats
    stats = {**make(), "generator": GENERATOR}
    marker.write_text(json.dumps(stats))
    return stats


def run(
    quick: bool,
    tmp: Path,
    *,
    postgres: bool | None = None,
    workdir: Path | None = None,
    runs: int = 20,
    sqlite: bool = True,
    min_baseline_runs: int = 3,
    check: bool = True,
) -> None:
    target = 1_000_000 if quick else 10_000_000
    per_camera = plan(target)
    workdir = workdir or Path("/tmp/visionlake-bench-reports")
    size = f"{target // 1_000_000}M"
    budget_s = 60.0
    say(f"reports: {size} detections target, {per_camera} frames per camera, workdir {workdir}")
    # SQLite
    sdir = workdir / f"sqlite-{size}"
    sdir.mkdir(parents=True, exist_ok=True)
    db = sdir / "catalog.db"

    def make_sqlite() -> dict:
        for p in sdir.glob("catalog.db*"):
            p.unlink()
        cat = open_catalog(str(db))
        try:
            return generate(cat, per_camera)
        finally:
            cat.close()

    if sqlite:
        stats = prepared(sdir / "done.json", make_sqlite)
        stats["db_mb"] = db.stat().st_size / 2**20
        bench_backend("sqlite", str(db), stats, runs, budget_s, min_baseline_runs, check)
    if postgres is None:
        postgres = not quick
    if not postgres:
        return
    missing = _postgres_missing()
    if missing:
        emit_skipped("report_postgresql", "ms", "raw GROUP BY", missing)
        return
    cluster = KeptCluster(workdir / f"pg-{size}")
    try:
        cluster.start()
        marker = cluster.root / "done.json"
        if not marker.exists():
            cluster.sql("DROP DATABASE IF EXISTS vl")
            cluster.sql("CREATE DATABASE vl")

        def make_pg() -> dict:
            cat = open_catalog(cluster.url("vl"))
            try:
                out = generate(cat, per_camera)
            finally:
                cat.close()
            t = time.perf_counter()
            cluster.sql("VACUUM ANALYZE", database="vl")
            out["vacuum_analyze_s"] = time.perf_counter() - t
            return out

        pstats = prepared(marker, make_pg)
        pstats["postgresql"] = cluster.sql("SHOW server_version")[0][0]
        bench_backend("postgresql", cluster.url("vl"), pstats, runs, budget_s, min_baseline_runs, check)
    finally:
        cluster.stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="1M detections, SQLite only unless --postgres")
    ap.add_argument("--postgres", action=argparse.BooleanOptionalAction, default=None, help="also PostgreSQL")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/visionlake-bench-reports"))
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument(
        "--sqlite", action=argparse.BooleanOptionalAction, default=True, help="the SQLite catalog"
    )
    ap.add_argument(
        "--min-baseline-runs", type=int, default=3, help="1: one cold run of each baseline (minutes each)"
    )
    ap.add_argument(
        "--check", action=argparse.BooleanOptionalAction, default=True, help="roll-up == raw counts first"
    )
    args = ap.parse_args(argv)
    run(
        args.quick,
        args.workdir,
        postgres=args.postgres,
        workdir=args.workdir,
        runs=args.runs,
        sqlite=args.sqlite,
        min_baseline_runs=args.min_baseline_runs,
        check=args.check,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
