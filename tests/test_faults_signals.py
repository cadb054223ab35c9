"""Fault injection by signals: workers SIGKILLed at random moments and at exact steps of a batch (20
times, on the embedded log and on Kafka), a real SIGTERM after every possible number of finished frames,
ingests SIGKILLed mid-video, one member of a shared group SIGKILLed while another group runs. After
each fault a clean run, then the delivery invariants (tests/invariants.py), which the first test here
shows to catch each kind of violation.

Each test prints ``seed=N``; ``VISIONLAKE_FAULT_SEED=N`` replays its schedule.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from faultlib import (
    CRASH_POINTS,
    FAST_GROUP,
    VL,
    crash_argv,
    fault_rng,
    kafka_url,
    log_opener,
    no_traceback,
    publish,
    reap_processes,
    results_count,
    vl_argv,
    wait_for,
)
from invariants import OffsetMonitor, assert_invariants, check_invariants, read_topic
from media import cameras_covering, sample

from visionlake.detectors import load_detector
from visionlake.detectors.base import Detector
from visionlake.frames import decode_image, meta_from_record
from visionlake.ingest.sources import VideoFileSource
from visionlake.lake import Lake
from visionlake.log.base import DEFAULT_PARTITIONS
from visionlake.types import Detections
from visionlake.workers.worker import Worker

SIZE = (320, 240)
FACES = ("haar-face", "1")
PEOPLE = ("hog-person", "2")


@pytest.fixture(autouse=True)
def _reap():
    """No worker or ingest outlives its test, even a failed one."""
    yield from reap_processes()


def make_lake(tmp_path, backend: str, request) -> tuple[Lake, str | None]:
    """A fresh lake on the embedded log, or on the session's broker under a topic namespace of its own."""
    if backend == "sqlite":
        return Lake(lake=tmp_path / "lake"), None
    url = kafka_url(request.getfixturevalue("kafka_broker"), **FAST_GROUP)
    return Lake(lake=tmp_path / "lake", log=url), url


def publish_cameras(lake: Lake, per_camera: int, size=SIZE) -> int:
    """One camera per partition; the even ones show Megamind's faces, the odd ones vtest's people."""
    videos = ("Megamind.avi", "vtest.avi")
    return sum(
        publish(lake, cam, per_camera, videos[i % 2], size)
        for i, cam in enumerate(cameras_covering(DEFAULT_PARTITIONS))
    )


def committed(lake: Lake, group: str) -> int:
    try:
        return sum(lake.log.group_offsets(group, "frames").values())
    except Exception:  # noqa: BLE001 - polled through faults
        return -1


# --- 0. the checker itself ---------------------------------------------------------------------------


