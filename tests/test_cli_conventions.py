"""What a person meets at the terminal: one meaning per flag, readable help, tables that keep ids
whole at 80 columns, frame ids by prefix, progress lines when stderr is a log, each bad file
reported once, and the clock of a video file's frames.

Commands run as users run them (a subprocess, stdout and stderr piped, COLUMNS set) over a real
lake: real frames of a sample video, processed by a real worker.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from itertools import islice
from pathlib import Path

import pytest
import typer
from media import sample

from visionlake.cli import app
from visionlake.detectors import load_detector
from visionlake.ingest.publish import ingest
from visionlake.ingest.sources import VideoFileSource
from visionlake.lake import Lake
from visionlake.workers.worker import Worker


def run(lake: Path, *args: object, columns: int = 80, **env: str) -> subprocess.CompletedProcess:
    e = {k: v for k, v in os.environ.items() if not k.startswith("VISIONLAKE_")}
    e.update(COLUMNS=str(columns), **env)
    cmd = [sys.executable, "-m", "visionlake", "--lake", str(lake), *map(str, args)]
    return subprocess.run(cmd, env=e, capture_output=True, text=True, timeout=120)


def ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, proc.stderr
    return proc


@pytest.fixture(scope="module")
def lake(tmp_path_factory) -> Path:
    """Megamind frames, filmed (by --start) an hour ago, and a face worker's results on them."""
    root = tmp_path_factory.mktemp("conventions") / "lake"
    with Lake(lake=root) as lk:
        start = datetime.now(UTC) - timedelta(hours=1)
        src = VideoFileSource(sample("Megamind.avi"), fps=2, resize=(320, 240), start_time=start)
        assert ingest(lk, islice(src, 12), "megamind").frames == 12
        stats = Worker(lk, load_detector("haar-face"), until_idle=True, idle_timeout=0.3).run()
        assert stats.processed == 12 and stats.detections > 0
    return root


# --- flags and help ---------------------------------------------------------------------------------


def options() -> dict[str, list[tuple[str, object]]]:
    """Every option string of the CLI -> [(command, click parameter)] wherever it appears."""
    found: dict[str, list[tuple[str, object]]] = defaultdict(list)

    def walk(cmd, path: str) -> None:
        for p in cmd.params:
            if p.param_type_name == "option":
                for opt in [*p.opts, *p.secondary_opts]:
                    found[opt].append((path, p))
        for name, sub in getattr(cmd, "commands", {}).items():
            walk(sub, f"{path} {name}".strip())

    walk(typer.main.get_command(app), "")
    return found


def test_each_flag_means_one_thing_across_the_cli():
    found = options()
    for opt, uses in found.items():
        names = {p.name for _, p in uses}
        kinds = {
            p.display_type(None).removeprefix("<list[").strip("<>]").removesuffix(" range") for _, p in uses
        }
        assert len(names) == 1 and len(kinds) == 1, f"{opt} means several things: {uses}"
    assert {c for c, _ in found["--version"]} == {""}  # the program's version, only at the top
    assert {p.name for _, p in found["-p"]} == {"param"}  # a detector parameter, never --processes
    for command, p in found["--format"]:  # the output format, everywhere
        assert p.display_type(None) == "<table|json|csv>", command
    assert {c for c, _ in found["--model-version"]} >= {"search", "show", "replay"}


def test_option_help_has_no_angle_bracket_placeholders():
    """The formatted help drops `<name>` as markup: `[default: <lake>/catalog.db]` showed as
    `[default: /catalog.db]`. Placeholders are written in capitals (LAKE/catalog.db)."""
    found = options()
    bad = {(c, opt) for opt, uses in found.items() for c, p in uses if re.search(r"<\w[^>]*>", p.help or "")}
    assert not bad, f"help with <...> placeholders: {sorted(bad)}"
    assert "LAKE/catalog.db" in ok(run(Path("unused"), "--help", columns=200)).stdout


# --- tables at 80 columns ---------------------------------------------------------------------------


def test_search_keeps_every_frame_id_whole_in_an_80_column_terminal(lake):
    ids = [r["frame_id"] for r in json.loads(ok(run(lake, "search", "--format", "json")).stdout)]
    assert ids
    for columns in (80, 100, 200):
        text = ok(run(lake, "search", columns=columns)).stdout
        assert all(len(line) <= columns for line in text.splitlines()), text
        assert all(i in text for i in ids), f"an id was cut at {columns} columns:\n{text}"
        assert "…" not in text


def test_log_topics_and_status_fit_80_columns_with_sizes_in_units(lake):
    for args in (["log", "topics"], ["status"], ["log", "groups"]):
        text = ok(run(lake, *args)).stdout
        assert all(len(line) <= 80 for line in text.splitlines()), f"{args}:\n{text}"
        assert "…" not in text, args
    topics = ok(run(lake, "log", "topics")).stdout
    assert "frames: 4 partitions, 12 records" in topics and "keeps forever" in topics
    status = ok(run(lake, "status")).stdout
    raw = json.loads(ok(run(lake, "status", "--format", "json")).stdout)
    frames_bytes = next(t["bytes"] for t in raw["topics"] if t["topic"] == "frames")
    assert str(frames_bytes) not in status and "KiB" in status  # units for people, bytes for scripts


