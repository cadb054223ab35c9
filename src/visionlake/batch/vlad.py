"""VLAD: vectors of locally aggregated descriptors (Jégou et al., CVPR 2010).

Each descriptor is assigned to its nearest word of a k-means vocabulary (the same `Vocabulary` and the
same float32 GEMM search as the bag of words), and each word accumulates the residuals x - c of its
descriptors: k x dim values per image (per pyramid cell), not k counts. Then, as in Arandjelovic &
Zisserman ("All about VLAD", CVPR 2013), every word's block is L2-normalised on its own
(intra-normalisation: a few bursty words no longer dominate), and the whole vector gets a signed
square root and L2 (power normalisation).

Vectorised like `BowEncoder`: the descriptors of many images are stacked, assigned in one pass, and
their residuals summed per (image, cell, word) with one sparse-times-dense product.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.utils.validation import check_is_fitted

from ..errors import InputError
from .encode import (
    FeatureSetEncoder,
    check_common_params,
    descriptor_dim,
    feature_list,
    pyramid_cells,
    resolve_vocabulary,
    vocabulary_name,
)
from .records import FeatureSet
from .vocabulary import Vocabulary, nearest_centres

__all__ = ["VladEncoder", "intra_normalize"]


class VladEncoder(FeatureSetEncoder):
    """VLAD of each image's descriptors against a k-means vocabulary: (n_images, k x dim x cells) float32.

    vocabulary: a Vocabulary, the path of a saved one, or None to train one of k words in `fit` on X's
    descriptors (seeded, on a uniform `sample` of descriptors when given).
    intra: L2-normalise each word's residual sum (per pyramid cell) before the global normalisation.
    norm: over the whole vector: "power" (signed square root, then L2; the default), "l2", "l1", "none".
    pyramid: grid sizes of a spatial pyramid, e.g. (1, 2): a VLAD of the whole image and of each of
    its 2 x 2 cells, concatenated. chunk_size: descriptors per distance block (None: automatic).
    image_dim: length of each image's global descriptor (HOG) appended L2-normalised; 0 = none.
    Images with no descriptors get zero vectors (plus their image descriptor).
    """

    encoding = "vlad"

    def __init__(
        self,
        vocabulary: Vocabulary | str | os.PathLike[str] | None = None,
        k: int = 64,
        intra: bool = True,
        norm: str = "power",
        pyramid: tuple[int, ...] = (1,),
        seed: int = 0,
        sample: int | None = None,
        chunk_size: int | None = None,
        image_dim: int = 0,
    ) -> None:
        self.vocabulary = vocabulary
        self.k = k
        self.intra = intra
        self.norm = norm
        self.pyramid = pyramid
        self.seed = seed
        self.sample = sample
        self.chunk_size = chunk_size
        self.image_dim = image_dim

    def fit(self, X: Sequence[FeatureSet], y: Any = None) -> VladEncoder:
        """Check the parameters; load, take or train the vocabulary."""
        check_common_params(self)
        if not isinstance(self.intra, bool | np.bool_):
            raise InputError(f"intra must be True or False, not {self.intra!r}")
        sets = feature_list(X)
        vocabulary = resolve_vocabulary(self.vocabulary, sets, self.k, self.sample, self.seed)
        dim = descriptor_dim(sets)
        if dim is not None and dim != vocabulary.dim:
            raise InputError(
                f"vocabulary {vocabulary_name(self.vocabulary, vocabulary)} has dimension {vocabulary.dim} "
                f"but the features have dimension {dim}"
            )
        self.vocabulary_ = vocabulary
        self.centers_ = vocabulary.centers
        self.descriptor_dim_ = vocabulary.dim
        self.n_cells_ = sum(level * level for level in self.pyramid)
        self.n_encoded_ = self.n_cells_ * vocabulary.k * vocabulary.dim
        self.n_features_out_ = self.n_encoded_ + self.image_dim
        return self

    def transform(self, X: Sequence[FeatureSet]) -> np.ndarray:
        """(n_images, n_features_out_) float32."""
        check_is_fitted(self, "centers_")
        sets = feature_list(X)
        dim = descriptor_dim(sets)
        if dim is not None and dim != self.descriptor_dim_:
            raise InputError(
                f"vocabulary {vocabulary_name(self.vocabulary, self.vocabulary_)} has dimension "
                f"{self.descriptor_dim_} but the features have dimension {dim}"
            )
        intra = (lambda encoded: intra_normalize(encoded, self.descriptor_dim_)) if self.intra else None
        return self._encode(sets, self._aggregate_into, intra)

    def meta(self) -> dict[str, Any]:
        """What an encoded dataset records: parameters, vocabulary metadata, output dimension."""
        check_is_fitted(self, "centers_")
        params = self.get_params()
        params["vocabulary"] = vocabulary_name(self.vocabulary, self.vocabulary_)
        params["pyramid"] = [int(level) for level in self.pyramid]
        return {
            "kind": "bow",
            "encoding": self.encoding,
            "params": params,
            "k": self.vocabulary_.k,
            "dim": self.n_features_out_,
            "n_features_out": self.n_features_out_,
            "vocabulary": self.vocabulary_.meta,
        }

    def _aggregate_into(self, sets: list[FeatureSet], out: np.ndarray) -> None:
        """Residual sums per (image, cell, word) of a batch, added into `out` (images x n_encoded_)."""
        from scipy import sparse

        counts = np.array([s.n_keypoints for s in sets], np.int64)
        if not counts.any():
            return
        x = np.concatenate([s.descriptors for s in sets if s.n_keypoints]).astype(np.float32, copy=False)
        words, _ = nearest_centres(x, self.centers_, self.chunk_size)
        residuals = x - self.centers_[words]
        k = self.centers_.shape[0]
        cells = pyramid_cells(sets, counts, self.pyramid)  # (n, levels)
        image = np.repeat(np.arange(len(sets), dtype=np.int64), counts)
        rows = ((image[:, None] * self.n_cells_ + cells) * k + words[:, None]).ravel()  # (image, cell, word)
        cols = np.repeat(np.arange(len(x), dtype=np.int64), cells.shape[1])
        onehot = sparse.csr_array(
            (np.ones(len(rows), np.float32), (rows, cols)), shape=(len(sets) * self.n_cells_ * k, len(x))
        )
        out += np.asarray(onehot @ residuals, dtype=np.float32).reshape(out.shape)


def intra_normalize(vectors: np.ndarray, block: int) -> np.ndarray:
    """L2-normalise every run of `block` values of each row in place (zero blocks stay zero)."""
    blocks = vectors.reshape(vectors.shape[0], -1, block) if vectors.flags.c_contiguous else None
    if blocks is None:  # a column slice of a wider array: normalise a copy, then write it back
        vectors[...] = intra_normalize(np.ascontiguousarray(vectors), block)
        return vectors
    length = np.sqrt(np.einsum("ijk,ijk->ij", blocks, blocks))[:, :, None]
    np.divide(blocks, length, out=blocks, where=length > 0)
    return vectors
