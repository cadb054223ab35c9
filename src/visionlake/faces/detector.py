"""face-id: faces labelled with the nearest enrolled person's name, or "unknown".

`FaceIdDetector` finds faces with a bundled face detector (`face_detector`: yuface or haar-face),
embeds each with dlib (`FaceEmbedder`) and matches it against a `Gallery`. The gallery comes from
the constructor (a `Gallery`, or a callable returning one) or, in a worker, from the lake's catalog
(`bind_catalog`, which the worker calls): the people enrolled with `visionlake faces enroll`, read
again every `refresh_s` seconds so that a new enrolment reaches running workers.

`detect` returns `Detections` whose label is the name, whose score is the face detector's, and which
carry the embeddings and the distances to the nearest enrolled faces (the catalog stores them with
the result). `identify` returns everything: boxes,
detector scores, names, distances, the nearest name and the embeddings.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..detectors.base import Detector, check_image, require
from ..types import Detections
from .embed import DIM, FaceEmbedder
from .embed import unavailable_reason as _faces_unavailable
from .errors import EmptyGallery
from .match import THRESHOLD, UNKNOWN, Gallery, Match

GallerySource = Gallery | Callable[[], Gallery]
FACE_DETECTORS = ("yuface", "haar-face")


@dataclass(frozen=True)
class FaceIdentities:
    """The faces of one image: parallel arrays, one entry per face."""

    xyxy: np.ndarray  # float32 (n, 4) boxes
    face_score: np.ndarray  # float32 (n,) the face detector's score
    name: np.ndarray  # object (n,) enrolled name or "unknown"
    distance: np.ndarray  # float32 (n,) distance to the nearest enrolled embedding
    nearest: np.ndarray  # object (n,) the nearest enrolled name, also beyond the threshold
    embedding: np.ndarray  # float32 (n, 128)

    def __len__(self) -> int:
        return len(self.name)

    def detections(self) -> Detections:
        """As `Detections`: label = name, score = the face detector's score, with the embeddings and
        the distances to the nearest enrolled faces (the catalog keeps both, so unknown faces can be
        clustered and named later)."""
        return Detections(
            self.xyxy, self.face_score, self.name, embedding=self.embedding, distance=self.distance
        )


class FaceIdDetector(Detector):
    """Faces named by the nearest enrolled identity (or "unknown")."""

    name = "face-id"
    version = "1"
    defaults = {
        "threshold": THRESHOLD,
        "face_detector": "yuface",
        "min_size": 40,
        "max_width": 640,
        "refresh_s": 30.0,
    }

    def __init__(self, gallery: GallerySource | None = None, **params: object) -> None:
        self._gallery_source = gallery
        super().__init__(**params)

    @classmethod
    def unavailable_reason(cls) -> str | None:
        return _faces_unavailable()

    def _validate(self, params: Mapping[str, object]) -> None:
        p = params
        require(0.0 < p["threshold"] <= 2.0, self.name, "threshold", p["threshold"], "in (0, 2]")
        require(
            p["face_detector"] in FACE_DETECTORS,
            self.name,
            "face_detector",
            p["face_detector"],
            " or ".join(FACE_DETECTORS),
        )
        require(p["min_size"] >= 1, self.name, "min_size", p["min_size"], ">= 1 (pixels)")
        require(p["max_width"] >= 0, self.name, "max_width", p["max_width"], ">= 0 (0 = never downscale)")
        require(p["refresh_s"] > 0, self.name, "refresh_s", p["refresh_s"], "> 0 (seconds)")

    def _setup(self) -> None:
        p = self._params
        if p["face_detector"] == "yuface":
            from ..detectors.yuface import YuFaceDetector

            self.faces_: Detector = YuFaceDetector(max_width=p["max_width"])
        else:
            from ..detectors.haar import HaarFaceDetector

            self.faces_ = HaarFaceDetector(max_width=p["max_width"], min_size=p["min_size"])
        self.embedder_ = FaceEmbedder()
        self.gallery_: Gallery | None = None
        self._loaded_at = 0.0
        if self._gallery_source is not None:
            self.refresh()

    def bind_catalog(self, catalog: Any) -> None:
        """Take the gallery from `catalog` (the identities enrolled there); called by the worker."""
        from ..catalog.faces import gallery_rows

        engine = catalog.engine

        def from_catalog() -> Gallery:
            with engine.connect() as conn:
                names, vectors = gallery_rows(conn)
            return Gallery(names, vectors if names else None, threshold=self._params["threshold"])

        self._gallery_source = from_catalog
        self.refresh()

    def refresh(self, *, allow_empty: bool = False) -> Gallery:
        """(Re)load the gallery from its source; EmptyGallery when there is none or it is empty (unless
        `allow_empty`: a running worker whose people were all removed names every face "unknown")."""
        source = self._gallery_source
        gallery = source() if callable(source) else source
        if gallery is None or (len(gallery) == 0 and not allow_empty):
            raise EmptyGallery(
                f"detector {self.name!r}: no identities are enrolled; enrol at least one person's photo first"
            )
        if not isinstance(gallery, Gallery):
            raise TypeError(f"the gallery source gave {type(gallery).__name__}, not a Gallery")
        self.gallery_ = gallery
        self._loaded_at = time.monotonic()
        return gallery

    def identify(self, image: np.ndarray) -> FaceIdentities:
        """Every face in the BGR image, with its name, distance and embedding."""
        image = check_image(image)
        if self.gallery_ is None:
            raise EmptyGallery(f"detector {self.name!r} has no gallery: give it one, or run it in a worker")
        if callable(self._gallery_source) and time.monotonic() - self._loaded_at > self._params["refresh_s"]:
            self.refresh(allow_empty=True)
        found = self.faces_.detect(image)
        if len(found):
            keep = (found.xyxy[:, 2] - found.xyxy[:, 0]) >= self._params["min_size"]
            found = Detections(found.xyxy[keep], found.score[keep], found.label[keep])
        if not len(found):
            return FaceIdentities(
                np.zeros((0, 4), np.float32),
                np.zeros(0, np.float32),
                np.zeros(0, object),
                np.zeros(0, np.float32),
                np.zeros(0, object),
                np.zeros((0, DIM), np.float32),
            )
        emb = self.embedder_.embed(image, found.xyxy)
        if len(self.gallery_) == 0:
            matches = [Match(UNKNOWN, float("inf"), UNKNOWN) for _ in range(len(emb))]
        else:
            matches = self.gallery_.identify(emb, self._params["threshold"])
        return FaceIdentities(
            found.xyxy,
            found.score,
            np.array([m.name for m in matches], dtype=object),
            np.array([m.distance for m in matches], dtype=np.float32),
            np.array([m.nearest for m in matches], dtype=object),
            emb,
        )

    def detect(self, image: np.ndarray) -> Detections:
        return self.identify(image).detections()

    def __reduce__(self) -> tuple[Any, ...]:
        # the gallery travels with the parameters (a Gallery pickles as arrays; a callable must be a
        # module-level function to pickle)
        return (_rebuild_face_id, (self._gallery_source, self.params))


def _rebuild_face_id(gallery: GallerySource | None, params: dict[str, object]) -> FaceIdDetector:
    return FaceIdDetector(gallery, **params)
