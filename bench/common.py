"""Shared helpers of the benchmarks: JSON-lines output, timing, percentiles, real JPEG frames.

Every benchmark prints one JSON object per line on stdout::

    {"metric": ..., "value": x, "unit": ..., "baseline": ..., "baseline_value": y, "ratio": x / y, ...}

Progress messages go to stderr so stdout stays machine-readable.

Frames are real: the frames of OpenCV's sample video vtest.avi (Debian package opencv-doc), resized
with INTER_AREA and JPEG-encoded by OpenCV. Nothing here uses random bytes.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
import sys
import time
import zlib
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

VIDEO = Path("/usr/share/doc/opencv-doc/examples/data/vtest.avi")
SRC = Path(__file__).resolve().parent.parent / "src"


def say(msg: str) -> None:
    """Progress message on stderr."""
    print(f"# {msg}", file=sys.stderr, flush=True)


def _round(x: float) -> float:
    if x == 0 or not math.isfinite(x):
        return x
    digits = max(0, 4 - int(math.floor(math.log10(abs(x)))))
    return round(x, digits)


def _round_all(v: object) -> object:
    if isinstance(v, float):
        return _round(v)
    if isinstance(v, list | tuple):
        return [_round_all(x) for x in v]
    if isinstance(v, dict):
        return {k: _round_all(x) for k, x in v.items()}
    return v


def emit(
    metric: str,
    value: float,
    unit: str,
    baseline: str,
    baseline_value: float,
    *,
    ratio: float | None = None,
    **extra: object,
) -> dict:
    """Print one benchmark result as a JSON line and return it."""
    if ratio is None:
        ratio = value / baseline_value if baseline_value else float("nan")
    out = {
        "metric": metric,
        "value": _round(float(value)),
        "unit": unit,
        "baseline": baseline,
        "baseline_value": _round(float(baseline_value)),
        "ratio": _round(float(ratio)),
    }
    for k, v in extra.items():
        out[k] = _round_all(v)
    print(json.dumps(out), flush=True)
    return out


def emit_skipped(metric: str, unit: str, baseline: str, reason: str, **extra: object) -> dict:
    """Print the JSON line of a benchmark that could not run here (nulls, plus "skipped": reason)."""
    out = {
        "metric": metric,
        "value": None,
        "unit": unit,
        "baseline": baseline,
        "baseline_value": None,
        "ratio": None,
        "skipped": reason,
        **extra,
    }
    print(json.dumps(out), flush=True)
    return out


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default), q in [0, 100]."""
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def loadavg() -> float:
    """1-minute load average (other processes on the machine skew wall-clock numbers)."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


_TICK = os.sysconf("SC_CLK_TCK")


def proc_cpu(pid: int) -> float:
    """CPU seconds (user + system, all threads) a live process has used so far."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        stat = f.read()
    fields = stat[stat.rindex(b")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime (fields 14 and 15 of stat)


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, from /proc/stat."""
    with open("/proc/stat") as f:
        vals = [int(x) for x in f.readline().split()[1:]]
    idle = vals[3] + (vals[4] if len(vals) > 4 else 0)  # idle + iowait
    total = sum(vals[:8])  # guest time is already counted in user
    return (total - idle) / _TICK, total / _TICK


class Timer:
    """`with Timer() as t: ...` then `t.seconds` (perf_counter)."""

    def __enter__(self) -> Timer:
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.start


# --- frames --------------------------------------------------------------------------------------


@lru_cache(maxsize=4)
def video_frames(size: tuple[int, int], limit: int | None = None) -> tuple[np.ndarray, ...]:
    """Frames of vtest.avi resized to `size` (width, height), decoded once per run."""
    if not VIDEO.is_file():
        raise SystemExit(f"{VIDEO} not found: install the Debian package opencv-doc")
    cap = cv2.VideoCapture(str(VIDEO))
    out = []
    try:
        while limit is None or len(out) < limit:
            ok, image = cap.read()
            if not ok or image is None:
                break
            out.append(cv2.resize(image, size, interpolation=cv2.INTER_AREA))
    finally:
        cap.release()
    if not out:
        raise SystemExit(f"OpenCV could not decode {VIDEO}")
    return tuple(out)


@lru_cache(maxsize=8)
def jpeg_frames(size: tuple[int, int], quality: int, limit: int | None = None) -> tuple[bytes, ...]:
    """The video frames at `size`, JPEG-encoded at `quality` (distinct real frames, at most 795)."""
    return tuple(
        cv2.imencode(".jpg", im, [cv2.IMWRITE_JPEG_QUALITY, quality])[1].tobytes()
        for im in video_frames(size, limit)
    )


def cycle(items: tuple, n: int, start: int = 0) -> list:
    """`n` items taken cyclically from `items` beginning at `start`."""
    return [items[(start + i) % len(items)] for i in range(n)]


def decode(data: bytes) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)


# --- lakes and worker processes ---------------------------------------------------------------


def cameras_on_distinct_partitions(k: int, partitions: int = 4) -> list[str]:
    """`k` camera ids whose keys hash (CRC32, as the log's partitioner) to distinct partitions."""
    out, seen, i = [], set(), 0
    while len(out) < k:
        name = f"cam-{i}"
        p = (zlib.crc32(name.encode()) & 0xFFFFFFFF) % partitions
        if p not in seen or len(seen) == partitions:
            seen.add(p)
            out.append(name)
        i += 1
    return out


def child_env(**extra: str) -> dict[str, str]:
    """Environment for worker subprocesses (the visionlake package importable, quiet progress)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SRC), env.get("PYTHONPATH", "")) if p)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.update(extra)
    return env


def wait_for_members(lake, group: str, n: int, procs: list, timeout: float = 60.0) -> float:
    """Wait until `n` members joined `group` of the lake's log; returns the seconds waited."""
    t0 = time.monotonic()
    while True:
        groups = {g.group: g for g in lake.log.groups()}
        g = groups.get(group)
        if g is not None and len(g.members) >= n:
            return time.monotonic() - t0
        for w in procs:
            proc = getattr(w, "proc", w)
            if proc.poll() is not None:
                err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                raise RuntimeError(f"worker process exited early ({proc.returncode}): {err[-2000:]}")
        if time.monotonic() - t0 > timeout:
            raise RuntimeError(f"only {g and len(g.members)} of {n} workers joined {group} in {timeout} s")
        time.sleep(0.02)


def catalog_rows(lake_dir: Path, sql: str, params: tuple = ()) -> list[tuple]:
    """Rows of a read-only query on the lake's SQLite catalog."""
    conn = sqlite3.connect(f"file:{lake_dir / 'catalog.db'}?mode=ro", uri=True)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def catalog_time(text: str) -> float:
    """A catalog DateTime (naive UTC text as SQLAlchemy stores it in SQLite) as a POSIX timestamp."""
    ts = datetime.fromisoformat(text)
    return ts.replace(tzinfo=UTC).timestamp()
