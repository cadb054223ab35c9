"""The detector plugin interface: validated parameters, a stable model version and `detect(image)`.

A plugin subclasses `Detector`, declares `name`, `version` and `defaults` (every tunable parameter with
its default; int, float, str or bool), optionally overrides `_validate` (range checks) and `_setup`
(heavy state such as a loaded cascade, stored in attributes ending in ``_``), and implements `detect`.
It is registered under the entry-point group ``visionlake.detectors`` (see `registry`).

The helpers `check_image`, `downscale` and `to_detections` are the shared steps of the bundled plugins:
reject a non-BGR input, shrink wide frames for speed, and map boxes back into the caller's image.
"""

from __future__ import annotations

import abc
import difflib
import hashlib
import json
import math
import numbers
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

import cv2
import numpy as np

from ..errors import InputError
from ..types import Detections

__all__ = ["Detector", "check_image", "downscale", "parse_params", "require", "to_detections"]

_TRUE = frozenset({"1", "true", "t", "yes", "y", "on"})
_FALSE = frozenset({"0", "false", "f", "no", "n", "off"})
_PARAM_TYPES = (bool, int, float, str)


def parse_params(items: Iterable[str]) -> dict[str, str]:
    """Parse CLI ``--param key=value`` strings into a dict of strings (the detector coerces types).

    The value is everything after the first ``=`` and may be empty; a key given twice is an error.
    """
    out: dict[str, str] = {}
    for item in items or ():
        key, sep, value = str(item).partition("=")
        key = key.strip()
        if not sep or not key:
            raise InputError(f"invalid --param {item!r}: expected key=value, e.g. min_neighbors=3")
        if key in out:
            raise InputError(f"--param {key!r} given twice ({out[key]!r} and {value!r})")
        out[key] = value.strip()
    return out


def require(ok: bool, detector: str, name: str, value: object, must: str) -> None:
    """Raise InputError naming the detector, parameter and value unless `ok`."""
    if not ok:
        raise InputError(f"detector {detector!r}: parameter {name!r} must be {must}, got {value!r}")


def _coerce(detector: str, name: str, value: object, default: object) -> object:
    """`value` converted to the type of `default`, or InputError naming the parameter and value."""
    if isinstance(default, bool):
        if isinstance(value, bool | np.bool_):
            return bool(value)
        if isinstance(value, numbers.Integral) and int(value) in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        require(False, detector, name, value, "a boolean (true/false)")
    if isinstance(default, int):
        if isinstance(value, numbers.Integral) and not isinstance(value, bool | np.bool_):
            return int(value)
        if isinstance(value, numbers.Real) and not isinstance(value, bool | np.bool_):
            number = float(value)
            require(math.isfinite(number) and number.is_integer(), detector, name, value, "an integer")
            return int(number)
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                pass
            try:
                number = float(value.strip())
            except ValueError:
                number = math.nan
            require(math.isfinite(number) and number.is_integer(), detector, name, value, "an integer")
            return int(number)
        require(False, detector, name, value, "an integer")
    if isinstance(default, float):
        number = math.nan
        if isinstance(value, numbers.Real) and not isinstance(value, bool | np.bool_):
            number = float(value)
        elif isinstance(value, str):
            try:
                number = float(value.strip())
            except ValueError:
                number = math.nan
        require(math.isfinite(number), detector, name, value, "a finite number")
        return number
    if isinstance(default, str):
        require(isinstance(value, str), detector, name, value, "a string")
        return value
    raise TypeError(f"detector {detector!r}: default of {name!r} must be bool, int, float or str")


def _rebuild(cls: type[Detector], params: dict[str, object]) -> Detector:
    """Unpickle helper: a detector travels as its class and parameters, heavy state is rebuilt."""
    return cls(**params)


