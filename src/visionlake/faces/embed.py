"""Face embeddings: dlib's 128-d ResNet face descriptor, from the `faces` extra, on CPU, offline.

The models come as files of the `face-recognition-models` package (a 5-point landmark predictor and the
descriptor network); `dlib` comes from the `dlib-bin` wheel. Both are imported only when a
`FaceEmbedder` is built, so importing visionlake (or `visionlake.faces`) stays light.

The faces themselves are found by our face detectors (``yuface``, ``haar-face``): a detector's box
seeds the landmark predictor, the landmarks align the face, and the network maps the aligned face to
128 numbers. Two photos of one person land about 0.3-0.45 apart (Euclidean distance), two people
usually more than 0.6; `match.THRESHOLD` is the line drawn from our measurements.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import os
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

from ..detectors.base import check_image
from ..errors import InputError
from ..types import Detections
from .errors import FacesUnavailable

#: Length of one face embedding.
DIM = 128
#: The two model files used, inside the face_recognition_models package's ``models`` folder.
LANDMARKS_MODEL = "shape_predictor_5_face_landmarks.dat"
DESCRIPTOR_MODEL = "dlib_face_recognition_resnet_model_v1.dat"
MODELS_PACKAGE = "face_recognition_models"


def _import_dlib() -> Any:
    try:
        return importlib.import_module("dlib")
    except ImportError as exc:
        raise FacesUnavailable(f"module 'dlib' is not importable ({exc})") from exc


def model_path(filename: str) -> str:
    """Path of one of dlib's model files shipped by the `face-recognition-models` package.

    The package is located without being imported (its ``__init__`` imports ``pkg_resources``,
    which newer setuptools no longer ship); FacesUnavailable when it or the file is missing.
    """
    try:
        spec = importlib.util.find_spec(MODELS_PACKAGE)
    except (ImportError, ValueError):
        spec = None
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    if not folders:
        raise FacesUnavailable(
            f"package {MODELS_PACKAGE!r} (pip name face-recognition-models) is not installed"
        )
    for folder in folders:
        path = os.path.join(folder, "models", filename)
        if os.path.isfile(path):
            return path
    raise FacesUnavailable(f"model file {filename!r} not found in {', '.join(folders)}")


def unavailable_reason() -> str | None:
    """Why face embeddings cannot be computed here (the install hint), or None when they can."""
    try:
        if importlib.util.find_spec("dlib") is None:
            raise FacesUnavailable("module 'dlib' (pip name dlib-bin) is not installed")
        model_path(LANDMARKS_MODEL)
        model_path(DESCRIPTOR_MODEL)
    except FacesUnavailable as exc:
        return str(exc)
    return None


@functools.lru_cache(maxsize=2)
def _models(landmarks: str, descriptor: str) -> tuple[Any, Any, Any]:
    """(dlib, shape predictor, descriptor network), loaded once per process and paths."""
    dlib = _import_dlib()
    try:
        return dlib, dlib.shape_predictor(landmarks), dlib.face_recognition_model_v1(descriptor)
    except RuntimeError as exc:  # dlib's message for an unreadable or truncated model file
        raise FacesUnavailable(f"dlib could not load its model files ({exc})") from exc


def as_boxes(boxes: Detections | Sequence | np.ndarray) -> np.ndarray:
    """Boxes as a float64 (n, 4) array of x1, y1, x2, y2 (a `Detections` gives its `xyxy`)."""
    if isinstance(boxes, Detections):
        boxes = boxes.xyxy
    arr = np.asarray(boxes, dtype=np.float64)
    if arr.size == 0:
        return np.zeros((0, 4), np.float64)
    if arr.ndim == 1 and arr.shape[0] == 4:
        arr = arr.reshape(1, 4)
    if arr.ndim != 2 or arr.shape[1] != 4 or not np.isfinite(arr).all():
        raise InputError(f"face boxes must be finite (n, 4) x1, y1, x2, y2 pixels, got shape {arr.shape}")
    return arr


class FaceEmbedder:
    """dlib's face descriptor for boxes found by a face detector: `embed(image_bgr, boxes)` -> (n, 128).

    `jitters` > 0 averages that many randomly jittered copies of each face (slower, slightly surer);
    `padding` is the margin dlib adds around the aligned face (its default 0.25). The models load when
    the first embedder of a process is built and are shared by later ones.
    """

    def __init__(self, *, jitters: int = 0, padding: float = 0.25) -> None:
        if int(jitters) != jitters or jitters < 0:
            raise InputError(f"jitters must be an integer >= 0, got {jitters!r}")
        if not (0.0 <= float(padding) <= 1.0):
            raise InputError(f"padding must be in [0, 1], got {padding!r}")
        self.jitters = int(jitters)
        self.padding = float(padding)
        self.dlib_, self.landmarks_, self.network_ = _models(
            model_path(LANDMARKS_MODEL), model_path(DESCRIPTOR_MODEL)
        )

    def embed(self, image_bgr: np.ndarray, boxes: Detections | Sequence | np.ndarray) -> np.ndarray:
        """One 128-d float32 embedding per box (x1, y1, x2, y2 pixels) of the BGR uint8 image, in order.

        Boxes are clipped to the image; a box with no area left is refused (InputError). No box
        gives a (0, 128) array.
        """
        image = check_image(image_bgr)
        xyxy = as_boxes(boxes)
        if len(xyxy) == 0:
            return np.zeros((0, DIM), np.float32)
        height, width = image.shape[:2]
        rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)  # a new C-contiguous uint8 array, as dlib needs
        shapes = self.dlib_.full_object_detections()
        for x1, y1, x2, y2 in xyxy:
            left, top = int(round(max(0.0, x1))), int(round(max(0.0, y1)))
            right, bottom = int(round(min(width - 1.0, x2))), int(round(min(height - 1.0, y2)))
            if right <= left or bottom <= top:
                raise InputError(
                    f"face box [{x1:g}, {y1:g}, {x2:g}, {y2:g}] has no area inside the {width}x{height} image"
                )
            shapes.append(self.landmarks_(rgb, self.dlib_.rectangle(left, top, right, bottom)))
        # One call for all faces of the image: dlib runs the network over them as a batch.
        vectors = self.network_.compute_face_descriptor(rgb, shapes, self.jitters, self.padding)
        return np.asarray([np.asarray(v) for v in vectors], dtype=np.float32).reshape(len(xyxy), DIM)

    def __repr__(self) -> str:
        return f"FaceEmbedder(jitters={self.jitters}, padding={self.padding})"
