"""`--overwrite`: a step that fails keeps the previous artefact; one that succeeds replaces it.

Real steps through the CLI on real images (scikit-image's lfw_subset), local engine.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cv2
import pytest

from visionlake.batch.features import FeatureExtractor
from visionlake.batch.outputs import staged_output
from visionlake.batch.pipeline import extract_features
from visionlake.engines.local import LocalEngine
from visionlake.errors import InputError

CHAIN = ["--algo", "dense-sift", "--size", "32", "--step", "8"]


def vl(*args: object, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VISIONLAKE_")}
    env["COLUMNS"] = "1000"
    env["VISIONLAKE_PROCESSES"] = "1"  # batch steps in the command's process: no pool to spawn per command
    cmd = [sys.executable, "-m", "visionlake", *map(str, args)]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def ok(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"


def failed(proc: subprocess.CompletedProcess, code: int = 2) -> str:
    assert proc.returncode == code, f"exit {proc.returncode}, wanted {code}\n{proc.stdout}\n{proc.stderr}"
    return proc.stderr


def leftovers(folder: Path) -> list[str]:
    """Temporary siblings a step would leave behind."""
    return sorted(
        p.name for p in folder.iterdir() if ".new-" in p.name or ".old-" in p.name or ".tmp-" in p.name
    )


@pytest.fixture(scope="module")
def chain(tmp_path_factory, lfw_images) -> dict[str, Path]:
    """40 faces and non-faces packed, extracted, a vocabulary, bags of words and a model."""
    images, labels = lfw_images
    w = tmp_path_factory.mktemp("overwrite")
    for i in [*range(20), *range(100, 120)]:
        folder = w / "images" / str(labels[i])
        folder.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(folder / f"{i:03d}.png"), images[i])
    p = {name: w / name for name in ("ds.seq", "f.parquet", "vocab.npz", "bow.parquet", "model.joblib")}
    ok(vl("dataset", "pack", w / "images", p["ds.seq"], "--container", "sequencefile", cwd=w))
    ok(vl("features", "extract", p["ds.seq"], p["f.parquet"], *CHAIN, cwd=w))
    ok(vl("vocab", "train", p["f.parquet"], p["vocab.npz"], "-k", "8", cwd=w))
    ok(vl("encode", p["f.parquet"], p["vocab.npz"], p["bow.parquet"], cwd=w))
    ok(vl("classify", "train", p["bow.parquet"], p["model.joblib"], "--classifier", "logreg", cwd=w))
    p["workdir"] = w
    return p


def copy(chain: dict[str, Path], name: str, folder: Path) -> Path:
    """A copy of one of the chain's artefacts in `folder`, so that a test cannot spoil another's."""
    out = folder / name
    out.write_bytes(chain[name].read_bytes())
    return out


def test_vocabulary_with_too_many_words_keeps_the_old_one(chain, tmp_path):
    # k is checked against the descriptors only once the engine has read them: after the output check
    vocab = copy(chain, "vocab.npz", tmp_path)
    err = failed(
        vl("vocab", "train", chain["f.parquet"], vocab, "-k", "10000000", "--overwrite", cwd=tmp_path)
    )
    assert "10000000" in err
    assert vocab.read_bytes() == chain["vocab.npz"].read_bytes()
    assert leftovers(tmp_path) == []


def test_classify_train_without_its_vocabulary_keeps_the_old_model(chain, tmp_path):
    # the vocabulary is looked for only after the output check
    model = copy(chain, "model.joblib", tmp_path)
    missing = tmp_path / "gone.npz"
    args = ("classify", "train", chain["bow.parquet"], model, "--vocab", missing, "--overwrite")
    assert "gone.npz" in failed(vl(*args, cwd=tmp_path))
    assert model.read_bytes() == chain["model.joblib"].read_bytes()
    assert leftovers(tmp_path) == []


def test_extract_from_a_truncated_dataset_keeps_the_old_features(chain, tmp_path):
    # the CLI counts the images first and would stop there: the Python API lets the engine find out
    features = copy(chain, "f.parquet", tmp_path)
    raw = chain["ds.seq"].read_bytes()
    truncated = tmp_path / "truncated.seq"
    truncated.write_bytes(raw[: len(raw) * 2 // 3])  # the header is fine; a record breaks off mid-file
    params = {"algo": "dense-sift", "size": 32, "dense_step": 8}
    with LocalEngine(processes=1) as engine, pytest.raises(InputError):
        extract_features(str(truncated), str(features), FeatureExtractor(**params), engine, overwrite=True)
    assert features.read_bytes() == chain["f.parquet"].read_bytes()
    assert sorted(os.listdir(tmp_path)) == ["f.parquet", "truncated.seq"]


def test_a_successful_overwrite_replaces_the_artefact(chain, tmp_path):
    vocab = copy(chain, "vocab.npz", tmp_path)
    ok(vl("vocab", "train", chain["f.parquet"], vocab, "-k", "4", "--overwrite", cwd=tmp_path))
    assert vocab.read_bytes() != chain["vocab.npz"].read_bytes()
    bow = tmp_path / "bow.parquet"
    bow.write_bytes(b"an old artefact")
    ok(vl("encode", chain["f.parquet"], vocab, bow, "--overwrite", cwd=tmp_path))
    assert bow.read_bytes().startswith(b"PAR1")
    assert leftovers(tmp_path) == []


# --- the swap itself: files and part-file directories (what Spark writes) ----------------------------


def part_dir(path: Path, text: str) -> None:
    path.mkdir()
    (path / "part-00000.parquet").write_text(text)
    (path / "_SUCCESS").write_text("")


@pytest.mark.parametrize("old_is_dir", [True, False])
@pytest.mark.parametrize("new_is_dir", [True, False])
def test_staged_output_swaps_files_and_directories(tmp_path, old_is_dir, new_is_dir):
    out = tmp_path / "out.parquet"
    part_dir(out, "old") if old_is_dir else out.write_text("old")
    with staged_output(str(out)) as tmp:
        assert not os.path.exists(tmp) and os.path.dirname(tmp) == str(tmp_path)
        part_dir(Path(tmp), "new") if new_is_dir else Path(tmp).write_text("new")
        assert (out / "part-00000.parquet" if old_is_dir else out).read_text() == "old"
    assert out.is_dir() == new_is_dir
    assert (out / "part-00000.parquet" if new_is_dir else out).read_text() == "new"
    assert os.listdir(tmp_path) == ["out.parquet"]


@pytest.mark.parametrize("old_is_dir", [True, False])
def test_staged_output_failure_keeps_the_old_and_drops_the_partial_new(tmp_path, old_is_dir):
    out = tmp_path / "out.parquet"
    part_dir(out, "old") if old_is_dir else out.write_text("old")
    with pytest.raises(RuntimeError), staged_output(str(out)) as tmp:
        part_dir(Path(tmp), "half")
        raise RuntimeError("the step failed")
    assert (out / "part-00000.parquet" if old_is_dir else out).read_text() == "old"
    assert os.listdir(tmp_path) == ["out.parquet"]


# --- Spark: part-file directories ---------------------------------------------------------------------


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_spark_pack_keeps_the_old_directory_until_the_new_one_is_good(spark, chain, tmp_path):
    # Spark finds out that no image decodes only after writing: the old dataset must survive that
    from visionlake.engines.spark import SparkEngine

    broken = tmp_path / "broken" / "label"
    broken.mkdir(parents=True)
    (broken / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    out = tmp_path / "ds"
    engine = SparkEngine(master="local[2]")  # joins the session of the `spark` fixture
    try:
        assert engine.pack(str(chain["workdir"] / "images"), str(out), format="parquet").images == 40
        before = snapshot(out)
        with pytest.raises(InputError, match="no decodable image"):
            engine.pack(str(broken.parent), str(out), format="parquet", overwrite=True)
        assert out.is_dir() and snapshot(out) == before
        assert sorted(os.listdir(tmp_path)) == ["broken", "ds"]
        (broken / "good.png").write_bytes((chain["workdir"] / "images" / "face" / "000.png").read_bytes())
        assert engine.pack(str(broken.parent), str(out), format="parquet", overwrite=True).images == 1
        assert snapshot(out) != before
        assert sorted(os.listdir(tmp_path)) == ["broken", "ds"]
    finally:
        engine.close()


def test_spark_extract_overwrites_a_local_features_file_with_its_part_directory(spark, chain, tmp_path):
    from visionlake.engines.spark import SparkEngine

    features = copy(chain, "f.parquet", tmp_path)
    params = {"algo": "dense-sift", "size": 32, "dense_step": 8}
    engine = SparkEngine(master="local[2]")
    try:
        report = extract_features(
            str(chain["ds.seq"]), str(features), FeatureExtractor(**params), engine, overwrite=True
        )
    finally:
        engine.close()
    assert report.out == str(features) and report.images == 40
    assert features.is_dir() and (features / "_visionlake.json").is_file()
    assert os.listdir(tmp_path) == ["f.parquet"]
