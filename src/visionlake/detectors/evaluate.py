"""Score detector boxes against hand-labelled ground truth: greedy matching at an IoU threshold.

`match_boxes` scores one image; `MatchCounts` adds up images (``a + b``) and reports precision,
recall, F1 and the mean IoU of the matched pairs. Truth boxes marked ``ignore`` (people too small,
cut off by the frame edge or mostly hidden) count neither way: a prediction on one is not a false
positive and a missed one is not a false negative.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["MatchCounts", "TrackFrame", "iou_matrix", "match_boxes", "mot_scores", "xywh_to_xyxy"]


@dataclass(frozen=True)
class MatchCounts:
    """True positives, false positives, false negatives and the summed IoU of the true positives."""

    tp: int = 0
    fp: int = 0
    fn: int = 0
    iou_sum: float = 0.0

    def __add__(self, other: MatchCounts) -> MatchCounts:
        return MatchCounts(
            self.tp + other.tp, self.fp + other.fp, self.fn + other.fn, self.iou_sum + other.iou_sum
        )

    @property
    def precision(self) -> float:
        """tp / (tp + fp); 1.0 when nothing was predicted."""
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def recall(self) -> float:
        """tp / (tp + fn); 1.0 when there was nothing to find."""
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0

    @property
    def f1(self) -> float:
        """Harmonic mean of precision and recall (0.0 when both are 0)."""
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    @property
    def mean_iou(self) -> float:
        """Mean IoU of the matched (true positive) pairs; 0.0 when there are none."""
        return self.iou_sum / self.tp if self.tp else 0.0

    def to_dict(self) -> dict[str, float | int]:
        return {
            "tp": self.tp,
            "fp": self.fp,
            "fn": self.fn,
            "precision": self.precision,
            "recall": self.recall,
            "f1": self.f1,
            "mean_iou": self.mean_iou,
        }


def xywh_to_xyxy(boxes: Sequence[Sequence[float]] | np.ndarray) -> np.ndarray:
    """(N, 4) float64 x1, y1, x2, y2 boxes from (x, y, w, h) boxes."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.concatenate([b[:, :2], b[:, :2] + b[:, 2:]], axis=1)


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(len(a), len(b)) intersection over union of x1, y1, x2, y2 boxes (0 where a box has no area)."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / union, 0.0)


def match_boxes(
    pred_xyxy: np.ndarray,
    pred_score: np.ndarray,
    truth_xyxy: np.ndarray,
    truth_ignore: np.ndarray | Sequence[bool] | None = None,
    iou_threshold: float = 0.5,
) -> MatchCounts:
    """Match one image's predictions to its truth boxes, greedily in order of decreasing score.

    Each prediction takes the unmatched, non-ignored truth box it overlaps most, if that IoU is at
    least `iou_threshold` (a true positive; each truth box is matched at most once). Otherwise it is
    dropped when it overlaps an ignored truth box by at least `iou_threshold`, and is a false
    positive when it does not. Unmatched non-ignored truth boxes are false negatives.
    """
    pred = np.asarray(pred_xyxy, dtype=np.float64).reshape(-1, 4)
    score = np.asarray(pred_score, dtype=np.float64).reshape(-1)
    truth = np.asarray(truth_xyxy, dtype=np.float64).reshape(-1, 4)
    if len(pred) != len(score):
        raise ValueError(f"{len(pred)} predicted boxes but {len(score)} scores")
    ignore = (
        np.zeros(len(truth), dtype=bool)
        if truth_ignore is None
        else np.asarray(truth_ignore, dtype=bool).reshape(-1)
    )
    if len(ignore) != len(truth):
        raise ValueError(f"{len(truth)} truth boxes but {len(ignore)} ignore flags")
    ious = iou_matrix(pred, truth)
    matched = np.zeros(len(truth), dtype=bool)
    tp = fp = 0
    iou_sum = 0.0
    for i in np.argsort(-score, kind="stable"):
        candidates = np.where(~matched & ~ignore, ious[i], -1.0)
        j = int(np.argmax(candidates)) if len(truth) else -1
        if j >= 0 and candidates[j] >= iou_threshold:
            matched[j] = True
            tp += 1
            iou_sum += float(ious[i, j])
        elif not (ignore & (ious[i] >= iou_threshold)).any():
            fp += 1
    fn = int((~matched & ~ignore).sum())
    return MatchCounts(tp, fp, fn, iou_sum)


@dataclass(frozen=True)
class TrackFrame:
    """One frame of a tracking evaluation: the truth's ids and boxes (ignored ones flagged) and the
    tracker's confirmed ids and boxes (x1, y1, x2, y2)."""

    truth_ids: Sequence[int]
    truth_xyxy: np.ndarray
    truth_ignore: Sequence[bool]
    track_ids: Sequence[int]
    track_xyxy: np.ndarray


def mot_scores(frames: Sequence[TrackFrame], iou_threshold: float = 0.5) -> dict[str, float]:
    """MOTA, IDF1 and their parts over a sequence, with the `motmetrics` package (CLEAR MOT and
    identity metrics), boxes matched at IoU >= `iou_threshold`.

    Ignored truth boxes count neither way: a track box on one (IoU >= the threshold, matched one to
    one) is dropped from that frame before scoring, and the ignored box is not a miss."""
    import motmetrics as mm
    from scipy.optimize import linear_sum_assignment

    acc = mm.MOTAccumulator(auto_id=True)
    for fr in frames:
        t_ids = np.asarray(fr.truth_ids, dtype=np.int64).reshape(-1)
        t_box = np.asarray(fr.truth_xyxy, dtype=np.float64).reshape(-1, 4)
        ignore = np.asarray(fr.truth_ignore, dtype=bool).reshape(-1)
        h_ids = np.asarray(fr.track_ids, dtype=np.int64).reshape(-1)
        h_box = np.asarray(fr.track_xyxy, dtype=np.float64).reshape(-1, 4)
        drop = np.zeros(len(h_ids), dtype=bool)
        if ignore.any() and len(h_ids):
            ious = iou_matrix(h_box, t_box)
            rows, cols = linear_sum_assignment(-ious)
            for i, j in zip(rows, cols, strict=True):
                drop[i] |= bool(ignore[j] and ious[i, j] >= iou_threshold)
        keep_t, keep_h = ~ignore, ~drop
        dist = 1.0 - iou_matrix(t_box[keep_t], h_box[keep_h])
        dist[dist > 1.0 - iou_threshold] = np.nan
        acc.update(t_ids[keep_t].tolist(), h_ids[keep_h].tolist(), dist)
    names = ["mota", "motp", "idf1", "idp", "idr", "num_switches", "num_false_positives", "num_misses"]
    row = mm.metrics.create().compute(acc, metrics=[*names, "num_objects"], name="seq")
    out = {k: float(row[k].iloc[0]) for k in [*names, "num_objects"]}
    out["motp_iou"] = 1.0 - out.pop("motp")  # motmetrics' MOTP is the mean distance, 1 - IoU here
    return out
