"""Capture-on-motion: publish a frame only when something in the picture changed.

The gate compares each frame with a running-average background (`cv2.accumulateWeighted`) on a
small, blurred grayscale copy, which is cheap (a 160-pixel-wide image) and ignores sensor noise
and slow lighting changes.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from ..errors import InputError

__all__ = ["MotionGate"]


class MotionGate:
    """Capture-on-motion: pass a frame only if it differs enough from the recent background.

    A frame "moves" when the fraction of its pixels whose absolute difference to the background
    exceeds `threshold` (0-255) is at least `min_area` (0-1). The first `warmup` frames always pass.
    The background learns every frame at `learning_rate`. A frame of a different size than the
    previous ones (a camera that reconnected at another resolution) restarts the warm-up.
    """

    def __init__(
        self,
        threshold: int = 25,
        min_area: float = 0.005,
        learning_rate: float = 0.05,
        warmup: int = 1,
        width: int = 160,
    ) -> None:
        if isinstance(threshold, bool) or not isinstance(threshold, int) or not 0 <= threshold <= 255:
            raise InputError(f"invalid motion threshold {threshold!r}: must be an integer from 0 to 255")
        if not _is_number(min_area) or not 0 <= min_area <= 1:
            raise InputError(f"invalid motion min_area {min_area!r}: must be a fraction from 0 to 1")
        if not _is_number(learning_rate) or not 0 < learning_rate <= 1:
            raise InputError(f"invalid motion learning_rate {learning_rate!r}: must be a number in (0, 1]")
        if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
            raise InputError(f"invalid motion warmup {warmup!r}: must be an integer >= 0")
        if isinstance(width, bool) or not isinstance(width, int) or width < 8:
            raise InputError(f"invalid motion width {width!r}: must be an integer >= 8")
        self.threshold = threshold
        self.min_area = float(min_area)
        self.learning_rate = float(learning_rate)
        self.warmup = warmup
        self.width = width
        self.passed = 0
        self.skipped = 0
        #: Fraction of pixels that changed in the last checked frame (0.0 during warm-up).
        self.last_fraction = 0.0
        self._background: np.ndarray | None = None
        self._seen = 0  # frames since the background was (re)started

    def __repr__(self) -> str:
        return (
            f"MotionGate(threshold={self.threshold}, min_area={self.min_area}, "
            f"learning_rate={self.learning_rate}, warmup={self.warmup}, width={self.width})"
        )

    def reset(self) -> None:
        """Forget the background; the next `warmup` frames pass again. Counters are kept."""
        self._background = None
        self._seen = 0

    def _prepare(self, image: np.ndarray) -> np.ndarray:
        if image.ndim == 3 and image.shape[2] == 4:
            gray = cv2.cvtColor(image, cv2.COLOR_BGRA2GRAY)
        elif image.ndim == 3 and image.shape[2] == 3:
            gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        elif image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 1):
            gray = image.reshape(image.shape[:2])
        else:
            raise InputError(f"MotionGate expects a BGR or grayscale image, got shape {image.shape}")
        if gray.dtype != np.uint8:
            gray = cv2.convertScaleAbs(gray)
        height, width = gray.shape
        if width > self.width:
            small_h = max(1, round(height * self.width / width))
            gray = cv2.resize(gray, (self.width, small_h), interpolation=cv2.INTER_AREA)
        return cv2.GaussianBlur(gray, (5, 5), 0)

    def check(self, image: np.ndarray) -> bool:
        """True when this frame should be published; always updates the background."""
        gray = self._prepare(image)
        if self._background is not None and self._background.shape != gray.shape:
            self.reset()
        if self._background is None:
            self._background = gray.astype(np.float32)
            moved = self._seen < self.warmup
            self.last_fraction = 0.0
        else:
            diff = cv2.absdiff(gray, cv2.convertScaleAbs(self._background))
            changed = cv2.countNonZero(cv2.compare(diff, self.threshold, cv2.CMP_GT))
            self.last_fraction = changed / diff.size
            moved = self._seen < self.warmup or self.last_fraction >= self.min_area
            cv2.accumulateWeighted(gray, self._background, self.learning_rate)
        self._seen += 1
        if moved:
            self.passed += 1
        else:
            self.skipped += 1
        return moved


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
