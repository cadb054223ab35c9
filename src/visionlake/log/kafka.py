"""The Kafka frame log on confluent-kafka (librdkafka): Apache Kafka, Redpanda, managed Kafka, tansu.

URL: ``kafka://host:9092[,host2:9092][?option=value&...]``. Options come from the URL query and from
``[log_options]`` in the lake config (the config wins). Each is either a visionlake option below or a
librdkafka setting passed through unchanged, written with dots or underscores (``security.protocol`` /
``security_protocol``, ``sasl.mechanism``, ``sasl.username``, ``sasl.password``, ``ssl.ca.location``...).
A setting prefixed ``producer.``, ``consumer.`` or ``admin.`` goes to that client only
(``producer.linger.ms = 20``). Secrets never appear in `url`, which names only the brokers.

visionlake options: ``topic_prefix`` (a namespace: prepended to every topic and group id in and out,
so several lakes or test runs share one cluster; default none), ``connect_timeout`` (seconds a new
log waits for the cluster before raising BackendUnavailable, 10), ``request_timeout`` (admin calls,
30), ``delivery_timeout`` (how long produced records are retried while brokers are down, and how
long `flush()` waits by default, 120), ``session_timeout`` / ``heartbeat_interval`` /
``max_poll_interval`` (group membership, 6 / 1 / 300 s: short sessions make a crashed worker's
partitions move in seconds), ``join_timeout`` (how long a new group consumer waits for its first
assignment, 15), ``replication_factor`` (-1: the broker's default), ``verify_offsets`` (true).

How the contract maps onto Kafka:

* Partitioning: the producer always chooses the partition itself with `partition_for` (CRC32 of the
  key, the same as librdkafka's ``consistent`` partitioner and the embedded log), so a camera lands in
  the same partition on either backend and a plain librdkafka producer agrees with both.
* Record limit: ``TopicConfig.max_record_bytes`` limits the value. The topic's ``max.message.bytes``
  (which Kafka applies to a whole record batch) is set to that limit plus `RECORD_OVERHEAD` for the key,
  headers and batch framing, and read back the same way; a topic without the setting gets 1 MiB.
  librdkafka batches up to ``batch.size`` (1 MB) per partition, so a topic with a much smaller
  ``max.message.bytes`` needs ``producer.batch.size`` lowered to match.
* Retention: ``retention.ms`` / ``retention.bytes`` topic configs (None is -1, keep for ever). Brokers
  apply them on their own schedule, whole segments at a time, so `enforce_retention` does nothing and
  returns 0. tansu 0.6 (the broker the test suite runs) applies no retention at all.
* Durability order: the producer is idempotent (no duplicates or reordering on retries), `flush`
  waits for every acknowledgement and raises if any record failed; consumers never auto-commit, and
  `commit` is synchronous, so a worker commits only after its results are durable.
* Broker outages: librdkafka reconnects with backoff by itself. Produced records stay queued and are
  retried for ``delivery_timeout``; `flush()` waits that long (logging while it waits) before raising
  BackendUnavailable, and the records stay queued if it does. Consumers keep polling (empty batches)
  and resume where they were; `commit` retries retriable errors for ``delivery_timeout``. A partition
  that moved to another member during the outage is left out of the commit (its new owner
  reprocesses from the last commit; the catalog writes are idempotent).
* Unreachable cluster: creating a `KafkaLog` fails after ``connect_timeout`` seconds with
  BackendUnavailable naming the URL.
* Offsets: start offsets come from ListOffsets. End offsets come from ListOffsets too, checked by one
  fetch at that offset (``verify_offsets``): on Apache Kafka that fetch is empty and only confirms the
  end, while tansu 0.6 answers ListOffsets with the base offset of the last batch + 1, and the fetch
  finds the real end. Likewise `offsets_for_time` checks the broker's answer by reading the record it
  names and, if the broker has no time index (tansu answers 0), falls back to a binary search by
  reading records (timestamps assumed to increase along a partition, as for one camera).
* Sizes: Kafka reports partition sizes only through DescribeLogDirs, which the Python client lacks,
  so `PartitionInfo.bytes` is 0.
* Lag: `groups()` lists the groups of the namespace (plus those of this process's own consumers),
  their members and assignments (DescribeGroups), committed offsets (OffsetFetch) and end offsets;
  lag is end - committed. tansu 0.6 lists only groups that committed something and describes no
  members, so there only this process's own members show up.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import socket
import threading
import time
import uuid
import weakref
from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import parse_qsl

from ..errors import (
    BackendUnavailable,
    ConfigError,
    InputError,
    LogError,
    MissingDependency,
    RecordTooLarge,
    UnknownTopic,
    VisionlakeError,
)
from ..types import Headers, Record, RecordMetadata
from .base import (
    DEFAULT_MAX_RECORD_BYTES,
    TOPIC_NAME,
    Consumer,
    FrameLog,
    GroupInfo,
    GroupPartition,
    OffsetReset,
    PartitionInfo,
    Producer,
    TopicConfig,
    TopicInfo,
    check_topic_name,
    partition_for,
)

log = logging.getLogger("visionlake.log.kafka")

HOST = socket.gethostname()
#: Headroom between a topic's value limit and its max.message.bytes: key, headers and batch framing.
RECORD_OVERHEAD = 16 * 1024
#: Largest produce request / single record the producer accepts; the topic's limit is what applies.
MAX_REQUEST_BYTES = 64 * 1024 * 1024 + RECORD_OVERHEAD
_TOPIC_MAX = 249

#: visionlake's own options and their types; every other option is a librdkafka setting.
OPTIONS: dict[str, type] = {
    "topic_prefix": str,
    "connect_timeout": float,
    "request_timeout": float,
    "delivery_timeout": float,
    "session_timeout": float,
    "heartbeat_interval": float,
    "max_poll_interval": float,
    "join_timeout": float,
    "replication_factor": int,
    "verify_offsets": bool,
}
_CLIENTS = ("producer", "consumer", "admin")


def _kafka() -> Any:
    """confluent_kafka, imported on first use (it is an optional extra)."""
    try:
        import confluent_kafka
        import confluent_kafka.admin  # noqa: F401
    except ImportError as e:
        raise MissingDependency("the Kafka frame log", "kafka", "confluent_kafka") from e
    return confluent_kafka


def parse_url(url: str) -> tuple[str, dict[str, str]]:
    """``kafka://h1:9092,h2:9092?k=v`` -> ("h1:9092,h2:9092", {"k": "v"}); port 9092 by default."""
    if not url.startswith("kafka://"):
        raise ConfigError(f"log URL {url.split('?')[0]!r} is not a kafka:// URL")
    hosts, _, query = url.removeprefix("kafka://").partition("?")
    shown = f"kafka://{hosts}"
    servers = []
    for raw in hosts.strip("/").split(","):
        h = raw.strip()
        if not h:
            continue
        host, port = h, "9092"
        if not h.endswith("]") and ":" in h:
            host, _, port = h.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"log URL {shown!r}: bad broker address {h!r}, expected host:port")
        servers.append(f"{host}:{port}")
    if not servers:
        raise ConfigError(f"log URL {shown!r} names no broker: use kafka://host:9092[,host2:9092]")
    try:
        opts = dict(parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query)))
    except ValueError as e:
        raise ConfigError(f"log URL {shown!r}: bad query string: {e}") from None
    return ",".join(servers), opts


