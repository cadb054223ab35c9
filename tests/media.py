"""Sample media for tests: Debian opencv-doc's example images and videos, read with plain OpenCV.

Small and stable on purpose (other test modules import it): `sample` finds a file and skips the test
only when it truly is not installed, `video_frames` decodes the first frames of a video sequentially,
`jpeg` encodes an image the way any producer would. Nothing here uses visionlake itself.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from visionlake.log.base import partition_for

#: Where opencv-doc puts its sample data; VISIONLAKE_MEDIA (a folder) is searched first when set.
MEDIA_DIRS = [Path("/usr/share/doc/opencv-doc/examples/data")]


def _dirs() -> list[Path]:
    extra = os.environ.get("VISIONLAKE_MEDIA")
    return ([Path(extra)] if extra else []) + MEDIA_DIRS


def sample(name: str) -> Path:
    """Path of sample file `name`; pytest.skip() only when it is missing (apt-get install opencv-doc)."""
    for folder in _dirs():
        path = folder / name
        if path.is_file():
            return path
    pytest.skip(f"sample {name!r} not found in {', '.join(map(str, _dirs()))} (apt-get install opencv-doc)")


def video_frames(name: str, n: int, size: tuple[int, int] | None = None) -> list[np.ndarray]:
    """The first `n` frames (BGR uint8) of sample video `name`, resized to `size` (width, height) if given."""
    cap = cv2.VideoCapture(str(sample(name)))
    if not cap.isOpened():
        raise AssertionError(f"OpenCV cannot open {name}")
    frames: list[np.ndarray] = []
    try:
        while len(frames) < n:
            ok, image = cap.read()
            if not ok:
                raise AssertionError(f"{name} has fewer than {n} frames")
            if size is not None and (image.shape[1], image.shape[0]) != tuple(size):
                image = cv2.resize(image, tuple(size), interpolation=cv2.INTER_AREA)
            frames.append(image)
    finally:
        cap.release()
    return frames


def frames_at(name: str, indices) -> dict[int, np.ndarray]:
    """Frames of sample video `name` at `indices` (counted from 0, decoded sequentially: exact frame
    numbers, no seeking), by index."""
    cap = cv2.VideoCapture(str(sample(name)))
    if not cap.isOpened():
        raise AssertionError(f"OpenCV cannot open {name}")
    wanted, out, i = set(indices), {}, 0
    try:
        while len(out) < len(wanted):
            ok, image = cap.read()
            if not ok:
                raise AssertionError(f"{name} ended before frame {max(wanted)}")
            if i in wanted:
                out[i] = image
            i += 1
    finally:
        cap.release()
    return out


def jpeg(image: np.ndarray, quality: int = 90) -> bytes:
    """`image` encoded as JPEG bytes with OpenCV."""
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise AssertionError(f"OpenCV could not encode a {image.shape} image as JPEG")
    return buf.tobytes()


def cameras_covering(partitions: int) -> list[str]:
    """One camera name per partition, so every member of a group gets frames."""
    names: dict[int, str] = {}
    i = 0
    while len(names) < partitions:
        names.setdefault(partition_for(f"cam-{i}".encode(), partitions), f"cam-{i}")
        i += 1
    return [names[p] for p in range(partitions)]
