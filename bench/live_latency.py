"""Frame-to-browser latency of the dashboard's live view: 2 cameras at 15 fps, one worker, `serve`.

The cameras and the worker are those of the publish-to-catalog latency benchmark (`latency.py`):
two threads of this process publish real JPEG frames (320x240) in real time, one worker process runs
the fastest bundled detector. A `visionlake serve` process serves the lake, and a client thread does
what the live page's script does: it listens to `/api/live/stream` (Server-Sent Events) and, for
each frame announced, fetches `/image/<id>.jpg?boxes=1` (the frame with its boxes drawn).

Latency per frame shown = the moment the client has the image's last byte - the frame's
`captured_at` (the wall clock when the camera thread handed it to the publisher). The live view
shows each camera's newest processed frame, polled every 0.5 s, so it shows a sample of the frames:
`shown` says how many.

Baseline: the publish-to-catalog latency of the same frames (`results.processed_at - captured_at`),
measured in the same run: what the live view adds is the difference.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

import common
from common import emit, percentile, say
from latency import CAMERAS, FPS, QUALITY, SIZE, camera_thread
from worker_throughput import available

from visionlake.lake import FRAMES_TOPIC, Lake
from visionlake.workers import scaling

GROUP = "bench-live"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_serve(lake_dir: Path, port: int) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "visionlake", "--lake", str(lake_dir), "serve", "--port", str(port)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=common.child_env())
    import httpx

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/live", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"visionlake serve did not answer: {proc.stderr.read().decode()[-2000:]}")


def watch(url: str, stop: threading.Event, shown: list[tuple[str, str, float]], errors: list) -> None:
    """The live page's part: SSE events, then the image of each announced frame."""
    import httpx

    try:
        with (
            httpx.Client(timeout=10) as client,
            client.stream("GET", f"{url}/api/live/stream", timeout=httpx.Timeout(10, read=None)) as events,
        ):
            kind = None
            for line in events.iter_lines():
                if stop.is_set():
                    break
                if line.startswith("event:"):
                    kind = line.split(":", 1)[1].strip()
                elif line.startswith("data:") and kind == "frame":
                    item = json.loads(line.split(":", 1)[1])
                    image = client.get(f"{url}/image/{item['frame_id']}.jpg", params={"boxes": "1"})
                    image.raise_for_status()
                    shown.append((item["frame_id"], item["captured_at"], time.time()))
    except BaseException as e:  # noqa: BLE001 - reported by the main thread
        if not stop.is_set():
            errors.append(e)


def run(quick: bool, tmp: Path) -> list[dict]:
    try:
        import fastapi  # noqa: F401
        import httpx  # noqa: F401
    except ImportError as e:
        return [
            common.emit_skipped(
                "live_view_latency_p50", "ms", "publish-to-catalog latency p50", f"{e.name} not installed"
            )
        ]
    seconds = 12.0 if quick else 60.0
    per_cam = int(seconds * FPS)
    images_all = common.video_frames(SIZE)
    jpegs_all = common.jpeg_frames(SIZE, QUALITY)
    name = "yuface" if available("yuface") else "haar-face"
    say(f"live: {CAMERAS} cameras x {FPS:g} fps for {seconds:g} s, worker {name}, serve + SSE client")

    lake_dir = tmp / "live"
    lake = Lake(lake=lake_dir)
    lake.log.ensure_topic(FRAMES_TOPIC)
    lake.catalog  # noqa: B018 - the schema exists before serve opens it
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
    port = free_port()
    serve = start_serve(lake_dir, port)
    stop, shown, errors = threading.Event(), [], []
    client = threading.Thread(
        target=watch, args=(f"http://127.0.0.1:{port}", stop, shown, errors), daemon=True
    )
    try:
        common.wait_for_members(lake, GROUP, 1, procs)
        client.start()
        t_start = time.monotonic() + 0.5
        threads = []
        for k in range(CAMERAS):
            start = k * 300
            th = threading.Thread(
                target=camera_thread,
                args=(
                    errors,
                    lake_dir,
                    f"cam-{k}",
                    common.cycle(images_all, per_cam, start),
                    common.cycle(jpegs_all, per_cam, start),
                    t_start + k / (FPS * CAMERAS),
                    [],
                ),
            )
            th.start()
            threads.append(th)
        for th in threads:
            th.join()
        expected = per_cam * CAMERAS
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            (count,) = common.catalog_rows(lake_dir, "SELECT count(*) FROM results")[0]
            if count >= expected or procs[0].proc.poll() is not None:
                break
            time.sleep(0.05)
        time.sleep(1.5)  # the last frames reach the page
        stop.set()
        if errors:
            raise errors[0]
        procs[0].proc.send_signal(signal.SIGTERM)
        scaling.collect(procs)
    finally:
        stop.set()
        serve.send_signal(signal.SIGINT)
        try:
            serve.wait(10)
        except subprocess.TimeoutExpired:
            serve.kill()
        for w in procs:
            if w.proc.poll() is None:
                w.proc.kill()
                w.proc.wait()
    lake.close()
    if not shown:
        raise RuntimeError("live: the client was shown no frame")
    live = [(t - datetime.fromisoformat(c).timestamp()) * 1000 for _, c, t in shown]
    rows = common.catalog_rows(
        lake_dir,
        "SELECT f.captured_at, r.processed_at FROM frames f JOIN results r ON r.frame_id = f.frame_id",
    )
    catalog_ms = [(common.catalog_time(p) - common.catalog_time(c)) * 1000 for c, p in rows]
    extra = {
        "n": len(live),
        "frames": len(rows),
        "shown_share": len(live) / max(1, len(rows)),
        "detector": name,
        "cameras": CAMERAS,
        "fps_per_camera": FPS,
        "stream_seconds": seconds,
        "frame_size": f"{SIZE[0]}x{SIZE[1]}",
        "server_poll_s": 0.5,
        "loadavg_1m": common.loadavg(),
        "notes": "latency = client has the /image/<id>.jpg?boxes=1 bytes - frames.captured_at, for each "
        "frame the SSE stream announced (each camera's newest processed frame, polled every 0.5 s); "
        "baseline = results.processed_at - captured_at of all frames of the same run",
    }
    return [
        emit(
            "live_view_latency_p50",
            percentile(live, 50),
            "ms",
            "publish-to-catalog latency p50, same frames' run",
            percentile(catalog_ms, 50),
            **extra,
        ),
        emit(
            "live_view_latency_p99",
            percentile(live, 99),
            "ms",
            "publish-to-catalog latency p99, same frames' run",
            percentile(catalog_ms, 99),
            **extra,
        ),
    ]
