"""Frame sources: video files, cameras / network streams, image folders.

Pure OpenCV: each source yields `CapturedFrame`s (BGR pixels plus sequence number and capture
time); publishing them to the frame log is someone else's job. Sources never raise for one bad
frame or file: an image folder yields `SkippedFile` for what it cannot read, a camera reconnects
when its stream drops. Errors a user can cause are `SourceError` (missing or unreadable input),
`SourceUnreachable` (a camera that does not answer) or `InputError` (bad option values).
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import re
import stat
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import cv2
import numpy as np

from ..errors import FrameError, InputError, SourceError, SourceUnreachable
from ..frames import MAX_SIDE, check_dimensions, image_size, utc
from ..imagefiles import is_image_name
from ..redact import redact_url

log = logging.getLogger("visionlake.ingest")

__all__ = [
    "CameraSource",
    "CapturedFrame",
    "ImageFolderSource",
    "SkippedFile",
    "VideoFileSource",
    "parse_size",
]

#: URL schemes a `CameraSource` accepts (opened with OpenCV's FFmpeg backend).
STREAM_SCHEMES = ("rtsp", "rtsps", "http", "https")
#: Image folder files larger than this are skipped rather than read into memory.
DEFAULT_MAX_FILE_BYTES = 256 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class CapturedFrame:
    """One frame from a source, before it is encoded and published."""

    image: np.ndarray  # BGR uint8, already resized if asked
    seq: int  # sequence number within the source
    captured_at: datetime  # aware UTC
    source: str  # human-readable origin: "video.avi#frame=12", "rtsp://...", "dir/a/b.jpg"
    #: Original encoded bytes when the source had them and the pixels were not changed
    #: (JPEG files in image folders), so they are published without re-encoding.
    data: bytes | None = None


@dataclass(frozen=True, slots=True)
class SkippedFile:
    """A file in an image folder that could not be used; the walk goes on."""

    path: str  # relative to the folder root, posix separators
    reason: str


# --- option parsing ----------------------------------------------------------------------------

_SIZE_RE = re.compile(r"^\s*(\d+)\s*[xX×]\s*(\d+)\s*$")


def parse_size(text: str | None) -> tuple[int, int] | None:
    """Parse ``"640x480"`` into ``(640, 480)``; ``None`` stays ``None``."""
    if text is None:
        return None
    m = _SIZE_RE.match(str(text))
    if not m:
        raise InputError(f"invalid size {text!r}: expected WIDTHxHEIGHT, for example 640x480")
    width, height = int(m.group(1)), int(m.group(2))
    if not (0 < width <= MAX_SIDE and 0 < height <= MAX_SIDE):
        raise InputError(f"invalid size {text!r}: width and height must be between 1 and {MAX_SIDE}")
    return width, height


def _check_resize(resize: tuple[int, int] | str | None) -> tuple[int, int] | None:
    if resize is None or isinstance(resize, str):
        return parse_size(resize)
    try:
        width, height = resize
    except (TypeError, ValueError):
        raise InputError(f"invalid size {resize!r}: expected (width, height)") from None
    if (
        isinstance(width, bool)
        or isinstance(height, bool)
        or not isinstance(width, int | np.integer)
        or not isinstance(height, int | np.integer)
        or not (0 < width <= MAX_SIDE and 0 < height <= MAX_SIDE)
    ):
        raise InputError(
            f"invalid size {resize!r}: width and height must be integers between 1 and {MAX_SIDE}"
        )
    return int(width), int(height)


def _check_fps(fps: float | None) -> float | None:
    if fps is None:
        return None
    if isinstance(fps, bool) or not isinstance(fps, int | float) or not math.isfinite(fps) or fps <= 0:
        raise InputError(f"invalid fps {fps!r}: must be a number greater than 0")
    return float(fps)


def _check_number(name: str, value: float, minimum: float, *, strict: bool = False) -> float:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < minimum or (strict and value == minimum):
        op = ">" if strict else ">="
        raise InputError(f"invalid {name} {value!r}: must be a number {op} {minimum}")
    return value


def _check_count(name: str, value: int | None, minimum: int, *, optional: bool = True) -> int | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InputError(f"invalid {name} {value!r}: must be an integer >= {minimum}")
    return value


def _resize(image: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    """Resize to exactly (width, height): INTER_AREA when shrinking, INTER_LINEAR when enlarging."""
    if size is None:
        return image
    height, width = image.shape[:2]
    if (width, height) == size:
        return image
    shrinking = size[0] * size[1] < width * height
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


def _mtime(st: os.stat_result) -> datetime:
    return datetime.fromtimestamp(st.st_mtime_ns / 1e9, UTC)


def _os_reason(exc: OSError) -> str:
    if isinstance(exc, PermissionError):
        return "permission denied"
    if isinstance(exc, FileNotFoundError):
        return "file disappeared while reading"
    return f"cannot read: {exc.strerror or exc}"


# --- video files -------------------------------------------------------------------------------


class VideoFileSource:
    """Frames of a video file, optionally sampled to `fps` frames per second of video time.

    `seq` is the frame's index in the file (counting every frame, also the ones sampling drops),
    and `captured_at` is `start_time` (default: the file's modification time) plus the frame's
    position in the video, so re-ingesting the same file gives the same frames whatever `fps` is.
    """

    def __init__(
        self,
        path: str | Path,
        fps: float | None = None,
        resize: tuple[int, int] | str | None = None,
        start_time: datetime | None = None,
    ) -> None:
        self.path = Path(path)
        self.fps = _check_fps(fps)
        self.resize = _check_resize(resize)
        name = str(path)
        try:
            st = self.path.stat()
        except FileNotFoundError:
            raise SourceError(f"cannot open video '{name}': no such file") from None
        except OSError as exc:
            raise SourceError(f"cannot open video '{name}': {_os_reason(exc)}") from None
        if stat.S_ISDIR(st.st_mode):
            raise SourceError(f"cannot open video '{name}': it is a directory, not a video file")
        if not stat.S_ISREG(st.st_mode):
            raise SourceError(f"cannot open video '{name}': not a regular file")
        try:
            with self.path.open("rb") as fh:
                empty = not fh.read(1)
        except OSError as exc:
            raise SourceError(f"cannot open video '{name}': {_os_reason(exc)}") from None
        if empty:
            raise SourceError(f"cannot open video '{name}': empty file")
        self.start_time = utc(start_time) if start_time is not None else _mtime(st)

        cap = self._open()
        try:
            ok, first = cap.read()
            if not ok or first is None:
                raise SourceError(
                    f"cannot open video '{name}': OpenCV (FFmpeg) found no decodable video frame "
                    "(not a video, corrupt, or an unsupported codec)"
                )
            fps_prop = cap.get(cv2.CAP_PROP_FPS)
            count_prop = cap.get(cv2.CAP_PROP_FRAME_COUNT)
        finally:
            cap.release()
        #: Frame rate the container declares (25.0 when it declares nothing usable).
        self.native_fps: float = fps_prop if math.isfinite(fps_prop) and 0 < fps_prop <= 1000 else 25.0
        #: Frame count the container declares: an estimate (None when unknown).
        self.frame_count: int | None = (
            int(count_prop) if math.isfinite(count_prop) and count_prop > 0 else None
        )
        self.native_size: tuple[int, int] = (first.shape[1], first.shape[0])
        #: (width, height) of the frames this source yields (after resizing).
        self.size: tuple[int, int] = self.resize or self.native_size

    def __repr__(self) -> str:
        return f"VideoFileSource({str(self.path)!r}, fps={self.fps}, resize={self.resize})"

    def _open(self) -> cv2.VideoCapture:
        cap = cv2.VideoCapture(str(self.path), cv2.CAP_FFMPEG)
        if not cap.isOpened():
            cap.release()
            raise SourceError(
                f"cannot open video '{self.path}': OpenCV (FFmpeg) cannot open it "
                "(not a video, corrupt, or an unsupported container)"
            )
        return cap

    @property
    def expected_frames(self) -> int | None:
        """About how many frames iteration yields (for a progress bar), None when unknown."""
        if self.frame_count is None:
            return None
        if self.fps is None or self.fps >= self.native_fps:
            return self.frame_count
        return max(1, math.ceil(self.frame_count * self.fps / self.native_fps))

    def __iter__(self) -> Iterator[CapturedFrame]:
        step_ms = 1000.0 / self.native_fps
        interval_ms = 1000.0 / self.fps if self.fps is not None else None
        name = str(self.path)
        cap = self._open()
        try:
            index = 0
            last_ms: float | None = None
            next_keep_ms = -math.inf
            while cap.grab():
                ms = _frame_ms(cap.get(cv2.CAP_PROP_POS_MSEC), last_ms, step_ms)
                last_ms = ms
                keep = interval_ms is None or ms + 1e-3 >= next_keep_ms
                if keep:
                    if interval_ms is not None:
                        next_keep_ms = (
                            ms + interval_ms
                            if next_keep_ms == -math.inf or next_keep_ms + interval_ms <= ms
                            else next_keep_ms + interval_ms
                        )
                    ok, image = cap.retrieve()
                    if ok and image is not None:
                        yield CapturedFrame(
                            image=_resize(image, self.resize),
                            seq=index,
                            captured_at=self.start_time + timedelta(milliseconds=ms),
                            source=f"{name}#frame={index}",
                        )
                    else:
                        log.warning("video '%s': frame %d could not be decoded, skipped", name, index)
                index += 1
        finally:
            cap.release()


def _frame_ms(pos_ms: float, last_ms: float | None, step_ms: float) -> float:
    """A frame's position in milliseconds: CAP_PROP_POS_MSEC when it is usable, else extrapolated.

    Some containers report 0 or a value that does not increase (Megamind.avi's last frame reads
    0.0); then the frame is placed one nominal frame interval after the previous one, so capture
    times always increase strictly.
    """
    usable = math.isfinite(pos_ms) and pos_ms >= 0
    if last_ms is None:
        return pos_ms if usable else 0.0
    if usable and pos_ms > last_ms:
        return pos_ms
    return last_ms + step_ms


# --- cameras and network streams ---------------------------------------------------------------


class CameraSource:
    """Frames from a camera device or a network stream (RTSP, HTTP MJPEG, ...), with reconnects.

    The first open is tried `open_attempts` times before `SourceUnreachable` is raised. Once
    running, a dropped or stalled stream is reopened with exponential backoff (reset after each
    good frame); iteration ends after `max_reconnects` reconnects in a row fail (`stopped_reason`
    then says why), after `max_frames` frames, or soon after `stop()`. `seq` counts frames yielded in
    this run, `captured_at` is the wall clock at capture.
    """

    def __init__(
        self,
        source: str | int,
        fps: float | None = None,
        resize: tuple[int, int] | str | None = None,
        *,
        open_attempts: int = 3,
        backoff_initial: float = 0.5,
        backoff_max: float = 10.0,
        stall_timeout: float = 10.0,
        max_reconnects: int | None = None,
        max_frames: int | None = None,
        open_timeout: float = 5.0,
    ) -> None:
        self.device: int | None = None
        self.url: str | None = None
        if isinstance(source, bool):
            raise InputError(f"invalid camera source {source!r}")
        if isinstance(source, int):
            self.device = source
        elif isinstance(source, str) and source.strip().isdigit():
            self.device = int(source.strip())
        elif isinstance(source, str):
            parts = urlsplit(source.strip())
            if parts.scheme.lower() not in STREAM_SCHEMES or not parts.hostname:
                raise InputError(
                    f"unsupported camera source {redact_url(source)!r}: use a device index (0, 1, ...) "
                    "or an rtsp://, rtsps://, http:// or https:// URL"
                )
            self.url = source.strip()
        else:
            raise InputError(f"invalid camera source {source!r}: expected a device index or a URL")
        if self.device is not None and self.device < 0:
            raise InputError(f"invalid camera device index {self.device}: must be >= 0")
        self.name = f"device:{self.device}" if self.url is None else redact_url(self.url)
        self.fps = _check_fps(fps)
        self.resize = _check_resize(resize)
        self.open_attempts = _check_count("open_attempts", open_attempts, 1, optional=False)
        self.backoff_initial = _check_number("backoff_initial", backoff_initial, 0)
        self.backoff_max = _check_number("backoff_max", backoff_max, 0)
        if self.backoff_max < self.backoff_initial:
            raise InputError(
                f"invalid backoff_max {backoff_max!r}: must be >= backoff_initial ({backoff_initial!r})"
            )
        self.stall_timeout = _check_number("stall_timeout", stall_timeout, 0, strict=True)
        self.open_timeout = _check_number("open_timeout", open_timeout, 0, strict=True)
        self.max_reconnects = _check_count("max_reconnects", max_reconnects, 0)
        self.max_frames = _check_count("max_frames", max_frames, 0)
        #: Successful reopens after a drop or stall during the last iteration.
        self.reconnects = 0
        #: Frames read but dropped by the `fps` throttle during the last iteration.
        self.throttled = 0
        #: Why the last iteration ended before `max_frames` (None while running or when it did not).
        self.stopped_reason: str | None = None
        self._stop = threading.Event()

    def __repr__(self) -> str:
        return f"CameraSource({self.name!r}, fps={self.fps}, resize={self.resize})"

    def _open(self) -> cv2.VideoCapture | None:
        """One attempt to open the capture; None when it cannot be opened."""
        if self.url is not None:
            params = [
                cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
                max(1, round(self.open_timeout * 1000)),
                cv2.CAP_PROP_READ_TIMEOUT_MSEC,
                max(1, round(self.stall_timeout * 1000)),
            ]
            cap = cv2.VideoCapture(self.url, cv2.CAP_FFMPEG, params)
        else:
            # Device backends (V4L2, ...) refuse to open with parameters they do not consume,
            # so the timeouts are only set afterwards, best effort.
            cap = cv2.VideoCapture(self.device)
        if not cap.isOpened():
            cap.release()
            return None
        if self.url is None:
            cap.set(cv2.CAP_PROP_READ_TIMEOUT_MSEC, max(1, round(self.stall_timeout * 1000)))
        return cap

    def stop(self) -> None:
        """End the running iteration soon, from another thread: backoff waits return at once.

        A read or open already under way still runs to its own timeout.
        """
        self._stop.set()

    def _open_first(self) -> cv2.VideoCapture | None:
        """The first capture; None when stopped meanwhile."""
        delay = self.backoff_initial
        for attempt in range(1, self.open_attempts + 1):
            cap = self._open()
            if cap is not None:
                return cap
            if attempt < self.open_attempts:
                log.warning(
                    "camera %s: cannot open (attempt %d of %d); retrying in %.3g s",
                    self.name,
                    attempt,
                    self.open_attempts,
                    delay,
                )
                if self._stop.wait(delay):
                    return None
                delay = min(delay * 2, self.backoff_max)
            if self._stop.is_set():
                return None
        plural = "s" if self.open_attempts != 1 else ""
        raise SourceUnreachable(
            f"cannot open camera source '{self.name}' after {self.open_attempts} attempt{plural} "
            f"(open timeout {self.open_timeout:g} s): check the URL or device index and that the "
            "camera or stream is up"
        )

    def __iter__(self) -> Iterator[CapturedFrame]:
        self._stop.clear()  # here, not in the generator: a stop() right after iter() is not lost
        return self._frames()

    def _frames(self) -> Iterator[CapturedFrame]:
        self.reconnects = 0
        self.throttled = 0
        self.stopped_reason = None
        if self.max_frames == 0:
            return
        interval = 1.0 / self.fps if self.fps is not None else None
        cap: cv2.VideoCapture | None = self._open_first()
        try:
            seq = 0
            failures = 0  # reconnects in a row that did not lead to a frame
            delay = self.backoff_initial
            next_due = -math.inf
            while not self._stop.is_set():
                started = time.monotonic()
                ok, image = cap.read() if cap is not None else (False, None)
                if ok and image is not None:
                    failures = 0
                    delay = self.backoff_initial
                    now = time.monotonic()
                    if interval is not None:
                        if now + 1e-4 < next_due:
                            self.throttled += 1
                            continue
                        # Keep the schedule when slightly late, restart it after a gap.
                        next_due = now + interval if now - next_due >= interval else next_due + interval
                    yield CapturedFrame(
                        image=_resize(image, self.resize),
                        seq=seq,
                        captured_at=datetime.now(UTC),
                        source=self.name,
                    )
                    seq += 1
                    if self.max_frames is not None and seq >= self.max_frames:
                        return
                    continue

                waited = time.monotonic() - started
                if cap is None:
                    what = "could not be reopened"
                elif waited >= 0.9 * self.stall_timeout:
                    what = f"stalled (no frame for {waited:.1f} s)"
                else:
                    what = "dropped (read failed)"
                if cap is not None:
                    cap.release()
                    cap = None
                if self.max_reconnects is not None and failures >= self.max_reconnects:
                    self.stopped_reason = (
                        f"stream {what}; giving up after {failures} failed reconnect"
                        f"{'s' if failures != 1 else ''} in a row"
                    )
                    log.error("camera %s: %s", self.name, self.stopped_reason)
                    return
                # WARNING, like "reconnected" below: the CLI's default level shows every attempt.
                log.warning(
                    "camera %s: stream %s; reconnecting in %.3g s (attempt %d)",
                    self.name,
                    what,
                    delay,
                    failures + 1,
                )
                if self._stop.wait(delay):
                    return
                delay = min(delay * 2, self.backoff_max)
                failures += 1
                cap = self._open()
                if cap is not None:
                    self.reconnects += 1
                    log.warning(
                        "camera %s: reconnected after %d attempt%s",
                        self.name,
                        failures,
                        "s" if failures != 1 else "",
                    )
        finally:
            if cap is not None:
                cap.release()


# --- image folders -----------------------------------------------------------------------------


def _path_seq(relpath: str) -> int:
    """Stable non-negative 63-bit number for a path relative to the folder root."""
    digest = hashlib.blake2b(relpath.encode("utf-8", "surrogateescape"), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


class ImageFolderSource:
    """Every image file under a folder, recursively, in sorted order; hidden names are skipped.

    Image files are told by their extension (`imagefiles`, the rule `dataset pack` uses too); other
    files are not images and only counted in `ignored`. Image files that cannot be read or decoded
    come out as `SkippedFile` and the walk goes on. `seq` is
    derived from the path relative to the root, so adding files does not renumber the others;
    `captured_at` is the file's modification time; JPEG files keep their original bytes in `data`
    when they are not resized.
    """

    def __init__(
        self,
        root: str | Path,
        resize: tuple[int, int] | str | None = None,
        *,
        max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
    ) -> None:
        self.root = Path(root)
        self.resize = _check_resize(resize)
        self.max_file_bytes = _check_count("max_file_bytes", max_file_bytes, 1, optional=False)
        if not self.root.exists():
            raise SourceError(f"cannot read image folder '{root}': no such directory")
        if not self.root.is_dir():
            raise SourceError(f"cannot read image folder '{root}': not a directory")
        try:
            os.scandir(self.root).close()
        except OSError as exc:
            raise SourceError(f"cannot read image folder '{root}': {_os_reason(exc)}") from None
        #: Files passed over because their names are not images' (counted by the last walk).
        self.ignored = 0

    def __repr__(self) -> str:
        return f"ImageFolderSource({str(self.root)!r}, resize={self.resize})"

    @staticmethod
    def seq_for(relpath: str) -> int:
        """The `seq` a file at `relpath` (posix, relative to the root) gets."""
        return _path_seq(relpath)

    def _walk(self, directory: str, rel: str) -> Iterator[tuple[str, str] | SkippedFile]:
        try:
            with os.scandir(directory) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            yield SkippedFile(f"{rel}/" if rel else "./", f"cannot list directory: {_os_reason(exc)}")
            return
        for entry in entries:
            if entry.name.startswith("."):
                continue
            relpath = f"{rel}/{entry.name}" if rel else entry.name
            try:
                if entry.is_dir(follow_symlinks=False):
                    yield from self._walk(entry.path, relpath)
                elif not is_image_name(entry.name):
                    self.ignored += 1
                elif entry.is_file(follow_symlinks=True):
                    yield relpath, entry.path
                elif entry.is_symlink():
                    if os.path.isdir(entry.path):
                        reason = "symbolic link to a directory (not followed)"
                    elif os.path.exists(entry.path):
                        reason = "not a regular file"
                    else:
                        reason = "broken symbolic link"
                    yield SkippedFile(relpath, reason)
                else:
                    yield SkippedFile(relpath, "not a regular file")
            except OSError as exc:
                yield SkippedFile(relpath, _os_reason(exc))

    def count(self) -> int:
        """How many items iteration yields (frames plus skipped files), without decoding anything."""
        self.ignored = 0
        return sum(1 for _ in self._walk(str(self.root), ""))

    def __iter__(self) -> Iterator[CapturedFrame | SkippedFile]:
        self.ignored = 0
        for item in self._walk(str(self.root), ""):
            if isinstance(item, SkippedFile):
                yield item
            else:
                yield self._load(*item)

    def _load(self, relpath: str, path: str) -> CapturedFrame | SkippedFile:
        try:
            st = os.stat(path)
            if st.st_size == 0:
                return SkippedFile(relpath, "empty file")
            if st.st_size > self.max_file_bytes:
                return SkippedFile(
                    relpath, f"file too large ({st.st_size} bytes, limit {self.max_file_bytes})"
                )
            with open(path, "rb") as fh:
                data = fh.read(self.max_file_bytes + 1)
        except OSError as exc:
            return SkippedFile(relpath, _os_reason(exc))
        if not data:
            return SkippedFile(relpath, "empty file")
        size = image_size(data)
        if size is not None:
            try:
                check_dimensions(size[0], size[1], "image header")
            except FrameError as exc:
                return SkippedFile(relpath, exc.reason)
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if image is None:
            return SkippedFile(relpath, "cannot decode image (not an image or corrupt)")
        resized = _resize(image, self.resize)
        is_jpeg = data[:3] == b"\xff\xd8\xff"
        return CapturedFrame(
            image=resized,
            seq=_path_seq(relpath),
            captured_at=_mtime(st),
            source=relpath,
            data=data if is_jpeg and resized is image else None,
        )
