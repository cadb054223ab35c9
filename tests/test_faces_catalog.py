"""Face identities in the catalog, on every backend: embeddings written and replaced with their
results, read back with re-delivered results, an identity removed (its embeddings deleted, its boxes
"unknown", per-label counts and roll-up exact), a cluster named, unknown faces forgotten; and, with
real dlib, the `faces` commands and a face-id worker end to end."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta

import cv2
import numpy as np
import pytest
import sqlalchemy as sa
from media import frames_at, sample
from test_catalog import T0, meta, result
from test_rollups import kept_rows, label_counts, rebuilt_rows

from visionlake.catalog import faces as F
from visionlake.catalog import schema as S
from visionlake.faces import unavailable_reason
from visionlake.ingest.publish import ingest
from visionlake.ingest.sources import VideoFileSource
from visionlake.lake import Lake
from visionlake.types import Detections

RNG = np.random.default_rng(3)
ANN, BOB = RNG.normal(size=128).astype(np.float32), RNG.normal(size=128).astype(np.float32)


def face_boxes(*people: tuple[str, np.ndarray]) -> Detections:
    n = len(people)
    xyxy = np.array([[10 + 60 * i, 10, 50 + 60 * i, 60] for i in range(n)], np.float32).reshape(-1, 4)
    return Detections(
        xyxy,
        np.full(n, 0.9, np.float32),
        np.array([p[0] for p in people], dtype=object),
        embedding=np.stack([p[1] for p in people]) if n else np.zeros((0, 128), np.float32),
        distance=np.array([0.3 if p[0] != "unknown" else 0.7 for p in people], np.float32),
    )


def faces_table(catalog) -> list[tuple]:
    e = S.face_embeddings.c
    with catalog.engine.connect() as conn:
        rows = conn.execute(sa.select(e.source, e.identity, e.frame_id, e.x1, e.photo)).all()
    return sorted((tuple(r) for r in rows), key=lambda r: tuple("" if v is None else str(v) for v in r))


def assert_counts_exact(catalog) -> None:
    kept, counted = label_counts(catalog)
    assert kept == counted
    assert kept_rows(catalog) == rebuilt_rows(catalog)


@pytest.fixture
def seen(catalog):
    """Four face-id frames: ann and an unknown face, bob, nothing, two unknown faces like each other."""
    f = [meta("door", i, T0 + timedelta(minutes=i)) for i in range(4)]
    near = BOB + 0.01
    catalog.ensure_model("face-id", "1", {})
    catalog.write_results(
        [
            result(f[0], face_boxes(("ann", ANN), ("unknown", ANN * -1)), model="face-id"),
            result(f[1], face_boxes(("bob", BOB)), model="face-id"),
            result(f[2], face_boxes(), model="face-id"),
            result(f[3], face_boxes(("unknown", near), ("unknown", near + 0.01)), model="face-id"),
        ]
    )
    with catalog.engine.begin() as conn:
        F.enrol(conn, "ann", ["ann.jpg"], ANN[None])
        F.enrol(conn, "bob", ["bob1.jpg", "bob2.jpg"], np.stack([BOB, BOB]))
    return catalog, f


def test_seen_faces_are_stored_with_their_results_and_come_back_on_redelivery(seen):
    catalog, f = seen
    rows = faces_table(catalog)
    assert [r[:2] for r in rows if r[0] == "seen"] == [
        ("seen", None), ("seen", None), ("seen", None), ("seen", "ann"), ("seen", "bob")
    ]  # fmt: skip
    stored = catalog.existing_results([m.frame_id for m in f], "face-id", "1")
    assert np.array_equal(stored[f[0].frame_id].embedding[0], ANN)
    assert stored[f[0].frame_id].distance.tolist() == pytest.approx([0.3, 0.7])
    assert stored[f[2].frame_id].embedding is None and len(stored[f[2].frame_id]) == 0
    # a re-delivered batch writes the same rows again: nothing is added or lost
    catalog.write_results([result(f[0], stored[f[0].frame_id], model="face-id")])
    assert faces_table(catalog) == rows
    # a result rewritten with other faces replaces its faces
    catalog.write_results([result(f[0], face_boxes(("bob", BOB)), model="face-id")])
    assert [r[1] for r in faces_table(catalog) if r[2] == f[0].frame_id] == ["bob"]


def test_removing_an_identity_deletes_its_embeddings_and_names(seen):
    catalog, f = seen
    with catalog.engine.begin() as conn:
        done = F.remove_identity(conn, "bob")
        assert [r[0] for r in F.list_identities(conn)] == ["ann"]
    assert done == {"embeddings": 3, "boxes_relabelled": 1}
    assert not [r for r in faces_table(catalog) if r[1] == "bob"]
    labels = catalog.query("SELECT label, count(*) FROM detections GROUP BY label ORDER BY label").rows
    assert labels == [("ann", 1), ("unknown", 4)]
    assert_counts_exact(catalog)
    with catalog.engine.begin() as conn, pytest.raises(F.UnknownName, match="enrolled: ann"):
        F.remove_identity(conn, "bob")


def test_a_named_cluster_is_enrolled_and_relabelled(seen):
    catalog, f = seen
    with catalog.engine.begin() as conn:
        stored, _ = F.faces(conn, source=F.SEEN, unknown_only=True)
        F.set_clusters(conn, {s.face_id: (0 if s.frame_id == f[3].frame_id else 1) for s in stored})
        done = F.name_cluster(conn, 0, "carl")
        names, vectors = F.gallery_rows(conn)
    assert done == {"faces": 2, "boxes_relabelled": 2}
    assert names.count("carl") == 2 and vectors.shape == (5, 128)
    labels = dict(catalog.query("SELECT label, count(*) FROM detections GROUP BY label").rows)
    assert labels == {"ann": 1, "bob": 1, "carl": 2, "unknown": 1}
    assert_counts_exact(catalog)
    with catalog.engine.begin() as conn, pytest.raises(Exception, match="no unknown faces in cluster 0"):
        F.name_cluster(conn, 0, "dora")


def test_unknown_faces_are_forgotten_after_the_cutoff_and_named_ones_kept(seen):
    catalog, f = seen
    with catalog.engine.begin() as conn:
        assert F.forget_unknown(conn, T0 + timedelta(minutes=2)) == 1  # frame 0's unknown face
        assert F.forget_unknown(conn, T0 + timedelta(days=1)) == 2
    assert sorted(r[1] for r in faces_table(catalog) if r[0] == "seen") == ["ann", "bob"]


# --- real faces, through the CLI ---------------------------------------------------------------------

needs_faces = pytest.mark.skipif(
    unavailable_reason() is not None, reason=f"faces extra: {unavailable_reason()}"
)


@needs_faces
def test_faces_commands_and_a_face_id_worker_end_to_end(tmp_path):
    shots = frames_at("Megamind.avi", [101, 165])
    cv2.imwrite(str(tmp_path / "bernard.png"), shots[101][0:400, 300:700])
    cv2.imwrite(str(tmp_path / "roxanne.jpg"), shots[165][60:400, 150:420])
    cv2.imwrite(str(tmp_path / "wall.png"), shots[101][0:60, 0:60])
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    lake_dir = tmp_path / "lake"

    def vl(*args: str) -> subprocess.CompletedProcess:
        argv = [sys.executable, "-m", "visionlake", "--lake", str(lake_dir), *args]
        return subprocess.run(argv, capture_output=True, text=True, timeout=300)

    with Lake(lake=lake_dir) as lake:
        src = VideoFileSource(sample("Megamind.avi"), fps=3)
        assert ingest(lake, src, "set").frames > 0
    empty = vl("worker", "-d", "face-id", "--until-idle")
    assert empty.returncode == 2 and "no identities are enrolled" in empty.stderr
    for bad, why in (("wall.png", "no face found"), ("broken.jpg", "broken.jpg")):
        out = vl("faces", "enroll", "roxanne", str(tmp_path / "roxanne.jpg"), str(tmp_path / bad))
        assert out.returncode == 2 and why in out.stderr, out.stderr
    assert "roxanne" not in vl("faces", "list", "-f", "csv").stdout  # all or nothing
    assert vl("faces", "enroll", "bernard", str(tmp_path / "bernard.png")).returncode == 0
    assert vl("faces", "enroll", "roxanne", str(tmp_path / "roxanne.jpg")).returncode == 0
    run = vl("worker", "-d", "face-id", "--until-idle", "--idle-timeout", "1")
    assert run.returncode == 0, run.stderr
    with Lake(lake=lake_dir) as lake:
        labels = dict(lake.catalog.query("SELECT label, count(*) FROM detections GROUP BY label").rows)
        seen_rows = lake.catalog.query("SELECT count(*) FROM face_embeddings WHERE source = 'seen'").rows
        fid = lake.catalog.query(
            "SELECT frame_id FROM detections WHERE label = 'bernard' ORDER BY frame_id LIMIT 1"
        ).rows[0][0]
    assert labels.get("bernard", 0) >= 3 and labels.get("roxanne", 0) >= 3, labels
    assert seen_rows == [(sum(labels.values()),)]
    with Lake(lake=lake_dir) as lake:
        named = lake.catalog.query(
            "SELECT max(distance) FROM face_embeddings WHERE identity IS NOT NULL"
        ).rows
        unknown = lake.catalog.query("SELECT min(distance) FROM face_embeddings WHERE identity IS NULL").rows
    assert named[0][0] <= 0.5 and (unknown[0][0] is None or unknown[0][0] > 0.5)
    who = vl("faces", "who", fid[:10], "-f", "csv")
    assert who.returncode == 0 and ",bernard," in who.stdout, who.stdout
    similar = vl("faces", "similar", fid, "--limit", "3", "-f", "csv")
    assert similar.returncode == 0 and len(similar.stdout.splitlines()) == 4
    clusters = vl("faces", "cluster", "-f", "csv")
    assert clusters.returncode == 0 and clusters.stdout.startswith("cluster,faces")
    gone = vl("faces", "remove", "bernard", "-f", "json")
    assert gone.returncode == 0 and '"boxes_relabelled": ' + str(labels["bernard"]) in gone.stdout
    assert vl("faces", "remove", "bernard").returncode == 2
    assert "bernard" not in vl("sql", "SELECT DISTINCT label FROM detections", "-f", "csv").stdout
