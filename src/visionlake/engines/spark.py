"""The Spark engine: the batch steps as pyspark jobs (local mode or a cluster, chosen by `master`).

The bag-of-visual-words workflow on Spark: images come from a Parquet image dataset or a Hadoop
SequenceFile (key = relative path, so the label survives), the estimator is broadcast once instead of
being rebuilt per row, descriptors are stored as float32/uint8 bytes (not float64 lists), images with
no keypoints keep their row, unreadable images are reported with their reason instead of vanishing,
MLlib's KMeans starts from k-means|| (not random centres), and coding/pooling is vectorised over whole
chunks of rows.

Outputs are Parquet directories (Spark's part files) with a `_visionlake.json` sidecar holding the
metadata, so `visionlake.batch.records` reads them like the local engine's single files. Paths are
local paths that the driver and the executors both see (local mode, or a shared mount on a cluster).
Row order is not preserved across part files: consumers match rows by key.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np

from ..batch import records
from ..errors import InputError, MissingDependency
from .base import EncodeReport, Engine, ExtractReport, Progress, Rejected
from .local import (
    bow_dim,
    bow_meta,
    check_k,
    feature_columns,
    features_layout,
    fitted_encoder,
    rejected_sorted,
    require_path,
    vocabulary_meta,
)
from .process import prepare_worker

if TYPE_CHECKING:
    from ..batch.dataset import PackReport
    from ..batch.encode import BowEncoder
    from ..batch.features import FeatureExtractor
    from ..batch.vocabulary import Vocabulary

__all__ = ["SparkEngine"]

#: Images per extractor call inside a partition, and feature rows per encoder call.
EXTRACT_CHUNK = 32
ENCODE_CHUNK = 256
#: Partitions per core for the image datasets: small tasks balance the cores at the end of a job.
TASKS_PER_CORE = 4
KMEANS_TOL = 1e-4


def _pyspark() -> Any:
    try:
        import pyspark
    except ImportError as exc:
        raise MissingDependency("the Spark engine", "spark", "pyspark") from exc
    return pyspark


# --- executor side (module-level so they pickle by reference) ----------------------------------------


def _pack_items(folder: bool, rows: Iterable[Any]) -> Iterator[Any]:
    """The PackItems of a partition of (index, (key, file)) or (index, (key, label, bytes)) rows.

    Partitions hold contiguous ranges of the source in order, so the written part files keep it.
    """
    from ..batch.dataset import PackItem, folder_items

    if folder:
        yield from folder_items(pair for _, pair in rows)
        return
    for _, (key, label, data) in rows:
        yield PackItem(str(key), label, bytes(data) if data is not None else None)


def _range_partition(n: int, parts: int, index: int) -> int:
    """Partition of source row `index` of `n` when split into `parts` contiguous ranges."""
    return min(parts - 1, index * parts // max(n, 1))


def _pack_partition(rejected_acc: Any, done_acc: Any, folder: bool, rows: Iterable[Any]) -> Iterator[tuple]:
    """(key, label, bytes, width, height, sha256) per decodable image; rejects go to the accumulator."""
    prepare_worker()
    from ..batch.dataset import check_image

    rejected, done = [], 0
    for item in _pack_items(folder, rows):
        verdict = check_image(item)
        done += 1
        if isinstance(verdict, str):
            rejected.append((item.key, verdict))
        else:
            yield (item.key, item.label, item.data, *verdict)
        if done % EXTRACT_CHUNK == 0:
            done_acc.add(done)
            done = 0
    done_acc.add(done)
    if rejected:
        rejected_acc.add(rejected)


def _dataset_row(kind: str, row: Any) -> tuple[str, str | None, Any]:
    """(key, label, bytes) of a Parquet image row or a SequenceFile (key, value) pair."""
    from ..batch.dataset import label_from_key

    if kind == "sequencefile":
        key = str(row[0])
        return key, label_from_key(key), row[1]
    return row[0], row[1], row[2]


def _extract_partition(
    extractor_bc: Any, rejected_acc: Any, done_acc: Any, sequencefile: bool, rows: Iterable[Any]
) -> Iterator[tuple]:
    """Feature rows (FEATURE_SCHEMA order) of a partition of images; rejects go to the accumulator."""
    prepare_worker()
    from ..batch.dataset import label_from_key

    extractor = extractor_bc.value
    batch: list[records.ImageRecord] = []

    def flush() -> Iterator[tuple]:
        sets, rejected = extractor.extract_records(batch)
        if rejected:
            rejected_acc.add([(r.key, r.reason) for r in rejected])
        done_acc.add(len(batch))
        for s in sets:
            yield (
                s.key,
                s.label,
                int(s.width),
                int(s.height),
                s.n_keypoints,
                np.ascontiguousarray(s.descriptors).tobytes(),
                np.ascontiguousarray(s.keypoints, dtype=np.float32).tobytes(),
                records.image_descriptor_bytes(s),
            )

    for row in rows:
        if sequencefile:
            key, data = row
            key = str(key)
            record = records.ImageRecord(key, label_from_key(key), bytes(data))
        else:
            record = records.ImageRecord(row[0], row[1], bytes(row[2]) if row[2] is not None else b"")
        batch.append(record)
        if len(batch) >= EXTRACT_CHUNK:
            yield from flush()
            batch = []
    if batch:
        yield from flush()


def _descriptor_partition(
    dim: int, dtype: str, fraction: float | None, seed: int, index: int, rows: Iterable[Any]
) -> Iterator[tuple]:
    """(DenseVector,) per descriptor of a partition; a seeded Bernoulli sample of them when `fraction`."""
    from pyspark.ml.linalg import DenseVector

    rng = np.random.default_rng([seed, index]) if fraction is not None else None
    np_dtype = np.dtype(dtype)
    for n, blob in rows:
        if not n:
            continue
        desc = np.frombuffer(blob, dtype=np_dtype).reshape(n, dim).astype(np.float64)
        if rng is not None:
            desc = desc[rng.random(n) < fraction]
        for d in desc:
            yield (DenseVector(d),)


def _feature_sets(rows: list[Any], dim: int, dtype: str) -> list[records.FeatureSet]:
    np_dtype = np.dtype(dtype)
    out = []
    for row in rows:
        key, label, width, height, n, desc, kps = row[:7]
        image = records.image_descriptor_array(row[7]) if len(row) > 7 else None
        d = np.frombuffer(desc, dtype=np_dtype)
        p = np.frombuffer(kps, dtype=np.float32)
        if d.size != n * dim or p.size != n * 2:
            raise InputError(f"features of {key!r} are damaged: {n} keypoints but {d.size} descriptor values")
        out.append(records.FeatureSet(key, label, width, height, d.reshape(n, dim), p.reshape(n, 2), image))
    return out


def _chunks(rows: Iterable[Any], size: int) -> Iterator[list[Any]]:
    chunk: list[Any] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _encode_partition(
    encoder_bc: Any, done_acc: Any, dim: int, dtype: str, rows: Iterable[Any]
) -> Iterator[tuple]:
    prepare_worker()
    encoder = encoder_bc.value
    for chunk in _chunks(rows, ENCODE_CHUNK):
        sets = _feature_sets(chunk, dim, dtype)
        vectors = np.ascontiguousarray(encoder.transform(sets), dtype=np.float32)
        done_acc.add(len(sets))
        for s, v in zip(sets, vectors, strict=True):
            yield (s.key, s.label, v.tobytes())


def _predict_partition(model_bc: Any, dim: int, rows: Iterable[Any]) -> Iterator[tuple]:
    prepare_worker()
    model = model_bc.value
    for chunk in _chunks(rows, 4096):
        matrix = np.frombuffer(b"".join(bytes(r[2]) for r in chunk), dtype=np.float32)
        if matrix.size != len(chunk) * dim:
            raise InputError(f"bag-of-words vectors are damaged: expected {len(chunk)} x {dim} values")
        predicted = model.predict(matrix.reshape(len(chunk), dim))
        for r, p in zip(chunk, predicted, strict=True):
            yield (r[0], r[1], str(p))


class _ListParam:
    """Accumulator parameter of a list that tasks extend (pyspark duck-types AccumulatorParam)."""

    def zero(self, value: list) -> list:
        return []

    def addInPlace(self, a: list, b: list) -> list:  # noqa: N802 - pyspark's name
        a.extend(b)
        return a


class _ProgressPoller:
    """Reports a counter accumulator's growth to `progress` every `interval` s from a driver thread.

    Accumulator updates reach the driver as tasks finish, so progress moves per finished task.
    """

    def __init__(self, acc: Any, progress: Progress, interval: float = 0.5) -> None:
        self.acc, self.progress, self.interval = acc, progress, interval
        self.reported = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="visionlake-spark-progress", daemon=True)
        self._lock = threading.Lock()

    def _tick(self) -> None:
        with self._lock:
            value = int(self.acc.value)
            if value > self.reported and self.progress is not None:
                self.progress(value - self.reported)
            self.reported = max(self.reported, value)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._tick()

    def __enter__(self) -> _ProgressPoller:
        if self.progress is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self._stop.set()
            self._thread.join()
            self._tick()


# --- the engine --------------------------------------------------------------------------------------


class SparkEngine(Engine):
    """The batch steps on Spark. `master`: a Spark master URL (default "local[*]", all cores here).

    Reuses the active SparkSession when there is one (then `master` is ignored) and stops only a
    session it created itself. The session starts on first use (about 10 s) or on `start()`.
    """

    name = "spark"

    def __init__(self, master: str | None = None) -> None:
        _pyspark()
        self.master = master or "local[*]"
        self._spark: Any = None
        self._owned = False

    # --- session ---------------------------------------------------------------------------------

    def start(self) -> float:
        """Start (or join) the Spark session now; returns the seconds it took."""
        t0 = time.perf_counter()
        _ = self.spark
        return time.perf_counter() - t0

    @property
    def spark(self) -> Any:
        if self._spark is None:
            os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
            from pyspark import SparkContext
            from pyspark.sql import SparkSession

            # a context running anywhere in this process (any thread) is joined, never stopped by us
            if SparkContext._active_spark_context is not None:
                self._spark = SparkSession.getActiveSession() or SparkSession.builder.getOrCreate()
            else:
                self._spark = (
                    SparkSession.builder.master(self.master)
                    .appName("visionlake")
                    .config("spark.ui.enabled", "false")
                    .config("spark.ui.showConsoleProgress", "false")
                    .getOrCreate()
                )
                self._owned = True
                self._spark.sparkContext.setLogLevel("ERROR")
        return self._spark

    @property
    def _sc(self) -> Any:
        return self.spark.sparkContext

    def close(self) -> None:
        if self._spark is not None and self._owned:
            self._spark.stop()
        self._spark = None
        self._owned = False

    def _image_partitions(self, images: int) -> int:
        """Partitions for `images` images: one task per core at least, up to TASKS_PER_CORE per core
        (small tasks balance the cores at the end of a job) while tasks keep EXTRACT_CHUNK images."""
        cores = self._sc.defaultParallelism
        return max(cores, min(TASKS_PER_CORE * cores, -(-images // EXTRACT_CHUNK)))

    # --- steps -----------------------------------------------------------------------------------

    def pack(
        self, src: str, out: str, format: str = "parquet", progress: Progress = None, overwrite: bool = False
    ) -> PackReport:
        from pyspark import StorageLevel

        from ..batch.dataset import PackReport, check_pack_args, no_images_error
        from ..batch.outputs import staged_output

        started = time.perf_counter()
        src, out = os.path.abspath(os.fspath(src)), os.fspath(out)
        kind = check_pack_args(src, out, format, overwrite)
        report = PackReport(out=out, format=format)
        rejected_acc = self._sc.accumulator([], _ListParam())
        done_acc = self._sc.accumulator(0)
        rows = self._pack_source(src, kind, report, rejected_acc, done_acc)
        good = self.spark.createDataFrame(rows, _spark_struct(records.IMAGE_SCHEMA), verifySchema=False)
        # written beside `out`, which a failed run leaves as it was
        with staged_output(out) as tmp:
            with _ProgressPoller(done_acc, progress):
                if format == "sequencefile":
                    # pyspark looks at the first record before writing: persisted, the first partition
                    # is decoded once, not twice
                    pairs = good.rdd.map(_sequencefile_pair).persist(StorageLevel.MEMORY_AND_DISK)
                    try:
                        pairs.saveAsSequenceFile(_abs(tmp))
                    finally:
                        pairs.unpersist()
                else:
                    good.write.mode("overwrite").option("compression", "zstd").parquet(_abs(tmp))
            undecodable = rejected_sorted(Rejected(k, r) for k, r in rejected_acc.value)
            report.rejected = sorted([*report.rejected, *undecodable], key=lambda r: r.key)  # + repeated keys
            self._count_packed(tmp, format, report)
            if not report.images:
                raise no_images_error(src, report)
            if format == "parquet":
                records.write_sidecar(tmp, report.meta(src))
        report.seconds = time.perf_counter() - started
        return report

    def _pack_source(self, src: str, kind: str, report: PackReport, rejected_acc: Any, done_acc: Any) -> Any:
        """The checked rows of `src` (an RDD in source order); later rows of a repeated key are rejected."""
        from ..batch.dataset import open_dataset, scan_folder

        sc = self._sc
        if kind == "folder":
            files, report.ignored = scan_folder(src)
            slices = max(1, min(self._image_partitions(len(files)), len(files)))
            listed = sc.parallelize(list(enumerate(files)), slices)  # contiguous slices: order kept
            return listed.mapPartitions(partial(_pack_partition, rejected_acc, done_acc, True))
        n = open_dataset(src).count()
        target = self._image_partitions(n)
        if kind == "parquet":
            source = self.spark.read.parquet(_abs(src)).select("key", "label", "bytes").rdd
        else:
            source = sc.sequenceFile(_abs(src), minSplits=target)
        indexed = source.map(partial(_dataset_row, kind)).zipWithIndex().map(lambda ri: (ri[1], ri[0]))
        # keys seen more than once: (count, index of the first); the rest are rejected before decoding
        seen = indexed.map(lambda ir: (ir[1][0], (1, ir[0]))).reduceByKey(
            lambda a, b: (a[0] + b[0], min(a[1], b[1]))
        )
        repeated = dict(seen.filter(lambda kv: kv[1][0] > 1).collect())
        if repeated:
            first = {key: index for key, (_, index) in repeated.items()}
            indexed = indexed.filter(lambda ir: first.get(ir[1][0], ir[0]) == ir[0])
            report.rejected.extend(
                Rejected(key, "duplicate key: an earlier image has the same key")
                for key, (count, _) in sorted(repeated.items())
                for _ in range(count - 1)
            )
        if indexed.getNumPartitions() < target:  # spread over the cores, keeping the source order
            indexed = indexed.repartitionAndSortWithinPartitions(target, partial(_range_partition, n, target))
        return indexed.mapPartitions(partial(_pack_partition, rejected_acc, done_acc, False))

    def _count_packed(self, out: str, format: str, report: PackReport) -> None:
        """Images, bytes and images per label of what was written, read back from `out`."""
        from pyspark.sql import functions as F

        from ..batch.dataset import label_from_key

        if format == "sequencefile":
            pairs = self._sc.sequenceFile(_abs(out)).map(lambda kv: (label_from_key(str(kv[0])), len(kv[1])))
            stats = pairs.aggregateByKey((0, 0), _add_image, _add_counts).collect()
            per_label = [(label, n, size) for label, (n, size) in stats]
        else:
            frame = self.spark.read.parquet(_abs(out))
            agg = frame.groupBy("label").agg(F.count(F.lit(1)), F.sum(F.length("bytes"))).collect()
            per_label = [(row[0], int(row[1]), int(row[2] or 0)) for row in agg]
        for label, n, size in per_label:
            report.images += n
            report.bytes += size
            report.labels[label or ""] = n
        report.labels = dict(sorted(report.labels.items()))

    def extract(
        self, dataset: str, out: str, extractor: FeatureExtractor, progress: Progress = None
    ) -> ExtractReport:
        from pyspark.sql import functions as F

        from ..batch.dataset import open_dataset

        started = time.perf_counter()
        dataset = os.path.abspath(require_path(dataset, "dataset"))
        out = os.fspath(out)
        ds = open_dataset(dataset)  # InputError for a plain folder ("pack it first") or a non-image file
        extractor.fit([])
        meta = extractor.meta()
        sc = self._sc
        target = self._image_partitions(ds.count())
        if ds.format == "parquet":
            df = self.spark.read.parquet(dataset).select("key", "label", "bytes")
            if df.rdd.getNumPartitions() < target:
                df = df.repartition(target)
            images = df.rdd
        else:
            images = sc.sequenceFile(dataset, minSplits=target)
            if images.getNumPartitions() < target:
                images = images.repartition(target)

        rejected_acc = sc.accumulator([], _ListParam())
        done_acc = sc.accumulator(0)
        bc = sc.broadcast(extractor)
        try:
            rows = images.mapPartitions(
                partial(_extract_partition, bc, rejected_acc, done_acc, ds.format == "sequencefile")
            )
            frame = self.spark.createDataFrame(
                rows, _spark_struct(records.FEATURE_SCHEMA), verifySchema=False
            )
            with _ProgressPoller(done_acc, progress):
                frame.write.mode("overwrite").option("compression", "zstd").parquet(_abs(out))
        finally:
            bc.destroy()
        records.write_sidecar(out, meta)
        counts = (
            self.spark.read.parquet(_abs(out))
            .agg(
                F.count(F.lit(1)),
                F.sum("n_keypoints"),
                F.sum(F.when(F.col("n_keypoints") == 0, 1).otherwise(0)),
            )
            .first()
        )
        return ExtractReport(
            out=out,
            algo=meta["algo"],
            images=int(counts[0] or 0),
            descriptors=int(counts[1] or 0),
            empty=int(counts[2] or 0),
            seconds=time.perf_counter() - started,
            rejected=rejected_sorted(Rejected(k, r) for k, r in rejected_acc.value),
        )

    def train_vocabulary(
        self, features: str, k: int, *, sample: int | None = None, seed: int = 0, max_iter: int = 100
    ) -> Vocabulary:
        from pyspark import StorageLevel
        from pyspark.ml.clustering import KMeans
        from pyspark.ml.linalg import VectorUDT
        from pyspark.sql import functions as F
        from pyspark.sql.types import StructField, StructType

        from ..batch.vocabulary import Vocabulary

        features_meta, dim, dtype = features_layout(features)
        check_k(k)
        if sample is not None and (not isinstance(sample, int) or sample < 1):
            raise InputError(f"sample must be a number of descriptors >= 1, not {sample!r}")
        source = self.spark.read.parquet(_abs(features)).select("n_keypoints", "descriptors")
        total = int(source.agg(F.sum("n_keypoints")).first()[0] or 0)
        fraction = sample / total if sample is not None and sample < total else None
        vectors = source.rdd.mapPartitionsWithIndex(
            lambda index, rows: _descriptor_partition(dim, dtype, fraction, seed, index, rows)
        )
        schema = StructType([StructField("features", VectorUDT(), False)])
        data = self.spark.createDataFrame(vectors, schema, verifySchema=False).persist(
            StorageLevel.MEMORY_AND_DISK
        )
        try:
            n = data.count()
            if k > n:
                raise InputError(
                    f"k={k} visual words need at least {k} descriptors, but {features!r} has "
                    f"{n}{' in the sample' if fraction is not None else ''}: use a smaller k or more images"
                )
            started = time.perf_counter()
            model = KMeans(
                k=k, seed=seed, initMode="k-means||", maxIter=max_iter, tol=KMEANS_TOL, featuresCol="features"
            ).fit(data)
            seconds = time.perf_counter() - started
            summary = model.summary
            centers = np.asarray(model.clusterCenters(), dtype=np.float32).reshape(-1, dim)
            meta = vocabulary_meta(features, features_meta, self.name)
            meta.update(
                kind="vocabulary",
                method="mllib-kmeans||",
                seed=seed,
                k=int(centers.shape[0]),
                dim=dim,
                n_descriptors=n,
                sample=sample,
                max_iter=max_iter,
                iterations=int(summary.numIter),
                mean_sq_distance=float(summary.trainingCost) / n,
                seconds=seconds,
            )
        finally:
            data.unpersist()
        return Vocabulary(centers, meta)

    def encode(self, features: str, encoder: BowEncoder, out: str, progress: Progress = None) -> EncodeReport:
        from pyspark.sql import functions as F

        started = time.perf_counter()
        features_meta, dim, dtype = features_layout(features)
        n_out = fitted_encoder(encoder, dim, features)
        out = os.fspath(out)
        source = self.spark.read.parquet(_abs(features)).select(*feature_columns(features))
        stats = source.agg(F.sum("n_keypoints"), F.collect_set("label")).first()
        meta = bow_meta(encoder, n_out, features, features_meta, stats[1] or [])
        sc = self._sc
        done_acc = sc.accumulator(0)
        bc = sc.broadcast(encoder)
        schema = _spark_struct(records.BOW_SCHEMA)
        try:
            rows = source.rdd.mapPartitions(partial(_encode_partition, bc, done_acc, dim, dtype))
            frame = self.spark.createDataFrame(rows, schema, verifySchema=False)
            with _ProgressPoller(done_acc, progress):
                frame.write.mode("overwrite").option("compression", "zstd").parquet(_abs(out))
        finally:
            bc.destroy()
        records.write_sidecar(out, meta)
        images = self.spark.read.parquet(_abs(out)).count()
        return EncodeReport(
            out=out,
            images=int(images),
            dim=n_out,
            descriptors=int(stats[0] or 0),
            seconds=time.perf_counter() - started,
        )

    def predict(self, model: Any, bow: str) -> tuple[list[str], list[str | None], list[str]]:
        dim = bow_dim(bow)
        bc = self._sc.broadcast(model)
        try:
            source = self.spark.read.parquet(_abs(bow)).select("key", "label", "bow")
            rows = source.rdd.mapPartitions(partial(_predict_partition, bc, dim)).collect()
        finally:
            bc.destroy()
        return [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows]


def _abs(path: str) -> str:
    return os.path.abspath(path)


def _spark_struct(schema: Any) -> Any:
    """The Spark schema of a records layout (an Arrow schema of string, binary and int32 columns)."""
    import pyarrow as pa
    from pyspark.sql.types import BinaryType, IntegerType, StringType, StructField, StructType

    types = {pa.string(): StringType(), pa.binary(): BinaryType(), pa.int32(): IntegerType()}
    return StructType([StructField(f.name, types[f.type], True) for f in schema])


def _sequencefile_pair(row: Any) -> tuple[str, bytearray]:
    """(key, value) of a SequenceFile record: Spark writes str as Text and bytearray as BytesWritable."""
    return row[0], bytearray(row[2])


def _add_image(acc: tuple[int, int], size: int) -> tuple[int, int]:
    return acc[0] + 1, acc[1] + size


def _add_counts(a: tuple[int, int], b: tuple[int, int]) -> tuple[int, int]:
    return a[0] + b[0], a[1] + b[1]
