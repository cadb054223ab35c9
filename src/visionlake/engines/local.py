"""The local engine: the batch steps on a pool of worker processes on this machine (with
`processes=1`, in this process).

The parent process streams the input (images or feature rows) in batches, keeps about two batches per
worker in flight, and writes the results in input order into one Parquet file. Workers do the heavy
work and hand back ready-made Arrow tables, so the parent mostly moves bytes: extraction runs within a
few per cent of bare OpenCV loops on the same cores (bench/batch_extract.py).

Workers are started with "spawn" (safe next to threads: pyarrow's pools, a Spark driver in the same
process), once, on first use, and each runs OpenCV and BLAS single-threaded so N processes use N cores
(`engines.process`).
The estimator of a job (extractor, encoder) is pickled once in the parent and unpickled once per worker
(cached under a job token), not once per batch.

Also home of the input checks both engines share (`require_path`, `features_layout`).
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import pickle
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import TYPE_CHECKING, Any

import numpy as np

from ..batch import records
from ..errors import InputError, VisionlakeError
from .base import EncodeReport, Engine, ExtractReport, Progress, Rejected
from .process import prepare_worker

if TYPE_CHECKING:
    from ..batch.dataset import PackItem, PackReport, Verdict
    from ..batch.encode import BowEncoder
    from ..batch.features import FeatureExtractor
    from ..batch.vocabulary import Vocabulary

__all__ = [
    "FEATURE_COLUMNS",
    "LocalEngine",
    "feature_columns",
    "features_layout",
    "fitted_encoder",
    "require_path",
]

FEATURE_COLUMNS = records.FEATURE_REQUIRED
BOW_COLUMNS = ("key", "label", "bow")

#: Images per extraction task: big enough that the parent's per-task cost is noise, small enough that
#: the last tasks do not leave a worker idle for long (sized per dataset between these bounds).
EXTRACT_BATCH = (4, 128)
#: Images per pack task (decoded and hashed by a worker). A source with fewer than two tasks per worker
#: is checked in the parent: starting the workers would cost more than they save.
PACK_BATCH = 32
#: Feature rows per encoding task (sized per dataset between these bounds, like EXTRACT_BATCH).
ENCODE_BATCH = (16, 256)


# --- input checks shared by both engines -------------------------------------------------------------


def require_path(path: str | os.PathLike[str], what: str) -> str:
    """`path` as str; InputError naming it (and what it should have been) when it does not exist."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise InputError(f"{what} {path!r} does not exist")
    return path


