"""The bag-of-visual-words chain as users run it: `visionlake` subprocesses on real images.

Face / non-face from scikit-image's lfw_subset (100 + 100 real 25x25 crops), split half for training
and half for testing by index parity, so both splits hold both classes.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from visionlake.batch.classify import evaluate, make_classifier, write_confusion_csv, write_confusion_png
from visionlake.detectors import load_detector
from visionlake.errors import InputError
from visionlake.ingest.publish import ingest
from visionlake.ingest.sources import ImageFolderSource
from visionlake.workers.worker import Worker

# dense SIFT on 25x25 crops upscaled to 48 px; small k keeps the suite fast
CHAIN = ["--algo", "dense-sift", "--size", "48", "--step", "6"]


def vl(*args: object, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VISIONLAKE_")}
    env["COLUMNS"] = "1000"
    env["VISIONLAKE_PROCESSES"] = "1"  # batch steps in the command's process: no pool to spawn per command
    cmd = [sys.executable, "-m", "visionlake", *map(str, args)]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def ok(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def failed(proc: subprocess.CompletedProcess, code: int = 2) -> str:
    assert proc.returncode == code, f"exit {proc.returncode}, wanted {code}\n{proc.stdout}\n{proc.stderr}"
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert lines, proc.stderr
    return lines[0]


@pytest.fixture(scope="module")
def lfw_folders(tmp_path_factory, lfw_images) -> dict[str, Path]:
    images, labels = lfw_images
    root = tmp_path_factory.mktemp("lfw")
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        split = "train" if i % 2 == 0 else "test"
        folder = root / split / label
        folder.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(folder / f"{i:03d}.png"), image)
    return {"train": root / "train", "test": root / "test", "root": root}


@pytest.fixture(scope="module")
def chain(lfw_folders, tmp_path_factory) -> dict[str, Path]:
    """The chain run step by step through the CLI; every artefact path."""
    w = tmp_path_factory.mktemp("chain")
    p = {name: w / name for name in ("train.parquet", "test.seq", "train-f.parquet", "test-f.parquet")}
    p.update(
        {"vocab": w / "vocab.npz", "train-bow": w / "train-bow.parquet", "test-bow": w / "test-bow.parquet"}
    )
    p["model"] = w / "model.joblib"
    ok(vl("dataset", "pack", lfw_folders["train"], p["train.parquet"], cwd=w))
    ok(vl("dataset", "pack", lfw_folders["test"], p["test.seq"], cwd=w))
    ok(vl("features", "extract", p["train.parquet"], p["train-f.parquet"], *CHAIN, cwd=w))
    ok(vl("features", "extract", p["test.seq"], p["test-f.parquet"], *CHAIN, cwd=w))
    ok(vl("vocab", "train", p["train-f.parquet"], p["vocab"], "-k", "64", "--seed", "1", cwd=w))
    for split in ("train", "test"):
        ok(
            vl(
                "encode", p[f"{split}-f.parquet"], p["vocab"], p[f"{split}-bow"],
                "--norm", "power", "--pyramid", "1,2", cwd=w,
            )
        )  # fmt: skip
    ok(vl("classify", "train", p["train-bow"], p["model"], "--classifier", "logreg", cwd=w))
    p["workdir"] = w
    return p


def test_step_by_step_chain_separates_faces_from_non_faces(chain):
    w = chain["workdir"]
    out = json.loads(
        ok(
            vl(
                "classify",
                "eval",
                chain["model"],
                chain["test-bow"],
                "--confusion",
                w / "cm",
                "--format",
                "json",
                cwd=w,
            )
        )
    )
    assert out["images"] == 100
    assert out["accuracy"] >= 0.85, out
    with open(w / "cm.csv", newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["true \\ predicted", "face", "non-face"]
    assert sum(int(v) for row in rows[1:] for v in row[1:]) == 100
    png = cv2.imread(str(w / "cm.png"))
    assert png is not None and png.shape[0] > 50 and png.shape[1] > 50


def test_predict_labels_image_files_and_reports_bad_ones(chain, lfw_folders, tmp_path):
    faces = sorted((lfw_folders["test"] / "face").glob("*.png"))[:5]
    others = sorted((lfw_folders["test"] / "non-face").glob("*.png"))[:5]
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff not really a jpeg")
    proc = vl("classify", "predict", chain["model"], *faces, *others, bad, "--format", "json", cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr  # one input could not be read
    rows = {Path(r["image"]).name: r for r in json.loads(proc.stdout)}
    assert "cannot decode" in rows["broken.jpg"]["error"]
    right = sum(rows[f.name]["label"] == "face" for f in faces) + sum(
        rows[f.name]["label"] == "non-face" for f in others
    )
    assert right >= 8, rows


def test_bovw_run_reports_accuracy_as_json(lfw_folders, tmp_path):
    ok(vl("dataset", "pack", lfw_folders["train"], tmp_path / "train.parquet", cwd=tmp_path))
    ok(vl("dataset", "pack", lfw_folders["test"], tmp_path / "test.parquet", cwd=tmp_path))
    out = ok(
        vl(
            "bovw", "run", tmp_path / "train.parquet", tmp_path / "test.parquet", "--workdir", tmp_path / "w",
            *CHAIN, "-k", "64", "--format", "json", cwd=tmp_path,
        )
    )  # fmt: skip
    report = json.loads(out)
    assert report["accuracy"] >= 0.85, report
    assert report["evaluation"]["images"] == 100
    assert set(report["steps_seconds"]) == {"extract", "vocabulary", "encode", "train", "evaluate"}
    assert Path(report["model"]).is_file()
    assert not list(tmp_path.glob("bovw-*")), "a --workdir run must not create a default folder"


def test_model_is_a_detector_plugin_that_labels_stream_frames(chain, lfw_folders, lake):
    """Seed 000's bird-feeder setup: frames on the log, a worker labels each with the trained model."""
    detector = load_detector("bovw-classifier", {"model": str(chain["model"])})
    assert "@" in detector.model_version
    stats = ingest(lake, ImageFolderSource(lfw_folders["test"]), "feeder")
    assert stats.frames == 100
    Worker(lake, detector, until_idle=True, idle_timeout=1.0).run()
    truth = {frame.seq: frame.source for frame in ImageFolderSource(lfw_folders["test"])}
    rows = lake.catalog.query(
        "SELECT f.seq, d.label FROM detections d JOIN frames f ON f.frame_id = d.frame_id"
    ).rows
    assert len(rows) == 100
    right = sum(1 for seq, label in rows if f"/{label}/" in f"/{truth[seq]}")
    assert right >= 85, rows[:5]


