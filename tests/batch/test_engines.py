"""The engine contract, on the local process pool and on a real pyspark session (local[2]).

Datasets are real photographs (the Caltech-style folder of conftest) plus two awkward images: a uniform
blank PNG, which decodes but has no keypoints (kept with an empty matrix), and a truncated JPEG, which
does not decode (listed in report.rejected, never dropped silently). `pack` rejects the truncated
JPEG itself, so it is added to the packed records afterwards, as a dataset damaged after packing or
written by a tool that does not check (seed 002's SequenceFile uploader) would hold it.

Both engines must agree on the same input: identical descriptors, the same bags of words and the same
predictions for the same vocabulary and model, and vocabularies of the same quality (MLlib's k-means||
and the local k-means differ, so their centres are compared by quantisation error).
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from visionlake.batch import records
from visionlake.batch.dataset import open_dataset, pack
from visionlake.batch.features import FeatureExtractor
from visionlake.batch.seqfile import SequenceFileWriter
from visionlake.engines import ENGINES, open_engine
from visionlake.engines.local import LocalEngine
from visionlake.errors import InputError

from .conftest import CLASSES, corrupt_jpeg

pytest.importorskip("pyspark")

from media import sample  # noqa: E402

from visionlake.engines.spark import SparkEngine  # noqa: E402

BROKEN = "fruit/broken.jpg"
BLANK = "building/blank.png"
GOOD_KEYS = sorted(
    [f"{label}/{name}" for label, names in CLASSES.items() for name in names]
    + ["misc/nested/board.jpg", "chessboard.png", BLANK]
)
FORMATS = ("parquet", "sequencefile")
#: Small images and few keypoints keep the suite fast; the contract does not depend on size.
EXTRACTOR = {"size": 160, "max_keypoints": 120}
K = 16
#: MLlib k-means|| vs the local k-means++ on the same 1,264 SIFT descriptors: measured ratios of
#: quantisation error (spark / local) 0.988-1.021 over seeds 0-4 with k=16 and k=32; a Spark
#: vocabulary 10% worse than the local one fails.
QUALITY_TOLERANCE = 1.10


def blank_png() -> bytes:
    ok, buf = cv2.imencode(".png", np.full((96, 128, 3), 200, np.uint8))
    assert ok
    return buf.tobytes()


# --- datasets ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def datasets(caltech_folder, tmp_path_factory) -> dict[str, Path]:
    """{"parquet": path, "sequencefile": path, "folder": path}: the same 13 good images + 1 broken."""
    root = tmp_path_factory.mktemp("engine-datasets")
    folder = root / "images"
    shutil.copytree(caltech_folder, folder)
    (folder / BLANK).write_bytes(blank_png())
    broken = corrupt_jpeg(sample("apple.jpg"))
    (folder / BROKEN).write_bytes(broken)
    packed = pack(folder, root / "packed.parquet")
    assert [r.key for r in packed.rejected] == [BROKEN]  # pack decodes every image
    images = sorted(
        [*open_dataset(packed.out), records.ImageRecord(BROKEN, "fruit", broken)], key=lambda r: r.key
    )
    assert sorted(r.key for r in images if r.key != BROKEN) == GOOD_KEYS

    parquet = root / "images.parquet"
    pa = records.require_pyarrow()
    table = pa.table(
        {
            "key": [r.key for r in images],
            "label": [r.label for r in images],
            "bytes": pa.array([r.data for r in images], pa.binary()),
            "width": pa.array([0] * len(images), pa.int32()),
            "height": pa.array([0] * len(images), pa.int32()),
            "sha256": [hashlib.sha256(r.data).hexdigest() for r in images],
        },
        schema=records.IMAGE_SCHEMA,
    )
    with records.TableWriter(parquet, records.IMAGE_SCHEMA, {"kind": "images"}) as writer:
        writer.write(table)
    seqfile = root / "images.seq"
    with SequenceFileWriter(seqfile) as writer:
        for r in images:
            writer.append(r.key, r.data)
    return {"parquet": parquet, "sequencefile": seqfile, "folder": folder}


# --- engines -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def local_engine():
    engine = LocalEngine(processes=2)
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def spark_engine(spark):
    engine = SparkEngine(master="local[2]")  # joins the session of the `spark` fixture
    yield engine
    engine.close()


@pytest.fixture(params=ENGINES)
def engine(request):
    return request.getfixturevalue(f"{request.param}_engine")


@pytest.fixture(scope="module")
def extract(tmp_path_factory):
    """extract(engine, fmt, algo) -> (report, out path, progress ticks); each run once per module."""
    root = tmp_path_factory.mktemp("engine-features")
    done: dict[tuple[str, str, str], tuple] = {}

    def run(engine, datasets: dict[str, Path], fmt: str, algo: str):
        key = (engine.name, fmt, algo)
        if key not in done:
            ticks: list[int] = []
            out = root / f"{engine.name}-{fmt}-{algo}.parquet"
            report = engine.extract(
                str(datasets[fmt]), str(out), FeatureExtractor(algo=algo, **EXTRACTOR), ticks.append
            )
            done[key] = (report, out, ticks)
        return done[key]

    return run


def read_sets(path: Path) -> dict[str, records.FeatureSet]:
    meta = records.read_meta(path)
    sets = {}
    for table in records.iter_tables(path):
        for s in records.feature_sets(table, int(meta["dim"]), meta["dtype"]):
            assert s.key not in sets
            sets[s.key] = s
    return sets


def read_bow(path: Path) -> dict[str, tuple[str | None, np.ndarray]]:
    dim = int(records.read_meta(path)["dim"])
    out = {}
    for table in records.iter_tables(path):
        keys, labels, matrix = records.bow_from_table(table, dim)
        out.update({k: (lab, row) for k, lab, row in zip(keys, labels, matrix, strict=True)})
    return out


def all_descriptors(path: Path) -> np.ndarray:
    return np.concatenate([s.descriptors for s in read_sets(path).values()]).astype(np.float32)


# --- pack --------------------------------------------------------------------------------------------


def _images(path: Path) -> list[tuple[str, str | None, bytes]]:
    return [(r.key, r.label, r.data) for r in open_dataset(path)]


@pytest.fixture(scope="module")
def pack_folder(datasets, tmp_path_factory) -> Path:
    """The engine folder plus what pack must skip or count: a text file, hidden files, an empty image,
    and a name Spark's own file listing would hide ("_" prefix)."""
    folder = tmp_path_factory.mktemp("pack") / "images"
    shutil.copytree(datasets["folder"], folder)
    (folder / "notes.txt").write_text("not an image")
    (folder / ".cache").mkdir()
    shutil.copy(sample("apple.jpg"), folder / ".cache" / "apple.jpg")
    shutil.copy(sample("apple.jpg"), folder / "fruit" / ".hidden.jpg")
    shutil.copy(sample("blox.jpg"), folder / "misc" / "_underscore.jpg")
    (folder / "building" / "empty.jpg").write_bytes(b"")
    return folder


