"""Peak memory (RSS) of a worker per batch size, with typical and with the largest frames a record holds.

Each measurement is a fresh process reporting its own peak RSS (`VmHWM` of /proc/self/status, which
starts afresh at exec, unlike `ru_maxrss`). The worker side runs
`Worker(lake, hog-person, batch_size=B, until_idle=True).run()` over frames already on an embedded log.
The baseline is a bare loop in a fresh process over the same JPEG bytes: read one, decode, detect,
drop it (no log, no catalog, no archive). The difference is what the worker holds on top: the polled
batch's record values, the catalog and log connections, the Python modules it imports.

Frames ("typical"): vtest.avi at 640x480, JPEG quality 90 (about 75 KB), and "largest": the same frames with
random noise added, upscaled to 1280x960, at the best quality that fits the topic's record limit
(about 1 MiB each), the biggest
a record carries before the claim check takes over. Quick mode: batch sizes 1, 8, 32 and two batches
of frames each; full mode adds 64.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import common
import cv2
import numpy as np
from common import emit, say

CHILD = r"""
import json, sys
from pathlib import Path
mode, lake_dir, batch, frames_dir = sys.argv[1], sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])
from visionlake.detectors import load_detector
det = load_detector("hog-person")
if mode == "worker":
    from visionlake.lake import Lake
    from visionlake.workers.worker import Worker
    with Lake(lake=lake_dir) as lake:
        stats = Worker(lake, det, batch_size=batch, until_idle=True, idle_timeout=0.3, threads=1).run()
    n = stats.processed
else:
    import cv2, numpy as np
    cv2.setNumThreads(1)
    n = 0
    for f in sorted(frames_dir.iterdir()):
        image = cv2.imdecode(np.frombuffer(f.read_bytes(), np.uint8), cv2.IMREAD_COLOR)
        det.detect(image)
        n += 1
        del image
status = Path("/proc/self/status").read_text()
hwm = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:"))
print(json.dumps({"frames": n, "peak_mb": hwm / 1024}))
"""


def _largest(frames: tuple[bytes, ...], limit: int) -> list[bytes]:
    """Noisy 1280x960 versions of the frames at the highest quality that fits in `limit` bytes."""
    rng = np.random.default_rng(0)
    out = []
    for data in frames:
        image = cv2.resize(common.decode(data), (1280, 960)).astype(np.int16)
        noisy = np.clip(image + rng.integers(-40, 40, image.shape), 0, 255).astype(np.uint8)
        for q in (100, 97, 94, 90, 85, 80, 70, 60, 50):
            enc = cv2.imencode(".jpg", noisy, [cv2.IMWRITE_JPEG_QUALITY, q])[1].tobytes()
            if len(enc) <= limit:
                break
        out.append(enc)
    return out


def _child(mode: str, lake: Path, batch: int, frames_dir: Path) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, mode, str(lake), str(batch), str(frames_dir)],
        capture_output=True,
        text=True,
        env=common.child_env(OMP_NUM_THREADS="1"),
        timeout=600,
    )
    if out.returncode != 0:
        raise RuntimeError(f"{mode} child failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(quick: bool, tmp: Path) -> None:
    from visionlake.ingest.publish import FramePublisher
    from visionlake.ingest.sources import CapturedFrame
    from visionlake.lake import Lake
    from visionlake.log.base import DEFAULT_MAX_RECORD_BYTES

    sizes = (1, 8, 32) if quick else (1, 8, 32, 64)
    typical = common.jpeg_frames((640, 480), 90)
    kinds = {"typical": list(typical), "largest": _largest(typical[:64], DEFAULT_MAX_RECORD_BYTES - 1024)}
    for kind, pool in kinds.items():
        for b in sizes:
            n = 2 * b
            frames = common.cycle(tuple(pool), n)
            root = tmp / f"{kind}-{b}"
            frames_dir = root / "frames"
            frames_dir.mkdir(parents=True)
            with Lake(lake=root / "lake") as lake:
                pub = FramePublisher(lake, "bench", quality=90)
                t0 = datetime(2026, 1, 1, tzinfo=UTC)
                for i, data in enumerate(frames):
                    (frames_dir / f"{i:05d}.jpg").write_bytes(data)
                    pub.publish(
                        CapturedFrame(common.decode(data), i, t0 + timedelta(seconds=i), "b", data=data)
                    )
                pub.close()
                lake.catalog  # noqa: B018 - schema in place before the child
            bare = _child("bare", root / "lake", b, frames_dir)
            worker = _child("worker", root / "lake", b, frames_dir)
            if worker["frames"] != n:
                raise AssertionError(f"worker processed {worker['frames']} of {n} frames")
            mean_kb = sum(len(f) for f in frames) / n / 1024
            say(f"  {kind} batch {b}: worker {worker['peak_mb']:.0f} MB, bare loop {bare['peak_mb']:.0f} MB")
            emit(
                f"worker_peak_rss_{kind}_batch{b}",
                worker["peak_mb"],
                "MB",
                "bare decode + detect loop over the same frames, fresh process",
                bare["peak_mb"],
                frames=n,
                frame_kb=mean_kb,
                extra_mb=worker["peak_mb"] - bare["peak_mb"],
            )
