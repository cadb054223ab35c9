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

__all__ = [
    "ASSIGNMENTS",
    "ENCODINGS",
    "NORMS",
    "POOLINGS",
    "BowEncoder",
    "ImageDescriptorEncoder",
    "append_image_descriptors",
    "check_common_params",
    "descriptor_dim",
    "feature_batches",
    "feature_list",
    "gather",
    "make_encoder",
    "nearest_centres",
    "normalize",
    "pyramid_cells",
    "resolve_vocabulary",
    "vocabulary_name",
]

#: `--encoding`: bags of words, VLAD, Fisher vectors, or none (the image descriptor, e.g. HOG, alone).
ENCODINGS = ("bow", "vlad", "fisher", "none")
POOLINGS = ("sum", "max", "count")
ASSIGNMENTS = ("hard", "soft")
NORMS = ("l2", "l1", "power", "none")

#: Descriptors used to estimate the soft-assignment bandwidth when `sigma` is None.
SIGMA_SAMPLE = 20_000

#: Bounds per encoding batch: stacked descriptors, and image x output-dimension cells.
_BATCH_ROWS = 1 << 18
_BATCH_CELLS = 1 << 23


class FeatureSetEncoder(TransformerMixin, BaseEstimator):
    """What every encoder shares: lists of FeatureSet in, one float32 row per image out, encoded in
    batches of bounded memory, normalised, with the image's global descriptor (HOG) appended."""

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False  # lists of FeatureSet
        return tags

    def _encode(
        self,
        sets: list[FeatureSet],
        into: Any,
        before_norm: Any = None,
    ) -> np.ndarray:
        """`into(batch, rows)` fills each batch's rows of the encoded part; `before_norm(encoded)` runs
        before the whole-vector normalisation (VLAD's intra-normalisation)."""
        out = np.zeros((len(sets), self.n_features_out_), np.float32)
        encoded = out[:, : self.n_encoded_]
        for lo, hi in feature_batches(sets, self.n_encoded_):
            into(sets[lo:hi], encoded[lo:hi])
        if before_norm is not None:
            before_norm(encoded)
        normalize(encoded, self.norm)
        return append_image_descriptors(out, sets, self.image_dim)