def test_the_invariant_checker_sees_each_kind_of_violation(tmp_path):
    """A clean lake passes; then one of each kind of damage is done by hand, and each is reported."""
    lake = Lake(lake=tmp_path / "lake")
    n = publish(lake, "lobby", 6, "Megamind.avi", SIZE)
    Worker(lake, load_detector("haar-face"), until_idle=True, idle_timeout=0.3).run()
    clean = check_invariants(lake, [FACES], groups=["haar-face.1"], expected_frames=n)
    clean.assert_ok("a clean lake")
    assert clean.summary["detections"] > 0  # Megamind shows faces: there are rows to duplicate
    with lake.catalog.engine.begin() as conn:
        ids = [r[0] for r in conn.execute(sa.text("SELECT frame_id FROM frames ORDER BY frame_id"))]
        with_faces = conn.execute(sa.text("SELECT frame_id FROM results WHERE n_detections > 0")).scalar()
        uri = dict(conn.execute(sa.text("SELECT frame_id, uri FROM frames")).all())
        conn.execute(sa.text("DELETE FROM results WHERE frame_id = :f"), {"f": ids[0]})  # lost
        conn.execute(  # one box stored twice
            sa.text("INSERT INTO detections SELECT * FROM detections WHERE frame_id = :f LIMIT 1"),
            {"f": with_faces},
        )
        conn.execute(sa.text("UPDATE results SET n_detections = 7 WHERE frame_id = :f"), {"f": ids[1]})
        conn.execute(
            sa.text("UPDATE frames SET sha256 = :s WHERE frame_id = :f"), {"s": "0" * 64, "f": ids[2]}
        )
        conn.execute(
            sa.text(
                "INSERT INTO results (frame_id, model, model_version, n_detections, processed_at, latency_ms) "
                "VALUES ('ffffffffffffffffffffffff', 'haar-face', '1', 0, '2026-01-01 00:00:00', 1.0)"
            )
        )
    os.unlink(uri[ids[3]])  # an image gone
    Path(uri[ids[4]] + ".1234abcd.tmp").write_bytes(b"partial")  # a stray object
    lake.log.commit_group_offsets("haar-face.1", "frames", {p: 0 for p in range(DEFAULT_PARTITIONS)})
    monitor = OffsetMonitor(log_opener(lake), "haar-face.1")
    monitor.samples = [(0.0, {1: 4}), (0.05, {1: 6}), (0.1, {1: 5})]
    rep = check_invariants(lake, [FACES], groups=["haar-face.1"], monitors=[monitor], expected_frames=n + 1)
    print(rep.describe())
    assert rep.kinds() == {
        "frames on the log",
        "frame lost",
        "detections without a result",
        "duplicated detection",
        "label counts disagree with detections",  # the twin box is not in result_labels
        "detections disagree with results",
        "archive object differs from its row",
        "archive object missing",
        "archive object without a frame row",
        "result for a frame never ingested",
        "result without its frame row",
        "result never published",
        "offset moved backwards",
        "lag after the final run",
    }, rep.describe()
    with pytest.raises(AssertionError, match="invariant violation"):
        rep.assert_ok("tampered")
    lake.close()


# --- 1. workers killed with SIGKILL, 20 times (12 on Kafka) --------------------------------------


def test_kill_9_worker_20_times_at_random_moments_sqlite(tmp_path, request):
    kill_worker_many_times(tmp_path, request, "sqlite", 20)


def test_kill_9_worker_12_times_at_random_moments_kafka(tmp_path, request):
    # 12: every join of a Kafka consumer group costs seconds; the embedded log takes the 20
    kill_worker_many_times(tmp_path, request, "kafka", 12)


def kill_worker_many_times(tmp_path, request, backend: str, times: int) -> None:
    """`times` worker processes, each SIGKILLed: half at a random moment once it is at work (mostly
    while it detects), half by a crash point right after a step of the batch (an archive put, the
    catalog transaction, the flush of its events, the commit), the windows a random kill seldom hits."""
    rng, seed = fault_rng(request.node.name)
    lake, url = make_lake(tmp_path, backend, request)
    n = publish_cameras(lake, 25)
    lake.catalog  # noqa: B018 - schema in place before the children race
    group = "haar-face.1"
    cmd = vl_argv(lake, "worker", "--detector", "haar-face", "--batch-size", "3", log=url)
    kills = []
    with OffsetMonitor(log_opener(lake), group) as monitor:
        for k in range(times):
            before = (results_count(lake), committed(lake, group))
            left = before[1] < n
            if left and rng.random() < 0.5:
                point, nth = rng.choice(sorted(CRASH_POINTS)), rng.randint(1, 3)
                w = VL(crash_argv(point, nth, cmd), tmp_path / "procs", f"worker{k}")
                how = f"{point}#{nth}"
                # the worker kills itself at the crash point, unless the work runs out first
                wait_for(
                    lambda w=w: w.poll() is not None or committed(lake, group) >= n,
                    60,
                    f"crash point {how} [seed={seed}]",
                )
                if w.poll() is None:
                    how += " (not reached: no work left)"
                    w.kill9()
                assert w.poll() == -9, (
                    f"worker {k} ({how}) exited {w.poll()} [seed={seed}]:\n{w.stderr()[-3000:]}"
                )
            else:
                w = VL(cmd, tmp_path / "procs", f"worker{k}")
                if left:  # at work once it stored or committed something new
                    wait_for(
                        lambda b=before, w=w: (
                            w.poll() is not None or (results_count(lake), committed(lake, group)) != b
                        ),
                        30,
                        f"progress of worker {k} [seed={seed}]",
                    )
                    delay = rng.uniform(0.0, 0.25)
                else:  # nothing left: it dies while it starts, joins or polls
                    delay = rng.uniform(0.2, 1.5)
                time.sleep(delay)
                how = f"{delay:.3f} s"
                assert w.poll() is None, f"worker {k} exited by itself [seed={seed}]:\n{w.stderr()[-3000:]}"
                w.kill9()
            kills.append((how, results_count(lake), committed(lake, group), left))
        print(f"kills (how, results after, committed after, work left before): {kills}")
        at_work = sum(1 for *_, left in kills if left)
        assert at_work >= times // 2, f"only {at_work} of the {times} kills found work left [seed={seed}]"
        final = VL(
            vl_argv(
                lake,
                "worker",
                "--detector",
                "haar-face",
                "--until-idle",
                "--idle-timeout",
                "1",
                "--batch-size",
                "3",
                "--format",
                "json",
                log=url,
            ),
            tmp_path / "procs",
            "final",
        )
        assert final.wait(180) == 0, f"final run failed [seed={seed}]:\n{final.stderr()[-3000:]}"
    no_traceback(final.stderr(), "the final worker")
    print("final run:", final.stdout())
    assert_invariants(
        lake, [FACES], f"seed={seed} backend={backend}", groups=[group], monitors=[monitor], expected_frames=n
    )
    lake.close()


