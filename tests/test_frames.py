"""The frame wire format (DESIGN.md): frame ids, headers, plain-producer records, safe decoding.

Real OpenCV on real sample media from Debian's opencv-doc; no mocks.
"""

from __future__ import annotations

import struct
import time
from datetime import UTC, datetime, timedelta, timezone

import cv2
import numpy as np
import pytest
from media import jpeg, sample, video_frames

from visionlake.errors import FrameError
from visionlake.frames import (
    FrameMeta,
    decode_image,
    frame_headers,
    image_size,
    jpeg_truncated,
    make_frame_id,
    meta_from_record,
)
from visionlake.types import Record

T0 = datetime(2026, 11, 3, 12, 30, 15, 250_000, tzinfo=UTC)

#: The header names DESIGN.md promises on every frame record.
DESIGN_HEADERS = {
    "vl-frame-id",
    "vl-camera",
    "vl-seq",
    "vl-ts",
    "vl-width",
    "vl-height",
    "content-type",
    "vl-schema",
}

SOF_MARKERS = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


@pytest.fixture(scope="module")
def frame() -> np.ndarray:
    return video_frames("vtest.avi", 1)[0]


@pytest.fixture(scope="module")
def frame_jpeg(frame) -> bytes:
    return jpeg(frame)


def record(value: bytes, key: bytes | None = b"cam-1", headers=None, offset: int = 42, ts_ms: int = 0):
    return Record("frames", 0, offset, ts_ms, key, value, list(headers or []))


def sof_offset(data: bytes) -> int:
    """Offset of the first SOFn marker of a JPEG (walked here, independently of visionlake)."""
    i = 2
    while i + 4 <= len(data):
        assert data[i] == 0xFF, f"not a marker at {i}"
        marker = data[i + 1]
        if marker in SOF_MARKERS:
            return i
        (length,) = struct.unpack(">H", data[i + 2 : i + 4])
        i += 2 + length
    raise AssertionError("no SOF marker")


def with_jpeg_size(data: bytes, width: int, height: int) -> bytes:
    i = sof_offset(data)
    return data[: i + 5] + struct.pack(">HH", height, width) + data[i + 9 :]


# --- frame ids ---------------------------------------------------------------------------------


def test_frame_id_is_deterministic():
    a = make_frame_id("cam-1", 7, T0)
    assert a == make_frame_id("cam-1", 7, T0)
    assert a == make_frame_id("cam-1", 7, T0.replace(tzinfo=None))  # naive means UTC
    assert a == make_frame_id("cam-1", 7, T0.astimezone(timezone(timedelta(hours=2))))  # same instant
    assert a.isascii() and a.isalnum() and 1 <= len(a) <= 64  # fits frames.frame_id and archive keys


@pytest.mark.parametrize(
    ("camera", "seq", "ts"),
    [
        ("cam-2", 7, T0),
        ("Cam-1", 7, T0),
        ("cam-1", 8, T0),
        ("cam-1", 7, T0 + timedelta(microseconds=1)),
        ("cam-1", 7, T0 + timedelta(hours=2)),
    ],
)
def test_frame_id_changes_with_camera_seq_and_time(camera, seq, ts):
    assert make_frame_id(camera, seq, ts) != make_frame_id("cam-1", 7, T0)


def test_frame_ids_of_a_video_are_unique():
    ids = {make_frame_id("cam", seq, T0 + timedelta(milliseconds=100 * seq)) for seq in range(2000)}
    assert len(ids) == 2000


# --- headers -----------------------------------------------------------------------------------


def test_headers_carry_every_design_name():
    meta = FrameMeta(make_frame_id("cam-1", 7, T0), "cam-1", 7, T0, 768, 576)
    headers = frame_headers(meta)
    assert all(isinstance(k, str) and isinstance(v, bytes) for k, v in headers)
    values = {k: v.decode() for k, v in headers}
    assert set(values) == DESIGN_HEADERS  # no vl-ref without a claim check
    assert values["content-type"] == "image/jpeg"
    assert values["vl-schema"] == "1"
    assert values["vl-camera"] == "cam-1" and values["vl-seq"] == "7"
    assert values["vl-width"] == "768" and values["vl-height"] == "576"
    assert values["vl-frame-id"] == meta.frame_id
    ts = values["vl-ts"]
    assert ts.endswith("Z") or ts.endswith("+00:00")  # ISO 8601 UTC
    assert datetime.fromisoformat(ts.replace("Z", "+00:00")) == T0


