"""Hadoop SequenceFiles of (Text key, BytesWritable value), written and read without a JVM.

This is the format `SparkContext.sequenceFile` reads and `rdd.saveAsSequenceFile` writes, so image
datasets move between a laptop and a Hadoop/Spark cluster unchanged. No PyPI library reads every
variant Spark writes, hence this small codec of the on-disk layout (Hadoop's `SequenceFile` javadoc):

    header  "SEQ" version key-class value-class compressed block-compressed [codec] metadata sync
    record  int32 record-length, int32 key-length, key bytes, value bytes   (sync escape: -1 + sync)
    block   -1 + sync, vint n, then 4 compressed buffers: key lengths, keys, value lengths, values

Keys are Text (vint length + UTF-8), values BytesWritable (int32 length + bytes). Reading also accepts
BytesWritable keys and Text values, and RECORD or BLOCK compression with zlib (DefaultCodec) or gzip.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Iterator
from typing import BinaryIO

from ..errors import InputError
from .outputs import AtomicWriter

__all__ = [
    "SUPPORTED_CODECS",
    "SequenceFileWriter",
    "count_sequencefile",
    "is_sequencefile",
    "iter_sequencefile",
    "part_files",
]

MAGIC = b"SEQ"
VERSION = 6
TEXT = "org.apache.hadoop.io.Text"
BYTES_WRITABLE = "org.apache.hadoop.io.BytesWritable"
DEFAULT_CODEC = "org.apache.hadoop.io.compress.DefaultCodec"
GZIP_CODEC = "org.apache.hadoop.io.compress.GzipCodec"
#: zlib window bits per codec: 15 = zlib stream (Java's Deflater), 31 = gzip member.
SUPPORTED_CODECS = {DEFAULT_CODEC: 15, GZIP_CODEC: 31}
SYNC_SIZE = 16
SYNC_ESCAPE = -1
#: Hadoop writes a sync escape before the next record once this many bytes passed the last one
#: (SequenceFile.SYNC_INTERVAL = 5 * 1024 * (4 + 16)): what lets Spark split a file between tasks.
SYNC_INTERVAL = 5 * 1024 * (4 + SYNC_SIZE)
_INT = struct.Struct(">i")
_MIN_VERSION = 4  # Text class names and the block-compression flag; older files predate Hadoop 0.14


# --- Hadoop's variable-length integers (WritableUtils.writeVLong) ------------------------------------


def encode_vint(value: int) -> bytes:
    """WritableUtils.writeVLong: one byte for -112..127, else a length/sign byte and big-endian bytes."""
    if -112 <= value <= 127:
        return struct.pack(">b", value)
    marker = -112
    if value < 0:
        value = ~value
        marker = -120
    size = (value.bit_length() + 7) // 8
    return struct.pack(">b", marker - size) + value.to_bytes(size, "big")


def decode_vint(buf: bytes | memoryview, pos: int) -> tuple[int, int]:
    """(value, next position) of the vint at `buf[pos]`; IndexError when `buf` ends inside it."""
    first = struct.unpack_from(">b", buf, pos)[0]
    if first >= -112:
        return first, pos + 1
    negative = first < -120
    size = (-119 - first) if negative else (-111 - first)
    end = pos + size
    if end > len(buf):
        raise IndexError(end)
    value = int.from_bytes(buf[pos + 1 : end], "big")
    return (~value if negative else value), end


def _text(value: str) -> bytes:
    raw = value.encode("utf-8")
    return encode_vint(len(raw)) + raw


# --- writing -----------------------------------------------------------------------------------------


class SequenceFileWriter(AtomicWriter):
    """Writes one uncompressed Text/BytesWritable SequenceFile; atomic (temp file + rename on close).

    Use as a context manager: an exception inside the block leaves no file behind.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        super().__init__(path)
        self._sync = os.urandom(SYNC_SIZE)
        self._fh: BinaryIO = open(self._tmp, "wb")  # noqa: SIM115 - closed by close()/abort()
        header = (
            MAGIC
            + bytes([VERSION])
            + _text(TEXT)
            + _text(BYTES_WRITABLE)
            + b"\x00\x00"  # not compressed, not block-compressed
            + _INT.pack(0)  # empty metadata
            + self._sync
        )
        self._fh.write(header)
        self._pos = len(header)
        self._last_sync = 0
        self.records = 0

    def append(self, key: str, value: bytes | bytearray | memoryview) -> None:
        """Add one record; a sync escape goes first when ~100 KB passed since the last one."""
        if self._pos >= self._last_sync + SYNC_INTERVAL:
            self._fh.write(_INT.pack(SYNC_ESCAPE) + self._sync)
            self._pos += 4 + SYNC_SIZE
            self._last_sync = self._pos
        key_bytes = _text(key)
        size = memoryview(value).nbytes
        record_length = len(key_bytes) + 4 + size
        if record_length > 0x7FFFFFFF:
            raise InputError(f"cannot write {key!r} to {self.path!r}: {size} bytes exceed a record's 2 GiB")
        self._fh.write(_INT.pack(record_length) + _INT.pack(len(key_bytes)) + key_bytes + _INT.pack(size))
        self._fh.write(value)
        self._pos += 8 + record_length
        self.records += 1

    def _close_stream(self) -> None:
        self._fh.close()


