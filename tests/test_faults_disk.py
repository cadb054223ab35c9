"""Fault injection: the disk fills up under the embedded log and under the archive, then room comes back.

A small tmpfs (mounted by the test: root with mount rights, as in this container) holds the log or the
archive alone; where mounting is refused the log test falls back to RLIMIT_FSIZE on the ingest process
(Python ignores SIGXFSZ, so a write past the limit fails with EFBIG) and the archive test skips (a file
size limit applies to every file the worker writes, the SQLite WAL first, so it cannot fill the archive
alone). Expectations: a clear message and exit code, never a traceback; once there is room a new run
completes and every invariant (tests/invariants.py) holds.

Each test prints ``seed=N``; ``VISIONLAKE_FAULT_SEED=N`` replays its schedule.
"""

from __future__ import annotations

import json
import re
import resource
import signal
import time

import pytest
from faultlib import (
    VL,
    crash_argv,
    fault_rng,
    log_opener,
    no_traceback,
    publish,
    reap_processes,
    results_count,
    small_filesystems,
    vl_argv,
    wait_for,
)
from invariants import OffsetMonitor, assert_invariants, check_invariants, read_topic
from media import cameras_covering, sample

from visionlake.frames import decode_image
from visionlake.lake import Lake
from visionlake.log.base import DEFAULT_PARTITIONS

FACES = ("haar-face", "1")
KIB = 1024


@pytest.fixture(autouse=True)
def _reap():
    """No worker or ingest outlives its test, even a failed one."""
    yield from reap_processes()


@pytest.fixture
def small_fs(tmp_path):
    """small_fs(name, size_kib, why): a tmpfs mounted under tmp_path; skips, saying why, where refused."""
    yield from small_filesystems(tmp_path)


def flat(text: str) -> str:
    """Log lines as one line of words: log messages may be wrapped at the terminal width."""
    return " ".join(text.split())


def ingest_argv(lake: Lake, log: str) -> list[str]:
    video = str(sample("Megamind.avi"))  # 270 frames, about 5 KB each at 160x120
    return vl_argv(
        lake,
        "ingest",
        "video",
        video,
        "--camera",
        "lobby",
        "--resize",
        "160x120",
        "--format",
        "json",
        log=log,
    )


def file_size_limit(limit: int):
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


# --- the embedded log's disk ---------------------------------------------------------------------


@pytest.mark.parametrize("how", ["tmpfs", "rlimit"])
def test_log_disk_full_ingest_fails_clearly_then_all_recovers(how, tmp_path, small_fs, request):
    rng, seed = fault_rng(request.node.name)
    ctx = f"seed={seed} {how}"
    if how == "tmpfs":
        fs = small_fs("logfs", 16 * 1024, "the [rlimit] variant fills the log with a file size limit instead")
        log_dir = fs.path / "log"
    else:
        fs, log_dir = None, tmp_path / "log"
    url = f"sqlite://{log_dir}"
    lake = Lake(lake=tmp_path / "lake", log=url)
    lake.log.ensure_topic("frames")
    lake.catalog  # noqa: B018
    procs = tmp_path / "procs"

    # an ingest runs out of room: a clear message, exit code 3, what was written stays readable
    room = rng.randint(250, 700) * KIB
    if fs is not None:
        fs.fill(leave=room)
        first = VL(ingest_argv(lake, url), procs, "ingest-full-disk")
    else:
        first = VL(ingest_argv(lake, url), procs, "ingest-full-disk", preexec_fn=file_size_limit(room))
    rc = first.wait(120)
    err = first.stderr()
    no_traceback(err, "the ingest")
    assert rc == 3, f"[{ctx}] exit code {rc}:\n{err[-2000:]}"
    said = flat(err)
    assert "cannot write to the frame log" in said and ("disk full" in said or "file too large" in said), err
    recs, problem = read_topic(lake.log, "frames")
    assert problem is None, problem
    assert 0 < len(recs) < 270, f"[{ctx}] {len(recs)} records before the disk filled"
    for r in recs:
        decode_image(r.value)
    print(f"[{ctx}] the ingest stopped after {len(recs)} records ({room // KIB} KiB of room)")

    # room again: the same video ingested again, whole, and a worker does every frame once
    if fs is not None:
        fs.make_room()
    again = VL(ingest_argv(lake, url), procs, "ingest-again")
    assert again.wait(120) == 0, again.stderr()
    n = json.loads(again.stdout())["frames"]
    assert n == 270
    worker = VL(
        vl_argv(lake, "worker", "--detector", "haar-face", "--until-idle", "--idle-timeout", "1", log=url),
        procs,
        "worker",
    )
    assert worker.wait(120) == 0, worker.stderr()
    assert_invariants(lake, [FACES], ctx, groups=["haar-face.1"], expected_frames=n)
    lake.close()