def test_headers_round_trip_through_a_record(frame_jpeg):
    meta = FrameMeta(make_frame_id("cam-1", 7, T0), "cam-1", 7, T0, 768, 576, ref="/archive/x.jpg")
    headers = frame_headers(meta)
    assert ("vl-ref", b"/archive/x.jpg") in headers
    got = meta_from_record(record(frame_jpeg, headers=headers, offset=999, ts_ms=1))
    assert got == meta


def test_headers_of_a_non_utc_time_are_utc():
    local = T0.astimezone(timezone(timedelta(hours=-5)))
    meta = FrameMeta("f1", "c", 1, local, 10, 10)
    ts = dict(frame_headers(meta))["vl-ts"].decode()
    parsed = datetime.fromisoformat(ts.replace("Z", "+00:00"))
    assert parsed.utcoffset() == timedelta(0) and parsed == T0


# --- records from plain producers ----------------------------------------------------------------


def test_plain_producer_record_gives_meta_from_key_and_jpeg(frame, frame_jpeg):
    """A JPEG value with the camera as key and no headers, as any Kafka client would send it."""
    ts_ms = int(T0.timestamp() * 1000)
    meta = meta_from_record(record(frame_jpeg, key="caméra 1".encode(), offset=42, ts_ms=ts_ms))
    h, w = frame.shape[:2]
    assert (meta.camera, meta.width, meta.height) == ("caméra 1", w, h)
    assert meta.seq == 42  # the offset stands in for the sequence number
    assert meta.captured_at == datetime.fromtimestamp(ts_ms / 1000, UTC)
    assert meta.frame_id == make_frame_id("caméra 1", 42, meta.captured_at)
    assert meta.ref is None
    # ... and the same record read again gets the same id (a re-processed frame is the same frame)
    assert meta_from_record(record(frame_jpeg, key="caméra 1".encode(), offset=42, ts_ms=ts_ms)) == meta


def test_plain_record_without_key_still_has_a_camera(frame_jpeg):
    meta = meta_from_record(record(frame_jpeg, key=None))
    assert meta.camera  # some non-empty placeholder, never None
    assert (meta.width, meta.height) == (768, 576)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("vl-width", "0"),
        ("vl-width", "1000000"),
        ("vl-height", "0"),
        ("vl-height", "1000000"),
        ("vl-width", "-640"),
    ],
)
def test_absurd_dimension_headers_are_refused(frame_jpeg, name, value):
    headers = {"vl-width": "768", "vl-height": "576"} | {name: value}
    with pytest.raises(FrameError) as e:
        meta_from_record(record(frame_jpeg, headers=[(k, v.encode()) for k, v in headers.items()]))
    assert "dimensions" in e.value.reason


@pytest.mark.parametrize(
    ("name", "value"),
    [("vl-width", "wide"), ("vl-seq", "seven"), ("vl-ts", "yesterday"), ("vl-ts", "2026-13-45T99:00:00Z")],
)
def test_malformed_headers_are_frame_errors_naming_the_header(frame_jpeg, name, value):
    headers = [(k, v) for k, v in frame_headers(FrameMeta("f1", "c", 1, T0, 768, 576)) if k != name]
    with pytest.raises(FrameError) as e:
        meta_from_record(record(frame_jpeg, headers=[*headers, (name, value.encode())]))
    assert name in e.value.reason and value in e.value.reason


# --- image_size ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["baboon.jpg", "fruits.jpg", "HappyFish.jpg", "pic1.png", "smarties.png"])
def test_image_size_of_real_files(name):
    data = sample(name).read_bytes()
    image = cv2.imread(str(sample(name)), cv2.IMREAD_UNCHANGED)
    assert image_size(data) == (image.shape[1], image.shape[0])


def test_image_size_of_progressive_and_odd_sized_jpegs(frame):
    odd = cv2.resize(frame, (333, 97))
    ok, buf = cv2.imencode(".jpg", odd, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])
    assert ok
    data = buf.tobytes()
    assert data[sof_offset(data) + 1] == 0xC2  # really progressive
    assert image_size(data) == (333, 97)
    assert image_size(jpeg(odd)) == (333, 97)


