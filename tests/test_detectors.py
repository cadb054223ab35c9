"""Detector plugins on real OpenCV and real media (Debian opencv-doc sample videos); no mocks."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import textwrap

import cv2
import numpy as np
import pytest
from media import frames_at

from visionlake.detectors import Detector, list_detectors, load_detector, parse_params
from visionlake.detectors.haar import HaarFaceDetector
from visionlake.detectors.hog import HogPersonDetector
from visionlake.errors import InputError, MissingDependency, UnknownDetector, VisionlakeError
from visionlake.types import Detections

ALL = ["haar-face", "hog-person", "yuface"]

# Frames checked by eye and by all three detectors: one clear face (Megamind), walking people (vtest).
FACE_FRAMES = [15, 45, 90, 210]
PERSON_FRAMES = [50, 75, 200, 225]


@pytest.fixture(scope="module")
def faces() -> dict[int, np.ndarray]:
    return frames_at("Megamind.avi", FACE_FRAMES)


@pytest.fixture(scope="module")
def people() -> dict[int, np.ndarray]:
    return frames_at("vtest.avi", PERSON_FRAMES)


@pytest.fixture(scope="module")
def detectors() -> dict[str, Detector]:
    return {name: load_detector(name) for name in ALL}


def assert_valid(dets: Detections, image: np.ndarray, label: str | None = None) -> None:
    h, w = image.shape[:2]
    assert isinstance(dets, Detections)
    assert dets.xyxy.dtype == np.float32 and dets.xyxy.shape == (len(dets), 4)
    assert dets.score.dtype == np.float32 and np.isfinite(dets.score).all()
    x1, y1, x2, y2 = dets.xyxy.T
    assert (x1 >= 0).all() and (y1 >= 0).all() and (x2 <= w).all() and (y2 <= h).all()
    assert (x2 > x1).all() and (y2 > y1).all()
    if label is not None:
        assert set(dets.label) <= {label}


# --- detection on real media -------------------------------------------------------------------


@pytest.mark.parametrize("index", FACE_FRAMES)
def test_haar_finds_face_in_megamind(detectors, faces, index):
    image = faces[index]
    dets = detectors["haar-face"].detect(image)
    assert len(dets) >= 1
    assert_valid(dets, image, "face")


@pytest.mark.parametrize("index", PERSON_FRAMES)
def test_hog_finds_person_in_vtest(detectors, people, index):
    image = people[index]
    dets = detectors["hog-person"].detect(image)
    assert len(dets) >= 1
    assert_valid(dets, image, "person")
    assert (dets.score >= 0.3).all()  # min_score
    w = dets.xyxy[:, 2] - dets.xyxy[:, 0]
    h = dets.xyxy[:, 3] - dets.xyxy[:, 1]
    assert (h > w).all()  # people stand upright


@pytest.mark.parametrize("index", [15, 90, 210])
def test_yuface_finds_face_in_megamind(detectors, faces, index):
    image = faces[index]
    dets = detectors["yuface"].detect(image)
    assert len(dets) >= 1
    assert_valid(dets, image, "face")
    assert ((dets.score > 0.5) & (dets.score <= 1.0)).all()


def test_face_detectors_agree_on_the_face(detectors, faces):
    """haar-face and yuface put their best box on the same face (frame 210: one large face)."""
    image = faces[210]
    boxes = [detectors[n].detect(image) for n in ("haar-face", "yuface")]
    a, b = (d.xyxy[int(np.argmax(d.score))] for d in boxes)
    assert iou(a, b) > 0.5


def test_yuface_accepts_non_contiguous_image(detectors, faces):
    image = faces[90]
    flipped = image[:, ::-1]  # a view with a negative stride
    assert not flipped.flags["C_CONTIGUOUS"]
    dets = detectors["yuface"].detect(flipped)
    assert len(dets) >= 1
    assert_valid(dets, flipped, "face")


@pytest.mark.parametrize("name", ALL)
def test_blank_image_gives_valid_empty_detections(detectors, name):
    image = np.zeros((480, 640, 3), np.uint8)
    dets = detectors[name].detect(image)
    assert len(dets) == 0
    assert dets.xyxy.shape == (0, 4) and dets.xyxy.dtype == np.float32
    assert dets.score.shape == (0,) and dets.label.shape == (0,)
    assert dets.to_list() == []


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("shape", [(1, 1), (10, 10), (64, 64), (127, 300), (300, 63), (1, 500), (500, 1)])
def test_tiny_images_do_not_crash(detectors, name, shape):
    """OpenCV's HOG aborts the whole process on images smaller than its window; the plugin guards it."""
    image = np.random.default_rng(0).integers(0, 256, (*shape, 3), dtype=np.uint8)
    assert_valid(detectors[name].detect(image), image)