# --- 2. a SIGTERM after every frame ----------------------------------------------------------------

#: frames per camera; the cameras sit on three different partitions
LAYOUT = (3, 2, 2)
N = sum(LAYOUT)
SIGTERM_MODEL = ("sigterm-at", "1")


class SigtermAt(Detector):
    """Haar faces, but sends this process a real SIGTERM while its `stop_at_`-th frame is in hand."""

    name = "sigterm-at"
    version = "1"

    def _setup(self) -> None:
        self.inner_ = load_detector("haar-face")
        self.calls_ = 0
        self.stop_at_: int | None = None

    def detect(self, image) -> Detections:
        self.calls_ += 1
        if self.calls_ == self.stop_at_:
            os.kill(os.getpid(), signal.SIGTERM)
        return self.inner_.detect(image)


def run_until_sigterm(lake: Lake, stop_at: int | None) -> Worker:
    """One worker in the main thread with SIGTERM wired to `Worker.stop`, as the CLI does."""
    det = SigtermAt()
    det.stop_at_ = stop_at
    worker = Worker(lake, det, group="g", batch_size=4, until_idle=True, idle_timeout=0.5)
    old = signal.signal(signal.SIGTERM, worker.stop)
    try:
        worker.run()
    finally:
        signal.signal(signal.SIGTERM, old)
    return worker


def short_stream(lake: Lake, rng) -> None:
    """LAYOUT frames over three partitions, an undecodable record somewhere in the second camera."""
    cams = cameras_covering(DEFAULT_PARTITIONS)[: len(LAYOUT)]
    bad_at = rng.randrange(LAYOUT[1] + 1)  # where the undecodable record goes in the second camera
    for cam, n in zip(cams, LAYOUT, strict=True):
        if cam != cams[1]:
            publish(lake, cam, n, "Megamind.avi", SIZE)
            continue
        publish(lake, cam, bad_at, "Megamind.avi", SIZE)
        with lake.log.producer() as p:
            p.send("frames", np.random.default_rng(7).bytes(3000), key=cam.encode())
        publish(lake, cam, n - bad_at, "Megamind.avi", SIZE, start=bad_at)


