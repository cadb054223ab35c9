"""The frame-log interface: topics, keyed partitions, offsets, consumer groups, seek, retention.

Kafka semantics on purpose, so the embedded SQLite log and a Kafka cluster are interchangeable behind
it and pass one contract test suite (tests/test_log_contract.py).
"""

from __future__ import annotations

import abc
import enum
import re
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal

from ..errors import InputError, RecordTooLarge, Unsupported
from ..limits import MAX_PARTITIONS
from ..types import Headers, Record, RecordMetadata

OffsetReset = Literal["earliest", "latest"]

TOPIC_NAME = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
DEFAULT_PARTITIONS = 4
DEFAULT_MAX_RECORD_BYTES = 1024 * 1024  # 1 MiB: Kafka's default, and the usual sweet spot for record size


def check_topic_name(name: str) -> str:
    """Kafka's rule for topic names, applied by every backend."""
    if not TOPIC_NAME.match(name) or name in (".", ".."):
        raise InputError(f"invalid topic name {name!r}: use 1-249 of A-Z a-z 0-9 . _ -")
    return name


def check_partitions(name: str, n: int) -> int:
    """At most MAX_PARTITIONS: every partition costs files and index rows, made up front."""
    if n > MAX_PARTITIONS:
        raise InputError(f"topic {name!r}: at most {MAX_PARTITIONS} partitions, got {n}")
    return n


def check_offset_reset(where: str) -> OffsetReset:
    if where not in ("earliest", "latest"):
        raise InputError(f"offset reset must be 'earliest' or 'latest', got {where!r}")
    return where  # type: ignore[return-value]


def check_record_size(topic: str, value: bytes, limit: int) -> None:
    """Every backend refuses the same records with the same message."""
    if len(value) > limit:
        raise RecordTooLarge(
            f"record of {len(value)} bytes for topic {topic!r} exceeds its limit of {limit} bytes"
        )


def partition_for(key: bytes | None, partitions: int, counter: int = 0) -> int:
    """CRC32 of the key modulo the partition count (librdkafka's "consistent" partitioner).

    Keyless records are spread round-robin with `counter`.
    """
    if key is None:
        return counter % partitions
    return (zlib.crc32(key) & 0xFFFFFFFF) % partitions


@dataclass(frozen=True)
class TopicConfig:
    """Per-topic settings; None retention means keep for ever."""

    partitions: int = DEFAULT_PARTITIONS
    retention_ms: int | None = None
    retention_bytes: int | None = None  # per partition, as in Kafka
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES


class Unchanged(enum.Enum):
    """The type of `UNCHANGED`."""

    UNCHANGED = "UNCHANGED"

    def __repr__(self) -> str:
        return "UNCHANGED"


#: An `alter_topic` argument that leaves the setting as it is (None already means "keep for ever").
UNCHANGED: Final = Unchanged.UNCHANGED

#: What `alter_topic` changed: {setting: (old, new)}, settings named as in TopicConfig.
TopicChanges = dict[str, tuple[int | None, int | None]]


def topic_changes(
    name: str,
    current: TopicConfig,
    *,
    partitions: int | Unchanged,
    retention_ms: int | None | Unchanged,
    retention_bytes: int | None | Unchanged,
    max_record_bytes: int | Unchanged,
) -> TopicChanges:
    """The settings that differ from `current`, checked the same way by every backend.

    A partition count can only grow: Kafka cannot remove partitions, and records in them would be lost.
    """
    asked = {
        "partitions": partitions,
        "retention_ms": retention_ms,
        "retention_bytes": retention_bytes,
        "max_record_bytes": max_record_bytes,
    }
    out: TopicChanges = {}
    for setting, new in asked.items():
        if new is UNCHANGED:
            continue
        if setting in ("partitions", "max_record_bytes"):
            if isinstance(new, bool) or not isinstance(new, int) or new < 1:
                raise InputError(f"topic {name!r}: {setting} must be an integer >= 1, got {new!r}")
            if setting == "partitions":
                check_partitions(name, new)
        elif new is not None and (isinstance(new, bool) or not isinstance(new, int) or new < 0):
            raise InputError(
                f"topic {name!r}: {setting} must be an integer >= 0 or None (keep for ever), got {new!r}"
            )
        old = getattr(current, setting)
        if new != old:
            out[setting] = (old, new)
    if isinstance(partitions, int) and partitions < current.partitions:
        raise InputError(
            f"topic {name!r} has {current.partitions} partitions: the count can only grow, "
            f"not shrink to {partitions}"
        )
    return out


