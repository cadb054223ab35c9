"""The one place that decides which offsets a worker may commit.

A record counts as finished only once everything it leads to is durable: its catalog rows, its
archive object, its detection event or its dead letter. Per partition the checkpoint commits the
offset after the longest run of finished records from the start of what was polled, so a record
polled but not finished (a stop in mid-batch, a detector still busy, another partition not reached
yet) is never skipped: the next owner of the partition reads it again. Commits only move forward;
an attempt to move one back is a bug in the caller and raises.

Offsets are not assumed to be consecutive integers (Kafka leaves gaps after transactions and
compaction): the checkpoint follows the offsets it was actually handed, in poll order.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterable

from ..errors import VisionlakeError
from ..log.base import Consumer, ShareConsumer
from ..types import Record

log = logging.getLogger("visionlake.worker")

TopicPartition = tuple[str, int]


class OffsetRegression(VisionlakeError):
    """A commit would move a partition's offset backwards: a bookkeeping bug, never done silently."""


class Checkpoint:
    """Tracks polled and finished records per partition; commits the contiguous finished prefix."""

    def __init__(self, consumer: Consumer) -> None:
        self.consumer = consumer
        self._pending: dict[TopicPartition, deque[int]] = {}  # polled, in order, not yet committed
        self._finished: dict[TopicPartition, set[int]] = {}
        self._committed: dict[TopicPartition, int] = {}  # next offsets this checkpoint committed

    def track(self, records: Iterable[Record]) -> None:
        """Records just polled: none of them may be committed until it is finished."""
        for r in records:
            tp = (r.topic, r.partition)
            queue = self._pending.setdefault(tp, deque())
            if queue and r.offset <= queue[-1]:
                # the consumer went back (seek, rebalance re-delivery): start this partition afresh
                queue.clear()
                self._finished.pop(tp, None)
            queue.append(r.offset)

    def finish(self, record: Record) -> None:
        """Everything `record` leads to is durable."""
        tp = (record.topic, record.partition)
        if record.offset in self._pending.get(tp, ()):
            self._finished.setdefault(tp, set()).add(record.offset)

    def committable(self) -> dict[TopicPartition, int]:
        """Per partition, the next offset after the contiguous run of finished records."""
        out: dict[TopicPartition, int] = {}
        for tp, queue in self._pending.items():
            done = self._finished.get(tp, set())
            upto = None
            for offset in queue:
                if offset not in done:
                    break
                upto = offset
            if upto is not None:
                out[tp] = upto + 1
        return out

    def unfinished(self) -> int:
        """Records polled and not finished (they will be read again by the partition's next owner)."""
        return sum(len(q) - len(self._finished.get(tp, ())) for tp, q in self._pending.items())

    def commit(self) -> dict[TopicPartition, int]:
        """Commit what may be committed; returns what the log accepted.

        Partitions lost to a rebalance are left out by the consumer and forgotten here: their new
        owner starts from the last commit and re-reads the rest (results are idempotent).
        """
        todo = self.committable()
        for tp, offset in todo.items():
            last = self._committed.get(tp)
            if last is not None and offset < last:
                raise OffsetRegression(
                    f"commit of {tp[0]}/{tp[1]} would move its offset back from {last} to {offset}"
                )
        if not todo:
            return {}
        done = self.consumer.commit(todo)
        for tp, offset in todo.items():
            queue = self._pending[tp]
            while queue and queue[0] < offset:
                self._finished.get(tp, set()).discard(queue.popleft())
            if tp in done:
                self._committed[tp] = offset
            else:
                self.forget([tp])
        return done

    def forget(self, partitions: Iterable[TopicPartition]) -> None:
        """Partitions this member no longer owns: what it holds of them is re-read by their new owner."""
        for tp in partitions:
            self._pending.pop(tp, None)
            self._finished.pop(tp, None)
            self._committed.pop(tp, None)


class ShareCheckpoint:
    """The checkpoint of a share-group member: each finished record is acknowledged on its own.

    Members of a share group hold records of one partition in any order, so there is no prefix to
    commit: `commit` acknowledges what is finished, and the records still held when the worker stops
    are handed back by the consumer's `close`.
    """

    def __init__(self, consumer: ShareConsumer) -> None:
        self.consumer = consumer
        self._held: dict[tuple[str, int, int], Record] = {}
        self._finished: list[Record] = []

    def track(self, records: Iterable[Record]) -> None:
        for r in records:
            self._held[(r.topic, r.partition, r.offset)] = r

    def finish(self, record: Record) -> None:
        if self._held.pop((record.topic, record.partition, record.offset), None) is not None:
            self._finished.append(record)

    def unfinished(self) -> int:
        return len(self._held)

    def commit(self) -> dict[TopicPartition, int]:
        """Acknowledge the finished records; returns {(topic, partition): records acknowledged}."""
        done, self._finished = self._finished, []
        self.consumer.acknowledge(done)
        out: dict[TopicPartition, int] = {}
        for r in done:
            out[(r.topic, r.partition)] = out.get((r.topic, r.partition), 0) + 1
        return out
