"""Worker frames/s with Prometheus metrics on vs off, in the same run, interleaved batch by batch.

One real `Worker` (embedded log, SQLite catalog, file archive in a temp lake) runs with a `Metrics`
registry served over HTTP (`serve_metrics`, as `--metrics-port` does) and scraped once a second from
another thread, more often than Prometheus's usual 15 s. In the worker's `on_batch` hook the bench
switches the worker's recorder between the real `WorkerMetrics` and the no-op one that a worker
without `--metrics-port` holds, in the order off, on, on, off, ... (ABBA: a linear drift of the
machine's load falls on both sides equally). Each batch (poll + process + persist + publish + commit,
8 frames) is timed from the end of the previous hook to the start of this one and counted on the side
that was active; the first batch (group join, catalog set-up) is left out of both. The headline ratio
is the median over the off-on-on-off groups of each group's on / off frames/s: a batch slowed by
another process on the shared cores moves one group's ratio, not the result. `ratio_of_sums` (all on
frames over all on time, against the same for off) is reported beside it.

A bare OpenCV loop (`cv2.imdecode` + `detector.detect` over the same JPEG bytes) also runs in the hook
after each batch, over that batch's frames, so each side also gets its worker / bare ratio (the figure
of the `worker` benchmark) against the bare time measured next to it.

Detectors: `null` (a detector defined here that does no work and returns two boxes a frame: the
worker loop's own cost, decode included, is then all there is, so a cost of metrics would show most;
2048 frames in quick mode give about 60 groups), then haar-face (and hog-person in full mode).

`worker_metrics_recording_cost` times the recorder alone (`WorkerMetrics.batch` on 8 real result rows
with detections) against the no-op, in microseconds per frame: the whole difference metrics make in
the worker loop, without the noise of detection.
"""

from __future__ import annotations

import threading
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import common
from common import emit, say

from visionlake.catalog import FrameResult
from visionlake.detectors import get_detector_class, load_detector
from visionlake.detectors.base import Detector
from visionlake.frames import FrameMeta
from visionlake.ingest.publish import FramePublisher
from visionlake.ingest.sources import CapturedFrame
from visionlake.lake import Lake
from visionlake.metrics import NO_WORKER_METRICS, Metrics
from visionlake.types import Detections
from visionlake.workers.worker import Worker

DETECTORS = {True: ("null", "haar-face"), False: ("null", "haar-face", "hog-person")}  # by quick
NULL_N = {True: 2048, False: 8192}
QUALITY = 90
IDLE_TIMEOUT = 1.0
TARGET_RATIO = 0.98  # metrics on / off: no drop beyond noise
COST_TARGET = 0.001  # the recording's share of a worker frame (haar-face, metrics off): under 0.1%
QUICK_N = (96, 240)
QUICK_BUDGET_S = 16.0
PATTERN = (False, True, True, False)  # metrics on? for batches 0, 1, 2, 3, 4, ... (k % 4)
SCRAPE_EVERY = 2.0  # seconds; Prometheus's default is 15


class NullDetector(Detector):
    """No work: two fixed boxes a frame, so that the worker loop itself is what is timed."""

    name = "bench-null"
    version = "1"

    def detect(self, image) -> Detections:
        return Detections([[0, 0, 10, 10], [5, 5, 20, 20]], [0.9, 0.8], ["person", "person"])


def available(name: str) -> bool:
    if name == "null":
        return True
    try:
        return get_detector_class(name).unavailable_reason() is None
    except Exception:
        return False


