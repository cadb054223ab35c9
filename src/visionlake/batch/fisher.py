"""Fisher vectors: the improved FV of Perronnin, Sánchez & Mensink (ECCV 2010).

Descriptors are reduced with PCA, a diagonal Gaussian mixture (weights w, means mu, variances s²) is
fitted to a sample of them, and each image is described by the gradient of its descriptors'
log-likelihood with respect to the means and variances, normalised by the Fisher information:

    u_tk = (z_t - mu_k) / s_k                  z_t: descriptor t after PCA; gamma_tk: its posterior
    G_mu_k    = 1 / (T sqrt(w_k))   sum_t gamma_tk u_tk
    G_sigma_k = 1 / (T sqrt(2 w_k)) sum_t gamma_tk (u_tk² - 1)

2 k D values per image (per pyramid cell; T = descriptors in the cell), then a signed square root and
L2 (power + L2: the "improved" FV).

Fitting uses scikit-learn (`PCA`, `GaussianMixture(covariance_type="diag")`), started from the k-means
vocabulary when there is one, so the GMM needs no k-means of its own. Encoding is written here:
scikit-learn has no Fisher-vector encoder, and scikit-image's `fisher_vector` takes one image at a
time in float64 through `predict_proba` (also float64), has no spatial pyramid, and does not reduce
descriptors with PCA. Here the posteriors of many images come from two GEMMs, and each image's
zeroth, first and second order statistics (per pyramid cell) from one more: gamma.T @ [z, z²]. All
(and the PCA projection) run in float64: the log-densities and the variance gradients subtract terms that are 10^3-10^4 times
larger than the result, and float32 left errors of 1e-3 that the square root then magnifies.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.utils.validation import check_is_fitted

from ..errors import InputError
from .encode import (
    FeatureSetEncoder,
    check_common_params,
    descriptor_dim,
    feature_list,
    gather,
    pyramid_cells,
)
from .records import FeatureSet
from .vocabulary import Vocabulary, nearest_centres, sample_rows

__all__ = ["GMM_MAX_ITER", "GMM_SAMPLE", "FisherEncoder", "Gmm", "fit_gmm"]

#: Descriptors the PCA and the GMM are fitted on when no `sample` is given.
GMM_SAMPLE = 100_000
#: EM iterations at most: started from k-means centres, EM gains little after a few tens of iterations
#: (scikit-learn's tolerance is rarely met before 100, and each costs 0.2 s per 77k descriptors here).
GMM_MAX_ITER = 30
#: Variance floor of every GMM dimension, relative to the mean variance of the (reduced) descriptors.
VARIANCE_FLOOR = 1e-4
#: Descriptors per posterior block: (rows x k) float32 stays in cache-sized pieces.
_POSTERIOR_ROWS = 1 << 14
#: Prefix of the GMM's arrays in a vocabulary file.
_PREFIX = "fisher_"


@dataclass
class Gmm:
    """A diagonal GMM over PCA-reduced descriptors: what a Fisher-vector encoder learns.

    weights (k,), means (k, d), variances (k, d) float64; pca_mean (dim,) and pca_components (d, dim)
    float32, or None when descriptors are not reduced (d = dim).
    """

    weights: np.ndarray
    means: np.ndarray
    variances: np.ndarray
    pca_mean: np.ndarray | None = None
    pca_components: np.ndarray | None = None

    @property
    def k(self) -> int:
        return int(self.means.shape[0])

    @property
    def dim(self) -> int:
        """The descriptor dimension it takes (before PCA)."""
        return int(self.pca_components.shape[1] if self.pca_components is not None else self.means.shape[1])

    @property
    def reduced_dim(self) -> int:
        return int(self.means.shape[1])

    def reduce(self, x: np.ndarray) -> np.ndarray:
        """Descriptors (n, dim) -> float32 (n, d) in the GMM's space."""
        x = np.asarray(x, dtype=np.float32)
        if self.pca_components is None:
            return x
        return (x - self.pca_mean) @ self.pca_components.T

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The arrays a vocabulary file stores (`Vocabulary.arrays`)."""
        arrays = {"weights": self.weights, "means": self.means, "variances": self.variances}
        if self.pca_components is not None:
            arrays.update(pca_mean=self.pca_mean, pca_components=self.pca_components)
        return {_PREFIX + name: np.asarray(value) for name, value in arrays.items()}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> Gmm | None:
        """The GMM stored in a vocabulary's arrays, or None when it has none."""
        if _PREFIX + "means" not in arrays:
            return None
        get = arrays.get
        return cls(
            weights=np.asarray(get(_PREFIX + "weights"), np.float64),
            means=np.asarray(get(_PREFIX + "means"), np.float64),
            variances=np.asarray(get(_PREFIX + "variances"), np.float64),
            pca_mean=None
            if get(_PREFIX + "pca_mean") is None
            else np.asarray(get(_PREFIX + "pca_mean"), np.float32),
            pca_components=None
            if get(_PREFIX + "pca_components") is None
            else np.asarray(get(_PREFIX + "pca_components"), np.float32),
        )