def test_log_consume_json_headers_are_an_object(lake):
    rows = json.loads(ok(run(lake, "log", "consume", "frames", "--limit", "2", "--format", "json")).stdout)
    assert len(rows) == 2 and all(r["headers"]["vl-camera"] == "megamind" for r in rows)


# --- show: ids by prefix, one model version ----------------------------------------------------------


def test_show_takes_a_unique_prefix_of_a_frame_id(lake, tmp_path):
    rows = json.loads(ok(run(lake, "search", "--label", "face", "--format", "json")).stdout)
    full = rows[0]["frame_id"]
    out = tmp_path / "face.jpg"
    proc = ok(run(lake, "show", full[:7], "-o", out))
    assert out.stat().st_size > 0 and full in proc.stderr and "haar-face 1" in proc.stderr
    short = run(lake, "show", full[:3], "-o", out)
    assert short.returncode == 2 and "4 characters" in short.stderr
    missing = run(lake, "show", "zzzzzz", "-o", out)
    assert missing.returncode == 2 and "no frame id starts with 'zzzzzz'" in missing.stderr


# --- the clock of a video file's frames ----------------------------------------------------------------


def test_frames_filmed_an_hour_ago_are_found_by_since_2h(lake):
    recent = json.loads(ok(run(lake, "search", "--since", "2h", "--format", "json")).stdout)
    assert len(recent) == 12
    assert json.loads(ok(run(lake, "search", "--since", "30m", "--format", "json")).stdout) == []


def test_ingest_video_start_sets_the_clock_and_file_time_keeps_ids_stable(tmp_path):
    clip, lake = sample("vtest.avi"), tmp_path / "lake"
    base = ["ingest", "video", clip, "--camera", "c", "--fps", "1", "--resize", "64x48", "--format", "json"]
    ok(run(lake, *base, "--start", "2020-01-02T03:04:05Z"))
    with Lake(lake=lake) as lk, lk.log.consumer(["frames"], offset_reset="earliest") as cons:
        first = cons.poll(1, timeout=5)[0]
    assert first.header("vl-ts").startswith("2020-01-02T03:04:05")
    # the default clock is the file's modification time: the same file twice gives the same ids
    ids = []
    for _ in range(2):
        ok(run(lake, *base))
    with Lake(lake=lake) as lk, lk.log.consumer(["frames"], offset_reset="earliest") as cons:
        recs = []
        while batch := cons.poll(500, timeout=1):
            recs += batch
        ids = [r.header("vl-frame-id") for r in recs]
        mtime = datetime.fromtimestamp(clip.stat().st_mtime, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    by_file = [i for r, i in zip(recs, ids, strict=True) if r.header("vl-ts").startswith(mtime)]
    assert len(by_file) == 2 * len(set(by_file)) > 0  # each id twice: the second run sent the same frames
    bad = run(lake, *base, "--start", "yesterday-ish")
    assert bad.returncode == 2 and "--start" in bad.stderr


# --- image folders: non-images are not errors, each bad file reported once ---------------------------


def test_ingest_images_ignores_non_images_and_reports_each_bad_file_once(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "fish.jpg").write_bytes(sample("HappyFish.jpg").read_bytes())
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4)
    (folder / "readme.txt").write_text("photos of the shop\n")
    proc = ok(run(tmp_path / "lake", "ingest", "images", folder))
    assert proc.stderr.count("broken.jpg") == 1, proc.stderr  # once, on stderr, with its reason
    assert "readme.txt" not in proc.stdout + proc.stderr and "WARNING" not in proc.stderr
    summary = json.loads(ok(run(tmp_path / "lake2", "ingest", "images", folder, "--format", "json")).stdout)
    assert summary["frames"] == 1 and summary["ignored"] == 1
    assert [e["source"] for e in summary["errors"]] == ["broken.jpg"]


# --- progress when stderr is a log ---------------------------------------------------------------


def test_long_jobs_print_progress_lines_when_stderr_is_not_a_terminal(tmp_path):
    clip = sample("vtest.avi")
    args = ["ingest", "video", clip, "--camera", "c", "--fps", "10", "--resize", "320x240"]
    proc = ok(run(tmp_path / "lake", *args, VISIONLAKE_PROGRESS_SECONDS="0.05"))
    lines = [line for line in proc.stderr.splitlines() if line.startswith("ingest c: ")]
    assert any("running" in line for line in lines), proc.stderr
    assert lines[-1].startswith("ingest c: done, ") and lines[-1].count("/") == 1, lines
    # shorter than the interval (15 s unless told): nothing but the summary
    quiet = ok(run(tmp_path / "lake2", *args[:-2], "--resize", "64x48"))
    assert "ingest c:" not in quiet.stderr