def _bench_one(name: str, size: tuple[int, int], n: int | None, tmp: Path) -> dict:
    det = NullDetector() if name == "null" else load_detector(name)
    warm = common.jpeg_frames(size, QUALITY)[-8:]
    for j in warm[:3]:
        det.detect(common.decode(j))
    t = time.perf_counter()
    for j in warm[3:]:
        det.detect(common.decode(j))
    if n is None:  # quick mode: about QUICK_BUDGET_S per detector (worker + bare), within QUICK_N
        per_frame = (time.perf_counter() - t) / len(warm[3:])
        n = max(QUICK_N[0], min(QUICK_N[1], int(QUICK_BUDGET_S / (2 * per_frame)) // 32 * 32))
    images = common.cycle(common.video_frames(size), n)
    jpegs = common.cycle(common.jpeg_frames(size, QUALITY), n)

    lake = Lake(lake=tmp / f"metrics-{name}")
    pub = FramePublisher(lake, "cam-0")
    t0 = datetime.now(UTC) - timedelta(seconds=n / 15)
    for i, (im, j) in enumerate(zip(images, jpegs, strict=True)):
        pub.publish(CapturedFrame(im, i, t0 + timedelta(seconds=i / 15), f"vtest.avi#{i}", data=j))
    pub.close()

    metrics = Metrics()
    server = metrics.serve(0)
    port = server.server_address[1]
    scrapes: list[float] = []
    stop = threading.Event()

    def scraper() -> None:
        while not stop.wait(SCRAPE_EVERY):
            t = time.perf_counter()
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                r.read()
            scrapes.append(time.perf_counter() - t)

    side = {
        on: {"s": 0.0, "frames": 0, "bare_s": 0.0, "cpu": 0.0, "bare_cpu": 0.0, "batches": 0}
        for on in (False, True)
    }
    state = {"k": 0, "done": 0, "end": 0.0, "cpu_end": 0.0, "on": PATTERN[0]}
    batches: list[tuple[int, bool, float, int, float]] = []  # (k, metrics on, seconds, frames, cpu s)
    worker = Worker(lake, det, group=f"bench-metrics-{name}", until_idle=True, idle_timeout=IDLE_TIMEOUT)
    recorder = metrics.worker(worker.name, worker.model, worker.model_version, worker.group)
    worker.metrics = recorder if state["on"] else NO_WORKER_METRICS

    def on_batch(st) -> None:
        now, cpu = time.perf_counter(), time.process_time()
        frames = st.processed - state["done"]
        if state["k"] > 0:  # the first batch carries the start-up: neither side's
            s = side[state["on"]]
            s["s"] += now - state["end"]
            s["cpu"] += cpu - state["cpu_end"]
            s["frames"] += frames
            s["batches"] += 1
            batches.append((state["k"], state["on"], now - state["end"], frames, cpu - state["cpu_end"]))
        t, c = time.perf_counter(), time.process_time()
        for j in jpegs[state["done"] : st.processed]:
            det.detect(common.decode(j))
        if state["k"] > 0:
            side[state["on"]]["bare_s"] += time.perf_counter() - t
            side[state["on"]]["bare_cpu"] += time.process_time() - c
        state["done"] = st.processed
        state["k"] += 1
        state["on"] = PATTERN[state["k"] % len(PATTERN)]
        worker.metrics = recorder if state["on"] else NO_WORKER_METRICS
        state["end"], state["cpu_end"] = time.perf_counter(), time.process_time()

    worker.on_batch = on_batch
    thread = threading.Thread(target=scraper, daemon=True)
    thread.start()
    try:
        stats = worker.run()
    finally:
        stop.set()
        thread.join()
        server.shutdown()
        lake.close()
    if stats.processed != n or stats.dead_lettered:
        raise RuntimeError(f"{name}: worker processed {stats.processed}/{n}, {stats.dead_lettered} dead")
    counted = sum(
        s.value
        for fam in metrics.registry.collect()
        for s in fam.samples
        if s.name == "visionlake_frames_processed_total"
    )
    on, off = side[True], side[False]
    group_ratios, cpu_ratios = [], []  # groups k = 4j .. 4j+3: two batches on, two off
    for j in range(1, batches[-1][0] // 4 + 1):
        group = [b for b in batches if b[0] // 4 == j and b[3] > 0]
        t = {x: sum(b[2] for b in group if b[1] == x) for x in (False, True)}
        c = {x: sum(b[4] for b in group if b[1] == x) for x in (False, True)}
        f = {x: sum(b[3] for b in group if b[1] == x) for x in (False, True)}
        if f[False] and f[True]:
            group_ratios.append((f[True] / t[True]) / (f[False] / t[False]))
            cpu_ratios.append((c[True] / f[True]) / (c[False] / f[False]))
    if counted != on["frames"]:  # only the batches run with metrics on were recorded
        raise RuntimeError(f"{name}: metrics counted {counted} frames, {on['frames']} ran with metrics on")
    return {
        "n": n,
        "on": on,
        "off": off,
        "fps_on": on["frames"] / on["s"],
        "fps_off": off["frames"] / off["s"],
        "bare_fps_on": on["frames"] / on["bare_s"],
        "bare_fps_off": off["frames"] / off["bare_s"],
        "scrapes": scrapes,
        "group_ratios": group_ratios,
        "cpu_ratios": cpu_ratios,
    }


def _recording_cost(rounds: int = 2000) -> tuple[float, float]:
    """Microseconds per frame of `WorkerMetrics.batch` and of the no-op, on 8 rows with detections."""
    rec = Metrics().worker("bench", "haar-face", "1", "haar-face.1")
    now = datetime.now(UTC)
    dets = Detections([[0, 0, 10, 10], [5, 5, 20, 20]], [0.9, 0.8], ["face", "face"])
    rows = [
        FrameResult(
            meta=FrameMeta(f"id{i}", "cam-0", i, now, 320, 240),
            nbytes=20000,
            sha256="0" * 64,
            uri="file:///x.jpg",
            topic="frames",
            partition=0,
            offset=i,
            model="haar-face",
            model_version="1",
            detections=dets if i % 2 else Detections.empty(),
            latency_ms=12.5,
            processed_at=now,
        )
        for i in range(8)
    ]
    out = []
    for r in (rec, NO_WORKER_METRICS):
        t = time.perf_counter()
        for _ in range(rounds):
            r.batch(rows, [], time.time())
        out.append((time.perf_counter() - t) / (rounds * len(rows)) * 1e6)
    return out[0], out[1]


def run(quick: bool, tmp: Path) -> list[dict]:
    size = (320, 240) if quick else (640, 480)
    n = None if quick else 480
    out = []
    for name in DETECTORS[quick]:
        if not available(name):
            say(f"metrics: {name} not importable here, skipped")
            continue
        r = _bench_one(name, size, NULL_N[quick] if name == "null" else n, tmp)
        say(f"metrics: {name}, {r['n']} frames {size[0]}x{size[1]} q{QUALITY}")
        ratio_on = r["fps_on"] / r["bare_fps_on"]
        ratio_off = r["fps_off"] / r["bare_fps_off"]
        median = common.percentile(r["group_ratios"], 50)
        q25, q75 = common.percentile(r["group_ratios"], 25), common.percentile(r["group_ratios"], 75)
        out.append(
            emit(
                f"worker_metrics_on_vs_off_{name}",
                r["fps_on"],
                "frames/s",
                "the same worker with metrics off (no-op recorder), batches interleaved off-on-on-off; "
                "ratio = median over the groups of 4 batches of on/off frames/s",
                r["fps_off"],
                ratio=median,
                target=TARGET_RATIO,
                target_on="ratio",
                # no drop beyond the noise: the median at the target, or no change within the groups' IQR
                target_met=median >= TARGET_RATIO or q25 <= 1.0 <= q75,
                ratio_of_sums=r["fps_on"] / r["fps_off"],
                groups=len(r["group_ratios"]),
                group_ratio_p25_p75=[q25, q75],
                n=r["n"],
                frames_on=r["on"]["frames"],
                frames_off=r["off"]["frames"],
                frame_size=f"{size[0]}x{size[1]}",
                worker_vs_bare_on=ratio_on,
                worker_vs_bare_off=ratio_off,
                worker_vs_bare_change=ratio_on / ratio_off,
                cpu_per_frame_on_vs_off_median=common.percentile(r["cpu_ratios"], 50),
                cpu_per_frame_ms_on=r["on"]["cpu"] / r["on"]["frames"] * 1000,
                cpu_per_frame_ms_off=r["off"]["cpu"] / r["off"]["frames"] * 1000,
                scrapes=len(r["scrapes"]),
                scrape_ms_median=common.percentile([s * 1000 for s in r["scrapes"]], 50)
                if r["scrapes"]
                else 0.0,
                loadavg_1m=common.loadavg(),
                notes=(
                    "one worker, its recorder switched per batch of 8 frames (off, on, on, off, ...); "
                    "batch time = end of the previous on_batch hook to the start of this one (poll, "
                    "process, persist, publish, commit); first batch excluded; the metrics HTTP server runs "
                    f"throughout and is scraped every {SCRAPE_EVERY:g} s; worker_vs_bare_* = each side's frames/s over "
                    "the bare loop run in the hook after that side's batches"
                ),
            )
        )
    on_us, off_us = _recording_cost()
    # a worker frame with metrics off, of the first real detector (else the null one)
    frame_us = 1e6 / out[-1]["baseline_value"] if out else float("nan")
    out.append(
        emit(
            "worker_metrics_recording_cost",
            on_us,
            "us/frame",
            "the no-op recorder of a worker without --metrics-port",
            off_us,
            share_of_worker_frame=(on_us - off_us) / frame_us,
            target=COST_TARGET,
            target_on="share_of_worker_frame",
            target_met=(on_us - off_us) / frame_us <= COST_TARGET,
            notes="WorkerMetrics.batch on 8 result rows (half with 2 detections), per frame; the worker calls "
            "it once per batch, where it counts its stats",
        )
    )
    return out
