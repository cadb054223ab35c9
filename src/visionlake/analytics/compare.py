"""Two versions of a model side by side: after a replay, is the new version better, worse, or the same?

Three answers: counts per camera and hour for each version; agreement over the frames both versions
processed (boxes matched within the same label at IoU >= a threshold); and the frames where they
disagree most, to look at with `visionlake show`.

Matching is greedy by score: A's boxes, highest score first, each take the unmatched B box of the
same label with the highest IoU, if that IoU reaches the threshold. The IoU matrix of one image is
one NumPy broadcast (`match_boxes`); over a catalog, `match_page` scores every candidate pair of a
page of frames in a few array operations, so the cost per frame stays in microseconds.

Detections are read a page of frames at a time (keyset pagination on frame_id, then
`frame_id IN (page)` on the detections(frame_id, model, model_version) index), so memory stays
bounded by the page size and the `worst` list, whatever the size of the catalog.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np
import sqlalchemy as sa

from ..catalog import schema as S
from ..catalog.base import Catalog
from ..errors import InputError
from ._sql import as_datetime, engine_of
from .reports import Report, ReportFilter, check_model, counts, frame_conditions

#: Frames read per page.
PAGE = 500
MAX_WORST = 100_000


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box of `a` (N, 4 xyxy) with every box of `b` (M, 4): an (N, M) float64 array."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / union, 0.0)


@dataclass(frozen=True)
class Match:
    """How the boxes of one image agree: index pairs (into A, into B) and their IoUs."""

    pairs: list[tuple[int, int]]
    ious: list[float]
    n_a: int
    n_b: int

    @property
    def matched(self) -> int:
        return len(self.pairs)

    @property
    def only_a(self) -> int:
        return self.n_a - len(self.pairs)

    @property
    def only_b(self) -> int:
        return self.n_b - len(self.pairs)


def match_boxes(
    boxes_a: np.ndarray,
    scores_a: np.ndarray,
    labels_a: np.ndarray,
    boxes_b: np.ndarray,
    labels_b: np.ndarray,
    iou: float = 0.5,
) -> Match:
    """Greedy matching of A's boxes (highest score first) to B's, same label, IoU >= `iou`."""
    boxes_a = np.asarray(boxes_a, np.float64).reshape(-1, 4)
    boxes_b = np.asarray(boxes_b, np.float64).reshape(-1, 4)
    labels_a = np.asarray(labels_a, dtype=object).reshape(-1)
    labels_b = np.asarray(labels_b, dtype=object).reshape(-1)
    scores_a = np.asarray(scores_a, np.float64).reshape(-1)
    pairs: list[tuple[int, int]] = []
    ious: list[float] = []
    if len(boxes_a) and len(boxes_b):
        m = iou_matrix(boxes_a, boxes_b)
        m[labels_a[:, None] != labels_b[None, :]] = -1.0  # other labels never match
        for i in np.argsort(-scores_a, kind="stable"):
            j = int(np.argmax(m[i]))
            if m[i, j] >= iou:
                pairs.append((int(i), j))
                ious.append(float(m[i, j]))
                m[:, j] = -1.0  # B's box is taken
    return Match(pairs, ious, len(boxes_a), len(boxes_b))


@dataclass(frozen=True)
class Comparison:
    """The three parts of a comparison; `as_dict` is the JSON document of `visionlake compare`."""

    model: str
    a: str
    b: str
    iou: float
    agreement: dict[str, Any]
    side_by_side: Report
    worst: Report

    def as_dict(self) -> dict[str, Any]:
        return {
            "agreement": self.agreement,
            "side_by_side": self.side_by_side.as_dicts(),
            "worst": self.worst.as_dicts(),
        }


def _side_by_side(catalog: Catalog, model: str, a: str, b: str, flt: ReportFilter) -> Report:
    """Frames and detections of A and of B per camera and hour, one row per (camera, hour)."""
    per: dict[str, dict[tuple, tuple[int, int]]] = {}
    for v in (a, b):
        rep = counts(
            catalog,
            ReportFilter(flt.camera, flt.label, model, v, flt.since, flt.until),
            bucket="hour",
            by=("camera",),
        )
        per[v] = {(cam, hour): (nf, nd) for hour, cam, nf, nd in rep.rows}
    keys = sorted(set(per[a]) | set(per[b]))
    rows = [
        (cam, hour, *per[a].get((cam, hour), (0, 0)), *per[b].get((cam, hour), (0, 0))) for cam, hour in keys
    ]
    cols = ["camera", "hour", "frames_a", "detections_a", "frames_b", "detections_b"]
    return Report(
        "side_by_side", cols, rows, f"{model}: {a} (A) and {b} (B) per camera and hour", bucket="hour"
    )


def compare_versions(
    catalog: Catalog,
    model: str,
    a: str,
    b: str,
    flt: ReportFilter | None = None,
    iou: float = 0.5,
    worst: int = 20,
    page: int = PAGE,
) -> Comparison:
    """Compare versions `a` and `b` of `model` over the frames `flt` selects (camera, label, times).

    agreement: frames of A, of B and of both; over the frames of both, the detections of each, the
    boxes matched, only in A, only in B, and the mean IoU of the matches (None without matches).
    worst: up to `worst` frames of both with the most unmatched boxes (only_a + only_b > 0).
    """
    flt = flt or ReportFilter()
    if a == b:
        raise InputError(f"compare needs two different versions, got {a!r} twice")
    if not (isinstance(iou, int | float) and 0 < iou <= 1):
        raise InputError(f"iou must be a number in (0, 1], got {iou!r}")
    if isinstance(worst, bool) or not isinstance(worst, int) or not 0 <= worst <= MAX_WORST:
        raise InputError(f"worst must be an integer from 0 to {MAX_WORST}, got {worst!r}")
    engine = engine_of(catalog)
    with engine.connect() as conn:
        check_model(conn, model, a)
        check_model(conn, model, b)
    side = _side_by_side(catalog, model, a, b, flt)

    f, d = S.frames.c, S.detections.c
    ra, rb = S.results.alias("ra"), S.results.alias("rb")
    both = (
        sa.select(f.frame_id, f.camera, f.captured_at, f.uri, ra.c.n_detections, rb.c.n_detections)
        .select_from(
            S.frames.join(
                ra, (ra.c.frame_id == f.frame_id) & (ra.c.model == model) & (ra.c.model_version == a)
            ).join(rb, (rb.c.frame_id == f.frame_id) & (rb.c.model == model) & (rb.c.model_version == b))
        )
        .where(*frame_conditions(flt))
        .order_by(f.frame_id)
        .limit(page)
    )
    dets = sa.select(d.frame_id, d.model_version, d.label, d.score, d.x1, d.y1, d.x2, d.y2).where(
        d.model == model, d.model_version.in_([a, b])
    )
    if flt.label is not None:
        dets = dets.where(d.label == flt.label)

    total = defaultdict(int)
    iou_sum = 0.0
    worst_rows: list[tuple] = []
    last: str | None = None
    with engine.connect() as conn:
        while True:
            frames = conn.execute(both if last is None else both.where(f.frame_id > last)).all()
            if not frames:
                break
            last = frames[-1][0]
            total["frames_both"] += len(frames)
            ids = [row[0] for row in frames if row[4] or row[5]]  # frames where either found anything
            rows = conn.execute(dets.where(d.frame_id.in_(ids))).all() if ids else []
            per_frame = match_page([r for r in rows if r[1] == a], [r for r in rows if r[1] == b], iou)
            for fid, cam, ts, uri, _, _ in frames:
                n_a, n_b, matched, ious = per_frame.get(fid, (0, 0, 0, 0.0))
                total["detections_a"] += n_a
                total["detections_b"] += n_b
                total["matched"] += matched
                total["only_a"] += n_a - matched
                total["only_b"] += n_b - matched
                iou_sum += ious
                if n_a + n_b - 2 * matched > 0 and worst > 0:
                    worst_rows.append((fid, cam, as_datetime(ts), n_a - matched, n_b - matched, uri))
            worst_rows = _most_different(worst_rows, worst)
            if len(frames) < page:
                break
    agreement: dict[str, Any] = {
        "model": model,
        "a": a,
        "b": b,
        "iou_threshold": float(iou),
        "frames_a": sum(r[2] for r in side.rows),
        "frames_b": sum(r[4] for r in side.rows),
        **{
            k: total[k]
            for k in ("frames_both", "detections_a", "detections_b", "matched", "only_a", "only_b")
        },
        "mean_iou": round(iou_sum / total["matched"], 4) if total["matched"] else None,
    }
    worst_report = Report(
        "worst",
        ["frame_id", "camera", "captured_at", "only_a", "only_b", "uri"],
        worst_rows,
        f"Frames where {a} (A) and {b} (B) disagree most",
    )
    return Comparison(model, a, b, float(iou), agreement, side, worst_report)


def pair_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of a[k] with b[k] for every k (both (K, 4) xyxy): the elementwise form of `iou_matrix`."""
    inter = np.clip(np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]), 0, None) * np.clip(
        np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]), 0, None
    )
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    union = area_a + area_b - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / union, 0.0)


