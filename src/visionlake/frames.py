"""The frame record wire format: JPEG value, camera key, `vl-*` headers.

Any Kafka client can read a frame with `cv2.imdecode(np.frombuffer(value, np.uint8), cv2.IMREAD_COLOR)`;
the headers only add what a JPEG cannot carry. Records from plain producers (no headers) still work:
every header has a fallback derived from the record itself.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime

import cv2
import numpy as np

from .errors import FrameError, InputError
from .types import Headers, Record

SCHEMA_VERSION = "1"
CONTENT_TYPE = "image/jpeg"
#: Frames larger than this in either side are refused before decoding (decompression bombs).
MAX_SIDE = 16384
MAX_PIXELS = 100_000_000
MAX_CAMERA_ID = 128
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True, slots=True)
class FrameMeta:
    """What the log and the catalog know about one frame besides its pixels."""

    frame_id: str
    camera: str
    seq: int
    captured_at: datetime
    width: int
    height: int
    ref: str | None = None  # archive URI when the image was too large for the log (claim check)

    def with_ref(self, ref: str) -> FrameMeta:
        return replace(self, ref=ref)


def check_camera_id(camera: str) -> str:
    """Camera ids are free text (the archive escapes them) but must be printable and not blank."""
    if not camera or len(camera) > MAX_CAMERA_ID or not camera.isprintable():
        raise InputError(f"invalid camera id {camera!r}: use 1-{MAX_CAMERA_ID} printable characters")
    if not camera.strip():  # prints as nothing: no one could tell it apart or type it
        raise InputError(f"invalid camera id {camera!r}: it is blank")
    return camera


def utc(ts: datetime) -> datetime:
    """Normalise to an aware UTC datetime (naive values are taken as UTC)."""
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def iso(ts: datetime) -> str:
    return utc(ts).isoformat(timespec="microseconds").replace("+00:00", "Z")


def parse_iso(text: str) -> datetime:
    return utc(datetime.fromisoformat(text.replace("Z", "+00:00")))


def make_frame_id(camera: str, seq: int, captured_at: datetime) -> str:
    """Deterministic id: the same camera, sequence number and capture time give the same frame.

    A retried publish or a re-ingest of the same source therefore lands on the same catalog row.
    """
    h = hashlib.blake2b(f"{camera}\n{seq}\n{iso(captured_at)}".encode(), digest_size=12)
    return h.hexdigest()


def encode_jpeg(image: np.ndarray, quality: int = 90) -> bytes:
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise FrameError(f"OpenCV could not encode a {image.shape} image as JPEG")
    return buf.tobytes()


def frame_headers(meta: FrameMeta) -> Headers:
    headers: Headers = [
        ("vl-frame-id", meta.frame_id.encode()),
        ("vl-camera", meta.camera.encode()),
        ("vl-seq", str(meta.seq).encode()),
        ("vl-ts", iso(meta.captured_at).encode()),
        ("vl-width", str(meta.width).encode()),
        ("vl-height", str(meta.height).encode()),
        ("content-type", CONTENT_TYPE.encode()),
        ("vl-schema", SCHEMA_VERSION.encode()),
    ]
    if meta.ref:
        headers.append(("vl-ref", meta.ref.encode()))
    return headers


_SOF_MARKERS = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})


def _jpeg_segments(data: bytes) -> Iterator[tuple[int, int]]:
    """(marker, offset) of each header segment of JPEG `data`, up to and including the first scan.

    Stops early on a malformed header; the caller tells that from what it did not see.
    """
    i, n = 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            return
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        yield marker, i
        if marker == 0xDA:
            return
        (length,) = struct.unpack(">H", data[i + 2 : i + 4])
        i += 2 + length


def image_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) read from a JPEG SOF or PNG IHDR header without decoding, else None."""
    if data[:8] == PNG_MAGIC and len(data) >= 24:
        w, h = struct.unpack(">II", data[16:24])
        return w, h
    if data[:2] != b"\xff\xd8":
        return None
    for marker, i in _jpeg_segments(data):
        if marker in _SOF_MARKERS:
            if i + 9 > len(data):
                return None
            h, w = struct.unpack(">HH", data[i + 5 : i + 9])
            return w, h
        if marker == 0xDA:  # start of scan before any SOF: malformed
            return None
    return None