def features_layout(features: str) -> tuple[dict[str, Any], int, str]:
    """(metadata, dim, dtype) of a features dataset; InputError when it is missing or not one."""
    require_path(features, "features dataset")
    records.check_columns(features, FEATURE_COLUMNS, "features")
    meta = records.read_meta(features)
    try:
        dim, dtype = int(meta["dim"]), str(np.dtype(meta["dtype"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(
            f"{features!r} has no usable descriptor layout in its metadata (dim, dtype): "
            "make it with `visionlake features extract`"
        ) from exc
    return meta, dim, dtype


def feature_columns(features: str) -> tuple[str, ...]:
    """The columns an encoder reads: FEATURE_COLUMNS, plus the image descriptors when the dataset has them."""
    import pyarrow.parquet as pq

    names = set(pq.read_schema(records.parquet_files(features)[0]).names)
    return FEATURE_COLUMNS + (("image_descriptor",) if "image_descriptor" in names else ())


def bow_dim(bow: str) -> int:
    """The vector length of a bag-of-words dataset; InputError when it is missing or not one."""
    require_path(bow, "bag-of-words dataset")
    records.check_columns(bow, BOW_COLUMNS, "bag-of-words")
    meta = records.read_meta(bow)
    if meta.get("dim") is None:
        raise InputError(
            f"{bow!r} has no vector length (dim) in its metadata: make it with `visionlake encode`"
        )
    return int(meta["dim"])


def fitted_encoder(encoder: BowEncoder, dim: int, features: str) -> int:
    """The encoder's output length; InputError if it is not fitted or its vocabulary does not fit `dim`.

    Any encoder of `visionlake.batch` (bag of words, VLAD, Fisher vectors, image descriptors only).
    """
    n_out = getattr(encoder, "n_features_out_", None)
    if n_out is None:
        name = type(encoder).__name__
        raise InputError(f"the {name} is not fitted: call encoder.fit([]) before encoding")
    expected = getattr(encoder, "descriptor_dim_", None)
    if expected is None and getattr(encoder, "vocabulary_", None) is not None:
        expected = encoder.vocabulary_.dim
    if expected is not None and int(expected) != dim:
        raise InputError(
            f"the encoder's vocabulary has dimension {expected} but the features {features!r} "
            f"have dimension {dim}: train the vocabulary on features of the same algorithm"
        )
    return int(n_out)


def bow_meta(
    encoder: BowEncoder, n_out: int, features: str, features_meta: dict[str, Any], labels: Iterable[str]
) -> dict[str, Any]:
    """The metadata of a bag-of-words dataset, the same from both engines.

    encoder.meta() plus what later steps need: the features' metadata (to rebuild the extractor), the
    encoder parameters without the vocabulary (to rebuild the encoder), the vocabulary file and the
    encoding digest when the caller set them (`vocabulary_path_`, `digest_`), and the sorted labels.
    """
    meta = dict(encoder.meta())
    params = {k: v for k, v in encoder.get_params().items() if k != "vocabulary"}
    if "pyramid" in params:
        params["pyramid"] = [int(level) for level in params["pyramid"]]
    vocabulary_path = getattr(encoder, "vocabulary_path_", None)
    if vocabulary_path is None and isinstance(getattr(encoder, "vocabulary", None), str | os.PathLike):
        vocabulary_path = os.path.abspath(encoder.vocabulary)
    meta.update(
        kind="bow",
        encoding=getattr(encoder, "encoding", "bow"),
        dim=n_out,
        features=os.path.abspath(features),
        features_meta=features_meta,
        encoder_params=params,
        vocabulary_path=vocabulary_path,
        digest=getattr(encoder, "digest_", None),
        labels=sorted(labels),
    )
    return meta


def label_set(features: str) -> set[str]:
    """The distinct labels of a features (or bag-of-words) dataset, reading only the label column."""
    labels: set[str] = set()
    for table in records.iter_tables(features, columns=["label"], batch_rows=65536):
        labels.update(v for v in table.column("label").to_pylist() if v is not None)
    return labels


def vocabulary_meta(features: str, features_meta: dict[str, Any], engine: str) -> dict[str, Any]:
    meta = {k: features_meta[k] for k in ("algo", "dim", "dtype") if k in features_meta}
    meta.update(engine=engine, features=os.path.abspath(features))
    return meta


# --- worker side -------------------------------------------------------------------------------------

_JOB: dict[str, Any] = {}


def _job(token: str, payload: bytes) -> Any:
    """The estimator of job `token`, unpickled on this worker's first task of the job only."""
    obj = _JOB.get(token)
    if obj is None:
        _JOB.clear()
        obj = _JOB[token] = pickle.loads(payload)
    return obj


def _ready() -> int:
    """A warm-up task: import what the steps use (OpenCV, scikit-learn) before the first real batch."""
    from ..batch import encode, features  # noqa: F401 - cv2, sklearn, scipy

    return os.getpid()


def _extract_task(token: str, payload: bytes, batch: list[records.ImageRecord]) -> tuple[Any, list, int, int]:
    extractor = _job(token, payload)
    sets, rejected = extractor.extract_records(batch)
    empty = sum(1 for s in sets if s.n_keypoints == 0)
    n_desc = sum(s.n_keypoints for s in sets)
    return records.feature_table(sets), rejected, empty, n_desc


def _encode_task(token: str, payload: bytes, table: Any, dim: int, dtype: str) -> tuple[Any, int]:
    encoder = _job(token, payload)
    sets = records.feature_sets(table, dim, dtype)
    vectors = encoder.transform(sets) if sets else np.zeros((0, encoder.n_features_out_), np.float32)
    n_desc = sum(s.n_keypoints for s in sets)
    return records.bow_table([s.key for s in sets], [s.label for s in sets], vectors), n_desc


#: The local engine's default worker processes when a command gives no --processes (else all CPUs).
PROCESSES_ENV = "VISIONLAKE_PROCESSES"


def default_processes() -> int:
    """VISIONLAKE_PROCESSES if set (a whole number >= 1), else one per CPU."""
    text = os.environ.get(PROCESSES_ENV, "").strip()
    if not text:
        return os.cpu_count() or 1
    if not text.isdigit() or int(text) < 1:
        raise InputError(f"{PROCESSES_ENV}={text!r}: expected a whole number of processes >= 1")
    return int(text)


class _InProcess:
    """The executor of `processes=1`: each task runs in this process when submitted.

    A pool of one spawned process would cost its start-up and a second import of OpenCV and
    scikit-learn (seconds) for no parallelism; the tasks and their results are the same. Like a
    pool worker, this process then runs OpenCV and BLAS single-threaded (`prepare_worker`).
    """

    def __init__(self) -> None:
        prepare_worker()

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        fut: Future = Future()
        try:
            fut.set_result(fn(*args))
        except BaseException as exc:  # noqa: BLE001 - handed over as a pool would: on result()
            fut.set_exception(exc)
        return fut

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        """Nothing runs in the background."""


# --- the engine --------------------------------------------------------------------------------------


class LocalEngine(Engine):
    """The batch steps on `processes` worker processes of this machine (default: one per CPU)."""

    name = "local"

    def __init__(self, processes: int | None = None) -> None:
        if processes is not None and (not isinstance(processes, int) or processes < 1):
            raise InputError(f"processes must be an integer >= 1, not {processes!r}")
        self.processes = processes or default_processes()
        self._pool: ProcessPoolExecutor | _InProcess | None = None

    # --- pool ------------------------------------------------------------------------------------

    def start(self) -> float:
        """Start the worker processes now (otherwise the first step does); returns the seconds it took."""
        t0 = time.perf_counter()
        pool = self._get_pool()
        # one task per worker: with "spawn" the pool starts a process per submitted task up to the limit
        for f in [pool.submit(_ready) for _ in range(self.processes)]:
            f.result()
        return time.perf_counter() - t0

    def _get_pool(self) -> ProcessPoolExecutor | _InProcess:
        if self._pool is None:
            if self.processes == 1:  # one worker: this process, without spawning and re-importing one
                self._pool = _InProcess()
            else:
                self._pool = ProcessPoolExecutor(
                    max_workers=self.processes,
                    mp_context=multiprocessing.get_context("spawn"),
                    initializer=prepare_worker,
                )
        return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def _ordered(self, fn: Callable[..., Any], tasks: Iterable[tuple]) -> Iterator[tuple[tuple, Any]]:
        """(task args, result) in task order, with at most 2 tasks per worker in flight."""
        pool = self._get_pool()
        pending: deque[tuple[tuple, Future]] = deque()
        limit = 2 * self.processes
        try:
            for args in tasks:
                pending.append((args, pool.submit(fn, *args)))
                while len(pending) >= limit:
                    args0, fut = pending.popleft()
                    yield args0, fut.result()
            while pending:
                args0, fut = pending.popleft()
                yield args0, fut.result()
        except BrokenProcessPool as exc:
            self._pool = None  # a worker died (killed, out of memory): a fresh pool next time
            raise VisionlakeError(f"a local worker process died: {exc}") from exc
        finally:
            for _, fut in pending:
                fut.cancel()

    # --- steps -----------------------------------------------------------------------------------

    def pack(
        self, src: str, out: str, format: str = "parquet", progress: Progress = None, overwrite: bool = False
    ) -> PackReport:
        from ..batch.dataset import pack

        return pack(src, out, format, progress, overwrite, checker=self._check_images)

    def _check_images(self, items: Iterator[PackItem]) -> Iterator[tuple[PackItem, Verdict]]:
        """Each item with its verdict, in order; decoding and hashing happen in the workers."""
        from ..batch.dataset import batched, check_here, check_images

        small = 2 * self.processes * PACK_BATCH
        head = list(itertools.islice(items, small))
        if len(head) < small:
            yield from check_here(iter(head))
            return
        tasks = ((batch,) for batch in batched(itertools.chain(head, items), PACK_BATCH))
        for (batch,), verdicts in self._ordered(check_images, tasks):
            yield from zip(batch, verdicts, strict=True)

    def extract(
        self, dataset: str, out: str, extractor: FeatureExtractor, progress: Progress = None
    ) -> ExtractReport:
        from ..batch.dataset import open_dataset

        started = time.perf_counter()
        require_path(dataset, "dataset")
        ds = open_dataset(dataset)
        extractor.fit([])
        meta = extractor.meta()
        token, payload = uuid.uuid4().hex, pickle.dumps(extractor)
        report = ExtractReport(out=os.fspath(out), algo=meta["algo"])
        batch = self._extract_batch_size(ds)
        tasks = ((token, payload, b) for b in ds.iter_batches(batch))
        with records.TableWriter(out, records.FEATURE_SCHEMA, meta) as writer:
            for (_, _, sent), (table, rejected, empty, n_desc) in self._ordered(_extract_task, tasks):
                writer.write(table)
                report.images += table.num_rows
                report.empty += empty
                report.descriptors += n_desc
                report.rejected.extend(rejected)
                if progress is not None:
                    progress(len(sent))
        report.seconds = time.perf_counter() - started
        return report

    def _extract_batch_size(self, ds: Any) -> int:
        """About 16 tasks per worker for small datasets, EXTRACT_BATCH[1] images per task for big ones.

        (Counting reads only Parquet footers or SequenceFile record headers.)
        """
        lo, hi = EXTRACT_BATCH
        return max(lo, min(hi, -(-ds.count() // (16 * self.processes))))

    def train_vocabulary(
        self, features: str, k: int, *, sample: int | None = None, seed: int = 0, max_iter: int = 100
    ) -> Vocabulary:
        from ..batch.vocabulary import read_descriptors, train_vocabulary

        features_meta, _dim, _dtype = features_layout(features)
        check_k(k)
        descriptors, _ = read_descriptors(features, sample=sample, seed=seed)
        if k > len(descriptors):
            raise InputError(
                f"k={k} visual words need at least {k} descriptors, but {features!r} has "
                f"{len(descriptors)}{' in the sample' if sample else ''}: use a smaller k or more images"
            )
        vocab = train_vocabulary(
            descriptors,
            k,
            seed=seed,
            sample=None,  # read_descriptors drew the sample while streaming
            max_iter=max_iter,
            meta=vocabulary_meta(features, features_meta, self.name),
        )
        vocab.meta["sample"] = sample
        return vocab

    def encode(self, features: str, encoder: BowEncoder, out: str, progress: Progress = None) -> EncodeReport:
        started = time.perf_counter()
        features_meta, dim, dtype = features_layout(features)
        n_out = fitted_encoder(encoder, dim, features)
        meta = bow_meta(encoder, n_out, features, features_meta, label_set(features))
        token, payload = uuid.uuid4().hex, pickle.dumps(encoder)
        report = EncodeReport(out=os.fspath(out), dim=n_out)
        lo, hi = ENCODE_BATCH
        rows = max(lo, min(hi, -(-records.count_rows(features) // (4 * self.processes))))
        tables = records.iter_tables(features, columns=feature_columns(features), batch_rows=rows)
        tasks = ((token, payload, t, dim, dtype) for t in tables)
        with records.TableWriter(out, records.BOW_SCHEMA, meta) as writer:
            for _, (table, n_desc) in self._ordered(_encode_task, tasks):
                writer.write(table)
                report.images += table.num_rows
                report.descriptors += n_desc
                if progress is not None:
                    progress(table.num_rows)
        report.seconds = time.perf_counter() - started
        return report

    def predict(self, model: Any, bow: str) -> tuple[list[str], list[str | None], list[str]]:
        dim = bow_dim(bow)
        keys: list[str] = []
        labels: list[str | None] = []
        predicted: list[str] = []
        for table in records.iter_tables(bow, batch_rows=8192):
            k, lab, x = records.bow_from_table(table, dim)
            keys += k
            labels += lab
            if len(k):
                predicted += [str(p) for p in model.predict(x)]
        return keys, labels, predicted


def check_k(k: int) -> None:
    if not isinstance(k, int | np.integer) or isinstance(k, bool) or k < 1:
        raise InputError(f"k (the number of visual words) must be an integer >= 1, not {k!r}")


def rejected_sorted(items: Iterable[Rejected]) -> list[Rejected]:
    """One entry per key, sorted by key (Spark may report a retried task's rejects twice)."""
    return sorted({r.key: r for r in items}.values(), key=lambda r: r.key)