class Detector(abc.ABC):
    """Base class of detector plugins (scikit-learn style: `__init__` stores validated parameters)."""

    name: ClassVar[str]
    version: ClassVar[str]
    defaults: ClassVar[dict[str, object]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for key, value in cls.__dict__.get("defaults", {}).items():
            if not isinstance(value, _PARAM_TYPES):
                raise TypeError(
                    f"{cls.__name__}.defaults[{key!r}] is {type(value).__name__}; use bool, int, float or str"
                )

    def __init__(self, **params: object) -> None:
        merged = dict(self.defaults)
        for key, value in params.items():
            if key not in self.defaults:
                valid = ", ".join(sorted(self.defaults)) or "(none)"
                close = difflib.get_close_matches(key, list(self.defaults), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise InputError(
                    f"detector {self.name!r} has no parameter {key!r}{hint}; valid parameters: {valid}"
                )
            merged[key] = _coerce(self.name, key, value, self.defaults[key])
        self._validate(merged)
        self._params = merged
        self._model_version = self._compute_model_version(merged)
        self._setup()

    # --- hooks for subclasses -------------------------------------------------------------------

    def _validate(self, params: Mapping[str, object]) -> None:  # noqa: B027 (optional hook)
        """Range checks on coerced parameters; raise InputError via `require`. Default: none."""

    def _setup(self) -> None:  # noqa: B027 (optional hook)
        """Build heavy state once (attributes ending in ``_``). Runs after validation. Default: none."""

    @classmethod
    def unavailable_reason(cls) -> str | None:
        """Why this detector cannot run here (e.g. a missing optional extra), or None when it can."""
        return None

    def limit_threads(self, threads: int) -> None:
        """Use at most `threads` threads per detection (the worker's `--threads`; 1 per process under
        `--processes`). Default: OpenCV's thread pool and any OpenMP runtime already loaded (a plugin's
        native library), which OpenCV's setting does not reach. Override for other runtimes."""
        from threadpoolctl import threadpool_limits

        cv2.setNumThreads(threads)
        threadpool_limits(threads, user_api="openmp")

    @abc.abstractmethod
    def detect(self, image: np.ndarray) -> Detections:
        """Detect objects in a BGR uint8 HxWx3 image; boxes are pixels in this image's coordinates."""

    # --- parameters and versions ----------------------------------------------------------------

    @property
    def params(self) -> dict[str, object]:
        """Every parameter: the defaults updated with the given ones (a copy)."""
        return dict(self._params)

    @property
    def model_version(self) -> str:
        """`version` for default parameters, else ``f"{version}+{8-hex hash of the parameters}"``."""
        return self._model_version

    def _compute_model_version(self, params: Mapping[str, object]) -> str:
        if dict(params) == dict(self.defaults):
            return str(self.version)
        blob = json.dumps(dict(params), sort_keys=True, separators=(",", ":"))
        return f"{self.version}+{hashlib.sha256(blob.encode()).hexdigest()[:8]}"

    def __repr__(self) -> str:
        changed = ", ".join(f"{k}={v!r}" for k, v in sorted(self._params.items()) if v != self.defaults[k])
        return f"{type(self).__name__}({changed})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.params))


# --- shared steps of the bundled plugins --------------------------------------------------------


def check_image(image: object) -> np.ndarray:
    """`image` itself when it is a non-empty BGR uint8 HxWx3 array, else InputError."""
    if not isinstance(image, np.ndarray):
        raise InputError(f"expected a BGR uint8 image (numpy array HxWx3), got {type(image).__name__}")
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 or image.size == 0:
        raise InputError(
            f"expected a BGR uint8 image of shape (H, W, 3), got dtype {image.dtype} shape {image.shape}"
        )
    return image


def downscale(image: np.ndarray, max_width: int) -> tuple[np.ndarray, float, float]:
    """Shrink `image` to `max_width` pixels wide (aspect kept) when wider; 0 means never.

    Returns the image to run on and the factors (fx, fy) that map its pixels back to the original.
    """
    height, width = image.shape[:2]
    if max_width <= 0 or width <= max_width:
        return image, 1.0, 1.0
    new_height = max(1, round(height * max_width / width))
    small = cv2.resize(image, (max_width, new_height), interpolation=cv2.INTER_AREA)
    return small, width / max_width, height / new_height


def to_detections(
    xywh: object, score: object, label: str, fx: float, fy: float, width: int, height: int
) -> Detections:
    """Detections from (x, y, w, h) boxes of a downscaled image, mapped back by (fx, fy).

    Boxes are clipped to the original `width` x `height`; boxes left with no area are dropped.
    """
    boxes = np.asarray(xywh, dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(score, dtype=np.float64).reshape(-1)
    if len(boxes) == 0:
        return Detections.empty()
    xyxy = np.empty_like(boxes)
    xyxy[:, 0] = np.clip(boxes[:, 0] * fx, 0, width)
    xyxy[:, 1] = np.clip(boxes[:, 1] * fy, 0, height)
    xyxy[:, 2] = np.clip((boxes[:, 0] + boxes[:, 2]) * fx, 0, width)
    xyxy[:, 3] = np.clip((boxes[:, 1] + boxes[:, 3]) * fy, 0, height)
    keep = (xyxy[:, 2] > xyxy[:, 0]) & (xyxy[:, 3] > xyxy[:, 1])
    n = int(keep.sum())
    return Detections(xyxy[keep], scores[keep], np.full(n, label, dtype=object))