def match_page(rows_a: list, rows_b: list, iou: float) -> dict[str, tuple[int, int, int, float]]:
    """`match_boxes` for a whole page of frames at once: frame id -> (n_a, n_b, matched, IoU sum).

    Rows are (frame_id, version, label, score, x1, y1, x2, y2). The candidate pairs (same frame and
    label) of the page are built and scored in a few NumPy operations; only the pairs at or above
    the threshold go through the greedy loop, in the order `match_boxes` takes them (A's score
    descending, then IoU descending).
    """
    out: dict[str, list] = {}
    for r in rows_a:
        out.setdefault(r[0], [0, 0, 0, 0.0])[0] += 1
    for r in rows_b:
        out.setdefault(r[0], [0, 0, 0, 0.0])[1] += 1
    if rows_a and rows_b:
        keys: dict[tuple[str, str], int] = {}
        ka = np.fromiter((keys.setdefault((r[0], r[2]), len(keys)) for r in rows_a), np.int64, len(rows_a))
        kb = np.fromiter((keys.get((r[0], r[2]), -1) for r in rows_b), np.int64, len(rows_b))
        score_a = np.fromiter((r[3] for r in rows_a), np.float64, len(rows_a))
        box_a = np.asarray([r[4:8] for r in rows_a], np.float64)
        box_b = np.asarray([r[4:8] for r in rows_b], np.float64)
        order_b = np.argsort(kb, kind="stable")
        start = np.searchsorted(kb[order_b], ka, "left")
        count = np.searchsorted(kb[order_b], ka, "right") - start
        ai = np.repeat(np.arange(len(rows_a)), count)  # every (A box, B box) of one frame and label
        offset = np.arange(len(ai)) - np.repeat(np.cumsum(count) - count, count)
        bj = order_b[np.repeat(start, count) + offset]
        ious = pair_iou(box_a[ai], box_b[bj])
        keep = ious >= iou
        ai, bj, ious = ai[keep], bj[keep], ious[keep]
        used_a = np.zeros(len(rows_a), bool)
        used_b = np.zeros(len(rows_b), bool)
        for k in np.lexsort((bj, -ious, ai, -score_a[ai])):
            i, j = ai[k], bj[k]
            if not used_a[i] and not used_b[j]:
                used_a[i] = used_b[j] = True
                entry = out[rows_a[i][0]]
                entry[2] += 1
                entry[3] += float(ious[k])
    return {fid: (n_a, n_b, m, s) for fid, (n_a, n_b, m, s) in out.items()}


def _most_different(rows: list[tuple], n: int) -> list[tuple]:
    """The `n` rows with the most unmatched boxes; ties: earlier capture, then frame id."""
    rows.sort(key=lambda r: (-(r[3] + r[4]), r[2], r[0]))
    return rows[:n]
