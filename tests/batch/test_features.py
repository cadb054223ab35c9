"""FeatureExtractor on real images: layouts, keypoints, resizing, empty and broken images, pickling."""

from __future__ import annotations

import pickle

import cv2
import numpy as np
import pytest
from media import jpeg, sample
from sklearn.base import clone

from visionlake.batch.features import ALGORITHMS, FeatureExtractor
from visionlake.batch.records import ImageRecord
from visionlake.errors import FrameError, InputError

from .conftest import corrupt_jpeg

LAYOUT = {
    "sift": (128, np.uint8),
    "dense-sift": (128, np.uint8),
    "orb": (32, np.uint8),
    "akaze": (61, np.uint8),
    "hog": (0, np.float32),  # no local descriptors: the global HOG is the image descriptor
}


@pytest.fixture(scope="module")
def records(caltech_folder) -> list[ImageRecord]:
    """Every image of the Caltech-style folder as an ImageRecord labelled by its sub-folder."""
    paths = sorted(p for p in caltech_folder.rglob("*") if p.is_file())
    return [
        ImageRecord(str(p.relative_to(caltech_folder)), p.parent.name, p.read_bytes())
        for p in paths
        if p.parent != caltech_folder
    ]


def _blank(value: int = 128, shape: tuple[int, int] = (200, 240)) -> np.ndarray:
    return np.full(shape, value, np.uint8)


@pytest.mark.parametrize("algo", [a for a in ALGORITHMS if a != "hog"])  # hog: tests/batch/test_encodings.py
def test_each_algorithm_gives_its_layout_and_normalised_keypoints(records, algo):
    extractor = FeatureExtractor(algo=algo, size=320).fit()
    dim, dtype = LAYOUT[algo]
    assert (extractor.descriptor_dim_, extractor.descriptor_dtype_) == (dim, np.dtype(dtype).name)
    sets, rejected = extractor.extract_records(records)
    assert rejected == []
    assert [s.key for s in sets] == [r.key for r in records]
    assert sum(s.n_keypoints for s in sets) > 100
    for s, record in zip(sets, records, strict=True):
        assert s.label == record.label
        assert s.descriptors.dtype == dtype and s.descriptors.shape == (s.n_keypoints, dim)
        assert s.keypoints.dtype == np.float32 and s.keypoints.shape == (s.n_keypoints, 2)
        assert s.keypoints.min(initial=0) >= 0 and s.keypoints.max(initial=1) <= 1
        original = cv2.imdecode(np.frombuffer(record.data, np.uint8), cv2.IMREAD_GRAYSCALE)
        assert (s.height, s.width) == original.shape  # the original size, not the resized one
    meta = extractor.meta()
    assert meta["kind"] == "features" and meta["algo"] == algo
    assert (meta["dim"], meta["dtype"]) == (dim, np.dtype(dtype).name)


def test_keypoints_are_fractions_of_the_image_whatever_the_resize():
    grey = cv2.imread(str(sample("messi5.jpg")), cv2.IMREAD_GRAYSCALE)
    native = FeatureExtractor("sift").transform([grey])[0]
    half = FeatureExtractor("sift", size=max(grey.shape) // 2).transform([grey])[0]
    # the strongest keypoint of the half-size image lies where a native keypoint lies
    nearest = np.abs(native.keypoints[:, None, :] - half.keypoints[None, :20, :]).sum(-1).min(0)
    assert np.median(nearest) < 0.01


def test_dense_sift_grid_count_and_positions():
    grey = cv2.imread(str(sample("messi5.jpg")), cv2.IMREAD_GRAYSCALE)[:60, :100]
    extractor = FeatureExtractor("dense-sift", dense_step=10, dense_sizes=(16, 32))
    s = extractor.transform([grey])[0]
    xs, ys = np.arange(5, 100, 10), np.arange(5, 60, 10)
    assert s.n_keypoints == len(xs) * len(ys) * 2 == 120
    expected = {(round(x / 100, 4), round(y / 60, 4)) for x in xs for y in ys}
    assert {(round(float(x), 4), round(float(y), 4)) for x, y in s.keypoints} == expected


def test_size_resizes_the_longer_side_up_and_down(lfw_images):
    face = lfw_images[0][0]  # 25 x 25
    small = FeatureExtractor("dense-sift", dense_step=8).transform([face])[0]
    up = FeatureExtractor("dense-sift", dense_step=8, size=64).transform([face])[0]
    assert small.n_keypoints == len(np.arange(4, 25, 8)) ** 2 == 9
    assert up.n_keypoints == len(np.arange(4, 64, 8)) ** 2 == 64
    assert (up.width, up.height) == (25, 25)
    messi = cv2.imread(str(sample("messi5.jpg")))  # 548 x 342
    down = FeatureExtractor("dense-sift", dense_step=10, size=200).transform([messi])[0]
    assert down.n_keypoints == len(np.arange(5, 200, 10)) * len(np.arange(5, round(342 * 200 / 548), 10))
    assert (down.width, down.height) == (548, 342)


@pytest.mark.parametrize("algo", ["sift", "orb", "akaze"])
def test_max_keypoints_keeps_the_strongest(algo):
    grey = cv2.imread(str(sample("baboon.jpg")), cv2.IMREAD_GRAYSCALE)
    every = FeatureExtractor(algo).transform([grey])[0]
    capped = FeatureExtractor(algo, max_keypoints=40).transform([grey])[0]
    assert every.n_keypoints > 40
    assert capped.n_keypoints == 40
    # the kept descriptors are among the full extraction's
    full_rows = {row.tobytes() for row in every.descriptors}
    assert sum(row.tobytes() in full_rows for row in capped.descriptors) >= 36


@pytest.mark.parametrize("algo", ALGORITHMS)
def test_blank_image_is_kept_with_no_keypoints_or_a_grid(algo):
    extractor = FeatureExtractor(algo)
    sets, rejected = extractor.extract_records([ImageRecord("blank.jpg", "x", jpeg(_blank()))])
    assert rejected == [] and len(sets) == 1
    dim, dtype = LAYOUT[algo]
    s = sets[0]
    assert s.descriptors.dtype == dtype and s.descriptors.shape[1] == dim
    if algo == "dense-sift":
        assert s.n_keypoints == len(np.arange(4, 240, 8)) * len(np.arange(4, 200, 8))
    else:
        assert s.n_keypoints == 0 and s.keypoints.shape == (0, 2)


@pytest.mark.parametrize("algo", ALGORITHMS)
def test_tiny_images_give_empty_features_not_crashes(algo):
    # OpenCV 4.x ORB/AKAZE abort or corrupt memory on 1-2 px thin images; they are skipped instead
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, shape, dtype=np.uint8) for shape in [(1, 1), (1, 40), (2, 8), (8, 2)]]
    sets = FeatureExtractor(algo, dense_step=16).transform(images)
    assert len(sets) == 4


