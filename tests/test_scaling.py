"""Worker processes (`visionlake worker --processes N`): collecting children's output and exit codes.

The `collect` tests use plain Python children, so they show the parent's side alone; the CLI tests
run real `visionlake worker` children that fail the way users make them fail.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from visionlake.errors import BackendUnavailable, InputError, VisionlakeError
from visionlake.workers.scaling import WorkerProcess, collect


def child(code: str) -> WorkerProcess:
    args = [sys.executable, "-c", code]
    return WorkerProcess(args, subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE))


def test_a_chatty_child_does_not_stall_while_another_is_waited_for(tmp_path):
    # the first child finishes only after the second has written 2 MB to stderr: reading the
    # children's pipes one child at a time never gets there (the second blocks on a full pipe)
    done = tmp_path / "second-done"
    first = child(
        "import os, sys, time\n"
        f"deadline = time.monotonic() + 20\n"
        f"while not os.path.exists({str(done)!r}):\n"
        "    if time.monotonic() > deadline:\n"
        "        sys.exit('the second child never finished')\n"
        "    time.sleep(0.05)\n"
        "print('{\"child\": 1}')\n"
    )
    second = child(
        "import sys\n"
        "for _ in range(2048):\n"
        "    sys.stderr.write('x' * 1023 + '\\n')\n"
        "sys.stderr.flush()\n"
        f"open({str(done)!r}, 'w').close()\n"
        "print('{\"child\": 2}')\n"
    )
    started = time.monotonic()
    assert collect([first, second]) == [{"child": 1}, {"child": 2}]
    assert time.monotonic() - started < 15


@pytest.mark.parametrize(
    ("code", "cls"), [(2, InputError), (3, BackendUnavailable), (1, VisionlakeError), (7, VisionlakeError)]
)
def test_a_child_exit_code_is_the_parents(code, cls):
    failing = child(
        f"import sys\nprint('noise', file=sys.stderr)\nprint('error: the reason', file=sys.stderr)\nsys.exit({code})"
    )
    with pytest.raises(VisionlakeError) as e:
        collect([child("print('{}')"), failing])
    assert type(e.value) is cls
    assert e.value.exit_code == (code if code in (2, 3) else 1)
    assert f"exited with {code}" in str(e.value) and "error: the reason" in str(e.value)


def test_a_failed_child_stops_its_siblings():
    # a sibling that would run until told to stop finishes its work on SIGTERM, as a worker does
    sibling = child(
        "import signal, sys, time\n"
        "signal.signal(signal.SIGTERM, lambda *a: (print('{}'), sys.exit(0)))\n"
        "time.sleep(60)\n"
    )
    time.sleep(0.5)  # the handler is in place
    started = time.monotonic()
    with pytest.raises(BackendUnavailable):
        collect([sibling, child("import sys; sys.exit(3)")])
    assert time.monotonic() - started < 20
    assert sibling.proc.returncode == 0


# --- through the CLI ----------------------------------------------------------------------------


def run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VISIONLAKE_")}
    env["COLUMNS"] = "1000"
    cmd = [sys.executable, "-m", "visionlake", "--lake", str(tmp_path / "lake"), *args]
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


def error_line(proc: subprocess.CompletedProcess) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_cli_bad_topic_in_the_children_exits_2(tmp_path):
    # the parent does not open the log: the topic name is checked by each child
    proc = run(
        tmp_path, "worker", "-d", "haar-face", "--processes", "2", "--topic", "bad topic", "--until-idle"
    )
    assert proc.returncode == 2, proc.stderr
    assert "invalid topic name" in error_line(proc)


def test_cli_unreachable_catalog_in_the_children_exits_3(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"postgresql://u@127.0.0.1:{port}/db"
    proc = run(tmp_path, "--catalog", url, "worker", "-d", "haar-face", "--processes", "2", "--until-idle")
    assert proc.returncode == 3, proc.stderr
    assert f"127.0.0.1:{port}" in error_line(proc)
