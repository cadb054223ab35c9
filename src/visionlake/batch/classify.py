"""Classifiers on bags of visual words and their evaluation.

Linear models are the classic match for bag-of-words histograms: with power (Hellinger) normalisation a
linear SVM behaves like a kernel SVM on the raw histograms, and it trains on 60,000 images in minutes.
The evaluation writes what people look at first: accuracy, per-class precision and recall, and the
confusion matrix as CSV and as a PNG heat map (drawn with OpenCV, no plotting library needed).
"""

from __future__ import annotations

import csv
import difflib
import os
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from ..errors import InputError

__all__ = [
    "CLASSIFIERS",
    "Evaluation",
    "check_labels",
    "evaluate",
    "make_classifier",
    "write_confusion_csv",
    "write_confusion_png",
]

CLASSIFIERS = ("linear-svm", "logreg")


def make_classifier(name: str, *, c: float = 1.0, seed: int = 0) -> Any:
    """An unfitted scikit-learn classifier by name; InputError lists the valid names."""
    if c <= 0 or not np.isfinite(c):
        raise InputError(f"the regularisation constant C must be a positive number, got {c!r}")
    if name == "linear-svm":
        from sklearn.svm import LinearSVC

        return LinearSVC(C=c, dual="auto", max_iter=5000, random_state=seed)
    if name == "logreg":
        from sklearn.linear_model import LogisticRegression

        return LogisticRegression(C=c, max_iter=2000, random_state=seed)
    close = difflib.get_close_matches(name, CLASSIFIERS, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise InputError(f"unknown classifier {name!r}{hint}; choose one of {', '.join(CLASSIFIERS)}")


def check_labels(labels: list[str | None], what: str) -> np.ndarray:
    """`labels` as an array, or InputError when some are missing or there are fewer than two classes."""
    missing = sum(1 for label in labels if label is None)
    if missing:
        raise InputError(
            f"{what}: {missing} of {len(labels)} images have no label (a classifier needs one per image; "
            "pack a folder with one sub-folder per class)"
        )
    arr = np.asarray(labels, dtype=object)
    if len(set(arr.tolist())) < 2:
        raise InputError(
            f"{what}: a classifier needs at least two classes, found {sorted(set(arr.tolist()))}"
        )
    return arr


@dataclass
class Evaluation:
    """Accuracy, per-class figures and the confusion matrix (rows = true class, columns = predicted)."""

    classes: list[str]
    confusion: np.ndarray
    images: int
    per_class: list[dict[str, Any]] = field(default_factory=list)

    @property
    def accuracy(self) -> float:
        total = int(self.confusion.sum())
        return float(np.trace(self.confusion)) / total if total else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "accuracy": round(self.accuracy, 6),
            "images": self.images,
            "classes": self.classes,
            "per_class": self.per_class,
            "confusion": self.confusion.tolist(),
        }


def evaluate(true: list[str | None], predicted: list[str], classes: list[str] | None = None) -> Evaluation:
    """Compare predictions with the true labels. Classes = the model's classes plus any unseen ones."""
    y_true = check_labels(list(true), "evaluation dataset") if true else np.array([], dtype=object)
    if len(y_true) != len(predicted):
        raise InputError(f"{len(y_true)} true labels but {len(predicted)} predictions")
    names = list(classes or [])
    for label in sorted(set(y_true.tolist()) | set(predicted)):
        if label not in names:
            names.append(label)
    index = {name: i for i, name in enumerate(names)}
    confusion = np.zeros((len(names), len(names)), dtype=np.int64)
    np.add.at(confusion, ([index[t] for t in y_true], [index[p] for p in predicted]), 1)
    per_class = []
    for i, name in enumerate(names):
        tp = int(confusion[i, i])
        support = int(confusion[i].sum())
        called = int(confusion[:, i].sum())
        precision = tp / called if called else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class.append(
            {
                "class": name,
                "precision": round(precision, 4),
                "recall": round(recall, 4),
                "f1": round(f1, 4),
                "support": support,
            }
        )
    return Evaluation(classes=names, confusion=confusion, images=len(y_true), per_class=per_class)


def write_confusion_csv(evaluation: Evaluation, path: str | os.PathLike[str]) -> None:
    """The confusion matrix as CSV: a header of predicted classes, one row per true class."""
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["true \\ predicted", *evaluation.classes])
        for name, row in zip(evaluation.classes, evaluation.confusion.tolist(), strict=True):
            writer.writerow([name, *row])


def write_confusion_png(evaluation: Evaluation, path: str | os.PathLike[str], cell: int = 48) -> None:
    """The confusion matrix as a heat map (row-normalised colours, counts written in each cell)."""
    names = evaluation.classes
    n = len(names)
    font, scale = cv2.FONT_HERSHEY_SIMPLEX, 0.4
    label_w = 12 + max(cv2.getTextSize(name, font, scale, 1)[0][0] for name in names)
    top = label_w  # predicted names are written vertically above the columns
    width, height = label_w + n * cell + 10, top + n * cell + 30
    canvas = np.full((height, width, 3), 255, np.uint8)
    rows = evaluation.confusion.sum(axis=1, keepdims=True).clip(min=1)
    share = (evaluation.confusion / rows * 255).astype(np.uint8)
    colours = cv2.applyColorMap(share, cv2.COLORMAP_VIRIDIS)
    for i in range(n):
        y = top + i * cell
        cv2.putText(canvas, names[i], (6, y + cell // 2 + 4), font, scale, (0, 0, 0), 1, cv2.LINE_AA)
        for j in range(n):
            x = label_w + j * cell
            colour = tuple(int(v) for v in colours[i, j])
            cv2.rectangle(canvas, (x, y), (x + cell - 1, y + cell - 1), colour, -1)
            text = str(int(evaluation.confusion[i, j]))
            ink = (0, 0, 0) if share[i, j] > 150 else (255, 255, 255)
            (tw, th), _ = cv2.getTextSize(text, font, scale, 1)
            cv2.putText(
                canvas, text, (x + (cell - tw) // 2, y + (cell + th) // 2), font, scale, ink, 1, cv2.LINE_AA
            )
    # column headings, written horizontally on a strip then rotated to read bottom-up
    strip = np.full((cell * n, top, 3), 255, np.uint8)
    for j, name in enumerate(names):
        cv2.putText(strip, name, (6, j * cell + cell // 2 + 4), font, scale, (0, 0, 0), 1, cv2.LINE_AA)
    canvas[:top, label_w : label_w + n * cell] = cv2.rotate(strip, cv2.ROTATE_90_COUNTERCLOCKWISE)
    footer = f"rows: true class, columns: predicted; accuracy {evaluation.accuracy:.4f}"
    cv2.putText(canvas, footer, (6, height - 10), font, scale, (0, 0, 0), 1, cv2.LINE_AA)
    if not cv2.imwrite(os.fspath(path), canvas):
        raise InputError(f"cannot write the confusion matrix image {os.fspath(path)!r}")
