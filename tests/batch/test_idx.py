"""IDX files and the Fashion-MNIST import, on Debian's real dataset-fashion-mnist files."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import cv2
import numpy as np
import pytest
from media import sample

from visionlake.batch import records
from visionlake.batch.dataset import open_dataset
from visionlake.batch.idx import (
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_DIR,
    FASHION_MNIST_FILES,
    import_fashion_mnist,
    import_idx,
    read_idx,
)
from visionlake.errors import InputError


@pytest.fixture(scope="module")
def fashion_dir() -> Path:
    root = Path(FASHION_MNIST_DIR)
    if not all((root / name).is_file() for pair in FASHION_MNIST_FILES.values() for name in pair):
        pytest.skip(f"{root} not found: apt-get install dataset-fashion-mnist")
    return root


def _idx(array: np.ndarray, code: int) -> bytes:
    header = b"\x00\x00" + bytes([code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def test_read_idx_raw_and_gzip(tmp_path):
    values = np.arange(-60, 60, dtype=np.int16).reshape(2, 3, 20)
    (tmp_path / "a.idx").write_bytes(_idx(values, 0x0B))
    (tmp_path / "a.idx.gz").write_bytes(gzip.compress(_idx(values, 0x0B)))
    for name in ("a.idx", "a.idx.gz"):
        got = read_idx(tmp_path / name)
        assert got.dtype == np.int16 and got.dtype.isnative
        np.testing.assert_array_equal(got, values)


def test_read_idx_rejects_bad_files(tmp_path):
    jpeg = tmp_path / "photo.idx"
    jpeg.write_bytes(sample("apple.jpg").read_bytes())
    with pytest.raises(InputError, match=r"photo\.idx' is not an IDX file: it starts with b'\\xff\\xd8"):
        read_idx(jpeg)
    cut = tmp_path / "cut.idx"
    cut.write_bytes(_idx(np.zeros((10, 28, 28), np.uint8), 0x08)[:-5])
    with pytest.raises(InputError, match=r"cut\.idx' is truncated: shape \(10, 28, 28\)"):
        read_idx(cut)
    bad_gzip = tmp_path / "bad.idx.gz"
    bad_gzip.write_bytes(gzip.compress(_idx(np.zeros(100, np.uint8), 0x08))[:30])
    with pytest.raises(InputError, match=r"bad\.idx\.gz' cannot be read"):
        read_idx(bad_gzip)
    with pytest.raises(InputError, match=r"missing\.idx' does not exist"):
        read_idx(tmp_path / "missing.idx")


def test_import_fashion_mnist_with_limit(fashion_dir, tmp_path):
    reports = import_fashion_mnist(tmp_path / "fm", limit=200)
    assert set(reports) == {"train", "test"}
    for split, (images_file, labels_file) in FASHION_MNIST_FILES.items():
        report = reports[split]
        assert (report.images, report.format, report.rejected) == (200, "parquet", [])
        assert set(report.labels) <= set(FASHION_MNIST_CLASSES) and sum(report.labels.values()) == 200
        pixels = read_idx(fashion_dir / images_file)[:200]
        labels = read_idx(fashion_dir / labels_file)[:200]

        dataset = open_dataset(tmp_path / "fm" / f"{split}.parquet")
        assert dataset.count() == 200
        assert dataset.meta()["labels"] == report.labels
        rows = [r for batch in dataset.iter_batches(64) for r in batch]
        assert rows[0].key == f"{split}/00000.png" and rows[-1].key == f"{split}/00199.png"
        for i, row in enumerate(rows):
            image = cv2.imdecode(np.frombuffer(row.data, np.uint8), cv2.IMREAD_UNCHANGED)
            assert image.shape == (28, 28)
            np.testing.assert_array_equal(image, pixels[i])  # lossless
            assert row.label == FASHION_MNIST_CLASSES[labels[i]]
        table = next(records.iter_tables(dataset.path, columns=["width", "height"]))
        assert set(table.column("width").to_pylist()) == {28} == set(table.column("height").to_pylist())


def test_import_idx_arrays_and_errors(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, size=(5, 8, 6), dtype=np.uint8)
    labels = np.array([0, 1, 1, 2, 0], np.uint8)
    report = import_idx(images, labels, tmp_path / "digits.parquet", key_prefix="d/")
    assert report.labels == {"0": 2, "1": 2, "2": 1}
    rows = [r for batch in open_dataset(tmp_path / "digits.parquet").iter_batches() for r in batch]
    assert [r.key for r in rows] == [f"d/{i:05d}.png" for i in range(5)]
    decoded = cv2.imdecode(np.frombuffer(rows[3].data, np.uint8), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(decoded, images[3])

    with pytest.raises(InputError, match=r"digits\.parquet' already exists"):
        import_idx(images, labels, tmp_path / "digits.parquet")
    with pytest.raises(InputError, match="5 images but .* 4 labels"):
        import_idx(images, labels[:4], tmp_path / "x.parquet")
    with pytest.raises(InputError, match="label 2, but only 2 class names"):
        import_idx(images, labels, tmp_path / "x.parquet", class_names=["a", "b"])
    assert not (tmp_path / "x.parquet").exists()


def test_missing_fashion_mnist_gives_the_apt_hint(tmp_path):
    with pytest.raises(InputError, match=r"not in '.*nowhere'.*apt-get install dataset-fashion-mnist"):
        import_fashion_mnist(tmp_path / "out", source=tmp_path / "nowhere")
