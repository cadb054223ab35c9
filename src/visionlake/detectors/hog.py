"""hog-person: OpenCV's HOG descriptor with its default Dalal-Triggs people SVM (nothing to download).

The SVM looks for a person about 96 pixels tall inside a 64x128 window, and finds no one smaller. In
a 768x576 surveillance view such as OpenCV's vtest.avi people are 60-150 (most 65-110) pixels tall,
so the frame is first enlarged by `upscale` (default 1.5), but never beyond `max_width` pixels wide;
frames wider than that are shrunk to it. Boxes are mapped back to the caller's image.

Score is the SVM weight of each window; windows below `min_score` are dropped and overlapping ones
merged with non-maximum suppression (`nms_threshold` IoU). The window holds a margin around the
person, so each box is then narrowed to its central `box_width` and `box_height` fractions (measured
on hand-labelled vtest.avi frames: 0.55 and 0.75; 1.0 keeps the whole window).

Version 1 neither enlarged frames nor narrowed boxes; ``upscale=1.0 max_width=800 scale=1.05
min_score=0.3 box_width=1.0 box_height=1.0`` reproduces it. On vtest.avi it found almost none of the
people, and its boxes were about twice the person's area.
"""

from __future__ import annotations

from collections.abc import Mapping

import cv2
import numpy as np

from ..types import Detections
from .base import Detector, check_image, require, to_detections


class HogPersonDetector(Detector):
    """Upright, whole pedestrians in street and surveillance views; poor on sitting or partly hidden people."""

    name = "hog-person"
    version = "2"
    defaults = {
        "win_stride": 8,
        "padding": 8,
        "scale": 1.1,
        "hit_threshold": 0.0,
        "upscale": 1.5,  # people 60-110 px tall in 768-wide frames reach the SVM's ~96 px
        "max_width": 1280,  # never work on a frame wider than this (768 * 1.5 = 1152 fits)
        "nms_threshold": 0.45,
        "min_score": 1.0,
        "box_width": 0.55,  # the person is the central 55 % of the window's width ...
        "box_height": 0.75,  # ... and 75 % of its height (medians measured on vtest.avi)
    }

    def _validate(self, params: Mapping[str, object]) -> None:
        p, n = params, self.name
        require(p["win_stride"] >= 1, n, "win_stride", p["win_stride"], ">= 1 (pixels)")
        require(p["padding"] >= 0, n, "padding", p["padding"], ">= 0 (pixels)")
        require(p["scale"] > 1.0, n, "scale", p["scale"], "> 1.0")
        require(1.0 <= p["upscale"] <= 4.0, n, "upscale", p["upscale"], "in [1, 4] (1 = never enlarge)")
        require(p["max_width"] >= 0, n, "max_width", p["max_width"], ">= 0 (0 = no limit)")
        require(0.0 < p["nms_threshold"] <= 1.0, n, "nms_threshold", p["nms_threshold"], "in (0, 1]")
        require(0.0 < p["box_width"] <= 1.0, n, "box_width", p["box_width"], "in (0, 1] (1 = whole window)")
        require(
            0.0 < p["box_height"] <= 1.0, n, "box_height", p["box_height"], "in (0, 1] (1 = whole window)"
        )

    def _setup(self) -> None:
        hog = cv2.HOGDescriptor()
        hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())
        self.hog_ = hog
        self.window_ = tuple(int(v) for v in hog.winSize)  # (width, height), 64x128

    def _resize(self, image: np.ndarray) -> tuple[np.ndarray, float, float]:
        """`image` scaled by `upscale`, capped at `max_width`, and the factors mapping it back."""
        height, width = image.shape[:2]
        p = self._params
        factor = p["upscale"]
        if p["max_width"] > 0 and width * factor > p["max_width"]:
            factor = p["max_width"] / width
        new_width, new_height = max(1, round(width * factor)), max(1, round(height * factor))
        if (new_width, new_height) == (width, height):
            return image, 1.0, 1.0
        interpolation = cv2.INTER_LINEAR if factor > 1.0 else cv2.INTER_AREA
        resized = cv2.resize(image, (new_width, new_height), interpolation=interpolation)
        return resized, width / new_width, height / new_height

    def detect(self, image: np.ndarray) -> Detections:
        image = check_image(image)
        height, width = image.shape[:2]
        p = self._params
        work, fx, fy = self._resize(image)
        # OpenCV 4.x corrupts its heap (and aborts the process) on images smaller than the window.
        if work.shape[1] < self.window_[0] or work.shape[0] < self.window_[1]:
            return Detections.empty()
        stride, pad = p["win_stride"], p["padding"]
        boxes, weights = self.hog_.detectMultiScale(
            work,
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
        return to_detections(
            _narrow(boxes[picked], p["box_width"], p["box_height"]),
            weights[picked],
            "person",
            fx,
            fy,
            width,
            height,
        )


def _narrow(xywh: np.ndarray, keep_w: float, keep_h: float) -> np.ndarray:
    """(x, y, w, h) boxes shrunk about their centres to `keep_w` of the width and `keep_h` of the height."""
    b = np.asarray(xywh, dtype=np.float64).reshape(-1, 4)
    if keep_w == 1.0 and keep_h == 1.0:
        return b
    w, h = b[:, 2] * keep_w, b[:, 3] * keep_h
    x = b[:, 0] + (b[:, 2] - w) / 2
    y = b[:, 1] + (b[:, 3] - h) / 2
    return np.stack([x, y, w, h], axis=1)
