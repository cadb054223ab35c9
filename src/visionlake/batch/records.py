"""The rows that flow between batch steps and their Parquet layouts (images, features, bags of words).

Every step writes Parquet that Spark and pandas read as-is. Matrices are stored compactly as raw
C-order bytes in a binary column (float32 or uint8, never float64 lists); the shape comes from the
row (`n_keypoints`) and the dataset metadata (`dim`, `dtype`).

Dataset metadata (what made the file: algorithm, parameters, vocabulary) travels with the data: in the
Parquet schema's key-value metadata under ``visionlake`` for a single file, or in a ``_visionlake.json``
sidecar for a directory of part files (what Spark writes; readers skip names starting with ``_``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import InputError
from .outputs import AtomicWriter

__all__ = [
    "BOW_SCHEMA",
    "FEATURE_REQUIRED",
    "FEATURE_SCHEMA",
    "IMAGE_SCHEMA",
    "META_KEY",
    "SIDECAR",
    "FeatureSet",
    "ImageRecord",
    "TableWriter",
    "bow_from_table",
    "bow_table",
    "feature_sets",
    "feature_table",
    "iter_tables",
    "parquet_files",
    "read_meta",
    "require_pyarrow",
]

META_KEY = b"visionlake"
SIDECAR = "_visionlake.json"


def require_pyarrow() -> Any:
    """The `pyarrow` module with its Parquet support loaded."""
    return pa


IMAGE_SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("label", pa.string()),
        ("bytes", pa.binary()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("sha256", pa.string()),
    ]
)
FEATURE_SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("label", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("n_keypoints", pa.int32()),
        ("descriptors", pa.binary()),
        ("keypoints", pa.binary()),
        ("image_descriptor", pa.binary()),  # null unless extracted with a global descriptor (HOG)
    ]
)
#: Columns every features dataset has (files written before image descriptors lack the last one).
FEATURE_REQUIRED = ("key", "label", "width", "height", "n_keypoints", "descriptors", "keypoints")
BOW_SCHEMA = pa.schema([("key", pa.string()), ("label", pa.string()), ("bow", pa.binary())])


@dataclass(frozen=True, slots=True)
class ImageRecord:
    """One encoded image of a dataset. `label` is None when the image has none (e.g. a flat folder)."""

    key: str
    label: str | None
    data: bytes


@dataclass(frozen=True, slots=True, eq=False)
class FeatureSet:
    """The local features of one image.

    descriptors: (n, dim) float32 or uint8. keypoints: (n, 2) float32 x, y as fractions of the image's
    width and height (in [0, 1], what a spatial pyramid needs). n may be 0: the image is kept.
    image_descriptor: one float32 vector describing the whole image (the global HOG), or None.
    """

    key: str
    label: str | None
    width: int
    height: int
    descriptors: np.ndarray
    keypoints: np.ndarray
    image_descriptor: np.ndarray | None = None

    @property
    def n_keypoints(self) -> int:
        return int(self.descriptors.shape[0])


# --- files -------------------------------------------------------------------------------------------


def parquet_files(path: str | os.PathLike[str]) -> list[str]:
    """The Parquet files behind `path`: the file itself, or a directory's part files in name order.

    InputError names the path when it does not exist or holds no Parquet file.
    """
    path = os.fspath(path)
    if os.path.isfile(path):
        return [path]
    if not os.path.isdir(path):
        raise InputError(f"dataset {path!r} does not exist")
    files = sorted(
        os.path.join(path, name)
        for name in os.listdir(path)
        if not name.startswith(("_", ".")) and os.path.isfile(os.path.join(path, name))
    )
    if not files:
        raise InputError(f"dataset {path!r} is a directory with no Parquet part files")
    return files


def read_meta(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The visionlake metadata of a Parquet dataset (file or directory); {} when it has none."""
    path = os.fspath(path)
    if os.path.isdir(path):
        sidecar = os.path.join(path, SIDECAR)
        if os.path.isfile(sidecar):
            with open(sidecar, encoding="utf-8") as fh:
                return json.load(fh)
    files = parquet_files(path)
    try:
        # The footer's key-value metadata (where TableWriter puts it, and where the Arrow schema's
        # metadata of older files is copied too).
        footer = pq.read_metadata(files[0]).metadata
    except (OSError, pa.ArrowException) as exc:
        raise InputError(f"{files[0]!r} is not a readable Parquet file: {exc}") from exc
    raw = (footer or {}).get(META_KEY)
    return json.loads(raw) if raw else {}


def write_sidecar(directory: str | os.PathLike[str], meta: dict[str, Any]) -> None:
    """Write the metadata of a directory dataset (Spark output) next to its part files."""
    with open(os.path.join(os.fspath(directory), SIDECAR), "w", encoding="utf-8") as fh:
        json.dump(meta, fh, indent=2, sort_keys=True)


def iter_tables(
    path: str | os.PathLike[str], columns: Sequence[str] | None = None, batch_rows: int = 1024
) -> Iterator[Any]:
    """Stream a Parquet dataset (file or directory) as pyarrow Tables of at most `batch_rows` rows."""
    for file in parquet_files(path):
        try:
            pf = pq.ParquetFile(file)
            for batch in pf.iter_batches(batch_size=batch_rows, columns=list(columns) if columns else None):
                yield pa.Table.from_batches([batch])
        except (OSError, pa.ArrowException) as exc:
            raise InputError(f"{file!r} is not a readable Parquet file: {exc}") from exc