def _coerce(name: str, kind: type, value: object) -> object:
    try:
        if kind is bool:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError(text)
        return kind(value)
    except (TypeError, ValueError):
        raise ConfigError(f"Kafka log option {name}={value!r}: expected {kind.__name__}") from None


def _rd_value(value: object) -> object:
    """librdkafka takes strings, ints and bools; TOML floats and other types become strings."""
    if isinstance(value, bool | int | str):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return str(value)


class _RdLogger:
    """librdkafka's own log lines go to DEBUG; the error callbacks report what users need."""

    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger

    def log(self, level: int, msg: str, *args: object) -> None:
        self.logger.debug(msg, *args)


class KafkaLog(FrameLog):
    """A frame log on a Kafka cluster; see the module docstring for the options and semantics."""

    def __init__(self, url: str, *, default_config: TopicConfig | None = None, **options: object) -> None:
        self._ck = _kafka()
        servers, url_options = parse_url(url)
        self.url = f"kafka://{servers}"
        mine: dict[str, object] = {}
        common: dict[str, object] = {}
        targeted: dict[str, dict[str, object]] = {c: {} for c in _CLIENTS}
        for key, value in {**url_options, **options}.items():
            norm = key.strip().replace(".", "_").replace("-", "_").lower()
            if norm in OPTIONS:
                mine[norm] = _coerce(key, OPTIONS[norm], value)
                continue
            name = key.strip().replace("_", ".")
            client, _, rest = name.partition(".")
            if client in _CLIENTS and rest:
                targeted[client][rest] = _rd_value(value)
            else:
                common[name] = _rd_value(value)
        self.topic_prefix: str = mine.get("topic_prefix", "")  # type: ignore[assignment]
        if self.topic_prefix and not TOPIC_NAME.match(self.topic_prefix):
            raise ConfigError(f"topic_prefix {self.topic_prefix!r}: use A-Z a-z 0-9 . _ - only")
        self.connect_timeout = float(mine.get("connect_timeout", 10.0))  # type: ignore[arg-type]
        self.request_timeout = float(mine.get("request_timeout", 30.0))  # type: ignore[arg-type]
        self.delivery_timeout = float(mine.get("delivery_timeout", 120.0))  # type: ignore[arg-type]
        self.session_timeout = float(mine.get("session_timeout", 6.0))  # type: ignore[arg-type]
        self.heartbeat_interval = float(mine.get("heartbeat_interval", 1.0))  # type: ignore[arg-type]
        self.max_poll_interval = float(mine.get("max_poll_interval", 300.0))  # type: ignore[arg-type]
        self.join_timeout = float(mine.get("join_timeout", 15.0))  # type: ignore[arg-type]
        self.replication_factor = int(mine.get("replication_factor", -1))  # type: ignore[call-overload]
        self.verify_offsets = bool(mine.get("verify_offsets", True))
        self.default_config = default_config or TopicConfig()
        self._common = {
            "bootstrap.servers": servers,
            "client.id": f"visionlake-{HOST}-{os.getpid()}",
            "allow.auto.create.topics": False,  # topics are created with their settings, never implicitly
            "logger": _RdLogger(logging.getLogger("visionlake.log.kafka.librdkafka")),
            **common,
        }
        self._targeted = targeted
        self._last_error: Any = None
        self._quiet = False
        self._warned: dict[str, float] = {}
        self._consumers: weakref.WeakSet[KafkaConsumer] = weakref.WeakSet()
        self._probe: Any = None
        self._probe_lock = threading.Lock()
        self._admin = self._client(self._ck.admin.AdminClient, "admin", {})
        self._connect()

    # -- clients -----------------------------------------------------------------------------

    def _conf(
        self, client: str, defaults: dict[str, object], forced: dict[str, object] | None = None
    ) -> dict:
        conf = {**defaults, **self._common, **self._targeted[client], **(forced or {})}
        conf.setdefault("error_cb", self._on_error)
        return conf

    def _client(self, cls: Any, client: str, defaults: dict[str, object], forced: dict | None = None) -> Any:
        try:
            return cls(self._conf(client, defaults, forced))
        except (self._ck.KafkaException, ValueError, TypeError) as e:
            raise ConfigError(f"invalid Kafka settings for {self.url}: {_message(e)}") from None

    def _on_error(self, err: Any) -> None:
        self._last_error = err
        if self._quiet:  # while connecting: the BackendUnavailable message carries it
            return
        if err.fatal():
            log.error("Kafka %s: fatal error: %s", self.url, err.str())
            return
        self._warn(str(err.code()), "Kafka %s: %s (librdkafka retries)", self.url, err.str())

    def _warn(self, key: str, msg: str, *args: object, every: float = 10.0) -> None:
        now = time.monotonic()
        if now - self._warned.get(key, -1e9) >= every:
            self._warned[key] = now
            log.warning(msg, *args)

    def _connect(self) -> None:
        self._quiet = True
        try:
            self._admin.list_topics(timeout=self.connect_timeout)
        except self._ck.KafkaException as e:
            self._admin.poll(0)
            err = e.args[0] if e.args else e
            last = self._last_error
            detail = _message(err) + (f"; last error: {last.str()}" if last is not None else "")
            raise BackendUnavailable(
                f"cannot reach the Kafka cluster at {self.url} within {self.connect_timeout:g} s: {detail}"
            ) from None
        finally:
            self._quiet = False

    def _probe_consumer(self) -> Any:
        """A group-less reader used to verify end offsets and find records by time."""
        if self._probe is None:
            self._probe = self._client(
                self._ck.Consumer,
                "consumer",
                {"fetch.wait.max.ms": 10},
                {
                    "group.id": f"{self.topic_prefix}visionlake-probe-{uuid.uuid4().hex[:12]}",
                    "enable.auto.commit": False,
                    "enable.partition.eof": True,
                },
            )
        return self._probe

    def close(self) -> None:
        with self._probe_lock:
            if self._probe is not None:
                with contextlib.suppress(RuntimeError, self._ck.KafkaException):
                    self._probe.close()
                self._probe = None

    # -- names and errors --------------------------------------------------------------------

    def _full(self, name: str) -> str:
        return self.topic_prefix + name

    def _short(self, full: str) -> str:
        return full[len(self.topic_prefix) :]

    def _mine(self, full: str) -> bool:
        return full.startswith(self.topic_prefix) and not full.startswith("__")

    def _error(self, err: Any, what: str) -> VisionlakeError:
        """A visionlake error for a librdkafka error (KafkaError or exception)."""
        ck = self._ck
        if isinstance(err, ck.KafkaException) and err.args:
            err = err.args[0]
        if not isinstance(err, ck.KafkaError):
            return BackendUnavailable(f"{what}: Kafka at {self.url} did not answer: {_message(err)}")
        code = err.code()
        if code in _unavailable_codes(ck) or err.retriable():
            return BackendUnavailable(f"{what}: Kafka at {self.url} is unavailable: {err.str()}")
        if code in (ck.KafkaError._UNKNOWN_TOPIC, ck.KafkaError.UNKNOWN_TOPIC_OR_PART):
            return UnknownTopic(f"{what}: unknown topic on {self.url}: {err.str()}")
        if code in (ck.KafkaError.MSG_SIZE_TOO_LARGE, getattr(ck.KafkaError, "_MSG_SIZE_TOO_LARGE", None)):
            return RecordTooLarge(f"{what}: record too large for {self.url}: {err.str()}")
        if code in _auth_codes(ck):
            return LogError(f"{what}: not allowed by {self.url} (check the security settings): {err.str()}")
        return LogError(f"{what} failed on {self.url}: {err.str()}")

    def _result(self, future: Any, what: str) -> Any:
        try:
            return future.result(timeout=self.request_timeout + 5)
        except self._ck.KafkaException as e:
            raise self._error(e, what) from None
        except TimeoutError:
            raise BackendUnavailable(
                f"{what}: Kafka at {self.url} did not answer within {self.request_timeout:g} s"
            ) from None

    def _metadata(self, full: str | None = None) -> Any:
        try:
            return self._admin.list_topics(topic=full, timeout=self.request_timeout)
        except self._ck.KafkaException as e:
            raise self._error(e, "reading cluster metadata") from None

    def _unknown(self, name: str) -> UnknownTopic:
        known = sorted(self._short(t) for t in self._metadata().topics if self._mine(t))
        return UnknownTopic(f"unknown topic {name!r} on {self.url}; topics: {', '.join(known) or 'none yet'}")

    def _partition_count(self, name: str) -> int:
        full = self._full(name)
        md = self._metadata(full).topics.get(full)
        if md is None or md.error is not None or not md.partitions:
            if (
                md is not None
                and md.error is not None
                and md.error.code()
                not in (
                    self._ck.KafkaError.UNKNOWN_TOPIC_OR_PART,
                    self._ck.KafkaError._UNKNOWN_TOPIC,
                    self._ck.KafkaError.LEADER_NOT_AVAILABLE,
                )
            ):
                raise self._error(md.error, f"reading topic {name!r}")
            raise self._unknown(name)
        return len(md.partitions)

    # -- topics ------------------------------------------------------------------------------

    def _topic_configs(self, cfg: TopicConfig) -> dict[str, str]:
        return {
            "retention.ms": str(-1 if cfg.retention_ms is None else int(cfg.retention_ms)),
            "retention.bytes": str(-1 if cfg.retention_bytes is None else int(cfg.retention_bytes)),
            "max.message.bytes": str(int(cfg.max_record_bytes) + RECORD_OVERHEAD),
        }

    def create_topic(self, name: str, config: TopicConfig | None = None, exist_ok: bool = True) -> None:
        check_topic_name(name)
        full = self._full(name)
        if len(full) > _TOPIC_MAX:
            raise InputError(f"topic name {full!r} (with the prefix) is longer than {_TOPIC_MAX} characters")
        cfg = config or self.default_config
        if cfg.partitions < 1:
            raise InputError(f"topic {name!r}: partitions must be >= 1, got {cfg.partitions}")
        if cfg.max_record_bytes < 1:
            raise InputError(f"topic {name!r}: max_record_bytes must be >= 1, got {cfg.max_record_bytes}")
        md = self._metadata(full).topics.get(full)
        if md is not None and md.error is None and md.partitions:
            if not exist_ok:
                raise InputError(f"topic {name!r} already exists on {self.url}")
            return
        new = self._ck.admin.NewTopic(
            full,
            num_partitions=cfg.partitions,
            replication_factor=self.replication_factor,
            config=self._topic_configs(cfg),
        )
        future = self._admin.create_topics(
            [new], request_timeout=self.request_timeout, operation_timeout=self.request_timeout
        )[full]
        try:
            future.result(timeout=self.request_timeout + 5)
        except self._ck.KafkaException as e:
            err = e.args[0] if e.args else None
            if err is not None and err.code() == self._ck.KafkaError.TOPIC_ALREADY_EXISTS:
                if not exist_ok:
                    raise InputError(f"topic {name!r} already exists on {self.url}") from None
                return
            if err is not None and err.code() in (
                self._ck.KafkaError.INVALID_TOPIC_EXCEPTION,
                self._ck.KafkaError.INVALID_PARTITIONS,
                self._ck.KafkaError.INVALID_REPLICATION_FACTOR,
                self._ck.KafkaError.INVALID_CONFIG,
                self._ck.KafkaError.POLICY_VIOLATION,
            ):
                raise InputError(f"Kafka at {self.url} refused topic {name!r}: {err.str()}") from None
            raise self._error(e, f"creating topic {name!r}") from None
        except TimeoutError:
            raise BackendUnavailable(f"creating topic {name!r}: no answer from {self.url}") from None
        deadline = time.monotonic() + self.request_timeout
        while time.monotonic() < deadline:  # metadata reaches every broker shortly after creation
            md = self._metadata(full).topics.get(full)
            if md is not None and md.error is None and len(md.partitions) == cfg.partitions:
                break
            time.sleep(0.05)
        log.info("created topic %s with %d partitions on %s", full, cfg.partitions, self.url)

    def _describe_configs(self, fulls: Sequence[str]) -> dict[str, dict[str, str | None]]:
        if not fulls:
            return {}
        res_type = self._ck.admin.ResourceType.TOPIC
        futures = self._admin.describe_configs(
            [self._ck.admin.ConfigResource(res_type, f) for f in fulls], request_timeout=self.request_timeout
        )
        out = {}
        for resource, future in futures.items():
            entries = self._result(future, f"reading the settings of topic {resource.name!r}")
            out[resource.name] = {k: e.value for k, e in entries.items()}
        return out

    @staticmethod
    def _parse_config(partitions: int, entries: dict[str, str | None]) -> TopicConfig:
        def num(key: str) -> int | None:
            try:
                v = int(entries[key])  # type: ignore[arg-type]
            except (KeyError, TypeError, ValueError):
                return None
            return v if v >= 0 else None

        max_message = num("max.message.bytes")
        if max_message is None:
            limit = DEFAULT_MAX_RECORD_BYTES
        elif max_message > RECORD_OVERHEAD:
            limit = max_message - RECORD_OVERHEAD
        else:
            limit = max(1, max_message // 2)
        return TopicConfig(partitions, num("retention.ms"), num("retention.bytes"), limit)

    def topic_config(self, name: str) -> TopicConfig:
        n = self._partition_count(name)
        full = self._full(name)
        return self._parse_config(n, self._describe_configs([full])[full])

    def alter_topic(
        self,
        name: str,
        *,
        retention_ms: int | None = -1,
        retention_bytes: int | None = -1,
        max_record_bytes: int | None = None,
    ) -> None:
        """Change retention or record limit of a topic (-1 leaves a retention setting as it is)."""
        self._partition_count(name)
        admin = self._ck.admin
        values = {}
        if retention_ms != -1:
            values["retention.ms"] = str(-1 if retention_ms is None else int(retention_ms))
        if retention_bytes != -1:
            values["retention.bytes"] = str(-1 if retention_bytes is None else int(retention_bytes))
        if max_record_bytes is not None:
            values["max.message.bytes"] = str(int(max_record_bytes) + RECORD_OVERHEAD)
        if not values:
            return
        entries = [
            admin.ConfigEntry(k, v, incremental_operation=admin.AlterConfigOpType.SET)
            for k, v in values.items()
        ]
        resource = admin.ConfigResource(
            admin.ResourceType.TOPIC, self._full(name), incremental_configs=entries
        )
        for future in self._admin.incremental_alter_configs(
            [resource], request_timeout=self.request_timeout
        ).values():
            self._result(future, f"changing the settings of topic {name!r}")

    def topics(self) -> list[TopicInfo]:
        md = self._metadata()
        fulls = sorted(t for t, m in md.topics.items() if self._mine(t) and m.error is None and m.partitions)
        configs = self._describe_configs(fulls)
        tps = [(f, p) for f in fulls for p in sorted(md.topics[f].partitions)]
        bounds = self._bounds(tps)
        out = []
        for f in fulls:
            parts = sorted(md.topics[f].partitions)
            out.append(
                TopicInfo(
                    self._short(f),
                    self._parse_config(len(parts), configs.get(f, {})),
                    [PartitionInfo(p, *bounds[(f, p)], 0) for p in parts],
                )
            )
        return out

    # -- offsets -----------------------------------------------------------------------------

    def _list_offsets(self, tps: Iterable[tuple[str, int]], spec: Any) -> dict[tuple[str, int], int]:
        tps = list(tps)
        if not tps:
            return {}
        ck = self._ck
        futures = self._admin.list_offsets(
            {ck.TopicPartition(t, p): spec for t, p in tps}, request_timeout=self.request_timeout
        )
        return {
            (tp.topic, tp.partition): self._result(f, f"listing offsets of {tp.topic}/{tp.partition}").offset
            for tp, f in futures.items()
        }

    def _bounds(self, tps: Sequence[tuple[str, int]]) -> dict[tuple[str, int], tuple[int, int]]:
        """(start, end) offsets of (full topic, partition) pairs; see "Offsets" in the module docstring."""
        spec = self._ck.admin.OffsetSpec
        lo = self._list_offsets(tps, spec.earliest())
        hi = self._list_offsets(tps, spec.latest())
        if self.verify_offsets:
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
        ck = self._ck
        out = dict(guesses)
        with self._probe_lock:
            c = self._probe_consumer()
            c.assign([ck.TopicPartition(t, p, o) for (t, p), o in guesses.items()])
            pending = set(guesses)
            deadline = time.monotonic() + min(self.request_timeout, 10.0)
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
        ck = self._ck
        with self._probe_lock:
            c = self._probe_consumer()
            c.assign([ck.TopicPartition(topic, partition, offset)])
            deadline = time.monotonic() + min(self.request_timeout, 10.0)
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
        raise BackendUnavailable(f"reading {topic}/{partition}@{offset} from {self.url} timed out")

    def _offsets_for_time(
        self, tps: Sequence[tuple[str, int]], timestamp_ms: int
    ) -> dict[tuple[str, int], int]:
        bounds = self._bounds(tps)
        answers = self._list_offsets(tps, self._ck.admin.OffsetSpec.for_timestamp(int(timestamp_ms)))
        out = {}
        for tp in tps:
            start, end = bounds[tp]
            o = answers[tp]
            if start >= end or o < 0 or o >= end:
                out[tp] = end
                continue
            if not self.verify_offsets:
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

    def offsets_for_time(self, topic: str, timestamp_ms: int) -> dict[int, int]:
        n = self._partition_count(topic)
        full = self._full(topic)
        found = self._offsets_for_time([(full, p) for p in range(n)], timestamp_ms)
        return {p: o for (_, p), o in sorted(found.items())}

    # -- groups ------------------------------------------------------------------------------

    def _committed(
        self, full_group: str, tps: Sequence[tuple[str, int]] | None = None
    ) -> dict[tuple[str, int], int]:
        ck = self._ck
        request = ck.ConsumerGroupTopicPartitions(
            full_group, None if tps is None else [ck.TopicPartition(t, p) for t, p in tps]
        )
        futures = self._admin.list_consumer_group_offsets([request], request_timeout=self.request_timeout)
        try:
            res = futures[full_group].result(timeout=self.request_timeout + 5)
        except ck.KafkaException as e:
            err = e.args[0] if e.args else None
            if err is not None and err.code() in (
                ck.KafkaError.GROUP_ID_NOT_FOUND,
                ck.KafkaError._UNKNOWN_GROUP,
            ):
                return {}
            raise self._error(e, f"reading the offsets of group {full_group!r}") from None
        except TimeoutError:
            raise BackendUnavailable(f"reading group offsets: no answer from {self.url}") from None
        return {
            (tp.topic, tp.partition): tp.offset
            for tp in res.topic_partitions or []
            if tp.offset >= 0 and tp.error is None
        }

    def group_offsets(self, group: str, topic: str) -> dict[int, int]:
        n = self._partition_count(topic)
        full = self._full(topic)
        found = self._committed(self._full(group), [(full, p) for p in range(n)])
        return {p: o for (_, p), o in sorted(found.items())}

    def commit_group_offsets(self, group: str, topic: str, offsets: dict[int, int]) -> None:
        """Set a group's committed offsets (kafka-consumer-groups --reset-offsets); the group must be idle."""
        n = self._partition_count(topic)
        ck = self._ck
        for p, o in offsets.items():
            if not 0 <= p < n:
                raise InputError(f"topic {topic!r} has partitions 0-{n - 1}, not {p}")
            if o < 0:
                raise InputError(f"offset {o} for {topic}/{p} is negative")
        if not offsets:
            return
        full_group = self._full(group)
        request = ck.ConsumerGroupTopicPartitions(
            full_group, [ck.TopicPartition(self._full(topic), p, o) for p, o in sorted(offsets.items())]
        )
        futures = self._admin.alter_consumer_group_offsets([request], request_timeout=self.request_timeout)
        try:
            res = futures[full_group].result(timeout=self.request_timeout + 5)
        except ck.KafkaException as e:
            err = e.args[0] if e.args else None
            if err is not None and err.code() in (
                ck.KafkaError.UNKNOWN_MEMBER_ID,
                ck.KafkaError.REBALANCE_IN_PROGRESS,
                ck.KafkaError.ILLEGAL_GENERATION,
            ):
                raise LogError(
                    f"group {group!r} on {self.url} has active members: stop them before setting its offsets"
                ) from None
            raise self._error(e, f"setting the offsets of group {group!r}") from None
        except TimeoutError:
            raise BackendUnavailable(f"setting group offsets: no answer from {self.url}") from None
        failed = [tp for tp in res.topic_partitions or [] if tp.error is not None]
        if failed:
            raise self._error(failed[0].error, f"setting the offsets of group {group!r}")

    def groups(self) -> list[GroupInfo]:
        ck = self._ck
        local = [c for c in list(self._consumers) if c.group is not None and not c._closed]
        try:
            listed = self._admin.list_consumer_groups(request_timeout=self.request_timeout).result(
                timeout=self.request_timeout + 5
            )
        except ck.KafkaException as e:
            raise self._error(e, "listing consumer groups") from None
        except TimeoutError:
            raise BackendUnavailable(f"listing consumer groups: no answer from {self.url}") from None
        names = {
            g.group_id
            for g in listed.valid
            if self._mine(g.group_id) and "visionlake-probe-" not in g.group_id
        }
        names.update(c._full_group for c in local)
        if not names:
            return []
        members: dict[str, dict[str, list[tuple[str, int]]]] = {g: {} for g in names}
        futures = self._admin.describe_consumer_groups(sorted(names), request_timeout=self.request_timeout)
        for g, future in futures.items():
            try:
                desc = future.result(timeout=self.request_timeout + 5)
            except ck.KafkaException as e:
                log.debug("describing group %s failed: %s", g, _message(e))
                continue
            except TimeoutError:
                raise BackendUnavailable(f"describing group {g!r}: no answer from {self.url}") from None
            for m in desc.members or []:
                tps = m.assignment.topic_partitions if m.assignment else []
                members[g][m.member_id] = [(tp.topic, tp.partition) for tp in tps]
        topics: dict[str, set[str]] = {g: set() for g in names}
        for c in local:
            members[c._full_group][c.member_id] = [(c.log._full(t), p) for t, p in c.assignment()]
            topics[c._full_group].update(c._full_topics)
        committed = {g: self._committed(g) for g in sorted(names)}
        for g in names:
            topics[g].update(t for t, _ in committed[g])
            topics[g].update(t for tps in members[g].values() for t, _ in tps)
        md = self._metadata()
        parts = {
            t: sorted(md.topics[t].partitions)
            for ts in topics.values()
            for t in ts
            if t in md.topics and md.topics[t].error is None and self._mine(t)
        }
        bounds = self._bounds([(t, p) for t, ps in sorted(parts.items()) for p in ps])
        out = []
        for g in sorted(names):
            owner = {tp: m for m, tps in members[g].items() for tp in tps}
            gparts = [
                GroupPartition(
                    self._short(t), p, committed[g].get((t, p)), bounds[(t, p)][1], owner.get((t, p))
                )
                for t in sorted(topics[g])
                if t in parts
                for p in parts[t]
            ]
            out.append(GroupInfo(self._short(g), sorted(members[g]), gparts))
        return out

    # -- clients and retention ---------------------------------------------------------------

    def producer(self) -> KafkaProducer:
        return KafkaProducer(self)

    def consumer(
        self,
        topics: Sequence[str],
        group: str | None = None,
        offset_reset: OffsetReset = "earliest",
        partitions: Iterable[int] | None = None,
    ) -> KafkaConsumer:
        if offset_reset not in ("earliest", "latest"):
            raise InputError(f"offset reset must be 'earliest' or 'latest', got {offset_reset!r}")
        c = KafkaConsumer(self, list(topics), group, offset_reset, partitions)
        self._consumers.add(c)
        return c

    def enforce_retention(self) -> int:
        """Kafka brokers apply retention.ms / retention.bytes themselves (log.retention.check.interval.ms,
        whole segments at a time); nothing to do here, so nothing is removed by this call."""
        log.info("Kafka at %s applies topic retention on the brokers; nothing to do", self.url)
        return 0


class KafkaProducer(Producer):
    """An idempotent librdkafka producer; `flush` waits for every acknowledgement."""

    def __init__(self, log_: KafkaLog) -> None:
        self.log = log_
        self._p = log_._client(
            log_._ck.Producer,
            "producer",
            {"linger.ms": 5, "message.max.bytes": MAX_REQUEST_BYTES},
            {"enable.idempotence": True, "message.timeout.ms": int(log_.delivery_timeout * 1000)},
        )
        self._topics: dict[str, tuple[int, int]] = {}  # name -> (partitions, value limit)
        self._results: list[Any] = []  # RecordMetadata | KafkaError | None, in send order
        self._rr = 0
        self._lock = threading.Lock()

    def _topic(self, name: str) -> tuple[int, int]:
        info = self._topics.get(name)
        if info is None:
            self.log.ensure_topic(name)  # created with the log's defaults, as the embedded log does
            cfg = self.log.topic_config(name)
            info = self._topics[name] = (cfg.partitions, cfg.max_record_bytes)
        return info

    def _delivered(self, idx: int, topic: str, err: Any, msg: Any) -> None:
        self._results[idx] = err if err is not None else RecordMetadata(topic, msg.partition(), msg.offset())

    def send(
        self,
        topic: str,
        value: bytes,
        key: bytes | None = None,
        headers: Headers | None = None,
        timestamp_ms: int | None = None,
        partition: int | None = None,
    ) -> None:
        nparts, limit = self._topic(topic)
        if len(value) > limit:
            raise RecordTooLarge(
                f"record of {len(value)} bytes for topic {topic!r} exceeds its limit of {limit} bytes"
            )
        if partition is None:
            partition = partition_for(key, nparts, self._rr)
            self._rr += 1
        elif not 0 <= partition < nparts:
            raise InputError(f"topic {topic!r} has partitions 0-{nparts - 1}, not {partition}")
        with self._lock:
            idx = len(self._results)
            self._results.append(None)
            callback = functools.partial(self._delivered, idx, topic)
            waited = time.monotonic()
            while True:
                try:
                    self._p.produce(
                        self.log._full(topic),
                        value=value,
                        key=key,
                        partition=partition,
                        headers=list(headers) if headers else None,
                        timestamp=int(timestamp_ms) if timestamp_ms is not None else 0,
                        on_delivery=callback,
                    )
                    break
                except BufferError:  # librdkafka's queue is full (brokers slow or down): wait for room
                    self._p.poll(0.1)
                    if time.monotonic() - waited > self.log.delivery_timeout:
                        self._results.pop()
                        raise BackendUnavailable(
                            f"Kafka at {self.log.url} accepted nothing for {self.log.delivery_timeout:g} s"
                        ) from None
                except self.log._ck.KafkaException as e:
                    self._results.pop()
                    raise self.log._error(e, f"sending to topic {topic!r}") from None
            self._p.poll(0)

    def flush(self, timeout: float | None = None) -> list[RecordMetadata]:
        """Wait for every queued record (default: up to the log's delivery_timeout); raises if any failed.

        Records not acknowledged in time stay queued (librdkafka keeps retrying them until
        delivery_timeout), so calling flush again picks up where this one stopped.
        """
        with self._lock:
            wait = self.log.delivery_timeout if timeout is None else max(0.0, timeout)
            deadline = time.monotonic() + wait
            remaining = self._p.flush(min(wait, 5.0))
            while remaining and time.monotonic() < deadline:
                log.warning(
                    "waiting for Kafka at %s to acknowledge %d records (retrying)", self.log.url, remaining
                )
                remaining = self._p.flush(min(5.0, max(0.0, deadline - time.monotonic())))
            if remaining:
                raise BackendUnavailable(
                    f"Kafka at {self.log.url} acknowledged {len(self._results) - remaining} of "
                    f"{len(self._results)} records within {wait:g} s; the rest stay queued and are retried"
                )
            results, self._results = self._results, []
        failed = [r for r in results if not isinstance(r, RecordMetadata)]
        if failed:
            first = failed[0]
            err = self.log._error(first, f"{len(failed)} of {len(results)} records were not written")
            raise err
        return results

    def close(self) -> None:
        self.flush()


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
            ends = log_._bounds([(log_._full(t), p) for t, n in self._nparts.items() for p in range(n)])
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
                if not 0 <= p < n:
                    raise InputError(f"topic {t!r} has partitions 0-{n - 1}, not {p}")
                tps.append((self.log._full(t), p))
        bounds = self.log._bounds(tps)
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
                "assign", "reading committed offsets of group %s failed: %s", self.group, _message(e)
            )
        if committed:
            parts = committed
            fresh = [tp for tp in parts if tp.offset < 0 and tp.error is None]
            try:
                bounds = self.log._bounds([(tp.topic, tp.partition) for tp in fresh]) if fresh else {}
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
            if err.fatal() or err.code() in _auth_codes(self._ck):
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
                    err = e.args[0] if e.args else None
                    code = err.code() if err is not None else None
                    if code in _rebalance_codes(ck):
                        log.warning(
                            "group %s rebalanced before the commit of %s; their new owner resumes from the "
                            "last commit",
                            self.group,
                            sorted(done),
                        )
                        return {}
                    retriable = err is not None and (err.retriable() or code in _unavailable_codes(ck))
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
        start, end = self.log._bounds([full])[full]
        with self._lock:
            self._seek((topic, partition), min(max(offset, start), end))

    def seek_to(self, where: OffsetReset) -> None:
        if where not in ("earliest", "latest"):
            raise InputError(f"seek_to takes 'earliest' or 'latest', got {where!r}")
        tps = sorted(self._assigned)
        bounds = self.log._bounds([(self.log._full(t), p) for t, p in tps])
        with self._lock:
            for t, p in tps:
                start, end = bounds[(self.log._full(t), p)]
                self._seek((t, p), start if where == "earliest" else end)

    def seek_to_time(self, timestamp_ms: int) -> None:
        tps = sorted(self._assigned)
        found = self.log._offsets_for_time([(self.log._full(t), p) for t, p in tps], timestamp_ms)
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
            start, end = self.log._bounds([(full.topic, partition)])[(full.topic, partition)]
            return start if self.offset_reset == "earliest" else self._start_ends.get(tp, end)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with self._lock:
            try:
                self._c.close()  # leaves the group: its partitions move to the other members now
            except (RuntimeError, self._ck.KafkaException) as e:
                log.debug("closing consumer: %s", _message(e))
            self._buffer.clear()
        self.log._consumers.discard(self)
        if self.group is not None:
            log.info("member left group %s", self.group)