# --- reading -----------------------------------------------------------------------------------------


def part_files(path: str | os.PathLike[str]) -> list[str]:
    """The data files of a directory written by Spark/Hadoop, in part-name order.

    Skips markers and side files: names starting with "_" or "." (_SUCCESS, .crc checksums) and *.crc.
    """
    path = os.fspath(path)
    return sorted(
        os.path.join(path, name)
        for name in os.listdir(path)
        if not name.startswith(("_", "."))
        and not name.endswith(".crc")
        and os.path.isfile(os.path.join(path, name))
    )


def _files(path: str | os.PathLike[str]) -> list[str]:
    path = os.fspath(path)
    if os.path.isfile(path):
        return [path]
    if not os.path.isdir(path):
        raise InputError(f"SequenceFile {path!r} does not exist")
    files = part_files(path)
    if not files:
        raise InputError(f"SequenceFile {path!r} is a directory with no part files")
    return files


def is_sequencefile(path: str | os.PathLike[str]) -> bool:
    """True when `path` (or a directory's first part file) starts with the SequenceFile magic."""
    path = os.fspath(path)
    if os.path.isdir(path):
        files = part_files(path)
        if not files:
            return False
        path = files[0]
    try:
        with open(path, "rb") as fh:
            return fh.read(len(MAGIC)) == MAGIC
    except OSError:
        return False


class _Stream:
    """A file read with its byte offset tracked, so damage is reported where it is."""

    def __init__(self, fh: BinaryIO, path: str) -> None:
        self._fh = fh
        self.path = path
        self.pos = 0
        self.size = os.fstat(fh.fileno()).st_size

    def truncated(self, what: str, at: int) -> InputError:
        return InputError(
            f"SequenceFile {self.path!r} is truncated: {what} at byte {at} runs past the end of the file "
            f"({self.size} bytes)"
        )

    def corrupt(self, what: str, at: int) -> InputError:
        return InputError(f"SequenceFile {self.path!r} is damaged at byte {at}: {what}")

    def read(self, n: int, what: str) -> bytes:
        if n < 0:
            raise self.corrupt(f"negative length {n} for {what}", self.pos)
        data = self._fh.read(n)
        if len(data) != n:
            raise self.truncated(what, self.pos)
        self.pos += n
        return data

    def skip(self, n: int, what: str) -> None:
        if n < 0:
            raise self.corrupt(f"negative length {n} for {what}", self.pos)
        if self.pos + n > self.size:
            raise self.truncated(what, self.pos)
        self._fh.seek(n, os.SEEK_CUR)
        self.pos += n

    def int32(self, what: str) -> int:
        return _INT.unpack(self.read(4, what))[0]

    def int32_or_end(self, what: str) -> int | None:
        """The next int32, or None at a clean end of file."""
        data = self._fh.read(4)
        if not data:
            return None
        if len(data) != 4:
            raise self.truncated(what, self.pos)
        self.pos += 4
        return _INT.unpack(data)[0]

    def vint(self, what: str) -> int:
        first = self.read(1, what)
        head = struct.unpack(">b", first)[0]
        if head >= -112:
            return head
        size = (-119 - head) if head < -120 else (-111 - head)
        return decode_vint(first + self.read(size - 1, what), 0)[0]

    def head(self, n: int) -> bytes:
        """Up to `n` bytes from the start (the magic), short when the file is."""
        data = self._fh.read(n)
        self.pos += len(data)
        return data

    def text(self, what: str) -> str:
        at = self.pos
        raw = self.read(self.vint(what), what)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise self.corrupt(f"{what} is not UTF-8 ({exc.reason})", at) from exc


