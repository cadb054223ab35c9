"""The `visionlake` command as users run it: a real subprocess on a real lake under tmp_path.

Error contract (cli.py, errors.py): a one-line "error: ..." naming the input, exit 2 for bad input,
3 for something unreachable, 1 otherwise; and nothing written half-way.
"""

from __future__ import annotations

import csv
import io
import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cv2
import numpy as np
import pytest
import typer.main
from media import sample

from visionlake.catalog import FrameResult, open_catalog
from visionlake.cli import app
from visionlake.frames import FrameMeta, make_frame_id
from visionlake.lake import Lake
from visionlake.types import Detections


def run(
    cwd: Path, lake: Path, *args: object, wide: bool = True, timeout: float = 120
) -> subprocess.CompletedProcess:
    """`python -m visionlake --lake LAKE ARGS...` with the environment of a user's shell.

    `wide` sets COLUMNS so that Rich does not wrap long messages (see
    test_error_messages_are_not_wrapped for the default width).
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("VISIONLAKE_")}
    env.pop("COLUMNS", None)
    if wide:
        env["COLUMNS"] = "1000"
    cmd = [sys.executable, "-m", "visionlake", "--lake", str(lake), *map(str, args)]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def error(proc: subprocess.CompletedProcess) -> str:
    """The one "error: ..." line of a failed command (OpenCV/FFmpeg may log other lines)."""
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, f"expected one error line, stderr was:\n{proc.stderr}"
    assert "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


def make_lake(root: Path) -> None:
    """An empty lake, as the first ingest leaves it (read-only commands refuse a path with none)."""
    with Lake(lake=root) as lk:
        lk.log.ensure_topic("frames")
        lk.catalog  # noqa: B018 - creates the catalog


def records(cwd: Path, lake: Path) -> dict[str, int]:
    """Records per topic, from `log topics --format json` ({} when no lake was ever made there)."""
    proc = run(cwd, lake, "log", "topics", "--format", "json")
    if proc.returncode == 2 and "no lake at" in proc.stderr and not lake.exists():
        return {}
    assert proc.returncode == 0, proc.stderr
    out: dict[str, int] = {}
    for row in json.loads(proc.stdout):
        out[row["topic"]] = out.get(row["topic"], 0) + row["records"]
    return out


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def lake(tmp_path) -> Path:
    return tmp_path / "lake"


# --- help ------------------------------------------------------------------------------------------


def command_paths() -> list[list[str]]:
    """Every command and sub-command of the app, found from the app itself."""

    def walk(cmd, prefix: list[str]):
        yield prefix
        for name, sub in sorted(getattr(cmd, "commands", {}).items()):
            yield from walk(sub, [*prefix, name])

    return list(walk(typer.main.get_command(app), []))


def test_root_help_lists_every_command(tmp_path, lake):
    proc = run(tmp_path, lake, "--help")
    assert proc.returncode == 0, proc.stderr
    top = {p[0] for p in command_paths() if p}
    assert {"ingest", "log", "worker", "sql", "search", "show", "detectors", "status"} <= top
    for name in top:
        assert name in proc.stdout
    assert "--lake" in proc.stdout
    assert not lake.exists()  # help touches nothing


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["log", "--help"], ["topics", "groups", "create", "produce", "consume", "retention"]),
        (["ingest", "video", "--help"], ["--camera", "--fps", "--resize", "--quality"]),
    ],
)
def test_help_of_groups_and_commands(tmp_path, lake, args, expected):
    proc = run(tmp_path, lake, *args)
    assert proc.returncode == 0, proc.stderr
    for word in expected:
        assert word in proc.stdout
    assert not lake.exists()


HELP_ALL = """
import contextlib, io, json, sys
from visionlake.cli import app
from visionlake.lake import Lake
out = {}
for path in json.loads(sys.argv[1]):
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        try:
            code = app([*path, "--help"], prog_name="visionlake", standalone_mode=False)
        except SystemExit as e:
            code = e.code
    out[" ".join(path)] = [code or 0, buf.getvalue()]