def fit_gmm(
    descriptors: Any,
    k: int,
    *,
    pca_dim: int | None = 64,
    seed: int = 0,
    max_iter: int = GMM_MAX_ITER,
    init_centers: np.ndarray | None = None,
) -> Gmm:
    """PCA to `pca_dim` dimensions (None or >= dim: none), then a diagonal GMM of k components.

    init_centers: k-means centres (k, dim) to start from (the vocabulary): descriptors are assigned to
    their nearest centre and the GMM starts from those clusters' weights, means and variances, so
    scikit-learn's own k-means initialisation is not needed. Without them it runs k-means++.
    """
    from sklearn.decomposition import PCA
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.mixture import GaussianMixture

    x = np.ascontiguousarray(descriptors, dtype=np.float32)
    if x.ndim != 2 or x.shape[1] < 1:
        raise InputError(f"descriptors must be a non-empty (n, dim) matrix, not shape {x.shape}")
    if not _is_int(k) or k < 1:
        raise InputError(f"the number of GMM components must be an integer >= 1, not {k!r}")
    if k > x.shape[0]:
        raise InputError(
            f"a GMM of {k} components needs at least {k} descriptors, but there are {x.shape[0]}"
        )
    if pca_dim is not None and (not _is_int(pca_dim) or pca_dim < 1):
        raise InputError(f"pca_dim must be an integer >= 1 (or None for no PCA), not {pca_dim!r}")
    gmm = Gmm(np.ones(k), np.zeros((k, x.shape[1])), np.ones((k, x.shape[1])))
    if pca_dim is not None and pca_dim < x.shape[1]:
        pca = PCA(n_components=min(pca_dim, x.shape[0]), random_state=seed).fit(x)
        gmm.pca_mean = pca.mean_.astype(np.float32)
        gmm.pca_components = pca.components_.astype(np.float32)
    z = gmm.reduce(x)
    floor = VARIANCE_FLOOR * max(float(z.var(axis=0, dtype=np.float64).mean()), 1e-12)
    options: dict[str, Any] = {"init_params": "k-means++"}
    if init_centers is not None:
        centers = np.asarray(init_centers, dtype=np.float32)
        if centers.shape != (k, x.shape[1]):
            raise InputError(f"init_centers must have shape {(k, x.shape[1])}, not {centers.shape}")
        options = _hard_start(z, gmm.reduce(centers), floor)
    model = GaussianMixture(
        n_components=k,
        covariance_type="diag",
        reg_covar=floor,
        max_iter=max_iter,
        random_state=seed,
        **options,
    )
    with warnings.catch_warnings():  # stopping at max_iter is the plan, not a failure
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(z)
    gmm.weights = model.weights_.astype(np.float64)
    gmm.means = model.means_.astype(np.float64)
    gmm.variances = model.covariances_.astype(np.float64)
    return gmm


def _hard_start(z: np.ndarray, centers: np.ndarray, floor: float) -> dict[str, Any]:
    """GaussianMixture's starting weights, means and precisions from a hard assignment to `centers`."""
    k = centers.shape[0]
    labels, _ = nearest_centres(z, centers)
    counts = np.bincount(labels, minlength=k).astype(np.float64)
    sums = np.zeros((k, z.shape[1]))
    squares = np.zeros((k, z.shape[1]))
    np.add.at(sums, labels, z)
    np.add.at(squares, labels, z.astype(np.float64) ** 2)
    filled = counts > 0
    means = centers.astype(np.float64)
    means[filled] = sums[filled] / counts[filled, None]
    variances = np.full((k, z.shape[1]), float(z.var(axis=0, dtype=np.float64).mean()))
    variances[filled] = squares[filled] / counts[filled, None] - means[filled] ** 2
    variances = np.maximum(variances, 0.0) + floor
    weights = (counts + 1.0) / (counts.sum() + k)  # an empty cluster keeps a small weight
    # resp from "random_from_data" is computed and then replaced by these three (cheap: one M-step)
    return {
        "init_params": "random_from_data",
        "weights_init": weights,
        "means_init": means,
        "precisions_init": 1.0 / variances,
    }