@pytest.mark.parametrize("backend", ["sqlite", "kafka"])
def test_sigterm_after_each_frame_commits_exactly_the_finished_records(backend, tmp_path, request):
    rng, seed = fault_rng(request.node.name)
    stops = range(1, N + 1)
    if backend == "kafka":  # a group join costs seconds there: one stop point, drawn by the seed
        stops = [rng.choice(stops)]
    for i in stops:
        ctx = f"seed={seed} backend={backend} SIGTERM at frame {i}"
        if backend == "sqlite":
            lake = Lake(lake=tmp_path / f"lake{i}")
        else:
            url = kafka_url(request.getfixturevalue("kafka_broker"), **FAST_GROUP)
            lake = Lake(lake=tmp_path / f"lake{i}", log=url)
        short_stream(lake, rng)
        with OffsetMonitor(log_opener(lake), "g") as monitor:
            first = run_until_sigterm(lake, i)
            assert first.stats.processed == i, (ctx, first.stats)
            # committed exactly the finished records: per partition, the committed offsets cover the
            # records that have a result or a dead letter, and no other
            recs, problem = read_topic(lake.log, "frames")
            assert problem is None and len(recs) == N + 1, (ctx, problem, len(recs))
            dead, problem = read_topic(lake.log, "frames.dlq")
            assert problem is None, problem
            with lake.catalog.engine.connect() as conn:
                done_ids = {r[0] for r in conn.execute(sa.text("SELECT frame_id FROM results"))}
            dead_at = {r.header("vl-source") for r in dead}
            finished = set()
            for r in recs:
                src = f"{r.topic}/{r.partition}@{r.offset}"
                if src in dead_at or (r.header("vl-frame-id") and meta_from_record(r).frame_id in done_ids):
                    finished.add((r.partition, r.offset))
            offsets = lake.log.group_offsets("g", "frames")
            covered = {(r.partition, r.offset) for r in recs if r.offset < offsets.get(r.partition, 0)}
            assert covered == finished, (
                f"[{ctx}] committed {offsets}: {sorted(covered)} != finished {sorted(finished)}"
            )
            assert len(dead) == len(dead_at) <= 1, (ctx, [r.header("vl-source") for r in dead])
            # the restart does the rest, and none of it twice
            second = run_until_sigterm(lake, None)
            assert second.stats.processed == N - i and second.stats.reused == 0, (ctx, second.stats)
        # N frames, and the undecodable record: it gets a frame id from its key, offset and time
        assert_invariants(lake, [SIGTERM_MODEL], ctx, groups=["g"], monitors=[monitor], expected_frames=N + 1)
        dead, _ = read_topic(lake.log, "frames.dlq")
        assert len(dead) == 1, f"[{ctx}] the undecodable record was dead-lettered {len(dead)} times"
        lake.close()


# --- 3. an ingest killed with SIGKILL mid-video ----------------------------------------------------


def log_records(lake: Lake) -> int:
    try:
        return sum(t.records for t in lake.log.topics() if t.name == "frames")
    except Exception:  # noqa: BLE001
        return 0


def test_kill_9_ingest_mid_video_then_ingest_again(tmp_path, request):
    """Three ingests of one video SIGKILLed at random moments (the embedded log: its segment files may
    end with bytes no index row refers to), then a whole ingest of the same video, then a worker."""
    rng, seed = fault_rng(request.node.name)
    lake, url = make_lake(tmp_path, "sqlite", request)
    video = str(sample("vtest.avi"))  # 795 frames at 10 fps; --fps 2 keeps every fifth
    args = ("ingest", "video", video, "--camera", "hall", "--fps", "2", "--resize", "160x120")
    lake.log.ensure_topic("frames")
    lake.catalog  # noqa: B018
    whole = sum(1 for _ in VideoFileSource(video, fps=2, resize=(160, 120)))  # frames of a whole ingest
    seen, mid = [0], 0
    for attempt in range(8):  # ingests killed at random moments, until 3 kills landed mid-video
        ing = VL(vl_argv(lake, *args, log=url), tmp_path / "procs", f"ingest{attempt}")
        wait_for(lambda i=ing: i.poll() is not None or log_records(lake) > seen[-1], 30, "first records")
        time.sleep(rng.uniform(0.0, 0.4))
        assert ing.poll() is None, f"ingest {attempt} ended before its kill [seed={seed}]:\n{ing.stderr()}"
        ing.kill9()
        seen.append(log_records(lake))
        # a small video can be all on the log before the kill lands (the process was closing): retry
        mid += 0 < seen[-1] - seen[-2] < whole
        if mid == 3:
            break
    print(f"records on the log after each kill: {seen[1:]} (a whole ingest: {whole})")
    assert mid == 3, f"3 of {len(seen) - 1} kills landed mid-video [seed={seed}]"
    # the log stays readable: every record that made it is whole, its image decodes
    recs, problem = read_topic(lake.log, "frames")
    assert problem is None, problem
    assert len(recs) == seen[-1], (seen, len(recs))
    for r in recs:
        assert decode_image(r.value).shape[:2] == (120, 160)
    partial = {meta_from_record(r).frame_id for r in recs}
    # a complete ingest of the same video publishes the same frame ids again
    done = VL(vl_argv(lake, *args, "--format", "json", log=url), tmp_path / "procs", "ingest-full")
    assert done.wait(120) == 0, done.stderr()
    n = json.loads(done.stdout())["frames"]
    assert n == whole, (n, whole)
    recs, problem = read_topic(lake.log, "frames")
    assert problem is None, problem
    ids = {meta_from_record(r).frame_id for r in recs}
    assert len(ids) == n and partial <= ids, f"a re-ingest gave other frame ids [seed={seed}]"
    with OffsetMonitor(log_opener(lake), "haar-face.1") as monitor:
        worker = VL(
            vl_argv(
                lake, "worker", "--detector", "haar-face", "--until-idle", "--idle-timeout", "1", log=url
            ),
            tmp_path / "procs",
            "worker",
        )
        assert worker.wait(180) == 0, worker.stderr()
    assert_invariants(
        lake, [FACES], f"seed={seed}", groups=["haar-face.1"], monitors=[monitor], expected_frames=ids
    )
    with lake.catalog.engine.connect() as conn:  # no duplicate frame after the workers ran
        assert tuple(
            conn.execute(sa.text("SELECT count(*), count(DISTINCT frame_id) FROM frames")).one()
        ) == (n, n)
    lake.close()


