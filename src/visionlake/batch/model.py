"""A trained bag-of-visual-words classifier: extractor, encoder and classifier saved as one file.

The three steps are one `sklearn.pipeline.Pipeline`, so `predict` on raw images does exactly what
training did. The file is a joblib pickle with a small envelope (format name, version, metadata), so
loading something else gives a clear error. As with every pickle, load only models you trust.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import InputError
from .outputs import atomic_file
from .records import ImageRecord

__all__ = ["FORMAT", "BovwModel", "Prediction", "file_digest"]

FORMAT = "visionlake-bovw-model"
VERSION = 1


def file_digest(path: str | os.PathLike[str], length: int = 12) -> str:
    """Hex sha256 prefix of a file's bytes (model versions change when the file does)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:length]


@dataclass(frozen=True, slots=True)
class Prediction:
    key: str
    label: str
    score: float  # probability (logreg) or decision margin (linear SVM): higher is surer


@dataclass
class BovwModel:
    """`pipeline` = Pipeline([("features", FeatureExtractor), ("bow", BowEncoder), ("classifier", clf)])."""

    pipeline: Any
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def classes(self) -> list[str]:
        return [str(c) for c in self.pipeline[-1].classes_]

    @property
    def classifier(self) -> Any:
        return self.pipeline[-1]

    def save(self, path: str | os.PathLike[str]) -> None:
        """One file, written atomically."""
        import joblib

        blob = {"format": FORMAT, "version": VERSION, "meta": self.meta, "pipeline": self.pipeline}
        with atomic_file(path, "model") as tmp:
            joblib.dump(blob, tmp)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> BovwModel:
        """InputError names the path when it is missing or not a visionlake model."""
        import joblib

        path = os.fspath(path)
        if not os.path.isfile(path):
            raise InputError(f"model {path!r} does not exist (train one with `visionlake classify train`)")
        try:
            blob = joblib.load(path)
        except Exception as exc:  # any unpickling failure means "not a model file"
            raise InputError(f"{path!r} is not a visionlake model file: {type(exc).__name__}: {exc}") from exc
        if not isinstance(blob, dict) or blob.get("format") != FORMAT:
            raise InputError(f"{path!r} is not a visionlake model file (no {FORMAT!r} envelope)")
        if blob.get("version") != VERSION:
            raise InputError(
                f"model {path!r} has format version {blob.get('version')}; this visionlake reads {VERSION}"
            )
        return cls(pipeline=blob["pipeline"], meta=dict(blob.get("meta") or {}))

    def scores(self, x: np.ndarray) -> np.ndarray:
        """Per-class scores of encoded vectors: probabilities if the classifier has them, else margins."""
        clf = self.classifier
        if hasattr(clf, "predict_proba"):
            return clf.predict_proba(x)
        margins = np.asarray(clf.decision_function(x), dtype=np.float64)
        if margins.ndim == 1:  # binary: one margin, positive = classes_[1]
            margins = np.stack([-margins, margins], axis=1)
        return margins

    def predict_records(self, records: Sequence[ImageRecord]) -> list[Prediction]:
        """Label each image with the best class and its score (undecodable images: InputError)."""
        if not records:
            return []
        features = self.pipeline[0].transform(list(records))
        x = self.pipeline[1].transform(features)
        scores = self.scores(x)
        best = scores.argmax(axis=1)
        classes = self.classes
        return [
            Prediction(key=r.key, label=classes[int(b)], score=float(scores[i, b]))
            for i, (r, b) in enumerate(zip(records, best, strict=True))
        ]
