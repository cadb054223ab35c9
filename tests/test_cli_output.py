"""Stored values reach the terminal as text: never as Rich markup, never as raw control characters.

A camera named ``[/]`` used to crash `status`, `search` and `sql` for the whole lake (MarkupError), and
one named ``[link=https://example.com]x[/link]`` sent a clickable OSC 8 hyperlink to the terminal. The
commands run here as users run them, on a pseudo-terminal (so Rich is in terminal mode and CSV knows
it goes to a person), over a real lake with real frames processed by a real worker.
"""

from __future__ import annotations

import csv
import io
import json
import os
import pty
import select
import subprocess
import sys
import tty
from datetime import UTC, datetime, timedelta
from itertools import islice
from pathlib import Path

import pytest
from media import sample
from rich.console import Console

from visionlake import output
from visionlake.catalog import FrameResult, open_catalog
from visionlake.detectors import load_detector
from visionlake.frames import FrameMeta, make_frame_id
from visionlake.ingest.publish import ingest
from visionlake.ingest.sources import VideoFileSource
from visionlake.lake import Lake
from visionlake.types import Detections
from visionlake.workers.worker import Worker

#: camera ids that are valid (printable) but are Rich markup
MARKUP_CAMERAS = ["[/]", "[link=https://example.com]x[/link]", "red[bold]x"]
#: an OSC 8 hyperlink opener: ESC ] 8 ; ; URL BEL
OSC8 = "\x1b]8;;http://evil\x07"
CONTROL_CAMERA = f"{OSC8}cam\x1b[2J\r\u202eevil"


def env(**extra: str) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("VISIONLAKE_")}
    for k in ("NO_COLOR", "TERM", "FORCE_COLOR", "COLUMNS"):
        e.pop(k, None)
    return {**e, "COLUMNS": "200", **extra}


def cli(lake: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "visionlake", "--lake", str(lake), *args]


def run_tty(lake: Path, *args: str, timeout: float = 120) -> tuple[int, str, str]:
    """Run on a raw pseudo-terminal as stdout, with Rich's colours on: (exit code, stdout, stderr)."""
    master, slave = pty.openpty()
    tty.setraw(slave)  # bytes as written: no \n -> \r\n translation
    proc = subprocess.Popen(
        cli(lake, *args),
        stdout=slave,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        env=env(TERM="xterm-256color", FORCE_COLOR="1"),
    )
    os.close(slave)
    out = bytearray()
    try:
        while True:
            ready, _, _ = select.select([master], [], [], timeout)
            if not ready:
                proc.kill()
                raise AssertionError(f"{args} printed nothing for {timeout} s")
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child closed its side
                break
            if not chunk:
                break
            out += chunk
        err = proc.stderr.read().decode(errors="replace")
        rc = proc.wait(timeout)
    finally:
        os.close(master)
        proc.stderr.close()
    return rc, out.decode(errors="replace"), err


