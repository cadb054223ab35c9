"""`KafkaConsumer`: a consumer-group member with manual, synchronous commits, or a reader of partitions."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ...errors import InputError, VisionlakeError
from ...types import Record
from ..base import Consumer, OffsetReset
from .errors import auth_codes, check_partition, first_error, message, rebalance_codes, unavailable_codes

if TYPE_CHECKING:
    from .log import KafkaLog

log = logging.getLogger("visionlake.log.kafka")


class KafkaConsumer(Consumer):
    """A librdkafka consumer: a group member (subscribe, manual commits) or a reader of partitions."""

    def __init__(
        self,
        log_: KafkaLog,
        topics: list[str],
        group: str | None,
        offset_reset: OffsetReset,
        partitions: Iterable[int] | None,
    ) -> None:
        self.log = log_
        self.group = group
        self.offset_reset = offset_reset
        ck = log_._ck
        self._ck = ck
        self._closed = False
        self._lock = threading.RLock()
        self._buffer: list[Record] = []
        self._pos: dict[tuple[str, int], int] = {}
        self._consumed: dict[tuple[str, int], int] = {}
        self._assigned: set[tuple[str, int]] = set()
        self._assignments = 0
        self._nparts: dict[str, int] = {}
        for t in topics:
            log_.ensure_topic(t)
            self._nparts[t] = log_._partition_count(t)
        self._full_topics = [log_._full(t) for t in topics]
        self._full_group = log_._full(group) if group is not None else None
        self._start_ends: dict[tuple[str, int], int] = {}
        if group is not None and offset_reset == "latest":
            # "latest" means the end when this consumer was made, so nothing produced while the
            # group forms is skipped (the embedded log also resolves it when the consumer is made)
            ends = log_._offsets.bounds(
                [(log_._full(t), p) for t, n in self._nparts.items() for p in range(n)]
            )
            self._start_ends = {(log_._short(t), p): e for (t, p), (_, e) in ends.items()}
        self._c = log_._client(
            ck.Consumer,
            "consumer",
            {"fetch.wait.max.ms": 100, "partition.assignment.strategy": "roundrobin"},
            {
                "group.id": self._full_group
                or f"{log_.topic_prefix}visionlake-reader-{uuid.uuid4().hex[:12]}",
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": "earliest",  # a committed offset past retention resumes at the start
                "enable.partition.eof": False,
                "session.timeout.ms": int(log_.session_timeout * 1000),
                "heartbeat.interval.ms": int(log_.heartbeat_interval * 1000),
                "max.poll.interval.ms": int(log_.max_poll_interval * 1000),
            },
        )
        if group is None:
            self._assign_standalone(partitions)
        else:
            try:
                self._c.subscribe(
                    self._full_topics,
                    on_assign=self._on_assign,
                    on_revoke=self._on_revoke,
                    on_lost=self._on_lost,
                )
            except ck.KafkaException as e:
                raise log_._error(e, f"joining group {group!r}") from None
            self._await_assignment()

    # -- membership --------------------------------------------------------------------------

    @property
    def member_id(self) -> str:
        try:
            mid = self._c.memberid()
        except (RuntimeError, self._ck.KafkaException):
            mid = None
        return mid or f"{self.log._common['client.id']} (joining)"

    def _assign_standalone(self, partitions: Iterable[int] | None) -> None:
        tps = []
        for t, n in self._nparts.items():
            for p in partitions if partitions is not None else range(n):
                check_partition(t, p, n)
                tps.append((self.log._full(t), p))
        bounds = self.log._offsets.bounds(tps)
        assignment = []
        for (full, p), (start, end) in bounds.items():
            offset = start if self.offset_reset == "earliest" else end
            short = (self.log._short(full), p)
            self._pos[short] = offset
            self._assigned.add(short)
            assignment.append(self._ck.TopicPartition(full, p, offset))
        self._c.assign(assignment)
        self._assignments += 1

    def _await_assignment(self) -> None:
        """Wait (bounded) until the group hands this member its first assignment, as the embedded
        log's consumer has one when it is made. Other members of the group made by this process are
        serviced meanwhile: librdkafka rebalances only when every member polls."""
        deadline = time.monotonic() + self.log.join_timeout
        while not self._assignments and time.monotonic() < deadline:
            self._service(0.05)
            for other in list(self.log._consumers):
                same = other is not self and other._full_group == self._full_group and not other._closed
                if same and other._lock.acquire(blocking=False):
                    try:
                        other._service(0)
                    finally:
                        other._lock.release()
        if not self._assignments:
            log.warning(
                "group %s on %s: no assignment after %.0f s; it comes with a later poll",
                self.group,
                self.log.url,
                self.log.join_timeout,
            )

    def _on_assign(self, consumer: Any, parts: list) -> None:
        """Start each new partition at its committed offset, else where `offset_reset` says.

        The offsets are resolved here, not left to librdkafka, so every partition is in the first
        fetch, and "latest" means the end when this consumer was made (see __init__).
        """
        try:
            committed = consumer.committed(parts, timeout=self.log.request_timeout) if parts else []
        except self._ck.KafkaException as e:  # librdkafka looks the offsets up itself then
            committed = []
            self.log._warn(
                "assign", "reading committed offsets of group %s failed: %s", self.group, message(e)
            )
        if committed:
            parts = committed
            fresh = [tp for tp in parts if tp.offset < 0 and tp.error is None]
            try:
                bounds = self.log._offsets.bounds([(tp.topic, tp.partition) for tp in fresh]) if fresh else {}
            except VisionlakeError as e:
                self.log._warn("assign", "group %s: %s", self.group, e)
                bounds = {}
            for tp in fresh:
                start, end = bounds.get((tp.topic, tp.partition), (-1, -1))
                if self.offset_reset == "latest":
                    end = self._start_ends.get((self.log._short(tp.topic), tp.partition), end)
                    tp.offset = end if end >= 0 else self._ck.OFFSET_END
                else:
                    tp.offset = start if start >= 0 else self._ck.OFFSET_BEGINNING
        consumer.assign(parts)
        mine = {(self.log._short(tp.topic), tp.partition) for tp in parts}
        self._assigned = mine
        for tp in parts:
            if tp.offset >= 0:
                self._pos[(self.log._short(tp.topic), tp.partition)] = tp.offset
        self._assignments += 1
        log.info("member of group %s now reads %s", self.group, sorted(mine))

    def _drop(self, tps: set[tuple[str, int]]) -> None:
        self._assigned -= tps
        self._buffer = [r for r in self._buffer if (r.topic, r.partition) not in tps]
        for tp in tps:
            self._pos.pop(tp, None)
            self._consumed.pop(tp, None)

    def _on_revoke(self, consumer: Any, parts: list) -> None:
        self._drop({(self.log._short(tp.topic), tp.partition) for tp in parts})
        consumer.unassign()

    def _on_lost(self, consumer: Any, parts: list) -> None:
        log.warning(
            "group %s: partitions %s lost (session expired); they will be reassigned", self.group, len(parts)
        )
        self._on_revoke(consumer, parts)

    # -- reading -----------------------------------------------------------------------------

    def _record(self, m: Any) -> Record | None:
        err = m.error()
        if err is not None:
            if err.fatal() or err.code() in auth_codes(self._ck):
                raise self.log._error(err, "reading from Kafka")
            if err.code() != self._ck.KafkaError._PARTITION_EOF:
                self.log._warn(f"consume-{err.code()}", "Kafka %s: %s", self.log.url, err.str())
            return None
        tp = (self.log._short(m.topic()), m.partition())
        if tp not in self._assigned:
            return None
        ts_type, ts = m.timestamp()
        headers = [(k, v if v is not None else b"") for k, v in (m.headers() or [])]
        return Record(
            tp[0],
            tp[1],
            m.offset(),
            ts if ts_type != self._ck.TIMESTAMP_NOT_AVAILABLE else 0,
            m.key(),
            m.value() or b"",
            headers,
        )

    def _service(self, timeout: float) -> None:
        """Serve group events (rebalances) without handing records out: one is kept if it comes."""
        m = self._c.poll(timeout)
        if m is not None:
            r = self._record(m)
            if r is not None:
                self._buffer.append(r)

    def poll(self, max_records: int = 100, timeout: float = 1.0) -> list[Record]:
        if self._closed:
            return []
        with self._lock:
            if max_records <= 0:
                self._service(timeout)
                return []
            out = self._buffer[:max_records]
            del self._buffer[: len(out)]
            deadline = time.monotonic() + timeout
            while not out:
                m = self._c.poll(max(0.0, deadline - time.monotonic()))
                if m is not None:
                    r = self._record(m)
                    if r is not None:
                        out.append(r)
                if time.monotonic() >= deadline:
                    break
            if out and len(out) < max_records:
                for m in self._c.consume(max_records - len(out), 0):
                    r = self._record(m)
                    if r is not None:
                        out.append(r)
            for r in out:
                self._pos[(r.topic, r.partition)] = self._consumed[(r.topic, r.partition)] = r.offset + 1
            return out

    # -- offsets -----------------------------------------------------------------------------

    def commit(self, offsets: dict[tuple[str, int], int] | None = None) -> dict[tuple[str, int], int]:
        if self.group is None:
            raise InputError("commit needs a consumer group")
        ck = self._ck
        with self._lock:
            todo = dict(self._consumed if offsets is None else offsets)
            done = {tp: o for tp, o in todo.items() if tp in self._assigned}
            lost = set(todo) - set(done)
            if lost:
                log.warning(
                    "partitions %s moved to another member before commit; they resume there", sorted(lost)
                )
            if not done:
                return {}
            request = [ck.TopicPartition(self.log._full(t), p, o) for (t, p), o in sorted(done.items())]
            deadline = time.monotonic() + self.log.delivery_timeout
            pause = 0.1
            while True:
                try:
                    result = self._c.commit(offsets=request, asynchronous=False)
                    errors = [tp.error for tp in result or [] if tp.error is not None]
                    if errors:
                        raise ck.KafkaException(errors[0])
                    break
                except ck.KafkaException as e:
                    err = first_error(e)
                    code = err.code() if err is not None else None
                    if code in rebalance_codes(ck):
                        log.warning(
                            "group %s rebalanced before the commit of %s; their new owner resumes from the "
                            "last commit",
                            self.group,
                            sorted(done),
                        )
                        return {}
                    retriable = err is not None and (err.retriable() or code in unavailable_codes(ck))
                    if not retriable or time.monotonic() >= deadline:
                        raise self.log._error(e, f"committing offsets of group {self.group!r}") from None
                    self.log._warn(
                        "commit", "commit to Kafka at %s failed (%s); retrying", self.log.url, err.str()
                    )
                    time.sleep(pause)
                    pause = min(pause * 2, 2.0)
            for tp, o in done.items():
                if self._consumed.get(tp) == o:
                    self._consumed.pop(tp, None)
            return done

    def assignment(self) -> list[tuple[str, int]]:
        return sorted(self._assigned)

    def _check_assigned(self, topic: str, partition: int) -> None:
        if (topic, partition) not in self._assigned:
            raise InputError(f"partition {topic}/{partition} is not assigned to this consumer")

    def _seek(self, tp: tuple[str, int], offset: int) -> None:
        self._buffer = [r for r in self._buffer if (r.topic, r.partition) != tp]
        try:
            self._c.seek(self._ck.TopicPartition(self.log._full(tp[0]), tp[1], offset))
        except self._ck.KafkaException as e:
            raise self.log._error(e, f"seeking {tp[0]}/{tp[1]} to {offset}") from None
        self._pos[tp] = offset

    def seek(self, topic: str, partition: int, offset: int) -> None:
        self._check_assigned(topic, partition)
        full = (self.log._full(topic), partition)
        start, end = self.log._offsets.bounds([full])[full]
        with self._lock:
            self._seek((topic, partition), min(max(offset, start), end))

    def seek_to(self, where: OffsetReset) -> None:
        if where not in ("earliest", "latest"):
            raise InputError(f"seek_to takes 'earliest' or 'latest', got {where!r}")
        tps = sorted(self._assigned)
        bounds = self.log._offsets.bounds([(self.log._full(t), p) for t, p in tps])
        with self._lock:
            for t, p in tps:
                start, end = bounds[(self.log._full(t), p)]
                self._seek((t, p), start if where == "earliest" else end)

    def seek_to_time(self, timestamp_ms: int) -> None:
        tps = sorted(self._assigned)
        found = self.log._offsets.for_time([(self.log._full(t), p) for t, p in tps], timestamp_ms)
        with self._lock:
            for t, p in tps:
                self._seek((t, p), found[(self.log._full(t), p)])

    def position(self, topic: str, partition: int) -> int:
        self._check_assigned(topic, partition)
        tp = (topic, partition)
        with self._lock:
            buffered = [r.offset for r in self._buffer if (r.topic, r.partition) == tp]
            if buffered:
                return min(buffered)
            if tp in self._pos:
                return self._pos[tp]
            full = self._ck.TopicPartition(self.log._full(topic), partition)
            try:
                (pos,) = self._c.position([full])
                if pos.offset >= 0:
                    return pos.offset
                if self.group is not None:
                    (com,) = self._c.committed([full], timeout=self.log.request_timeout)
                    if com.offset >= 0:
                        return com.offset
            except self._ck.KafkaException as e:
                raise self.log._error(e, f"reading the position of {topic}/{partition}") from None
            start, end = self.log._offsets.bounds([(full.topic, partition)])[(full.topic, partition)]
            return start if self.offset_reset == "earliest" else self._start_ends.get(tp, end)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with self._lock:
            try:
                self._c.close()  # leaves the group: its partitions move to the other members now
            except (RuntimeError, self._ck.KafkaException) as e:
                log.debug("closing consumer: %s", message(e))
            self._buffer.clear()
        self.log._consumers.discard(self)
        if self.group is not None:
            log.info("member left group %s", self.group)