def test_detector_plugin_needs_an_existing_model(tmp_path):
    with pytest.raises(InputError, match="model"):
        load_detector("bovw-classifier", {})
    with pytest.raises(InputError, match="existing model file"):
        load_detector("bovw-classifier", {"model": str(tmp_path / "nope.joblib")})


def test_bad_inputs_name_the_problem(chain, lfw_folders, tmp_path):
    w = chain["workdir"]
    missing = failed(
        vl("features", "extract", tmp_path / "nope.parquet", tmp_path / "f.parquet", cwd=tmp_path)
    )
    assert "nope.parquet" in missing and "does not exist" in missing
    algo = failed(
        vl("features", "extract", chain["train.parquet"], tmp_path / "f.parquet", "--algo", "sfit", cwd=w)
    )
    assert "sfit" in algo and "sift" in algo
    big_k = failed(vl("vocab", "train", chain["test-f.parquet"], tmp_path / "v.npz", "-k", "10000000", cwd=w))
    assert "10000000" in big_k
    ok(
        vl(
            "features",
            "extract",
            chain["train.parquet"],
            tmp_path / "orb.parquet",
            "--algo",
            "orb",
            "--size",
            "96",
            cwd=w,
        )
    )
    wrong_dim = failed(vl("encode", tmp_path / "orb.parquet", chain["vocab"], tmp_path / "b.parquet", cwd=w))
    assert "dimension 128" in wrong_dim and "dimension 32" in wrong_dim
    # a BoW set encoded differently from what the model was trained on
    ok(vl("encode", chain["test-f.parquet"], chain["vocab"], tmp_path / "l1.parquet", "--norm", "l1", cwd=w))
    mismatch = failed(vl("classify", "eval", chain["model"], tmp_path / "l1.parquet", cwd=w))
    assert "different vocabulary or encoder settings" in mismatch
    clf = failed(
        vl("classify", "train", chain["train-bow"], tmp_path / "m.joblib", "--classifier", "svn", cwd=w)
    )
    assert "svn" in clf and "linear-svm" in clf
    exists = failed(vl("classify", "train", chain["train-bow"], chain["model"], cwd=w))
    assert "already exists" in exists and "--overwrite" in exists
    not_model = failed(vl("classify", "eval", chain["vocab"], chain["test-bow"], cwd=w))
    assert "vocab.npz" in not_model and "not a visionlake model" in not_model
    spark_only = failed(
        vl("vocab", "train", chain["train-f.parquet"], tmp_path / "v.npz", "--master", "local[2]", cwd=w)
    )
    assert "--engine spark" in spark_only


