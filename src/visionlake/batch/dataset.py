"""Image datasets: one Parquet file or Hadoop SequenceFile of encoded images, packed from a folder.

A folder of files is slow to list on a cluster and says nothing about which files are broken, so the
batch steps read packed datasets: every image decoded once at pack time (the rejects are listed, not
silently dropped), keyed by its path relative to the folder, labelled by its sub-folder (the Caltech
layout). Spark's own Parquet and SequenceFile output directories are datasets too.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple

import cv2
import numpy as np

from ..engines.base import Progress, Rejected
from ..errors import InputError
from ..frames import TRUNCATED_JPEG, jpeg_truncated
from ..imagefiles import IMAGE_EXTENSIONS, is_image_name
from . import records
from .outputs import check_output
from .records import ImageRecord, TableWriter
from .seqfile import SequenceFileWriter, count_sequencefile, iter_sequencefile, part_files

__all__ = [
    "FORMATS",
    "IMAGE_EXTENSIONS",
    "Checker",
    "DatasetFormat",
    "ImageDataset",
    "PackItem",
    "PackReport",
    "Verdict",
    "check_here",
    "check_image",
    "check_images",
    "batched",
    "check_output",
    "check_pack_args",
    "dataset_items",
    "detect_format",
    "folder_items",
    "decoded_size",
    "label_from_key",
    "no_images_error",
    "open_dataset",
    "pack",
    "scan_folder",
]

DatasetFormat = Literal["parquet", "sequencefile", "folder"]
#: What `pack` writes.
FORMATS = ("parquet", "sequencefile")
IMAGE_COLUMNS = ("key", "label", "bytes")
# A Parquet row group is flushed at this many images or bytes, whichever comes first.
_ROWS_PER_GROUP = 256
_BYTES_PER_GROUP = 64 << 20


def label_from_key(key: str) -> str | None:
    """The image's folder relative to the dataset root ("cats/a.jpg" -> "cats"); None at the root."""
    return posixpath.dirname(key) or None


def _magic(path: str) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read(8)
    except OSError as exc:
        raise InputError(f"dataset {path!r} cannot be read: {exc.strerror or exc}") from exc