class BowEncoder(FeatureSetEncoder):
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
    image_dim: length of each image's global descriptor (the HOG of features extracted with `hog`),
    appended L2-normalised after the normalised encoding; 0 = none.
    """

    #: The name `--encoding` gives this encoder (recorded in bag-of-words datasets and models).
    encoding = "bow"

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
        image_dim: int = 0,
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
        self.image_dim = image_dim

    # --- scikit-learn -----------------------------------------------------------------------------

    def fit(self, X: Sequence[FeatureSet], y: Any = None) -> BowEncoder:
        """Check the parameters, load or train the vocabulary, estimate sigma for soft assignment."""
        self._check_params()
        sets = feature_list(X)
        vocabulary = self._vocabulary(sets)
        dim = descriptor_dim(sets)
        if dim is not None and dim != vocabulary.dim:
            raise InputError(
                f"vocabulary {self._vocabulary_name(vocabulary)} has dimension {vocabulary.dim} "
                f"but the features have dimension {dim}"
            )
        self.vocabulary_ = vocabulary
        self.centers_ = vocabulary.centers
        self.descriptor_dim_ = vocabulary.dim
        self.sigma_ = self._bandwidth(sets) if self.assign == "soft" else None
        self.n_encoded_ = vocabulary.k * sum(level * level for level in self.pyramid)
        self.n_features_out_ = self.n_encoded_ + self.image_dim
        return self

    def transform(self, X: Sequence[FeatureSet]) -> np.ndarray:
        """(n_images, n_features_out_) float32; images without descriptors give zero vectors."""
        check_is_fitted(self, "centers_")
        sets = feature_list(X)
        dim = descriptor_dim(sets)
        if dim is not None and dim != self.centers_.shape[1]:
            raise InputError(
                f"vocabulary {self._vocabulary_name(self.vocabulary_)} has dimension {self.centers_.shape[1]} "
                f"but the features have dimension {dim}"
            )
        return self._encode(sets, self._pool_into)

    def meta(self) -> dict[str, Any]:
        """What a bag-of-words dataset records: parameters, vocabulary metadata, output dimension."""
        check_is_fitted(self, "centers_")
        params = self.get_params()
        params["vocabulary"] = self._vocabulary_name(self.vocabulary_)
        params["pyramid"] = [int(level) for level in self.pyramid]
        return {
            "kind": "bow",
            "encoding": self.encoding,
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
        check_common_params(self)
        if not _is_int(self.soft_neighbours) or self.soft_neighbours < 1:
            raise InputError(f"soft_neighbours must be an integer >= 1, not {self.soft_neighbours!r}")
        if self.sigma is not None and (not isinstance(self.sigma, int | float) or not self.sigma > 0):
            raise InputError(f"sigma must be a number > 0 (or None to estimate it), not {self.sigma!r}")

    def _vocabulary(self, sets: list[FeatureSet]) -> Vocabulary:
        return resolve_vocabulary(self.vocabulary, sets, self.k, self.sample, self.seed)

    def _vocabulary_name(self, vocabulary: Vocabulary) -> str:
        return vocabulary_name(self.vocabulary, vocabulary)

    def _bandwidth(self, sets: list[FeatureSet]) -> float:
        if self.sigma is not None:
            return float(self.sigma)
        counts = np.array([s.n_keypoints for s in sets], np.int64)
        total = int(counts.sum())
        if total == 0:
            raise InputError("cannot estimate sigma for soft assignment: the features hold no descriptors")
        sample = gather(sets, counts, sample_rows(total, SIGMA_SAMPLE, self.seed))
        _, sq = nearest_centres(sample, self.centers_, self.chunk_size)
        return float(np.sqrt(max(float(sq.mean(dtype=np.float64)), 1e-12)))

    # --- encoding ---------------------------------------------------------------------------------

    def _pool_into(self, sets: list[FeatureSet], out: np.ndarray) -> None:
        counts = np.array([s.n_keypoints for s in sets], np.int64)
        if not counts.any():
            return
        descriptors = np.concatenate([s.descriptors for s in sets if s.n_keypoints])
        words, weights = self._assign(descriptors)
        image = np.repeat(np.arange(len(sets), dtype=np.int64), counts)
        cells = pyramid_cells(sets, counts, self.pyramid)  # (n, levels) cell within the image's vector
        k = self.centers_.shape[0]
        n_cells = self.n_encoded_ // k
        base = (image[:, None] * n_cells + cells) * k  # (n, levels)
        flat = (base[:, :, None] + words[:, None, :]).ravel()  # (n, levels, m)
        w = np.broadcast_to(weights[:, None, :], (len(words), cells.shape[1], words.shape[1])).ravel()
        size = len(sets) * self.n_encoded_
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


class ImageDescriptorEncoder(TransformerMixin, BaseEstimator):
    """The image descriptor of each image (the global HOG) alone, normalised: `--encoding none`.

    Local descriptors, if any, are ignored, so no vocabulary is needed. image_dim: the descriptor
    length (the features' `image_descriptor.dim`). norm: "l2", "l1", "power" or "none".
    """

    encoding = "none"

    def __init__(self, image_dim: int = 0, norm: str = "l2") -> None:
        self.image_dim = image_dim
        self.norm = norm

    def fit(self, X: Sequence[FeatureSet], y: Any = None) -> ImageDescriptorEncoder:
        """Check the parameters; `X` is not used."""
        if self.norm not in NORMS:
            raise InputError(f"unknown norm {self.norm!r}: use one of {', '.join(NORMS)}")
        if not _is_int(self.image_dim) or self.image_dim < 1:
            raise InputError(
                f"image_dim must be the image descriptor's length (>= 1), not {self.image_dim!r}: "
                "extract features with a global descriptor (--algo hog or --hog)"
            )
        self.descriptor_dim_ = None  # local descriptors of any dimension are ignored
        self.n_features_out_ = int(self.image_dim)
        return self

    def transform(self, X: Sequence[FeatureSet]) -> np.ndarray:
        check_is_fitted(self, "n_features_out_")
        sets = feature_list(X)
        missing = [s.key for s in sets if s.image_descriptor is None]
        if missing:
            raise InputError(
                f"features of {missing[0]!r} have no image descriptor: --encoding none needs features "
                "extracted with --algo hog or --hog"
            )
        out = np.zeros((len(sets), self.n_features_out_), np.float32)
        for i, s in enumerate(sets):
            if s.image_descriptor.shape != (self.image_dim,):
                raise InputError(
                    f"features of {s.key!r} have an image descriptor of length {s.image_descriptor.size}, "
                    f"but the encoder expects {self.image_dim}"
                )
            out[i] = s.image_descriptor
        return normalize(out, self.norm)

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        return tags

    def meta(self) -> dict[str, Any]:
        check_is_fitted(self, "n_features_out_")
        return {
            "kind": "bow",
            "encoding": self.encoding,
            "params": self.get_params(),
            "dim": self.n_features_out_,
            "n_features_out": self.n_features_out_,
        }


def make_encoder(encoding: str, vocabulary: Any = None, **params: Any) -> Any:
    """An unfitted encoder by `--encoding` name; InputError lists the names for an unknown one.

    A parameter the encoder does not take is an InputError naming it and the ones it takes.
    """
    if encoding == "bow":
        cls: Any = BowEncoder
    elif encoding == "vlad":
        from .vlad import VladEncoder as cls
    elif encoding == "fisher":
        from .fisher import FisherEncoder as cls
    elif encoding == "none":
        cls = ImageDescriptorEncoder
    else:
        raise InputError(f"unknown encoding {encoding!r}: use one of {', '.join(ENCODINGS)}")
    accepted = cls._get_param_names()
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise InputError(
            f"--encoding {encoding} does not take {', '.join(unknown)}; it takes {', '.join(accepted)}"
        )
    if encoding != "none":
        params["vocabulary"] = vocabulary
    return cls(**params)


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


# --- shared by the encoders (bag of words, VLAD, Fisher vectors) ----------------------------------


def feature_list(X: Any) -> list[FeatureSet]:
    """X as a list of FeatureSets; InputError names the first item that is not one."""
    sets = list(X)
    for i, s in enumerate(sets):
        if not isinstance(s, FeatureSet):
            raise InputError(
                f"item {i} of the input is a {type(s).__name__}, not a FeatureSet (run FeatureExtractor first)"
            )
    return sets


def descriptor_dim(sets: list[FeatureSet]) -> int | None:
    """The descriptor dimension shared by all sets (empty matrices keep their (0, dim) shape)."""
    dims = {int(s.descriptors.shape[1]) for s in sets if s.descriptors.ndim == 2}
    if len(dims) > 1:
        raise InputError(f"the features mix descriptor dimensions {sorted(dims)}")
    return dims.pop() if dims else None


def gather(sets: list[FeatureSet], counts: np.ndarray, rows: np.ndarray | None) -> np.ndarray:
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


def feature_batches(
    sets: list[FeatureSet], n_out: int, max_rows: int = _BATCH_ROWS
) -> Iterator[tuple[int, int]]:
    """Runs of images small enough to stack: bounded descriptors and image x `n_out` cells per batch."""
    max_images = max(1, _BATCH_CELLS // max(n_out, 1))
    lo = rows = 0
    for i, s in enumerate(sets):
        if i > lo and (rows + s.n_keypoints > max_rows or i - lo >= max_images):
            yield lo, i
            lo, rows = i, 0
        rows += s.n_keypoints
    if lo < len(sets):
        yield lo, len(sets)


def pyramid_cells(sets: list[FeatureSet], counts: np.ndarray, pyramid: Sequence[int]) -> np.ndarray:
    """Each descriptor's spatial-pyramid cell per level: (n, levels) int64, numbered level by level
    (row-major within a level), so a level-(1, 2) pyramid has cells 0 (whole image) and 1-4."""
    if tuple(pyramid) == (1,):
        return np.zeros((int(counts.sum()), 1), np.int64)
    for s in sets:
        if s.keypoints.shape != (s.n_keypoints, 2):
            raise InputError(
                f"features of {s.key!r} have {s.n_keypoints} descriptors but keypoints of shape "
                f"{s.keypoints.shape}: a spatial pyramid needs one (x, y) per descriptor"
            )
    if not counts.any():
        return np.zeros((0, len(pyramid)), np.int64)
    points = np.concatenate([s.keypoints for s in sets if s.n_keypoints])
    cells = np.empty((len(points), len(pyramid)), np.int64)
    offset = 0
    for j, level in enumerate(pyramid):
        col = np.clip((points[:, 0] * level).astype(np.int64), 0, level - 1)
        row = np.clip((points[:, 1] * level).astype(np.int64), 0, level - 1)
        cells[:, j] = offset + row * level + col
        offset += level * level
    return cells


def resolve_vocabulary(
    vocabulary: Vocabulary | str | os.PathLike[str] | None,
    sets: list[FeatureSet],
    k: int,
    sample: int | None,
    seed: int,
) -> Vocabulary:
    """The encoder's vocabulary: the one given, the saved one at a path, or k words trained on `sets`."""
    if isinstance(vocabulary, Vocabulary):
        return vocabulary
    if vocabulary is not None:
        return Vocabulary.load(vocabulary)
    counts = np.array([s.n_keypoints for s in sets], np.int64)
    total = int(counts.sum())
    if total == 0:
        raise InputError(f"cannot train a vocabulary of k={k} words: the features hold no descriptors")
    rows = sample_rows(total, sample, seed)
    trained = train_vocabulary(gather(sets, counts, rows), k, seed=seed)
    trained.meta.update(n_descriptors=total, sample=sample)
    return trained


def vocabulary_name(vocabulary: Any, fitted: Vocabulary) -> str:
    """How messages name an encoder's vocabulary: its path when it came from a file, else its size."""
    if isinstance(vocabulary, str | os.PathLike):
        return repr(os.fspath(vocabulary))
    return f"(k={fitted.k})"


def check_common_params(encoder: Any) -> None:
    """InputError for a bad `norm`, `pyramid`, `chunk_size`, `image_dim` or `vocabulary` of an encoder."""
    if encoder.norm not in NORMS:
        raise InputError(f"unknown norm {encoder.norm!r}: use one of {', '.join(NORMS)}")
    levels = encoder.pyramid
    if (
        not isinstance(levels, Sequence)
        or not levels
        or not all(_is_int(level) and level >= 1 for level in levels)
    ):
        raise InputError(f"pyramid must be a non-empty list of grid sizes >= 1, e.g. (1, 2), not {levels!r}")
    chunk = encoder.chunk_size
    if chunk is not None and (not _is_int(chunk) or chunk < 1):
        raise InputError(f"chunk_size must be an integer >= 1 (or None for automatic), not {chunk!r}")
    if not _is_int(encoder.image_dim) or encoder.image_dim < 0:
        raise InputError(f"image_dim must be an integer >= 0 (0 = none), not {encoder.image_dim!r}")
    vocabulary = encoder.vocabulary
    if vocabulary is not None and not isinstance(vocabulary, Vocabulary | str | os.PathLike):
        raise InputError(
            f"vocabulary must be a Vocabulary, the path of a saved one or None, not {type(vocabulary).__name__}"
        )


def append_image_descriptors(out: np.ndarray, sets: list[FeatureSet], image_dim: int) -> np.ndarray:
    """Fill the last `image_dim` columns of `out` with each image's L2-normalised global descriptor.

    Both parts have unit length, so neither drowns the other in a linear classifier. An image without
    one (a decode that gave no HOG window) keeps zeros there.
    """
    if not image_dim:
        return out
    tail = out[:, out.shape[1] - image_dim :]
    for i, s in enumerate(sets):
        d = s.image_descriptor
        if d is None:
            continue
        if d.shape != (image_dim,):
            raise InputError(
                f"features of {s.key!r} have an image descriptor of length {d.size}, "
                f"but the encoder expects {image_dim}"
            )
        tail[i] = d
    normalize(tail, "l2")
    return out


def _is_int(value: Any) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)
