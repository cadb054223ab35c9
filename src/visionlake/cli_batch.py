"""Batch visual-feature commands: dataset, features, vocab, encode, classify and bovw.

Thin wrappers over `visionlake.batch.pipeline`: parse options, pick the engine, show progress, print
a summary (a table for people, `--format json|csv` for scripts). Bad input exits 2 with a message
naming it; a missing optional extra (Spark) exits 2 with the pip command that installs it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Annotated, Any

import typer

from .cli_common import FormatOpt, command_group, count_option, number_option, progress_bar
from .errors import InputError
from .output import Format, console, err_console, esc, human_bytes, plural, record_out, rows_out

dataset_app = command_group("Pack image folders and SequenceFiles into datasets.")
features_app = command_group("Local features (SIFT, ORB, AKAZE, dense SIFT) of a dataset.")
vocab_app = command_group("Visual vocabularies (k-means centres of descriptors).")
classify_app = command_group("Train, evaluate and apply bag-of-words classifiers.")
bovw_app = command_group("The whole bag-of-visual-words chain in one command.")

#: frames.MAX_SIDE (not imported: it brings OpenCV in at start-up)
MAX_SIDE = 16384

EngineOpt = Annotated[
    str, typer.Option("--engine", "-e", help="Where to run: local (a process pool) or spark")
]
MasterOpt = Annotated[
    str | None, typer.Option("--master", help="Spark master URL [default: local[*]] (with --engine spark)")
]
ProcessesOpt = Annotated[
    int | None,
    count_option("Local engine processes [default: all cores]", "--processes", max=1024),
]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace OUT if it exists")]
# options shared by the step commands and `bovw run` (each command sets its own default)
AlgoOpt = Annotated[str, typer.Option(help="sift, orb, akaze or dense-sift")]
MaxKeypointsOpt = Annotated[int, count_option("Keep the N strongest keypoints (0 = all)", min=0)]
SizeOpt = Annotated[
    int, count_option("Resize so the longer side is S pixels (0 = as is)", min=0, max=MAX_SIDE)
]
StepOpt = Annotated[int | None, count_option("dense-sift grid step in pixels", max=MAX_SIDE)]
RootOpt = Annotated[bool, typer.Option("--root/--no-root", help="RootSIFT (Hellinger) descriptors")]
PoolingOpt = Annotated[str, typer.Option(help="sum, max or count")]
AssignOpt = Annotated[str, typer.Option(help="hard (nearest word) or soft (kernel codebook)")]
NormOpt = Annotated[str, typer.Option(help="l1, l2, power (signed sqrt + l2) or none")]
PyramidOpt = Annotated[str, typer.Option(help="Spatial pyramid grid sizes, e.g. 1,2")]
ClassifierOpt = Annotated[str, typer.Option(help="linear-svm or logreg")]
COpt = Annotated[float, number_option("Regularisation constant C", "--c", "-C", max=1e9)]
#: numpy and scikit-learn take seeds in [0, 2**32)
SeedOpt = Annotated[int, count_option("Random seed", min=0, max=2**32 - 1)]


def register(app: typer.Typer) -> None:
    app.add_typer(dataset_app, name="dataset")
    app.add_typer(features_app, name="features")
    app.add_typer(vocab_app, name="vocab")
    app.command("encode")(encode)
    app.add_typer(classify_app, name="classify")
    app.add_typer(bovw_app, name="bovw")


def _engine(name: str, master: str | None, processes: int | None) -> Any:
    from .engines import open_engine

    if master and name != "spark":
        raise InputError(f"--master {master!r} is a Spark setting; add --engine spark")
    return open_engine(name, master=master, processes=processes)


@contextmanager
def _progress(description: str, total: int | None) -> Iterator[Any]:
    """A progress callback (items finished) drawing one bar; no-op output when not on a terminal."""
    with progress_bar() as bar:
        task = bar.add_task(description, total=total, info="")
        yield lambda n: bar.advance(task, n)


def _extractor_params(
    algo: str, max_keypoints: int, size: int, step: int | None, root: bool
) -> dict[str, Any]:
    """FeatureExtractor parameters from the command-line options (no --step: the extractor's default)."""
    params: dict[str, Any] = {"algo": algo, "max_keypoints": max_keypoints, "size": size, "root": root}
    if step is not None:
        params["dense_step"] = step
    return params


def _status(text: str, fmt: Format) -> Any:
    """A spinner for steps with no countable progress (only for people: tables on a terminal)."""
    if fmt == Format.table and err_console.is_terminal:
        return err_console.status(text, spinner="dots")
    return nullcontext()


def _summary(rows: list[tuple[str, Any]], fmt: Format, title: str) -> None:
    if fmt == Format.table:
        record_out(dict(rows), fmt, title=title)
    else:
        rows_out([k for k, _ in rows], [[v for _, v in rows]], fmt)


def _rejected(rejected: list[Any]) -> None:
    """List every input that could not be used, with its reason, on stderr (never silently dropped)."""
    for r in rejected[:50]:
        err_console.print(
            f"[yellow]skipped[/] {esc(r.key)}: {esc(r.reason)}", highlight=False, soft_wrap=True
        )
    if len(rejected) > 50:
        err_console.print(f"[yellow]... and {len(rejected) - 50} more[/]")


# --- dataset ---------------------------------------------------------------------------------------


@dataset_app.command("pack")
def dataset_pack(
    src: Annotated[str, typer.Argument(help="Image folder (label = sub-folder) or a Hadoop SequenceFile")],
    out: Annotated[str, typer.Argument(help="Output dataset file")],
    container: Annotated[
        str | None,
        typer.Option(
            "--container",
            help="parquet or sequencefile [default: sequencefile for OUT ending in .seq, else parquet]",
        ),
    ] = None,
    engine: EngineOpt = "local",
    master: MasterOpt = None,
    processes: ProcessesOpt = None,
    overwrite: OverwriteOpt = False,
    fmt: FormatOpt = Format.table,
) -> None:
    """Pack images into a dataset: Parquet (key, label, bytes, width, height, sha256) or a SequenceFile.

    Every image is decoded once, on the engine's workers; undecodable ones are listed and left out.
    The local engine writes one file, Spark a directory of part files; both engines read either.
    """
    with _engine(engine, master, processes) as eng, _progress("pack", None) as tick:
        if container is None:
            container = "sequencefile" if out.rstrip("/").endswith(".seq") else "parquet"
        report = eng.pack(src, out, format=container, progress=tick, overwrite=overwrite)
    _rejected(report.rejected)
    _summary(
        [
            ("out", report.out),
            ("format", report.format),
            ("engine", engine),
            ("images", report.images),
            ("bytes", human_bytes(report.bytes) if fmt == Format.table else report.bytes),
            ("labels", len(report.labels)),
            ("rejected", len(report.rejected)),
            ("ignored", report.ignored),
            ("seconds", round(report.seconds, 2)),
        ],
        fmt,
        "packed",
    )


@dataset_app.command("fashion-mnist")
def dataset_fashion_mnist(
    out_dir: Annotated[str, typer.Argument(help="Folder for train.parquet and test.parquet")],
    limit: Annotated[int | None, count_option("Only the first N images of each split")] = None,
    source: Annotated[
        str | None,
        typer.Option("--idx-dir", help="Folder of the IDX files [default: Debian's dataset-fashion-mnist]"),
    ] = None,
    fmt: FormatOpt = Format.table,
) -> None:
    """Fashion-MNIST (Debian package dataset-fashion-mnist) as a train and a test Parquet dataset."""
    from .batch.idx import FASHION_MNIST_DIR, import_fashion_mnist

    os.makedirs(out_dir, exist_ok=True)
    with _progress("fashion-mnist", None) as tick:
        reports = import_fashion_mnist(
            out_dir, source=source or FASHION_MNIST_DIR, limit=limit, progress=tick
        )
    rows_out(
        ["split", "out", "images", "labels", "seconds"],
        [[s, r.out, r.images, len(r.labels), round(r.seconds, 2)] for s, r in reports.items()],
        fmt,
        title="Fashion-MNIST",
    )


@dataset_app.command("info")
def dataset_info(
    path: Annotated[str, typer.Argument(help="A dataset (Parquet or SequenceFile)")],
    fmt: FormatOpt = Format.table,
) -> None:
    """Format, image count and images per label of a dataset."""
    from collections import Counter

    from .batch.dataset import open_dataset
    from .batch.records import iter_tables

    ds = open_dataset(path)
    labels: Counter[str] = Counter()
    if ds.format == "parquet":  # the label column alone, not every image's bytes
        for table in iter_tables(path, columns=["label"], batch_rows=65536):
            labels.update(label or "" for label in table.column("label").to_pylist())
    else:
        for batch in ds.iter_batches(512):
            labels.update(r.label or "" for r in batch)
    rows_out(
        ["label", "images"],
        sorted(labels.items()),
        fmt,
        title=f"{path}: {ds.format}, {plural(sum(labels.values()), 'image')}, {plural(len(labels), 'label')}",
    )


# --- features, vocabulary, encoding ----------------------------------------------------------------


@features_app.command("extract")
def features_extract(
    dataset: Annotated[str, typer.Argument(help="Image dataset (Parquet or SequenceFile)")],
    out: Annotated[str, typer.Argument(help="Output features (Parquet)")],
    algo: AlgoOpt = "sift",
    max_keypoints: MaxKeypointsOpt = 0,
    size: SizeOpt = 0,
    step: StepOpt = None,
    root: RootOpt = False,
    engine: EngineOpt = "local",
    master: MasterOpt = None,
    processes: ProcessesOpt = None,
    overwrite: OverwriteOpt = False,
    fmt: FormatOpt = Format.table,
) -> None:
    """Extract local features of every image; images with no keypoints are kept and counted."""
    from .batch.dataset import open_dataset
    from .batch.features import FeatureExtractor
    from .batch.pipeline import extract_features

    params = _extractor_params(algo, max_keypoints, size, step, root)
    total = open_dataset(dataset).count()
    with _engine(engine, master, processes) as eng, _progress(f"extract {algo}", total) as tick:
        report = extract_features(dataset, out, FeatureExtractor(**params), eng, tick, overwrite=overwrite)
    _rejected(report.rejected)
    _summary(
        [
            ("out", report.out),
            ("algo", report.algo),
            ("engine", engine),
            ("images", report.images),
            ("no_keypoints", report.empty),
            ("descriptors", report.descriptors),
            ("rejected", len(report.rejected)),
            ("seconds", round(report.seconds, 2)),
            ("images_per_second", round(report.images_per_second, 1)),
        ],
        fmt,
        "features extracted",
    )


@vocab_app.command("train")
def vocab_train(
    features: Annotated[str, typer.Argument(help="Features dataset (from `features extract`)")],
    out: Annotated[str, typer.Argument(help="Output vocabulary (.npz: centres + metadata)")],
    k: Annotated[int, count_option("Number of visual words", "-k", "--k")] = 1000,
    sample: Annotated[int | None, count_option("Train on a random sample of N descriptors")] = None,
    seed: Annotated[
        int, count_option("Random seed (same seed + engine = same vocabulary)", min=0, max=2**32 - 1)
    ] = 0,
    max_iter: Annotated[int, count_option("Most k-means iterations", max=100_000)] = 100,
    engine: EngineOpt = "local",
    master: MasterOpt = None,
    processes: ProcessesOpt = None,
    overwrite: OverwriteOpt = False,
    fmt: FormatOpt = Format.table,
) -> None:
    """K-means vocabulary: scikit-learn locally (k-means++, mini-batch when large), MLlib k-means|| on Spark."""
    from .batch.pipeline import train_vocabulary_file

    with _engine(engine, master, processes) as eng, _status("training the vocabulary", fmt):
        vocab = train_vocabulary_file(
            features, out, k, eng, sample=sample, seed=seed, max_iter=max_iter, overwrite=overwrite
        )
    m = vocab.meta
    _summary(
        [
            ("out", out),
            ("k", vocab.k),
            ("dim", vocab.dim),
            ("engine", m.get("engine", engine)),
            ("method", m.get("method", "")),
            ("descriptors", m.get("n_descriptors", "")),
            ("mean_sq_distance", m.get("mean_sq_distance", "")),
            ("seconds", round(float(m.get("seconds", 0.0)), 2)),
        ],
        fmt,
        "vocabulary trained",
    )


def parse_pyramid(text: str) -> tuple[int, ...]:
    """'1,2' → (1, 2); InputError for anything but positive integers."""
    try:
        levels = tuple(int(p) for p in text.split(",") if p.strip())
    except ValueError:
        levels = ()
    if not levels or any(v < 1 for v in levels):
        raise InputError(f"--pyramid must be grid sizes like 1,2 or 1,2,4, got {text!r}")
    return levels


def encode(
    features: Annotated[str, typer.Argument(help="Features dataset")],
    vocab: Annotated[str, typer.Argument(help="Vocabulary (.npz from `vocab train`)")],
    out: Annotated[str, typer.Argument(help="Output bags of words (Parquet)")],
    pooling: PoolingOpt = "sum",
    assign: AssignOpt = "hard",
    norm: NormOpt = "l2",
    pyramid: PyramidOpt = "1",
    sigma: Annotated[
        float | None,
        number_option(
            "Soft-assignment bandwidth [default: estimated]; give a test set its training set's", max=1e9
        ),
    ] = None,
    engine: EngineOpt = "local",
    master: MasterOpt = None,
    processes: ProcessesOpt = None,
    overwrite: OverwriteOpt = False,
    fmt: FormatOpt = Format.table,
) -> None:
    """Encode each image's descriptors as a bag of visual words (chunked BLAS assignment)."""
    from .batch.pipeline import encode_features
    from .batch.records import count_rows, read_meta

    params: dict[str, Any] = {
        "pooling": pooling,
        "assign": assign,
        "norm": norm,
        "pyramid": parse_pyramid(pyramid),
    }
    if sigma is not None:
        params["sigma"] = sigma
    total = count_rows(features)
    with _engine(engine, master, processes) as eng, _progress("encode", total) as tick:
        report = encode_features(features, vocab, out, eng, params, tick, overwrite=overwrite)
    _summary(
        [
            ("out", report.out),
            ("images", report.images),
            ("dim", report.dim),
            ("descriptors", report.descriptors),
            ("sigma", read_meta(report.out).get("encoder_params", {}).get("sigma")),
            ("seconds", round(report.seconds, 2)),
        ],
        fmt,
        "encoded",
    )


# --- classify --------------------------------------------------------------------------------------


@classify_app.command("train")
def classify_train(
    bow: Annotated[str, typer.Argument(help="Labelled bags of words (from `encode`)")],
    out: Annotated[str, typer.Argument(help="Output model file")],
    classifier: ClassifierOpt = "linear-svm",
    c: COpt = 1.0,
    vocab: Annotated[
        str | None, typer.Option(help="The vocabulary BOW was encoded with, if it moved")
    ] = None,
    seed: SeedOpt = 0,
    engine: EngineOpt = "local",
    master: MasterOpt = None,
    overwrite: OverwriteOpt = False,
    fmt: FormatOpt = Format.table,
) -> None:
    """Train a classifier; the saved model includes the extractor and the encoder, so it labels raw images.

    Linear models on k-dimensional vectors fit in memory, so training runs on this machine with either
    engine (the engine choice is accepted for uniformity; Spark does the distributed steps before it).
    """
    from .batch.pipeline import train_classifier

    _engine(engine, master, None).close()
    with _status("training", fmt):
        report = train_classifier(bow, out, classifier, c=c, seed=seed, vocabulary=vocab, overwrite=overwrite)
    _summary(
        [
            ("out", report.out),
            ("classifier", report.classifier),
            ("images", report.images),
            ("classes", len(report.classes)),
            ("train_accuracy", round(report.train_accuracy, 4)),
            ("seconds", round(report.seconds, 2)),
        ],
        fmt,
        "model trained",
    )


def _print_evaluation(evaluation: Any, fmt: Format, title: str) -> None:
    if fmt == Format.json:
        import json

        print(json.dumps(evaluation.to_dict()))
        return
    rows_out(
        ["class", "precision", "recall", "f1", "support"],
        [[p["class"], p["precision"], p["recall"], p["f1"], p["support"]] for p in evaluation.per_class],
        fmt,
        title=f"{title}: accuracy {evaluation.accuracy:.4f} on {evaluation.images} images",
    )


@classify_app.command("eval")
def classify_eval(
    model: Annotated[str, typer.Argument(help="Model file (from `classify train`)")],
    bow: Annotated[str, typer.Argument(help="Labelled bags of words encoded like the training set")],
    confusion: Annotated[
        str | None, typer.Option(help="Write the confusion matrix to PREFIX.csv and PREFIX.png")
    ] = None,
    engine: EngineOpt = "local",
    master: MasterOpt = None,
    processes: ProcessesOpt = None,
    fmt: FormatOpt = Format.table,
) -> None:
    """Accuracy, per-class precision and recall, and the confusion matrix (CSV + PNG)."""
    from .batch.classify import write_confusion_csv, write_confusion_png
    from .batch.pipeline import evaluate_model

    with _engine(engine, master, processes) as eng:
        evaluation = evaluate_model(model, bow, eng)
    if confusion:
        write_confusion_csv(evaluation, f"{confusion}.csv")
        write_confusion_png(evaluation, f"{confusion}.png")
        err_console.print(f"confusion matrix: {esc(confusion)}.csv, {esc(confusion)}.png")
    _print_evaluation(evaluation, fmt, "evaluation")


@classify_app.command("predict")
def classify_predict(
    model: Annotated[str, typer.Argument(help="Model file (from `classify train`)")],
    images: Annotated[list[Path], typer.Argument(help="Image files")],
    fmt: FormatOpt = Format.table,
) -> None:
    """Label image files with a trained model. Unreadable files are reported and make the exit code 1."""
    import cv2
    import numpy as np

    from .batch.model import BovwModel
    from .batch.records import ImageRecord

    m = BovwModel.load(model)
    records, errors = [], []
    for path in images:
        try:
            data = path.read_bytes()
        except OSError as exc:
            errors.append((str(path), f"unreadable: {exc.strerror or exc}"))
            continue
        if cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE) is None:
            errors.append((str(path), "OpenCV cannot decode it (not an image or truncated)"))
            continue
        records.append(ImageRecord(key=str(path), label=None, data=data))
    predictions = m.predict_records(records)
    rows = [[p.key, p.label, round(p.score, 4), ""] for p in predictions]
    rows += [[key, "", "", reason] for key, reason in errors]
    rows_out(["image", "label", "score", "error"], rows, fmt, title=f"predictions of {model}")
    if errors:
        raise typer.Exit(1)


