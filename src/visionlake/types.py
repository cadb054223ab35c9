"""Plain data types shared by every layer: log records and detections."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

Headers = list[tuple[str, bytes]]


@dataclass(frozen=True, slots=True)
class Record:
    """One record read from a frame-log topic (the same shape for every log backend)."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes
    headers: Headers = field(default_factory=list)

    def header(self, name: str) -> str | None:
        """The last value of header `name` as text, or None when absent."""
        for k, v in reversed(self.headers):
            if k == name:
                return v.decode("utf-8", "replace")
        return None


@dataclass(frozen=True, slots=True)
class RecordMetadata:
    """Where a produced record landed."""

    topic: str
    partition: int
    offset: int


@dataclass(frozen=True)
class Detections:
    """Detections in one image as parallel numpy arrays (N boxes).

    xyxy: float32 (N, 4) pixel boxes x1, y1, x2, y2; score: float32 (N,); label: object (N,) of str.
    Validated on construction so a detector plugin cannot hand the writer ragged data.
    """

    xyxy: np.ndarray
    score: np.ndarray
    label: np.ndarray

    def __post_init__(self) -> None:
        xyxy = np.asarray(self.xyxy, dtype=np.float32).reshape(-1, 4)
        score = np.asarray(self.score, dtype=np.float32).reshape(-1)
        label = np.asarray(self.label, dtype=object).reshape(-1)
        if not (len(xyxy) == len(score) == len(label)):
            raise ValueError(
                f"Detections arrays disagree in length: xyxy {len(xyxy)}, score {len(score)}, label {len(label)}"
            )
        object.__setattr__(self, "xyxy", xyxy)
        object.__setattr__(self, "score", score)
        object.__setattr__(self, "label", label)

    @classmethod
    def empty(cls) -> Detections:
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, object))

    @classmethod
    def from_xywh(cls, boxes: Sequence | np.ndarray, score: Sequence | np.ndarray, label: str) -> Detections:
        """Build from OpenCV-style (x, y, w, h) boxes, all with one label."""
        b = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        xyxy = b.copy()
        xyxy[:, 2:] += b[:, :2]
        return cls(xyxy, np.asarray(score, np.float32).reshape(-1), np.full(len(b), label, dtype=object))

    def __len__(self) -> int:
        return len(self.score)

    def to_list(self) -> list[dict]:
        """JSON-ready list of {label, score, box: [x1, y1, x2, y2]}."""
        return [
            {
                "label": str(lab),
                "score": round(float(s), 4),
                "box": [round(float(v), 1) for v in box],
            }
            for box, s, lab in zip(self.xyxy, self.score, self.label, strict=True)
        ]

    @classmethod
    def from_list(cls, items: Sequence[dict]) -> Detections:
        if not items:
            return cls.empty()
        return cls(
            np.array([d["box"] for d in items], np.float32),
            np.array([d["score"] for d in items], np.float32),
            np.array([d["label"] for d in items], dtype=object),
        )
