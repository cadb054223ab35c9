"""Test accuracy of each encoding (bow, vlad, fisher, HOG, and each with a HOG appended), with wall time,
peak memory and artefact size, vs the same classifier on raw pixels.

Every setting is one `visionlake bovw run TRAIN TEST --workdir W --format json --processes 2` command
plus its options (SETTINGS), run as a child process: `wall_seconds` is the whole command;
`peak_rss_bytes` is the largest resident set of the command or any of its worker processes (the
`ru_maxrss` that `/usr/bin/time -v` reports as "Maximum resident set size"); `peak_tree_rss_bytes` is
the largest sum of the resident sets of the command and all its descendants, sampled every 0.2 s;
`model_bytes` is the model file and `workdir_bytes` every artefact the command left in its work
directory (features, vocabulary, encoded vectors, model). The work directory is removed after each
setting. Baseline, in the same run on the same split: the same classifier (LinearSVC, C = 1) on the
raw pixels in [0, 1], fitted once per task.

Tasks:
- `lfw` (quick and full): face / non-face, scikit-image's `lfw_subset` split by index parity as in
  batch_accuracy.py (100 train / 100 test, 25x25 crops); dense RootSIFT at 48 px, step 6, k = 64 for
  every encoding (the `bovw run` defaults otherwise).
- `fashion-mnist` (full mode only, about 1.5 hours on 2 busy cores): the standard split, 60,000 /
  10,000, with the `bovw run` defaults of each encoding; target 93 %. The vlad and fisher settings
  need 14-19 GB of memory (the linear SVM's copies of 60,000 dense vectors of 8,192-9,956 values).
- `curve` (`--curve` only): accuracy against the vocabulary / GMM size k (CURVE) for bow, vlad and
  fisher on the first `--subset` (10,000) training and test images, the other settings at each
  encoding's defaults. The features are extracted once for all points (in this process, with the
  local engine on 2 processes), so each line's `seconds_after_extraction` covers vocabulary, encode,
  train and evaluate; `extract_seconds_shared` is the one extraction.

    python bench/encoding_accuracy.py [--quick] [--curve] [--subset N] [--setting NAME ...] [--k K ...]

bench/run.py runs it only when asked (`--only encoding-accuracy`): even its quick mode takes minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

from batch_accuracy import _fashion_mnist, _lfw, _raw_pixel_accuracy
from common import emit, emit_skipped, loadavg, say

VISIONLAKE = Path(sys.executable).parent / "visionlake"
#: name -> options of `visionlake bovw run` (the defaults of each encoding otherwise).
SETTINGS = {
    "hog": ["--algo", "hog", "--encoding", "none"],
    "bow": [],
    "fisher+hog": ["--encoding", "fisher", "--hog"],
    "fisher": ["--encoding", "fisher"],
    "vlad+hog": ["--encoding", "vlad", "--hog"],
    "vlad": ["--encoding", "vlad"],
    "bow+hog": ["--hog"],
}
#: Other settings, run only when named with --setting (not measured yet): HOG at Fashion-MNIST's own
#: 28 px with 4 px cells.
EXTRA_SETTINGS = {
    "hog 28/4": ["--algo", "hog", "--encoding", "none", "--hog-size", "28", "--hog-cell", "4"],
    "fisher+hog 28/4": ["--encoding", "fisher", "--hog", "--hog-size", "28", "--hog-cell", "4"],
}
#: Options of every lfw run with local descriptors (as batch_accuracy.py's lfw task).
LFW_OPTIONS = ["--size", "48", "--step", "6", "-k", "64"]
#: Vocabulary / GMM sizes of the curve, per encoding.
CURVE = {"fisher": [16, 32, 64, 128], "vlad": [16, 32, 64, 128], "bow": [128, 256, 512, 1024]}
TARGET = 0.93
PROCESSES = 2


def _tree_rss(pid: int) -> int:
    """Sum of VmRSS (bytes) of `pid` and all its descendants (0 once it is gone)."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
                        break
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo += [int(c) for c in f.read().split()]
        except (FileNotFoundError, ProcessLookupError, ValueError):
            continue
    return total


