"""Batch visual-feature commands: dataset, features, vocab, encode, classify and bovw (alias chain).

Thin wrappers over `visionlake.batch.pipeline`: parse options, pick the engine, show progress, print
a summary (a table for people, `--format json|csv` for scripts). Bad input exits 2 with a message
naming it; a missing optional extra (Spark) exits 2 with the pip command that installs it.
"""

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
features_app = command_group("Image features (SIFT, ORB, AKAZE, dense SIFT, a global HOG) of a dataset.")
vocab_app = command_group("Visual vocabularies (k-means centres of descriptors).")
classify_app = command_group("Train, evaluate and apply bag-of-words classifiers.")
bovw_app = command_group(
    "The whole chain in one command: features, vocabulary, encoding (bow, VLAD, Fisher), classifier."
)

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
AlgoOpt = Annotated[str, typer.Option(help="sift, orb, akaze, dense-sift or hog (a global HOG only)")]
MaxKeypointsOpt = Annotated[int, count_option("Keep the N strongest keypoints (0 = all)", min=0)]
SizeOpt = Annotated[
    int, count_option("Resize so the longer side is S pixels (0 = as is)", min=0, max=MAX_SIDE)
]
StepOpt = Annotated[int | None, count_option("dense-sift grid step in pixels", max=MAX_SIDE)]
RootOpt = Annotated[bool, typer.Option("--root/--no-root", help="RootSIFT (Hellinger) descriptors")]
HogOpt = Annotated[
    bool, typer.Option("--hog/--no-hog", help="Also a global HOG per image, appended to every encoding")
]
HogSizeOpt = Annotated[
    int, count_option("HOG window: the image is resized to S x S pixels", "--hog-size", min=4, max=4096)
]
HogCellOpt = Annotated[int, count_option("HOG cell side in pixels", "--hog-cell", min=2, max=2048)]
#: encode.ENCODINGS (not imported: it brings scikit-learn in at start-up)
ENCODINGS = ("bow", "vlad", "fisher", "none")
EncodingOpt = Annotated[
    str,
    typer.Option(
        help="bow (bag of visual words), vlad, fisher (Fisher vectors; a vocabulary trained with --gmm) "
        "or none (the image descriptor alone: features of --algo hog)"
    ),
]
PoolingOpt = Annotated[str | None, typer.Option(help="bow: sum, max or count [default: sum]")]
AssignOpt = Annotated[
    str | None, typer.Option(help="bow: hard (nearest word) or soft (kernel codebook) [default: hard]")
]
NormOpt = Annotated[
    str | None,
    typer.Option(
        help="l1, l2, power (signed sqrt + l2) or none [default: l2 for bow, power for vlad, fisher]"
    ),
]
PyramidOpt = Annotated[str | None, typer.Option(help="Spatial pyramid grid sizes, e.g. 1,2 [default: 1]")]
PcaOpt = Annotated[int, count_option("fisher: PCA dimensions of the descriptors before the GMM", "--pca")]
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
    # `bovw run` runs VLAD and Fisher vectors too: `chain run` is the same command under a name that
    # says so (bovw stays for existing scripts)
    app.add_typer(bovw_app, name="chain")


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
    algo: str,
    max_keypoints: int,
    size: int,
    step: int | None,
    root: bool,
    hog: bool = False,
    hog_size: int = 64,
    hog_cell: int = 8,
) -> dict[str, Any]:
    """FeatureExtractor parameters from the command-line options (no --step: the extractor's default)."""
    params: dict[str, Any] = {"algo": algo, "max_keypoints": max_keypoints, "size": size, "root": root}
    if algo == "hog":
        params["root"] = False  # no SIFT descriptors to take the root of (`bovw run` defaults to --root)
    if step is not None:
        params["dense_step"] = step
    if hog or algo == "hog" or (hog_size, hog_cell) != (64, 8):
        params.update(hog=hog, hog_size=hog_size, hog_cell=hog_cell)
    return params


