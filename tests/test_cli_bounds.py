"""Every numeric, time and size option has bounds: out of them is a usage error, not a traceback.

Each case used to end in an OverflowError traceback (huge numbers, far times), to be silently accepted
(negative limits, a NaN timeout, a zero record size, a blank camera id), or to run for minutes and
gigabytes (`log create --partitions 100000000`, `sql "SELECT zeroblob(1000000000)"`). Now each exits 2
with a message that names the option (cli_common's shared option types, timeutil's bounds, the
catalog's byte cap).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from itertools import islice
from pathlib import Path

import pytest
from media import sample

from visionlake.detectors import load_detector
from visionlake.ingest.publish import ingest
from visionlake.ingest.sources import VideoFileSource
from visionlake.lake import Lake
from visionlake.workers.worker import Worker

HUGE = "99999999999999999999"


def env() -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("VISIONLAKE_")}
    e["COLUMNS"] = "1000"  # Typer's error panel must not wrap the option's name
    return e


def cli(lake: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "visionlake", "--lake", str(lake), *args]


@pytest.fixture(scope="module")
def lake_with_frame(tmp_path_factory) -> tuple[Path, str]:
    """A lake with one processed frame (so `show` gets as far as writing its image)."""
    root = tmp_path_factory.mktemp("bounds") / "lake"
    lake = Lake(lake=root)
    try:
        ingest(lake, islice(VideoFileSource(sample("vtest.avi"), resize=(80, 60)), 1), "cam")
        Worker(lake, load_detector("haar-face"), until_idle=True, idle_timeout=0.3).run()
        ((frame_id,),) = lake.catalog.query("SELECT frame_id FROM frames").rows
    finally:
        lake.close()
    return root, frame_id


CASES = [
    # (c) tracebacks before
    (["search", "--limit", HUGE], "--limit"),
    (["search", "--since", "1000000d"], "--since"),
    (["search", "--since", "0001-01-01T00:00:00+01:00"], "--since"),
    (["search", "--until", "9999-12-31T23:00:00-05:00"], "--until"),
    (["sql", "--max-rows", HUGE, "SELECT 1"], "--max-rows"),
    (["log", "create", "t", "--retention", "999999999999d"], "--retention"),
    (["log", "create", "t", "--retention-bytes", "99999999999999999999TB"], "--retention-bytes"),
    (["show", "{frame}", "-o", "{tmp}/x.txt"], "--out"),
    # (d) accepted before
    (["search", "--limit", "-1"], "--limit"),
    (["sql", "--max-rows", "-1", "SELECT 1"], "--max-rows"),
    (["sql", "--timeout", "0", "SELECT 1"], "--timeout"),
    (["sql", "--timeout", "-1", "SELECT 1"], "--timeout"),
    (["sql", "--timeout", "nan", "SELECT 1"], "--timeout"),
    (["log", "create", "t", "--max-record-bytes", "0"], "--max-record-bytes"),
    (["ingest", "video", "{video}", "--camera", " "], "--camera"),
    (["ingest", "images", "{tmp}", "--camera", "  "], "--camera"),
    (["ingest", "camera", "{tmp}/none.avi", "--camera", " ", "--open-attempts", "1"], "--camera"),
    # (b) minutes and gigabytes before
    (["log", "create", "t", "--partitions", "100000000"], "--partitions"),
    # the same shared types on other options
    (["sql", "--max-bytes", "0", "SELECT 1"], "--max-bytes"),
    (["search", "--min-count", "0"], "--min-count"),
    (["worker", "-d", "haar-face", "--idle-timeout", "inf", "--until-idle"], "--idle-timeout"),
    (["worker", "-d", "haar-face", "--batch-size", "0", "--until-idle"], "--batch-size"),
    (["worker", "-d", "haar-face", "--batch-seconds", "0", "--until-idle"], "--batch-seconds"),
    (["worker", "-d", "haar-face", "--batch-seconds", "nan", "--until-idle"], "--batch-seconds"),
    (["log", "consume", "frames", "--idle-timeout", "nan"], "--idle-timeout"),
    (["log", "consume", "frames", "--limit", "0"], "--limit"),
    (["ingest", "video", "{video}", "--camera", "c", "--fps", "0"], "--fps"),
    (["ingest", "video", "{video}", "--camera", "c", "--quality", "101"], "--quality"),
    (["replay", "-d", "haar-face", "--from", "1000000d"], "--from"),
    (["vocab", "train", "f.parquet", "v.npz", "--seed", "-1"], "--seed"),
    (["classify", "train", "b.parquet", "m.joblib", "--c", "nan"], "--c"),
]


@pytest.mark.parametrize(("args", "option"), CASES, ids=[" ".join(a)[:60] for a, _ in CASES])
def test_out_of_bounds_option_is_a_usage_error(lake_with_frame, tmp_path, args, option):
    lake, frame = lake_with_frame
    video = str(sample("vtest.avi"))
    argv = [a.format(frame=frame, tmp=tmp_path, video=video) for a in args]
    proc = subprocess.run(cli(lake, *argv), env=env(), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, f"exit {proc.returncode}\nstdout: {proc.stdout}\nstderr: {proc.stderr}"
    assert "Traceback" not in proc.stderr, proc.stderr
    assert option in proc.stderr, proc.stderr


#: runs the CLI as its only child and reports that child's peak memory (RUSAGE_CHILDREN of a fresh
#: process counts no other test's subprocesses)
MEASURE = """
import json, resource, subprocess, sys, time
t = time.monotonic()
try:
    p = subprocess.run(sys.argv[1:], capture_output=True, text=True, timeout=40)
    rc, err = p.returncode, p.stderr
