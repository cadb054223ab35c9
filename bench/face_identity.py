"""Face identity: verification accuracy, clustering, embedding throughput and nearest-neighbour search.

Labelled set: tests/data/face_identities.json (126 faces of 21 people: three characters of
Megamind.avi and people in opencv-doc's tutorial images and scikit-image's astronaut; how it was made
is in tests/data/README.md). Every face is embedded once with `visionlake.faces.FaceEmbedder`
(dlib's 128-d descriptor from the `faces` extra), and those embeddings are scored:

- verification: every pair of faces, same person or not; true accept rate (same-person pairs within
  the threshold) and false accept rate (different-person pairs within it) at several thresholds;
  the baseline is dlib's own suggestion, 0.6;
- identification: each person's first face enrolled in a `Gallery` (people with one face stay out, as
  strangers), every other face identified; wrong names, strangers named, people missed;
- clustering: `cluster_faces` at the threshold, purity (each cluster's majority person) and inverse
  purity (each person's majority cluster); the baseline is the two-stage clustering used above
  `MAX_EXACT` faces, forced on the same faces;
- throughput: faces/s of `FaceEmbedder.embed` against a bare dlib loop (landmarks + descriptor per
  face) on the same images and boxes, interleaved;
- search: p50/p99 of a top-1 query over 1,000, 100,000 and 1,000,000 stored embeddings
  (`EmbeddingIndex.search`) against plain brute force, ``argmin(norm(stored - q, axis=1))``.
  The stored vectors are the real embeddings repeated with small Gaussian noise (the time of an exact
  search does not depend on the values).

`--quick` times one round of embedding (three otherwise) and searches 1,000 and 100,000 stored
embeddings with 20 queries (100 queries, and 1,000,000 stored too, otherwise).

    python bench/face_identity.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np
from common import emit, emit_skipped, loadavg, percentile, say

from visionlake.faces import cluster as face_cluster
from visionlake.faces.match import THRESHOLD, EmbeddingIndex, Gallery, pairwise

LABELS = Path(__file__).resolve().parent.parent / "tests" / "data" / "face_identities.json"
DOC = Path("/usr/share/doc/opencv-doc")
THRESHOLDS = (0.4, 0.45, 0.5, 0.55, 0.6)
BASELINE_THRESHOLD = 0.6
SIZES = (1_000, 100_000, 1_000_000)


def load_images() -> tuple[list[np.ndarray], list[np.ndarray], list[str]]:
    """(image, xyxy box, name) of every labelled face not ignored, images decoded once."""
    faces = [f for f in json.loads(LABELS.read_text())["faces"] if not f.get("ignore")]
    videos: dict[str, dict[int, np.ndarray]] = {}
    for f in faces:
        if "frame" in f:
            videos.setdefault(f["source"], {})[f["frame"]] = None
    for source, wanted in videos.items():
        cap = cv2.VideoCapture(str(DOC / source))
        i, last = 0, max(wanted)
        while i <= last:
            ok, image = cap.read()
            if not ok:
                raise SystemExit(f"{DOC / source} ended before frame {last}")
            if i in wanted:
                wanted[i] = image
            i += 1
        cap.release()
    images, boxes, names = [], [], []
    for f in faces:
        if "frame" in f:
            image = videos[f["source"]][f["frame"]]
        elif f["source"] == "skimage:astronaut":
            from skimage import data

            image = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
        else:
            image = cv2.imread(str(DOC / f["source"]), cv2.IMREAD_COLOR)
            if image is None:
                raise SystemExit(f"cannot read {DOC / f['source']}: install the Debian package opencv-doc")
        x, y, w, h = f["box"]
        images.append(image)
        boxes.append(np.array([[x, y, x + w, y + h]], np.float64))
        names.append(f["name"])
    return images, boxes, names


def bare_dlib(dlib, predictor, network, image: np.ndarray, box: np.ndarray) -> np.ndarray:
    """The plain recipe: RGB copy, landmarks from the box, one descriptor."""
    rgb = np.ascontiguousarray(image[:, :, ::-1])
    height, width = image.shape[:2]
    x1, y1, x2, y2 = box[0]  # clipped as FaceEmbedder clips, so both see the same rectangle
    x1, y1 = round(max(0.0, x1)), round(max(0.0, y1))
    x2, y2 = round(min(width - 1.0, x2)), round(min(height - 1.0, y2))
    shape = predictor(rgb, dlib.rectangle(x1, y1, x2, y2))
    return np.asarray(network.compute_face_descriptor(rgb, shape, 0), np.float32)


def throughput(images, boxes, rounds: int) -> tuple[np.ndarray, float, float, float]:
    """Embeddings, faces/s of FaceEmbedder and of the bare loop (best round of each), max abs difference."""
    import dlib
    import face_recognition_models  # noqa: F401  (the same files FaceEmbedder finds)

    from visionlake.faces.embed import DESCRIPTOR_MODEL, LANDMARKS_MODEL, FaceEmbedder, model_path

    embedder = FaceEmbedder()
    predictor = dlib.shape_predictor(model_path(LANDMARKS_MODEL))
    network = dlib.face_recognition_model_v1(model_path(DESCRIPTOR_MODEL))
    ours, bare = [], []
    for _ in range(rounds):  # interleaved, so load from other processes hits both alike
        t = time.perf_counter()
        emb = np.concatenate([embedder.embed(im, b) for im, b in zip(images, boxes, strict=True)])
        ours.append(time.perf_counter() - t)
        t = time.perf_counter()
        ref = np.stack(
            [bare_dlib(dlib, predictor, network, im, b) for im, b in zip(images, boxes, strict=True)]
        )
        bare.append(time.perf_counter() - t)
    n = len(images)
    return emb, n / min(ours), n / min(bare), float(np.abs(emb - ref).max())


def verification(emb: np.ndarray, names: list[str]) -> dict[float, tuple[float, float, int, int]]:
    """{threshold: (TAR, FAR, false accepts, false rejects)} over every pair of faces."""
    labels = np.asarray(names)
    iu = np.triu_indices(len(emb), 1)
    dist = pairwise(emb)[iu]
    same = labels[iu[0]] == labels[iu[1]]
    out = {}
    for t in sorted({*THRESHOLDS, THRESHOLD}):
        accept = dist <= t
        out[t] = (
            float(accept[same].mean()),
            float(accept[~same].mean()),
            int(accept[~same].sum()),
            int((~accept[same]).sum()),
        )
    return out, int(same.sum()), int((~same).sum())


def identification(emb: np.ndarray, names: list[str], threshold: float) -> dict[str, int]:
    """Enrol each person's first face (people seen once stay strangers); identify all other faces."""
    seen: dict[str, int] = {}
    for i, n in enumerate(names):
        seen.setdefault(n, i)
    counts = {n: names.count(n) for n in seen}
    enrolled = {n: i for n, i in seen.items() if counts[n] > 1}
    gallery = Gallery(list(enrolled), emb[list(enrolled.values())], threshold=threshold)
    probe = [i for i in range(len(names)) if i not in enrolled.values()]
    matches = gallery.identify(emb[probe])
    out = {
        "probes": len(probe),
        "correct": 0,
        "wrong_name": 0,
        "missed": 0,
        "stranger_rejected": 0,
        "stranger_named": 0,
    }
    for i, m in zip(probe, matches, strict=True):
        truth = names[i]
        if truth in enrolled:
            key = "correct" if m.name == truth else ("missed" if not m.known else "wrong_name")
        else:
            key = "stranger_named" if m.known else "stranger_rejected"
        out[key] += 1
    return out