@dataclass(frozen=True)
class PartitionInfo:
    partition: int
    start_offset: int  # first offset still stored (retention moves it)
    end_offset: int  # offset the next record will get
    bytes: int

    @property
    def records(self) -> int:
        return self.end_offset - self.start_offset


@dataclass(frozen=True)
class TopicInfo:
    name: str
    config: TopicConfig
    partitions: list[PartitionInfo]

    @property
    def records(self) -> int:
        return sum(p.records for p in self.partitions)

    @property
    def bytes(self) -> int:
        return sum(p.bytes for p in self.partitions)


@dataclass(frozen=True)
class GroupPartition:
    topic: str
    partition: int
    committed: int | None
    end_offset: int
    owner: str | None = None

    @property
    def lag(self) -> int:
        start = self.committed if self.committed is not None else 0
        return max(0, self.end_offset - start)


@dataclass(frozen=True)
class GroupInfo:
    group: str
    members: list[str]
    partitions: list[GroupPartition] = field(default_factory=list)
    #: "consumer" (ordered, one member per partition) or "share" (records leased one by one);
    #: a share group's `committed` is its start: every record before it is acknowledged
    kind: str = "consumer"

    @property
    def lag(self) -> int:
        return sum(p.lag for p in self.partitions)


class Producer(abc.ABC):
    """Buffers records; `flush` makes them durable and returns where they landed."""

    @abc.abstractmethod
    def send(
        self,
        topic: str,
        value: bytes,
        key: bytes | None = None,
        headers: Headers | None = None,
        timestamp_ms: int | None = None,
        partition: int | None = None,
    ) -> None:
        """Queue one record. Raises RecordTooLarge at once when it exceeds the topic's limit."""

    @abc.abstractmethod
    def flush(self, timeout: float = 30.0) -> list[RecordMetadata]:
        """Write every queued record durably; returns their metadata in send order."""

    def close(self) -> None:
        self.flush()

    def __enter__(self) -> Producer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Consumer(abc.ABC):
    """Reads records; in a group it shares partitions with the other members and commits offsets."""

    group: str | None

    @abc.abstractmethod
    def poll(self, max_records: int = 100, timeout: float = 1.0) -> list[Record]:
        """Up to `max_records` records, waiting at most `timeout` seconds when none are ready."""

    @abc.abstractmethod
    def commit(self, offsets: dict[tuple[str, int], int] | None = None) -> dict[tuple[str, int], int]:
        """Commit next-offsets to read (default: the positions after everything polled).

        Returns what was committed; partitions this member no longer owns after a rebalance are
        left out (their new owner resumes from the last committed offset).
        """

    @abc.abstractmethod
    def assignment(self) -> list[tuple[str, int]]:
        """The (topic, partition) pairs this consumer reads now."""

    @abc.abstractmethod
    def seek(self, topic: str, partition: int, offset: int) -> None:
        """Next poll on that partition starts at `offset`."""

    @abc.abstractmethod
    def seek_to(self, where: OffsetReset) -> None:
        """Every assigned partition to its earliest or latest offset."""

    @abc.abstractmethod
    def seek_to_time(self, timestamp_ms: int) -> None:
        """Every assigned partition to its first record at or after `timestamp_ms` (end if none)."""

    @abc.abstractmethod
    def position(self, topic: str, partition: int) -> int:
        """Offset of the next record that poll would return from that partition."""

    @abc.abstractmethod
    def close(self) -> None:
        """Leave the group (partitions go to the other members at once)."""

    def __enter__(self) -> Consumer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


#: How long a share-group member holds a record before it goes to another member (Kafka's default).
DEFAULT_LEASE_S = 30.0
#: Deliveries of one record before it is given up as poison (Kafka's group.share.delivery.count.limit).
DEFAULT_MAX_DELIVERIES = 5


