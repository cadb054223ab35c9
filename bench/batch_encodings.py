"""Encoding images/s of VLAD and Fisher vectors against bags of words on the same descriptors, and
the Fisher-vector encoder against a straightforward NumPy implementation of the same formulas.

Descriptors: dense RootSIFT (the `bovw run` extractor: 64 px, step 4, 256 descriptors per image) of
real photo crops (batch_extract.py), 1,000 images (200 with --quick). One vocabulary of k = 64 words
(k-means of the descriptors) serves all three; the Fisher encoder's GMM (PCA to 64 dimensions, 64
diagonal components) is fitted from it, as `vocab train --gmm` does. Every encoder runs in one
process with BLAS limited to one thread.

1. `VladEncoder.transform` vs `BowEncoder.transform` (hard, sum): images/s and ratio.
2. `FisherEncoder.transform` vs the same BowEncoder.
3. `FisherEncoder.transform` vs `numpy_fisher`, below: per image, posteriors from float64 broadcasting
   over (descriptors, components, dimensions), then the gradient sums, power and L2, as the formulas
   read. It runs on the first images until BASELINE_IMAGES are done; the vectors are checked to agree.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from batch_extract import photo_crops, write_folder
from common import emit, say

K = 64
PCA_DIM = 64
BASELINE_IMAGES = 100
EXTRACTOR = {"algo": "dense-sift", "size": 64, "dense_step": 4, "root": True}


def numpy_fisher(descriptors: np.ndarray, gmm) -> np.ndarray:
    """The improved Fisher vector of one image, straight from the formulas (float64)."""
    z = (descriptors.astype(np.float64) - gmm.pca_mean) @ gmm.pca_components.T.astype(np.float64)
    w, mu, var = gmm.weights, gmm.means, gmm.variances
    if len(z) == 0:
        return np.zeros(2 * mu.size)
    log_p = (
        np.log(w)
        - 0.5 * np.log(2 * np.pi * var).sum(axis=1)
        - 0.5 * (((z[:, None, :] - mu) ** 2) / var).sum(axis=2)
    )
    gamma = np.exp(log_p - log_p.max(axis=1, keepdims=True))
    gamma /= gamma.sum(axis=1, keepdims=True)
    u = (z[:, None, :] - mu) / np.sqrt(var)
    g_mu = (gamma[:, :, None] * u).sum(axis=0) / (len(z) * np.sqrt(w))[:, None]
    g_sigma = (gamma[:, :, None] * (u**2 - 1)).sum(axis=0) / (len(z) * np.sqrt(2 * w))[:, None]
    v = np.concatenate([g_mu.ravel(), g_sigma.ravel()])
    v = np.sign(v) * np.sqrt(np.abs(v))
    n = np.linalg.norm(v)
    return v / n if n > 0 else v


def _rate(encoder, sets: list, threadpool_limits) -> tuple[float, np.ndarray]:
    encoder.transform(sets[:4])  # warm-up
    with threadpool_limits(1):
        t = time.perf_counter()
        x = encoder.transform(sets)
        seconds = time.perf_counter() - t
    return len(sets) / seconds, x


def run(quick: bool, tmp: Path) -> list[dict]:
    from threadpoolctl import threadpool_limits

    from visionlake.batch import records
    from visionlake.batch.dataset import pack
    from visionlake.batch.encode import BowEncoder
    from visionlake.batch.features import FeatureExtractor
    from visionlake.batch.fisher import FisherEncoder, fit_gmm
    from visionlake.batch.vlad import VladEncoder
    from visionlake.batch.vocabulary import Vocabulary, read_descriptors, train_vocabulary
    from visionlake.engines.local import LocalEngine

    tmp.mkdir(parents=True, exist_ok=True)
    n_images = 200 if quick else 1000
    pack(write_folder(photo_crops(n_images), tmp / "images"), tmp / "images.parquet")
    features = str(tmp / "features.parquet")
    with LocalEngine(processes=2) as engine:
        engine.extract(str(tmp / "images.parquet"), features, FeatureExtractor(**EXTRACTOR))
    meta = records.read_meta(features)
    sets = [
        s
        for table in records.iter_tables(features)
        for s in records.feature_sets(table, int(meta["dim"]), meta["dtype"])
    ]
    n_desc = sum(s.n_keypoints for s in sets)
    sample, _ = read_descriptors(features, sample=50_000, seed=0)
    t = time.perf_counter()
    kmeans = train_vocabulary(sample, K, seed=0)
    gmm = fit_gmm(sample, K, pca_dim=PCA_DIM, seed=0, init_centers=kmeans.centers)
    vocab = Vocabulary(kmeans.centers, kmeans.meta, gmm.to_arrays())
    say(
        f"encodings: {n_desc} descriptors of {len(sets)} images; k-means + GMM in {time.perf_counter() - t:.1f} s"
    )

    bow_rate, _ = _rate(BowEncoder(vocab, assign="hard", pooling="sum").fit([]), sets, threadpool_limits)
    vlad_rate, _ = _rate(VladEncoder(vocab).fit([]), sets, threadpool_limits)
    fisher = FisherEncoder(vocab).fit([])
    fv_rate, fv = _rate(fisher, sets, threadpool_limits)

    done = sets[:BASELINE_IMAGES]
    with threadpool_limits(1):
        t = time.perf_counter()
        reference = np.stack([numpy_fisher(s.descriptors, fisher.gmm_) for s in done])
        numpy_seconds = time.perf_counter() - t
    max_diff = float(np.abs(reference - fv[: len(done)]).max())
    say(f"encodings: bow {bow_rate:.0f}, vlad {vlad_rate:.0f}, fisher {fv_rate:.0f} images/s")

    common = {"images": len(sets), "descriptors": n_desc, "k": K, "threads": 1, "extractor": EXTRACTOR}
    return [
        emit(
            "batch_encodings_vlad",
            vlad_rate,
            "images/s",
            f"BowEncoder(assign='hard', pooling='sum').transform, same descriptors and k={K} vocabulary",
            bow_rate,
            dim=K * 128,
            bow_dim=K,
            notes="VladEncoder (intra-normalisation, power + L2) transform over all images, one thread",
            **common,
        ),
        emit(
            "batch_encodings_fisher",
            fv_rate,
            "images/s",
            f"BowEncoder(assign='hard', pooling='sum').transform, same descriptors and k={K} vocabulary",
            bow_rate,
            dim=2 * K * PCA_DIM,
            pca_dim=PCA_DIM,
            notes="FisherEncoder (PCA + diagonal GMM from the vocabulary, power + L2) transform, one thread",
            **common,
        ),
        emit(
            "batch_encodings_fisher_vs_numpy",
            fv_rate,
            "images/s",
            "a straightforward NumPy Fisher vector per image (float64 broadcasting over descriptors x "
            f"components x dimensions), timed on the first {len(done)} images",
            len(done) / numpy_seconds,
            target=1.0,
            target_on="ratio",
            target_met=fv_rate / (len(done) / numpy_seconds) >= 1.0,
            max_abs_difference=max_diff,
            vectors_agree=max_diff < 1e-4,
            pca_dim=PCA_DIM,
            **common,
        ),
    ]
