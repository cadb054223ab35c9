"""Hadoop SequenceFiles: our writer read by real Spark, Spark's every variant read by our reader."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest
from media import sample

from visionlake.batch.seqfile import (
    SequenceFileWriter,
    count_sequencefile,
    decode_vint,
    encode_vint,
    is_sequencefile,
    iter_sequencefile,
)
from visionlake.errors import InputError

DEFAULT_CODEC = "org.apache.hadoop.io.compress.DefaultCodec"
GZIP_CODEC = "org.apache.hadoop.io.compress.GzipCodec"
COMPRESS_TYPE = "mapreduce.output.fileoutputformat.compress.type"


def _pairs() -> list[tuple[str, bytes]]:
    """Real images, one over 200 KB (so sync markers appear), a non-ASCII key and an empty value."""
    names = ["apple.jpg", "starry_night.jpg", "baboon.jpg", "chessboard.png", "messi5.jpg", "home.jpg"]
    pairs = [(f"images/{name}", sample(name).read_bytes()) for name in names]
    pairs.insert(2, ("fruit/pomme-été-苹果.jpg", sample("orange.jpg").read_bytes()))
    pairs.append(("empty/nothing.bin", b""))
    assert max(len(v) for _, v in pairs) > 200_000
    return pairs


def _flags(part: Path) -> tuple[bool, bool, str]:
    """(compressed, block-compressed, codec) as the header of `part` says."""
    head = part.read_bytes()[:200]
    at = head.index(b"BytesWritable") + len(b"BytesWritable")
    compressed, block = head[at] == 1, head[at + 1] == 1
    codec = head[at + 3 : at + 3 + head[at + 2]].decode() if compressed else ""
    return compressed, block, codec


def _write(path: Path, pairs: list[tuple[str, bytes]]) -> None:
    with SequenceFileWriter(path) as writer:
        for key, value in pairs:
            writer.append(key, value)


def test_our_file_is_read_by_spark_across_splits(spark, tmp_path):
    pairs = _pairs()
    path = tmp_path / "images.seq"
    _write(path, pairs)
    raw = path.read_bytes()
    sync = raw[raw.index(b"BytesWritable") + 13 + 2 + 4 :][:16]
    assert raw.count(b"\xff\xff\xff\xff" + sync) >= 2  # sync escapes every ~100 KB, as Hadoop writes

    rdd = spark.sparkContext.sequenceFile(str(path), minSplits=3)
    assert rdd.getNumPartitions() >= 3  # Spark splits the file at our sync markers
    got = rdd.collect()
    assert [type(k) for k, _ in got] == [str] * len(pairs)
    assert [(k, bytes(v)) for k, v in got] == pairs


def test_round_trip_and_count(tmp_path):
    pairs = _pairs()
    path = tmp_path / "images.seq"
    _write(path, pairs)
    assert list(iter_sequencefile(path)) == pairs
    assert count_sequencefile(path) == len(pairs)
    assert is_sequencefile(path)
    assert not list(tmp_path.glob("*.tmp-*"))


def test_writer_leaves_nothing_on_error(tmp_path):
    path = tmp_path / "images.seq"
    with pytest.raises(RuntimeError), SequenceFileWriter(path) as writer:
        writer.append("a.jpg", b"x")
        raise RuntimeError("stop")
    assert list(tmp_path.iterdir()) == []


def _save(spark, out: Path, pairs, codec: str | None = None, compress_type: str | None = None) -> None:
    conf = spark.sparkContext._jsc.hadoopConfiguration()
    if compress_type:
        conf.set(COMPRESS_TYPE, compress_type)
    try:
        rdd = spark.sparkContext.parallelize([(k, bytearray(v)) for k, v in pairs], 3)
        rdd.saveAsSequenceFile(str(out), compressionCodecClass=codec)
    finally:
        conf.unset(COMPRESS_TYPE)


@pytest.mark.parametrize(
    ("codec", "compress_type", "flags"),
    [
        (None, None, (False, False, "")),
        # Spark sets the compression type to BLOCK itself whenever a codec is given
        (DEFAULT_CODEC, None, (True, True, DEFAULT_CODEC)),
        (GZIP_CODEC, "BLOCK", (True, True, GZIP_CODEC)),
    ],
    ids=["plain", "deflate-block", "gzip-block"],
)
def test_spark_written_directory_is_read(spark, tmp_path, codec, compress_type, flags):
    pairs = _pairs()
    out = tmp_path / "seq"
    _save(spark, out, pairs, codec, compress_type)
    names = sorted(p.name for p in out.iterdir())
    assert "_SUCCESS" in names and any(n.endswith(".crc") for n in names)
    assert _flags(out / "part-00000") == flags
    assert list(iter_sequencefile(out)) == pairs  # part files in order, markers and checksums skipped
    assert count_sequencefile(out) == len(pairs)
    assert is_sequencefile(out)


def test_record_compressed_by_hadoop_is_read(spark, tmp_path):
    # Spark's saveAsSequenceFile always block-compresses; the Hadoop output format honours RECORD.
    pairs = _pairs()
    out = tmp_path / "seq"
    conf = {
        "mapreduce.output.fileoutputformat.compress": "true",
        "mapreduce.output.fileoutputformat.compress.codec": DEFAULT_CODEC,
        COMPRESS_TYPE: "RECORD",
    }
    spark.sparkContext.parallelize([(k, bytearray(v)) for k, v in pairs], 2).saveAsHadoopFile(
        str(out),
        "org.apache.hadoop.mapred.SequenceFileOutputFormat",
        "org.apache.hadoop.io.Text",
        "org.apache.hadoop.io.BytesWritable",
        conf=conf,
    )
    assert _flags(out / "part-00000") == (True, False, DEFAULT_CODEC)
    assert list(iter_sequencefile(out)) == pairs
    assert count_sequencefile(out) == len(pairs)


def test_bytes_keys_and_text_values_are_accepted(spark, tmp_path):
    out = tmp_path / "seq"
    rows = [(bytearray(b"cats/a.jpg"), "hello"), (bytearray("chiens/é.jpg".encode()), "")]
    spark.sparkContext.parallelize(rows, 1).saveAsSequenceFile(str(out))
    assert list(iter_sequencefile(out)) == [("cats/a.jpg", b"hello"), ("chiens/é.jpg", b"")]


def test_not_a_sequencefile_names_the_path_and_its_bytes(tmp_path):
    path = tmp_path / "photo.seq"
    path.write_bytes(sample("apple.jpg").read_bytes())
    with pytest.raises(InputError, match=r"photo\.seq.*not a Hadoop SequenceFile.*xff\\xd8"):
        list(iter_sequencefile(path))
    assert not is_sequencefile(path)
    (tmp_path / "empty").mkdir()
    assert not is_sequencefile(tmp_path / "empty")
    with pytest.raises(InputError, match="no part files"):
        list(iter_sequencefile(tmp_path / "empty"))
    with pytest.raises(InputError, match="missing.*does not exist"):
        list(iter_sequencefile(tmp_path / "missing"))


@pytest.mark.parametrize("cut", [0.5, 0.99])
def test_truncated_file_names_the_path_and_offset(tmp_path, cut):
    path = tmp_path / "images.seq"
    _write(path, _pairs())
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * cut)])
    with pytest.raises(InputError, match=r"images\.seq' is truncated: .* at byte \d+"):
        list(iter_sequencefile(path))
    with pytest.raises(InputError, match="truncated"):
        count_sequencefile(path)


def test_damaged_sync_marker_is_reported(tmp_path):
    path = tmp_path / "images.seq"
    _write(path, _pairs())
    data = bytearray(path.read_bytes())
    sync = bytes(data[data.index(b"BytesWritable") + 13 + 2 + 4 :][:16])
    at = data.index(b"\xff\xff\xff\xff" + sync, 100) + 4
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(InputError, match=rf"damaged at byte {at}: a sync marker does not match"):
        list(iter_sequencefile(path))


def _header(codec: str) -> bytes:
    def text(s: str) -> bytes:
        return bytes([len(s)]) + s.encode()

    return (
        b"SEQ\x06"
        + text("org.apache.hadoop.io.Text")
        + text("org.apache.hadoop.io.BytesWritable")
        + b"\x01\x01"
        + text(codec)
        + struct.pack(">i", 0)
        + os.urandom(16)
    )


def test_unsupported_codec_is_named(tmp_path):
    path = tmp_path / "snappy.seq"
    path.write_bytes(_header("org.apache.hadoop.io.compress.SnappyCodec"))
    with pytest.raises(
        InputError, match=r"snappy\.seq' is compressed with .*SnappyCodec.*supported: .*GzipCodec"
    ):
        list(iter_sequencefile(path))


@pytest.mark.parametrize(
    "value", [0, 1, -1, 127, -112, 128, -113, 255, 65536, 2**31 - 1, -(2**31), 2**40, -(2**40)]
)
def test_vint_round_trip(value):
    encoded = encode_vint(value)
    assert decode_vint(encoded, 0) == (value, len(encoded))
    assert len(encoded) == 1 if -112 <= value <= 127 else len(encoded) > 1
