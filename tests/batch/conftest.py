"""Real image datasets for the batch tests, built under tmp_path from opencv-doc and scikit-image."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from media import sample

#: A small Caltech-style folder: label = sub-folder. All real photographs or drawings.
CLASSES = {
    "fruit": ["apple.jpg", "orange.jpg", "fruits.jpg"],
    "building": ["building.jpg", "home.jpg", "aero1.jpg"],
    "misc": ["baboon.jpg", "butterfly.jpg", "messi5.jpg", "starry_night.jpg"],
}


@pytest.fixture(scope="session")
def caltech_folder(tmp_path_factory) -> Path:
    """`root/<label>/<image>`, plus one nested folder (`misc/nested/`) and one image at the root."""
    root = tmp_path_factory.mktemp("caltech")
    for label, names in CLASSES.items():
        (root / label).mkdir()
        for name in names:
            shutil.copy(sample(name), root / label / name)
    (root / "misc" / "nested").mkdir()
    shutil.copy(sample("board.jpg"), root / "misc" / "nested" / "board.jpg")
    shutil.copy(sample("chessboard.png"), root / "chessboard.png")
    return root


@pytest.fixture(scope="session")
def lfw_images() -> tuple[list[np.ndarray], np.ndarray]:
    """scikit-image's lfw_subset: 100 faces then 100 non-faces, 25x25 grey float images as uint8."""
    from skimage import data

    images = data.lfw_subset()
    as_uint8 = [np.clip(im * 255.0, 0, 255).astype(np.uint8) for im in images]
    labels = np.array(["face"] * 100 + ["non-face"] * 100)
    return as_uint8, labels


def corrupt_jpeg(path: Path) -> bytes:
    """A truncated JPEG: the first 300 bytes of a real one (OpenCV cannot decode it)."""
    data = path.read_bytes()[:300]
    assert cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED) is None
    return data