def _du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def chain(train: str, test: str, options: list[str], workdir: Path) -> dict:
    """Run `visionlake bovw run` with `options`; its JSON report plus what it cost."""
    cmd = [str(VISIONLAKE), "bovw", "run", train, test, "--workdir", str(workdir), "--format", "json"]
    cmd += ["--processes", str(PROCESSES), *options]
    say(" ".join(cmd))
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    peak, stop = [0], threading.Event()

    def sample() -> None:
        while not stop.wait(0.2):
            peak[0] = max(peak[0], _tree_rss(proc.pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out_chunks: list[bytes] = []
    err_chunks: list[bytes] = []
    readers = [
        threading.Thread(target=lambda s=s, c=c: c.append(s.read()), daemon=True)
        for s, c in ((proc.stdout, out_chunks), (proc.stderr, err_chunks))
    ]
    for r in readers:
        r.start()
    _, status, usage = os.wait4(proc.pid, 0)  # rusage of this command and its waited-for workers
    wall = time.perf_counter() - t
    proc.returncode = os.waitstatus_to_exitcode(status)
    stop.set()
    for r in readers:
        r.join()
    sampler.join()
    if proc.returncode != 0:
        err = b"".join(err_chunks).decode(errors="replace")
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}: {err[-2000:]}")
    report = json.loads(b"".join(out_chunks))
    from visionlake.batch.records import read_meta

    report["dim"] = int(read_meta(str(workdir / "train-bow.parquet"))["dim"])
    report["wall_seconds"] = wall
    report["peak_rss_bytes"] = usage.ru_maxrss * 1024  # KiB on Linux
    report["peak_tree_rss_bytes"] = peak[0]
    report["model_bytes"] = Path(report["model"]).stat().st_size
    report["workdir_bytes"] = _du(workdir)
    shutil.rmtree(workdir, ignore_errors=True)
    return report


def measure(
    task: str,
    train: str,
    test: str,
    settings: dict[str, list[str]],
    tmp: Path,
    base: tuple[float, float],
    target: float | None = None,
    **extra: object,
) -> list[dict]:
    """One JSON line per setting: the chain's accuracy against the raw-pixel `base` (accuracy, s)."""
    out = []
    for name, options in settings.items():
        load_before = loadavg()
        try:
            r = chain(train, test, options, tmp / f"{task}-{name}")
        except RuntimeError as exc:
            say(f"{task} {name} FAILED: {exc}")
            out.append(
                emit_skipped(f"encoding_accuracy_{task}", "accuracy", "raw pixels", str(exc), setting=name)
            )
            continue
        say(
            f"{task} {name}: {r['accuracy']:.4f} in {r['wall_seconds']:.0f} s, "
            f"peak {r['peak_rss_bytes'] / 2**30:.2f} GiB"
        )
        evaluation = r["evaluation"]
        out.append(
            emit(
                f"encoding_accuracy_{task}",
                r["accuracy"],
                "accuracy",
                "the same classifier (linear-svm, C=1.0) on raw pixels in [0, 1], same split",
                base[0],
                setting=name,
                options=options,
                encoding=r["config"]["encoding"],
                k=r["config"]["k"],
                dim=r["dim"],
                wall_seconds=r["wall_seconds"],
                steps_seconds=r["steps_seconds"],
                peak_rss_bytes=r["peak_rss_bytes"],
                peak_tree_rss_bytes=r["peak_tree_rss_bytes"],
                model_bytes=r["model_bytes"],
                workdir_bytes=r["workdir_bytes"],
                train_images=r["extract"]["train"]["images"],
                test_images=evaluation["images"],
                processes=PROCESSES,
                config=r["config"],
                per_class_recall={row["class"]: row["recall"] for row in evaluation["per_class"]},
                baseline_fit_seconds=base[1],
                loadavg_1m_before=load_before,
                loadavg_1m=loadavg(),
                **(
                    {}
                    if target is None
                    else {"target": target, "target_on": "value", "target_met": r["accuracy"] >= target}
                ),
                **extra,
            )
        )
    return out


def _pick(names: list[str] | None) -> dict[str, list[str]]:
    if not names:
        return dict(SETTINGS)
    return {n: o for n, o in {**SETTINGS, **EXTRA_SETTINGS}.items() if n in names}


def lfw(tmp: Path, names: list[str] | None = None) -> list[dict]:
    try:
        train, test = _lfw(tmp)
    except ImportError as exc:
        return [emit_skipped("encoding_accuracy_lfw", "accuracy", "raw pixels", f"scikit-image: {exc}")]
    settings = {n: o if "--algo" in o else [*o, *LFW_OPTIONS] for n, o in _pick(names).items()}
    base = _raw_pixel_accuracy(train, test, "linear-svm", 1.0)
    return measure("lfw", train, test, settings, tmp, base, split="index parity (even train, odd test)")


def fashion_mnist(tmp: Path, names: list[str] | None = None) -> list[dict]:
    from visionlake.errors import InputError

    try:
        split = _fashion_mnist(tmp)
    except InputError as exc:  # dataset-fashion-mnist not installed
        return [emit_skipped("encoding_accuracy_fashion-mnist", "accuracy", "raw pixels", str(exc))]
    base = _raw_pixel_accuracy(*split, "linear-svm", 1.0)
    say(f"fashion-mnist raw pixels: {base[0]:.4f} ({base[1]:.0f} s)")
    return measure(
        "fashion-mnist", *split, _pick(names), tmp, base, TARGET, split="standard (60,000 / 10,000)"
    )


def _subset(tmp: Path, n: int) -> tuple[str, str]:
    """The first `n` images of each split (as `visionlake dataset fashion-mnist --limit N`)."""
    from visionlake.batch.idx import import_fashion_mnist

    import_fashion_mnist(tmp / f"fmnist-{n}", limit=n)
    return str(tmp / f"fmnist-{n}" / "train.parquet"), str(tmp / f"fmnist-{n}" / "test.parquet")


def curve(tmp: Path, subset: int, names: list[str] | None = None, ks: list[int] | None = None) -> list[dict]:
    """Accuracy against k on the first `subset` images of each split: the features are extracted once
    (dense RootSIFT, the `bovw run` defaults) and each point runs vocabulary → encode → train →
    evaluate on them with `run_bovw`'s steps and each encoding's default settings but k."""
    from visionlake.batch.pipeline import (
        BovwConfig,
        encode_features,
        evaluate_model,
        extract_features,
        train_classifier,
        train_vocabulary_file,
    )
    from visionlake.batch.records import read_meta
    from visionlake.engines.local import LocalEngine
    from visionlake.errors import InputError

    try:
        train, test = _subset(tmp, subset)
    except InputError as exc:  # dataset-fashion-mnist not installed
        return [emit_skipped("encoding_accuracy_fashion-mnist_curve", "accuracy", "raw pixels", str(exc))]
    base = _raw_pixel_accuracy(train, test, "linear-svm", 1.0)
    say(f"curve raw pixels on {subset} / {subset}: {base[0]:.4f} ({base[1]:.0f} s)")
    out = []
    with LocalEngine(processes=PROCESSES) as engine:
        from visionlake.batch.features import FeatureExtractor

        features, t = {}, time.perf_counter()
        for split, dataset in (("train", train), ("test", test)):
            features[split] = str(tmp / f"curve-{split}-features.parquet")
            extract_features(
                dataset, features[split], FeatureExtractor(**BovwConfig().extractor_params()), engine
            )
        extract_s = time.perf_counter() - t
        say(f"curve: features of {subset} + {subset} images in {extract_s:.0f} s")
        for encoding, sizes in CURVE.items():
            if names and encoding not in names:
                continue
            for k in sizes:
                if ks and k not in ks:
                    continue
                config = BovwConfig(encoding=encoding, k=k)
                params = config.encoder_params()
                work = tmp / f"curve-{encoding}-{k}"
                work.mkdir()
                steps, t = {}, time.perf_counter()
                train_vocabulary_file(
                    features["train"],
                    str(work / "vocabulary.npz"),
                    k,
                    engine,
                    sample=config.sample,
                    seed=config.seed,
                    gmm=encoding == "fisher",
                    pca_dim=config.pca_dim,
                )
                steps["vocabulary"] = time.perf_counter() - t
                for split in ("train", "test"):  # train first: soft assignment's sigma is learnt on it
                    encode_features(
                        features[split],
                        str(work / "vocabulary.npz"),
                        str(work / f"{split}-bow.parquet"),
                        engine,
                        params,
                        encoding=encoding,
                    )
                    sigma = (
                        read_meta(str(work / f"{split}-bow.parquet")).get("encoder_params", {}).get("sigma")
                    )
                    if sigma is not None:
                        params["sigma"] = sigma
                steps["encode"] = time.perf_counter() - t - steps["vocabulary"]
                u = time.perf_counter()
                train_classifier(str(work / "train-bow.parquet"), str(work / "model.joblib"), c=config.c)
                steps["train"] = time.perf_counter() - u
                u = time.perf_counter()
                evaluation = evaluate_model(
                    str(work / "model.joblib"), str(work / "test-bow.parquet"), engine
                )
                steps["evaluate"] = time.perf_counter() - u
                seconds = time.perf_counter() - t
                dim = int(read_meta(str(work / "train-bow.parquet"))["dim"])
                say(f"curve {encoding} k={k}: {evaluation.accuracy:.4f} ({dim} values) in {seconds:.0f} s")
                out.append(
                    emit(
                        "encoding_accuracy_fashion-mnist_curve",
                        evaluation.accuracy,
                        "accuracy",
                        "the same classifier (linear-svm, C=1.0) on raw pixels in [0, 1], same split",
                        base[0],
                        setting=f"{encoding} k={k}",
                        encoding=encoding,
                        k=k,
                        dim=dim,
                        encoder=params,
                        seconds_after_extraction=seconds,
                        steps_seconds=steps,
                        extract_seconds_shared=extract_s,
                        model_bytes=(work / "model.joblib").stat().st_size,
                        train_images=subset,
                        test_images=evaluation.images,
                        processes=PROCESSES,
                        baseline_fit_seconds=base[1],
                        loadavg_1m=loadavg(),
                        split=f"first {subset} / first {subset} (dataset fashion-mnist --limit {subset})",
                    )
                )
                shutil.rmtree(work, ignore_errors=True)
    return out


def run(quick: bool, tmp: Path) -> list[dict]:
    tmp.mkdir(parents=True, exist_ok=True)
    out = lfw(tmp)
    if not quick:
        out += fashion_mnist(tmp)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="lfw only")
    ap.add_argument("--curve", action="store_true", help="only the accuracy-vs-k curve on a subset")
    ap.add_argument("--subset", type=int, default=10_000, help="images per split of the curve")
    ap.add_argument(
        "--setting", action="append", help=f"only these: {', '.join([*SETTINGS, *EXTRA_SETTINGS])}"
    )
    ap.add_argument("--task", action="append", choices=["lfw", "fashion-mnist"], help="only these tasks")
    ap.add_argument("--k", action="append", type=int, help="curve: only these k")
    args = ap.parse_args(argv)
    import tempfile

    tmp = Path(tempfile.mkdtemp(prefix="visionlake-encodings-"))
    try:
        if args.curve:
            curve(tmp, args.subset, args.setting, args.k)
            return 0
        tasks = args.task or (["lfw"] if args.quick else ["lfw", "fashion-mnist"])
        if "lfw" in tasks:
            lfw(tmp, args.setting)
        if "fashion-mnist" in tasks:
            fashion_mnist(tmp, args.setting)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
