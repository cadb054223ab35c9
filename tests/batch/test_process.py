"""Worker-process setup shared by the engines: one thread each, and a heap that keeps freed memory."""

from __future__ import annotations

import json
import subprocess
import sys

# Run in a fresh interpreter: the heap's state and OpenCV's thread count are per process.
_PROBE = """
import json, resource, sys
import cv2, numpy as np
from visionlake.engines.process import prepare_worker
prepare_worker()
prepare_worker()  # idempotent
n = 24 << 20  # a scale pyramid's worth of memory, freed and needed again (the next image)
a = np.ones(n, np.uint8); del a
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
a = np.ones(n, np.uint8); del a
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(json.dumps({"faults": faults, "pages": n // 4096, "threads": cv2.getNumThreads()}))
"""


def test_prepared_worker_reuses_freed_memory_and_runs_one_thread():
    out = subprocess.run(
        [sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=60, check=True
    )
    probe = json.loads(out.stdout)
    assert probe["threads"] == 1
    # glibc's defaults hand the 24 MiB back to the kernel and fault it in again (hundreds of faults
    # here, thousands without transparent huge pages); the prepared heap reuses it.
    assert probe["faults"] < probe["pages"] // 100, probe