class FisherEncoder(FeatureSetEncoder):
    """Improved Fisher vectors: (n_images, 2 x k x d x cells) float32, d = pca_dim (or the descriptor dim).

    vocabulary: a Vocabulary (or the path of a saved one) that either carries a fitted GMM (trained with
    `visionlake vocab train --gmm`; then `fit` fits nothing) or gives the k-means centres the GMM starts
    from; None: a GMM of k components fitted in `fit` from k-means++.
    pca_dim: PCA dimensions before the GMM (None: none). sample: descriptors of X the PCA and GMM are
    fitted on (None: GMM_SAMPLE). max_iter: EM iterations at most. norm: over the whole vector, "power"
    (signed square root then L2; the improved FV), "l2", "l1" or "none". pyramid: spatial pyramid grid
    sizes, e.g. (1, 2). image_dim: length of each image's global descriptor (HOG) appended; 0 = none.
    """

    encoding = "fisher"

    def __init__(
        self,
        vocabulary: Vocabulary | str | os.PathLike[str] | None = None,
        k: int = 64,
        pca_dim: int | None = 64,
        norm: str = "power",
        pyramid: tuple[int, ...] = (1,),
        seed: int = 0,
        sample: int | None = None,
        max_iter: int = GMM_MAX_ITER,
        chunk_size: int | None = None,
        image_dim: int = 0,
    ) -> None:
        self.vocabulary = vocabulary
        self.k = k
        self.pca_dim = pca_dim
        self.norm = norm
        self.pyramid = pyramid
        self.seed = seed
        self.sample = sample
        self.max_iter = max_iter
        self.chunk_size = chunk_size
        self.image_dim = image_dim

    # --- scikit-learn -----------------------------------------------------------------------------

    def fit(self, X: Sequence[FeatureSet], y: Any = None) -> FisherEncoder:
        """Take the vocabulary's GMM, or fit PCA + GMM on a sample of X's descriptors."""
        check_common_params(self)
        sets = feature_list(X)
        vocabulary = self.vocabulary
        if isinstance(vocabulary, str | os.PathLike):
            vocabulary = Vocabulary.load(vocabulary)
        gmm = Gmm.from_arrays(vocabulary.arrays) if vocabulary is not None else None
        if gmm is None:
            gmm = self._fit_gmm(sets, vocabulary)
        dim = descriptor_dim(sets)
        if dim is not None and dim != gmm.dim:
            raise InputError(f"the GMM takes descriptors of dimension {gmm.dim} but the features have {dim}")
        self.gmm_ = gmm
        self.descriptor_dim_ = gmm.dim
        self.n_cells_ = sum(level * level for level in self.pyramid)
        self.n_encoded_ = self.n_cells_ * 2 * gmm.k * gmm.reduced_dim
        self.n_features_out_ = self.n_encoded_ + self.image_dim
        if gmm.pca_components is not None:
            self.components_t_ = np.ascontiguousarray(gmm.pca_components.T, dtype=np.float64)
        precisions = 1.0 / gmm.variances
        # log N(z | mu_k, s_k) + log w_k = z² . (-p_k / 2) + z . (mu_k p_k) + const_k   (p = 1 / s²)
        # float64: the three terms are large and nearly cancel (a component's variance is small next to
        # its mean), and float32 left posterior errors of 1e-3 that the square root then magnifies
        self.quadratic_ = np.ascontiguousarray((-0.5 * precisions).T)  # (d, k)
        self.linear_ = np.ascontiguousarray((gmm.means * precisions).T)  # (d, k)
        self.constant_ = (
            np.log(gmm.weights)
            - 0.5 * np.log(2 * np.pi * gmm.variances).sum(axis=1)
            - 0.5 * (gmm.means**2 * precisions).sum(axis=1)
        )
        return self

    def transform(self, X: Sequence[FeatureSet]) -> np.ndarray:
        """(n_images, n_features_out_) float32; images without descriptors give zero vectors."""
        check_is_fitted(self, "gmm_")
        sets = feature_list(X)
        dim = descriptor_dim(sets)
        if dim is not None and dim != self.descriptor_dim_:
            raise InputError(
                f"the GMM takes descriptors of dimension {self.descriptor_dim_} but the features have {dim}"
            )
        return self._encode(sets, self._encode_into)

    def meta(self) -> dict[str, Any]:
        """What an encoded dataset records: parameters, GMM size, output dimension."""
        check_is_fitted(self, "gmm_")
        params = self.get_params()
        params["vocabulary"] = (
            repr(os.fspath(self.vocabulary)) if isinstance(self.vocabulary, str | os.PathLike) else None
        )
        params["pyramid"] = [int(level) for level in self.pyramid]
        vocabulary = self.vocabulary.meta if isinstance(self.vocabulary, Vocabulary) else {}
        return {
            "kind": "bow",
            "encoding": self.encoding,
            "params": params,
            "k": self.gmm_.k,
            "pca_dim": self.gmm_.reduced_dim,
            "dim": self.n_features_out_,
            "n_features_out": self.n_features_out_,
            "vocabulary": vocabulary,
        }

    # --- fitting ----------------------------------------------------------------------------------

    def _fit_gmm(self, sets: list[FeatureSet], vocabulary: Vocabulary | None) -> Gmm:
        counts = np.array([s.n_keypoints for s in sets], np.int64)
        total = int(counts.sum())
        k = vocabulary.k if vocabulary is not None else self.k
        if total == 0:
            raise InputError(
                f"cannot fit a GMM of {k} components: the features hold no descriptors "
                "(pass a vocabulary trained with `vocab train --gmm`, or fit on features)"
            )
        sample = GMM_SAMPLE if self.sample is None else self.sample
        x = gather(sets, counts, sample_rows(total, sample, self.seed))
        return fit_gmm(
            x,
            k,
            pca_dim=self.pca_dim,
            seed=self.seed,
            max_iter=self.max_iter,
            init_centers=None if vocabulary is None else vocabulary.centers,
        )

    # --- encoding ---------------------------------------------------------------------------------

    def _encode_into(self, sets: list[FeatureSet], out: np.ndarray) -> None:
        counts = np.array([s.n_keypoints for s in sets], np.int64)
        if not counts.any():
            return
        gmm = self.gmm_
        k, d = gmm.k, gmm.reduced_dim
        x = np.concatenate([s.descriptors for s in sets if s.n_keypoints]).astype(np.float64)
        z = x if gmm.pca_components is None else (x - gmm.pca_mean) @ self.components_t_
        gamma = self._posteriors(z)
        cells = pyramid_cells(sets, counts, self.pyramid)  # (n, levels)
        zz = np.concatenate([z, z * z], axis=1)  # (n, 2d): first and second moments in one product
        stats = np.zeros((len(sets), self.n_cells_, k, 1 + 2 * d))  # S0 | S1 | S2 per cell and component
        starts = np.concatenate([[0], np.cumsum(counts)])
        for i in np.flatnonzero(counts):
            lo, hi = starts[i], starts[i + 1]
            g = gamma[lo:hi]
            if self.n_cells_ == 1:
                weights = g
            else:  # (t, cell x k): each descriptor's posteriors in the columns of its cells
                weights = np.zeros((hi - lo, self.n_cells_, k))
                rows = np.arange(hi - lo)
                for level in range(cells.shape[1]):
                    weights[rows, cells[lo:hi, level]] = g
                weights = weights.reshape(hi - lo, self.n_cells_ * k)
            stats[i, :, :, 0] = weights.sum(axis=0).reshape(self.n_cells_, k)
            stats[i, :, :, 1:] = (weights.T @ zz[lo:hi]).reshape(self.n_cells_, k, 2 * d)
        out += self._gradients(stats).reshape(out.shape)

    def _posteriors(self, z: np.ndarray) -> np.ndarray:
        """gamma (n, k) float64: each descriptor's component posteriors, by blocks of rows."""
        gamma = np.empty((z.shape[0], self.gmm_.k))
        for lo in range(0, z.shape[0], _POSTERIOR_ROWS):
            block = z[lo : lo + _POSTERIOR_ROWS]
            log_p = (block * block) @ self.quadratic_
            log_p += block @ self.linear_
            log_p += self.constant_
            log_p -= log_p.max(axis=1, keepdims=True)
            np.exp(log_p, out=log_p)
            log_p /= log_p.sum(axis=1, keepdims=True)
            gamma[lo : lo + len(block)] = log_p
        return gamma

    def _gradients(self, stats: np.ndarray) -> np.ndarray:
        """(images, cells, [G_mu (k x d), G_sigma (k x d)]) from the statistics, in float64."""
        gmm = self.gmm_
        d = gmm.reduced_dim
        s0 = stats[..., :1]
        s1 = stats[..., 1 : 1 + d]
        s2 = stats[..., 1 + d :]
        mu, var = gmm.means, gmm.variances
        sigma = np.sqrt(var)
        t = s0.sum(axis=2, keepdims=True)  # descriptors per (image, cell)
        t = np.where(t > 0, t, 1.0)
        g_mu = (s1 - mu * s0) / sigma / (t * np.sqrt(gmm.weights)[:, None])
        g_sigma = ((s2 - 2 * mu * s1 + mu * mu * s0) / var - s0) / (t * np.sqrt(2 * gmm.weights)[:, None])
        return np.concatenate([g_mu, g_sigma], axis=2).astype(np.float32)


def _is_int(value: Any) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)
