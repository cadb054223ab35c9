"""CLI start-up stays light: `--help`, `--version` and every command's `--help` import none of the
heavy libraries (they load inside the commands that use them). Checked by the modules Python
reports importing (`-X importtime`), not by timing: machines here are shared and noisy."""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = (
    "numpy", "cv2", "sqlalchemy", "pyarrow", "sklearn", "scipy", "matplotlib", "fastapi", "uvicorn",
    "confluent_kafka", "s3fs", "fsspec", "pyspark", "psycopg", "dlib", "trackers", "supervision",
)  # fmt: skip


def imported(*args: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "visionlake", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    names = set()
    for line in out.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            names.add(line.rsplit("|", 1)[1].strip().split(".")[0])
    assert "typer" in names, "no import report: did -X importtime change?"
    return names


@pytest.mark.parametrize(
    "args",
    [
        ("--help",),
        ("--version",),
        ("worker", "--help"),
        ("ingest", "video", "--help"),
        ("report", "visitors", "--help"),
        ("tracks", "--help"),
        ("faces", "enroll", "--help"),
        ("bovw", "run", "--help"),
        ("serve", "--help"),
    ],
)
def test_start_up_imports_no_heavy_library(args):
    assert not imported(*args) & set(HEAVY)


def _callbacks(app):
    for info in app.registered_commands:
        yield info.callback
    for group in app.registered_groups:
        if group.typer_instance.registered_callback:
            yield group.typer_instance.registered_callback.callback
        yield from _callbacks(group.typer_instance)


def test_command_annotations_are_evaluated_once_at_import():
    """Typer evaluates string annotations (`from __future__ import annotations`) for every command
    of the tree on each start: about 100 ms of `--help`'s 0.3 s budget. The CLI modules keep theirs
    as objects."""
    from visionlake.cli import app

    callbacks = list(_callbacks(app))
    assert len(callbacks) > 40
    strings = [f"{cb.__module__}.{cb.__qualname__}" for cb in callbacks
               if any(isinstance(a, str) for a in cb.__annotations__.values())]  # fmt: skip
    assert not strings, f"string annotations in CLI commands: {strings}"