@pytest.mark.parametrize(
    ("name", "video", "index"),
    [("haar-face", "faces", 210), ("hog-person", "people", 75), ("yuface", "faces", 90)],
)
def test_downscale_maps_boxes_back(detectors, request, name, video, index):
    """The same frame at 2x size (also shrunk to max_width) gives boxes at about 2x the coordinates."""
    image = request.getfixturevalue(video)[index]
    big = cv2.resize(image, None, fx=2, fy=2, interpolation=cv2.INTER_LINEAR)
    small_dets = detectors[name].detect(image)
    big_dets = detectors[name].detect(big)
    assert len(small_dets) >= 1 and len(big_dets) >= 1
    assert_valid(big_dets, big)
    best_small = small_dets.xyxy[int(np.argmax(small_dets.score))] * 2
    best_big = max(big_dets.xyxy, key=lambda box: iou(box, best_small))
    assert iou(best_big, best_small) > 0.7, (best_big, best_small)


def test_max_width_zero_runs_at_native_size(faces):
    """max_width=0 never downscales; on a 720-px frame it still finds the face at the same place."""
    image = faces[210]
    native = HaarFaceDetector(max_width=0).detect(image)
    shrunk = HaarFaceDetector().detect(image)
    assert len(native) >= 1 and len(shrunk) >= 1
    assert iou(native.xyxy[0], shrunk.xyxy[0]) > 0.7


def test_detect_rejects_non_bgr_input(detectors):
    det = detectors["haar-face"]
    with pytest.raises(InputError, match="BGR uint8"):
        det.detect(np.zeros((10, 10), np.uint8))
    with pytest.raises(InputError, match="float32"):
        det.detect(np.zeros((10, 10, 3), np.float32))
    with pytest.raises(InputError, match="list"):
        det.detect([[0, 0, 0]])


# --- parameters and model versions -------------------------------------------------------------


def test_params_and_model_version_of_defaults():
    det = HaarFaceDetector()
    assert det.params == HaarFaceDetector.defaults
    assert det.model_version == HaarFaceDetector.version == "1"
    # Giving a default explicitly (even as a CLI string) is still the default model version.
    assert HaarFaceDetector(min_neighbors="5", scale_factor=1.1).model_version == "1"


def test_model_version_changes_with_params():
    changed = HaarFaceDetector(min_neighbors=3)
    assert changed.params["min_neighbors"] == 3
    assert changed.model_version == "1+98bcde1b"  # stable across runs and machines (sha256 of sorted JSON)
    assert HaarFaceDetector(min_neighbors="3").model_version == changed.model_version
    assert HaarFaceDetector(min_neighbors=4).model_version not in ("1", changed.model_version)
    assert HogPersonDetector(min_score="0.5").model_version == "2+da08f3e3"
    assert HogPersonDetector(min_score="0.5").model_version != HogPersonDetector(min_score=0.6).model_version


