"""IDX files (the MNIST format) and importing them as Parquet image datasets, e.g. Fashion-MNIST.

Fashion-MNIST is the labelled benchmark available offline here (Debian's dataset-fashion-mnist), so the
bag-of-words pipeline can be measured on 70,000 real images. Each image is stored PNG-encoded
(lossless), so an imported dataset is an ordinary image dataset for every batch step.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import struct
import time
import zlib
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

from ..engines.base import Progress
from ..errors import InputError
from . import records
from .dataset import PackReport
from .outputs import check_output
from .records import TableWriter

__all__ = [
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_DIR",
    "FASHION_MNIST_FILES",
    "import_fashion_mnist",
    "import_idx",
    "read_idx",
]

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
#: split -> (images file, labels file) in FASHION_MNIST_DIR
FASHION_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
_APT_HINT = "install Debian's dataset-fashion-mnist (apt-get install dataset-fashion-mnist)"
# IDX type byte -> big-endian numpy dtype
_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_ROWS_PER_GROUP = 4096

ArrayOrPath = np.ndarray | str | os.PathLike[str]


def _read_bytes(path: str) -> bytes:
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
        return gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
    except FileNotFoundError:
        raise InputError(f"IDX file {path!r} does not exist") from None
    except (OSError, EOFError, zlib.error) as exc:
        raise InputError(f"IDX file {path!r} cannot be read: {exc}") from exc


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """The array in IDX file `path` (gzip-compressed or raw), in native byte order.

    Layout: 0x00 0x00, a type byte, the number of dimensions, each dimension as a big-endian uint32,
    then the values C-ordered and big-endian. InputError names the file when it is not that.
    """
    path = os.fspath(path)
    data = _read_bytes(path)
    if len(data) < 4 or data[:2] != b"\x00\x00" or data[2] not in _DTYPES:
        raise InputError(
            f"{path!r} is not an IDX file: it starts with {data[:4]!r}, not 0x00 0x00 <type> <ndim> "
            f"with a type among {', '.join(hex(t) for t in _DTYPES)}"
        )
    dtype, ndim = np.dtype(_DTYPES[data[2]]), data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise InputError(f"IDX file {path!r} is truncated: its header of {ndim} dimensions is incomplete")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) - header != expected:
        raise InputError(
            f"IDX file {path!r} is {'truncated' if len(data) - header < expected else 'too long'}: "
            f"shape {shape} of {dtype.name} needs {expected} bytes of data, it holds {len(data) - header}"
        )
    array = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return array.astype(dtype.newbyteorder("="), copy=False)


def _array(value: ArrayOrPath) -> tuple[np.ndarray, str]:
    if isinstance(value, np.ndarray):
        return value, "<array>"
    return read_idx(value), os.fspath(value)


def _png(image: np.ndarray, key: str) -> bytes:
    ok, encoded = cv2.imencode(".png", image)
    if not ok:  # pragma: no cover - PNG takes any 8/16-bit 1/3/4-channel image
        raise InputError(f"image {key!r} cannot be PNG-encoded (shape {image.shape}, {image.dtype})")
    return encoded.tobytes()


def import_idx(
    images: ArrayOrPath,
    labels: ArrayOrPath,
    out: str | os.PathLike[str],
    class_names: Sequence[str] | None = None,
    key_prefix: str = "",
    limit: int | None = None,
    progress: Progress = None,
    overwrite: bool = False,
) -> PackReport:
    """Write IDX `images` (n, h, w[, c]) with integer `labels` (n,) as a Parquet image dataset.

    Keys are f"{key_prefix}{i:05d}.png"; labels are `class_names[label]`, or the number as text.
    `images`/`labels` are IDX paths or arrays; `limit` keeps the first N; `progress` gets images done.
    """
    started = time.perf_counter()
    out = os.fspath(out)
    check_output(out, overwrite)
    pixels, source = _array(images)
    targets, label_source = _array(labels)
    if pixels.ndim not in (3, 4) or pixels.dtype not in (np.uint8, np.uint16):
        raise InputError(
            f"{source!r} holds {pixels.dtype} of shape {pixels.shape}: images must be uint8 or uint16 "
            "of shape (n, height, width) or (n, height, width, channels)"
        )
    if targets.ndim != 1 or targets.dtype.kind not in "iu":
        raise InputError(
            f"{label_source!r} holds {targets.dtype} of shape {targets.shape}: labels must be integers (n,)"
        )
    if len(pixels) != len(targets):
        raise InputError(
            f"{source!r} has {len(pixels)} images but {label_source!r} has {len(targets)} labels"
        )
    if limit is not None:
        if limit < 1:
            raise InputError(f"limit must be at least 1, not {limit}")
        pixels, targets = pixels[:limit], targets[:limit]
    names = _label_names(targets, class_names, label_source)
    report = PackReport(out=out, format="parquet")
    for label in names:
        report.labels[label] = report.labels.get(label, 0) + 1
    report.labels = dict(sorted(report.labels.items()))
    report.images = len(names)
    meta = report.meta(source, **({"classes": list(class_names)} if class_names is not None else {}))
    pa = records.require_pyarrow()
    with TableWriter(out, records.IMAGE_SCHEMA, meta) as writer:
        for start in range(0, len(names), _ROWS_PER_GROUP):
            stop = min(start + _ROWS_PER_GROUP, len(names))
            keys = [f"{key_prefix}{i:05d}.png" for i in range(start, stop)]
            blobs = [_png(pixels[i], keys[i - start]) for i in range(start, stop)]
            report.bytes += sum(map(len, blobs))
            writer.write(_table(pa, keys, names[start:stop], blobs, pixels.shape[1:3]))
            if progress is not None:
                progress(stop - start)
    report.seconds = time.perf_counter() - started
    return report


def _label_names(targets: np.ndarray, class_names: Sequence[str] | None, source: str) -> list[str]:
    if class_names is None:
        return [str(int(t)) for t in targets]
    bad = targets[(targets < 0) | (targets >= len(class_names))]
    if bad.size:
        raise InputError(
            f"{source!r} has label {int(bad[0])}, but only {len(class_names)} class names were given"
        )
    lookup = np.array(class_names, dtype=object)
    return list(lookup[targets.astype(np.int64)])


def _table(pa: Any, keys: list[str], labels: list[str], blobs: list[bytes], hw: tuple[int, ...]) -> Any:
    n = len(keys)
    return pa.table(
        {
            "key": keys,
            "label": labels,
            "bytes": pa.array(blobs, pa.binary()),
            "width": pa.array(np.full(n, hw[1], np.int32)),
            "height": pa.array(np.full(n, hw[0], np.int32)),
            "sha256": [hashlib.sha256(b).hexdigest() for b in blobs],
        },
        schema=records.IMAGE_SCHEMA,
    )


def import_fashion_mnist(
    out_dir: str | os.PathLike[str],
    source: str | os.PathLike[str] = FASHION_MNIST_DIR,
    limit: int | None = None,
    progress: Progress = None,
    overwrite: bool = False,
) -> dict[str, PackReport]:
    """Fashion-MNIST as out_dir/train.parquet and out_dir/test.parquet (keys "train/00000.png"...).

    Labels are the class names. `limit` keeps the first N images of each split.
    """
    source, out_dir = os.fspath(source), os.fspath(out_dir)
    paths = {
        split: (os.path.join(source, images), os.path.join(source, labels))
        for split, (images, labels) in FASHION_MNIST_FILES.items()
    }
    missing = [p for pair in paths.values() for p in pair if not os.path.isfile(p)]
    if missing:
        raise InputError(f"Fashion-MNIST is not in {source!r} (missing {', '.join(missing)}): {_APT_HINT}")
    os.makedirs(out_dir, exist_ok=True)
    targets = {split: os.path.join(out_dir, f"{split}.parquet") for split in paths}
    for target in targets.values():
        check_output(target, overwrite)
    return {
        split: import_idx(
            images,
            labels,
            targets[split],
            class_names=FASHION_MNIST_CLASSES,
            key_prefix=f"{split}/",
            limit=limit,
            progress=progress,
            overwrite=overwrite,
        )
        for split, (images, labels) in paths.items()
    }
