"""VLAD, Fisher vectors and the global HOG on real images, checked against plain NumPy formulas.

The reference implementations below loop over images, pyramid cells and descriptors with float64
broadcasting: the formulas as written in the papers, nothing shared with the encoders under test.
"""

from __future__ import annotations

import pickle

import cv2
import numpy as np
import pytest
from media import sample
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import Pipeline
from sklearn.svm import LinearSVC

from visionlake.batch import records
from visionlake.batch.encode import BowEncoder, ImageDescriptorEncoder, make_encoder
from visionlake.batch.features import FeatureExtractor
from visionlake.batch.fisher import FisherEncoder, Gmm, fit_gmm
from visionlake.batch.vlad import VladEncoder
from visionlake.batch.vocabulary import Vocabulary, train_vocabulary
from visionlake.errors import InputError

IMAGES = ["apple.jpg", "baboon.jpg", "building.jpg", "butterfly.jpg", "fruits.jpg", "home.jpg", "messi5.jpg"]
K = 8


@pytest.fixture(scope="module")
def sift_sets():
    """RootSIFT features of real photographs plus one blank image (no keypoints)."""
    images = [cv2.imread(str(sample(name))) for name in IMAGES] + [np.full((120, 160), 200, np.uint8)]
    sets = FeatureExtractor("sift", size=320, max_keypoints=200, root=True).transform(images)
    assert sets[-1].n_keypoints == 0 and all(s.n_keypoints > 40 for s in sets[:-1])
    return sets


@pytest.fixture(scope="module")
def vocabulary(sift_sets) -> Vocabulary:
    return train_vocabulary(np.concatenate([s.descriptors for s in sift_sets]), K, seed=0)


@pytest.fixture(scope="module")
def gmm_vocabulary(sift_sets, vocabulary) -> Vocabulary:
    x = np.concatenate([s.descriptors for s in sift_sets])
    gmm = fit_gmm(x, K, pca_dim=24, seed=0, init_centers=vocabulary.centers)
    return Vocabulary(vocabulary.centers, dict(vocabulary.meta), gmm.to_arrays())


# --- reference implementations ----------------------------------------------------------------------


def _cells(s: records.FeatureSet, pyramid: tuple[int, ...]):
    """Boolean masks of the descriptors in each pyramid cell, level by level, row-major."""
    for level in pyramid:
        col = np.clip((s.keypoints[:, 0] * level).astype(int), 0, level - 1)
        row = np.clip((s.keypoints[:, 1] * level).astype(int), 0, level - 1)
        for r in range(level):
            for c in range(level):
                yield (col == c) & (row == r)


def _power_l2(v: np.ndarray) -> np.ndarray:
    v = np.sign(v) * np.sqrt(np.abs(v))
    n = np.linalg.norm(v)
    return v / n if n > 0 else v


def reference_vlad(s: records.FeatureSet, centers: np.ndarray, pyramid: tuple[int, ...]) -> np.ndarray:
    x, c = s.descriptors.astype(np.float64), centers.astype(np.float64)
    parts = []
    for mask in _cells(s, pyramid):
        v = np.zeros_like(c)
        for t in np.flatnonzero(mask):
            nearest = int(np.argmin(((c - x[t]) ** 2).sum(axis=1)))
            v[nearest] += x[t] - c[nearest]
        for word in range(len(c)):  # intra-normalisation
            n = np.linalg.norm(v[word])
            if n > 0:
                v[word] /= n
        parts.append(v.ravel())
    return _power_l2(np.concatenate(parts))


def reference_fisher(s: records.FeatureSet, gmm: Gmm, pyramid: tuple[int, ...]) -> np.ndarray:
    z_all = (s.descriptors.astype(np.float64) - gmm.pca_mean) @ gmm.pca_components.T.astype(np.float64)
    w, mu, var = gmm.weights, gmm.means, gmm.variances
    parts = []
    for mask in _cells(s, pyramid):
        z = z_all[mask]
        if len(z) == 0:
            parts.append(np.zeros(2 * mu.size))
            continue
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
        parts += [g_mu.ravel(), g_sigma.ravel()]
    return _power_l2(np.concatenate(parts))


# --- VLAD --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("pyramid", [(1,), (1, 2)])
def test_vlad_equals_the_formula(sift_sets, vocabulary, pyramid):
    encoder = VladEncoder(vocabulary, pyramid=pyramid).fit([])
    x = encoder.transform(sift_sets)
    cells = sum(level * level for level in pyramid)
    assert x.dtype == np.float32 and x.shape == (len(sift_sets), cells * K * 128) == (
        8,
        encoder.n_features_out_,
    )
    expected = np.stack([reference_vlad(s, vocabulary.centers, pyramid) for s in sift_sets])
    np.testing.assert_allclose(x, expected, atol=2e-6)
    np.testing.assert_allclose(np.linalg.norm(x[:-1], axis=1), 1.0, rtol=1e-5)
    assert not x[-1].any()  # no descriptors: a zero vector, the row kept