def test_params_are_coerced_to_the_default_type():
    det = load_detector("hog-person", parse_params(["win_stride=16", "scale=1.1", "hit_threshold=0"]))
    assert det.params["win_stride"] == 16 and type(det.params["win_stride"]) is int
    assert det.params["hit_threshold"] == 0.0 and type(det.params["hit_threshold"]) is float
    assert type(HaarFaceDetector(min_size=40.0).params["min_size"]) is int
    assert type(load_detector("yuface", {"conf": 1}).params["conf"]) is float


def test_unknown_param_names_it_and_lists_valid_ones():
    with pytest.raises(InputError) as err:
        HaarFaceDetector(min_neighbours=3)
    msg = str(err.value)
    assert "min_neighbours" in msg and "haar-face" in msg
    for valid in HaarFaceDetector.defaults:
        assert valid in msg
    assert "did you mean 'min_neighbors'" in msg


@pytest.mark.parametrize(
    ("name", "param", "value"),
    [
        ("haar-face", "min_neighbors", "many"),
        ("haar-face", "min_neighbors", "2.5"),
        ("haar-face", "min_neighbors", True),
        ("haar-face", "scale_factor", "1.0"),
        ("haar-face", "scale_factor", "nan"),
        ("haar-face", "max_width", -1),
        ("hog-person", "nms_threshold", 0),
        ("hog-person", "win_stride", 0),
        ("yuface", "conf", 1.5),
        ("yuface", "conf", None),
    ],
)
def test_bad_param_value_names_param_and_value(name, param, value):
    with pytest.raises(InputError) as err:
        load_detector(name, {param: value})
    assert param in str(err.value) and str(value) in str(err.value)


def test_parse_params():
    assert parse_params(["a=1", " b = x=y ", "c="]) == {"a": "1", "b": "x=y", "c": ""}
    assert parse_params([]) == {}
    for bad in (["novalue"], ["=3"], ["a=1", "a=2"]):
        with pytest.raises(InputError):
            parse_params(bad)


def test_detector_pickles_as_its_params(faces):
    det = load_detector("haar-face", {"min_neighbors": 4})
    copy = pickle.loads(pickle.dumps(det))
    assert type(copy) is HaarFaceDetector and copy.params == det.params
    assert copy.model_version == det.model_version and repr(copy) == "HaarFaceDetector(min_neighbors=4)"
    np.testing.assert_array_equal(copy.detect(faces[15]).xyxy, det.detect(faces[15]).xyxy)


# --- registry ----------------------------------------------------------------------------------


def test_list_detectors_reports_the_bundled_three():
    infos = {info.name: info for info in list_detectors()}
    assert set(ALL) <= set(infos)
    for name in ALL:
        info = infos[name]
        assert info.available and info.problem is None, info
        assert info.version == ("2" if name == "hog-person" else "1") and info.defaults and info.summary
    assert infos["haar-face"].defaults == HaarFaceDetector.defaults


def test_missing_yuface_extra_gives_install_hint(monkeypatch):
    """With `yuface` not importable (sys.modules[name] = None is how Python spells that), the listing
    still works and says how to install it, and loading raises MissingDependency."""
    monkeypatch.setitem(sys.modules, "yuface", None)
    infos = {info.name: info for info in list_detectors()}
    assert infos["haar-face"].available and infos["hog-person"].available
    assert not infos["yuface"].available
    assert "pip install 'visionlake[yuface]'" in infos["yuface"].problem
    with pytest.raises(MissingDependency, match=r"visionlake\[yuface\]"):
        load_detector("yuface")


def test_load_unknown_detector_lists_installed():
    with pytest.raises(UnknownDetector) as err:
        load_detector("nope")
    msg = str(err.value)
    assert "'nope'" in msg
    for name in ALL:
        assert name in msg