@pytest.fixture(params=["local", "local-pool", "spark"])
def packer(request, monkeypatch):
    """pack(src, out, fmt) with each engine; "local-pool" makes the local engine decode in its workers
    even for this small folder (it checks small sources in the parent)."""
    if request.param == "local-pool":
        import visionlake.engines.local as local

        monkeypatch.setattr(local, "PACK_BATCH", 2)
    engine = request.getfixturevalue(f"{request.param.split('-')[0]}_engine")
    return engine


@pytest.mark.parametrize("fmt", FORMATS)
def test_engines_pack_a_folder_as_pack_does(packer, pack_folder, tmp_path, fmt):
    expected = pack(pack_folder, tmp_path / f"expected-{fmt}", format=fmt)
    ticks: list[int] = []
    report = packer.pack(str(pack_folder), str(tmp_path / f"out-{fmt}"), format=fmt, progress=ticks.append)

    assert _images(report.out) == _images(expected.out)  # same keys, labels and bytes, in key order
    assert "misc/_underscore.jpg" in [key for key, _, _ in _images(report.out)]
    assert [(r.key, r.reason) for r in report.rejected] == [(r.key, r.reason) for r in expected.rejected]
    assert sorted(r.key for r in report.rejected) == ["building/empty.jpg", BROKEN]
    assert (report.images, report.bytes, report.labels, report.ignored) == (
        expected.images, expected.bytes, expected.labels, expected.ignored,
    )  # fmt: skip
    assert report.ignored == 1 and report.format == fmt and report.seconds > 0
    assert sum(ticks) == len(GOOD_KEYS) + 3  # + _underscore.jpg, empty.jpg and broken.jpg
    if fmt == "parquet":
        assert records.read_meta(report.out) == records.read_meta(expected.out) | {"source": str(pack_folder)}
        columns = records.iter_tables(report.out, columns=["key", "width", "height", "sha256"])
        got = {row["key"]: row for table in columns for row in table.to_pylist()}
        for key, _, data in _images(expected.out):
            image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
            assert (got[key]["width"], got[key]["height"]) == (image.shape[1], image.shape[0])
            assert got[key]["sha256"] == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("fmt", FORMATS)
