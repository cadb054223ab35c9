"""Replay frames/s from the archive (catalog rows + archived JPEGs) vs from the log, same frames.

One camera's frames are published to an embedded log, processed once by haar-face (so the catalog and
the archive hold them), then replayed again and again under fresh model versions, alternating the
source each round so both see the same machine load: `source="log"` reads the records back from the
log, `source="archive"` pages through the catalog's `frames` in capture order and reads each JPEG
from the archive. Both runs do the same detection and catalog writes; frames/s is
`processed / busy_seconds` of the worker (the idle wait at the end is not counted). Each side's figure
is the median over the rounds.
"""

from __future__ import annotations

import statistics
from datetime import UTC, datetime, timedelta
from pathlib import Path

import common
from common import emit, say

from visionlake.detectors import load_detector
from visionlake.ingest.publish import FramePublisher
from visionlake.ingest.sources import CapturedFrame
from visionlake.lake import Lake
from visionlake.replay import prepare_replay
from visionlake.workers.worker import Worker

SIZE = (320, 240)
QUALITY = 90


def run(quick: bool, tmp: Path) -> None:
    n, rounds = (120, 3) if quick else (400, 5)
    frames = common.cycle(common.jpeg_frames(SIZE, QUALITY), n)
    with Lake(lake=tmp / "lake") as lake:
        pub = FramePublisher(lake, "bench", quality=QUALITY)
        t0 = datetime(2026, 1, 1, tzinfo=UTC)
        for i, data in enumerate(frames):
            image = common.decode(data)
            pub.publish(CapturedFrame(image, i, t0 + timedelta(seconds=i / 5), f"bench#{i}", data=data))
        pub.close()
        first = Worker(lake, load_detector("haar-face"), until_idle=True, idle_timeout=0.5).run()
        say(f"replay sources: {first.processed} frames processed once; {rounds} rounds per source")
        fps: dict[str, list[float]] = {"log": [], "archive": []}
        for r in range(rounds):
            for source in ("log", "archive"):
                w = prepare_replay(lake, load_detector("haar-face"), version=f"{source}-{r}", source=source)
                stats = w.run()
                if stats.processed != n or stats.source != source:
                    raise AssertionError(f"{source} replay processed {stats.processed} of {n} frames")
                fps[source].append(stats.fps)
                say(f"  round {r} {source}: {stats.fps:.1f} frames/s")
    log_fps, archive_fps = statistics.median(fps["log"]), statistics.median(fps["archive"])
    emit(
        "replay_from_archive_fps",
        archive_fps,
        "frames/s",
        "replay of the same frames from the embedded log (haar-face, 320x240)",
        log_fps,
        frames=n,
        rounds=rounds,
        per_round_archive=fps["archive"],
        per_round_log=fps["log"],
    )