def _check_encoding(encoding: str) -> str:
    if encoding not in ENCODINGS:
        import difflib

        close = difflib.get_close_matches(encoding, ENCODINGS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise InputError(f"unknown --encoding {encoding!r}: use one of {', '.join(ENCODINGS)}{hint}")
    return encoding


def _encoder_params(
    encoding: str,
    pooling: str | None,
    assign: str | None,
    norm: str | None,
    pyramid: str | None,
    sigma: float | None = None,
) -> dict[str, Any]:
    """The encoder options given on the command line (the others keep the encoding's defaults).

    An option that does not apply to the encoding (--assign with vlad) is an error, not ignored.
    """
    given = {"pooling": pooling, "assign": assign, "norm": norm, "sigma": sigma}
    params: dict[str, Any] = {name: value for name, value in given.items() if value is not None}
    if pyramid is not None:
        params["pyramid"] = parse_pyramid(pyramid)
    takes = {"bow": set(given) | {"pyramid"}, "vlad": {"norm", "pyramid"}, "fisher": {"norm", "pyramid"}}
    wrong = sorted(set(params) - takes.get(encoding, {"norm"}))
    if wrong:
        options = ", ".join(f"--{name}" for name in wrong)
        raise InputError(f"{options} does not apply to --encoding {encoding}")
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
    hog: HogOpt = False,
    hog_size: HogSizeOpt = 64,
    hog_cell: HogCellOpt = 8,
    engine: EngineOpt = "local",
    master: MasterOpt = None,
    processes: ProcessesOpt = None,
    overwrite: OverwriteOpt = False,
    fmt: FormatOpt = Format.table,
) -> None:
    """Extract features of every image; images with no keypoints are kept and counted.

    --algo hog gives one global HOG per image and no local descriptors (encode it with --encoding
    none); --hog adds that HOG to local features, and every encoding appends it to its vector.
    """
    from .batch.dataset import open_dataset
    from .batch.features import FeatureExtractor
    from .batch.pipeline import extract_features

    params = _extractor_params(algo, max_keypoints, size, step, root, hog, hog_size, hog_cell)
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
    gmm: Annotated[
        bool,
        typer.Option(
            "--gmm/--no-gmm", help="Also fit PCA + a diagonal GMM of k components (for --encoding fisher)"
        ),
    ] = False,
    pca: PcaOpt = 64,
    engine: EngineOpt = "local",
    master: MasterOpt = None,
    processes: ProcessesOpt = None,
    overwrite: OverwriteOpt = False,
    fmt: FormatOpt = Format.table,
) -> None:
    """K-means vocabulary: scikit-learn locally (k-means++, mini-batch when large), MLlib k-means|| on Spark.

    --gmm also fits what Fisher vectors need, on this machine with either engine: PCA to --pca
    dimensions and a diagonal GMM started from the k-means centres, on the same --sample (100,000
    descriptors when there is none), saved in the same file.
    """
    from .batch.pipeline import train_vocabulary_file

    with _engine(engine, master, processes) as eng, _status("training the vocabulary", fmt):
        vocab = train_vocabulary_file(
            features,
            out,
            k,
            eng,
            sample=sample,
            seed=seed,
            max_iter=max_iter,
            overwrite=overwrite,
            gmm=gmm,
            pca_dim=pca,
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
            ("gmm", f"{m['gmm']['k']} x {m['gmm']['reduced_dim']} (diagonal)" if "gmm" in m else "no"),
            ("seconds", round(float(m.get("seconds", 0.0)) + float(m.get("gmm", {}).get("seconds", 0.0)), 2)),
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
    vocab: Annotated[
        str,
        typer.Argument(
            help="Vocabulary (.npz from `vocab train`); with --encoding none: OUT", metavar="VOCAB"
        ),
    ],
    out: Annotated[str | None, typer.Argument(help="Output vectors (Parquet)")] = None,
    encoding: EncodingOpt = "bow",
    pooling: PoolingOpt = None,
    assign: AssignOpt = None,
    norm: NormOpt = None,
    pyramid: PyramidOpt = None,
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
    """Encode each image's descriptors as one vector: a bag of visual words, VLAD or a Fisher vector.

    `encode FEATURES VOCAB OUT`; with --encoding none (the HOG of --algo hog features alone) there is
    no vocabulary: `encode FEATURES OUT --encoding none`. A HOG in the features (--hog) is appended.
    """
    from .batch.pipeline import encode_features
    from .batch.records import count_rows, read_meta

    _check_encoding(encoding)
    vocabulary: str | None = vocab
    if encoding == "none":
        if out is not None:
            raise InputError(
                "--encoding none takes no vocabulary: `visionlake encode FEATURES OUT --encoding none`"
            )
        vocabulary, out = None, vocab
    elif out is None:
        raise InputError(f"--encoding {encoding} needs FEATURES VOCAB OUT: the output path is missing")
    params = _encoder_params(encoding, pooling, assign, norm, pyramid, sigma)
    total = count_rows(features)
    with _engine(engine, master, processes) as eng, _progress(f"encode {encoding}", total) as tick:
        report = encode_features(
            features, vocabulary, out, eng, params, tick, overwrite=overwrite, encoding=encoding
        )
    _summary(
        [
            ("out", report.out),
            ("encoding", encoding),
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
        str | None, typer.Option(help="Folder for every artefact [default: ./bovw-TIME]")
    ] = None,
    algo: AlgoOpt = "dense-sift",
    size: SizeOpt = 64,
    max_keypoints: MaxKeypointsOpt = 0,
    step: StepOpt = 4,
    root: RootOpt = True,
    hog: HogOpt = False,
    hog_size: HogSizeOpt = 64,
    hog_cell: HogCellOpt = 8,
    encoding: EncodingOpt = "bow",
    k: Annotated[
        int | None,
        count_option("Vocabulary (GMM) size [default: 512 for bow, 64 for vlad and fisher]", "-k", "--k"),
    ] = None,
    sample: Annotated[int | None, count_option("Vocabulary trained on N descriptors")] = 200_000,
    seed: SeedOpt = 0,
    pooling: Annotated[str | None, typer.Option(help="bow: sum, max or count [default: sum]")] = None,
    assign: Annotated[str | None, typer.Option(help="bow: hard or soft [default: soft]")] = None,
    norm: Annotated[str | None, typer.Option(help="l1, l2, power or none [default: power]")] = None,
    pyramid: Annotated[
        str | None,
        typer.Option(help="Spatial pyramid grid sizes [default: 1,2 for bow, 1 for vlad and fisher]"),
    ] = None,
    pca: PcaOpt = 64,
    classifier: ClassifierOpt = "linear-svm",
    c: COpt = 1.0,
    engine: EngineOpt = "local",
    master: MasterOpt = None,
    processes: ProcessesOpt = None,
    fmt: FormatOpt = Format.table,
) -> None:
    """Extract, train a vocabulary, encode, train a classifier and evaluate it on TEST; prints the report.

    --encoding vlad or fisher instead of bags of words; --algo hog --encoding none for a global HOG
    alone; --hog appends a global HOG to any encoding. `visionlake chain run` is the same command.
    """
    import json
    import time

    from .batch.pipeline import BovwConfig, run_bovw

    _check_encoding(encoding)
    params = _extractor_params(algo, max_keypoints, size, step, root, hog, hog_size, hog_cell)
    config = BovwConfig(
        algo=params.pop("algo"),
        size=params.pop("size"),
        max_keypoints=params.pop("max_keypoints"),
        extractor=params,
        encoding=encoding,
        k=k,
        sample=sample,
        seed=seed,
        encoder=_encoder_params(encoding, pooling, assign, norm, pyramid) or None,
        pca_dim=pca,
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