def test_vlad_intra_normalisation_gives_unit_blocks(sift_sets, vocabulary):
    x = VladEncoder(vocabulary, norm="none").fit([]).transform(sift_sets[:3])
    blocks = np.linalg.norm(x.reshape(3, K, 128), axis=2)
    assert set(np.round(blocks.ravel(), 5)) <= {0.0, 1.0} and (blocks > 0).sum() > 3 * K // 2
    raw = VladEncoder(vocabulary, norm="none", intra=False).fit([]).transform(sift_sets[:3])
    assert not np.allclose(np.linalg.norm(raw.reshape(3, K, 128), axis=2)[blocks > 0], 1.0)


def test_vlad_trains_its_own_vocabulary_and_batches_agree(sift_sets):
    encoder = VladEncoder(k=6, seed=3).fit(sift_sets)
    assert encoder.vocabulary_.k == 6 and encoder.n_features_out_ == 6 * 128
    whole = encoder.transform(sift_sets)
    one_by_one = np.concatenate([encoder.transform([s]) for s in sift_sets])
    np.testing.assert_allclose(whole, one_by_one, atol=1e-6)


# --- Fisher vectors ----------------------------------------------------------------------------------


@pytest.mark.parametrize("pyramid", [(1,), (1, 2)])
def test_fisher_vector_equals_the_formula(sift_sets, gmm_vocabulary, pyramid):
    encoder = FisherEncoder(gmm_vocabulary, pyramid=pyramid).fit([])
    gmm = encoder.gmm_
    assert (gmm.k, gmm.reduced_dim, gmm.dim) == (K, 24, 128)
    x = encoder.transform(sift_sets)
    cells = sum(level * level for level in pyramid)
    assert x.dtype == np.float32 and x.shape == (len(sift_sets), cells * 2 * K * 24)
    expected = np.stack([reference_fisher(s, gmm, pyramid) for s in sift_sets])
    np.testing.assert_allclose(x, expected, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(x[:-1], axis=1), 1.0, rtol=1e-5)
    assert not x[-1].any()


def test_gmm_is_a_real_fit_started_from_the_vocabulary(sift_sets, vocabulary, gmm_vocabulary):
    gmm = Gmm.from_arrays(gmm_vocabulary.arrays)
    assert gmm.weights.sum() == pytest.approx(1.0) and (gmm.variances > 0).all()
    z = gmm.reduce(np.concatenate([s.descriptors for s in sift_sets]))
    # the PCA keeps the directions of largest variance: 24 of 128 hold most of it
    x = np.concatenate([s.descriptors for s in sift_sets]).astype(np.float64)
    assert z.var(axis=0).sum() > 0.6 * x.var(axis=0).sum()
    # EM from the k-means clusters ends near them: every mean is closest to its own projected centre
    start = gmm.reduce(vocabulary.centers)
    d = ((gmm.means[:, None, :] - start[None]) ** 2).sum(axis=2)
    assert (d.argmin(axis=1) == np.arange(K)).sum() >= K - 1


def test_fisher_fits_pca_and_gmm_in_fit_without_a_vocabulary(sift_sets):
    encoder = FisherEncoder(k=4, pca_dim=16, seed=1).fit(sift_sets)
    assert (encoder.gmm_.k, encoder.gmm_.reduced_dim) == (4, 16) and encoder.n_features_out_ == 2 * 4 * 16
    x = encoder.transform(sift_sets)
    np.testing.assert_allclose(
        x, np.stack([reference_fisher(s, encoder.gmm_, (1,)) for s in sift_sets]), atol=2e-5
    )
    unreduced = FisherEncoder(k=2, pca_dim=None).fit(sift_sets)
    assert unreduced.gmm_.pca_components is None and unreduced.n_features_out_ == 2 * 2 * 128


def test_vocabulary_file_keeps_the_gmm(tmp_path, gmm_vocabulary, sift_sets):
    path = tmp_path / "vocab.npz"
    gmm_vocabulary.save(path)
    loaded = Vocabulary.load(path)
    assert sorted(loaded.arrays) == sorted(gmm_vocabulary.arrays)
    a = FisherEncoder(str(path)).fit([]).transform(sift_sets)
    b = FisherEncoder(gmm_vocabulary).fit([]).transform(sift_sets)
    np.testing.assert_array_equal(a, b)
    assert Vocabulary.load(path).arrays["fisher_means"].shape == (K, 24)


# --- estimator conventions ---------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["vlad", "fisher"])
def test_pickle_clone_and_unfitted(sift_sets, gmm_vocabulary, encoding):
    encoder = make_encoder(encoding, gmm_vocabulary, pyramid=(1, 2))
    assert clone(encoder).get_params()["pyramid"] == (1, 2)
    with pytest.raises(NotFittedError):
        encoder.transform(sift_sets)
    encoder.fit([])
    restored = pickle.loads(pickle.dumps(encoder))
    np.testing.assert_array_equal(restored.transform(sift_sets), encoder.transform(sift_sets))