def test_evaluate_counts_and_files(tmp_path):
    true = ["cat", "cat", "dog", "dog", "dog", "bird"]
    pred = ["cat", "dog", "dog", "dog", "cat", "bird"]
    ev = evaluate(true, pred, ["bird", "cat", "dog"])
    assert ev.accuracy == pytest.approx(4 / 6)
    assert ev.confusion.tolist() == [[1, 0, 0], [0, 1, 1], [0, 1, 2]]
    per = {p["class"]: p for p in ev.per_class}
    assert per["dog"]["precision"] == pytest.approx(2 / 3, abs=1e-4)
    assert per["dog"]["recall"] == pytest.approx(2 / 3, abs=1e-4)
    assert per["cat"]["support"] == 2
    write_confusion_csv(ev, tmp_path / "cm.csv")
    write_confusion_png(ev, tmp_path / "cm.png")
    assert (tmp_path / "cm.csv").read_text().splitlines()[2] == "cat,0,1,1"
    assert cv2.imread(str(tmp_path / "cm.png")) is not None
    with pytest.raises(InputError, match="no label"):
        evaluate(["cat", None], ["cat", "dog"])
    with pytest.raises(InputError, match="unknown classifier"):
        make_classifier("forest")
    assert np.isfinite(ev.accuracy)


def test_bovw_run_and_the_python_api_share_their_defaults():
    """`visionlake bovw run` and `BovwConfig()` both default to the measured Fashion-MNIST configuration."""
    import inspect

    from visionlake.batch.pipeline import BovwConfig
    from visionlake.cli_batch import _encoder_params, bovw_run, parse_pyramid

    cli = {name: p.default for name, p in inspect.signature(bovw_run).parameters.items()}
    config = BovwConfig()
    assert (cli["algo"], cli["size"], cli["max_keypoints"]) == (
        config.algo,
        config.size,
        config.max_keypoints,
    )
    assert {"dense_step": cli["step"], "root": cli["root"]} == config.extractor
    assert (cli["k"], cli["sample"], cli["seed"]) == (config.k, config.sample, config.seed)
    assert (cli["classifier"], cli["c"]) == (config.classifier, config.c)
    assert (cli["encoding"], cli["pca"]) == (config.encoding, config.pca_dim) == ("bow", 64)
    # encoder options the CLI is not given fall back to the config's per-encoding defaults
    given = {key: cli[key] for key in ("pooling", "assign", "norm", "pyramid")}
    assert _encoder_params(cli["encoding"], **given) == {} and config.encoder is None
    assert config.vocabulary_size() == 512
    assert config.encoder_params() == {"pooling": "sum", "assign": "soft", "norm": "power", "pyramid": (1, 2)}
    assert _encoder_params("bow", "max", None, None, "1,2") == {
        "pooling": "max",
        "pyramid": parse_pyramid("1,2"),
    }


