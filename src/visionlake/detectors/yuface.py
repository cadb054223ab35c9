"""yuface: the libfacedetection CNN (YuNet family) via the optional `yuface` package, weights built in.

Install with ``pip install 'visionlake[yuface]'``. Score is the network's confidence in [0, 1]. Frames
wider than `max_width` are shrunk before detection (the library degrades above 960 pixels) and the boxes
mapped back; small faces in wide frames (pedestrians in vtest.avi) are lost by the shrinking, so raise
`max_width` (or set 0) for them. Five facial landmarks are computed by the library but not kept.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping
from types import ModuleType

import numpy as np

from ..errors import MissingDependency
from ..types import Detections
from .base import Detector, check_image, downscale, require, to_detections


def _missing() -> MissingDependency:
    return MissingDependency("detector 'yuface'", "yuface", "yuface")


def _import_yuface() -> ModuleType:
    """The library, loaded with OpenMP's passive wait: its bundled OpenMP runtime reads the policy once,
    when the library loads, so every import goes through here (the availability check too)."""
    # OpenMP's default wait policy spins idle threads for a while after each parallel region; with
    # other work on the cores (a second worker, the camera threads) that spinning took the cores
    # and cut yuface to a tenth of its speed. Passive waiting costs nothing measurable alone.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return importlib.import_module("yuface")


class YuFaceDetector(Detector):
    """Faces frontal and turned (a small CNN, weights built in); finds more than haar-face, and faster."""

    name = "yuface"
    version = "1"
    defaults = {"conf": 0.5, "max_width": 640}

    @classmethod
    def unavailable_reason(cls) -> str | None:
        try:
            _import_yuface()
        except ImportError:
            return str(_missing())
        return None

    def _validate(self, params: Mapping[str, object]) -> None:
        p = params
        require(0.0 <= p["conf"] <= 1.0, self.name, "conf", p["conf"], "in [0, 1]")
        require(p["max_width"] >= 0, self.name, "max_width", p["max_width"], ">= 0 (0 = never downscale)")

    def _setup(self) -> None:
        try:
            self.yuface_ = _import_yuface()
        except ImportError as exc:
            raise _missing() from exc

    def detect(self, image: np.ndarray) -> Detections:
        image = check_image(image)
        height, width = image.shape[:2]
        small, fx, fy = downscale(image, self._params["max_width"])
        small = np.ascontiguousarray(small)
        confs, boxes, _landmarks = self.yuface_.detect(small, conf=self._params["conf"])
        if len(confs) == 0:
            return Detections.empty()
        # The library returns int16 arrays (boxes may start at negative coordinates); clipped here.
        scores = np.asarray(confs, dtype=np.float64) / 100.0
        return to_detections(np.asarray(boxes, dtype=np.float64), scores, "face", fx, fy, width, height)
