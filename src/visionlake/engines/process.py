"""How a process that runs batch work is set up, the same on both engines' workers.

One core each: OpenCV's and BLAS's own thread pools would fight the engine's other workers. A heap
that keeps what it frees: with glibc's defaults, the megabytes one image needs (SIFT's scale pyramid,
decode buffers) go back to the kernel when freed and are page-faulted in again, zeroed, for the next
image. Measured here on SIFT over 320x240 photos: about 3,500 page faults and up to 9 ms of kernel time
per image in a worker, and two extraction workers at 0.64-0.87 of two bare OpenCV loops; 0.97-1.02
with the heap kept (bench/batch_extract.py).
"""

from __future__ import annotations

import ctypes
import ctypes.util

__all__ = ["prepare_worker"]

#: glibc's mallopt parameter numbers (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
#: Freed memory kept before the heap is trimmed, and the block size from which malloc uses mmap
#: (32 MiB is glibc's largest mmap threshold on 64-bit machines).
TRIM_BYTES, MMAP_BYTES = 256 << 20, 32 << 20

_prepared = False


def _keep_freed_memory() -> None:
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):  # pragma: no cover - not glibc: nothing to tune
        return
    mallopt(_M_TRIM_THRESHOLD, TRIM_BYTES)
    mallopt(_M_MMAP_THRESHOLD, MMAP_BYTES)


def prepare_worker() -> None:
    """One OpenCV and BLAS thread, and a heap that keeps freed memory; once per process."""
    global _prepared
    if _prepared:
        return
    import cv2

    _keep_freed_memory()
    cv2.setNumThreads(1)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        pass
    _prepared = True