def test_engines_repack_a_dataset_keeping_the_first_of_a_repeated_key(packer, datasets, tmp_path, fmt):
    """Datasets other tools wrote can hold a key twice: the first is kept, the others listed."""
    source = tmp_path / "repeated.seq"
    images = [(r.key, r.data) for r in open_dataset(datasets["sequencefile"])]
    with SequenceFileWriter(source) as writer:
        for key, data in images:
            writer.append(key, data)
        writer.append("fruit/apple.jpg", sample("blox.jpg").read_bytes())  # a second apple.jpg
    report = packer.pack(str(source), str(tmp_path / f"out-{fmt}"), format=fmt)
    expected = pack(source, tmp_path / f"expected-{fmt}", format=fmt)

    assert _images(report.out) == _images(expected.out)
    assert [key for key, _, _ in _images(report.out)] == [k for k, _ in images if k != BROKEN]
    apple = next(data for key, _, data in _images(report.out) if key == "fruit/apple.jpg")
    assert apple == sample("apple.jpg").read_bytes()
    # (Spark lists rejects by key, the local engine in source order)
    assert sorted((r.key, r.reason) for r in report.rejected) == sorted(
        (r.key, r.reason) for r in expected.rejected
    )
    assert sorted(r.reason.split(":")[0] for r in report.rejected) == [
        "OpenCV cannot decode it (not an image or truncated)",
        "duplicate key",
    ]