# --- bovw run --------------------------------------------------------------------------------------


@bovw_app.command("run")
def bovw_run(
    train: Annotated[str, typer.Argument(help="Training dataset (Parquet or SequenceFile)")],
    test: Annotated[str, typer.Argument(help="Test dataset")],
    workdir: Annotated[
        str | None, typer.Option(help="Folder for every artefact [default: ./bovw-<time>]")
    ] = None,
    algo: AlgoOpt = "dense-sift",
    size: SizeOpt = 64,
    max_keypoints: MaxKeypointsOpt = 0,
    step: StepOpt = 4,
    root: RootOpt = True,
    k: Annotated[int, count_option("Vocabulary size", "-k", "--k")] = 512,
    sample: Annotated[int | None, count_option("Vocabulary trained on N descriptors")] = 200_000,
    seed: SeedOpt = 0,
    pooling: PoolingOpt = "sum",
    assign: AssignOpt = "soft",
    norm: NormOpt = "power",
    pyramid: PyramidOpt = "1,2",
    classifier: ClassifierOpt = "linear-svm",
    c: COpt = 1.0,
    engine: EngineOpt = "local",
    master: MasterOpt = None,
    processes: ProcessesOpt = None,
    fmt: FormatOpt = Format.table,
) -> None:
    """Extract, train a vocabulary, encode, train a classifier and evaluate it on TEST; prints the report."""
    import json
    import time

    from .batch.pipeline import BovwConfig, run_bovw

    params = _extractor_params(algo, max_keypoints, size, step, root)
    config = BovwConfig(
        algo=params.pop("algo"),
        size=params.pop("size"),
        max_keypoints=params.pop("max_keypoints"),
        extractor=params,
        k=k,
        sample=sample,
        seed=seed,
        encoder={"pooling": pooling, "assign": assign, "norm": norm, "pyramid": parse_pyramid(pyramid)},
        classifier=classifier,
        c=c,
    )
    workdir = workdir or f"bovw-{time.strftime('%Y%m%d-%H%M%S')}"
    with _engine(engine, master, processes) as eng:
        report = run_bovw(train, test, workdir, config, eng, _progress)
    for split, counts in report.extract.items():
        for r in counts["rejected"]:
            err_console.print(
                f"[yellow]skipped[/] {split} {esc(r['key'])}: {esc(r['reason'])}", highlight=False
            )
    if fmt == Format.json:
        print(json.dumps(report.to_dict()))
        return
    _print_evaluation(report.evaluation, fmt, f"bovw run ({report.engine})")
    if fmt == Format.table:
        steps = ", ".join(f"{k} {v:.1f} s" for k, v in report.steps.items())
        console.print(f"accuracy [bold]{report.accuracy:.4f}[/]; {steps}; artefacts in {esc(report.workdir)}")
