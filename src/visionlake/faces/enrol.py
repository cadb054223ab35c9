"""Enrolment photos: read one, check that it shows exactly one face, and embed that face.

Every refusal is a `PhotoError` (exit code 2) that names the photo: unreadable or corrupt file, no
face, several faces. Faces are found by a bundled face detector: ``yuface`` when its extra is
installed (it also finds turned faces), else ``haar-face``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import cv2
import numpy as np

from ..detectors.base import Detector
from ..errors import FrameError
from ..frames import decode_image
from ..limits import DEFAULT_MAX_PIXELS
from ..types import Detections
from .embed import FaceEmbedder
from .errors import PhotoError

#: A photo file larger than this is refused before it is read (a 40-megapixel JPEG is about 20 MB).
MAX_PHOTO_BYTES = 64 * 1024**2
#: Faces narrower than this (pixels of the photo) are too small to enrol from.
MIN_FACE = 40


def default_face_detector() -> Detector:
    """yuface when installed, else haar-face (both with their default parameters)."""
    from ..detectors.yuface import YuFaceDetector

    if YuFaceDetector.unavailable_reason() is None:
        return YuFaceDetector()
    from ..detectors.haar import HaarFaceDetector

    return HaarFaceDetector()


def read_photo(path: str | os.PathLike[str]) -> np.ndarray:
    """The photo at `path` as a BGR uint8 image, upright by its EXIF orientation; PhotoError naming it
    when it is missing, not a file, too large, not JPEG/PNG or corrupt."""
    name = str(path)
    try:
        size = os.path.getsize(path)
        if not Path(path).is_file():
            raise PhotoError(name, "not a file")
        if size > MAX_PHOTO_BYTES:
            raise PhotoError(name, f"{size} bytes is more than the {MAX_PHOTO_BYTES} a photo may have")
        data = Path(path).read_bytes()
    except PhotoError:
        raise
    except OSError as exc:
        raise PhotoError(name, f"cannot be read ({exc.strerror or exc})") from exc
    try:
        decode_image(data, DEFAULT_MAX_PIXELS)  # refuses empty, bomb-sized, truncated, undecodable
    except FrameError as exc:
        raise PhotoError(name, f"not a usable photo: {exc.reason}") from exc
    # decoded again honouring EXIF orientation, so a phone's portrait photo stands upright
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:  # pragma: no cover - decode_image has just decoded the same bytes
        raise PhotoError(name, "OpenCV could not decode it")
    return image


def single_face(image: np.ndarray, detector: Detector, photo: str = "photo") -> Detections:
    """The one face `detector` finds in `image`; PhotoError naming `photo` when it finds none or several.

    Faces narrower than `MIN_FACE` pixels are not counted (a face in the background of a portrait).
    """
    found = detector.detect(image)
    widths = found.xyxy[:, 2] - found.xyxy[:, 0] if len(found) else np.zeros(0)
    big = widths >= MIN_FACE
    n = int(big.sum())
    if n == 0:
        small = f" ({len(found)} smaller than {MIN_FACE} px)" if len(found) else ""
        raise PhotoError(photo, f"no face found{small}: enrol a photo with one clear, frontal face", faces=0)
    if n > 1:
        raise PhotoError(
            photo, f"{n} faces found: enrol a photo with exactly one face (crop it to the person)", faces=n
        )
    i = int(np.flatnonzero(big)[0])
    return Detections(found.xyxy[i : i + 1], found.score[i : i + 1], found.label[i : i + 1])


def enrol_photos(
    photos: Iterable[str | os.PathLike[str]],
    embedder: FaceEmbedder | None = None,
    detector: Detector | None = None,
) -> np.ndarray:
    """One embedding (float32 (n, 128)) per photo, each photo checked to show exactly one face.

    All photos are checked before anything is returned, so a caller that stores the result stores
    all or nothing; the first bad photo raises its PhotoError.
    """
    paths = [str(p) for p in photos]
    if not paths:
        raise PhotoError("(none)", "no photo given: name at least one photo of the person")
    detector = detector or default_face_detector()
    faces = []
    for path in paths:
        image = read_photo(path)
        faces.append((image, single_face(image, detector, path)))
    embedder = embedder or FaceEmbedder()
    return np.concatenate([embedder.embed(image, box) for image, box in faces]).astype(np.float32)