def run_pipe(lake: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(cli(lake, *args), env=env(), capture_output=True, text=True, timeout=120)


def assert_safe(text: str) -> None:
    """Nothing but Rich's own colour codes (CSI ... m) may be an escape sequence."""
    assert "\x1b]" not in text, "an OSC sequence (hyperlink, title...) reached the terminal"
    assert "\x07" not in text
    assert "\u202e" not in text
    for i, part in enumerate(text.split("\x1b")[1:]):
        assert part.startswith("["), f"escape #{i} is not a CSI sequence: {part[:20]!r}"
        csi = part[1 : part.index("m") + 1] if "m" in part else part
        assert csi.endswith("m") and all(c in "0123456789;m" for c in csi), f"not SGR: {part[:20]!r}"


@pytest.fixture(scope="module")
def markup_lake(tmp_path_factory) -> Path:
    """A lake whose cameras are named like Rich markup, each with real frames processed by a worker."""
    root = tmp_path_factory.mktemp("markup") / "lake"
    video = sample("vtest.avi")
    lake = Lake(lake=root)
    try:
        for cam in MARKUP_CAMERAS:
            src = VideoFileSource(video, resize=(160, 120))
            assert ingest(lake, islice(src, 2), cam).frames == 2
        stats = Worker(lake, load_detector("haar-face"), until_idle=True, idle_timeout=0.3).run()
        assert stats.processed == 2 * len(MARKUP_CAMERAS)
    finally:
        lake.close()
    return root


@pytest.mark.parametrize(
    "args",
    [["status"], ["search"], ["sql", "SELECT camera FROM frames"]],
    ids=["status", "search", "sql"],
)
def test_markup_camera_names_print_literally_on_a_terminal(markup_lake, args):
    rc, out, err = run_tty(markup_lake, *args)
    assert rc == 0, err
    assert "Traceback" not in err, err
    for cam in MARKUP_CAMERAS:
        assert cam in out, f"camera {cam!r} not shown literally:\n{out}"
    assert "\x1b]8;" not in out  # no hyperlink
    assert_safe(out)


def test_markup_camera_names_in_json_and_csv_are_exact(markup_lake):
    proc = run_pipe(markup_lake, "sql", "SELECT DISTINCT camera FROM frames ORDER BY 1", "-f", "json")
    assert proc.returncode == 0, proc.stderr
    assert [r["camera"] for r in json.loads(proc.stdout)] == sorted(MARKUP_CAMERAS)
    proc = run_pipe(markup_lake, "search", "-f", "csv")
    assert proc.returncode == 0, proc.stderr
    assert {r["camera"] for r in csv.DictReader(io.StringIO(proc.stdout))} == set(MARKUP_CAMERAS)


def test_worker_and_ingest_summaries_show_markup_names(tmp_path):
    """The ingest and worker summaries (record_out) name the camera too."""
    lake = tmp_path / "lake"
    rc, out, err = run_tty(
        lake,
        "ingest",
        "video",
        str(sample("vtest.avi")),
        "--camera",
        "[/]",
        "--fps",
        "1",
        "--resize",
        "80x60",
    )
    assert rc == 0, err
    assert "Ingested camera [/]" in out
    rc, out, err = run_tty(lake, "worker", "-d", "haar-face", "--until-idle", "--idle-timeout", "0.3")
    assert rc == 0, err
    assert "[/]" in out  # the worker's summary lists the cameras it saw
    assert_safe(out)


# --- control characters -----------------------------------------------------------------------------


@pytest.fixture
def control_lake(tmp_path) -> Path:
    """A catalog row whose camera holds control characters (a worker refuses such a header since it
    was hardened; rows written before that, or by another writer, still exist)."""
    root = tmp_path / "lake"
    cat = open_catalog(str(root / "catalog.db"))
    at = datetime(2026, 1, 1, tzinfo=UTC)
    meta = FrameMeta(make_frame_id(CONTROL_CAMERA, 0, at), CONTROL_CAMERA, 0, at, 64, 48)
    res = FrameResult(
        meta, 10, "0" * 64, "/a/0.jpg", "frames", 0, 0, "m", "1", Detections.empty(), 1.0, at + timedelta(1)
    )
    cat.write_results([res])
    cat.close()
    return root


def test_control_characters_are_shown_as_escapes_on_a_terminal(control_lake):
    shown = "\\x1b]8;;http://evil\\x07cam\\x1b[2J\\x0d\\u202eevil"  # as output.sanitize shows it
    for args in (
        ["sql", "SELECT camera FROM frames"],
        ["search"],
        ["status"],
        ["sql", "SELECT camera FROM frames", "-f", "csv"],  # CSV on a terminal is for a person
    ):
        rc, out, err = run_tty(control_lake, *args)
        assert rc == 0, err
        assert shown in out, f"{args}: {out!r}"
        assert_safe(out)


def test_control_characters_stay_exact_in_json_and_piped_csv(control_lake):
    proc = run_pipe(control_lake, "sql", "SELECT camera FROM frames", "-f", "json")
    assert proc.returncode == 0, proc.stderr
    assert "\x1b" not in proc.stdout  # JSON escapes them itself
    assert json.loads(proc.stdout) == [{"camera": CONTROL_CAMERA}]
    proc = subprocess.run(
        cli(control_lake, "sql", "SELECT camera FROM frames", "-f", "csv"),
        env=env(),
        capture_output=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.reader(io.StringIO(proc.stdout.decode(), newline="")))
    assert rows == [["camera"], [CONTROL_CAMERA]]  # a script gets the data as stored


def test_rows_out_and_record_out_escape_control_characters(monkeypatch):
    """The output layer itself, on a forced terminal: values with ESC/BEL, also in keys and titles."""
    buf = io.StringIO()
    monkeypatch.setattr(
        output, "console", Console(file=buf, force_terminal=True, color_system="truecolor", width=200)
    )
    evil = f"{OSC8}click\x1b]8;;\x07 \x9b31m\x85"
    output.rows_out([f"col{OSC8}", "n"], [[evil, 1], [None, b"\x1b[1m"]], title=f"t{OSC8}")
    output.record_out({f"k{OSC8}": evil, "list": [evil]}, title=evil)
    text = buf.getvalue()
    assert_safe(text)
    assert "\x9b" not in text and "\x85" not in text  # C1 controls (CSI, NEL) too
    assert "\\x1b]8;;http://evil\\x07click\\x1b]8;;\\x07 \\x9b31m\\x85" in text
    assert "col\\x1b]8;;http://evil\\x07" in text
    assert "\\x1b[1m" in text


def test_csv_to_a_terminal_is_escaped_and_to_a_pipe_is_exact(monkeypatch, capsys):
    value = f"{OSC8}x"
    output.rows_out(["c"], [[value]], output.Format.csv)
    assert capsys.readouterr().out == f"c\n{value}\n"

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    fake = Tty()
    monkeypatch.setattr(sys, "stdout", fake)
    output.rows_out(["c"], [[value]], output.Format.csv)
    assert fake.getvalue() == "c\n\\x1b]8;;http://evil\\x07x\n"


def test_error_messages_escape_markup_and_controls(tmp_path):
    """`show` names its --out path in a message: markup and controls in it stay inert."""
    proc = run_pipe(tmp_path / "lake", "show", "nope", "-o", f"[/]{OSC8}.txt")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr, proc.stderr
    assert "[/]" in proc.stderr and "\x1b" not in proc.stderr and "\x07" not in proc.stderr