def test_engines_refuse_bad_pack_inputs(engine, datasets, tmp_path):
    with pytest.raises(InputError, match="nothing.*does not exist"):
        engine.pack(str(tmp_path / "nothing"), str(tmp_path / "out"))
    with pytest.raises(InputError, match="unknown dataset format 'zip'"):
        engine.pack(str(datasets["folder"]), str(tmp_path / "out"), format="zip")
    (tmp_path / "taken").write_bytes(b"x")
    with pytest.raises(InputError, match="already exists"):
        engine.pack(str(datasets["folder"]), str(tmp_path / "taken"))
    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "a.txt").write_text("no images here")
    with pytest.raises(InputError, match="holds no images"):
        engine.pack(str(tmp_path / "text"), str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


# --- extract -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_extract_keeps_every_image_and_lists_the_broken_one(engine, datasets, extract, fmt):
    report, out, ticks = extract(engine, datasets, fmt, "sift")

    assert [r.key for r in report.rejected] == [BROKEN]
    assert "decod" in report.rejected[0].reason
    sets = read_sets(out)
    assert sorted(sets) == GOOD_KEYS
    assert report.images == len(GOOD_KEYS)
    assert sets[BLANK].n_keypoints == 0 and sets[BLANK].descriptors.shape == (0, 128)
    assert report.empty == sum(1 for s in sets.values() if s.n_keypoints == 0) >= 1
    assert report.descriptors == sum(s.n_keypoints for s in sets.values()) > 1000
    assert report.algo == "sift" and report.seconds > 0 and report.images_per_second > 0
    assert sum(ticks) == len(GOOD_KEYS) + 1  # progress counts the rejected image too

    meta = records.read_meta(out)
    assert (meta["kind"], meta["algo"], meta["dim"], meta["dtype"]) == ("features", "sift", 128, "uint8")
    apple = sets["fruit/apple.jpg"]
    assert apple.label == "fruit" and sets["misc/nested/board.jpg"].label == "misc/nested"
    assert sets["chessboard.png"].label is None
    assert apple.descriptors.dtype == np.uint8 and 0 < apple.n_keypoints <= EXTRACTOR["max_keypoints"]
    assert apple.keypoints.shape == (apple.n_keypoints, 2)
    assert ((apple.keypoints >= 0) & (apple.keypoints <= 1)).all()
    original = cv2.imread(str(sample("apple.jpg")), cv2.IMREAD_GRAYSCALE)
    assert (apple.width, apple.height) == (original.shape[1], original.shape[0])


def test_extract_orb(engine, datasets, extract):
    report, out, _ = extract(engine, datasets, "parquet", "orb")
    sets = read_sets(out)
    assert sorted(sets) == GOOD_KEYS and [r.key for r in report.rejected] == [BROKEN]
    assert records.read_meta(out)["dtype"] == "uint8"
    assert sets["misc/baboon.jpg"].descriptors.dtype == np.uint8
    assert sets["misc/baboon.jpg"].descriptors.shape[1] == 32
    assert sets[BLANK].n_keypoints == 0 and report.empty >= 1


@pytest.mark.parametrize("algo", ["sift", "orb"])
@pytest.mark.parametrize("fmt", FORMATS)
def test_engines_extract_identical_descriptors(local_engine, spark_engine, datasets, extract, fmt, algo):
    local_report, local_out, _ = extract(local_engine, datasets, fmt, algo)
    spark_report, spark_out, _ = extract(spark_engine, datasets, fmt, algo)
    local, spark = read_sets(local_out), read_sets(spark_out)
    assert sorted(local) == sorted(spark) == GOOD_KEYS
    for key in GOOD_KEYS:
        a, b = local[key], spark[key]
        assert (a.label, a.width, a.height) == (b.label, b.width, b.height), key
        if algo == "orb":
            assert np.array_equal(a.descriptors, b.descriptors), key
        else:
            np.testing.assert_allclose(a.descriptors, b.descriptors, rtol=0, atol=1e-5, err_msg=key)
        np.testing.assert_allclose(a.keypoints, b.keypoints, rtol=0, atol=1e-6, err_msg=key)
    assert (local_report.images, local_report.empty, local_report.descriptors) == (
        spark_report.images,
        spark_report.empty,
        spark_report.descriptors,
    )
    assert local_report.rejected == spark_report.rejected
    assert records.read_meta(local_out) == records.read_meta(spark_out)


def test_one_local_process_runs_in_this_process_with_the_same_output(
    local_engine, datasets, extract, tmp_path
):
    """processes=1 runs the tasks here (no spawned worker); the features are those of a pool of 2."""
    import os

    pooled_report, pooled_out, _ = extract(local_engine, datasets, "parquet", "sift")
    out = tmp_path / "one.parquet"
    pids: list[int] = []
    with LocalEngine(processes=1) as one:
        report = one.extract(str(datasets["parquet"]), str(out), FeatureExtractor(algo="sift", **EXTRACTOR))
        pids.append(one._get_pool().submit(os.getpid).result())
    assert pids == [os.getpid()]
    assert (report.images, report.empty, report.descriptors) == (
        pooled_report.images,
        pooled_report.empty,
        pooled_report.descriptors,
    )
    one_sets, pooled_sets = read_sets(out), read_sets(pooled_out)
    assert sorted(one_sets) == sorted(pooled_sets) == GOOD_KEYS
    for key in GOOD_KEYS:
        np.testing.assert_array_equal(one_sets[key].descriptors, pooled_sets[key].descriptors, err_msg=key)


def test_spark_output_is_a_directory_with_a_sidecar(spark_engine, datasets, extract):
    _, out, _ = extract(spark_engine, datasets, "parquet", "sift")
    assert out.is_dir() and (out / records.SIDECAR).is_file()
    schema = records.require_pyarrow().parquet.read_schema(records.parquet_files(out)[0])
    pa = records.require_pyarrow()
    for name in ("width", "height", "n_keypoints"):
        assert schema.field(name).type == pa.int32()
    for name in ("descriptors", "keypoints"):
        assert schema.field(name).type == pa.binary()


# --- vocabulary --------------------------------------------------------------------------------------


def test_train_vocabulary_shape_meta_and_seed(engine, datasets, extract):
    _, features, _ = extract(engine, datasets, "parquet", "sift")
    vocab = engine.train_vocabulary(str(features), K, seed=3, max_iter=10)
    assert vocab.centers.shape == (K, 128) and vocab.centers.dtype == np.float32
    assert vocab.k == K and vocab.dim == 128
    assert vocab.meta["engine"] == engine.name
    assert (vocab.meta["algo"], vocab.meta["dim"], vocab.meta["dtype"]) == ("sift", 128, "uint8")
    assert np.isfinite(vocab.centers).all()
    again = engine.train_vocabulary(str(features), K, seed=3, max_iter=10)
    assert np.array_equal(vocab.centers, again.centers)


def test_train_vocabulary_on_a_sample(engine, datasets, extract):
    report, features, _ = extract(engine, datasets, "parquet", "sift")
    vocab = engine.train_vocabulary(str(features), 8, sample=400, seed=1, max_iter=20)
    assert vocab.centers.shape == (8, 128)
    n = vocab.meta["n_descriptors"]
    assert 250 <= n <= 550 and n < report.descriptors  # spark samples each row with p = 400 / total


def test_vocabularies_of_both_engines_are_equally_good(local_engine, spark_engine, datasets, extract):
    """Spark's quantisation error is at most QUALITY_TOLERANCE (1.10) times the local engine's.

    Measured on these descriptors: spark / local = 0.988-1.021 (seeds 0-4, k=16 and 32).
    """
    _, features, _ = extract(local_engine, datasets, "parquet", "sift")
    from visionlake.batch.vocabulary import quantization_error

    descriptors = all_descriptors(features)
    local = local_engine.train_vocabulary(str(features), K, seed=0, max_iter=50)
    spark = spark_engine.train_vocabulary(str(features), K, seed=0, max_iter=50)
    local_error = quantization_error(descriptors, local.centers)
    spark_error = quantization_error(descriptors, spark.centers)
    assert spark_error <= QUALITY_TOLERANCE * local_error, (spark_error, local_error)
    assert spark.meta["method"] == "mllib-kmeans||"
    assert spark.meta["n_descriptors"] == len(descriptors)
    assert spark.meta["mean_sq_distance"] == pytest.approx(spark_error, rel=1e-3)


def test_k_larger_than_the_descriptors_is_refused(engine, datasets, extract):
    report, features, _ = extract(engine, datasets, "parquet", "sift")
    k = report.descriptors + 1
    with pytest.raises(InputError) as info:
        engine.train_vocabulary(str(features), k)
    assert str(k) in str(info.value) and str(report.descriptors) in str(info.value)


# --- encode and predict ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fitted_encoder(local_engine, datasets, extract):
    from visionlake.batch.encode import BowEncoder

    _, features, _ = extract(local_engine, datasets, "parquet", "sift")
    vocab = local_engine.train_vocabulary(str(features), K, seed=0, max_iter=50)
    return BowEncoder(vocabulary=vocab).fit([])


@pytest.fixture(scope="module")
def encoded(local_engine, spark_engine, datasets, extract, fitted_encoder, tmp_path_factory):
    """Each engine encodes the *other* engine's features (so each reads the other's files)."""
    root = tmp_path_factory.mktemp("engine-bow")
    _, local_features, _ = extract(local_engine, datasets, "parquet", "sift")
    _, spark_features, _ = extract(spark_engine, datasets, "parquet", "sift")
    out, reports = {}, {}
    for engine, features in ((local_engine, spark_features), (spark_engine, local_features)):
        ticks: list[int] = []
        path = root / f"{engine.name}-bow.parquet"
        reports[engine.name] = (engine.encode(str(features), fitted_encoder, str(path), ticks.append), ticks)
        out[engine.name] = path
    return out, reports


def test_engines_encode_the_same_bags_of_words(encoded, fitted_encoder):
    paths, reports = encoded
    local, spark = read_bow(paths["local"]), read_bow(paths["spark"])
    assert sorted(local) == sorted(spark) == GOOD_KEYS
    for key in GOOD_KEYS:
        assert local[key][0] == spark[key][0]
        np.testing.assert_allclose(local[key][1], spark[key][1], rtol=1e-5, atol=1e-6, err_msg=key)
    assert not local[BLANK][1].any()  # no keypoints: an all-zero vector, but the row is there
    for name, (report, ticks) in reports.items():
        assert (report.images, report.dim) == (len(GOOD_KEYS), fitted_encoder.n_features_out_), name
        assert report.descriptors > 1000 and sum(ticks) == len(GOOD_KEYS)
    assert reports["local"][0].descriptors == reports["spark"][0].descriptors
    local_meta, spark_meta = records.read_meta(paths["local"]), records.read_meta(paths["spark"])
    assert local_meta["kind"] == "bow" and local_meta["dim"] == fitted_encoder.n_features_out_
    assert local_meta["labels"] == ["building", "fruit", "misc", "misc/nested"]
    assert {k: v for k, v in local_meta.items() if k != "features"} == {
        k: v for k, v in spark_meta.items() if k != "features"
    }


def test_engines_predict_the_same_labels(local_engine, spark_engine, encoded):
    from sklearn.linear_model import LogisticRegression

    paths, _ = encoded
    bows = read_bow(paths["local"])
    labelled = [k for k in GOOD_KEYS if bows[k][0] is not None]
    model = LogisticRegression(max_iter=500).fit(
        np.stack([bows[k][1] for k in labelled]), [bows[k][0] for k in labelled]
    )
    results = {}
    for engine in (local_engine, spark_engine):
        keys, labels, predicted = engine.predict(model, str(paths[engine.name]))
        assert sorted(keys) == GOOD_KEYS
        assert all(isinstance(p, str) for p in predicted)
        results[engine.name] = {k: (lab, p) for k, lab, p in zip(keys, labels, predicted, strict=True)}
    assert results["local"] == results["spark"]
    assert results["local"]["fruit/apple.jpg"][0] == "fruit"


def test_engines_agree_on_vlad_and_fisher_vectors_with_a_hog(local_engine, spark_engine, datasets, tmp_path):
    """Features with a global HOG from each engine, a Spark vocabulary with a GMM, VLAD and Fisher
    vectors encoded by each engine from the other engine's features: the same vectors."""
    from visionlake.batch.pipeline import encode_features, train_vocabulary_file

    features = {}
    for engine in (local_engine, spark_engine):
        extractor = FeatureExtractor(algo="sift", hog=True, hog_size=32, **EXTRACTOR)
        features[engine.name] = str(tmp_path / f"{engine.name}-features.parquet")
        engine.extract(str(datasets["parquet"]), features[engine.name], extractor)
    local_sets, spark_sets = read_sets(Path(features["local"])), read_sets(Path(features["spark"]))
    assert sorted(local_sets) == sorted(spark_sets) == GOOD_KEYS
    for key in GOOD_KEYS:
        assert local_sets[key].image_descriptor.shape == (324,)
        np.testing.assert_array_equal(local_sets[key].image_descriptor, spark_sets[key].image_descriptor)
    vocab = str(tmp_path / "vocab.npz")
    trained = train_vocabulary_file(features["spark"], vocab, K, spark_engine, gmm=True, pca_dim=16)
    assert trained.meta["gmm"]["reduced_dim"] == 16 and "fisher_means" in trained.arrays
    for encoding, dim in (("vlad", K * 128 + 324), ("fisher", 2 * K * 16 + 324)):
        out = {}
        for engine, source in ((local_engine, "spark"), (spark_engine, "local")):
            out[engine.name] = tmp_path / f"{engine.name}-{encoding}.parquet"
            encode_features(features[source], vocab, str(out[engine.name]), engine, {}, encoding=encoding)
        local, spark = read_bow(out["local"]), read_bow(out["spark"])
        assert sorted(local) == sorted(spark) == GOOD_KEYS
        for key in GOOD_KEYS:
            np.testing.assert_allclose(local[key][1], spark[key][1], rtol=1e-5, atol=1e-6, err_msg=key)
        metas = [records.read_meta(path) for path in out.values()]
        assert [(m["encoding"], m["dim"]) for m in metas] == [(encoding, dim)] * 2
        assert metas[0]["digest"] == metas[1]["digest"]


# --- bad input ---------------------------------------------------------------------------------------


def test_missing_inputs_are_named(engine, tmp_path, fitted_encoder):
    missing = str(tmp_path / "no-such-dataset.parquet")
    with pytest.raises(InputError, match="no-such-dataset.parquet"):
        engine.extract(missing, str(tmp_path / "f.parquet"), FeatureExtractor())
    with pytest.raises(InputError, match="no-such-dataset.parquet"):
        engine.train_vocabulary(missing, 4)
    with pytest.raises(InputError, match="no-such-dataset.parquet"):
        engine.encode(missing, fitted_encoder, str(tmp_path / "b.parquet"))
    with pytest.raises(InputError, match="no-such-dataset.parquet"):
        engine.predict(object(), missing)


def test_wrong_kind_of_dataset_is_refused(engine, datasets, tmp_path):
    # an image dataset where features are expected: names the missing columns
    with pytest.raises(InputError, match="features.*n_keypoints"):
        engine.train_vocabulary(str(datasets["parquet"]), 4)
    # a plain folder of images where a packed dataset is expected
    with pytest.raises(InputError, match="pack"):
        engine.extract(str(datasets["folder"]), str(tmp_path / "f.parquet"), FeatureExtractor())


def test_open_engine(spark):
    with pytest.raises(InputError) as info:
        open_engine("flink")
    assert "flink" in str(info.value) and all(name in str(info.value) for name in ENGINES)
    with pytest.raises(InputError, match="spark"):
        open_engine("local", master="local[2]")
    with open_engine("local", processes=2) as engine:
        assert isinstance(engine, LocalEngine) and engine.processes == 2
    engine = open_engine("spark", master="local[2]")
    assert isinstance(engine, SparkEngine) and engine.name == "spark"
    assert engine.spark is spark  # joins the running session; close() leaves it running
    engine.close()
    assert spark.sparkContext._jsc is not None


def test_default_processes_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("VISIONLAKE_PROCESSES", "3")
    assert LocalEngine().processes == 3 and LocalEngine(processes=2).processes == 2  # the option wins
    monkeypatch.setenv("VISIONLAKE_PROCESSES", "many")
    with pytest.raises(InputError, match="VISIONLAKE_PROCESSES='many'"):
        LocalEngine()
    monkeypatch.delenv("VISIONLAKE_PROCESSES")
    assert LocalEngine().processes >= 1
