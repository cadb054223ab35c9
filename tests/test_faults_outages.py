"""Fault injection: a backend goes away in the middle of a worker's run and comes back: the PostgreSQL
catalog restarted, the S3 server (SeaweedFS) killed and started again, the Kafka broker killed and
started again. The worker process must wait (bounded retries with backoff, a line on stderr naming the
outage), lose nothing and count nothing twice; then every invariant (tests/invariants.py) holds.

The broker: the suite's usual tansu keeps its topics in memory, so a restarted one is empty and a
"restart" would only test data loss by the broker. Here tansu stores its topics, offsets and groups in
S3 (its ``s3://`` storage engine, on this module's SeaweedFS), so killing it with SIGKILL and starting it
on the same port is a real outage after which the broker has everything it acknowledged.

Each test prints ``seed=N``; ``VISIONLAKE_FAULT_SEED=N`` replays its schedule.
"""

from __future__ import annotations

import json
import time
import uuid

import pytest
from faultlib import (
    FAST_GROUP,
    VL,
    PersistentKafkaBroker,
    fault_rng,
    kafka_url,
    log_opener,
    make_bucket,
    no_traceback,
    publish,
    reap_processes,
    restartable_seaweed,
    results_count,
    vl_argv,
    wait_for,
)
from invariants import OffsetMonitor, assert_invariants, group_lag
from media import cameras_covering

from visionlake.lake import Lake
from visionlake.log.base import DEFAULT_PARTITIONS

FACES = ("haar-face", "1")
GROUP = "haar-face.1"


@pytest.fixture(autouse=True)
def _reap():
    """No worker or ingest outlives its test, even a failed one."""
    yield from reap_processes()


@pytest.fixture(scope="module")
def restartable_s3(tmp_path_factory):
    """This module's own SeaweedFS (the archive of one test, the broker's storage in another)."""
    yield from restartable_seaweed(tmp_path_factory)


def publish_cameras(lake: Lake, per_camera: int) -> int:
    videos = ("Megamind.avi", "vtest.avi")
    return sum(
        publish(lake, cam, per_camera, videos[i % 2], (320, 240))
        for i, cam in enumerate(cameras_covering(DEFAULT_PARTITIONS))
    )


def worker_argv(lake: Lake, log: str | None = None, catalog: str | None = None) -> list[str]:
    return vl_argv(
        lake,
        "worker",
        "--detector",
        "haar-face",
        "--batch-size",
        "4",
        "--until-idle",
        "--idle-timeout",
        "3",
        "--format",
        "json",
        log=log,
        catalog=catalog,
    )


