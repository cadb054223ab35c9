"""Vocabulary training, quality, the .npz file and reading descriptors back from features datasets."""

from __future__ import annotations

import numpy as np
import pytest

from visionlake.batch.features import FeatureExtractor
from visionlake.batch.records import (
    FEATURE_SCHEMA,
    ImageRecord,
    TableWriter,
    feature_table,
    write_sidecar,
)
from visionlake.batch.vocabulary import (
    Vocabulary,
    quantization_error,
    read_descriptors,
    train_vocabulary,
)
from visionlake.errors import InputError


@pytest.fixture(scope="module")
def feature_sets(caltech_folder):
    """SIFT features of the real Caltech-style images (300 strongest per image, resized to 320 px)."""
    paths = sorted(p for p in caltech_folder.rglob("*.jpg"))
    records = [ImageRecord(p.name, p.parent.name, p.read_bytes()) for p in paths]
    extractor = FeatureExtractor("sift", size=320, max_keypoints=300)
    sets, rejected = extractor.extract_records(records)
    assert not rejected
    return extractor, sets


@pytest.fixture(scope="module")
def descriptors(feature_sets) -> np.ndarray:
    """All descriptors as the vocabulary steps read them: float32 (SIFT is stored as uint8)."""
    return np.concatenate([s.descriptors for s in feature_sets[1]]).astype(np.float32)


def _brute_force_error(x: np.ndarray, centers: np.ndarray) -> float:
    d = ((x[:, None, :].astype(np.float64) - centers[None, :, :].astype(np.float64)) ** 2).sum(-1)
    return float(d.min(1).mean())


@pytest.mark.parametrize("method", ["kmeans", "minibatch"])
def test_training_is_deterministic_for_a_seed(descriptors, method):
    a = train_vocabulary(descriptors, 24, seed=3, method=method)
    b = train_vocabulary(descriptors, 24, seed=3, method=method)
    c = train_vocabulary(descriptors, 24, seed=4, method=method)
    np.testing.assert_array_equal(a.centers, b.centers)
    assert not np.array_equal(a.centers, c.centers)
    assert a.centers.dtype == np.float32 and (a.k, a.dim) == (24, 128)
    assert a.meta["method"] == method and a.meta["engine"] == "local"
    assert a.meta["mean_sq_distance"] == pytest.approx(quantization_error(descriptors, a.centers), rel=1e-3)


def test_minibatch_quality_is_close_to_full_kmeans(descriptors):
    full = train_vocabulary(descriptors, 32, method="kmeans")
    mini = train_vocabulary(descriptors, 32, method="minibatch")
    assert mini.meta["mean_sq_distance"] <= 1.05 * full.meta["mean_sq_distance"]
    # both far better than 32 random descriptors as centres
    rng = np.random.default_rng(0)
    random_centres = descriptors[rng.choice(len(descriptors), 32, replace=False)]
    assert full.meta["mean_sq_distance"] < 0.85 * quantization_error(descriptors, random_centres)


def test_meta_records_the_run_and_the_callers_entries(descriptors, feature_sets):
    extractor, _ = feature_sets
    vocabulary = train_vocabulary(descriptors, 16, sample=500, seed=1, meta={"features": extractor.meta()})
    meta = vocabulary.meta
    assert meta["kind"] == "vocabulary" and meta["k"] == 16 and meta["dim"] == 128
    assert meta["n_descriptors"] == len(descriptors) and meta["sample"] == 500
    assert meta["method"] == "kmeans" and meta["seconds"] >= 0
    assert meta["features"]["algo"] == "sift"


def test_k_larger_than_the_descriptors_names_both_numbers(descriptors):
    with pytest.raises(InputError, match=f"k=5000 .* only {len(descriptors)}"):
        train_vocabulary(descriptors, 5000)
    with pytest.raises(InputError, match=r"k=100 .* only 50 \(a sample of 50"):
        train_vocabulary(descriptors, 100, sample=50)


@pytest.mark.parametrize(
    "kwargs, fragment",
    [({"k": 0}, "k "), ({"k": 8, "method": "lloyd"}, "lloyd"), ({"k": 8, "sample": 0}, "sample")],
)
def test_bad_training_parameters(descriptors, kwargs, fragment):
    with pytest.raises(InputError, match=fragment):
        train_vocabulary(descriptors, **kwargs)


