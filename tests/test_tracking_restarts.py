"""Tracks across worker restarts: `worker --track` stopped by kill -9 at random moments, by kill -9
right after each step of a batch, and by SIGTERM, over several cameras on several partitions, ends with
exactly the track ids and tracks table of a run that was never stopped; and two trackers taking turns
on one camera (a partition moving between workers) give the ids of one.

Each test prints ``seed=N``; ``VISIONLAKE_FAULT_SEED=N`` replays its schedule.
"""

from __future__ import annotations

import signal
import time
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from faultlib import (
    CRASH_POINTS,
    FAST_GROUP,
    VL,
    crash_argv,
    fault_rng,
    kafka_url,
    no_traceback,
    publish,
    reap_processes,
    results_count,
    vl_argv,
    wait_for,
)
from invariants import assert_invariants
from media import cameras_covering
from test_faults_signals import committed

from visionlake.catalog import open_catalog
from visionlake.catalog import schema as S
from visionlake.frames import FrameMeta, make_frame_id
from visionlake.lake import Lake
from visionlake.log.base import DEFAULT_PARTITIONS
from visionlake.tracking import TrackerSettings
from visionlake.types import Detections
from visionlake.workers.tracks import BatchTracker

SIZE = (320, 240)
FACES = ("haar-face", "1")
PER_CAMERA = 30


@pytest.fixture(autouse=True)
def _reap():
    yield from reap_processes()


def make_lake(tmp_path, name: str, backend: str, request) -> tuple[Lake, str | None]:
    if backend == "sqlite":
        return Lake(lake=tmp_path / name), None
    url = kafka_url(request.getfixturevalue("kafka_broker"), **FAST_GROUP)
    return Lake(lake=tmp_path / name, log=url), url


def publish_cameras(lake: Lake) -> int:
    """One camera per partition, each a different stretch of Megamind (faces that come and go)."""
    return sum(
        publish(lake, cam, PER_CAMERA, "Megamind.avi", SIZE, start=25 * i)
        for i, cam in enumerate(cameras_covering(DEFAULT_PARTITIONS))
    )


def tracked_boxes(lake: Lake) -> dict[tuple, int | None]:
    """(frame, label, box) -> track id of every stored box."""
    d = S.detections.c
    with lake.catalog.engine.connect() as conn:
        rows = conn.execute(sa.select(d.frame_id, d.label, d.x1, d.y1, d.x2, d.y2, d.track_id)).all()
    return {
        (f, lab, round(x1, 1), round(y1, 1), round(x2, 1), round(y2, 1)): tid
        for f, lab, x1, y1, x2, y2, tid in rows
    }


def track_table(lake: Lake) -> list[tuple]:
    with lake.catalog.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.select(S.tracks).order_by(S.tracks.c.track_id))]


def worker_argv(lake: Lake, url: str | None, *extra: str) -> list[str]:
    return vl_argv(lake, "worker", "--detector", FACES[0], "--track", "--batch-size", "3", *extra, log=url)


