"""Image datasets: pack a Caltech-style folder, read the result with Spark, convert between formats."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import cv2
import pytest
from media import sample

from visionlake.batch import records
from visionlake.batch.dataset import (
    IMAGE_EXTENSIONS,
    PackReport,
    detect_format,
    label_from_key,
    open_dataset,
    pack,
)
from visionlake.batch.seqfile import SequenceFileWriter, iter_sequencefile
from visionlake.errors import InputError
from visionlake.frames import TRUNCATED_JPEG

from .conftest import CLASSES, corrupt_jpeg

LABELS = {"": 1, "building": 3, "fruit": 3, "misc": 4, "misc/nested": 1}


def _folder_keys(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


@pytest.fixture
def messy_folder(caltech_folder, tmp_path) -> Path:
    """The Caltech folder plus two truncated JPEGs, an empty .jpg, a text file and hidden files."""
    root = tmp_path / "messy"
    shutil.copytree(caltech_folder, root)
    (root / "fruit" / "broken.jpg").write_bytes(corrupt_jpeg(sample("apple.jpg")))
    (root / "fruit" / "cut.jpg").write_bytes(sample("apple.jpg").read_bytes()[:-2])  # only EOI missing
    (root / "building" / "empty.jpg").write_bytes(b"")
    (root / "misc" / "README.txt").write_text("not an image")
    (root / ".thumbs").mkdir()
    shutil.copy(sample("apple.jpg"), root / ".thumbs" / "apple.jpg")
    shutil.copy(sample("apple.jpg"), root / "fruit" / ".hidden.jpg")
    return root


def test_label_from_key():
    assert label_from_key("cats/a.jpg") == "cats"
    assert label_from_key("a/b/c.jpg") == "a/b"
    assert label_from_key("c.jpg") is None


@pytest.fixture(scope="module")
def packed(caltech_folder, tmp_path_factory) -> tuple[Path, PackReport, list[int]]:
    """The Caltech folder packed to Parquet, its report and the progress calls."""
    out = tmp_path_factory.mktemp("packed") / "caltech.parquet"
    seen: list[int] = []
    return out, pack(caltech_folder, out, progress=seen.append), seen


def test_pack_folder_to_parquet_read_by_spark(spark, caltech_folder, packed):
    out, report, seen = packed

    keys = _folder_keys(caltech_folder)
    assert report.images == len(keys) == sum(map(len, CLASSES.values())) + 2
    assert report.labels == LABELS
    assert report.rejected == [] and report.ignored == 0
    assert report.bytes == sum((caltech_folder / k).stat().st_size for k in keys)
    assert sum(seen) == len(keys)
    assert records.read_meta(out) == {
        "kind": "images",
        "source": str(caltech_folder),
        "images": len(keys),
        "labels": LABELS,
    }

    rows = spark.read.parquet(str(out)).collect()
    assert [r["key"] for r in rows] == keys  # sorted by relative path
    for row in rows:
        data = (caltech_folder / row["key"]).read_bytes()
        image = cv2.imread(str(caltech_folder / row["key"]), cv2.IMREAD_UNCHANGED)
        assert bytes(row["bytes"]) == data
        assert row["label"] == label_from_key(row["key"])
        assert (row["width"], row["height"]) == (image.shape[1], image.shape[0])
        assert row["sha256"] == hashlib.sha256(data).hexdigest()
    by_key = {r["key"]: r["label"] for r in rows}
    assert by_key["misc/nested/board.jpg"] == "misc/nested"
    assert by_key["chessboard.png"] is None


def test_rejects_are_listed_and_the_rest_packed(messy_folder, tmp_path):
    report = pack(messy_folder, tmp_path / "out.parquet")
    reasons = {r.key: r.reason for r in report.rejected}
    # Whether OpenCV itself refuses a file cut just before its end depends on its libjpeg build.
    assert reasons.pop("fruit/cut.jpg") in {
        TRUNCATED_JPEG,
        "OpenCV cannot decode it (not an image or truncated)",
    }
    assert reasons == {
        "fruit/broken.jpg": "OpenCV cannot decode it (not an image or truncated)",
        "building/empty.jpg": "empty file",
    }
    assert report.ignored == 1  # README.txt; hidden files and folders are skipped altogether
    assert report.images == 12 and report.labels == LABELS
    keys = [r.key for batch in open_dataset(tmp_path / "out.parquet").iter_batches() for r in batch]
    assert not any(
        k.startswith(".") or "/." in k or k.endswith((".txt", "broken.jpg", "cut.jpg")) for k in keys
    )


def test_sequencefile_pack_is_read_by_spark_and_repacked_with_labels(spark, caltech_folder, tmp_path):
    seq = tmp_path / "caltech.seq"
    report = pack(caltech_folder, seq, format="sequencefile")
    assert report.format == "sequencefile" and report.images == 12 and report.labels == LABELS
    keys = _folder_keys(caltech_folder)

    got = spark.sparkContext.sequenceFile(str(seq)).collect()
    assert [k for k, _ in got] == keys
    assert all(bytes(v) == (caltech_folder / k).read_bytes() for k, v in got)

    dataset = open_dataset(seq)
    assert (dataset.format, dataset.count()) == ("sequencefile", 12)
    assert detect_format(seq) == "sequencefile"

    parquet = tmp_path / "caltech.parquet"
    again = pack(seq, parquet)
    assert again.labels == LABELS and again.images == 12
    records_ = [r for batch in open_dataset(parquet).iter_batches(5) for r in batch]
    assert [(r.key, r.label) for r in records_] == [(k, label_from_key(k)) for k in keys]


def test_spark_written_parquet_directory(spark, caltech_folder, packed, tmp_path):
    keys = _folder_keys(caltech_folder)
    rows = [(k, label_from_key(k), (caltech_folder / k).read_bytes()) for k in keys]
    out = tmp_path / "spark-images"
    spark.read.parquet(str(packed[0])).select("key", "label", "bytes").repartition(3).write.parquet(str(out))
    assert len(list(out.glob("part-*.parquet"))) == 3
    assert detect_format(out) == "parquet"

    dataset = open_dataset(out)
    assert (dataset.format, dataset.count()) == ("parquet", len(keys))
    batches = list(dataset.iter_batches(batch_size=5))
    assert [len(b) for b in batches] == [5, 5, 2]
    flat = [r for b in batches for r in b]
    assert sorted((r.key, r.label or "", r.data) for r in flat) == sorted(
        (k, lab or "", b) for k, lab, b in rows
    )
    assert [r.key for b in dataset.iter_batches(batch_size=5) for r in b] == [r.key for r in flat]  # stable

    repacked = pack(out, tmp_path / "one.parquet")
    assert repacked.labels == LABELS


def test_open_dataset_refuses_a_folder_and_non_image_parquet(caltech_folder, tmp_path):
    with pytest.raises(InputError, match=r"caltech.*folder of files.*visionlake dataset pack"):
        open_dataset(caltech_folder)
    pa = records.require_pyarrow()
    other = tmp_path / "numbers.parquet"
    pa.parquet.write_table(pa.table({"key": ["a"], "value": [1]}), other)
    with pytest.raises(
        InputError, match=r"numbers\.parquet.*not a visionlake image dataset.*lacks .*label, bytes"
    ):
        open_dataset(other)


def test_missing_and_unknown_inputs_name_the_path(caltech_folder, tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(InputError, match=r"dataset '.*nowhere' does not exist"):
        pack(missing, tmp_path / "out.parquet")
    with pytest.raises(InputError, match=r"dataset '.*nowhere' does not exist"):
        open_dataset(missing)
    with pytest.raises(InputError, match=r"unknown dataset format 'tfrecord'.*parquet, sequencefile"):
        pack(caltech_folder, tmp_path / "out", format="tfrecord")
    photo = tmp_path / "photo.bin"
    photo.write_bytes(sample("apple.jpg").read_bytes())
    with pytest.raises(InputError, match=r"photo\.bin' is neither a Parquet file nor a Hadoop SequenceFile"):
        detect_format(photo)


def test_truncated_sequencefile_source(caltech_folder, tmp_path):
    seq = tmp_path / "cut.seq"
    pack(caltech_folder, seq, format="sequencefile")
    seq.write_bytes(seq.read_bytes()[:-1000])
    with pytest.raises(InputError, match=r"cut\.seq' is truncated: .* at byte \d+"):
        pack(seq, tmp_path / "out.parquet")
    assert not (tmp_path / "out.parquet").exists() and not list(tmp_path.glob("out.parquet.tmp*"))


def test_overwrite_is_refused_unless_asked(caltech_folder, tmp_path):
    out = tmp_path / "out.parquet"
    out.write_bytes(b"old")
    with pytest.raises(InputError, match=r"out\.parquet' already exists"):
        pack(caltech_folder, out)
    assert out.read_bytes() == b"old"
    assert pack(caltech_folder, out, overwrite=True).images == 12
    assert open_dataset(out).count() == 12
    with pytest.raises(InputError, match="into itself"):
        pack(out, out, overwrite=True)


def test_source_without_images_is_refused(tmp_path):
    folder = tmp_path / "texts"
    folder.mkdir()
    (folder / "notes.txt").write_text("hello")
    with pytest.raises(InputError, match=r"texts' holds no images .*\.jpg.*1 other file"):
        pack(folder, tmp_path / "out.parquet")
    (folder / "bad.png").write_bytes(b"not a png")
    with pytest.raises(InputError, match=r"texts' has no decodable image: all 1 were rejected"):
        pack(folder, tmp_path / "out.seq", format="sequencefile")
    assert not list(tmp_path.glob("out*"))


def test_duplicate_keys_in_a_dataset_are_rejected(tmp_path):
    seq = tmp_path / "dups.seq"
    with SequenceFileWriter(seq) as writer:
        writer.append("a/x.jpg", sample("apple.jpg").read_bytes())
        writer.append("a/x.jpg", sample("orange.jpg").read_bytes())
    report = pack(seq, tmp_path / "out.seq", format="sequencefile")
    assert report.images == 1 and [r.key for r in report.rejected] == ["a/x.jpg"]
    assert "duplicate key" in report.rejected[0].reason
    assert [k for k, _ in iter_sequencefile(tmp_path / "out.seq")] == ["a/x.jpg"]


def test_image_extensions():
    assert {
        ".jpg",
        ".jpeg",
        ".png",
        ".bmp",
        ".tif",
        ".tiff",
        ".webp",
        ".pgm",
        ".ppm",
        ".pbm",
    } == IMAGE_EXTENSIONS
