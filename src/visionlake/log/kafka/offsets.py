"""Where the Kafka log's partitions start and end, and which offset a time falls at.

Start offsets come from ListOffsets. End offsets come from ListOffsets too, checked by one fetch at
that offset (``verify_offsets``): on Apache Kafka that fetch is empty and only confirms the end, while
tansu 0.6 answers ListOffsets with the base offset of the last batch + 1, and the fetch finds the real
end. Likewise `offsets_for_time` checks the broker's answer by reading the record it names and, if the
broker has no time index (tansu answers 0), falls back to a binary search by reading records
(timestamps assumed to increase along a partition, as for one camera).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from ...errors import BackendUnavailable

if TYPE_CHECKING:
    from .log import KafkaLog

log = logging.getLogger("visionlake.log.kafka")


class KafkaOffsets:
    """The offset look-ups of one `KafkaLog`: ListOffsets, checked by a group-less probe consumer."""

    def __init__(self, log_: KafkaLog) -> None:
        self.log = log_
        self._probe: Any = None
        self._probe_lock = threading.Lock()

    def _probe_consumer(self) -> Any:
        """A group-less reader used to verify end offsets and find records by time."""
        if self._probe is None:
            self._probe = self.log._client(
                self.log._ck.Consumer,
                "consumer",
                {"fetch.wait.max.ms": 10},
                {
                    "group.id": f"{self.log.topic_prefix}visionlake-probe-{uuid.uuid4().hex[:12]}",
                    "enable.auto.commit": False,
                    "enable.partition.eof": True,
                },
            )
        return self._probe

    def close(self) -> None:
        with self._probe_lock:
            if self._probe is not None:
                with contextlib.suppress(RuntimeError, self.log._ck.KafkaException):
                    self._probe.close()
                self._probe = None

    def list_offsets(self, tps: Iterable[tuple[str, int]], spec: Any) -> dict[tuple[str, int], int]:
        """ListOffsets for (full topic, partition) pairs, as the broker answers."""
        tps = list(tps)
        if not tps:
            return {}
        ck = self.log._ck
        futures = self.log._admin.list_offsets(
            {ck.TopicPartition(t, p): spec for t, p in tps}, request_timeout=self.log.request_timeout
        )
        return {
            (tp.topic, tp.partition): self.log._result(
                f, f"listing offsets of {tp.topic}/{tp.partition}"
            ).offset
            for tp, f in futures.items()
        }

    def bounds(self, tps: Sequence[tuple[str, int]]) -> dict[tuple[str, int], tuple[int, int]]:
        """(start, end) offsets of (full topic, partition) pairs; see the module docstring."""
        spec = self.log._ck.admin.OffsetSpec
        lo = self.list_offsets(tps, spec.earliest())
        hi = self.list_offsets(tps, spec.latest())
        if self.log.verify_offsets:
            hi.update(self._probe_ends({tp: hi[tp] for tp in tps if hi[tp] > max(lo[tp], 0)}))
        out = {}
        for tp in tps:
            start = max(lo[tp], 0)
            out[tp] = (start, max(hi[tp], start))
        return out

    def _probe_ends(self, guesses: dict[tuple[str, int], int]) -> dict[tuple[str, int], int]:
        """Fetch at each guessed end: the end-of-partition event carries the true high watermark."""
        if not guesses:
            return {}
        ck = self.log._ck
        out = dict(guesses)
        with self._probe_lock:
            c = self._probe_consumer()
            c.assign([ck.TopicPartition(t, p, o) for (t, p), o in guesses.items()])
            pending = set(guesses)
            deadline = time.monotonic() + min(self.log.request_timeout, 10.0)
            try:
                while pending and time.monotonic() < deadline:
                    for m in c.consume(1000, 0.02):
                        tp = (m.topic(), m.partition())
                        err = m.error()
                        if err is None:
                            if tp in out:
                                out[tp] = max(out[tp], m.offset() + 1)
                        elif err.code() == ck.KafkaError._PARTITION_EOF:
                            if tp in out:
                                out[tp] = max(out[tp], m.offset())
                            pending.discard(tp)
            finally:
                c.unassign()
        if pending:
            log.debug("end offsets of %s not confirmed by a fetch; using ListOffsets", sorted(pending))
        return out

    def _read_at(self, topic: str, partition: int, offset: int) -> tuple[int, int] | None:
        """(offset, timestamp) of the first record at or after `offset`; None at the end."""
        ck = self.log._ck
        with self._probe_lock:
            c = self._probe_consumer()
            c.assign([ck.TopicPartition(topic, partition, offset)])
            deadline = time.monotonic() + min(self.log.request_timeout, 10.0)
            try:
                while time.monotonic() < deadline:
                    for m in c.consume(1, 0.05):
                        err = m.error()
                        if err is None and m.offset() >= offset:
                            return m.offset(), m.timestamp()[1]
                        if err is not None and err.code() == ck.KafkaError._PARTITION_EOF:
                            return None
            finally:
                c.unassign()
        raise BackendUnavailable(f"reading {topic}/{partition}@{offset} from {self.log.url} timed out")

    def for_time(self, tps: Sequence[tuple[str, int]], timestamp_ms: int) -> dict[tuple[str, int], int]:
        """The first offset at or after `timestamp_ms` of (full topic, partition) pairs (the end if none)."""
        bounds = self.bounds(tps)
        answers = self.list_offsets(tps, self.log._ck.admin.OffsetSpec.for_timestamp(int(timestamp_ms)))
        out = {}
        for tp in tps:
            start, end = bounds[tp]
            o = answers[tp]
            if start >= end or o < 0 or o >= end:
                out[tp] = end
                continue
            if not self.log.verify_offsets:
                out[tp] = max(o, start)
                continue
            first = self._read_at(*tp, max(o, start))
            if first is None:
                out[tp] = end
            elif first[1] >= timestamp_ms:
                out[tp] = first[0]
            else:  # the broker has no usable time index: binary search by reading records
                out[tp] = self._search_time(tp, first[0] + 1, end, timestamp_ms)
        return out

    def _search_time(self, tp: tuple[str, int], lo: int, hi: int, timestamp_ms: int) -> int:
        best = hi
        while lo < hi:
            mid = (lo + hi) // 2
            rec = self._read_at(*tp, mid)
            if rec is None:
                hi = mid
            elif rec[1] >= timestamp_ms:
                best, hi = rec[0], mid
            else:
                lo = rec[0] + 1
        return best