# -- error code sets ------------------------------------------------------------------------------


def _message(e: object) -> str:
    if hasattr(e, "args") and getattr(e, "args", None) and hasattr(e.args[0], "str"):  # type: ignore[attr-defined]
        return e.args[0].str()  # type: ignore[attr-defined]
    if hasattr(e, "str"):
        return e.str()  # type: ignore[attr-defined]
    return str(e)


@functools.cache
def _unavailable_codes(ck: Any) -> frozenset:
    e = ck.KafkaError
    return frozenset(
        getattr(e, n)
        for n in (
            "_TRANSPORT",
            "_ALL_BROKERS_DOWN",
            "_TIMED_OUT",
            "_TIMED_OUT_QUEUE",
            "_MSG_TIMED_OUT",
            "_RESOLVE",
            "_WAIT_COORD",
            "_NOENT",
            "REQUEST_TIMED_OUT",
            "NETWORK_EXCEPTION",
            "NOT_COORDINATOR",
            "COORDINATOR_NOT_AVAILABLE",
            "COORDINATOR_LOAD_IN_PROGRESS",
            "LEADER_NOT_AVAILABLE",
            "NOT_LEADER_FOR_PARTITION",
            "BROKER_NOT_AVAILABLE",
        )
        if hasattr(e, n)
    )


@functools.cache
def _rebalance_codes(ck: Any) -> frozenset:
    e = ck.KafkaError
    names = (
        "REBALANCE_IN_PROGRESS",
        "ILLEGAL_GENERATION",
        "UNKNOWN_MEMBER_ID",
        "_ASSIGNMENT_LOST",
        "FENCED_INSTANCE_ID",
    )
    return frozenset(getattr(e, n) for n in names if hasattr(e, n))


@functools.cache
def _auth_codes(ck: Any) -> frozenset:
    e = ck.KafkaError
    names = (
        "_AUTHENTICATION",
        "_SSL",
        "SASL_AUTHENTICATION_FAILED",
        "TOPIC_AUTHORIZATION_FAILED",
        "GROUP_AUTHORIZATION_FAILED",
        "CLUSTER_AUTHORIZATION_FAILED",
    )
    return frozenset(getattr(e, n) for n in names if hasattr(e, n))
