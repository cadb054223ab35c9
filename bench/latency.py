"""Publish-to-catalog latency with 2 cameras at 15 fps each and one worker process.

Two threads of this process act as cameras: each publishes real JPEG frames (320x240, quality 90,
pre-encoded so that encoding does not steal CPU from the worker) through its own `FramePublisher`,
paced in real time at 15 fps. The frame's `captured_at` is the wall clock (UTC) at the moment it is
handed to `FramePublisher.publish` (which flushes, i.e. commits, every frame at 15 fps since its
linger is 50 ms). One `python -m visionlake worker --detector <fastest> --until-idle` process runs
the detector; it joined the group before streaming starts.

Latency per frame = `results.processed_at - frames.captured_at`, both read from the catalog after
the run. `processed_at` is stamped by the worker right after detection, before the catalog write of
its batch commits, so the time to commit the batch (a few ms) is not included.

Baseline: the bare per-frame time of the same detector (cv2.imdecode + detect) on the same frames,
measured in this process, half of the frames before streaming and half after (p50; p99 reported as
an extra). The bare loop runs in a child process with OMP_NUM_THREADS=1, as the worker process is
started (`scaling.start_worker`), so that both sides detect with the same threads. The worker is stopped with SIGTERM once the catalog holds every frame.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import common
from common import emit, percentile, say
from worker_throughput import available

from visionlake.detectors import load_detector
from visionlake.ingest.publish import FramePublisher
from visionlake.ingest.sources import CapturedFrame
from visionlake.lake import FRAMES_TOPIC, Lake
from visionlake.workers import scaling

SIZE = (320, 240)
QUALITY = 90
FPS = 15.0
CAMERAS = 2
GROUP = "bench-latency"


def bare_times(name: str, jpegs: list[bytes]) -> list[float]:
    """Per-frame decode + detect times in a child process started as the worker is (one OpenMP thread:
    `scaling.start_worker`'s environment), so that both sides detect with the same threads."""
    with tempfile.TemporaryDirectory(prefix="vl-bare-") as d:
        frames = Path(d) / "frames.pickle"
        frames.write_bytes(pickle.dumps(jpegs))
        env = common.child_env(OMP_NUM_THREADS="1")
        out = subprocess.run(
            [sys.executable, __file__, "--bare", name, str(frames)],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
    return json.loads(out.stdout)


def _bare_loop(name: str, jpegs: list[bytes]) -> list[float]:
    det = load_detector(name)
    for j in jpegs[:3]:
        det.detect(common.decode(j))
    out = []
    for j in jpegs:
        t = time.perf_counter()
        det.detect(common.decode(j))
        out.append((time.perf_counter() - t) * 1000)
    return out


def camera_thread(errors: list, *args: object) -> None:
    try:
        camera(*args)  # type: ignore[arg-type]
    except BaseException as e:  # re-raised by the main thread after join
        errors.append(e)


def camera(
    lake_dir: Path, cam: str, frames: list, jpegs: list[bytes], t_start: float, flush_ms: list
) -> None:
    # One Lake per camera thread: a SqliteLog's own connection is not safe to share between threads
    # (FramePublisher's ensure_topic on a shared Lake fails with "cannot start a transaction within a
    # transaction" when two threads create publishers at once).
    lake = Lake(lake=lake_dir)
    pub = FramePublisher(lake, cam)
    try:
        for i, (im, data) in enumerate(zip(frames, jpegs, strict=True)):
            due = t_start + i / FPS
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            t = time.perf_counter()
            pub.publish(CapturedFrame(im, i, datetime.now(UTC), f"{cam}#{i}", data=data))
            flush_ms.append((time.perf_counter() - t) * 1000)
    finally:
        pub.close()
        lake.close()


def run(quick: bool, tmp: Path) -> list[dict]:
    seconds = 12.0 if quick else 60.0
    per_cam = int(seconds * FPS)
    images_all = common.video_frames(SIZE)
    jpegs_all = common.jpeg_frames(SIZE, QUALITY)

    # the fastest bundled detector: yuface (libfacedetection) when installed, else haar-face
    name = "yuface" if available("yuface") else "haar-face"
    bare_n = 100 if quick else 300
    bare = bare_times(name, common.cycle(jpegs_all, bare_n // 2))  # the other half after streaming
    say(
        f"latency: {CAMERAS} cameras x {FPS:g} fps for {seconds:g} s, worker {name} "
        f"(bare p50 before {percentile(bare, 50):.1f} ms)"
    )

    lake_dir = tmp / "latency"
    lake = Lake(lake=lake_dir)
    lake.log.ensure_topic(FRAMES_TOPIC)
    saved = dict(os.environ)
    os.environ.update(common.child_env())
    try:
        procs = scaling.spawn(
            ["--lake", str(lake_dir)],
            ["--detector", name, "--group", GROUP, "--until-idle", "--idle-timeout", "30"],
            1,
        )
    finally:
        os.environ.clear()
        os.environ.update(saved)
    flush_ms: list[float] = []
    errors: list[BaseException] = []
    try:
        common.wait_for_members(lake, GROUP, 1, procs)
        wpid = procs[0].proc.pid
        cpu0, (busy0, _t0) = common.proc_cpu(wpid), common.machine_cpu()
        wall0 = time.monotonic()
        t_start = time.monotonic() + 0.2
        threads = []
        for k in range(CAMERAS):
            start = k * 300  # different parts of the video per camera
            th = threading.Thread(
                target=camera_thread,
                args=(
                    errors,
                    lake_dir,
                    f"cam-{k}",
                    common.cycle(images_all, per_cam, start),
                    common.cycle(jpegs_all, per_cam, start),
                    t_start + k / (FPS * CAMERAS),  # cameras out of phase, as real ones are
                    flush_ms,
                ),
            )
            th.start()
            threads.append(th)
        for th in threads:
            th.join()
        if errors:
            raise errors[0]
        expected = per_cam * CAMERAS
        deadline = time.monotonic() + 120
        while True:  # every frame in the catalog: stop the worker instead of waiting out its idle timeout
            (count,) = common.catalog_rows(lake_dir, "SELECT count(*) FROM results")[0]
            if count >= expected or procs[0].proc.poll() is not None or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        window = time.monotonic() - wall0
        worker_cores = (common.proc_cpu(wpid) - cpu0) / window
        other_cores = (common.machine_cpu()[0] - busy0) / window - worker_cores
        procs[0].proc.send_signal(signal.SIGTERM)
        summaries = scaling.collect(procs)
    finally:
        for w in procs:
            if w.proc.poll() is None:
                w.proc.kill()
                w.proc.wait()
    lake.close()
    bare += bare_times(name, common.cycle(jpegs_all, bare_n - bare_n // 2, start=bare_n // 2))
    bare_p50, bare_p99 = percentile(bare, 50), percentile(bare, 99)

    rows = common.catalog_rows(
        lake_dir,
        "SELECT f.captured_at, r.processed_at, r.latency_ms FROM frames f JOIN results r"
        " ON r.frame_id = f.frame_id WHERE r.model = ?",
        (name,),
    )
    if len(rows) != expected:
        raise RuntimeError(f"latency: {len(rows)} results in the catalog, expected {expected}")
    lat = [(common.catalog_time(p) - common.catalog_time(c)) * 1000 for c, p, _ in rows]
    worker_ms = [x for _, _, x in rows]
    extra = {
        "n": expected,
        "detector": name,
        "cameras": CAMERAS,
        "fps_per_camera": FPS,
        "stream_seconds": seconds,
        "frame_size": f"{SIZE[0]}x{SIZE[1]}",
        "bare_p99_ms": bare_p99,
        "worker_decode_detect_p50_ms": percentile(worker_ms, 50),
        "publish_call_p50_ms": percentile(flush_ms, 50),
        "latency_max_ms": max(lat),
        "worker_utilisation": percentile(worker_ms, 50) * FPS * CAMERAS / 1000,
        "worker_cores": worker_cores,
        "other_cores": max(0.0, other_cores),
        "worker_summary": {k: summaries[0][k] for k in ("processed", "seconds", "fps")},
        "loadavg_1m": common.loadavg(),
    }
    notes = (
        "latency = results.processed_at - frames.captured_at (captured_at = wall clock when the frame "
        "is handed to FramePublisher.publish, which commits it at 15 fps); processed_at is stamped after "
        "detection, before the batch's catalog commit; worker_utilisation = worker decode+detect p50 x "
        "30 frames/s; worker_cores / other_cores = CPU used by the worker process / by everything else "
        "(the 2 camera threads of this process, other users of the machine) while streaming"
    )
    return [
        emit(
            "publish_to_catalog_latency_p50",
            percentile(lat, 50),
            "ms",
            f"bare decode+detect per frame p50 ({name})",
            bare_p50,
            **extra,
            notes=notes,
        ),
        emit(
            "publish_to_catalog_latency_p99",
            percentile(lat, 99),
            "ms",
            f"bare decode+detect per frame p50 ({name})",
            bare_p50,
            **extra,
            notes=notes,
        ),
    ]


if __name__ == "__main__":  # python bench/latency.py --bare DETECTOR FRAMES.pickle: the baseline's child
    assert sys.argv[1] == "--bare", "run through bench/run.py --only latency"
    print(json.dumps(_bare_loop(sys.argv[2], pickle.loads(Path(sys.argv[3]).read_bytes()))))