# --- 6. two groups at once, one member killed --------------------------------------------------------


def test_two_groups_at_once_one_member_killed(tmp_path, request):
    rng, seed = fault_rng(request.node.name)
    lake = Lake(lake=tmp_path / "lake")
    n = publish_cameras(lake, 16)
    lake.catalog  # noqa: B018
    opts = ("--batch-size", "2", "--until-idle", "--idle-timeout", "2", "--threads", "1", "--format", "json")
    faces = vl_argv(lake, "worker", "--detector", "haar-face", "--group", "faces", *opts)
    people = vl_argv(lake, "worker", "--detector", "hog-person", "--group", "people", *opts)
    victim_index = rng.randrange(2)
    with (
        OffsetMonitor(log_opener(lake), "faces") as m_faces,
        OffsetMonitor(log_opener(lake), "people") as m_people,
    ):
        procs = [VL(faces, tmp_path / "procs", f"faces{i}") for i in range(2)]
        procs.append(VL(people, tmp_path / "procs", "people"))
        wait_for(
            lambda: [g for g in lake.log.groups() if g.group == "faces" and len(g.members) == 2],
            30,
            "two members in group faces",
        )
        victim = procs[victim_index]
        wait_for(lambda: committed(lake, "faces") > 0, 60, "a first commit of group faces")
        time.sleep(rng.uniform(0.0, 0.6))
        assert victim.poll() is None, f"the victim ended before its kill [seed={seed}]"
        victim.kill9()
        at_kill = (results_count(lake), committed(lake, "faces"), committed(lake, "people"))
        print(f"killed faces{victim_index}; (results, faces committed, people committed) = {at_kill}")
        for p in procs:
            if p is not victim:
                assert p.wait(180) == 0, f"[seed={seed}]\n{p.stderr()[-3000:]}"
                no_traceback(p.stderr(), "a surviving worker")
        survivor = procs[1 - victim_index]
        assert json.loads(survivor.stdout())["processed"] > 0
        # clean runs of both groups: nothing may be left to do
        for argv, name in ((faces, "faces-final"), (people, "people-final")):
            last = VL(argv, tmp_path / "procs", name)
            assert last.wait(120) == 0, last.stderr()
            print(f"{name}: {json.loads(last.stdout())['processed']} frames left over")
    assert_invariants(
        lake,
        [FACES, PEOPLE],
        f"seed={seed}",
        groups=["faces", "people"],
        monitors=[m_faces, m_people],
        expected_frames=n,
    )
    lake.close()