class _Header:
    """What the file header says: the classes, the compression and the sync marker."""

    def __init__(self, stream: _Stream) -> None:
        head = stream.head(4)
        if head[:3] != MAGIC:
            raise InputError(
                f"{stream.path!r} is not a Hadoop SequenceFile: it starts with {head!r}, not {MAGIC!r}"
            )
        if len(head) < 4:
            raise stream.truncated("the header", 0)
        self.version = head[3]
        if not _MIN_VERSION <= self.version <= VERSION:
            raise InputError(
                f"SequenceFile {stream.path!r} has version {self.version}; "
                f"versions {_MIN_VERSION} to {VERSION} are supported"
            )
        self.key_class = stream.text("the key class name")
        self.value_class = stream.text("the value class name")
        self.compressed = stream.read(1, "the compression flag") != b"\x00"
        self.block = stream.read(1, "the block-compression flag") != b"\x00"
        self.codec: str | None = None
        if self.compressed:
            self.codec = stream.text("the codec class name") if self.version >= 5 else DEFAULT_CODEC
            if self.codec not in SUPPORTED_CODECS:
                raise InputError(
                    f"SequenceFile {stream.path!r} is compressed with {self.codec}, which visionlake "
                    f"cannot read (supported: {', '.join(sorted(SUPPORTED_CODECS))})"
                )
        if self.version >= 6:
            for _ in range(stream.int32("the metadata count")):
                stream.text("a metadata key")
                stream.text("a metadata value")
        self.sync = stream.read(SYNC_SIZE, "the sync marker")
        for role, name in (("key", self.key_class), ("value", self.value_class)):
            if name not in (TEXT, BYTES_WRITABLE):
                raise InputError(
                    f"SequenceFile {stream.path!r} has {role} class {name}; visionlake reads "
                    f"{TEXT} and {BYTES_WRITABLE}"
                )

    def inflate(self, stream: _Stream, data: bytes, what: str, at: int) -> bytes:
        wbits = SUPPORTED_CODECS[self.codec or DEFAULT_CODEC]
        out = []
        try:
            while data:
                engine = zlib.decompressobj(wbits)
                out.append(engine.decompress(data))
                if not engine.eof:
                    raise stream.corrupt(f"{what} ends inside its compressed stream", at)
                data = engine.unused_data  # a gzip stream may hold several members
        except zlib.error as exc:
            raise stream.corrupt(f"{what} cannot be decompressed with {self.codec} ({exc})", at) from exc
        return b"".join(out)


def _decode(cls: str, raw: bytes, stream: _Stream, what: str, at: int) -> bytes:
    """The payload of a serialized Text (vint length) or BytesWritable (int32 length)."""
    try:
        if cls == TEXT:
            size, start = decode_vint(raw, 0)
        else:
            size, start = _INT.unpack_from(raw, 0)[0], 4
    except (IndexError, struct.error):
        raise stream.corrupt(f"{what} is too short for a {cls.rsplit('.', 1)[-1]}", at) from None
    if start + size != len(raw):
        raise stream.corrupt(f"{what} says {size} bytes but holds {len(raw) - start}", at)
    return raw[start:]


def _key(raw: bytes, header: _Header, stream: _Stream, at: int) -> str:
    data = _decode(header.key_class, raw, stream, "a key", at)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise stream.corrupt(f"a key is not UTF-8 ({exc.reason})", at) from exc


