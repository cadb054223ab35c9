"""hog-person: OpenCV's HOG descriptor with its default Dalal-Triggs people SVM (nothing to download).

Score is the SVM weight of each window; windows below `min_score` are dropped and overlapping ones
merged with non-maximum suppression (`nms_threshold` IoU). Frames wider than `max_width` are shrunk
before detection and the boxes mapped back. Needs people at least about 64x128 pixels after shrinking.
"""

from __future__ import annotations

from collections.abc import Mapping

import cv2
import numpy as np

from ..types import Detections
from .base import Detector, check_image, downscale, require, to_detections


class HogPersonDetector(Detector):
    """Upright, whole pedestrians in street and surveillance views; poor on sitting or partly hidden people."""

    name = "hog-person"
    version = "1"
    defaults = {
        "win_stride": 8,
        "padding": 8,
        "scale": 1.05,
        "hit_threshold": 0.0,
        "max_width": 800,  # people in 768-wide surveillance frames are near the 64x128 window already
        "nms_threshold": 0.45,
        "min_score": 0.3,
    }

    def _validate(self, params: Mapping[str, object]) -> None:
        p, n = params, self.name
        require(p["win_stride"] >= 1, n, "win_stride", p["win_stride"], ">= 1 (pixels)")
        require(p["padding"] >= 0, n, "padding", p["padding"], ">= 0 (pixels)")
        require(p["scale"] > 1.0, n, "scale", p["scale"], "> 1.0")
        require(p["max_width"] >= 0, n, "max_width", p["max_width"], ">= 0 (0 = never downscale)")
        require(0.0 < p["nms_threshold"] <= 1.0, n, "nms_threshold", p["nms_threshold"], "in (0, 1]")

    def _setup(self) -> None:
        hog = cv2.HOGDescriptor()
        hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())
        self.hog_ = hog
        self.window_ = tuple(int(v) for v in hog.winSize)  # (width, height), 64x128

    def detect(self, image: np.ndarray) -> Detections:
        image = check_image(image)
        height, width = image.shape[:2]
        p = self._params
        small, fx, fy = downscale(image, p["max_width"])
        # OpenCV 4.x corrupts its heap (and aborts the process) on images smaller than the window.
        if small.shape[1] < self.window_[0] or small.shape[0] < self.window_[1]:
            return Detections.empty()
        stride, pad = p["win_stride"], p["padding"]
        boxes, weights = self.hog_.detectMultiScale(
            small,
            hitThreshold=p["hit_threshold"],
            winStride=(stride, stride),
            padding=(pad, pad),
            scale=p["scale"],
        )
        if len(boxes) == 0:
            return Detections.empty()
        boxes = np.asarray(boxes, dtype=np.int32).reshape(-1, 4)
        weights = np.asarray(weights, dtype=np.float64).reshape(-1)
        keep = weights >= p["min_score"]
        boxes, weights = boxes[keep], weights[keep]
        if len(boxes) == 0:
            return Detections.empty()
        # NMSBoxes wants scores above a threshold >= 0 and only uses their order: shift them positive
        # (the min_score cut, inclusive, is done above).
        ranks = (weights - weights.min() + 1.0).tolist()
        picked = cv2.dnn.NMSBoxes(boxes.tolist(), ranks, 0.0, p["nms_threshold"])
        picked = np.asarray(picked, dtype=np.int64).reshape(-1)
        return to_detections(boxes[picked], weights[picked], "person", fx, fy, width, height)