class ShareConsumer(abc.ABC):
    """A member of a share group: every member reads every partition, record by record.

    Kafka's share groups (KIP-932) as an interface: `poll` leases records to this member for
    `lease_s` seconds; `acknowledge` finishes them for good; `release` hands them back at once. A
    record whose lease runs out (its member died or stalled) goes to another member with its
    `delivery_count` raised, so several workers share one camera's partition, in no particular order.
    """

    group: str
    lease_s: float
    max_deliveries: int

    @abc.abstractmethod
    def poll(self, max_records: int = 100, timeout: float = 1.0) -> list[Record]:
        """Up to `max_records` records leased to this member, waiting at most `timeout` seconds."""

    @abc.abstractmethod
    def acknowledge(self, records: Iterable[Record]) -> int:
        """These records are done: no member gets them again. Returns how many were still open."""

    @abc.abstractmethod
    def release(self, records: Iterable[Record]) -> int:
        """Hand these leased records back, not counted as a delivery; returns how many were held."""

    @abc.abstractmethod
    def assignment(self) -> list[tuple[str, int]]:
        """Every (topic, partition) this member reads from: all of its topics' partitions."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release what is still leased and leave the group."""

    def __enter__(self) -> ShareConsumer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class FrameLog(abc.ABC):
    """A partitioned, replayable log of records."""

    url: str

    @abc.abstractmethod
    def create_topic(self, name: str, config: TopicConfig | None = None, exist_ok: bool = True) -> None: ...

    @abc.abstractmethod
    def alter_topic(
        self,
        name: str,
        *,
        partitions: int | Unchanged = UNCHANGED,
        retention_ms: int | None | Unchanged = UNCHANGED,
        retention_bytes: int | None | Unchanged = UNCHANGED,
        max_record_bytes: int | Unchanged = UNCHANGED,
    ) -> TopicChanges:
        """Change the given settings of an existing topic; the others stay as they are.

        Returns what changed ({} when every given value was already set). The checks are those of
        `topic_changes`; UnknownTopic when there is no such topic. Partitions can only grow, and
        growing moves keys to other partitions, so a backend may refuse it (InputError).
        """

    @abc.abstractmethod
    def topic_config(self, name: str) -> TopicConfig:
        """Settings of an existing topic; UnknownTopic otherwise."""

    @abc.abstractmethod
    def topics(self) -> list[TopicInfo]: ...

    @abc.abstractmethod
    def groups(self) -> list[GroupInfo]: ...

    @abc.abstractmethod
    def producer(self) -> Producer: ...

    @abc.abstractmethod
    def consumer(
        self,
        topics: Sequence[str],
        group: str | None = None,
        offset_reset: OffsetReset = "earliest",
        partitions: Iterable[int] | None = None,
    ) -> Consumer:
        """A group member when `group` is given, else a standalone reader of all (or the given) partitions."""

    def share_consumer(
        self,
        topics: Sequence[str],
        group: str,
        offset_reset: OffsetReset = "earliest",
        *,
        lease_s: float = DEFAULT_LEASE_S,
        max_deliveries: int = DEFAULT_MAX_DELIVERIES,
        start_from: str | None = None,
    ) -> ShareConsumer:
        """A member of share group `group` (see `ShareConsumer`); Unsupported where the backend has none.

        A partition new to the group starts where consumer group `start_from` committed, if it did
        (switching a model's workers to shared reading does not redo its history), else per
        `offset_reset`.
        """
        raise Unsupported(f"the frame log {self.url} has no share groups")

    def share_offsets(self, group: str, topic: str) -> dict[int, int]:
        """Per partition, the share group's start: every record before it is acknowledged."""
        raise Unsupported(f"the frame log {self.url} has no share groups")

    @abc.abstractmethod
    def offsets_for_time(self, topic: str, timestamp_ms: int) -> dict[int, int]:
        """Per partition, the first offset with a timestamp >= `timestamp_ms` (the end offset if none)."""

    @abc.abstractmethod
    def group_offsets(self, group: str, topic: str) -> dict[int, int]:
        """Committed offsets of a group on a topic, by partition (absent: never committed)."""

    @abc.abstractmethod
    def commit_group_offsets(self, group: str, topic: str, offsets: dict[int, int]) -> None:
        """Set a group's committed offsets from outside (kafka-consumer-groups --reset-offsets)."""

    @abc.abstractmethod
    def enforce_retention(self) -> int:
        """Drop data past each topic's retention; returns the number of records removed."""

    def ensure_topic(self, name: str, config: TopicConfig | None = None) -> None:
        self.create_topic(name, config, exist_ok=True)

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""

    def __enter__(self) -> FrameLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
