"""Test accuracy of the bag-of-visual-words chain vs the same classifier on raw pixels.

Timed and scored: `visionlake.batch.pipeline.run_bovw` (extract → vocabulary → encode → train →
evaluate, every artefact written to disk, the local engine on 2 processes), as `visionlake bovw run`
runs it. Baseline, on the same split in the same run: the same classifier (`make_classifier`,
LinearSVC C=1) on the raw pixels of the same packed images, scaled to [0, 1]. A chain that cannot beat
raw pixels has learnt nothing a linear model could not.

Tasks, on real images only:
- `lfw`: face / non-face, scikit-image's `lfw_subset` (100 faces + 100 non-faces, 25x25), split by
  index parity (100 train / 100 test, both classes in each); dense SIFT at 48 px, step 6, k = 64 and
  otherwise the `bovw run` defaults, as tests/batch/test_bovw.py runs it.
- `fashion-mnist` (full mode only, about 6 minutes): the standard split (60,000 train / 10,000 test)
  from Debian's dataset-fashion-mnist, with the `bovw run` defaults (`BovwConfig()`).
"""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
from common import emit, emit_skipped, say

from visionlake.batch.pipeline import BovwConfig


def _lfw(tmp: Path) -> tuple[str, str]:
    """lfw_subset packed as train and test Parquet datasets (label = face / non-face)."""
    from skimage import data

    from visionlake.batch.dataset import pack

    images = data.lfw_subset()
    for i, image in enumerate(images):
        split = "train" if i % 2 == 0 else "test"
        folder = tmp / "lfw" / split / ("face" if i < 100 else "non-face")
        folder.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(folder / f"{i:03d}.png"), np.clip(image * 255.0, 0, 255).astype(np.uint8))
    out = {}
    for split in ("train", "test"):
        out[split] = str(tmp / f"lfw-{split}.parquet")
        pack(tmp / "lfw" / split, out[split])
    return out["train"], out["test"]


def _fashion_mnist(tmp: Path) -> tuple[str, str]:
    from visionlake.batch.idx import import_fashion_mnist

    import_fashion_mnist(tmp / "fmnist")
    return str(tmp / "fmnist" / "train.parquet"), str(tmp / "fmnist" / "test.parquet")


def _pixels(dataset: str) -> tuple[np.ndarray, np.ndarray]:
    """(n, h*w) float32 grey pixels in [0, 1] and the labels of a packed dataset (all one size)."""
    from visionlake.batch.dataset import open_dataset

    rows, labels = [], []
    for record in open_dataset(dataset):
        grey = cv2.imdecode(np.frombuffer(record.data, np.uint8), cv2.IMREAD_GRAYSCALE)
        rows.append(grey.reshape(-1))
        labels.append(record.label)
    return np.stack(rows).astype(np.float32) / 255.0, np.asarray(labels)


def _raw_pixel_accuracy(train: str, test: str, classifier: str, c: float) -> tuple[float, float]:
    """(accuracy, seconds) of `classifier` on raw pixels, trained on `train`, scored on `test`."""
    from visionlake.batch.classify import make_classifier

    x_train, y_train = _pixels(train)
    x_test, y_test = _pixels(test)
    t = time.perf_counter()
    model = make_classifier(classifier, c=c).fit(x_train, y_train)
    accuracy = float(np.mean(model.predict(x_test) == y_test))
    return accuracy, time.perf_counter() - t


def _task(
    name: str,
    train: str,
    test: str,
    config: BovwConfig,
    tmp: Path,
    target: float | None = None,
    **extra: object,
) -> dict:
    from visionlake.batch.pipeline import run_bovw
    from visionlake.engines.local import LocalEngine

    t = time.perf_counter()
    with LocalEngine(processes=2) as engine:
        report = run_bovw(train, test, str(tmp / f"{name}-run"), config, engine)
    chain_s = time.perf_counter() - t
    say(f"accuracy {name}: bag of visual words {report.accuracy:.4f} in {chain_s:.1f} s")
    base, base_s = _raw_pixel_accuracy(train, test, config.classifier, config.c)
    say(f"accuracy {name}: raw pixels {base:.4f} in {base_s:.1f} s")
    return emit(
        f"batch_accuracy_{name}",
        report.accuracy,
        "accuracy",
        f"the same classifier ({config.classifier}, C={config.c}) on raw pixels in [0, 1], same split",
        base,
        chain_seconds=chain_s,
        steps_seconds=report.steps,
        baseline_fit_seconds=base_s,
        train_images=report.extract["train"]["images"],
        test_images=report.evaluation.images,
        config=report.config,
        per_class_recall={row["class"]: row["recall"] for row in report.evaluation.to_dict()["per_class"]},
        **(
            {}
            if target is None
            else {"target": target, "target_on": "value", "target_met": report.accuracy >= target}
        ),
        **extra,
    )


def run(quick: bool, tmp: Path) -> list[dict]:
    tmp.mkdir(parents=True, exist_ok=True)
    out = []
    try:
        train, test = _lfw(tmp)
    except ImportError as exc:
        out.append(emit_skipped("batch_accuracy_lfw", "accuracy", "raw pixels", f"scikit-image: {exc}"))
    else:
        lfw = BovwConfig(size=48, extractor={"dense_step": 6, "root": True}, k=64)
        out.append(_task("lfw", train, test, lfw, tmp, split="index parity (even train, odd test)"))
    if quick:
        return out
    from visionlake.errors import InputError

    try:
        train, test = _fashion_mnist(tmp)
    except InputError as exc:  # dataset-fashion-mnist not installed
        out.append(emit_skipped("batch_accuracy_fashion-mnist", "accuracy", "raw pixels", str(exc)))
        return out
    out.append(
        _task(
            "fashion-mnist", train, test, BovwConfig(), tmp, split="standard (60,000 / 10,000)", target=0.85
        )
    )
    return out
