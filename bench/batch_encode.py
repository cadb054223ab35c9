"""Bag-of-words coding: descriptors/s of `BowEncoder.transform` vs a naive per-descriptor loop, and vs
scikit-learn's `pairwise_distances_argmin`.

Descriptors: SIFT of real photo crops (320x240, see batch_extract.py), extracted by the local engine;
300 crops (~130,000 descriptors), 120 with --quick. Vocabulary: k=1000 of those descriptors drawn at
random as centres (what k-means starts from; how the centres were found does not change coding speed).

Baseline: a naive `assign_pooling`, as a first Spark port writes it: per image a new MLlib `KMeansModel`, the
descriptors as float64, and for each descriptor `model.predict(x)` (a Python loop over the 1000
centres computing squared distances) then `scipy.spatial.distance.euclidean` to the winner, summed
into the bin. It is far too slow to run on everything, so it runs on the first images until
BASELINE_DESCRIPTORS descriptors are done and its rate is extrapolated per descriptor. (pyspark's
`KMeansModel.predict` needs no Spark session; without pyspark the same loop runs in plain numpy.)

Ours: `BowEncoder(vocabulary, assign="hard", pooling="sum").transform(feature_sets)` over all images,
one thread (BLAS limited to 1, like the baseline); the default thread count is reported as well.
Both assign every descriptor to its nearest centre; the assignments of the baseline subset are checked
to agree. A second line compares the same transform with scikit-learn's `pairwise_distances_argmin`
(float32, one thread) plus a bincount per image, and checks the histograms are equal. A third line
gives the whole local engine (`LocalEngine.encode`, 2 processes, reading and
writing Parquet) against the single-threaded transform.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
from batch_extract import photo_crops, write_folder
from common import emit, say

K = 1000
TARGET_RATIO = 100.0
BASELINE_DESCRIPTORS = 400


def seed002_assign_pooling(feature_matrix: list, cluster_centers: list) -> tuple[np.ndarray, list[int]]:
    """Seed 002's assign_pooling (sum pooling) on one image's float64 descriptor rows."""
    from scipy.spatial import distance

    try:
        from pyspark.mllib.clustering import KMeansModel
    except ImportError:  # same loop without pyspark
        KMeansModel = _NumpyKMeansModel  # noqa: N806

    feature_matrix = np.array(feature_matrix)
    model = KMeansModel(cluster_centers)
    bow = np.zeros(len(cluster_centers))
    assigned = []
    for x in feature_matrix:
        k = model.predict(x)
        dist = distance.euclidean(cluster_centers[k], x)
        bow[k] = bow[k] + dist
        assigned.append(k)
    return bow, assigned


class _NumpyKMeansModel:
    """pyspark.mllib's KMeansModel.predict, for machines without pyspark."""

    def __init__(self, centers: list) -> None:
        self.centers = centers

    def predict(self, x: np.ndarray) -> int:
        best, best_distance = 0, float("inf")
        for i in range(len(self.centers)):
            d = float(np.sum((x - self.centers[i]) ** 2))
            if d < best_distance:
                best, best_distance = i, d
        return best


def _sklearn_baseline(sets: list, centers: np.ndarray, encoder, threadpool_limits) -> tuple[float, bool]:
    """Seconds of scikit-learn's nearest-centre search + a bincount per image over every image (one
    thread; the normalisation the encoder also does is left out), and whether its histograms equal
    the encoder's."""
    from sklearn.metrics import pairwise_distances_argmin

    c = np.asarray(centers, dtype=np.float32)
    with threadpool_limits(1):
        t = time.perf_counter()
        hists = [
            np.bincount(pairwise_distances_argmin(s.descriptors.astype(np.float32), c), minlength=len(c))
            if s.n_keypoints
            else np.zeros(len(c), dtype=np.int64)
            for s in sets
        ]
        seconds = time.perf_counter() - t
    from visionlake.batch.encode import normalize

    ours = np.asarray(encoder.transform(sets))
    theirs = normalize(np.asarray(hists, dtype=ours.dtype), encoder.norm)  # ours is normalised
    return seconds, bool(ours.shape == theirs.shape and np.allclose(ours, theirs, atol=1e-6))