def _check_sync(stream: _Stream, header: _Header) -> None:
    at = stream.pos
    if stream.read(SYNC_SIZE, "a sync marker") != header.sync:
        raise stream.corrupt("a sync marker does not match the header's", at)


def _records(stream: _Stream, header: _Header) -> Iterator[tuple[str, bytes]]:
    while True:
        at = stream.pos
        length = stream.int32_or_end("a record length")
        if length is None:
            return
        if length == SYNC_ESCAPE:
            _check_sync(stream, header)
            continue
        key_length = stream.int32("a key length")
        if not 0 <= key_length <= length:
            raise stream.corrupt(f"key length {key_length} does not fit record length {length}", at)
        key = _key(stream.read(key_length, "a key"), header, stream, at)
        value = stream.read(length - key_length, f"the value of {key!r}")
        if header.compressed:
            value = header.inflate(stream, value, f"the value of {key!r}", at)
        yield key, _decode(header.value_class, value, stream, f"the value of {key!r}", at)


def _buffer(stream: _Stream, header: _Header, what: str) -> bytes:
    at = stream.pos
    raw = stream.read(stream.vint(f"the size of the {what}"), f"the {what}")
    return header.inflate(stream, raw, f"the {what}", at)


def _blocks(stream: _Stream, header: _Header) -> Iterator[tuple[str, bytes]]:
    while True:
        at = stream.pos
        escape = stream.int32_or_end("a block's sync escape")
        if escape is None:
            return
        if escape != SYNC_ESCAPE:
            raise stream.corrupt(f"a block starts with {escape}, not the sync escape -1", at)
        _check_sync(stream, header)
        n = stream.vint("a block's record count")
        key_lengths = _buffer(stream, header, "block's key lengths")
        keys = _buffer(stream, header, "block's keys")
        value_lengths = _buffer(stream, header, "block's value lengths")
        values = _buffer(stream, header, "block's values")
        key_pos = value_pos = klp = vlp = 0
        try:
            for _ in range(n):
                key_length, klp = decode_vint(key_lengths, klp)
                value_length, vlp = decode_vint(value_lengths, vlp)
                key = _key(keys[key_pos : key_pos + key_length], header, stream, at)
                value = values[value_pos : value_pos + value_length]
                key_pos += key_length
                value_pos += value_length
                yield key, _decode(header.value_class, value, stream, f"the value of {key!r}", at)
        except (IndexError, struct.error):
            raise stream.corrupt(f"the block of {n} records has fewer lengths than records", at) from None


def _count(stream: _Stream, header: _Header) -> int:
    """Records in the file, skipping over values rather than reading them."""
    total = 0
    while True:
        at = stream.pos
        first = stream.int32_or_end("a record length")
        if first is None:
            return total
        if header.block:
            if first != SYNC_ESCAPE:
                raise stream.corrupt(f"a block starts with {first}, not the sync escape -1", at)
            _check_sync(stream, header)
            total += stream.vint("a block's record count")
            for what in ("key lengths", "keys", "value lengths", "values"):
                stream.skip(stream.vint(f"the size of the block's {what}"), f"the block's {what}")
        elif first == SYNC_ESCAPE:
            _check_sync(stream, header)
        else:
            stream.skip(first + 4, "a record")
            total += 1


def iter_sequencefile(path: str | os.PathLike[str]) -> Iterator[tuple[str, bytes]]:
    """(key, value) pairs of a SequenceFile, or of a directory of part files in part-name order.

    InputError names the file and the byte offset of any damage, or the unsupported class or codec.
    """
    for file in _files(path):
        with open(file, "rb") as fh:
            stream = _Stream(fh, file)
            header = _Header(stream)
            yield from (_blocks if header.block else _records)(stream, header)


def count_sequencefile(path: str | os.PathLike[str]) -> int:
    """Number of records of a SequenceFile (file or directory) without decompressing values."""
    total = 0
    for file in _files(path):
        with open(file, "rb") as fh:
            stream = _Stream(fh, file)
            total += _count(stream, _Header(stream))
    return total