def test_dataset_pack_on_spark_through_the_cli(lfw_folders, tmp_path):
    """`dataset pack --engine spark` writes part files that the local engine's next step reads."""
    pytest.importorskip("pyspark")
    packed = tmp_path / "train-spark"
    out = ok(
        vl(
            "dataset", "pack", lfw_folders["train"], packed, "--engine", "spark", "--master", "local[2]",
            "--format", "json", cwd=tmp_path,
        )
    )  # fmt: skip
    (summary,) = json.loads(out)
    assert (summary["engine"], summary["images"], summary["rejected"]) == ("spark", 100, 0)
    assert packed.is_dir() and list(packed.glob("part-*"))
    ok(vl("features", "extract", packed, tmp_path / "f.parquet", *CHAIN, "--format", "json", cwd=tmp_path))
    assert "--master" in failed(
        vl("dataset", "pack", lfw_folders["train"], tmp_path / "x", "--master", "local", cwd=tmp_path)
    )


# --- VLAD, Fisher vectors and HOG through the CLI ------------------------------------------------------

HOG = ["--hog", "--hog-size", "24", "--hog-cell", "6"]  # 3 x 3 blocks x 36 = 324 values per image


@pytest.fixture(scope="module")
def hog_features(chain) -> dict[str, Path]:
    """Dense SIFT + a global HOG, and HOG alone, of the chain's train and test datasets."""
    w = chain["workdir"]
    p = {}
    for split, src in (("train", chain["train.parquet"]), ("test", chain["test.seq"])):
        p[f"{split}-sh"] = w / f"{split}-sift-hog.parquet"
        ok(vl("features", "extract", src, p[f"{split}-sh"], *CHAIN, *HOG, cwd=w))
        p[f"{split}-hog"] = w / f"{split}-hog.parquet"
        ok(vl("features", "extract", src, p[f"{split}-hog"], "--algo", "hog", "--hog-size", "24", "--hog-cell", "6", cwd=w))  # fmt: skip
    return p


def _dim(path: Path) -> int:
    from visionlake.batch.records import read_meta

    return int(read_meta(path)["dim"])


@pytest.mark.parametrize("encoding", ["vlad", "fisher"])
def test_encodings_end_to_end_with_a_hog_appended(chain, hog_features, lfw_folders, encoding):
    w = chain["workdir"]
    vocab = w / f"vocab-{encoding}.npz"
    gmm = ["--gmm", "--pca", "32"] if encoding == "fisher" else []
    summary = json.loads(ok(vl("vocab", "train", hog_features["train-sh"], vocab, "-k", "16", *gmm, "--format", "json", cwd=w)))  # fmt: skip
    assert summary[0]["gmm"] == ("16 x 32 (diagonal)" if encoding == "fisher" else "no")
    bows = {}
    for split in ("train", "test"):
        bows[split] = w / f"{split}-{encoding}.parquet"
        out = ok(vl("encode", hog_features[f"{split}-sh"], vocab, bows[split], "--encoding", encoding, "--format", "json", cwd=w))  # fmt: skip
        assert json.loads(out)[0]["encoding"] == encoding
    expected = (16 * 128 if encoding == "vlad" else 2 * 16 * 32) + 324
    assert _dim(bows["train"]) == _dim(bows["test"]) == expected
    model = w / f"model-{encoding}.joblib"
    ok(vl("classify", "train", bows["train"], model, cwd=w))
    evaluation = json.loads(ok(vl("classify", "eval", model, bows["test"], "--format", "json", cwd=w)))
    assert evaluation["images"] == 100 and evaluation["accuracy"] >= 0.85, evaluation
    # the saved model rebuilds this encoder on raw images: files, and frames of a stream
    faces = sorted((lfw_folders["test"] / "face").glob("*.png"))[:5]
    rows = json.loads(ok(vl("classify", "predict", model, *faces, "--format", "json", cwd=w)))
    assert sum(r["label"] == "face" for r in rows) >= 4, rows
    detector = load_detector("bovw-classifier", {"model": str(model)})
    image = cv2.imread(str(faces[0]))
    assert detector.detect(image).label[0] in ("face", "non-face")
    # a test set encoded with another encoding (or without the HOG) is refused by the model
    other = w / f"test-{encoding}-bow.parquet"
    ok(vl("encode", chain["test-f.parquet"], chain["vocab"], other, cwd=w))
    assert "different vocabulary or encoder settings" in failed(vl("classify", "eval", model, other, cwd=w))


