"""The worker's batch size follows the detector's speed: big batches for fast detectors (the batch's
fixed cost, one catalog transaction and one commit, is shared by more frames), a frame or two for
slow ones (results reach the catalog at about --batch-seconds while a backlog drains)."""

from __future__ import annotations

from itertools import islice
from pathlib import Path

import pytest

from visionlake.detectors import load_detector
from visionlake.errors import InputError
from visionlake.ingest.publish import ingest
from visionlake.ingest.sources import VideoFileSource
from visionlake.lake import Lake
from visionlake.workers.batching import FIRST_BATCH, BatchSizer
from visionlake.workers.worker import Worker

VTEST = Path("/usr/share/doc/opencv-doc/examples/data/vtest.avi")


def test_sizer_asks_for_about_the_aimed_seconds_of_work_within_the_cap():
    fast, slow = BatchSizer(cap=32, seconds=0.5), BatchSizer(cap=32, seconds=0.5)
    assert fast.next() == slow.next() == FIRST_BATCH  # speed not known yet
    fast.observe(FIRST_BATCH, FIRST_BATCH * 0.004)  # 4 ms a frame: 125 would fit, the cap is 32
    slow.observe(FIRST_BATCH, FIRST_BATCH * 0.3)  # 300 ms a frame: one at a time
    assert (fast.next(), slow.next()) == (32, 1)
    assert BatchSizer(cap=4, seconds=0).next() == 4  # 0 seconds: always the cap


def test_sizer_settles_where_the_batch_fixed_cost_and_the_frames_fill_the_aim():
    sizer = BatchSizer(cap=1000, seconds=0.5)
    fixed, per_frame = 0.05, 0.01  # (0.5 - 0.05) / 0.01 = 45 frames fill half a second
    for _ in range(30):
        n = sizer.next()
        sizer.observe(n, fixed + per_frame * n)
    assert 40 <= sizer.next() <= 45
    sizer.observe(10, 0)  # nothing measurable: no change
    sizer.observe(0, 1.0)
    assert 40 <= sizer.next() <= 45


@pytest.mark.parametrize("bad", [{"cap": 0}, {"seconds": -1}])
def test_sizer_refuses_impossible_settings(bad):
    with pytest.raises(InputError):
        BatchSizer(**bad)


def test_a_fast_detector_gets_big_batches_and_a_tight_aim_gets_small_ones(tmp_path):
    if not VTEST.is_file():
        pytest.skip(f"{VTEST} missing: apt-get install opencv-doc")
    sizes: dict[str, list[int]] = {}
    for name, seconds in (("roomy", 30.0), ("tight", 0.001)):
        with Lake(lake=tmp_path / name) as lake:
            assert ingest(lake, islice(VideoFileSource(VTEST, resize=(160, 120)), 96), "cam").frames == 96
            done: list[int] = []
            w = Worker(
                lake,
                load_detector("haar-face"),
                until_idle=True,
                idle_timeout=0.3,
                batch_seconds=seconds,
                on_batch=lambda st, done=done: done.append(st.processed),
            )
            assert w.run().processed == 96
            sizes[name] = [b - a for a, b in zip([0, *done], done, strict=False)]
    # 96 frames over 4 partitions of one camera's key: one partition, polled in order
    assert sizes["roomy"][0] == FIRST_BATCH and max(sizes["roomy"]) == 32, sizes
    assert sizes["tight"][0] == FIRST_BATCH and set(sizes["tight"][1:]) == {1}, sizes
