"""Publishing captured frames to the frame log: encode, claim-check big frames, send, summarise.

Sources (sources.py) know nothing about the log; this module knows nothing about OpenCV capture.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from ..frames import FrameMeta, check_camera_id, encode_jpeg, frame_headers, make_frame_id
from ..lake import FRAMES_TOPIC, Lake
from .motion import MotionGate
from .sources import CapturedFrame, SkippedFile

log = logging.getLogger("visionlake.ingest")


@dataclass
class IngestStats:
    """What an ingest did, for the summary line and `--format json`."""

    camera: str
    frames: int = 0
    bytes: int = 0
    skipped_motion: int = 0
    claim_checked: int = 0  # frames over the record limit, stored in the archive and sent by reference
    errors: list[tuple[str, str]] = field(default_factory=list)  # (source, reason)
    seconds: float = 0.0

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict:
        return {
            "camera": self.camera,
            "frames": self.frames,
            "bytes": self.bytes,
            "fps": round(self.fps, 1),
            "skipped_motion": self.skipped_motion,
            "claim_checked": self.claim_checked,
            "errors": [{"source": s, "reason": r} for s, r in self.errors],
            "seconds": round(self.seconds, 3),
        }


class FramePublisher:
    """Turns `CapturedFrame`s of one camera into frame records (DESIGN.md's wire format)."""

    def __init__(
        self, lake: Lake, camera: str, topic: str = FRAMES_TOPIC, quality: int = 90, linger: float = 0.05
    ):
        self.lake = lake
        self.camera = check_camera_id(camera)
        self.topic = topic
        self.quality = quality
        self.linger = linger
        lake.log.ensure_topic(topic)
        self.max_bytes = lake.log.topic_config(topic).max_record_bytes
        self.producer = lake.log.producer()
        self._last_flush = time.monotonic()

    def publish(self, frame: CapturedFrame) -> tuple[FrameMeta, int]:
        """Send one frame; returns its metadata and encoded size. Durable after `flush`."""
        data = frame.data if frame.data is not None else encode_jpeg(frame.image, self.quality)
        h, w = frame.image.shape[:2]
        meta = FrameMeta(
            make_frame_id(self.camera, frame.seq, frame.captured_at),
            self.camera,
            frame.seq,
            frame.captured_at,
            w,
            h,
        )
        value = data
        if len(data) > self.max_bytes:  # claim check: never drop a big frame
            archive = self.lake.archive
            meta = meta.with_ref(
                archive.put(archive.key(self.camera, frame.captured_at, meta.frame_id), data)
            )
            value = b""
        self.producer.send(
            self.topic,
            value,
            key=self.camera.encode(),
            headers=frame_headers(meta),
            timestamp_ms=int(frame.captured_at.timestamp() * 1000),
        )
        if time.monotonic() - self._last_flush >= self.linger:
            self.flush()
        return meta, len(data)

    def flush(self) -> None:
        self.producer.flush()
        self._last_flush = time.monotonic()

    def close(self) -> None:
        self.producer.close()


def ingest(
    lake: Lake,
    frames: Iterable[CapturedFrame | SkippedFile],
    camera: str,
    *,
    topic: str = FRAMES_TOPIC,
    quality: int = 90,
    motion: MotionGate | None = None,
    on_frame: Callable[[IngestStats], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> IngestStats:
    """Publish every frame of a source; bad files are reported, never fatal."""
    stats = IngestStats(camera)
    publisher = FramePublisher(lake, camera, topic, quality)
    start = time.monotonic()
    try:
        for item in frames:
            if isinstance(item, SkippedFile):
                stats.errors.append((item.path, item.reason))
                log.warning("skipped %s: %s", item.path, item.reason)
            elif motion is not None and not motion.check(item.image):
                stats.skipped_motion += 1
            else:
                meta, size = publisher.publish(item)
                stats.frames += 1
                stats.bytes += size
                stats.claim_checked += meta.ref is not None
            if on_frame is not None:
                on_frame(stats)
            if should_stop is not None and should_stop():
                break
    finally:
        publisher.close()
        stats.seconds = time.monotonic() - start
    log.info(
        "ingested %d frames (%d bytes) for camera %s in %.1f s; %d skipped by motion, %d errors",
        stats.frames,
        stats.bytes,
        camera,
        stats.seconds,
        stats.skipped_motion,
        len(stats.errors),
    )
    return stats
