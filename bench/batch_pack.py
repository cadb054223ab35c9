"""Packing a folder of real JPEGs into a Parquet dataset: the local engine's workers vs one process.

Images: real photo crops (batch_extract.photo_crops) at 640x480, JPEG quality 90, written as files in
four label folders. Packing reads every file, decodes it whole (the check that lists undecodable
images), hashes it and writes the Parquet file.

Baseline: `visionlake.batch.dataset.pack` in this process (decoding on one core), in the same run,
alternating with the engine for three rounds; each side keeps its median round. Value: the same call
through `LocalEngine(processes=2).pack`, whose workers decode and hash while the parent reads and
writes (workers started before the clock). Full mode also times `SparkEngine("local[2]").pack`.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

from batch_extract import photo_crops, write_folder
from common import emit, say

SIZE = (640, 480)
ROUNDS = 3


def run(quick: bool, tmp: Path) -> list[dict]:
    from visionlake.batch.dataset import pack
    from visionlake.engines.local import LocalEngine

    n = 300 if quick else 900
    tmp.mkdir(parents=True, exist_ok=True)
    folder = write_folder(photo_crops(n, SIZE, covers=(1.25, 1.6, 2.0)), tmp / "images")
    megabytes = sum(p.stat().st_size for p in folder.rglob("*.jpg")) / 1e6
    here_s: list[float] = []
    local_s: list[float] = []
    with LocalEngine(processes=2) as engine:
        startup = engine.start()
        for i in range(ROUNDS):
            t = time.perf_counter()
            report = pack(folder, tmp / f"here-{i}.parquet")
            here_s.append(time.perf_counter() - t)
            t = time.perf_counter()
            local = engine.pack(str(folder), str(tmp / f"local-{i}.parquet"))
            local_s.append(time.perf_counter() - t)
            if (report.images, local.images, len(local.rejected)) != (n, n, 0):
                raise RuntimeError(f"packed {report.images} / {local.images} of {n} images: {local.rejected}")
            say(
                f"pack: one process {n / here_s[-1]:.1f} images/s, local engine {n / local_s[-1]:.1f} images/s"
            )
    here, local_t = statistics.median(here_s), statistics.median(local_s)
    out = [
        emit(
            "batch_pack_local",
            n / local_t,
            "images/s",
            "visionlake.batch.dataset.pack in one process (same folder, same run)",
            n / here,
            n=n,
            image_size=f"{SIZE[0]}x{SIZE[1]}",
            megabytes=megabytes,
            local_seconds=local_s,
            baseline_seconds=here_s,
            startup_seconds=startup,
            processes=2,
            notes="folder of real JPEG crops -> one Parquet file; every image read, decoded whole and "
            "hashed; the sides alternate for 3 rounds and each keeps its median round",
        )
    ]
    if quick:
        return out
    from visionlake.engines.spark import SparkEngine

    engine = SparkEngine(master="local[2]")
    try:
        spark_start = engine.start()
        engine.pack(str(folder), str(tmp / "spark-warm"))  # Python workers and JIT warm-up
        t = time.perf_counter()
        spark = engine.pack(str(folder), str(tmp / "spark"))
        spark_s = time.perf_counter() - t
    finally:
        engine.close()
    if spark.images != n:
        raise RuntimeError(f"spark packed {spark.images} of {n} images")
    out.append(
        emit(
            "batch_pack_spark",
            n / spark_s,
            "images/s",
            "local engine (same folder, 2 worker processes)",
            n / local_t,
            n=n,
            master="local[2]",
            startup_seconds=spark_start,
            notes="a first pack of the same folder (Python workers, JIT) runs before the clock; "
            "value = the whole second SparkEngine.pack call (list, read and decode, write part files, "
            "read the counts back)",
        )
    )
    return out
