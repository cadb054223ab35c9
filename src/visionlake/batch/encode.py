"""Bag-of-visual-words encoding: FeatureSets in, one fixed-length float32 vector per image out.

Seed 002 built a KMeans model per row and assigned one descriptor at a time in Python. Here the
descriptors of many images are stacked and assigned with one float32 GEMM per chunk, then pooled in
one `np.bincount` (or `np.maximum.at`) over flat (image, pyramid cell, word) indices. An image with
no descriptors is kept and gets a zero vector.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from ..errors import InputError
from .records import FeatureSet
from .vocabulary import (
    Vocabulary,
    k_nearest_centres,
    nearest_centres,
    sample_rows,
    train_vocabulary,
)

__all__ = ["ASSIGNMENTS", "NORMS", "POOLINGS", "BowEncoder", "nearest_centres", "normalize"]

POOLINGS = ("sum", "max", "count")
ASSIGNMENTS = ("hard", "soft")
NORMS = ("l2", "l1", "power", "none")

#: Descriptors used to estimate the soft-assignment bandwidth when `sigma` is None.
SIGMA_SAMPLE = 20_000

#: Bounds per encoding batch: stacked descriptors, and image x output-dimension cells.
_BATCH_ROWS = 1 << 18
_BATCH_CELLS = 1 << 23


class BowEncoder(TransformerMixin, BaseEstimator):
    """Bag of visual words of each image's descriptors against a k-means vocabulary.

    vocabulary: a Vocabulary, the path of a saved one, or None to train one in `fit` on X's
    descriptors (k words, seeded, on a uniform `sample` of descriptors when given).
    assign: "hard" (nearest word, weight 1) or "soft" (kernel codebook: Gaussian weights with
    bandwidth `sigma` over the `soft_neighbours` nearest words, summing to 1; sigma None = estimated
    in fit as the RMS distance of a descriptor to its nearest word).
    pooling: "sum" of weights, "max" weight per word, or "count" (hard counts; needs assign="hard").
    pyramid: grid sizes of a spatial pyramid, e.g. (1, 2) gives 1x1 + 2x2 cells, k * 5 dimensions.
    norm: "l2", "l1", "power" (signed square root, then L2: Hellinger) or "none", over the whole vector.
    chunk_size: descriptors per distance block (memory is chunk_size x k floats); None = automatic.
    """

    def __init__(
        self,
        vocabulary: Vocabulary | str | os.PathLike[str] | None = None,
        k: int = 1000,
        pooling: str = "sum",
        assign: str = "hard",
        norm: str = "l2",
        pyramid: tuple[int, ...] = (1,),
        soft_neighbours: int = 5,
        sigma: float | None = None,
        seed: int = 0,
        sample: int | None = None,
        chunk_size: int | None = None,
    ) -> None:
        self.vocabulary = vocabulary
        self.k = k
        self.pooling = pooling
        self.assign = assign
        self.norm = norm
        self.pyramid = pyramid
        self.soft_neighbours = soft_neighbours
        self.sigma = sigma
        self.seed = seed
        self.sample = sample
        self.chunk_size = chunk_size

    # --- scikit-learn -----------------------------------------------------------------------------

    def fit(self, X: Sequence[FeatureSet], y: Any = None) -> BowEncoder:
        """Check the parameters, load or train the vocabulary, estimate sigma for soft assignment."""
        self._check_params()
        sets = _feature_list(X)
        vocabulary = self._vocabulary(sets)
        dim = _descriptor_dim(sets)
        if dim is not None and dim != vocabulary.dim:
            raise InputError(
                f"vocabulary {self._vocabulary_name(vocabulary)} has dimension {vocabulary.dim} "
                f"but the features have dimension {dim}"
            )
        self.vocabulary_ = vocabulary
        self.centers_ = vocabulary.centers
        self.sigma_ = self._bandwidth(sets) if self.assign == "soft" else None
        self.n_features_out_ = vocabulary.k * sum(level * level for level in self.pyramid)
        return self

    def transform(self, X: Sequence[FeatureSet]) -> np.ndarray:
        """(n_images, n_features_out_) float32; images without descriptors give zero vectors."""
        check_is_fitted(self, "centers_")
        sets = _feature_list(X)
        dim = _descriptor_dim(sets)
        if dim is not None and dim != self.centers_.shape[1]:
            raise InputError(
                f"vocabulary {self._vocabulary_name(self.vocabulary_)} has dimension {self.centers_.shape[1]} "
                f"but the features have dimension {dim}"
            )
        out = np.zeros((len(sets), self.n_features_out_), np.float32)
        for lo, hi in self._batches(sets):
            self._pool_into(sets[lo:hi], out[lo:hi])
        return normalize(out, self.norm)

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False  # lists of FeatureSet
        return tags

    def meta(self) -> dict[str, Any]:
        """What a bag-of-words dataset records: parameters, vocabulary metadata, output dimension."""
        check_is_fitted(self, "centers_")
        params = self.get_params()
        params["vocabulary"] = self._vocabulary_name(self.vocabulary_)
        params["pyramid"] = [int(level) for level in self.pyramid]
        return {
            "kind": "bow",
            "params": params,
            "k": self.vocabulary_.k,
            "sigma": self.sigma_,
            "dim": self.n_features_out_,
            "n_features_out": self.n_features_out_,
            "vocabulary": self.vocabulary_.meta,
        }

    # --- fitting ----------------------------------------------------------------------------------

    def _check_params(self) -> None:
        for name, value, valid in (
            ("pooling", self.pooling, POOLINGS),
            ("assign", self.assign, ASSIGNMENTS),
            ("norm", self.norm, NORMS),
        ):
            if value not in valid:
                raise InputError(f"unknown {name} {value!r}: use one of {', '.join(valid)}")
        if self.pooling == "count" and self.assign != "hard":
            raise InputError("pooling='count' counts hard assignments: use assign='hard', or pooling='sum'")
        levels = self.pyramid
        if (
            not isinstance(levels, Sequence)
            or not levels
            or not all(_is_int(level) and level >= 1 for level in levels)
        ):
            raise InputError(
                f"pyramid must be a non-empty list of grid sizes >= 1, e.g. (1, 2), not {levels!r}"
            )
        if not _is_int(self.soft_neighbours) or self.soft_neighbours < 1:
            raise InputError(f"soft_neighbours must be an integer >= 1, not {self.soft_neighbours!r}")
        if self.chunk_size is not None and (not _is_int(self.chunk_size) or self.chunk_size < 1):
            raise InputError(
                f"chunk_size must be an integer >= 1 (or None for automatic), not {self.chunk_size!r}"
            )
        if self.sigma is not None and (not isinstance(self.sigma, int | float) or not self.sigma > 0):
            raise InputError(f"sigma must be a number > 0 (or None to estimate it), not {self.sigma!r}")
        vocabulary = self.vocabulary
        if vocabulary is not None and not isinstance(vocabulary, Vocabulary | str | os.PathLike):
            raise InputError(
                f"vocabulary must be a Vocabulary, the path of a saved one or None, not {type(vocabulary).__name__}"
            )

    def _vocabulary(self, sets: list[FeatureSet]) -> Vocabulary:
        if isinstance(self.vocabulary, Vocabulary):
            return self.vocabulary
        if self.vocabulary is not None:
            return Vocabulary.load(self.vocabulary)
        counts = np.array([s.n_keypoints for s in sets], np.int64)
        total = int(counts.sum())
        if total == 0:
            raise InputError(
                f"cannot train a vocabulary of k={self.k} words: the features hold no descriptors"
            )
        rows = sample_rows(total, self.sample, self.seed)
        vocabulary = train_vocabulary(_gather(sets, counts, rows), self.k, seed=self.seed)
        vocabulary.meta.update(n_descriptors=total, sample=self.sample)
        return vocabulary

    def _vocabulary_name(self, vocabulary: Vocabulary) -> str:
        if isinstance(self.vocabulary, str | os.PathLike):
            return repr(os.fspath(self.vocabulary))
        return f"(k={vocabulary.k})"

    def _bandwidth(self, sets: list[FeatureSet]) -> float:
        if self.sigma is not None:
            return float(self.sigma)
        counts = np.array([s.n_keypoints for s in sets], np.int64)
        total = int(counts.sum())
        if total == 0:
            raise InputError("cannot estimate sigma for soft assignment: the features hold no descriptors")
        sample = _gather(sets, counts, sample_rows(total, SIGMA_SAMPLE, self.seed))
        _, sq = nearest_centres(sample, self.centers_, self.chunk_size)
        return float(np.sqrt(max(float(sq.mean(dtype=np.float64)), 1e-12)))

    # --- encoding ---------------------------------------------------------------------------------

    def _batches(self, sets: list[FeatureSet]) -> Iterator[tuple[int, int]]:
        """Runs of images small enough to stack: bounded descriptors and output cells per batch."""
        max_images = max(1, _BATCH_CELLS // self.n_features_out_)
        lo = rows = 0
        for i, s in enumerate(sets):
            if i > lo and (rows + s.n_keypoints > _BATCH_ROWS or i - lo >= max_images):
                yield lo, i
                lo, rows = i, 0
            rows += s.n_keypoints
        if lo < len(sets):
            yield lo, len(sets)

    def _pool_into(self, sets: list[FeatureSet], out: np.ndarray) -> None:
        counts = np.array([s.n_keypoints for s in sets], np.int64)
        if not counts.any():
            return
        descriptors = np.concatenate([s.descriptors for s in sets if s.n_keypoints])
        words, weights = self._assign(descriptors)
        image = np.repeat(np.arange(len(sets), dtype=np.int64), counts)
        cells = self._cells(sets, counts)  # (n, levels) cell index within the image's vector
        k = self.centers_.shape[0]
        n_cells = self.n_features_out_ // k
        base = (image[:, None] * n_cells + cells) * k  # (n, levels)
        flat = (base[:, :, None] + words[:, None, :]).ravel()  # (n, levels, m)
        w = np.broadcast_to(weights[:, None, :], (len(words), cells.shape[1], words.shape[1])).ravel()
        size = len(sets) * self.n_features_out_
        if self.pooling == "max":
            pooled = np.zeros(size, np.float32)
            np.maximum.at(pooled, flat, w)
        elif self.assign == "hard":  # sum and count: every weight is 1
            pooled = np.bincount(flat, minlength=size)
        else:
            pooled = np.bincount(flat, weights=w, minlength=size)
        out += pooled.reshape(out.shape).astype(np.float32, copy=False)

    def _assign(self, descriptors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(n, m) word indices and (n, m) float32 weights: m = 1 for hard, soft_neighbours for soft."""
        if self.assign == "hard":
            words, _ = nearest_centres(descriptors, self.centers_, self.chunk_size)
            return words[:, None], np.ones((len(words), 1), np.float32)
        words, sq = k_nearest_centres(descriptors, self.centers_, self.soft_neighbours, self.chunk_size)
        weights = np.exp((sq[:, :1] - sq) / np.float32(2.0 * self.sigma_ * self.sigma_), dtype=np.float32)
        weights /= weights.sum(axis=1, keepdims=True)
        return words, weights

    def _cells(self, sets: list[FeatureSet], counts: np.ndarray) -> np.ndarray:
        """Each descriptor's pyramid cell per level, numbered level by level, row-major within a level."""
        if tuple(self.pyramid) == (1,):
            return np.zeros((int(counts.sum()), 1), np.int64)
        for s in sets:
            if s.keypoints.shape != (s.n_keypoints, 2):
                raise InputError(
                    f"features of {s.key!r} have {s.n_keypoints} descriptors but keypoints of shape "
                    f"{s.keypoints.shape}: a spatial pyramid needs one (x, y) per descriptor"
                )
        points = np.concatenate([s.keypoints for s in sets if s.n_keypoints])
        cells = np.empty((len(points), len(self.pyramid)), np.int64)
        offset = 0
        for j, level in enumerate(self.pyramid):
            col = np.clip((points[:, 0] * level).astype(np.int64), 0, level - 1)
            row = np.clip((points[:, 1] * level).astype(np.int64), 0, level - 1)
            cells[:, j] = offset + row * level + col
            offset += level * level
        return cells


