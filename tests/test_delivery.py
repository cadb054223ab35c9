"""The delivery guarantee where it used to break: stops in mid-batch over several partitions, the
checkpoint's bookkeeping, and one image per frame id across archive, catalog and results."""

from __future__ import annotations

import hashlib
from itertools import islice

import pytest
from media import cameras_covering, sample

from visionlake.detectors import load_detector
from visionlake.detectors.base import Detector
from visionlake.ingest.publish import ingest
from visionlake.ingest.sources import VideoFileSource
from visionlake.lake import Lake
from visionlake.log.base import DEFAULT_PARTITIONS, partition_for
from visionlake.types import Detections, Record
from visionlake.workers.checkpoint import Checkpoint, OffsetRegression
from visionlake.workers.worker import Worker


def publish(lake: Lake, camera: str, n: int, size=(320, 240)) -> int:
    src = VideoFileSource(sample("vtest.avi"), resize=size)
    return ingest(lake, islice(src, n), camera).frames


def dead_letters(lake: Lake) -> list[Record]:
    out: list[Record] = []
    with lake.log.consumer(["frames.dlq"]) as c:
        while got := c.poll(100, 0.5):
            out.extend(got)
    return out


class StopOnFirstFrame(Detector):
    """HOG people, but asks its worker to stop while the first frame is in hand (like SIGTERM)."""

    name = "stopper"
    version = "1"

    def _setup(self) -> None:
        self.inner_ = load_detector("hog-person")
        self.worker_: Worker | None = None

    def detect(self, image) -> Detections:
        if self.worker_ is not None:
            self.worker_.stop()
            self.worker_ = None
        return self.inner_.detect(image)


def test_a_stop_during_the_first_frame_commits_no_frame_of_another_partition(lake):
    # two cameras on two partitions, two frames each: one poll returns records of both partitions
    a, b = cameras_covering(DEFAULT_PARTITIONS)[:2]
    assert partition_for(a.encode(), DEFAULT_PARTITIONS) != partition_for(b.encode(), DEFAULT_PARTITIONS)
    publish(lake, a, 2)
    publish(lake, b, 2)
    det = StopOnFirstFrame()
    w = Worker(lake, det, group="g", batch_size=8, until_idle=True, idle_timeout=0.5)
    det.worker_ = w
    first = w.run()
    assert first.processed == 1
    committed = lake.log.group_offsets("g", "frames")
    assert sum(committed.values()) == 1, committed  # only the finished frame
    second = Worker(lake, StopOnFirstFrame(), group="g", until_idle=True, idle_timeout=0.5).run()
    assert second.processed == 3 and second.reused == 0
    rows = lake.catalog.query("SELECT count(*), count(DISTINCT frame_id) FROM results").rows
    assert rows == [(4, 4)]


def test_checkpoint_commits_only_the_contiguous_finished_prefix(lake):
    publish(lake, "cam", 6)
    tp = ("frames", partition_for(b"cam", DEFAULT_PARTITIONS))
    with lake.log.consumer(["frames"], group="g") as consumer:
        records = consumer.poll(6, 5.0)
        assert [r.offset for r in records] == list(range(6))
        cp = Checkpoint(consumer)
        cp.track(records)
        for i in (0, 1, 3, 4):  # 2 is not finished: nothing past it may be committed
            cp.finish(records[i])
        assert cp.committable() == {tp: 2}
        assert cp.unfinished() == 2
        assert cp.commit() == {tp: 2}
        cp.finish(records[2])
        assert cp.committable() == {tp: 5}
        cp.commit()
        assert lake.log.group_offsets("g", "frames") == {tp[1]: 5}
        # offsets handed again from an earlier point (a seek) restart the partition's bookkeeping,
        # and a commit that would move the offset back is refused loudly
        cp.track(records[:2])
        cp.finish(records[0])
        with pytest.raises(OffsetRegression, match="back from 5 to 1"):
            cp.commit()


def test_offsets_with_gaps_are_followed_as_handed(lake):
    # Kafka leaves gaps (transaction markers, compaction): contiguity is over the records polled
    publish(lake, "cam", 1)
    with lake.log.consumer(["frames"], group="g") as consumer:
        consumer.poll(1, 5.0)
        fake = [Record("frames", 0, o, 0, b"cam", b"", []) for o in (10, 13, 20)]
        cp = Checkpoint(consumer)
        cp.track(fake)
        cp.finish(fake[0])
        cp.finish(fake[1])
        assert cp.committable() == {("frames", 0): 14}


def test_a_changed_image_under_a_stored_frame_id_is_refused_and_nothing_disagrees(lake):
    # re-ingesting a video with another --resize gives the same frame ids with other pixels
    publish(lake, "lobby", 4, size=(320, 240))
    first = Worker(lake, load_detector("hog-person"), until_idle=True, idle_timeout=0.5).run()
    assert first.processed == 4
    before = lake.catalog.query("SELECT frame_id, width, sha256, uri FROM frames ORDER BY 1").rows
    boxes = lake.catalog.query("SELECT count(*) FROM detections").rows
    publish(lake, "lobby", 4, size=(160, 120))
    again = Worker(lake, load_detector("hog-person"), until_idle=True, idle_timeout=0.5).run()
    assert again.processed == 0 and again.dead_lettered == 4 and again.dlq_reasons == {"conflict": 4}
    # a model that never saw the frames: the first image of each id wins, the second is refused
    other = Worker(lake, load_detector("haar-face"), until_idle=True, idle_timeout=0.5).run()
    assert other.processed == 4 and other.dead_lettered == 4
    after = lake.catalog.query("SELECT frame_id, width, sha256, uri FROM frames ORDER BY 1").rows
    assert after == before and all(w == 320 for _, w, _, _ in after)
    assert lake.catalog.query("SELECT count(*) FROM detections WHERE model='hog-person'").rows == boxes
    for _fid, _w, sha, uri in after:  # the archive holds exactly the image the catalog describes
        assert hashlib.sha256(lake.archive.get(uri)).hexdigest() == sha
    dead = dead_letters(lake)
    assert len(dead) == 8
    assert all("already stored with other content" in r.header("vl-error") for r in dead)