@pytest.mark.parametrize(("backend", "stops"), [("sqlite", 8), ("kafka", 4)])
def test_tracks_survive_kill_9_and_sigterm_exactly(tmp_path, request, backend, stops):
    rng, seed = fault_rng(request.node.name)
    reference, ref_url = make_lake(tmp_path, "reference", backend, request)
    n = publish_cameras(reference)
    run = VL(
        worker_argv(reference, ref_url, "--until-idle", "--idle-timeout", "1"), tmp_path / "procs", "ref"
    )
    assert run.wait(180) == 0, run.stderr()[-3000:]
    want_boxes, want_tracks = tracked_boxes(reference), track_table(reference)
    assert len({row[1] for row in want_tracks}) == DEFAULT_PARTITIONS, "every camera should have tracks"

    lake, url = make_lake(tmp_path, "lake", backend, request)
    assert publish_cameras(lake) == n
    lake.catalog  # noqa: B018 - schema in place before the workers race
    group = "haar-face.1"
    cmd = worker_argv(lake, url)
    how = []
    for k in range(stops):
        if committed(lake, group) >= n:
            break
        kind = rng.choice(["kill", "point", "sigterm"])
        if kind == "point":
            point, nth = rng.choice(sorted(CRASH_POINTS)), rng.randint(1, 4)
            w = VL(crash_argv(point, nth, cmd), tmp_path / "procs", f"w{k}")
            wait_for(lambda w=w: w.poll() is not None or committed(lake, group) >= n, 120, f"{point}#{nth}")
            if w.poll() is None:
                w.kill9()
            how.append(f"{point}#{nth}")
            continue
        before = (results_count(lake), committed(lake, group))
        w = VL(cmd, tmp_path / "procs", f"w{k}")
        wait_for(
            lambda b=before, w=w: w.poll() is not None or (results_count(lake), committed(lake, group)) != b,
            60,
            f"progress of worker {k} [seed={seed}]",
        )
        time.sleep(rng.uniform(0.0, 0.4))
        if kind == "kill":
            w.kill9()
        else:
            w.proc.send_signal(signal.SIGTERM)
            assert w.wait(60) == 0, f"worker {k} after SIGTERM [seed={seed}]:\n{w.stderr()[-3000:]}"
        how.append(f"{kind} with {results_count(lake)} results")
    print("stops:", how)
    final = VL(worker_argv(lake, url, "--until-idle", "--idle-timeout", "1"), tmp_path / "procs", "final")
    assert final.wait(180) == 0, f"final run [seed={seed}]:\n{final.stderr()[-3000:]}"
    no_traceback(final.stderr(), "the final worker")
    assert_invariants(lake, [FACES], f"seed={seed} backend={backend}", groups=[group], expected_frames=n)
    got = tracked_boxes(lake)
    assert got.keys() == want_boxes.keys(), f"other boxes than the reference [seed={seed}]"
    split = {k: (want_boxes[k], got[k]) for k in got if got[k] != want_boxes[k]}
    assert not split, (
        f"{len(split)} boxes got other track ids after {how} [seed={seed}]: {list(split.items())[:5]}"
    )
    assert track_table(lake) == want_tracks
    reference.close()
    lake.close()


def people(t: int) -> Detections:
    """Frame t of a hall: person j walks in at frame 5j and out 20 frames later, 4 px a frame."""
    boxes = [
        {
            "label": "person",
            "score": 0.9,
            "box": [20 + 4 * (t - 5 * j), 40 * j, 60 + 4 * (t - 5 * j), 40 * j + 90],
        }
        for j in range(8)
        if 5 * j <= t < 5 * j + 20
    ]
    return Detections.from_list(boxes)


def test_two_workers_taking_turns_on_a_camera_continue_the_same_tracks(tmp_path):
    """A partition that moves from worker A to B and back: each picks up the state the other saved
    (people walk in while the other one has the camera)."""
    from test_catalog import result

    t0 = datetime(2026, 11, 3, 8, 0, tzinfo=UTC)
    frames = []
    for t in range(48):
        at = t0 + timedelta(seconds=t / 10)
        frames.append((FrameMeta(make_frame_id("hall", t, at), "hall", t, at, *SIZE), people(t)))

    def run(catalog_path, turns: int) -> list[list[int]]:
        catalog = open_catalog(str(catalog_path))
        workers = [BatchTracker(catalog, *FACES, TrackerSettings()) for _ in range(turns)]
        out = []
        for b in range(0, len(frames), 4):
            batch = frames[b : b + 4]
            tracked, states = workers[(b // 4) % turns].track([(m, d, False) for m, d in batch])
            catalog.write_results([result(m, d) for (m, _), d in zip(batch, tracked, strict=True)], states)
            out += [d.track_id.tolist() for d in tracked]
        catalog.close()
        return out

    alone, in_turns = run(tmp_path / "one.db", 1), run(tmp_path / "two.db", 2)
    assert in_turns == alone
    assert len({t for ids in alone for t in ids if t >= 0}) == 8