def test_undecodable_bytes(records):
    bad = ImageRecord("fruit/broken.jpg", "fruit", corrupt_jpeg(sample("apple.jpg")))
    extractor = FeatureExtractor("orb")
    with pytest.raises(FrameError, match="broken.jpg"):
        extractor.extract_record(bad)
    sets, rejected = extractor.extract_records([records[0], bad, records[1]])
    assert [s.key for s in sets] == [records[0].key, records[1].key]
    assert len(rejected) == 1 and rejected[0].key == "fruit/broken.jpg"
    assert "not a decodable image" in rejected[0].reason
    with pytest.raises(InputError, match="image 1 of the input"):
        extractor.transform([records[0].data, bad.data])
    with pytest.raises(InputError, match="broken.jpg"):
        extractor.transform([bad])
    with pytest.raises(InputError, match="uint8"):
        extractor.transform([np.zeros((30, 30), np.float64)])


def test_input_kinds_agree():
    bgr = cv2.imread(str(sample("butterfly.jpg")))
    grey = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    extractor = FeatureExtractor("sift", max_keypoints=100)
    from_bgr, from_grey, from_bytes = extractor.transform([bgr, grey, jpeg(bgr, quality=98)])
    np.testing.assert_array_equal(from_bgr.descriptors, from_grey.descriptors)
    assert from_bytes.key == "2" and from_bytes.n_keypoints == 100


@pytest.mark.parametrize("algo", ["sift", "dense-sift"])
def test_sift_stored_as_bytes_is_exactly_what_opencv_computes(algo):
    """OpenCV rounds SIFT values to bytes inside and returns them as float32: uint8 storage loses nothing."""
    grey = cv2.imread(str(sample("building.jpg")), cv2.IMREAD_GRAYSCALE)
    extractor = FeatureExtractor(algo).fit()
    s = extractor.transform([grey])[0]
    _, raw = extractor._detect(grey)  # what OpenCV handed back, before storage
    assert raw.dtype == np.float32 and s.descriptors.dtype == np.uint8 and s.n_keypoints > 100
    assert raw.min() >= 0 and raw.max() <= 255 and np.array_equal(raw, np.rint(raw))
    np.testing.assert_array_equal(s.descriptors.astype(np.float32), raw)


def test_root_sift_rows_have_unit_l2_norm():
    grey = cv2.imread(str(sample("building.jpg")), cv2.IMREAD_GRAYSCALE)
    s = FeatureExtractor("sift", root=True, max_keypoints=200).transform([grey])[0]
    assert s.descriptors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(s.descriptors, axis=1), 1.0, rtol=1e-4)


def test_unknown_algorithm_names_it_and_suggests():
    with pytest.raises(InputError) as info:
        FeatureExtractor("sfit").fit()
    message = str(info.value)
    assert "'sfit'" in message and "did you mean 'sift'" in message
    assert all(algo in message for algo in ALGORITHMS)
    with pytest.raises(InputError, match="unknown feature algorithm 'surf'"):
        FeatureExtractor("surf").transform([_blank()])  # fits on first use: same check


@pytest.mark.parametrize(
    "params, fragment",
    [
        ({"max_keypoints": -1}, "max_keypoints"),
        ({"size": "64"}, "size"),
        ({"algo": "orb", "root": True}, "RootSIFT"),
        ({"algo": "dense-sift", "dense_step": 0}, "dense_step"),
        ({"algo": "dense-sift", "dense_sizes": ()}, "dense_sizes"),
        ({"algo": "dense-sift", "max_keypoints": 10}, "dense-sift"),
    ],
)
def test_bad_parameters_are_input_errors(params, fragment):
    with pytest.raises(InputError, match=fragment):
        FeatureExtractor(**params).fit()


@pytest.mark.parametrize("algo", ["sift", "dense-sift", "akaze"])
def test_clone_and_pickle_give_identical_outputs(records, algo):
    extractor = FeatureExtractor(algo, size=200, dense_sizes=(12, 24), root=algo != "akaze")
    before = extractor.transform(records[:3])  # the OpenCV detector now exists
    for copy in (pickle.loads(pickle.dumps(extractor)), clone(extractor)):
        assert copy.get_params() == extractor.get_params()
        after = copy.transform(records[:3])
        for a, b in zip(before, after, strict=True):
            np.testing.assert_array_equal(a.descriptors, b.descriptors)
            np.testing.assert_array_equal(a.keypoints, b.keypoints)