@pytest.mark.parametrize("encoding", ["vlad", "fisher"])
def test_pipeline_separates_faces_from_non_faces(lfw_images, encoding):
    images, labels = lfw_images
    encoder = VladEncoder(k=16) if encoding == "vlad" else FisherEncoder(k=8, pca_dim=32)
    pipe = Pipeline(
        [
            ("features", FeatureExtractor("dense-sift", size=48, dense_step=6, root=True)),
            ("encode", encoder),
            ("svm", LinearSVC(C=1.0, max_iter=5000)),
        ]
    )
    folds = StratifiedKFold(n_splits=3, shuffle=True, random_state=0)
    scores = cross_val_score(pipe, images, labels, cv=folds)
    assert scores.mean() > 0.8, scores  # chance is 0.5
    pipe.fit(images[::2], labels[::2])
    assert pickle.loads(pickle.dumps(pipe)).score(images[1::2], labels[1::2]) > 0.75


def test_bad_parameters_and_inputs_are_named(sift_sets, vocabulary):
    with pytest.raises(InputError, match="unknown encoding 'vlad2'"):
        make_encoder("vlad2", vocabulary)
    with pytest.raises(InputError, match="does not take assign"):
        make_encoder("vlad", vocabulary, assign="soft")
    with pytest.raises(InputError, match="unknown norm"):
        VladEncoder(vocabulary, norm="l3").fit([])
    with pytest.raises(InputError, match="pyramid"):
        FisherEncoder(vocabulary, pyramid=(0,)).fit(sift_sets)
    with pytest.raises(InputError, match="no descriptors"):
        FisherEncoder(k=4).fit([])  # nothing to fit the GMM on, and no vocabulary carrying one
    with pytest.raises(InputError, match="not a FeatureSet"):
        VladEncoder(vocabulary).fit([]).transform([np.zeros((3, 128))])
    orb = FeatureExtractor("orb", max_keypoints=50).transform([cv2.imread(str(sample("baboon.jpg")))])
    with pytest.raises(InputError, match="dimension"):
        VladEncoder(vocabulary).fit([]).transform(orb)
    with pytest.raises(InputError, match="needs at least 100"):
        fit_gmm(np.zeros((10, 4), np.float32), 100)


# --- HOG ---------------------------------------------------------------------------------------------


def test_global_hog_is_opencvs_hog_of_the_resized_image():
    grey = cv2.imread(str(sample("messi5.jpg")), cv2.IMREAD_GRAYSCALE)
    extractor = FeatureExtractor("hog", hog_size=64, hog_cell=8)
    s = extractor.transform([grey])[0]
    assert (
        s.n_keypoints == 0 and s.image_descriptor.shape == (1764,) and s.image_descriptor.dtype == np.float32
    )
    expected = cv2.HOGDescriptor((64, 64), (16, 16), (8, 8), (8, 8), 9).compute(
        cv2.resize(grey, (64, 64), interpolation=cv2.INTER_AREA)
    )
    np.testing.assert_array_equal(s.image_descriptor, expected.ravel())
    assert (
        extractor.meta()["image_descriptor"] == {"kind": "hog", "dim": 1764} and extractor.meta()["dim"] == 0
    )
    small = FeatureExtractor("hog", hog_size=28, hog_cell=4).transform([grey])[0]
    assert small.image_descriptor.shape == (6 * 6 * 36,)
    with pytest.raises(InputError, match="multiple of hog_cell"):
        FeatureExtractor("hog", hog_size=30, hog_cell=8).fit()


def test_hog_travels_through_parquet_and_is_appended_to_every_encoding(sift_sets, vocabulary, gmm_vocabulary):
    images = [cv2.imread(str(sample(name))) for name in IMAGES[:4]]
    extractor = FeatureExtractor(
        "sift", size=320, max_keypoints=200, root=True, hog=True, hog_size=32, hog_cell=8
    )
    sets = extractor.transform(images)
    assert all(s.image_descriptor.shape == (324,) and s.n_keypoints > 40 for s in sets)
    back = records.feature_sets(records.feature_table(sets), 128, "float32")
    for a, b in zip(sets, back, strict=True):
        np.testing.assert_array_equal(a.image_descriptor, b.image_descriptor)
        np.testing.assert_array_equal(a.descriptors, b.descriptors)
    plain = records.feature_sets(records.feature_table(sift_sets[:2]), 128, "float32")
    assert plain[0].image_descriptor is None
    hog = np.stack([s.image_descriptor / np.linalg.norm(s.image_descriptor) for s in sets])
    for encoder in (
        BowEncoder(vocabulary, image_dim=324),
        VladEncoder(vocabulary, image_dim=324),
        FisherEncoder(gmm_vocabulary, image_dim=324),
    ):
        alone = clone(encoder).set_params(image_dim=0).fit([]).transform(sets)
        x = encoder.fit([]).transform(sets)
        assert x.shape == (4, alone.shape[1] + 324) == (4, encoder.n_features_out_)
        np.testing.assert_allclose(x[:, :-324], alone, atol=1e-6)
        np.testing.assert_allclose(x[:, -324:], hog, atol=1e-6)
    only = ImageDescriptorEncoder(image_dim=324).fit([]).transform(back)
    np.testing.assert_allclose(only, hog, atol=1e-6)
    with pytest.raises(InputError, match="no image descriptor"):
        ImageDescriptorEncoder(image_dim=324).fit([]).transform(plain)