def test_hog_alone_with_encoding_none(chain, hog_features):
    w = chain["workdir"]
    bows = {split: w / f"{split}-hog-vectors.parquet" for split in ("train", "test")}
    for split, out in bows.items():
        ok(vl("encode", hog_features[f"{split}-hog"], out, "--encoding", "none", cwd=w))
    assert _dim(bows["train"]) == 324
    model = w / "model-hog.joblib"
    ok(vl("classify", "train", bows["train"], model, cwd=w))
    evaluation = json.loads(ok(vl("classify", "eval", model, bows["test"], "--format", "json", cwd=w)))
    assert evaluation["accuracy"] >= 0.8, evaluation


def test_chain_run_with_each_encoding(chain, tmp_path):
    """`bovw run` and its alias `chain run` with --encoding; the report names the encoding and k."""
    train, test = chain["train.parquet"], chain["test.seq"]
    runs = {
        "vlad": ["bovw", "run", "--encoding", "vlad", "-k", "16"],
        "fisher": ["chain", "run", "--encoding", "fisher", "-k", "8", "--pca", "32", "--pyramid", "1,2"],
        "none": [
            "chain",
            "run",
            "--algo",
            "hog",
            "--encoding",
            "none",
            "--hog-size",
            "24",
            "--hog-cell",
            "6",
        ],
    }
    for encoding, args in runs.items():
        extra = [] if encoding == "none" else CHAIN
        out = ok(vl(*args[:2], train, test, "--workdir", tmp_path / encoding, *args[2:], *extra, "--format", "json", cwd=tmp_path))  # fmt: skip
        report = json.loads(out)
        assert report["config"]["encoding"] == encoding and report["accuracy"] >= 0.8, report
        assert ("vocabulary" in report["steps_seconds"]) == (encoding != "none")
    assert json.loads(out)["config"]["k"] == 0
    assert report["config"]["algo"] == "hog"


def test_bad_encodings_exit_2_with_the_reason(chain, hog_features, tmp_path):
    w = chain["workdir"]
    out = tmp_path / "x.parquet"
    unknown = failed(vl("encode", chain["train-f.parquet"], chain["vocab"], out, "--encoding", "vald", cwd=w))
    assert "unknown --encoding 'vald'" in unknown and "vlad" in unknown
    no_gmm = failed(
        vl("encode", chain["train-f.parquet"], chain["vocab"], out, "--encoding", "fisher", cwd=w)
    )
    assert "no GMM" in no_gmm and "--gmm" in no_gmm
    wrong = failed(vl("encode", chain["train-f.parquet"], chain["vocab"], out, "--encoding", "vlad", "--assign", "soft", cwd=w))  # fmt: skip
    assert "--assign does not apply to --encoding vlad" in wrong
    no_hog = failed(vl("encode", chain["train-f.parquet"], out, "--encoding", "none", cwd=w))
    assert "no image descriptor" in no_hog
    hog_only = failed(vl("encode", hog_features["train-hog"], chain["vocab"], out, cwd=w))
    assert "--encoding none" in hog_only
    vocab = failed(vl("vocab", "train", hog_features["train-hog"], tmp_path / "v.npz", "-k", "4", cwd=w))
    assert "no local descriptors" in vocab
    run = failed(vl("bovw", "run", chain["train.parquet"], chain["test.seq"], "--workdir", tmp_path / "r", "--encoding", "fishr", cwd=w))  # fmt: skip
    assert "unknown --encoding 'fishr'" in run and "fisher" in run
    assert not out.exists() and not (tmp_path / "r").exists()
