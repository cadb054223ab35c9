"""Property-based fuzzing of the frame record decoder and the image header parser (Hypothesis).

Inputs: random bytes; real JPEG and PNG bytes (sample media from Debian's opencv-doc, encoded small with
OpenCV) and mutations of them (bit flips, truncation, byte insertions and deletions, SOF/IHDR dimensions
rewritten, segment lengths rewritten, markers duplicated); random keys and headers, the `vl-*` ones
included, with invalid UTF-8, NUL, values of up to 10 KB, 1-60 digit numbers and odd ISO times.

The invariant everywhere: a function returns a valid result or raises `FrameError` with a reason, never
anything else, and memory stays bounded. The last property publishes fuzzed records to a real embedded
lake and runs a worker over them: every record ends up processed or dead-lettered, and the group moves on.

Every run tests the same examples (derandomize=True, no example database), so CI is reproducible. The
bugs the fuzzing found are pinned by the regression tests at the end of this module.
"""

from __future__ import annotations

import functools
import json
import resource
import struct
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st
from media import jpeg, sample, video_frames

from visionlake.detectors import load_detector
from visionlake.errors import FrameError, InputError
from visionlake.frames import (
    FRAME_ID_CHARS,
    INT64,
    MAX_CAMERA_ID,
    MAX_FRAME_ID,
    MAX_HEADER_BYTES,
    MAX_PIXELS,
    MAX_SIDE,
    MAX_TIME,
    MIN_TIME,
    PNG_MAGIC,
    FrameMeta,
    check_camera_id,
    check_density,
    decode_image,
    frame_headers,
    image_size,
    jpeg_truncated,
    make_frame_id,
    meta_from_record,
)
from visionlake.lake import Lake
from visionlake.types import Record
from visionlake.workers.worker import Worker

MB = 1024 * 1024
#: Peak RSS growth allowed over a whole property run (ru_maxrss, so OpenCV's allocations count too).
RSS_LIMIT = 300 * MB
#: The pixel budgets the decoder is fuzzed with: a decode allocates at most 3 bytes a pixel of budget.
FUZZ_MAX_PIXELS = 4_000_000

FUZZ = settings(
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)

SOF = (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF)
VL_HEADERS = ["vl-frame-id", "vl-camera", "vl-seq", "vl-ts", "vl-width", "vl-height", "vl-ref"]


