"""haar-face: OpenCV's Viola-Jones frontal-face Haar cascade (shipped with OpenCV, nothing to download).

Scores are the cascade's level weights from `detectMultiScale3` (higher is surer; not a probability and
occasionally below zero). Frames wider than `max_width` are shrunk before detection and the boxes mapped
back; `min_size` is in pixels of the original frame.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import cv2
import numpy as np

from ..errors import VisionlakeError
from ..types import Detections
from .base import Detector, check_image, downscale, require, to_detections

CASCADE = "haarcascade_frontalface_default.xml"
# Where distributions without `cv2.data` (Debian's python3-opencv) keep the cascades.
_FALLBACK_DIRS = ("/usr/share/opencv4/haarcascades", "/usr/share/opencv/haarcascades")


def cascade_path(filename: str = CASCADE) -> str:
    """Path of a cascade bundled with OpenCV (`cv2.data.haarcascades`, else the system folders)."""
    dirs = []
    data = getattr(cv2, "data", None)
    if data is not None and getattr(data, "haarcascades", None):
        dirs.append(data.haarcascades)
    dirs.extend(_FALLBACK_DIRS)
    for folder in dirs:
        path = os.path.join(folder, filename)
        if os.path.isfile(path):
            return path
    raise VisionlakeError(f"OpenCV Haar cascade {filename!r} not found in {', '.join(dirs)}")


class HaarFaceDetector(Detector):
    """Frontal faces, fast on small frames with no weights to fetch; misses profiles and tilted faces."""

    name = "haar-face"
    version = "1"
    defaults = {"scale_factor": 1.1, "min_neighbors": 5, "min_size": 30, "max_width": 640}

    def _validate(self, params: Mapping[str, object]) -> None:
        p = params
        require(p["scale_factor"] > 1.0, self.name, "scale_factor", p["scale_factor"], "> 1.0")
        require(p["min_neighbors"] >= 0, self.name, "min_neighbors", p["min_neighbors"], ">= 0")
        require(p["min_size"] >= 1, self.name, "min_size", p["min_size"], ">= 1 (pixels)")
        require(p["max_width"] >= 0, self.name, "max_width", p["max_width"], ">= 0 (0 = never downscale)")

    def _setup(self) -> None:
        path = cascade_path()
        cascade = cv2.CascadeClassifier(path)
        if cascade.empty():
            raise VisionlakeError(f"OpenCV could not load the Haar cascade {path}")
        self.cascade_ = cascade

    def detect(self, image: np.ndarray) -> Detections:
        image = check_image(image)
        height, width = image.shape[:2]
        p = self._params
        gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        gray, fx, fy = downscale(gray, p["max_width"])
        gray = cv2.equalizeHist(gray)
        min_side = max(1, round(p["min_size"] / fx))
        boxes, _levels, weights = self.cascade_.detectMultiScale3(
            gray,
            scaleFactor=p["scale_factor"],
            minNeighbors=p["min_neighbors"],
            minSize=(min_side, min_side),
            outputRejectLevels=True,
        )
        if len(boxes) == 0:
            return Detections.empty()
        return to_detections(boxes, weights, "face", fx, fy, width, height)