def search_bench(emb: np.ndarray, sizes, queries: int) -> list[dict]:
    rng = np.random.default_rng(0)
    out = []
    for n in sizes:
        stored = emb[rng.integers(0, len(emb), n)] + rng.normal(0, 0.02, (n, emb.shape[1])).astype(np.float32)
        stored = stored.astype(np.float32)
        qs = emb[rng.integers(0, len(emb), queries)] + rng.normal(0, 0.02, (queries, emb.shape[1])).astype(
            np.float32
        )
        t = time.perf_counter()
        index = EmbeddingIndex(stored)
        build = time.perf_counter() - t
        index.search(qs[0], 1)  # warm-up: first-call costs (page faults on the fresh matrix) are not search
        np.argmin(np.linalg.norm(stored - qs[0], axis=1))
        ours, base, agree = [], [], 0
        for q in qs:  # interleaved one by one
            t = time.perf_counter()
            idx, _dist = index.search(q, 1)
            ours.append(time.perf_counter() - t)
            t = time.perf_counter()
            ref = int(np.argmin(np.linalg.norm(stored - q, axis=1)))
            base.append(time.perf_counter() - t)
            agree += int(idx[0, 0] == ref)
        ms, base_ms = [1000 * v for v in ours], [1000 * v for v in base]
        for q in (50, 99):
            out.append(
                emit(
                    f"face_search_{n}_p{q}",
                    percentile(ms, q),
                    "ms",
                    "brute-force numpy argmin(norm(stored - q)), same vectors",
                    percentile(base_ms, q),
                    stored=n,
                    queries=queries,
                    k=1,
                    same_answer=agree / queries,
                    index_build_ms=1000 * build,
                    loadavg_1m=loadavg(),
                )
            )
        say(
            f"search over {n}: p50 {percentile(ms, 50):.2f} ms vs {percentile(base_ms, 50):.2f} ms brute force"
        )
        del stored, index
    return out


