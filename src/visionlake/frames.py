"""The frame record wire format (DESIGN.md): JPEG value, camera key, `vl-*` headers.

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
    """Camera ids are free text (the archive escapes them) but must be non-empty and printable."""
    if not camera or len(camera) > MAX_CAMERA_ID or not camera.isprintable():
        raise InputError(f"invalid camera id {camera!r}: use 1-{MAX_CAMERA_ID} printable characters")
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
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
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
    return scan is not None and data.find(b"\xff\xd9", scan) == -1


def check_dimensions(width: int, height: int, what: str) -> None:
    if width <= 0 or height <= 0 or width > MAX_SIDE or height > MAX_SIDE or width * height > MAX_PIXELS:
        raise FrameError(
            f"{what} claims absurd dimensions {width}x{height} "
            f"(limit {MAX_SIDE}x{MAX_SIDE}, {MAX_PIXELS} pixels)"
        )


def decode_image(data: bytes) -> np.ndarray:
    """Decode image bytes to a BGR array, refusing empty, bomb-sized or undecodable input."""
    if not data:
        raise FrameError("empty record: no image bytes")
    size = image_size(data)
    if size is not None:
        check_dimensions(size[0], size[1], "image header")
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        kind = "JPEG" if data[:2] == b"\xff\xd8" else "image"
        raise FrameError(f"undecodable {kind} ({len(data)} bytes): OpenCV could not decode it")
    if jpeg_truncated(data):
        raise FrameError(f"{TRUNCATED_JPEG} ({len(data)} bytes)")
    return image


def _int_header(record: Record, name: str) -> int | None:
    raw = record.header(name)
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        raise FrameError(f"header {name}={raw!r} is not an integer") from None


def meta_from_record(record: Record) -> FrameMeta:
    """Frame metadata from a record's headers, with fallbacks for records from plain producers."""
    camera = record.header("vl-camera")
    if camera is None:
        camera = record.key.decode("utf-8", "replace") if record.key else "unknown"
    seq = _int_header(record, "vl-seq")
    seq = record.offset if seq is None else seq
    ts_text = record.header("vl-ts")
    try:
        captured = parse_iso(ts_text) if ts_text else datetime.fromtimestamp(record.timestamp_ms / 1000, UTC)
    except ValueError:
        raise FrameError(f"header vl-ts={ts_text!r} is not an ISO 8601 time") from None
    width, height = _int_header(record, "vl-width"), _int_header(record, "vl-height")
    if width is not None or height is not None:
        check_dimensions(width or 0, height or 0, "record header")
    ref = record.header("vl-ref")
    if width is None or height is None:
        size = image_size(record.value) if record.value else None
        width, height = size if size else (0, 0)
    frame_id = record.header("vl-frame-id") or make_frame_id(camera, seq, captured)
    return FrameMeta(frame_id, camera, seq, captured, width, height, ref)