except subprocess.TimeoutExpired:
    rc, err = None, "timed out"
print(json.dumps({"rc": rc, "stderr": err, "seconds": time.monotonic() - t,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))
"""


@pytest.mark.parametrize("sql", ["SELECT zeroblob(1000000000)", "SELECT randomblob(900000000)"])
def test_a_huge_result_stops_at_the_byte_cap_quickly_and_in_little_memory(tmp_path, sql):
    lake = tmp_path / "lake"
    with Lake(lake=lake) as lk:
        lk.catalog  # noqa: B018 - an (empty) lake to query
    assert subprocess.run(cli(lake, "sql", "SELECT 1"), env=env(), capture_output=True).returncode == 0
    proc = subprocess.run(
        [sys.executable, "-c", MEASURE, *cli(lake, "sql", sql)],
        env=env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    res = json.loads(proc.stdout)
    assert res["rc"] == 2, res
    assert res["seconds"] < 15, res
    assert res["peak_rss_mb"] < 1024, res
    assert "size cap" in res["stderr"] and "--max-bytes" in res["stderr"], res
    assert "Traceback" not in res["stderr"]


@pytest.fixture(params=["sqlite", "postgres"])
def any_catalog(request, tmp_path):
    from visionlake.catalog import open_catalog

    if request.param == "sqlite":
        url = str(tmp_path / "catalog.db")
    else:
        url = request.getfixturevalue("postgres_url")
    cat = open_catalog(url)
    yield cat
    cat.close()


#: about 1 GB of result, in rows of 1 MB
HUGE_SQL = {
    "sqlite": "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 1000) "
    "SELECT zeroblob(1000000) FROM c",
    "postgres": "SELECT repeat('x', 1000000) FROM generate_series(1, 1000)",
}
SMALL_ROWS = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 100) SELECT x FROM c"


def test_catalog_query_has_a_byte_cap_on_every_backend(any_catalog, request):
    from visionlake.errors import QueryError

    backend = request.node.callspec.params["any_catalog"]
    with pytest.raises(QueryError, match="size cap of 67108864 bytes"):
        any_catalog.query(HUGE_SQL[backend], max_rows=10_000)
    with pytest.raises(QueryError, match="size cap of 100 bytes"):  # small rows add up too
        any_catalog.query(SMALL_ROWS, max_bytes=100)
    assert len(any_catalog.query(SMALL_ROWS, max_bytes=800).rows) == 100
    res = any_catalog.query(SMALL_ROWS, max_rows=10, max_bytes=80)  # the row cap cuts first
    assert (len(res.rows), res.truncated) == (10, True)
    for bad in ({"max_bytes": 0}, {"timeout": float("nan")}, {"timeout": 0}, {"max_rows": -1}):
        with pytest.raises(QueryError):
            any_catalog.query("SELECT 1", **bad)


def test_many_columns_cannot_add_up_past_the_cap(tmp_path):
    """On SQLite each value fits the length limit only up to the cap's share of a row."""
    from visionlake.catalog import open_catalog
    from visionlake.errors import QueryError

    cat = open_catalog(str(tmp_path / "catalog.db"))
    try:
        with pytest.raises(QueryError, match="size cap"):
            cat.query("SELECT " + ", ".join(["randomblob(30000000)"] * 40))  # 40 x 30 MB
        cols = ", ".join(f"'{i}'" for i in range(10))
        assert cat.query(f"SELECT {cols}", max_bytes=1000).rows == [tuple(str(i) for i in range(10))]
    finally:
        cat.close()