print(json.dumps(out))
"""


def test_every_command_has_help(tmp_path):
    """One process asks every command and sub-command for --help (cheaper than a process each)."""
    paths = command_paths()
    assert len(paths) >= 15
    proc = subprocess.run(
        [sys.executable, "-c", HELP_ALL, json.dumps(paths)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert proc.returncode == 0, proc.stderr
    helps = json.loads(proc.stdout)
    assert set(helps) == {" ".join(p) for p in paths}
    for name, (code, text) in helps.items():
        assert code == 0, name
        assert f"Usage: visionlake {name}".rstrip() in text, name
        assert "--help" in text, name
        for python_type in ("<bool>", "<str>", "<list[", "<int", "<float", "<path>"):  # TEXT, INTEGER...
            assert python_type not in text, f"{name}: {python_type} in its help"
    assert list(tmp_path.iterdir()) == []


# --- bad input: clear message, right exit code, nothing half-written --------------------------------


@pytest.mark.parametrize("kind", ["missing", "text file"])
def test_ingest_video_bad_file(tmp_path, lake, kind):
    video = tmp_path / ("missing.avi" if kind == "missing" else "bad.avi")
    if kind == "text file":
        video.write_text("this is not a video\n" * 50)
    proc = run(tmp_path, lake, "ingest", "video", video, "--camera", "c")
    assert proc.returncode == 2, proc.stderr
    msg = error(proc)
    assert str(video) in msg
    assert ("no such file" if kind == "missing" else "cannot open") in msg
    if kind == "missing":
        assert sum(records(tmp_path, lake).values()) == 0


def test_ingest_camera_unreachable(tmp_path, lake):
    url = f"http://127.0.0.1:{closed_port()}/x"
    started = time.monotonic()
    proc = run(tmp_path, lake, "ingest", "camera", url, "--camera", "c", "--open-attempts", "1")
    assert proc.returncode == 3, proc.stderr
    assert url in error(proc)
    assert time.monotonic() - started < 30


def test_ingest_images_missing_folder(tmp_path, lake):
    folder = tmp_path / "no-such-folder"
    proc = run(tmp_path, lake, "ingest", "images", folder)
    assert proc.returncode == 2, proc.stderr
    msg = error(proc)
    assert str(folder) in msg and "no such directory" in msg


def test_log_produce_reads_every_file_before_sending(tmp_path, lake):
    a, b = tmp_path / "a.jpg", tmp_path / "b.jpg"
    a.write_bytes(sample("HappyFish.jpg").read_bytes())
    b.write_bytes(sample("fruits.jpg").read_bytes())
    proc = run(tmp_path, lake, "log", "produce", "frames", "--key", "cam", b, "--format", "json")
    assert proc.returncode == 0, proc.stderr  # the log and the topic exist, with one record
    assert [r["file"] for r in json.loads(proc.stdout)] == [str(b)]
    proc = run(tmp_path, lake, "log", "produce", "frames", "--key", "cam", a, tmp_path / "missing.jpg")
    assert proc.returncode == 2, proc.stderr
    assert "missing.jpg" in error(proc)
    assert records(tmp_path, lake) == {"frames": 1}  # a.jpg was not sent either


def test_log_create_changes_only_the_given_settings(tmp_path, lake):
    def settings() -> tuple:
        proc = run(tmp_path, lake, "log", "topics", "--format", "json")
        assert proc.returncode == 0, proc.stderr
        rows = [r for r in json.loads(proc.stdout) if r["topic"] == "t"]
        return len(rows), rows[0]["retention_ms"], rows[0]["retention_bytes"], rows[0]["max_record_bytes"]

    args = "--partitions 2 --retention 7d --retention-bytes 10MiB --max-record-bytes 2MiB".split()
    proc = run(tmp_path, lake, "log", "create", "t", *args)
    assert proc.returncode == 0, proc.stderr
    assert "created topic t with 2 partitions" in proc.stderr
    week, mib = 7 * 86_400_000, 1024 * 1024
    assert settings() == (2, week, 10 * mib, 2 * mib)

    proc = run(tmp_path, lake, "log", "create", "t", "--retention", "3d")
    assert proc.returncode == 0, proc.stderr
    assert f"updated topic t: retention_ms {week} -> {3 * 86_400_000}" in proc.stderr
    assert settings() == (2, 3 * 86_400_000, 10 * mib, 2 * mib)  # the rest as it was

    proc = run(tmp_path, lake, "log", "create", "t", "--retention-bytes", "forever", "--partitions", "2")
    assert proc.returncode == 0, proc.stderr
    assert f"retention_bytes {10 * mib} -> forever" in proc.stderr and "partitions" not in proc.stderr
    assert settings() == (2, 3 * 86_400_000, None, 2 * mib)

    proc = run(tmp_path, lake, "log", "create", "t")  # no options: nothing to change
    assert proc.returncode == 2, proc.stderr
    assert "already exists" in error(proc)
    for count, expected in (("1", "can only grow"), ("4", "has 2 partitions")):
        proc = run(tmp_path, lake, "log", "create", "t", "--partitions", count, "--retention", "1d")
        assert proc.returncode == 2, proc.stderr
        msg = error(proc)
        assert "'t'" in msg and expected in msg
    assert settings() == (2, 3 * 86_400_000, None, 2 * mib)  # a refused change changes nothing


def test_show_unknown_frame(tmp_path, lake):
    make_lake(lake)
    proc = run(tmp_path, lake, "show", "unknownid", "-o", tmp_path / "x.jpg")
    assert proc.returncode == 2, proc.stderr
    assert "unknownid" in error(proc)
    assert not (tmp_path / "x.jpg").exists()


def test_worker_unknown_detector_lists_installed_ones(tmp_path, lake):
    proc = run(tmp_path, lake, "worker", "--detector", "nope")
    assert proc.returncode == 2, proc.stderr
    msg = error(proc)
    assert "nope" in msg and "haar-face" in msg and "hog-person" in msg


def test_worker_malformed_param(tmp_path, lake):
    proc = run(tmp_path, lake, "worker", "--detector", "haar-face", "--param", "oops")
    assert proc.returncode == 2, proc.stderr
    msg = error(proc)
    assert "'oops'" in msg and "key=value" in msg


# --- sql on a real catalog ------------------------------------------------------------------------


@pytest.fixture
def catalog_lake(lake) -> Path:
    """A lake whose catalog holds three frames, written through the Python API."""
    t0 = datetime(2026, 11, 3, 8, 0, tzinfo=UTC)
    cat = open_catalog(str(lake / "catalog.db"))
    batch = []
    for i in range(3):
        at = t0 + timedelta(minutes=i)
        meta = FrameMeta(make_frame_id("cam", i, at), "cam", i, at, 640, 480)
        batch.append(
            FrameResult(
                meta,
                1000,
                "0" * 64,
                f"/a/{i}.jpg",
                "frames",
                0,
                i,
                "haar-face",
                "1",
                Detections.empty(),
                1.0,
                at,
            )
        )
    cat.write_results(batch)
    cat.close()
    return lake


def count_frames(lake: Path) -> int:
    conn = sqlite3.connect(f"file:{lake / 'catalog.db'}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT count(*) FROM frames").fetchone()[0]
    finally:
        conn.close()


def test_sql_delete_is_refused(tmp_path, catalog_lake):
    proc = run(tmp_path, catalog_lake, "sql", "DELETE FROM frames")
    assert proc.returncode == 2, proc.stderr
    assert "read-only" in error(proc)
    assert count_frames(catalog_lake) == 3


def test_sql_bad_syntax(tmp_path, catalog_lake):
    proc = run(tmp_path, catalog_lake, "sql", "SELEC nonsense")
    assert proc.returncode == 2, proc.stderr
    assert "SELEC" in error(proc)


def test_sql_csv_and_json_output_parse(tmp_path, catalog_lake):
    query = "SELECT frame_id, camera, seq, width FROM frames ORDER BY seq"
    proc = run(tmp_path, catalog_lake, "sql", query, "--format", "csv", "--max-rows", "2")
    assert proc.returncode == 0, proc.stderr
    table = list(csv.reader(io.StringIO(proc.stdout)))
    assert table[0] == ["frame_id", "camera", "seq", "width"]
    assert [r[1:] for r in table[1:]] == [["cam", "0", "640"], ["cam", "1", "640"]]
    assert "row cap" in proc.stderr  # the cap is said, not silent

    proc = run(tmp_path, catalog_lake, "sql", query, "--format", "json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert [(d["camera"], d["seq"], d["width"]) for d in data] == [("cam", i, 640) for i in range(3)]
    assert [d["frame_id"] for d in data] == [r[0] for r in table[1:]] + [data[2]["frame_id"]]


# --- happy path: an image folder onto the log and back ----------------------------------------------

IMAGES = {"a.jpg": "HappyFish.jpg", "b.png": "pic1.png", "sub/c.jpg": "fruits.jpg"}


@pytest.fixture(scope="module")
def ingested(tmp_path_factory):
    root = tmp_path_factory.mktemp("ingest")
    folder = root / "photos"
    for dest, name in IMAGES.items():
        (folder / dest).parent.mkdir(parents=True, exist_ok=True)
        (folder / dest).write_bytes(sample(name).read_bytes())
    (folder / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(256)) * 8)
    lake = root / "lake"
    proc = run(root, lake, "ingest", "images", folder, "--camera", "shop", "--format", "json")
    return root, lake, proc


def test_ingest_images_publishes_good_files_and_lists_the_bad_one(ingested):
    _, _, proc = ingested
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["camera"] == "shop" and summary["frames"] == 3
    assert [e["source"] for e in summary["errors"]] == ["corrupt.jpg"]
    assert summary["errors"][0]["reason"]  # says why


def test_log_topics_counts_the_ingested_records(ingested):
    root, lake, _ = ingested
    assert records(root, lake)["frames"] == 3


def test_log_consume_writes_readable_jpegs(ingested):
    root, lake, _ = ingested
    out = root / "consumed"
    proc = run(root, lake, "log", "consume", "frames", "--limit", "2", "--out", out, "--format", "json")
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert len(rows) == 2 and all(r["key"] == "shop" for r in rows)
    files = sorted(out.iterdir())
    assert len(files) == 2 and all(f.suffix == ".jpg" for f in files)
    sizes = {cv2.imread(str(sample(n))).shape for n in IMAGES.values()}
    for f in files:
        image = cv2.imread(str(f))
        assert isinstance(image, np.ndarray) and image.shape in sizes
        headers = next(r["headers"] for r in rows if r["file"] == str(f))  # an object, not a string
        assert headers["vl-camera"] == "shop" and headers["content-type"] == "image/jpeg"
        assert (int(headers["vl-width"]), int(headers["vl-height"])) == (image.shape[1], image.shape[0])


def test_detectors_json_lists_bundled_detectors(tmp_path, lake):
    proc = run(tmp_path, lake, "detectors", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    found = {d["name"]: d for d in json.loads(proc.stdout)}
    assert {"haar-face", "hog-person"} <= set(found)
    assert found["haar-face"]["available"] == "yes"
    assert "min_neighbors" in json.loads(found["haar-face"]["parameters"])


# --- how errors are printed ---------------------------------------------------------------------------


def test_error_messages_are_not_wrapped(tmp_path, lake):
    video = tmp_path / ("a-video-with-a-long-name-" + "x" * 60 + ".avi")
    proc = run(tmp_path, lake, "ingest", "video", video, "--camera", "c", wide=False)
    assert proc.returncode == 2
    assert str(video) in proc.stderr


def test_error_messages_print_brackets_verbatim(tmp_path, lake):
    folder = tmp_path / "photos[s3]"  # with "photos[/]" the handler itself crashes (MarkupError)
    proc = run(tmp_path, lake, "ingest", "images", folder)
    assert proc.returncode == 2, proc.stderr
    assert str(folder) in error(proc)


def test_version_needs_no_command(tmp_path):
    out = run(tmp_path, tmp_path / "lake", "--version")
    assert out.returncode == 0, out.stderr
    from visionlake import __version__

    assert out.stdout.strip() == f"visionlake {__version__}"
    assert not (tmp_path / "lake").exists()  # nothing opened, nothing created


@pytest.mark.parametrize(
    "args",
    [
        ("status",),
        ("sql", "SELECT 1"),
        ("search",),
        ("log", "topics"),
        ("log", "groups"),
        ("show", "abc", "-o", "x.jpg"),
    ],
    ids=lambda a: " ".join(a),
)
def test_read_only_commands_refuse_a_path_with_no_lake(tmp_path, args):
    typo = tmp_path / "visionlake-dat"
    proc = run(tmp_path, typo, *args)
    assert proc.returncode == 2, proc.stderr
    assert f"no lake at {typo}" in error(proc)
    assert not typo.exists()  # nothing made on the way
    (tmp_path / "empty").mkdir()
    proc = run(tmp_path, tmp_path / "empty", *args)
    assert proc.returncode == 2 and "holds no frame log and no catalog" in error(proc)
    make_lake(tmp_path / "real")
    assert run(tmp_path, tmp_path / "real", *args).returncode in (0, 2 if args[0] == "show" else 0)