def detect_format(path: str | os.PathLike[str]) -> DatasetFormat:
    """What `path` holds, from magic bytes: a Parquet or SequenceFile dataset, or a folder of images.

    A directory is a dataset when its first part file (Spark output) is one, otherwise a folder.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        parts = part_files(path)
        head = _magic(parts[0]) if parts else b""
    elif os.path.isfile(path):
        head = _magic(path)
    else:
        raise InputError(f"dataset {path!r} does not exist")
    if head.startswith(b"PAR1"):
        return "parquet"
    if head.startswith(b"SEQ"):
        return "sequencefile"
    if os.path.isdir(path):
        return "folder"
    raise InputError(
        f"dataset {path!r} is neither a Parquet file nor a Hadoop SequenceFile (it starts with {head!r})"
    )


# --- reading -----------------------------------------------------------------------------------------


def batched(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    """Lists of `size` consecutive items (the last one shorter)."""
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


@dataclass(frozen=True)
class ImageDataset:
    """A packed image dataset (a file, or a directory of Spark part files); read it in batches."""

    path: str
    format: Literal["parquet", "sequencefile"]

    def count(self) -> int:
        """Number of images: from the Parquet footers, or a scan that skips SequenceFile values."""
        if self.format == "parquet":
            return records.count_rows(self.path)
        return count_sequencefile(self.path)

    def meta(self) -> dict[str, Any]:
        """The visionlake metadata (source, label counts) of a Parquet dataset; {} otherwise."""
        return records.read_meta(self.path) if self.format == "parquet" else {}

    def __iter__(self) -> Iterator[ImageRecord]:
        if self.format == "sequencefile":
            for key, value in iter_sequencefile(self.path):
                yield ImageRecord(key, label_from_key(key), value)
            return
        for table in records.iter_tables(self.path, columns=IMAGE_COLUMNS):
            keys, labels, blobs = (table.column(c).to_pylist() for c in IMAGE_COLUMNS)
            for key, label, blob in zip(keys, labels, blobs, strict=True):
                yield ImageRecord(key, label, blob or b"")

    def iter_batches(self, batch_size: int = 64) -> Iterator[list[ImageRecord]]:
        """The images in stored order (part files in name order), `batch_size` at a time."""
        if batch_size < 1:
            raise InputError(f"batch size must be at least 1, not {batch_size}")
        return batched(self, batch_size)


def open_dataset(path: str | os.PathLike[str]) -> ImageDataset:
    """The packed dataset at `path`; InputError when it is missing, a plain folder or not images."""
    path = os.fspath(path)
    kind = detect_format(path)
    if kind == "folder":
        raise InputError(
            f"{path!r} is a folder of files, not a packed dataset: run "
            f"`visionlake dataset pack {path} OUT` first and use OUT"
        )
    if kind == "parquet":
        records.check_columns(path, IMAGE_COLUMNS, "visionlake image")
    return ImageDataset(path, kind)


# --- validating --------------------------------------------------------------------------------------


def decoded_size(data: bytes) -> tuple[int, int] | str:
    """(width, height) of encoded image `data`, or why OpenCV cannot decode it.

    The whole image is decoded (unlike `frames.image_size`, which reads headers only): a header check
    passes truncated files that would fail later in extraction.
    """
    if not data:
        return "empty image (0 bytes)"
    try:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error as exc:
        return f"OpenCV cannot decode it: {str(exc).strip().splitlines()[-1]}"
    if image is None:
        return "OpenCV cannot decode it (not an image or truncated)"
    if jpeg_truncated(data):
        return TRUNCATED_JPEG
    return int(image.shape[1]), int(image.shape[0])


class PackItem(NamedTuple):
    """One image of a source being packed: its bytes, or None and why they could not be read."""

    key: str
    label: str | None
    data: bytes | None
    error: str | None = None


#: What checking an image found: (width, height, sha256) of a decodable image, else the reason.
Verdict = tuple[int, int, str] | str
#: Checks items in order: the in-process `check_here`, or an engine spreading the work over cores.
Checker = Callable[[Iterator[PackItem]], Iterator[tuple[PackItem, Verdict]]]


def check_image(item: PackItem) -> Verdict:
    """Decode `item` whole: (width, height, sha256 of its bytes), or why it cannot be packed."""
    if item.data is None:
        return item.error or "unreadable"
    size = decoded_size(item.data)
    if isinstance(size, str):
        return size
    return size[0], size[1], hashlib.sha256(item.data).hexdigest()


def check_images(items: list[PackItem]) -> list[Verdict]:
    """`check_image` of each item: one engine task."""
    return [check_image(item) for item in items]


def check_here(items: Iterator[PackItem]) -> Iterator[tuple[PackItem, Verdict]]:
    """Each item with its verdict, checked in this process."""
    for item in items:
        yield item, check_image(item)


class _Checked(NamedTuple):
    key: str
    label: str | None
    width: int
    height: int
    sha256: str
    size: int


def scan_folder(root: str) -> tuple[list[tuple[str, str]], int]:
    """(key, file) of every image under `root`, sorted by key, and the number of other files."""
    found: list[tuple[str, str]] = []
    ignored = 0

    def unreadable(exc: OSError) -> None:
        raise InputError(f"cannot list the folder {exc.filename!r}: {exc.strerror or exc}")

    for folder, dirs, files in os.walk(root, onerror=unreadable):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            if name.startswith("."):
                continue
            full = os.path.join(folder, name)
            if not is_image_name(name):
                ignored += 1
                continue
            found.append((Path(os.path.relpath(full, root)).as_posix(), full))
    found.sort()
    return found, ignored


def folder_items(files: Iterable[tuple[str, str]]) -> Iterator[PackItem]:
    """The files of `scan_folder`, read: a PackItem each, with the reason when one cannot be read."""
    for key, full in files:
        try:
            with open(full, "rb") as fh:
                data = fh.read()
        except OSError as exc:
            yield PackItem(key, label_from_key(key), None, f"unreadable: {exc.strerror or exc}")
            continue
        if not data:
            yield PackItem(key, label_from_key(key), None, "empty file")
            continue
        yield PackItem(key, label_from_key(key), data)


def dataset_items(path: str) -> Iterator[PackItem]:
    """The images of a packed dataset as PackItems (a dataset packed again, or converted)."""
    for record in open_dataset(path):
        yield PackItem(record.key, record.label, record.data)


def _source(src: str, kind: DatasetFormat) -> tuple[Iterator[PackItem], int]:
    """What `src` holds (images in a stable order) and its ignored file count."""
    if kind != "folder":  # check_pack_args has checked a Parquet source's columns
        return dataset_items(src), 0
    files, ignored = scan_folder(src)
    return folder_items(files), ignored


def _check(
    items: Iterator[PackItem], rejected: list[Rejected], progress: Progress, checker: Checker
) -> Iterator[tuple[PackItem, _Checked]]:
    """The decodable images of `items`, with their size and hash; the others go to `rejected`."""
    seen: set[str] = set()
    for item, verdict in checker(items):
        if progress is not None:
            progress(1)
        if item.key in seen:
            rejected.append(Rejected(item.key, "duplicate key: an earlier image has the same key"))
            continue
        seen.add(item.key)
        if isinstance(verdict, str):
            rejected.append(Rejected(item.key, verdict))
            continue
        width, height, digest = verdict
        yield item, _Checked(item.key, item.label, width, height, digest, len(item.data or b""))


# --- packing -----------------------------------------------------------------------------------------


@dataclass
class PackReport:
    """What `pack` (or an import) wrote; `labels` maps label -> images, "" standing for no label."""

    out: str
    format: str
    images: int = 0
    bytes: int = 0  # encoded image bytes packed
    labels: dict[str, int] = field(default_factory=dict)
    ignored: int = 0  # files without an image extension
    rejected: list[Rejected] = field(default_factory=list)
    seconds: float = 0.0

    def add(self, label: str | None, size: int) -> None:
        """Count one packed image of `size` bytes."""
        self.images += 1
        self.bytes += size
        self.labels[label or ""] = self.labels.get(label or "", 0) + 1

    def meta(self, source: str, **extra: Any) -> dict[str, Any]:
        """The Parquet dataset metadata: kind, source, image count and label counts."""
        labels = dict(sorted(self.labels.items()))
        return {"kind": "images", "source": source, "images": self.images, "labels": labels, **extra}


def no_images_error(src: str, report: PackReport) -> InputError:
    """The error for a source with nothing to pack: why each image was rejected, or what was ignored."""
    if report.rejected:
        first = report.rejected[0]
        return InputError(
            f"{src!r} has no decodable image: all {len(report.rejected)} were rejected "
            f"(first: {first.key!r}: {first.reason})"
        )
    extensions = " ".join(sorted(IMAGE_EXTENSIONS))
    return InputError(
        f"{src!r} holds no images (looked for {extensions}; {report.ignored} other file(s) ignored)"
    )


def _pack_sequencefile(src: str, checked: Iterator[tuple[PackItem, _Checked]], report: PackReport) -> None:
    with SequenceFileWriter(report.out) as writer:
        for item, checked_item in checked:
            writer.append(item.key, item.data or b"")
            report.add(checked_item.label, checked_item.size)
        if not report.images:
            raise no_images_error(src, report)


def _pack_parquet(src: str, checked: Iterator[tuple[PackItem, _Checked]], report: PackReport) -> None:
    pa = records.require_pyarrow()
    rows: list[tuple[PackItem, _Checked]] = []
    size = 0
    with TableWriter(report.out, records.IMAGE_SCHEMA) as writer:
        for pair in checked:
            report.add(pair[1].label, pair[1].size)
            rows.append(pair)
            size += pair[1].size
            if len(rows) >= _ROWS_PER_GROUP or size >= _BYTES_PER_GROUP:
                writer.write(_image_table(pa, rows))
                rows, size = [], 0
        if rows:
            writer.write(_image_table(pa, rows))
        if not report.images:
            raise no_images_error(src, report)
        writer.meta = report.meta(src)


def _image_table(pa: Any, rows: list[tuple[PackItem, _Checked]]) -> Any:
    return pa.table(
        {
            "key": [c.key for _, c in rows],
            "label": [c.label for _, c in rows],
            "bytes": pa.array([i.data for i, _ in rows], pa.binary()),
            "width": pa.array([c.width for _, c in rows], pa.int32()),
            "height": pa.array([c.height for _, c in rows], pa.int32()),
            "sha256": [c.sha256 for _, c in rows],
        },
        schema=records.IMAGE_SCHEMA,
    )


def check_pack_args(src: str, out: str, format: str, overwrite: bool) -> DatasetFormat:
    """What `src` holds; InputError for an unknown output format, a missing source or a taken `out`."""
    if format not in FORMATS:
        raise InputError(f"unknown dataset format {format!r}: choose one of {', '.join(FORMATS)}")
    kind = detect_format(src)
    if kind == "parquet":
        records.check_columns(src, IMAGE_COLUMNS, "visionlake image")  # fail now, not halfway
    check_output(out, overwrite, src)
    return kind


def pack(
    src: str | os.PathLike[str],
    out: str | os.PathLike[str],
    format: str = "parquet",
    progress: Progress = None,
    overwrite: bool = False,
    checker: Checker = check_here,
) -> PackReport:
    """Pack a folder of images (or convert a SequenceFile/Parquet dataset) into one dataset file.

    Every image is decoded once: undecodable ones are listed in `report.rejected` with the reason and
    the others packed, keyed by relative path and labelled by folder. `progress` gets 1 per image.
    `checker` decodes the images (`LocalEngine.pack` passes one that uses its worker processes).
    """
    started = time.perf_counter()
    src, out = os.fspath(src), os.fspath(out)
    kind = check_pack_args(src, out, format, overwrite)
    items, ignored = _source(src, kind)
    report = PackReport(out=out, format=format, ignored=ignored)
    checked = _check(items, report.rejected, progress, checker)
    if format == "sequencefile":
        _pack_sequencefile(src, checked, report)
    else:
        _pack_parquet(src, checked, report)
    report.labels = dict(sorted(report.labels.items()))
    report.seconds = time.perf_counter() - started
    return report