def max_rss() -> int:
    """Peak resident set size of this process in bytes (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


# --- seed images ---------------------------------------------------------------------------------


def _exif_orientation(data: bytes, orientation: int = 6) -> bytes:
    """`data` (a JPEG) with an EXIF APP1 segment saying "rotate by 90°" (what phone cameras write)."""
    ifd = struct.pack(">H", 1) + struct.pack(">HHIHH", 0x0112, 3, 1, orientation, 0) + b"\0\0\0\0"
    payload = b"Exif\0\0" + b"MM\0\x2a\0\0\0\x08" + ifd
    return data[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + data[2:]


N_SEEDS = 12


@functools.cache
def seeds() -> tuple[bytes, ...]:
    """Real small JPEG and PNG encodings of sample frames (pytest.skip when opencv-doc is missing)."""
    frames = video_frames("vtest.avi", 2, (64, 48))
    baboon = cv2.resize(cv2.imread(str(sample("baboon.jpg"))), (40, 30), interpolation=cv2.INTER_AREA)
    grey = cv2.cvtColor(frames[1], cv2.COLOR_BGR2GRAY)
    out = [
        jpeg(frames[0]),
        jpeg(frames[1], quality=30),
        jpeg(baboon),
        jpeg(grey),
        cv2.imencode(".jpg", frames[0], [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])[1].tobytes(),
        cv2.imencode(".jpg", baboon, [cv2.IMWRITE_JPEG_RST_INTERVAL, 1])[1].tobytes(),
        cv2.imencode(".png", baboon)[1].tobytes(),
        cv2.imencode(".png", grey)[1].tobytes(),
        cv2.imencode(".png", (frames[0].astype(np.uint16) * 257))[1].tobytes(),
        cv2.imencode(".png", cv2.cvtColor(baboon, cv2.COLOR_BGR2BGRA))[1].tobytes(),
        cv2.imencode(".png", np.full((8, 8, 3), 7, np.uint8))[1].tobytes(),
        _exif_orientation(jpeg(baboon)),
    ]
    assert len(out) == N_SEEDS
    return tuple(out)


def good_frame(i: int) -> bytes:
    return seeds()[i % 2]


# --- mutations -----------------------------------------------------------------------------------

INTERESTING_BYTES = [
    b"\x00",
    b"\xff",
    b"\xff\x00",
    b"\xff\xd8",
    b"\xff\xd9",
    b"\xff\xda",
    b"\xff\xc0",
    b"\xff\xff",
]
DIMENSIONS = st.one_of(
    st.sampled_from([0, 1, 2, 7, 8, 9, 255, 256, 4096, 16383, 16384, 16385, 32767, 32768, 65500, 65535]),
    st.integers(0, 65535),
)
PNG_DIMENSIONS = st.one_of(
    DIMENSIONS, st.sampled_from([2**31 - 1, 2**31, 2**32 - 1]), st.integers(0, 2**32 - 1)
)


def _markers(data: bytes) -> list[int]:
    """Offsets of every 0xFF followed by a marker byte (entropy-coded data included)."""
    return [i for i in range(len(data) - 1) if data[i] == 0xFF and data[i + 1] not in (0x00, 0xFF)]


@st.composite
def mutated(draw, base: bytes) -> bytes:
    """`base` after one to four random mutations."""
    data = bytearray(base)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(
            st.sampled_from(
                [
                    "flip",
                    "truncate",
                    "insert",
                    "delete",
                    "dims",
                    "length",
                    "dup_marker",
                    "append",
                    "overwrite",
                ]
            )
        )
        n = len(data)
        if op == "flip" and n:
            pos = draw(st.integers(0, n - 1))
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "truncate":
            del data[draw(st.integers(0, n)) :]
        elif op == "insert":
            pos = draw(st.integers(0, n))
            data[pos:pos] = draw(
                st.one_of(st.sampled_from(INTERESTING_BYTES), st.binary(min_size=1, max_size=16))
            )
        elif op == "delete" and n:
            pos = draw(st.integers(0, n - 1))
            del data[pos : pos + draw(st.integers(1, 32))]
        elif op == "dims":
            if data[:8] == PNG_MAGIC and n >= 24:
                data[16:24] = struct.pack(">II", draw(PNG_DIMENSIONS), draw(PNG_DIMENSIONS))
            else:
                sofs = [i for i in _markers(bytes(data)) if data[i + 1] in SOF and i + 9 <= n]
                if sofs:
                    i = draw(st.sampled_from(sofs))
                    data[i + 5 : i + 9] = struct.pack(">HH", draw(DIMENSIONS), draw(DIMENSIONS))
        elif op == "length":
            marks = [i for i in _markers(bytes(data)) if i + 4 <= n]
            if marks:
                i = draw(st.sampled_from(marks))
                data[i + 2 : i + 4] = struct.pack(
                    ">H", draw(st.sampled_from([0, 1, 2, 3, 0xFFFF]) | st.integers(0, 0xFFFF))
                )
        elif op == "dup_marker":
            marks = _markers(bytes(data))
            if marks:
                i = draw(st.sampled_from(marks))
                seg = bytes(
                    data[i : i + 2 + (struct.unpack(">H", data[i + 2 : i + 4])[0] if i + 4 <= n else 0)]
                )
                data[i:i] = seg
        elif op == "append":
            data += draw(
                st.one_of(st.sampled_from([b"\xff\xd9", b"\xff\xd9\xff\xd8", b"\0" * 100])),
                st.binary(max_size=64),
            )
        elif op == "overwrite" and n:
            pos = draw(st.integers(0, n - 1))
            chunk = draw(st.binary(min_size=1, max_size=8))
            data[pos : pos + len(chunk)] = chunk
    return bytes(data)


seed_index = st.integers(0, N_SEEDS - 1)  # index into seeds()
real_image = seed_index.map(lambda i: seeds()[i])
image_bytes = st.one_of(
    st.binary(max_size=512),
    st.binary(max_size=64).map(lambda b: b"\xff\xd8\xff" + b),
    st.binary(max_size=64).map(lambda b: PNG_MAGIC + b),
    real_image,
    real_image.flatmap(mutated),
    real_image.flatmap(mutated),
    real_image.flatmap(mutated),
)


# --- records -------------------------------------------------------------------------------------

INVALID_UTF8 = [
    b"\xff",
    b"\xfe\xff",
    b"\xc3\x28",
    b"\xa0\xa1",
    b"\xe2\x28\xa1",
    b"\xed\xa0\x80",
    b"\xf4\x90\x80\x80",
    b"\xc0\xaf",
]


@st.composite
def iso_times(draw) -> str:
    year = draw(st.one_of(st.sampled_from([1, 1969, 1970, 2026, 9998, 9999]), st.integers(1, 9999)))
    month, day = draw(st.integers(1, 12)), draw(st.one_of(st.integers(1, 28), st.sampled_from([29, 30, 31])))
    hour, minute, second = draw(st.integers(0, 24)), draw(st.integers(0, 59)), draw(st.integers(0, 60))
    frac = draw(st.sampled_from(["", ".5", ".123456", ".1234567", ",5"]))
    sep = draw(st.sampled_from(["T", " ", "t"]))
    offset = draw(
        st.one_of(
            st.sampled_from(
                ["", "Z", "z", "+00:00", "-00:00", "+23:59", "-23:59", "+24:00", "+05:45", "-00:30"]
            ),
            st.builds(
                lambda s, h, m, sec: f"{s}{h:02d}:{m:02d}{sec}",
                st.sampled_from("+-"),
                st.integers(0, 30),
                st.integers(0, 99),
                st.sampled_from(["", ":30", ":59.999999"]),
            ),
        )
    )
    return f"{year:04d}-{month:02d}-{day:02d}{sep}{hour:02d}:{minute:02d}:{second:02d}{frac}{offset}"


numeric = (
    st.integers(1, 60)
    .flatmap(
        lambda n: st.tuples(
            st.sampled_from(["", "-", "+", " "]), st.text("0123456789", min_size=n, max_size=n)
        )
    )
    .map("".join)
)
header_value = st.one_of(
    st.binary(max_size=64),
    st.tuples(st.binary(max_size=16), st.sampled_from(INVALID_UTF8), st.binary(max_size=16)).map(b"".join),
    st.text(max_size=64).map(str.encode),
    st.text(st.characters(max_codepoint=0x9F), max_size=16).map(str.encode),  # NUL and control characters
    st.tuples(st.sampled_from("x9-/é\0"), st.integers(0, 10_240)).map(lambda t: (t[0] * t[1]).encode()),
    st.integers(4090, 4100).map(lambda n: b"7" * n),
    numeric.map(str.encode),
    st.integers(-(2**70), 2**70).map(lambda i: str(i).encode()),
    st.integers(INT64[0], INT64[1]).map(lambda i: str(i).encode()),
    st.integers(-1, MAX_SIDE + 1).map(lambda i: str(i).encode()),
    iso_times().map(str.encode),
    st.text(sorted(FRAME_ID_CHARS) + ["/", ".", " "], min_size=0, max_size=70).map(str.encode),
    st.sampled_from(
        ["", "cam-1", "..", "../../etc/passwd", "/etc/passwd", "file:///etc/passwd", "s3://b/k"]
    ).map(str.encode),
)
header_name = st.one_of(
    st.sampled_from(VL_HEADERS),
    st.sampled_from(["content-type", "vl-schema", "VL-SEQ"]),
    st.text(max_size=12),
)
headers = st.lists(st.tuples(header_name, header_value), max_size=8)
keys = st.one_of(
    st.none(),
    st.just(b""),
    st.binary(max_size=40),
    st.text(max_size=MAX_CAMERA_ID + 2).map(str.encode),
    st.sampled_from(INVALID_UTF8),
    st.integers(0, 10_240).map(lambda n: b"k" * n),
)
timestamps = st.one_of(
    st.sampled_from([0, -1, 1_764_590_400_000, 253_402_214_400_000, 253_402_300_800_000, INT64[0], INT64[1]]),
    st.integers(INT64[0], INT64[1]),
)
records = st.builds(
    Record,
    topic=st.just("frames"),
    partition=st.integers(0, 3),
    offset=st.integers(0, INT64[1]),
    timestamp_ms=timestamps,
    key=keys,
    value=st.one_of(st.just(b""), image_bytes),
    headers=headers,
)


def check_meta(meta: FrameMeta, record: Record) -> None:
    """What a worker may rely on once `meta_from_record` accepted a record."""
    assert isinstance(meta, FrameMeta)
    assert 1 <= len(meta.frame_id) <= MAX_FRAME_ID and set(meta.frame_id) <= FRAME_ID_CHARS
    assert check_camera_id(meta.camera) == meta.camera
    assert isinstance(meta.seq, int) and INT64[0] <= meta.seq <= INT64[1]
    assert meta.captured_at.tzinfo is not None and MIN_TIME <= meta.captured_at <= MAX_TIME
    assert isinstance(meta.width, int) and isinstance(meta.height, int)
    assert meta.width >= 0 and meta.height >= 0
    if record.header("vl-width") is not None or record.header("vl-height") is not None:
        assert 0 < meta.width <= MAX_SIDE and 0 < meta.height <= MAX_SIDE
    if meta.ref is not None:
        assert meta.ref.isprintable() and len(meta.ref.encode()) <= MAX_HEADER_BYTES
    if record.header("vl-frame-id") is None:
        assert meta.frame_id == make_frame_id(meta.camera, meta.seq, meta.captured_at)


def refused(e: FrameError) -> None:
    assert isinstance(e.reason, str) and e.reason.strip(), repr(e)
    assert str(e) == e.reason


# --- properties: the header parser ---------------------------------------------------------------


@settings(FUZZ, max_examples=400)
@given(data=image_bytes)
def test_header_readers_never_raise(data):
    size = image_size(data)
    if size is not None:
        w, h = size
        assert isinstance(w, int) and isinstance(h, int) and w >= 0 and h >= 0
        assert max(w, h) <= (2**32 - 1 if data[:8] == PNG_MAGIC else 65535)
    assert jpeg_truncated(data) in (True, False)


@settings(FUZZ, max_examples=300)
@given(data=image_bytes, width=st.integers(-(2**33), 2**33), height=st.integers(-(2**33), 2**33))
def test_check_density_refuses_only_with_a_frame_error(data, width, height):
    try:
        assert check_density(data, width, height) is None
    except FrameError as e:
        refused(e)
        assert data[:3] == b"\xff\xd8\xff" or data[:8] == PNG_MAGIC


@settings(FUZZ, max_examples=60)
@given(i=st.integers(0, 5), cut=st.floats(0.0, 1.0), tail=st.binary(max_size=32))
def test_jpeg_truncated_tells_a_cut_jpeg_from_a_whole_one(i, cut, tail):
    data = seeds()[i]  # the first six seeds are JPEG
    scan = data.find(b"\xff\xda")
    assert not jpeg_truncated(data) and not jpeg_truncated(data + b"\xff\xd9" + tail)
    end = scan + 4 + int(cut * (len(data) - 2 - scan - 4))  # past the scan header, before the EOI
    assert jpeg_truncated(data[:end])


# --- properties: the decoder ---------------------------------------------------------------------


@settings(FUZZ, max_examples=600)
@given(
    data=image_bytes,
    max_pixels=st.one_of(
        st.integers(1, FUZZ_MAX_PIXELS), st.sampled_from([1, 3071, 3072, 3073, FUZZ_MAX_PIXELS])
    ),
)
def decode_image_property(data, max_pixels):
    try:
        image = decode_image(data, max_pixels)
    except FrameError as e:
        refused(e)
        event("refused")
        return
    event("decoded")
    assert isinstance(image, np.ndarray) and image.dtype == np.uint8
    assert image.ndim == 3 and image.shape[2] == 3 and image.flags.c_contiguous
    h, w = image.shape[:2]
    assert h > 0 and w > 0
    assert not jpeg_truncated(data)
    assert w * h <= max_pixels, f"{w}x{h} decoded with a budget of {max_pixels} pixels"
    assert w <= MAX_SIDE and h <= MAX_SIDE and w * h <= MAX_PIXELS
    size = image_size(data)
    assert size is not None, "decoded an image whose size no header gave"
    assert (w, h) == size  # EXIF orientation is ignored


def test_decode_image_only_refuses_with_frame_errors_and_memory_stays_bounded():
    seeds()
    before = max_rss()
    decode_image_property()
    grown = max_rss() - before
    assert grown < RSS_LIMIT, f"peak RSS grew by {grown / MB:.0f} MB while fuzzing decode_image"


@settings(FUZZ, max_examples=400)
@given(record=records)
def test_meta_from_record_returns_valid_meta_or_a_frame_error(record):
    try:
        meta = meta_from_record(record)
    except FrameError as e:
        refused(e)
        event("refused: " + e.reason.split(" ")[0])
        return
    event("accepted")
    check_meta(meta, record)
    assert meta_from_record(record) == meta  # deterministic: a redelivered record is the same frame


def valid_camera(camera: str) -> bool:
    try:
        check_camera_id(camera)
    except InputError:
        return False
    return True


valid_meta = st.builds(
    FrameMeta,
    frame_id=st.text(sorted(FRAME_ID_CHARS), min_size=1, max_size=MAX_FRAME_ID),
    camera=st.text(min_size=1, max_size=MAX_CAMERA_ID).filter(valid_camera),
    seq=st.integers(INT64[0], INT64[1]),
    captured_at=st.datetimes(
        min_value=datetime(1970, 1, 1), max_value=datetime(9999, 12, 30), timezones=st.just(UTC)
    ),
    width=st.integers(1, MAX_SIDE),
    height=st.integers(1, MAX_SIDE),
    ref=st.none(),
).filter(lambda m: m.width * m.height <= MAX_PIXELS)


@settings(FUZZ, max_examples=200)
@given(
    meta=valid_meta, key=keys, extra=headers.filter(lambda hs: all(not k.startswith("vl-") for k, _ in hs))
)
def test_frame_headers_round_trip_through_meta_from_record(meta, key, extra):
    """What the ingest side writes, the worker reads back unchanged, whatever else the record carries."""
    record = Record("frames", 1, 7, 0, key, b"", [*extra, *frame_headers(meta)])
    assert meta_from_record(record) == meta


# --- end to end: a worker over fuzzed records ----------------------------------------------------

#: How a ref header may point into the lake; the test replaces the placeholders with real paths.
ref_values = st.one_of(
    st.sampled_from(
        [
            "@ARCHIVE@",
            "@ARCHIVE@/",
            "@ARCHIVE@/nope.jpg",
            "@ARCHIVE@/../catalog.db",
            "@ARCHIVE@/..",
            "@LAKE@/catalog.db",
        ]
    ),
    st.text(max_size=40).map(lambda s: "@ARCHIVE@/" + s),
).map(str.encode)
e2e_headers = st.lists(
    st.one_of(
        st.tuples(header_name, header_value),
        st.tuples(st.just("vl-ref"), ref_values),
        st.tuples(st.just("vl-frame-id"), st.sampled_from([b"dup-a", b"dup-b"])),
    ),
    max_size=6,
)
e2e_values = st.one_of(st.just(b""), st.binary(max_size=256), real_image, real_image.flatmap(mutated))
e2e_records = st.lists(
    st.tuples(keys, e2e_values, e2e_headers),
    min_size=1,
    max_size=10,
)
T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def _drain(lake: Lake, topic: str) -> list[Record]:
    out: list[Record] = []
    with lake.log.consumer([topic]) as c:
        while got := c.poll(100, 0.1):
            out.extend(got)
    return out


@settings(FUZZ, max_examples=12)
@given(batch=e2e_records)
def worker_property(batch):
    with tempfile.TemporaryDirectory(prefix="vl-fuzz-") as tmp, Lake(lake=Path(tmp) / "lake") as lake:
        archive = str(lake.archive.root).encode()
        with lake.log.producer() as p:
            for n, (key, value, hs) in enumerate(batch):
                hs = [
                    (k, v.replace(b"@ARCHIVE@", archive).replace(b"@LAKE@", str(lake.root).encode()))
                    for k, v in hs
                    if k != "fuzz-id"
                ]
                p.send("frames", value, key=key, headers=[*hs, ("fuzz-id", str(n).encode())])
            for i in range(2):
                meta = FrameMeta(f"good-{i}", "good-cam", i, T0, 64, 48)
                p.send(
                    "frames",
                    good_frame(i),
                    key=b"good-cam",
                    headers=[*frame_headers(meta), ("fuzz-id", f"good-{i}".encode())],
                )
            sent = {(m.partition, m.offset) for m in p.flush()}
        total = len(batch) + 2
        stats = Worker(
            lake, load_detector("haar-face"), until_idle=True, idle_timeout=0.3, max_pixels=FUZZ_MAX_PIXELS
        ).run()
        note(f"stats: {stats.as_dict()}")
        assert stats.processed + stats.dead_lettered == total
        assert stats.beyond_range == 0
        dead = _drain(lake, "frames.dlq")
        assert len(dead) == stats.dead_lettered
        dead_at: set[tuple[int, int]] = set()
        for r in dead:
            reason = r.header("vl-error")
            assert reason and reason.strip() and "Traceback" not in reason, reason
            assert not reason.startswith("detector "), f"the detector failed on a decoded frame: {reason}"
            topic, _, where = r.header("vl-source").partition("/")
            partition, _, offset = where.partition("@")
            assert topic == "frames"
            dead_at.add((int(partition), int(offset)))
        events = [json.loads(r.value) for r in _drain(lake, "frames.detections")]
        assert len(events) == stats.processed
        done_at = {(e["partition"], e["offset"]) for e in events}
        assert len(dead_at) == len(dead) and len(done_at) == len(events)
        assert not dead_at & done_at and dead_at | done_at == sent
        assert {e["frame_id"] for e in events} >= {"good-0", "good-1"}
        (group,) = [g for g in lake.log.groups() if g.group == stats.group]
        assert group.lag == 0


def test_a_worker_dead_letters_what_it_cannot_use_and_the_group_moves_on():
    seeds()
    load_detector("haar-face")
    before = max_rss()
    worker_property()
    grown = max_rss() - before
    assert grown < RSS_LIMIT, f"peak RSS grew by {grown / MB:.0f} MB while fuzzing the worker"


# --- what the fuzzing found (minimal examples; strict: they fail today and must pass once fixed) ---


def junk_before_sof(width: int, height: int) -> bytes:
    """A flat 16x16 JPEG claiming `width` x `height`, with one junk byte before its SOF marker.

    libjpeg skips the byte ("Corrupt JPEG data: 1 extraneous bytes before marker 0xc0", a warning) and
    decodes the whole claimed size, filling it with grey; `frames._jpeg_segments` stops at the byte, so
    `image_size` returns None; `decode_image` used to check neither the dimensions, nor the density,
    nor the pixel budget then, and now refuses a header it cannot walk.
    """
    data = bytearray(cv2.imencode(".jpg", np.full((16, 16, 3), 128, np.uint8))[1].tobytes())
    sof = data.find(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data[:sof] + b"\x00" + data[sof:])


def test_a_junk_byte_before_the_sof_cannot_bypass_the_size_checks():
    data = junk_before_sof(2000, 1500)
    assert len(data) < 700
    with pytest.raises(FrameError):
        image = decode_image(data, max_pixels=1_000_000)
        pytest.fail(f"decoded {image.shape} from {len(data)} bytes with a budget of 1,000,000 pixels")


def test_a_worker_refuses_the_junk_byte_bomb():
    seeds()
    with tempfile.TemporaryDirectory(prefix="vl-fuzz-") as tmp, Lake(lake=Path(tmp) / "lake") as lake:
        with lake.log.producer() as p:
            p.send("frames", junk_before_sof(2000, 1500), key=b"bomb")
        stats = Worker(
            lake, load_detector("haar-face"), until_idle=True, idle_timeout=0.3, max_pixels=1_000_000
        ).run()
        assert stats.dead_lettered == 1 and stats.processed == 0


@pytest.mark.parametrize("ext", [".bmp", ".ppm", ".tiff", ".webp"])
def test_decode_image_holds_its_pixel_budget_for_every_format(ext):
    image = np.full((48, 64, 3), 50, np.uint8)
    data = cv2.imencode(ext, image)[1].tobytes()
    with pytest.raises(FrameError):
        decode_image(data, max_pixels=100)


def test_a_plain_producers_exif_rotated_jpeg_is_processed():
    data = _exif_orientation(seeds()[0])
    # EXIF orientation is ignored: the stored pixels are decoded as stored, boxes refer to them
    assert image_size(data) == (64, 48) and decode_image(data).shape[:2] == (48, 64)
    with tempfile.TemporaryDirectory(prefix="vl-fuzz-") as tmp, Lake(lake=Path(tmp) / "lake") as lake:
        with lake.log.producer() as p:
            p.send("frames", data, key=b"phone")
        stats = Worker(lake, load_detector("haar-face"), until_idle=True, idle_timeout=0.3).run()
        assert stats.dlq_reasons == {} and stats.processed == 1


def test_two_images_under_one_frame_id_in_one_batch_are_not_both_processed():
    a = cv2.imencode(".jpg", np.full((48, 64, 3), 90, np.uint8))[1].tobytes()
    b = cv2.imencode(".jpg", np.full((48, 64, 3), 200, np.uint8))[1].tobytes()
    with tempfile.TemporaryDirectory(prefix="vl-fuzz-") as tmp, Lake(lake=Path(tmp) / "lake") as lake:
        with lake.log.producer() as p:
            p.send("frames", a, key=b"cam-a", headers=[("vl-frame-id", b"same-id")], partition=0)
            p.send("frames", b, key=b"cam-b", headers=[("vl-frame-id", b"same-id")], partition=0)
        stats = Worker(lake, load_detector("haar-face"), until_idle=True, idle_timeout=0.3).run()
        assert (stats.processed, stats.dead_lettered) == (1, 1)
