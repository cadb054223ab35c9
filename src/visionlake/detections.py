"""Detections in one image as parallel NumPy arrays (imported as `visionlake.types.Detections` too)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Detections:
    """Detections in one image as parallel numpy arrays (N boxes).

    xyxy: float32 (N, 4) pixel boxes x1, y1, x2, y2; score: float32 (N,); label: object (N,) of str;
    track_id: int64 (N,) of track ids (-1: the box belongs to no track), or None when nothing tracked
    these boxes; embedding: float32 (N, D) feature vectors of the boxes (a face descriptor), or None;
    distance: float32 (N,) each box's distance to what it was matched with (face-id: the nearest
    enrolled face), or None.
    Validated on construction so a detector plugin cannot hand the writer ragged data.
    """

    xyxy: np.ndarray
    score: np.ndarray
    label: np.ndarray
    track_id: np.ndarray | None = None
    embedding: np.ndarray | None = None
    distance: np.ndarray | None = None

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
        if self.track_id is not None:
            ids = np.asarray(self.track_id, dtype=np.int64).reshape(-1)
            if len(ids) != len(score):
                raise ValueError(f"Detections has {len(score)} boxes but {len(ids)} track ids")
            object.__setattr__(self, "track_id", ids)
        if self.embedding is not None:
            emb = np.asarray(self.embedding, dtype=np.float32)
            if emb.ndim != 2 or len(emb) != len(score):
                raise ValueError(f"Detections has {len(score)} boxes but embeddings of shape {emb.shape}")
            object.__setattr__(self, "embedding", emb)
        if self.distance is not None:
            dist = np.asarray(self.distance, dtype=np.float32).reshape(-1)
            if len(dist) != len(score):
                raise ValueError(f"Detections has {len(score)} boxes but {len(dist)} distances")
            object.__setattr__(self, "distance", dist)

    def with_tracks(self, track_id: np.ndarray) -> Detections:
        """The same boxes with track ids (-1 for a box on no track)."""
        return Detections(self.xyxy, self.score, self.label, track_id, self.embedding, self.distance)

    def track_of(self, i: int) -> int | None:
        """Box `i`'s track id, or None."""
        if self.track_id is None or self.track_id[i] < 0:
            return None
        return int(self.track_id[i])

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
        """JSON-ready list of {label, score, box: [x1, y1, x2, y2]}, and track_id where tracked."""
        out = [
            {
                "label": str(lab),
                "score": round(float(s), 4),
                "box": [round(float(v), 1) for v in box],
            }
            for box, s, lab in zip(self.xyxy, self.score, self.label, strict=True)
        ]
        for i, item in enumerate(out):
            tid = self.track_of(i)
            if tid is not None:
                item["track_id"] = tid
        return out

    @classmethod
    def from_list(cls, items: Sequence[dict]) -> Detections:
        if not items:
            return cls.empty()
        tracked = any(d.get("track_id") is not None for d in items)
        return cls(
            np.array([d["box"] for d in items], np.float32),
            np.array([d["score"] for d in items], np.float32),
            np.array([d["label"] for d in items], dtype=object),
            np.array([-1 if d.get("track_id") is None else d["track_id"] for d in items], np.int64)
            if tracked
            else None,
        )