def run(quick: bool, tmp: Path) -> list[dict]:
    from threadpoolctl import threadpool_limits

    from visionlake.batch import records
    from visionlake.batch.dataset import pack
    from visionlake.batch.encode import BowEncoder, nearest_centres
    from visionlake.batch.features import FeatureExtractor
    from visionlake.batch.vocabulary import Vocabulary, read_descriptors
    from visionlake.engines.local import LocalEngine

    os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    tmp.mkdir(parents=True, exist_ok=True)
    n_images = 120 if quick else 300
    pack(write_folder(photo_crops(n_images), tmp / "images"), tmp / "images.parquet")
    features = str(tmp / "features.parquet")
    with LocalEngine(processes=2) as engine:
        t = time.perf_counter()
        engine.extract(str(tmp / "images.parquet"), features, FeatureExtractor(algo="sift"))
        say(f"encode: extracted in {time.perf_counter() - t:.1f} s")
        centers, _ = read_descriptors(features, sample=K, seed=0)
        vocab = Vocabulary(centers, {"engine": "bench", "method": "random descriptors", "k": K})
        meta = records.read_meta(features)
        sets = [
            s
            for table in records.iter_tables(features)
            for s in records.feature_sets(table, int(meta["dim"]), meta["dtype"])
        ]
        n_desc = sum(s.n_keypoints for s in sets)
        say(f"encode: {n_desc} SIFT descriptors of {len(sets)} photo crops, k={K}")

        encoder = BowEncoder(vocabulary=vocab, assign="hard", pooling="sum").fit([])
        encoder.transform(sets[:4])  # warm-up
        with threadpool_limits(1):
            t = time.perf_counter()
            encoder.transform(sets)
            ours_1t = time.perf_counter() - t
        t = time.perf_counter()
        encoder.transform(sets)
        ours_default = time.perf_counter() - t
        sk_1t, sk_agree = _sklearn_baseline(sets, vocab.centers, encoder, threadpool_limits)

        centers = [np.asarray(c, dtype=np.float64) for c in vocab.centers]  # as MLlib returns them
        done, base_s, agree = 0, 0.0, 0
        for s in sets:
            if done >= BASELINE_DESCRIPTORS:
                break
            part = s.descriptors[: BASELINE_DESCRIPTORS - done]
            rows = part.astype(np.float64).tolist()  # the naive code stores float64 lists
            if not rows:
                continue
            t = time.perf_counter()
            _bow, assigned = seed002_assign_pooling(rows, centers)
            base_s += time.perf_counter() - t
            ours, _ = nearest_centres(part.astype(np.float32), vocab.centers)
            agree += int(np.sum(np.asarray(ours) == np.asarray(assigned)))
            done += len(rows)
        say(f"encode: per-descriptor loop {done / base_s:.0f} descriptors/s on {done} descriptors")

        engine.start()
        report = engine.encode(features, encoder, str(tmp / "bow.parquet"))

    ours_rate = n_desc / ours_1t
    base_rate = done / base_s
    return [
        emit(
            "batch_encode_transform",
            ours_rate,
            "descriptors/s",
            "a naive assign_pooling: per descriptor MLlib KMeansModel.predict (Python loop over k=1000 "
            f"centres) + scipy euclidean, float64 (timed on {done} descriptors, rate extrapolated)",
            base_rate,
            target=TARGET_RATIO,
            target_on="ratio",
            target_met=ours_rate / base_rate >= TARGET_RATIO,
            k=K,
            descriptors=n_desc,
            images=len(sets),
            threads=1,
            transform_seconds=ours_1t,
            default_threads_descriptors_per_s=n_desc / ours_default,
            baseline_descriptors=done,
            baseline_seconds=base_s,
            baseline_seconds_extrapolated=n_desc / base_rate,
            assignment_agreement=agree / done,
            notes="BowEncoder(assign='hard', pooling='sum').transform over all images in one process with "
            "BLAS limited to 1 thread; both assign every descriptor to its nearest centre",
        ),
        emit(
            "batch_encode_transform_vs_sklearn",
            ours_rate,
            "descriptors/s",
            "scikit-learn pairwise_distances_argmin (float32, one thread) + np.bincount per image, the "
            "same hard sum-pooled histograms",
            n_desc / sk_1t,
            k=K,
            descriptors=n_desc,
            images=len(sets),
            threads=1,
            transform_seconds=ours_1t,
            sklearn_seconds=sk_1t,
            histograms_equal=sk_agree,
        ),
        emit(
            "batch_encode_local_engine",
            report.descriptors / report.seconds,
            "descriptors/s",
            "BowEncoder.transform in one process, one thread (same features, same encoder)",
            ours_rate,
            processes=2,
            images=report.images,
            engine_seconds=report.seconds,
            notes="whole LocalEngine.encode call: read features Parquet, encode in 2 worker processes, "
            "write bag-of-words Parquet",
        ),
    ]
