"""Publishing captured frames to the frame log: encode, claim-check big frames, send, summarise.

Sources (sources.py) know nothing about the log; this module knows nothing about OpenCV capture.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import InputError
from ..frames import FrameMeta, check_camera_id, encode_jpeg, frame_headers, make_frame_id
from ..lake import FRAMES_TOPIC, Lake
from ..log.base import partition_for
from .motion import MotionGate
from .sources import CapturedFrame, SkippedFile

if TYPE_CHECKING:
    from ..metrics import IngestMetrics

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
    ignored: int = 0  # files of a folder that are not images by name (not errors)
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
            "ignored": self.ignored,
            "seconds": round(self.seconds, 3),
        }


class FramePublisher:
    """Turns `CapturedFrame`s of one camera into frame records (the wire format of docs/architecture.md).

    `spread` > 1 sends the camera's frames round-robin to that many partitions (the camera's own, by
    its key, and the next ones), so that as many workers of a group share one busy camera. The price
    is order: those frames are processed in parallel, out of capture order, so order-dependent steps
    (tracking) skip them. Each such record says so in its `vl-spread` header.
    """

    def __init__(
        self,
        lake: Lake,
        camera: str,
        topic: str = FRAMES_TOPIC,
        quality: int = 90,
        linger: float = 0.05,
        spread: int = 1,
    ):
        self.lake = lake
        self.camera = check_camera_id(camera)
        self.topic = topic
        self.quality = quality
        self.linger = linger
        lake.log.ensure_topic(topic)
        config = lake.log.topic_config(topic)
        self.max_bytes = config.max_record_bytes
        if not 1 <= spread <= config.partitions:
            raise InputError(
                f"--spread {spread}: topic {topic!r} has {config.partitions} partitions, so a camera can be "
                f"spread over 1 to {config.partitions} of them"
            )
        self.spread = spread
        self._first = partition_for(self.camera.encode(), config.partitions)
        self._partitions = config.partitions
        self._sent = 0
        self.producer = lake.log.producer()
        self._last_flush = time.monotonic()
        #: Records sent since the last flush (not durable yet).
        self.pending = 0

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
        headers = frame_headers(meta)
        partition = None
        if self.spread > 1:
            headers.append(("vl-spread", str(self.spread).encode()))
            partition = (self._first + self._sent % self.spread) % self._partitions
        self.producer.send(
            self.topic,
            value,
            key=self.camera.encode(),
            headers=headers,
            timestamp_ms=int(frame.captured_at.timestamp() * 1000),
            partition=partition,
        )
        self._sent += 1
        self.pending += 1
        if time.monotonic() - self._last_flush >= self.linger:
            self.flush()
        return meta, len(data)

    def flush_due(self) -> None:
        """Flush what waited `linger` s: when frames stop coming, no next `publish` would."""
        if self.pending and time.monotonic() - self._last_flush >= self.linger:
            self.flush()

    def flush(self) -> None:
        self.producer.flush()
        self.pending = 0
        self._last_flush = time.monotonic()

    def close(self) -> None:
        self.producer.close()


#: How often the ingest loop looks at `should_stop` while the source gives nothing.
STOP_CHECK_SECONDS = 0.1
#: How long closing waits for a source blocked in a read or open before leaving it behind.
SOURCE_JOIN_SECONDS = 1.0

_END = object()


class _Failed:
    def __init__(self, error: BaseException) -> None:
        self.error = error


class _SourceThread:
    """Iterates a source in a thread, so a source blocked in a read, an open or a reconnect backoff
    never keeps the ingest loop from flushing on time or from stopping when asked."""

    def __init__(self, items: Iterable[Any]) -> None:
        self._source = items
        self._it = iter(items)  # in the caller's thread: a CameraSource resets its stop flag here
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=2)  # backpressure, as reading in-line
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="visionlake-ingest-source", daemon=True)
        self._thread.start()

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=STOP_CHECK_SECONDS)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            for item in self._it:
                if not self._put(item):
                    return
            self._put(_END)
        except BaseException as e:  # noqa: BLE001 - handed to the ingest loop, which raises it
            self._put(_Failed(e))
        finally:
            close = getattr(self._it, "close", None)
            if close is not None:
                close()  # a camera generator releases its capture

    def get(self, timeout: float) -> Any:
        """The next item, `_END`, or None when nothing came in `timeout` s; raises the source's error."""
        try:
            item = self._queue.get(timeout=timeout)
        except queue.Empty:
            return None
        if isinstance(item, _Failed):
            raise item.error
        return item

    def stop(self) -> list[Any]:
        """Stop reading; returns the items already read (frames received are still published)."""
        self._stop.set()
        stop = getattr(self._source, "stop", None)
        if callable(stop):
            stop()  # a camera leaves its reconnect backoff at once
        # Joined before draining, so that no put in progress lands after the drain. A source stuck
        # in a read or open is left behind: it ends on its own timeout and closes itself.
        self._thread.join(SOURCE_JOIN_SECONDS)
        left = []
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return left
            if item is not _END and not isinstance(item, _Failed):
                left.append(item)


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
    metrics: IngestMetrics | None = None,
    spread: int = 1,
) -> IngestStats:
    """Publish every frame of a source; bad files are reported, never fatal.

    The source is read in a thread: while it gives nothing (a camera reconnecting), records wait at
    most the publisher's linger before being flushed, and `should_stop` is seen within 0.1 s. Frames
    already read when it says stop are still published. `metrics` (`Metrics.ingest(camera)`) counts
    the frames, bytes and errors for Prometheus as the stats do. `spread`: see `FramePublisher`.
    """
    stats = IngestStats(camera)
    publisher = FramePublisher(lake, camera, topic, quality, spread=spread)
    start = time.monotonic()

    def handle(item: CapturedFrame | SkippedFile) -> None:
        if isinstance(item, SkippedFile):
            stats.errors.append((item.path, item.reason))
            if metrics is not None:
                metrics.error()
            log.info("skipped %s: %s", item.path, item.reason)  # the stats carry it to the caller
        elif motion is not None and not motion.check(item.image):
            stats.skipped_motion += 1
        else:
            meta, size = publisher.publish(item)
            stats.frames += 1
            stats.bytes += size
            stats.claim_checked += meta.ref is not None
            if metrics is not None:
                metrics.frame(size)
        if on_frame is not None:
            on_frame(stats)

    source = None
    try:
        source = _SourceThread(frames)
        while True:
            wait = min(publisher.linger, STOP_CHECK_SECONDS) if publisher.pending else STOP_CHECK_SECONDS
            item = source.get(max(wait, 0.001))
            if item is _END:
                break
            if item is None:
                publisher.flush_due()
            else:
                handle(item)
            if should_stop is not None and should_stop():
                for rest in source.stop():
                    handle(rest)
                break
    finally:
        try:
            if source is not None:
                source.stop()  # at the end, on a stop and on an error alike
        finally:
            publisher.close()
            stats.seconds = time.monotonic() - start
            stats.ignored = getattr(frames, "ignored", 0)
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
