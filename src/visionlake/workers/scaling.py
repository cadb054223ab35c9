"""Running several workers as separate processes (`visionlake worker --processes N`, the demo).

Each child is a plain `visionlake worker ... --format json` process: the same thing a user starts by
hand on another terminal or machine, so scaling out needs no other machinery. The parent collects
each child's JSON summary and forwards SIGINT/SIGTERM so every child finishes its frame and commits.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import IO

from ..errors import BackendUnavailable, InputError, VisionlakeError


@dataclass
class WorkerProcess:
    args: list[str]
    proc: subprocess.Popen


def worker_command(global_args: Sequence[str], worker_args: Sequence[str]) -> list[str]:
    return [sys.executable, "-m", "visionlake", *global_args, "worker", *worker_args, "--format", "json"]


def spawn(
    global_args: Sequence[str],
    worker_args: Sequence[str],
    n: int = 1,
    child_args: Callable[[int], Sequence[str]] | None = None,
) -> list[WorkerProcess]:
    """Start `n` workers. Each gets one OpenMP thread: processes, not threads, share the cores.

    `child_args(i)`: options of child i only (`--metrics-port` port + i), after `worker_args`.
    """
    return [
        start_worker(global_args, [*worker_args, *(child_args(i) if child_args is not None else [])])
        for i in range(n)
    ]


def start_worker(
    global_args: Sequence[str], worker_args: Sequence[str], stderr: int | None = subprocess.PIPE
) -> WorkerProcess:
    """One worker process with one OpenMP thread; its stdout (the JSON summary) is a pipe."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = worker_command(global_args, worker_args)
    return WorkerProcess(cmd, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=stderr, env=env))


def collect(workers: list[WorkerProcess]) -> list[dict]:
    """Wait for every child; returns their summaries. Forwards Ctrl-C / SIGTERM to the children.

    All pipes are read at once: a child that fills its stderr pipe while another is waited for
    would otherwise block for good. When a child fails, the others are stopped (SIGTERM: they finish
    their frame and commit) and the child's exit code becomes the parent's: 2 bad input, 3 a backend
    unreachable, 1 anything else.
    """

    def forward(signum: int, _frame: object) -> None:
        for w in workers:
            if w.proc.poll() is None:
                w.proc.send_signal(signum)

    old = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        readers = [PipeReader(w.proc.stdout) for w in workers] + [PipeReader(w.proc.stderr) for w in workers]
        failed: WorkerProcess | None = None
        while any(w.proc.poll() is None for w in workers):
            if failed is None:
                failed = next((w for w in workers if w.proc.poll()), None)
                if failed is not None:
                    forward(signal.SIGTERM, None)
            time.sleep(0.05)
        for r in readers:
            r.join()
        outs, errs = readers[: len(workers)], readers[len(workers) :]
        failed = failed or next((w for w in workers if w.proc.returncode), None)
        if failed is not None:
            err = errs[workers.index(failed)].text()
            raise _child_error(failed.proc.returncode, err)
        results = []
        for w, out, err in zip(workers, outs, errs, strict=True):
            lines = out.text().strip().splitlines()
            if not lines:
                raise _child_error(w.proc.returncode, err.text(), "printed no summary")
            results.append(json.loads(lines[-1]))
        return results
    finally:
        for s, h in old.items():
            signal.signal(s, h)


class PipeReader(threading.Thread):
    """Reads one pipe to its end, so that the child never blocks writing to it."""

    def __init__(self, pipe: IO[bytes] | None) -> None:
        super().__init__(daemon=True)
        self.pipe = pipe
        self.chunks: list[bytes] = []
        self.start()

    def run(self) -> None:
        if self.pipe is None:
            return
        with self.pipe:
            while chunk := self.pipe.read1(65536):
                self.chunks.append(chunk)

    def text(self) -> str:
        return b"".join(self.chunks).decode(errors="replace")


#: Exit codes that mean the same in every visionlake process (see errors.py).
_EXIT_CLASSES: dict[int, type[VisionlakeError]] = {
    InputError.exit_code: InputError,
    BackendUnavailable.exit_code: BackendUnavailable,
}


def _child_error(code: int, stderr: str, what: str | None = None) -> VisionlakeError:
    tail = stderr.strip().splitlines()[-5:]
    cls = _EXIT_CLASSES.get(code, VisionlakeError)
    return cls(f"worker process {what or f'exited with {code}'}: " + " | ".join(tail))
