"""Frames read back from the catalog and the archive, in the shape of a consumer.

The log forgets (retention), the archive and the catalog do not. A replay over the whole history
reads the catalog's `frames` rows in (captured_at, frame_id) order and hands each out as a claim-check
record (`vl-ref` = the archived image), so the ordinary worker processes it: one image read at a time,
the same checkpoint, the same idempotent writes. Its "commits" store the position reached as a replay
cursor in the catalog, so an interrupted replay resumes where it stopped.

Records come from one pseudo-partition, `ARCHIVE_TOPIC`/0, numbered in read order.
"""

from __future__ import annotations

from datetime import datetime

from ..catalog.base import Catalog, Cursor, StoredFrame
from ..errors import InputError
from ..frames import FrameMeta, frame_headers
from ..log.base import Consumer, OffsetReset
from ..types import Record

ARCHIVE_TOPIC = "archive"
_TP = (ARCHIVE_TOPIC, 0)


class ArchiveReader(Consumer):
    """Reads every frame the catalog holds, resuming from the cursor stored under `name`."""

    def __init__(
        self,
        catalog: Catalog,
        name: str,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        restart: bool = False,
    ) -> None:
        self.catalog = catalog
        self.group = name
        self.since = since
        self.until = until
        if restart:
            catalog.set_replay_cursor(name, None)
        self._cursor: Cursor | None = catalog.replay_cursor(name)
        self._next = 0  # number of the next record handed out
        self._keys: dict[int, Cursor] = {}  # record number -> its position, until committed

    def poll(self, max_records: int = 100, timeout: float = 1.0) -> list[Record]:
        rows = self.catalog.frames_after(self._cursor, since=self.since, until=self.until, limit=max_records)
        out = [self._record(row) for row in rows]
        if rows:
            self._cursor = (rows[-1].captured_at, rows[-1].frame_id)
        return out

    def _record(self, row: StoredFrame) -> Record:
        meta = FrameMeta(row.frame_id, row.camera, row.seq, row.captured_at, row.width, row.height, row.uri)
        offset = self._next
        self._next += 1
        self._keys[offset] = (row.captured_at, row.frame_id)
        ts = int(row.captured_at.timestamp() * 1000)
        return Record(ARCHIVE_TOPIC, 0, offset, ts, row.camera.encode(), b"", frame_headers(meta))

    def commit(self, offsets: dict[tuple[str, int], int] | None = None) -> dict[tuple[str, int], int]:
        upto = self._next if offsets is None else offsets.get(_TP)
        if upto is None or (upto - 1) not in self._keys:
            return {}
        self.catalog.set_replay_cursor(self.group, self._keys[upto - 1])
        for n in [n for n in self._keys if n < upto]:
            del self._keys[n]
        return {_TP: upto}

    def assignment(self) -> list[tuple[str, int]]:
        return [_TP]

    def seek(self, topic: str, partition: int, offset: int) -> None:
        raise InputError("an archive replay reads in capture-time order; restart it to read from the start")

    def seek_to(self, where: OffsetReset) -> None:
        if where == "earliest":
            self._cursor = None
        else:
            raise InputError("an archive replay has no 'latest': it ends after the newest frame")

    def seek_to_time(self, timestamp_ms: int) -> None:
        raise InputError("an archive replay takes its time window when it is made (--from/--to)")

    def position(self, topic: str, partition: int) -> int:
        return self._next

    def close(self) -> None:
        """Nothing to release: the catalog belongs to the lake."""
