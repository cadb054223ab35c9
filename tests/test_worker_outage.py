"""Workers wait out a backend outage: nothing lost, nothing counted twice once it is back."""

from __future__ import annotations

import threading

from test_worker import assert_exactly_once, publish

from visionlake.detectors import load_detector
from visionlake.lake import Lake
from visionlake.workers.worker import Worker


def test_worker_retries_while_the_postgres_catalog_is_down(tmp_path, postgres_cluster, postgres_url):
    lake = Lake(lake=tmp_path / "lake", catalog=postgres_url)
    n = publish(lake, "vtest", 24)
    restarted = threading.Event()

    def outage_after_first_batch(stats) -> None:
        if (
            stats.processed
            and not restarted.is_set()
            and not getattr(outage_after_first_batch, "done", False)
        ):
            outage_after_first_batch.done = True  # type: ignore[attr-defined]
            postgres_cluster.stop(keep=True)

            def back() -> None:
                postgres_cluster.start(keep_port=True)
                restarted.set()

            threading.Timer(3.0, back).start()

    worker = Worker(
        lake,
        load_detector("hog-person"),
        until_idle=True,
        idle_timeout=1.0,
        batch_size=4,
        retry_initial=0.2,
        retry_max=1.0,
        on_batch=outage_after_first_batch,
    )
    stats = worker.run()
    assert restarted.wait(30)
    assert stats.retries >= 1
    assert stats.processed == n
    assert_exactly_once(lake, n, "hog-person")
    lake.close()