TRUNCATED_JPEG = "truncated JPEG: no end-of-image marker (the missing rows would decode as grey)"


def jpeg_truncated(data: bytes) -> bool:
    """True when JPEG `data` has no end-of-image marker after its first scan: the file was cut short.

    libjpeg decodes such a file without an error, filling the missing rows with grey, so a decode
    alone does not catch it. Entropy-coded data never holds a bare 0xFFD9 (0xFF is stuffed as 0xFF00),
    so an EOI after the first scan header marks a complete image (bytes appended after it are allowed).
    A header this reader cannot walk gives False: the decoder has the last word on those.
    """
    if data[:2] != b"\xff\xd8":
        return False
    scan = next((i for marker, i in _jpeg_segments(data) if marker == 0xDA), None)
    return scan is not None and data.rfind(b"\xff\xd9", scan) == -1  # from the end: EOI is usually last


def check_dimensions(width: int, height: int, what: str) -> None:
    if width <= 0 or height <= 0 or width > MAX_SIDE or height > MAX_SIDE or width * height > MAX_PIXELS:
        raise FrameError(
            f"{what} claims absurd dimensions {width}x{height} "
            f"(limit {MAX_SIDE}x{MAX_SIDE}, {MAX_PIXELS} pixels)"
        )


def image_format(data: bytes) -> str | None:
    """ "jpeg" or "png" from the first bytes, else None (the two formats a frame may have)."""
    if data[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if data[:8] == PNG_MAGIC:
        return "png"
    return None


def min_encoded_bytes(fmt: str, width: int, height: int) -> int:
    """Fewer bytes than this cannot hold a `width` x `height` image: what is missing would decode as grey.

    JPEG: every 8x8 block costs at least a few bits (a flat grey image measured 3 bits per block,
    progressive, and 8 baseline); the floor is a quarter of a bit. PNG: deflate shrinks at most about
    1032:1 and the smallest raw image is one bit per pixel plus a filter byte per row; the floor
    is half of that.
    """
    if fmt == "jpeg":
        return ((width + 7) // 8) * ((height + 7) // 8) // 32
    return height * (width // 8 + 1) // 2064


def check_density(data: bytes, width: int, height: int) -> None:
    """Refuse a decompression bomb by the byte: a tiny file whose header claims a huge image."""
    fmt = image_format(data)
    if fmt is None:
        return
    need = min_encoded_bytes(fmt, width, height)
    if len(data) < need:
        raise FrameError(
            f"image data far too short for its size: {len(data)} bytes cannot hold a {width}x{height} "
            f"{fmt.upper()} (at least {need} bytes); refused as corrupt"
        )


def decode_image(data: bytes, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode JPEG or PNG bytes to a BGR array, refusing empty, bomb-sized or undecodable input.

    Dimensions are read from the header and checked before any pixel is decoded: against the
    absolute limits, against `max_pixels` (a caller's memory budget) and against the data's size.
    A header this reader cannot walk is refused rather than left to the decoder, which skips junk
    and decodes whatever size it finds. EXIF orientation is ignored: boxes are in stored pixels.
    """
    if not data:
        raise FrameError("empty record: no image bytes")
    fmt = image_format(data)
    if fmt is None:
        raise FrameError(f"undecodable image: not JPEG or PNG (first bytes {data[:8].hex()})")
    size = image_size(data)
    if size is None:
        raise FrameError(f"undecodable {fmt.upper()} ({len(data)} bytes): malformed header, no readable size")
    check_dimensions(size[0], size[1], "image header")
    check_density(data, *size)
    if size[0] * size[1] > max_pixels:
        raise FrameError(
            f"image of {size[0]}x{size[1]} = {size[0] * size[1]} pixels exceeds this worker's budget of "
            f"{max_pixels} pixels a frame"
        )
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    if image is None:
        raise FrameError(f"undecodable {fmt.upper()} ({len(data)} bytes): OpenCV could not decode it")
    if (image.shape[1], image.shape[0]) != size:
        raise FrameError(
            f"undecodable {fmt.upper()}: header says {size[0]}x{size[1]}, decoder gave "
            f"{image.shape[1]}x{image.shape[0]}"
        )
    if jpeg_truncated(data):
        raise FrameError(f"{TRUNCATED_JPEG} ({len(data)} bytes)")
    return image


#: What a worker accepts from a record before any side effect (poison records go to the dead letters).
MAX_HEADER_BYTES = 4096  # any one vl-* header value (a vl-ref URI is the longest legitimate one)
MAX_FRAME_ID = 64  # the catalog's frames.frame_id column
FRAME_ID_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
INT64 = (-(2**63), 2**63 - 1)  # the catalog's BIGINT
#: Capture times the catalog and every clock library can hold.
MIN_TIME, MAX_TIME = datetime(1970, 1, 1, tzinfo=UTC), datetime(9999, 12, 31, tzinfo=UTC)


def _text_header(record: Record, name: str) -> str | None:
    """The last value of a header as text; refuses invalid UTF-8, control characters and huge values."""
    raw = next((v for k, v in reversed(record.headers) if k == name), None)
    if raw is None:
        return None
    if len(raw) > MAX_HEADER_BYTES:
        raise FrameError(f"header {name} is {len(raw)} bytes long, the limit is {MAX_HEADER_BYTES}")
    try:
        text = bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        raise FrameError(f"header {name} is not valid UTF-8: {bytes(raw[:40])!r}") from None
    if not text.isprintable():
        raise FrameError(f"header {name}={text[:40]!r} holds control characters")
    return text


def _int_header(record: Record, name: str, lo: int = INT64[0], hi: int = INT64[1]) -> int | None:
    raw = _text_header(record, name)
    if raw is None:
        return None
    digits = raw[1:] if raw.startswith("-") else raw
    if not (digits.isascii() and digits.isdigit()):
        raise FrameError(f"header {name}={raw[:40]!r} is not an integer")
    if len(digits) > 19 or not lo <= int(raw) <= hi:
        raise FrameError(f"header {name}={raw[:40]} is out of range ({lo} to {hi})")
    value = int(raw)
    return value


def _capture_time(record: Record) -> datetime:
    text = _text_header(record, "vl-ts")
    try:
        ts = parse_iso(text) if text else datetime.fromtimestamp(record.timestamp_ms / 1000, UTC)
    except (ValueError, OverflowError, OSError):
        what = f"header vl-ts={text[:40]!r}" if text else f"record timestamp {record.timestamp_ms}"
        raise FrameError(f"{what} is not a usable time (ISO 8601, years 1970-9999)") from None
    if not MIN_TIME <= ts <= MAX_TIME:
        raise FrameError(f"capture time {iso(ts)} is outside years 1970-9999")
    return ts


def _camera(record: Record) -> str:
    camera = _text_header(record, "vl-camera")
    if camera is None:
        key = record.key
        if not key:
            return "unknown"
        if len(key) > MAX_CAMERA_ID * 4:  # 4 bytes per character at most in UTF-8
            raise FrameError(f"record key of {len(key)} bytes is too long for a camera id")
        try:
            camera = bytes(key).decode("utf-8")
        except UnicodeDecodeError:
            raise FrameError(f"record key is not valid UTF-8: {bytes(key[:40])!r}") from None
    try:
        return check_camera_id(camera)
    except InputError as e:
        raise FrameError(str(e)) from None


def meta_from_record(record: Record) -> FrameMeta:
    """Frame metadata from a record's headers, with fallbacks for records from plain producers.

    Every field is checked here, before the worker does anything with the record: a value the
    catalog, the archive or the detection event could not hold makes the record a dead letter
    instead of jamming the group.
    """
    camera = _camera(record)
    seq = _int_header(record, "vl-seq")
    seq = record.offset if seq is None else seq
    captured = _capture_time(record)
    width, height = _int_header(record, "vl-width"), _int_header(record, "vl-height")
    if width is not None or height is not None:
        check_dimensions(width or 0, height or 0, "record header")
    ref = _text_header(record, "vl-ref")
    if width is None or height is None:
        size = image_size(record.value) if record.value else None
        width, height = size if size else (0, 0)
    frame_id = _text_header(record, "vl-frame-id")
    if frame_id is None:
        frame_id = make_frame_id(camera, seq, captured)
    elif not frame_id or len(frame_id) > MAX_FRAME_ID or not set(frame_id) <= FRAME_ID_CHARS:
        raise FrameError(
            f"header vl-frame-id={frame_id[:40]!r} is not a frame id (1-{MAX_FRAME_ID} of A-Z a-z 0-9 _ -)"
        )
    return FrameMeta(frame_id, camera, seq, captured, width, height, ref)
