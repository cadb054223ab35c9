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
from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import VisionlakeError


@dataclass
class WorkerProcess:
    args: list[str]
    proc: subprocess.Popen


def worker_command(global_args: Sequence[str], worker_args: Sequence[str]) -> list[str]:
    return [sys.executable, "-m", "visionlake", *global_args, "worker", *worker_args, "--format", "json"]


def spawn(global_args: Sequence[str], worker_args: Sequence[str], n: int = 1) -> list[WorkerProcess]:
    """Start `n` workers. Each gets one OpenMP thread: processes, not threads, share the cores."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = []
    for _ in range(n):
        cmd = worker_command(global_args, worker_args)
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        out.append(WorkerProcess(cmd, proc))
    return out


def collect(workers: list[WorkerProcess]) -> list[dict]:
    """Wait for every child; returns their summaries. Forwards Ctrl-C / SIGTERM to the children."""

    def forward(signum: int, _frame: object) -> None:
        for w in workers:
            if w.proc.poll() is None:
                w.proc.send_signal(signum)

    old = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        results = []
        for w in workers:
            out, err = w.proc.communicate()
            if w.proc.returncode != 0:
                tail = err.decode(errors="replace").strip().splitlines()[-5:]
                raise VisionlakeError(f"worker process exited with {w.proc.returncode}: " + " | ".join(tail))
            results.append(json.loads(out.decode().strip().splitlines()[-1]))
        return results
    finally:
        for s, h in old.items():
            signal.signal(s, h)