def outage_mid_run(lake: Lake, worker: VL, rng, n: int, down, up, ctx: str) -> tuple[int, float]:
    """Take the backend down once the worker has done a random share of the work, bring it back
    after a random pause; returns (results when it went down, seconds it was down)."""
    at = rng.randint(n // 8, n // 2)
    wait_for(lambda: worker.poll() is not None or results_count(lake) >= at, 120, f"{at} results [{ctx}]")
    assert worker.poll() is None, f"[{ctx}] the worker ended before the outage:\n{worker.stderr()[-2000:]}"
    done = results_count(lake)
    t0 = time.monotonic()
    down()
    time.sleep(rng.uniform(1.0, 3.0))
    up()
    return done, time.monotonic() - t0


# --- PostgreSQL ------------------------------------------------------------------------------------


def test_postgres_restarted_mid_run(tmp_path, postgres_cluster, postgres_url, request):
    rng, seed = fault_rng(request.node.name)
    ctx = f"seed={seed}"
    lake = Lake(lake=tmp_path / "lake", catalog=postgres_url)
    n = publish_cameras(lake, 20)
    lake.catalog  # noqa: B018
    with OffsetMonitor(log_opener(lake), GROUP) as monitor:
        worker = VL(worker_argv(lake, catalog=postgres_url), tmp_path / "procs", "worker")
        done, down_s = outage_mid_run(
            lake,
            worker,
            rng,
            n,
            lambda: postgres_cluster.stop(keep=True),
            lambda: postgres_cluster.start(keep_port=True),
            ctx,
        )
        rc = worker.wait(180)
    err = worker.stderr()
    print(f"[{ctx}] PostgreSQL down at {done} results for {down_s:.1f} s")
    no_traceback(err, "the worker")
    assert rc == 0, f"[{ctx}]\n{err[-3000:]}"
    stats = json.loads(worker.stdout())
    assert stats["retries"] >= 1 and "PostgreSQL" in err and "retrying the batch" in err, (
        ctx,
        stats,
        err[-2000:],
    )
    assert_invariants(lake, [FACES], ctx, groups=[GROUP], monitors=[monitor], expected_frames=n)
    lake.close()


# --- S3 --------------------------------------------------------------------------------------------


def test_s3_server_killed_and_restarted_mid_run(tmp_path, restartable_s3, request):
    rng, seed = fault_rng(request.node.name)
    ctx = f"seed={seed}"
    bucket = make_bucket(restartable_s3)
    root = tmp_path / "lake"
    root.mkdir()
    # retry_seconds 2: the archive gives up on an operation after 2 s (BackendUnavailable) and the
    # worker retries the whole batch with backoff; both layers of retries are exercised
    (root / "visionlake.toml").write_text(
        f'archive = "s3://{bucket}/lake"\n'
        "[archive_options]\n"
        f'endpoint_url = "{restartable_s3.endpoint_url}"\n'
        f'key = "{restartable_s3.key}"\n'
        f'secret = "{restartable_s3.secret}"\n'
        "retry_seconds = 2\n"
    )
    lake = Lake(lake=root)
    n = publish_cameras(lake, 20)
    lake.catalog  # noqa: B018
    with OffsetMonitor(log_opener(lake), GROUP) as monitor:
        worker = VL(worker_argv(lake), tmp_path / "procs", "worker")
        done, down_s = outage_mid_run(
            lake,
            worker,
            rng,
            n,
            restartable_s3.kill,
            lambda: restartable_s3.start(keep_ports=True),
            ctx,
        )
        rc = worker.wait(180)
    err = worker.stderr()
    print(f"[{ctx}] S3 down at {done} results for {down_s:.1f} s")
    no_traceback(err, "the worker")
    assert rc == 0, f"[{ctx}]\n{err[-3000:]}"
    stats = json.loads(worker.stdout())
    assert "S3" in err and "retrying" in err, (ctx, stats, err[-2000:])
    rep = assert_invariants(lake, [FACES], ctx, groups=[GROUP], monitors=[monitor], expected_frames=n)
    assert rep.summary["archive_objects"] == n
    lake.close()


# --- the Kafka broker ------------------------------------------------------------------------------


class WorkerQuitDuringOutage(AssertionError):
    """The known bug this test shows: --until-idle ends a worker that waited out an outage."""


def test_kafka_broker_killed_and_restarted_mid_run(tmp_path, restartable_s3, request):
    rng, seed = fault_rng(request.node.name)
    ctx = f"seed={seed}"
    broker = PersistentKafkaBroker(tmp_path / "tansu", restartable_s3, make_bucket(restartable_s3)).start()
    prefix = f"f{uuid.uuid4().hex[:10]}."
    url = kafka_url(broker.bootstrap, prefix, **FAST_GROUP)
    # the test's own clients give up on a request after 5 s (not 30) while the broker is away
    own_url = kafka_url(broker.bootstrap, prefix, **FAST_GROUP, request_timeout=5)
    try:
        lake = Lake(lake=tmp_path / "lake", log=own_url)
        n = publish_cameras(lake, 20)
        lake.catalog  # noqa: B018
        with OffsetMonitor(log_opener(lake), GROUP) as monitor:
            worker = VL(worker_argv(lake, log=url), tmp_path / "procs", "worker")
            # down for longer than the worker's --idle-timeout (3 s): an outage is not idleness
            done, down_s = outage_mid_run(
                lake,
                worker,
                rng,
                n,
                broker.stop,
                lambda: (time.sleep(2.5), broker.start(broker.port)),
                ctx,
            )
            rc = worker.wait(180)
            err = worker.stderr()
            print(f"[{ctx}] broker down at {done} results for {down_s:.1f} s")
            no_traceback(err, "the worker")
            assert rc == 0, f"[{ctx}]\n{err[-3000:]}"
            assert "Kafka" in err and ("brokers are down" in err or "Connection refused" in err), err[-2000:]
            lake.close()  # clients made before the restart: the checks below use fresh ones
            lake = Lake(lake=tmp_path / "lake", log=own_url)
            left = sum(group_lag(lake.log, GROUP).values())
            stats = json.loads(worker.stdout())
            print(f"[{ctx}] the worker exited 0 after {stats['processed']} frames; lag {left}")
            # whatever the worker left, a clean run does: nothing may be lost or counted twice. Before
            # it, one more restart with no member connected: tansu 0.6 leaves a group stuck in its
            # rebalance (no member ever gets an assignment again) when a member leaves during the
            # rejoin that follows a restart, which is what the worker above does when it quits early
            lake.close()
            broker.restart()
            lake = Lake(lake=tmp_path / "lake", log=own_url)
            final = VL(worker_argv(lake, log=url), tmp_path / "procs", "final")
            assert final.wait(180) == 0, final.stderr()
        assert_invariants(lake, [FACES], ctx, groups=[GROUP], monitors=[monitor], expected_frames=n)
        lake.close()
    finally:
        broker.stop()
    if left:
        raise WorkerQuitDuringOutage(
            f"[{ctx}] the worker exited 0 after {stats['processed']} frames with a lag of {left} "
            f"(of {n}) once the broker was back"
        )