def count_rows(path: str | os.PathLike[str]) -> int:
    """Number of rows in a Parquet dataset, from the footers (nothing decoded)."""
    return sum(pq.ParquetFile(f).metadata.num_rows for f in parquet_files(path))


def check_columns(path: str | os.PathLike[str], needed: Iterable[str], what: str) -> None:
    """InputError unless the dataset at `path` has the columns of a `what` dataset."""
    names = set(pq.read_schema(parquet_files(path)[0]).names)
    missing = [c for c in needed if c not in names]
    if missing:
        raise InputError(
            f"{os.fspath(path)!r} is not a {what} dataset: it lacks the column(s) {', '.join(missing)} "
            f"(it has {', '.join(sorted(names))})"
        )


class TableWriter(AtomicWriter):
    """Streams tables into one Parquet file with the visionlake metadata; atomic (temp file + rename).

    The metadata goes into the file's footer when it is closed, so a writer that learns it while
    writing (image and label counts) can set `meta` at the end instead of reading its input twice.
    """

    def __init__(self, path: str | os.PathLike[str], schema: Any, meta: dict[str, Any] | None = None) -> None:
        super().__init__(path)
        self.meta: dict[str, Any] = dict(meta or {})
        self._writer = pq.ParquetWriter(self._tmp, schema, compression="zstd")
        self.rows = 0

    def write(self, table: Any) -> None:
        self._writer.write_table(table.replace_schema_metadata(None))
        self.rows += table.num_rows

    def close(self) -> None:
        self._writer.add_key_value_metadata({META_KEY: json.dumps(self.meta, sort_keys=True).encode()})
        super().close()

    def _close_stream(self) -> None:
        self._writer.close()


# --- features ----------------------------------------------------------------------------------------


def feature_table(sets: Sequence[FeatureSet]) -> Any:
    """A FEATURE_SCHEMA table of `sets` (descriptors and keypoints as raw C-order bytes)."""
    return pa.table(
        {
            "key": [s.key for s in sets],
            "label": [s.label for s in sets],
            "width": pa.array([s.width for s in sets], pa.int32()),
            "height": pa.array([s.height for s in sets], pa.int32()),
            "n_keypoints": pa.array([s.n_keypoints for s in sets], pa.int32()),
            "descriptors": pa.array(
                [np.ascontiguousarray(s.descriptors).tobytes() for s in sets], pa.binary()
            ),
            "keypoints": pa.array(
                [np.ascontiguousarray(s.keypoints, dtype=np.float32).tobytes() for s in sets], pa.binary()
            ),
            "image_descriptor": pa.array([image_descriptor_bytes(s) for s in sets], pa.binary()),
        },
        schema=FEATURE_SCHEMA,
    )


def image_descriptor_bytes(s: FeatureSet) -> bytes | None:
    """The stored form of a FeatureSet's image descriptor: float32 bytes, or None (a null)."""
    d = s.image_descriptor
    return None if d is None else np.ascontiguousarray(d, dtype=np.float32).tobytes()


def image_descriptor_array(blob: bytes | None) -> np.ndarray | None:
    """The image descriptor of a stored row: a float32 vector, or None."""
    return None if blob is None else np.frombuffer(blob, dtype=np.float32)


def feature_sets(table: Any, dim: int, dtype: str) -> list[FeatureSet]:
    """FeatureSets from a FEATURE_SCHEMA table; `dim` and `dtype` come from the dataset metadata."""
    cols = {name: table.column(name).to_pylist() for name in table.column_names}
    np_dtype = np.dtype(dtype)
    globals_ = cols.get("image_descriptor") or [None] * len(cols["key"])
    out = []
    for i, key in enumerate(cols["key"]):
        n = cols["n_keypoints"][i]
        desc = np.frombuffer(cols["descriptors"][i], dtype=np_dtype)
        kps = np.frombuffer(cols["keypoints"][i], dtype=np.float32)
        if desc.size != n * dim or kps.size != n * 2:
            raise InputError(
                f"features of {key!r} are damaged: {n} keypoints but {desc.size} descriptor values "
                f"(dim {dim}) and {kps.size} keypoint values"
            )
        out.append(
            FeatureSet(
                key=key,
                label=cols["label"][i],
                width=cols["width"][i],
                height=cols["height"][i],
                descriptors=desc.reshape(n, dim),
                keypoints=kps.reshape(n, 2),
                image_descriptor=image_descriptor_array(globals_[i]),
            )
        )
    return out


# --- bags of words -----------------------------------------------------------------------------------


def bow_table(keys: Sequence[str], labels: Sequence[str | None], vectors: np.ndarray) -> Any:
    """A BOW_SCHEMA table: one float32 vector per image as raw bytes."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    return pa.table(
        {
            "key": list(keys),
            "label": list(labels),
            "bow": pa.array([row.tobytes() for row in vectors], pa.binary()),
        },
        schema=BOW_SCHEMA,
    )


def bow_from_table(table: Any, dim: int) -> tuple[list[str], list[str | None], np.ndarray]:
    """Keys, labels and the (n, dim) float32 matrix of a BOW_SCHEMA table."""
    keys = table.column("key").to_pylist()
    labels = table.column("label").to_pylist()
    blobs = table.column("bow").to_pylist()
    matrix = np.frombuffer(b"".join(blobs), dtype=np.float32) if blobs else np.zeros(0, np.float32)
    if matrix.size != len(keys) * dim:
        raise InputError(f"bag-of-words vectors are damaged: expected {len(keys)} x {dim} values")
    return keys, labels, matrix.reshape(len(keys), dim)