@pytest.mark.parametrize("data", [b"", b"\xff\xd8", b"GIF89a" + b"\0" * 40, b"\x89PNG\r\n\x1a\n", b"hello"])
def test_image_size_of_non_images_is_none(data):
    assert image_size(data) is None


# --- decode_image --------------------------------------------------------------------------------


def test_decode_image_of_a_real_jpeg(frame, frame_jpeg):
    image = decode_image(frame_jpeg)
    assert image.shape == frame.shape and image.dtype == np.uint8
    assert np.abs(image.astype(int) - frame.astype(int)).mean() < 5  # JPEG at quality 90


def test_decode_image_of_a_real_png():
    image = decode_image(sample("pic1.png").read_bytes())
    assert image.ndim == 3 and image.shape[2] == 3


def test_decode_empty_is_refused():
    with pytest.raises(FrameError) as e:
        decode_image(b"")
    assert "empty" in e.value.reason


def test_decode_random_bytes_is_refused():
    data = np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    with pytest.raises(FrameError) as e:
        decode_image(data)
    assert "undecodable" in e.value.reason or "decode" in e.value.reason


@pytest.mark.parametrize("fraction", [0.02, 0.5, 0.95])
def test_decode_truncated_jpeg_is_refused(frame_jpeg, fraction):
    with pytest.raises(FrameError) as e:
        decode_image(frame_jpeg[: int(len(frame_jpeg) * fraction)])
    assert "JPEG" in e.value.reason


@pytest.mark.parametrize("progressive", [False, True])
@pytest.mark.parametrize("cut", [2, 64, 4096])
def test_jpeg_cut_short_is_found_without_the_decoder(frame_jpeg, progressive, cut):
    """Some libjpeg builds decode a file cut short with grey rows; the marker check does not rely on it."""
    data = frame_jpeg
    if progressive:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])[1].tobytes()
    assert not jpeg_truncated(data)
    assert jpeg_truncated(data[:-cut])
    with pytest.raises(FrameError, match="JPEG"):
        decode_image(data[:-cut])


def test_jpeg_with_bytes_after_its_end_or_a_thumbnail_is_complete(frame_jpeg):
    # Bytes after EOI (camera trailers, "motion photos") are not a truncation.
    assert not jpeg_truncated(frame_jpeg + b"\x00trailer" * 100)
    assert decode_image(frame_jpeg + b"\x00trailer" * 100).shape == decode_image(frame_jpeg).shape
    # An EXIF-like APP1 segment holding a whole thumbnail JPEG (its own SOS and EOI) before the main
    # scan: cutting the main image must still count as truncated.
    thumb = cv2.imencode(".jpg", np.full((8, 8, 3), 128, np.uint8))[1].tobytes()
    app1 = b"\xff\xe1" + struct.pack(">H", len(thumb) + 2) + thumb
    with_thumb = frame_jpeg[:2] + app1 + frame_jpeg[2:]
    assert cv2.imdecode(np.frombuffer(with_thumb, np.uint8), cv2.IMREAD_COLOR) is not None
    assert not jpeg_truncated(with_thumb)
    assert jpeg_truncated(with_thumb[:-2])
    assert not jpeg_truncated(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)  # not a JPEG: not its business


@pytest.mark.parametrize(("width", "height"), [(60000, 60000), (16385, 100), (100, 16385), (12000, 12000)])
def test_decompression_bomb_jpeg_is_refused_before_decoding(width, height):
    data = with_jpeg_size(sample("baboon.jpg").read_bytes(), width, height)
    assert image_size(data) == (width, height)  # the patch is where a decoder reads the size
    started = time.perf_counter()
    with pytest.raises(FrameError) as e:
        decode_image(data)
    assert "absurd dimensions" in e.value.reason  # the header check refused it, not the decoder
    assert f"{width}x{height}" in e.value.reason
    assert time.perf_counter() - started < 0.5


def test_zero_sized_jpeg_header_is_refused(frame_jpeg):
    with pytest.raises(FrameError) as e:
        decode_image(with_jpeg_size(frame_jpeg, 0, 576))
    assert "absurd dimensions" in e.value.reason


def test_decompression_bomb_png_is_refused_before_decoding():
    data = bytearray(sample("pic1.png").read_bytes())
    data[16:24] = struct.pack(">II", 60000, 60000)
    with pytest.raises(FrameError) as e:
        decode_image(bytes(data))
    assert "absurd dimensions" in e.value.reason
