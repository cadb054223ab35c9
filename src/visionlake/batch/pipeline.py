"""The batch steps as plain functions over files, and `run_bovw`, the whole chain in one call.

Each step reads what the previous one wrote (Parquet datasets, a vocabulary `.npz`, a model file), so a
user can run the chain step by step from the CLI, change one step and re-run from there, or mix
engines (extract on Spark, train locally). The metadata each file carries (extractor parameters,
vocabulary, encoder settings) is what lets a later step check it is given matching inputs.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..engines.base import Engine, ExtractReport, Progress
from ..errors import InputError
from .classify import Evaluation, check_labels, evaluate, make_classifier
from .model import BovwModel
from .outputs import check_output, staged_output
from .records import bow_from_table, iter_tables, read_meta

__all__ = [
    "BovwConfig",
    "BovwReport",
    "encode_features",
    "encoding_digest",
    "evaluate_model",
    "extract_features",
    "read_bow",
    "run_bovw",
    "train_classifier",
    "train_vocabulary_file",
]

# Makes a progress callback for a step: (description, total or None) -> context manager yielding it.
ProgressFactory = Callable[[str, int | None], Any]


@contextmanager
def _no_progress(_description: str, _total: int | None) -> Iterator[Progress]:
    yield None


@contextmanager
def _fresh_output(path: str | os.PathLike[str], overwrite: bool) -> Iterator[str]:
    """A temporary path to write `path` to; it replaces any old output only if the step succeeds."""
    with staged_output(check_output(path, overwrite)) as tmp:
        yield tmp


def _require_kind(meta: dict[str, Any], kind: str, path: str, made_by: str) -> None:
    if meta.get("kind") != kind:
        found = meta.get("kind") or "no visionlake metadata"
        raise InputError(f"{path!r} is not a {kind} dataset ({found}); make one with `visionlake {made_by}`")


# --- steps ---------------------------------------------------------------------------------------


def extract_features(
    dataset: str, out: str, extractor: Any, engine: Engine, progress: Progress = None, overwrite: bool = False
) -> ExtractReport:
    """Features of every image of `dataset` into `out` (Parquet); bad images listed in the report."""
    from .dataset import open_dataset

    open_dataset(dataset)  # a clear error for a missing or unreadable dataset before any work starts
    extractor.fit([])
    with _fresh_output(out, overwrite) as tmp:
        report = engine.extract(dataset, tmp, extractor, progress)
    report.out = os.fspath(out)
    return report


def train_vocabulary_file(
    features: str,
    out: str,
    k: int,
    engine: Engine,
    *,
    sample: int | None = None,
    seed: int = 0,
    max_iter: int = 100,
    overwrite: bool = False,
    gmm: bool = False,
    pca_dim: int | None = 64,
) -> Any:
    """Train a k-word vocabulary on `features` and save it (centres + metadata) to `out`.

    gmm: also fit what Fisher vectors need, PCA to `pca_dim` dimensions and a diagonal GMM of k
    components started from the k-means centres (at most fisher.GMM_MAX_ITER EM iterations), on this
    machine, on a sample of `sample` descriptors (fisher.GMM_SAMPLE when None), saved in the same file.
    """
    meta = read_meta(features)
    _require_kind(meta, "features", features, "features extract")
    if k < 1:
        raise InputError(f"-k must be at least 1, got {k}")
    if meta.get("dim") == 0:
        raise InputError(
            f"{features!r} holds {meta.get('algo')} features: no local descriptors to train a vocabulary on "
            "(encode them with --encoding none)"
        )
    with _fresh_output(out, overwrite) as tmp:
        vocab = engine.train_vocabulary(features, k, sample=sample, seed=seed, max_iter=max_iter)
        vocab.meta.setdefault("features", os.path.abspath(features))
        if gmm:
            _add_gmm(vocab, features, sample=sample, seed=seed, pca_dim=pca_dim)
        vocab.save(tmp)
    return vocab


def _add_gmm(vocab: Any, features: str, *, sample: int | None, seed: int, pca_dim: int | None) -> None:
    from .fisher import GMM_MAX_ITER, GMM_SAMPLE, fit_gmm
    from .vocabulary import read_descriptors

    started = time.perf_counter()
    n = GMM_SAMPLE if sample is None else sample
    descriptors, _ = read_descriptors(features, sample=n, seed=seed)
    gmm = fit_gmm(descriptors, vocab.k, pca_dim=pca_dim, seed=seed, init_centers=vocab.centers)
    vocab.arrays.update(gmm.to_arrays())
    vocab.meta["gmm"] = {
        "k": gmm.k,
        "pca_dim": pca_dim,
        "reduced_dim": gmm.reduced_dim,
        "covariance": "diag",
        "max_iter": GMM_MAX_ITER,
        "n_descriptors": len(descriptors),
        "seconds": round(time.perf_counter() - started, 3),
    }


def _load_vocabulary(path: str, features_meta: dict[str, Any], features: str) -> Any:
    from .vocabulary import Vocabulary

    vocab = Vocabulary.load(path)
    dim = features_meta.get("dim")
    if dim is not None and int(dim) != vocab.dim:
        raise InputError(
            f"vocabulary {path!r} has dimension {vocab.dim} but the features {features!r} have dimension "
            f"{dim} ({features_meta.get('algo', '?')}); train the vocabulary on features of the same algorithm"
        )
    if features_meta.get("algo") and vocab.meta.get("algo") and vocab.meta["algo"] != features_meta["algo"]:
        raise InputError(
            f"vocabulary {path!r} was trained on {vocab.meta['algo']} features but {features!r} holds "
            f"{features_meta['algo']} features"
        )
    return vocab


def encoding_digest(vocab: Any, encoder_params: dict[str, Any], encoding: str = "bow") -> str:
    """Identifies an encoding: the vocabulary's centres (and GMM), the encoding and its settings."""
    h = hashlib.sha256()
    if vocab is not None:
        h.update(np.ascontiguousarray(vocab.centers, dtype=np.float32).tobytes())
        for name in sorted(vocab.arrays):
            h.update(name.encode())
            h.update(np.ascontiguousarray(vocab.arrays[name]).tobytes())
    settings = {k: v for k, v in encoder_params.items() if k not in ("vocabulary", "chunk_size")}
    if encoding != "bow":  # bags of words keep the digests they had before other encodings existed
        settings["encoding"] = encoding
    h.update(json.dumps(settings, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


def encode_features(
    features: str,
    vocabulary: str | None,
    out: str,
    engine: Engine,
    encoder_params: dict[str, Any] | None = None,
    progress: Progress = None,
    overwrite: bool = False,
    encoding: str = "bow",
) -> Any:
    """Encode every row of `features` into `out`: one vector per image.

    encoding: "bow" (bags of visual words), "vlad", "fisher" (needs a vocabulary trained with
    `gmm=True`) or "none" (the features' image descriptor alone, no vocabulary). An image descriptor
    (HOG) in the features is appended to the bow, vlad and fisher vectors.
    """
    from .encode import ENCODINGS, make_encoder

    if encoding not in ENCODINGS:
        raise InputError(f"unknown encoding {encoding!r}: use one of {', '.join(ENCODINGS)}")
    meta = read_meta(features)
    _require_kind(meta, "features", features, "features extract")
    params = dict(encoder_params or {})
    image_dim = int((meta.get("image_descriptor") or {}).get("dim", 0))
    params["image_dim"] = image_dim
    if encoding == "none":
        if vocabulary is not None:
            raise InputError("--encoding none encodes the image descriptor alone: it takes no vocabulary")
        if not image_dim:
            raise InputError(
                f"{features!r} has no image descriptor to encode with --encoding none: "
                "extract features with --algo hog (or --hog)"
            )
        vocab = None
    else:
        if meta.get("dim") == 0:
            raise InputError(
                f"{features!r} holds {meta.get('algo')} features, no local descriptors to encode with "
                f"--encoding {encoding}: use --encoding none, or extract local features with --hog"
            )
        if vocabulary is None:
            raise InputError(f"--encoding {encoding} needs a vocabulary (`visionlake vocab train`)")
        vocab = _load_vocabulary(vocabulary, meta, features)
        if encoding == "fisher" and not any(name.startswith("fisher_") for name in vocab.arrays):
            raise InputError(
                f"vocabulary {vocabulary!r} has no GMM for Fisher vectors: train it with "
                "`visionlake vocab train --gmm`"
            )
    encoder = make_encoder(encoding, vocab, **params)
    # soft assignment estimates its bandwidth from descriptors: the first rows are enough for a median
    soft = encoding == "bow" and params.get("assign") == "soft"
    encoder.fit(_first_feature_sets(features, meta) if soft else [])
    if getattr(encoder, "sigma_", None) is not None:
        encoder.sigma = float(encoder.sigma_)  # recorded, so the model rebuilds the same encoder
    encoder.digest_ = encoding_digest(vocab, encoder.get_params(), encoding)
    encoder.vocabulary_path_ = None if vocabulary is None else os.path.abspath(vocabulary)
    with _fresh_output(out, overwrite) as tmp:
        report = engine.encode(features, encoder, tmp, progress)
    report.out = os.fspath(out)
    return report


def _first_feature_sets(features: str, meta: dict[str, Any], rows: int = 1000) -> list[Any]:
    from .records import feature_sets

    table = next(iter_tables(features, batch_rows=rows), None)
    return [] if table is None else feature_sets(table, int(meta["dim"]), str(meta["dtype"]))


def read_bow(path: str) -> tuple[list[str], list[str | None], np.ndarray, dict[str, Any]]:
    """Keys, labels, the (n, dim) matrix and the metadata of a bag-of-words dataset."""
    meta = read_meta(path)
    _require_kind(meta, "bow", path, "encode")
    dim = int(meta["dim"])
    keys: list[str] = []
    labels: list[str | None] = []
    parts = []
    for table in iter_tables(path, batch_rows=8192):
        k, lab, x = bow_from_table(table, dim)
        keys += k
        labels += lab
        parts.append(x)
    matrix = np.concatenate(parts) if parts else np.zeros((0, dim), np.float32)
    return keys, labels, matrix, meta


@dataclass
class TrainReport:
    out: str
    classifier: str
    images: int
    classes: list[str]
    train_accuracy: float
    seconds: float


def train_classifier(
    bow: str,
    out: str,
    classifier: str = "linear-svm",
    *,
    c: float = 1.0,
    seed: int = 0,
    vocabulary: str | None = None,
    overwrite: bool = False,
) -> TrainReport:
    """Train a classifier on `bow` and save the whole pipeline (extractor, encoder, classifier)."""
    from sklearn.pipeline import Pipeline

    from .encode import make_encoder
    from .features import FeatureExtractor

    started = time.perf_counter()
    clf = make_classifier(classifier, c=c, seed=seed)
    keys, labels, x, meta = read_bow(bow)
    y = check_labels(labels, f"bag-of-words dataset {bow!r}")
    out = check_output(out, overwrite)  # before the training; the old model stays until the new is saved
    features_meta = meta.get("features_meta") or {}
    encoding = meta.get("encoding", "bow")
    vocab_path = vocabulary or meta.get("vocabulary_path")
    vocab = None
    if encoding != "none":
        if not vocab_path or not os.path.isfile(vocab_path):
            raise InputError(
                f"the vocabulary {vocab_path!r} used to encode {bow!r} is not there; pass it with --vocab"
            )
        vocab = _load_vocabulary(vocab_path, features_meta, bow)
    encoder = make_encoder(encoding, vocab, **meta.get("encoder_params", {}))
    encoder.fit([])
    if encoding_digest(vocab, encoder.get_params(), encoding) != meta.get("digest"):
        raise InputError(f"vocabulary {vocab_path!r} is not the one {bow!r} was encoded with")
    extractor = FeatureExtractor(**features_meta.get("params", {}))
    extractor.fit([])
    clf.fit(x, y)
    pipeline = Pipeline([("features", extractor), ("bow", encoder), ("classifier", clf)])
    train_accuracy = float(np.mean(clf.predict(x) == y)) if len(y) else 0.0
    model = BovwModel(
        pipeline=pipeline,
        meta={
            "classifier": classifier,
            "C": c,
            "classes": [str(v) for v in clf.classes_],
            "images": len(keys),
            "train_accuracy": train_accuracy,
            "digest": meta.get("digest"),
            "encoding": encoding,
            "bow": os.path.abspath(bow),
            "vocabulary": os.path.abspath(vocab_path) if vocab is not None else None,
            "features": features_meta,
            "trained_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        },
    )
    with staged_output(out) as tmp:
        model.save(tmp)
    return TrainReport(
        out=out,
        classifier=classifier,
        images=len(keys),
        classes=model.classes,
        train_accuracy=train_accuracy,
        seconds=time.perf_counter() - started,
    )


def evaluate_model(model_path: str, bow: str, engine: Engine) -> Evaluation:
    """Accuracy, per-class precision/recall and the confusion matrix of a model on a labelled BoW set."""
    model = BovwModel.load(model_path)
    meta = read_meta(bow)
    _require_kind(meta, "bow", bow, "encode")
    if meta.get("digest") != model.meta.get("digest"):
        raise InputError(
            f"{bow!r} was encoded with a different vocabulary or encoder settings than model {model_path!r}; "
            "encode it with the vocabulary and options the model was trained with"
        )
    _keys, true, predicted = engine.predict(model.classifier, bow)
    return evaluate(true, [str(p) for p in predicted], model.classes)


# --- the whole chain -----------------------------------------------------------------------------


#: Vocabulary (or GMM) size of each encoding when BovwConfig.k is None: VLAD and Fisher vectors hold
#: k x 128 (k x 2 x 64) values per image, so far fewer words than a bag of words reach the same length.
DEFAULT_K = {"bow": 512, "vlad": 64, "fisher": 64, "none": 0}
#: Encoder parameters of each encoding when BovwConfig.encoder is None (the measured ones for bow).
DEFAULT_ENCODER: dict[str, dict[str, Any]] = {
    "bow": {"pooling": "sum", "assign": "soft", "norm": "power", "pyramid": (1, 2)},
    "vlad": {"norm": "power", "pyramid": (1,)},
    "fisher": {"norm": "power", "pyramid": (1,)},
    "none": {"norm": "l2"},
}


@dataclass
class BovwConfig:
    """Every knob of the chain, with the defaults that reach the documented Fashion-MNIST accuracy.

    `visionlake bovw run` has the same defaults (tests/batch/test_bovw.py checks that they agree).
    encoding: "bow", "vlad", "fisher" or "none" (with algo="hog": the HOG alone). k None and encoder
    None take the encoding's defaults (DEFAULT_K, DEFAULT_ENCODER); encoder entries given replace
    those defaults one by one. pca_dim: PCA dimensions before the GMM of Fisher vectors.
    """

    algo: str = "dense-sift"
    max_keypoints: int = 0
    size: int = 64
    # other FeatureExtractor parameters (hog=True appends a global HOG to every encoding)
    extractor: dict[str, Any] = field(default_factory=lambda: {"dense_step": 4, "root": True})
    encoding: str = "bow"
    k: int | None = None
    sample: int | None = 200_000
    seed: int = 0
    max_iter: int = 100
    # parameters of the encoder (BowEncoder: pooling, assign, norm, pyramid, ...)
    encoder: dict[str, Any] | None = None
    pca_dim: int | None = 64
    classifier: str = "linear-svm"
    c: float = 1.0

    def extractor_params(self) -> dict[str, Any]:
        return {"algo": self.algo, "max_keypoints": self.max_keypoints, "size": self.size, **self.extractor}

    def vocabulary_size(self) -> int:
        self._check_encoding()
        return DEFAULT_K[self.encoding] if self.k is None else self.k

    def encoder_params(self) -> dict[str, Any]:
        self._check_encoding()
        return {**DEFAULT_ENCODER[self.encoding], **(self.encoder or {})}

    def _check_encoding(self) -> None:
        if self.encoding not in DEFAULT_K:
            raise InputError(f"unknown encoding {self.encoding!r}: use one of {', '.join(DEFAULT_K)}")


@dataclass
class BovwReport:
    accuracy: float
    evaluation: Evaluation
    config: dict[str, Any]
    engine: str
    workdir: str
    model: str
    steps: dict[str, float] = field(default_factory=dict)  # seconds per step
    extract: dict[str, dict[str, Any]] = field(default_factory=dict)  # split -> counts

    def to_dict(self) -> dict[str, Any]:
        return {
            "accuracy": round(self.accuracy, 6),
            "engine": self.engine,
            "workdir": self.workdir,
            "model": self.model,
            "config": self.config,
            "steps_seconds": {k: round(v, 3) for k, v in self.steps.items()},
            "extract": self.extract,
            "evaluation": self.evaluation.to_dict(),
        }


def run_bovw(
    train: str,
    test: str,
    workdir: str,
    config: BovwConfig,
    engine: Engine,
    progress: ProgressFactory = _no_progress,
) -> BovwReport:
    """Extract → vocabulary → encode → train → evaluate; every artefact is kept in `workdir`."""
    from .dataset import open_dataset
    from .features import FeatureExtractor

    encoding, k, encoder_params = config.encoding, config.vocabulary_size(), config.encoder_params()
    global_only = config.algo == "hog"
    if global_only != (encoding == "none"):
        raise InputError(
            "--algo hog gives only a global HOG per image: use it with --encoding none"
            if global_only
            else f"--encoding none needs --algo hog, not --algo {config.algo} (add --hog to append a HOG)"
        )
    FeatureExtractor(**config.extractor_params()).fit()  # bad extractor settings fail before any work
    datasets = {"train": open_dataset(train), "test": open_dataset(test)}
    os.makedirs(workdir, exist_ok=True)
    path = {name: os.path.join(workdir, name) for name in ("vocabulary.npz", "model.joblib")}
    steps: dict[str, float] = {}
    counts: dict[str, dict[str, Any]] = {}

    def timed(step: str) -> Callable[[], None]:
        start = time.perf_counter()
        return lambda: steps.__setitem__(step, steps.get(step, 0.0) + time.perf_counter() - start)

    for split, ds in datasets.items():
        done = timed("extract")
        out = os.path.join(workdir, f"{split}-features.parquet")
        with progress(f"extract {split}", ds.count()) as tick:
            report = extract_features(
                ds.path, out, FeatureExtractor(**config.extractor_params()), engine, tick, overwrite=True
            )
        counts[split] = {
            "images": report.images,
            "empty": report.empty,
            "descriptors": report.descriptors,
            "rejected": [{"key": r.key, "reason": r.reason} for r in report.rejected],
        }
        done()
    reported_encoder = dict(encoder_params)
    vocabulary: str | None = None
    if encoding != "none":
        done = timed("vocabulary")
        vocabulary = path["vocabulary.npz"]
        train_vocabulary_file(
            os.path.join(workdir, "train-features.parquet"),
            vocabulary,
            k,
            engine,
            sample=config.sample,
            seed=config.seed,
            max_iter=config.max_iter,
            overwrite=True,
            gmm=encoding == "fisher",
            pca_dim=config.pca_dim,
        )
        done()
    for split in datasets:  # train first: the test set is encoded with the settings learnt on it
        done = timed("encode")
        out = os.path.join(workdir, f"{split}-bow.parquet")
        with progress(f"encode {split}", counts[split]["images"]) as tick:
            encode_features(
                os.path.join(workdir, f"{split}-features.parquet"),
                vocabulary,
                out,
                engine,
                encoder_params,
                tick,
                overwrite=True,
                encoding=encoding,
            )
        sigma = read_meta(out).get("encoder_params", {}).get("sigma")
        if sigma is not None:
            encoder_params["sigma"] = sigma
        done()
    done = timed("train")
    train_classifier(
        os.path.join(workdir, "train-bow.parquet"),
        path["model.joblib"],
        config.classifier,
        c=config.c,
        seed=config.seed,
        overwrite=True,
    )
    done()
    done = timed("evaluate")
    evaluation = evaluate_model(path["model.joblib"], os.path.join(workdir, "test-bow.parquet"), engine)
    done()
    return BovwReport(
        accuracy=evaluation.accuracy,
        evaluation=evaluation,
        config={
            **config.extractor_params(),
            "encoding": encoding,
            "k": k,
            "sample": config.sample,
            "seed": config.seed,
            "encoder": {**reported_encoder, **({"pca_dim": config.pca_dim} if encoding == "fisher" else {})},
            "classifier": config.classifier,
            "C": config.c,
        },
        engine=engine.name,
        workdir=os.path.abspath(workdir),
        model=os.path.abspath(path["model.joblib"]),
        steps=steps,
        extract=counts,
    )