def test_load_detector_imports_only_the_plugin_asked_for():
    code = textwrap.dedent(
        """
        import sys
        import visionlake.detectors
        before = sorted(m for m in sys.modules if m.startswith("visionlake.detectors."))
        from visionlake.detectors import load_detector
        load_detector("haar-face")
        after = sorted(m for m in sys.modules if m.startswith("visionlake.detectors.") or m == "yuface")
        print(before, after)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    before, after = out.strip().split("] [")
    assert "haar" not in before and "hog" not in before and "yuface" not in before
    assert "visionlake.detectors.haar" in after
    assert "hog" not in after and "yuface" not in after


PLUGIN = '''
from visionlake.detectors import Detector
from visionlake.types import Detections


class ToyDetector(Detector):
    """A whole-image box, to test third-party plugins."""

    name = "toy-box"
    version = "7"
    defaults = {"label": "thing", "enabled": True}

    def detect(self, image):
        if not self.params["enabled"]:
            return Detections.empty()
        h, w = image.shape[:2]
        return Detections([[0, 0, w, h]], [1.0], [self.params["label"]])
'''


@pytest.fixture
def third_party(tmp_path, monkeypatch):
    """A real (tiny) installed distribution on sys.path declaring good and broken detector plugins."""
    (tmp_path / "vl_toy_plugin.py").write_text(PLUGIN)
    info = tmp_path / "vl_toy_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: vl-toy-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[visionlake.detectors]\n"
        "toy-box = vl_toy_plugin:ToyDetector\n"
        "broken = vl_toy_plugin_no_such_module:Nope\n"
        "misnamed = vl_toy_plugin:ToyDetector\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield
    sys.modules.pop("vl_toy_plugin", None)


def test_third_party_plugin_and_broken_ones(third_party):
    infos = {info.name: info for info in list_detectors()}
    assert all(infos[name].available for name in ALL)
    toy = infos["toy-box"]
    assert toy.available and toy.version == "7" and toy.defaults == {"label": "thing", "enabled": True}
    assert not infos["broken"].available and "failed to import" in infos["broken"].problem
    assert not infos["misnamed"].available and "declares name 'toy-box'" in infos["misnamed"].problem

    det = load_detector("toy-box", parse_params(["label=box", "enabled=yes"]))
    image = np.zeros((20, 30, 3), np.uint8)
    assert det.detect(image).to_list() == [{"label": "box", "score": 1.0, "box": [0.0, 0.0, 30.0, 20.0]}]
    assert det.model_version.startswith("7+")
    assert len(load_detector("toy-box", {"enabled": "off"}).detect(image)) == 0
    with pytest.raises(InputError, match="enabled"):
        load_detector("toy-box", {"enabled": "maybe"})
    with pytest.raises(VisionlakeError, match="failed to import"):
        load_detector("broken")


def iou(a: np.ndarray, b: np.ndarray) -> float:
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


# --- threads --------------------------------------------------------------------------------------

THREADS_CHILD = r"""
import importlib.abc, json, os, sys
seen = {}
class Watch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "yuface":
            seen["policy_at_import"] = os.environ.get("OMP_WAIT_POLICY")
        return None
sys.meta_path.insert(0, Watch())
import cv2
from threadpoolctl import threadpool_info
from visionlake.detectors import get_detector_class, load_detector
assert get_detector_class("yuface").unavailable_reason() is None  # the first import of the library
det = load_detector("yuface")
det.limit_threads(1)
omp = [i["num_threads"] for i in threadpool_info() if i["user_api"] == "openmp" and "yuface" in i["filepath"]]
print(json.dumps({**seen, "cv2": cv2.getNumThreads(), "yuface_openmp": omp}))
"""


def test_yuface_waits_passively_and_keeps_to_the_workers_thread_count():
    """The worker's --threads reaches yuface's own OpenMP runtime (OpenCV's setting does not), and the
    availability check, which loads the library first, already asks OpenMP for passive waiting: the
    runtime reads the policy once, at load, and spinning threads took the cores from other workers."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OMP_")}
    out = subprocess.run(
        [sys.executable, "-c", THREADS_CHILD], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout)
    assert got == {"policy_at_import": "PASSIVE", "cv2": 1, "yuface_openmp": [1]}, got