@pytest.mark.parametrize(
    "moment",
    [
        "before-flush",
        "before-commit",  # SqliteLog.write let 'database or disk is full' out: the worker died
    ],
)
def test_log_disk_fills_under_a_worker_it_waits_for_room(moment, tmp_path, small_fs, request):
    """The log's disk fills up right before the n-th flush of the worker's events, or right after it
    (before the commit); either way the worker must wait for room, then finish, losing nothing."""
    rng, seed = fault_rng(request.node.name)
    nth = rng.randint(1, 4)
    ctx = f"seed={seed} {moment} #{nth}"
    fs = small_fs("logfs", 16 * 1024, "a file size limit cannot fill a disk under a running worker")
    url = f"sqlite://{fs.path / 'log'}"
    lake = Lake(lake=tmp_path / "lake", log=url)
    n = sum(publish(lake, cam, 20, "Megamind.avi") for cam in cameras_covering(DEFAULT_PARTITIONS))
    lake.catalog  # noqa: B018
    group = "haar-face.1"
    argv = vl_argv(
        lake,
        "worker",
        "--detector",
        "haar-face",
        "--until-idle",
        "--idle-timeout",
        "2",
        "--format",
        "json",
        log=url,
    )
    point = "publish" if moment == "before-flush" else "commit"
    with OffsetMonitor(log_opener(lake), group) as monitor:
        worker = VL(crash_argv(point, nth, argv, f"fill:{fs.filler}"), tmp_path / "procs", "worker")
        wait_for(
            lambda: worker.poll() is not None or "cannot write to the frame log" in flat(worker.stderr()),
            60,
            f"the worker to find its log disk full [{ctx}]",
        )
        time.sleep(rng.uniform(0.2, 1.5))
        fs.make_room()
        rc = worker.wait(120)
        err = worker.stderr()
    no_traceback(err, "the worker")
    assert rc == 0, f"[{ctx}] exit code {rc}:\n{err[-2000:]}"
    stats = json.loads(worker.stdout())
    assert stats["retries"] >= 1 and "disk full" in flat(err) and "retrying" in err, (ctx, stats)
    assert_invariants(lake, [FACES], ctx, groups=[group], monitors=[monitor], expected_frames=n)
    lake.close()