def test_quantization_error_matches_brute_force(descriptors):
    centers = descriptors[::97][:40]
    x = descriptors[:700]
    assert quantization_error(x, centers, chunk=128) == pytest.approx(
        _brute_force_error(x, centers), rel=1e-4
    )


def test_save_load_round_trip(tmp_path, descriptors):
    vocabulary = train_vocabulary(descriptors, 12, meta={"note": "round trip"})
    path = tmp_path / "words.npz"
    vocabulary.save(path)
    assert [p.name for p in tmp_path.iterdir()] == ["words.npz"]  # one file, no temp left behind
    loaded = Vocabulary.load(str(path))
    np.testing.assert_array_equal(loaded.centers, vocabulary.centers)
    assert loaded.meta == vocabulary.meta and loaded.k == 12 and loaded.dim == 128


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(InputError, match="missing.npz.*does not exist"):
        Vocabulary.load(tmp_path / "missing.npz")
    text = tmp_path / "notes.npz"
    text.write_text("not a vocabulary")
    with pytest.raises(InputError, match="notes.npz"):
        Vocabulary.load(text)
    other = tmp_path / "other.npz"
    np.savez(other, weights=np.zeros(3))
    with pytest.raises(InputError, match="other.npz.*not a visionlake vocabulary"):
        Vocabulary.load(other)
    with pytest.raises(InputError, match="does not exist"):
        Vocabulary(np.zeros((2, 3))).save(tmp_path / "no" / "such" / "folder.npz")


def _write_features(path, extractor, sets) -> None:
    with TableWriter(path, FEATURE_SCHEMA, extractor.meta()) as writer:
        for start in range(0, len(sets), 3):
            writer.write(feature_table(sets[start : start + 3]))


def test_read_descriptors_of_a_file_and_of_a_part_directory(tmp_path, feature_sets, descriptors):
    extractor, sets = feature_sets
    sets = [*sets[:2], FeatureExtractor("sift").transform([np.full((50, 50), 9, np.uint8)])[0], *sets[2:]]
    single = tmp_path / "features.parquet"
    _write_features(single, extractor, sets)
    stacked, meta = read_descriptors(single)
    assert stacked.dtype == np.float32
    np.testing.assert_array_equal(stacked, descriptors)
    assert meta["algo"] == "sift" and meta["dim"] == 128

    parts = tmp_path / "spark-out"
    parts.mkdir()
    _write_features(parts / "part-00000.parquet", extractor, sets[:4])
    _write_features(parts / "part-00001.parquet", extractor, sets[4:])
    write_sidecar(parts, extractor.meta())
    np.testing.assert_array_equal(read_descriptors(parts)[0], descriptors)


def test_read_descriptors_sample_is_seeded_and_uniform(tmp_path, feature_sets, descriptors):
    extractor, sets = feature_sets
    path = tmp_path / "features.parquet"
    _write_features(path, extractor, sets)
    a, _ = read_descriptors(path, sample=300, seed=5)
    b, _ = read_descriptors(path, sample=300, seed=5)
    c, _ = read_descriptors(path, sample=300, seed=6)
    assert a.shape == (300, 128)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    rows = {row.tobytes() for row in descriptors}
    assert all(row.tobytes() in rows for row in a)
    # drawn from every image, not just the first ones
    first_image = {row.tobytes() for row in sets[0].descriptors.astype(np.float32)}
    assert sum(row.tobytes() in first_image for row in a) < 150


def test_read_descriptors_errors(tmp_path, feature_sets):
    with pytest.raises(InputError, match="nothing.parquet.*does not exist"):
        read_descriptors(tmp_path / "nothing.parquet")
    extractor, sets = feature_sets
    plain = tmp_path / "plain.parquet"
    with TableWriter(plain, FEATURE_SCHEMA, {}) as writer:
        writer.write(feature_table(sets[:2]))
    with pytest.raises(InputError, match="plain.parquet.*not a features dataset"):
        read_descriptors(plain)
