"""bovw-classifier: a trained bag-of-visual-words model (`visionlake classify train`) as a detector.

It labels whole frames (a bird-feeder camera: "bird" or "empty"), so each frame gets one
detection whose box is the whole image, whose label is the predicted class and whose score is the
class probability (logreg) or the SVM margin. Frames scoring below `min_score` get no detection;
`ignore` lists classes that are never reported (e.g. a background class).

The model version is the plugin version plus a hash of the model file (`1@3f2a9c01`), so retraining a model in place
gives new catalog results instead of silently mixing two models under one version.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np

from ..types import Detections
from .base import Detector, check_image, require

__all__ = ["BovwClassifier"]


class BovwClassifier(Detector):
    """Whole-frame labels from a saved bag-of-visual-words classifier."""

    name = "bovw-classifier"
    version = "1"
    defaults = {"model": "", "min_score": -1e9, "ignore": ""}

    def _validate(self, params: Mapping[str, object]) -> None:
        model = str(params["model"])
        require(
            bool(model), self.name, "model", model, "the path of a model saved by `visionlake classify train`"
        )
        require(os.path.isfile(model), self.name, "model", model, "an existing model file")

    def _compute_model_version(self, params: Mapping[str, object]) -> str:
        from ..batch.model import file_digest

        # the file's content, not its path, identifies the model: a moved model keeps its version
        base = super()._compute_model_version({**params, "model": ""})
        return f"{base}@{file_digest(str(params['model']), 8)}"

    def _setup(self) -> None:
        from ..batch.model import BovwModel

        self.model_ = BovwModel.load(str(self._params["model"]))
        self.ignore_ = {c.strip() for c in str(self._params["ignore"]).split(",") if c.strip()}

    def detect(self, image: np.ndarray) -> Detections:
        image = check_image(image)
        height, width = image.shape[:2]
        features = self.model_.pipeline[0].transform([image])
        scores = self.model_.scores(self.model_.pipeline[1].transform(features))[0]
        best = int(np.argmax(scores))
        label = self.model_.classes[best]
        score = float(scores[best])
        if label in self.ignore_ or score < float(self._params["min_score"]):
            return Detections.empty()
        box = np.array([[0.0, 0.0, float(width), float(height)]])
        return Detections(box, np.array([score]), np.array([label], dtype=object))