def normalize(vectors: np.ndarray, norm: str) -> np.ndarray:
    """Normalise each row in place: "l1", "l2", "power" (signed sqrt then L2) or "none". Zero rows stay 0."""
    if norm == "none":
        return vectors
    if norm == "power":
        np.copysign(np.sqrt(np.abs(vectors)), vectors, out=vectors)
        norm = "l2"
    if norm == "l1":
        length = np.abs(vectors).sum(axis=1, keepdims=True)
    elif norm == "l2":
        length = np.sqrt(np.einsum("ij,ij->i", vectors, vectors))[:, None]
    else:
        raise InputError(f"unknown norm {norm!r}: use one of {', '.join(NORMS)}")
    np.divide(vectors, length, out=vectors, where=length > 0)
    return vectors


def _feature_list(X: Any) -> list[FeatureSet]:
    sets = list(X)
    for i, s in enumerate(sets):
        if not isinstance(s, FeatureSet):
            raise InputError(
                f"item {i} of the input is a {type(s).__name__}, not a FeatureSet (run FeatureExtractor first)"
            )
    return sets


def _descriptor_dim(sets: list[FeatureSet]) -> int | None:
    """The descriptor dimension shared by all sets (empty matrices keep their (0, dim) shape)."""
    dims = {int(s.descriptors.shape[1]) for s in sets if s.descriptors.ndim == 2}
    if len(dims) > 1:
        raise InputError(f"the features mix descriptor dimensions {sorted(dims)}")
    return dims.pop() if dims else None


def _gather(sets: list[FeatureSet], counts: np.ndarray, rows: np.ndarray | None) -> np.ndarray:
    """Stacked float32 descriptors of `sets`, only the global `rows` (sorted) when given."""
    if rows is None:
        return np.concatenate([s.descriptors for s in sets if s.n_keypoints]).astype(np.float32, copy=False)
    starts = np.concatenate([[0], np.cumsum(counts)])
    bounds = np.searchsorted(rows, starts)  # rows[bounds[i]:bounds[i + 1]] belong to image i
    out = np.empty((len(rows), sets[0].descriptors.shape[1]), np.float32)
    for i in np.flatnonzero(bounds[1:] > bounds[:-1]):
        lo, hi = bounds[i], bounds[i + 1]
        out[lo:hi] = sets[i].descriptors[rows[lo:hi] - starts[i]]
    return out


def _is_int(value: Any) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)