def test_worker_started_on_a_full_log_disk_says_so_and_exits_3(tmp_path, small_fs, request):
    fault_rng(request.node.name)
    fs = small_fs("logfs", 1024, "a file size limit cannot leave the log's disk full for the next process")
    url = f"sqlite://{fs.path / 'log'}"
    lake = Lake(lake=tmp_path / "lake", log=url)
    lake.catalog  # noqa: B018
    full = VL(ingest_argv(lake, url), tmp_path / "procs", "ingest")  # fills the 1 MiB disk
    assert full.wait(120) == 3, full.stderr()
    worker = VL(
        vl_argv(lake, "worker", "--detector", "haar-face", "--until-idle", "--idle-timeout", "1", log=url),
        tmp_path / "procs",
        "worker",
    )
    # Depending on the few bytes left, the worker cannot even join (exit 3 at once), or it joins and
    # waits for room, saying so at each retry; asked to stop while waiting, it exits 3 as well.
    wait_for(
        lambda: worker.poll() is not None or "retrying" in worker.stderr(),
        60,
        "the worker to stop, or to wait for room on the log's disk",
    )
    if worker.poll() is None:
        worker.proc.send_signal(signal.SIGTERM)
    rc = worker.wait(60)
    err = worker.stderr()
    no_traceback(err, "a worker started on a full log disk")
    assert rc == 3 and "frame log" in err, f"exit code {rc}:\n{err[-2000:]}"
    # a retried batch queues its events once, not once more at each retry
    queued = [int(n) for n in re.findall(r"the (\d+) queued records are kept", err)]
    assert len(set(queued)) <= 1, queued


# --- the archive's disk ----------------------------------------------------------------------------


class LeftoverTempFile(AssertionError):
    """A failed archive write left its temporary file behind (fixed: it is removed whatever happens)."""


def test_archive_disk_full_stops_cleanly_then_all_recovers(tmp_path, small_fs, request):
    rng, seed = fault_rng(request.node.name)
    ctx = f"seed={seed}"
    fs = small_fs(
        "archivefs", 1024, "a file size limit applies to every file the worker writes (the SQLite WAL first)"
    )
    archive = str(fs.path / "archive")
    lake = Lake(lake=tmp_path / "lake", archive=archive)
    n = sum(publish(lake, cam, 20, "Megamind.avi") for cam in cameras_covering(DEFAULT_PARTITIONS))
    lake.catalog  # noqa: B018
    fs.fill(leave=rng.randint(80, 250) * KIB)  # room for some 15-50 of the 80 images
    group = "haar-face.1"
    args = ("worker", "--detector", "haar-face", "--until-idle", "--idle-timeout", "2", "--format", "json")
    with OffsetMonitor(log_opener(lake), group) as monitor:
        first = VL(vl_argv(lake, *args, archive=archive), tmp_path / "procs", "worker-full-disk")
        # the worker either stops with a clear error or waits for room (a retry line)
        wait_for(
            lambda: first.poll() is not None or "retrying" in first.stderr() or "error:" in first.stderr(),
            60,
            f"the worker to hit the full disk [{ctx}]",
        )
        if "error:" in first.stderr():
            first.wait(30)
        stopped = first.poll() is not None
        done_before = results_count(lake)
        fs.make_room()
        rc = first.wait(120)
        err = first.stderr()
        no_traceback(err, "the worker")
        if stopped:
            assert rc != 0 and "error:" in err and "No space left on device" in err, (
                f"[{ctx}] rc={rc}:\n{err[-2000:]}"
            )
            print(
                f"[{ctx}] the worker stopped (exit {rc}) with {done_before} frames done: {err.strip()[-300:]}"
            )
            last = VL(vl_argv(lake, *args, archive=archive), tmp_path / "procs", "worker-again")
            assert last.wait(120) == 0, last.stderr()
            no_traceback(last.stderr(), "the second worker")
        else:
            assert rc == 0, f"[{ctx}]\n{err[-2000:]}"
    rep = check_invariants(lake, [FACES], groups=[group], monitors=[monitor], expected_frames=n)
    leftovers = [
        p for p in rep.violations.get("archive object without a frame row", []) if p.endswith(".tmp")
    ]
    others = {k: [v for v in vs if v not in leftovers] for k, vs in rep.violations.items()}
    rep.violations.clear()
    rep.violations.update({k: v for k, v in others.items() if v})
    rep.assert_ok(ctx)
    if leftovers:
        raise LeftoverTempFile(f"[{ctx}] partial temporary files left in the archive: {leftovers}")
    lake.close()