def run(quick: bool, tmp: Path | None = None) -> list[dict]:
    from visionlake.faces.embed import unavailable_reason

    problem = unavailable_reason()
    if problem is not None:
        return [emit_skipped("face_embed_throughput", "faces/s", "bare dlib loop", problem)]
    images, boxes, names = load_images()
    say(f"{len(images)} labelled faces of {len(set(names))} people")
    emb, ours_fps, bare_fps, diff = throughput(images, boxes, 1 if quick else 3)
    out = [
        emit(
            "face_embed_throughput",
            ours_fps,
            "faces/s",
            "bare dlib loop: shape_predictor + compute_face_descriptor per face, same images and boxes",
            bare_fps,
            faces=len(images),
            max_abs_difference=diff,
            target=0.9,
            target_met=ours_fps / bare_fps >= 0.9,
            loadavg_1m=loadavg(),
        )
    ]
    scores, pairs_same, pairs_diff = verification(emb, names)
    tar, far, fa, fr = scores[THRESHOLD]
    b_tar, b_far, b_fa, _ = scores[BASELINE_THRESHOLD]
    out.append(
        emit(
            "face_verification_tar",
            tar,
            "fraction",
            f"the same embeddings at dlib's suggested threshold {BASELINE_THRESHOLD}",
            b_tar,
            threshold=THRESHOLD,
            far=far,
            false_accepts=fa,
            false_rejects=fr,
            baseline_far=b_far,
            baseline_false_accepts=b_fa,
            same_person_pairs=pairs_same,
            different_person_pairs=pairs_diff,
            by_threshold={
                str(t): {"tar": s[0], "far": s[1], "false_accepts": s[2]} for t, s in scores.items()
            },
        )
    )
    ident = identification(emb, names, THRESHOLD)
    b_ident = identification(emb, names, BASELINE_THRESHOLD)
    out.append(
        emit(
            "face_identification_correct",
            ident["correct"] / (ident["correct"] + ident["wrong_name"] + ident["missed"]),
            "fraction",
            f"the same gallery at threshold {BASELINE_THRESHOLD}",
            b_ident["correct"] / (b_ident["correct"] + b_ident["wrong_name"] + b_ident["missed"]),
            threshold=THRESHOLD,
            **ident,
            baseline_counts=b_ident,
        )
    )
    truth = np.asarray(names)
    t = time.perf_counter()
    exact = face_cluster.cluster_faces(emb, THRESHOLD)
    exact_s = time.perf_counter() - t
    staged = face_cluster.cluster_faces(emb, THRESHOLD, max_exact=0)
    out.append(
        emit(
            "face_cluster_purity",
            face_cluster.purity(exact, truth),
            "fraction",
            "two-stage clustering (leaders, then average linkage) forced on the same faces",
            face_cluster.purity(staged, truth),
            threshold=THRESHOLD,
            clusters=int(exact.max()) + 1,
            people=len(set(names)),
            inverse_purity=face_cluster.purity(truth, exact),
            baseline_clusters=int(staged.max()) + 1,
            baseline_inverse_purity=face_cluster.purity(truth, staged),
            seconds=exact_s,
        )
    )
    say(
        f"TAR {tar:.3f} FAR {far:.4f} at {THRESHOLD}; clusters {int(exact.max()) + 1} for {len(set(names))} people"
    )
    out.extend(search_bench(emb, SIZES[:2] if quick else SIZES, 20 if quick else 100))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    run(args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
