"""`KafkaLog`: the connection to the cluster, its topics, consumer groups and retention.

* Unreachable cluster: creating a `KafkaLog` fails after ``connect_timeout`` seconds with
  BackendUnavailable naming the URL.
* Record limit: ``TopicConfig.max_record_bytes`` limits the value. The topic's ``max.message.bytes``
  (which Kafka applies to a whole record batch) is set to that limit plus `RECORD_OVERHEAD` for the key,
  headers and batch framing, and read back the same way; a topic without the setting gets 1 MiB.
  librdkafka batches up to ``batch.size`` (1 MB) per partition, so a topic with a much smaller
  ``max.message.bytes`` needs ``producer.batch.size`` lowered to match.
* Retention: ``retention.ms`` / ``retention.bytes`` topic configs (None is -1, keep for ever). Brokers
  apply them on their own schedule, whole segments at a time, so `enforce_retention` does nothing and
  returns 0. tansu 0.6 (the broker the test suite runs) applies no retention at all.
* Topic changes: `alter_topic` uses IncrementalAlterConfigs, and CreatePartitions to add partitions
  (tansu 0.6 has no CreatePartitions: LogError "not supported", and nothing is changed).
* Sizes: Kafka reports partition sizes only through DescribeLogDirs, which the Python client lacks,
  so `PartitionInfo.bytes` is 0.
* Lag: `groups()` lists the groups of the namespace (plus those of this process's own consumers),
  their members and assignments (DescribeGroups), committed offsets (OffsetFetch) and end offsets;
  lag is end - committed. tansu 0.6 lists only groups that committed something and describes no
  members, so there only this process's own members show up.
"""

from __future__ import annotations

import logging
import time
import weakref
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from ...errors import BackendUnavailable, ConfigError, InputError, LogError, UnknownTopic, VisionlakeError
from ...redact import redact_url
from ..base import (
    DEFAULT_LEASE_S,
    DEFAULT_MAX_DELIVERIES,
    DEFAULT_MAX_RECORD_BYTES,
    TOPIC_NAME,
    UNCHANGED,
    FrameLog,
    GroupInfo,
    GroupPartition,
    OffsetReset,
    PartitionInfo,
    ShareConsumer,
    TopicChanges,
    TopicConfig,
    TopicInfo,
    Unchanged,
    check_offset_reset,
    check_topic_name,
    topic_changes,
)
from .consumer import KafkaConsumer
from .errors import check_partition, first_error, import_kafka, message, to_error
from .offsets import KafkaOffsets
from .options import RECORD_OVERHEAD, common_settings, parse_url, split_options
from .producer import KafkaProducer

log = logging.getLogger("visionlake.log.kafka")

_TOPIC_MAX = 249


class KafkaLog(FrameLog):
    """A frame log on a Kafka cluster; see the package docstring for the options and semantics."""

    def __init__(self, url: str, *, default_config: TopicConfig | None = None, **options: object) -> None:
        self._ck = import_kafka()
        servers, url_options = parse_url(url)
        self.url = redact_url(f"kafka://{servers}")  # what errors and logs show; never credentials
        mine, common, targeted = split_options({**url_options, **options})
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
        self._common = common_settings(servers, common)
        self._targeted = targeted
        self._last_error: Any = None
        self._quiet = False
        self._warned: dict[str, float] = {}
        self._consumers: weakref.WeakSet[KafkaConsumer] = weakref.WeakSet()
        self._offsets = KafkaOffsets(self)
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
            raise ConfigError(f"invalid Kafka settings for {self.url}: {message(e)}") from None

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
            detail = message(err) + (f"; last error: {last.str()}" if last is not None else "")
            raise BackendUnavailable(
                f"cannot reach the Kafka cluster at {self.url} within {self.connect_timeout:g} s: {detail}"
            ) from None
        finally:
            self._quiet = False

    def close(self) -> None:
        self._offsets.close()

    # -- names and errors --------------------------------------------------------------------

    def _full(self, name: str) -> str:
        return self.topic_prefix + name

    def _short(self, full: str) -> str:
        return full[len(self.topic_prefix) :]

    def _mine(self, full: str) -> bool:
        return full.startswith(self.topic_prefix) and not full.startswith("__")

    def _error(self, err: Any, what: str) -> VisionlakeError:
        """A visionlake error for a librdkafka error (KafkaError or exception)."""
        return to_error(self._ck, self.url, err, what)

    def _answer(
        self,
        future: Any,
        what: str,
        no_answer: str | None = None,
        expected: Callable[[Any], bool] | None = None,
    ) -> tuple[Any, Any]:
        """(result, None) of an admin call's future, or (None, the error) for a KafkaError that
        `expected` accepts. Other errors raise as `_error` says; no answer raises BackendUnavailable."""
        try:
            return future.result(timeout=self.request_timeout + 5), None
        except self._ck.KafkaException as e:
            err = first_error(e)
            if err is not None and expected is not None and expected(err):
                return None, err
            raise self._error(e, what) from None
        except TimeoutError:
            raise BackendUnavailable(
                no_answer or f"{what}: Kafka at {self.url} did not answer within {self.request_timeout:g} s"
            ) from None

    def _result(self, future: Any, what: str) -> Any:
        return self._answer(future, what)[0]

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
            "retention.ms": _retention(cfg.retention_ms),
            "retention.bytes": _retention(cfg.retention_bytes),
            "max.message.bytes": _max_message(cfg.max_record_bytes),
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
        ck = self._ck
        new = ck.admin.NewTopic(
            full,
            num_partitions=cfg.partitions,
            replication_factor=self.replication_factor,
            config=self._topic_configs(cfg),
        )
        future = self._admin.create_topics(
            [new], request_timeout=self.request_timeout, operation_timeout=self.request_timeout
        )[full]

        def refused(err: Any) -> bool:
            return err.code() == ck.KafkaError.TOPIC_ALREADY_EXISTS or err.code() in (
                ck.KafkaError.TOPIC_EXCEPTION,
                ck.KafkaError.INVALID_PARTITIONS,
                ck.KafkaError.INVALID_REPLICATION_FACTOR,
                ck.KafkaError.INVALID_CONFIG,
                ck.KafkaError.POLICY_VIOLATION,
            )

        _, err = self._answer(
            future, f"creating topic {name!r}", f"creating topic {name!r}: no answer from {self.url}", refused
        )
        if err is not None:
            if err.code() != ck.KafkaError.TOPIC_ALREADY_EXISTS:
                raise InputError(f"Kafka at {self.url} refused topic {name!r}: {err.str()}")
            if not exist_ok:
                raise InputError(f"topic {name!r} already exists on {self.url}")
            return
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
        partitions: int | Unchanged = UNCHANGED,
        retention_ms: int | None | Unchanged = UNCHANGED,
        retention_bytes: int | None | Unchanged = UNCHANGED,
        max_record_bytes: int | Unchanged = UNCHANGED,
    ) -> TopicChanges:
        """Change the given settings (IncrementalAlterConfigs, CreatePartitions); see FrameLog.alter_topic.

        Partitions are added first: it is the step brokers refuse most, and then nothing has changed.
        """
        changes = topic_changes(
            name,
            self.topic_config(name),
            partitions=partitions,
            retention_ms=retention_ms,
            retention_bytes=retention_bytes,
            max_record_bytes=max_record_bytes,
        )
        if "partitions" in changes:
            self._add_partitions(name, *changes["partitions"])  # type: ignore[arg-type]
        values = {}
        if "retention_ms" in changes:
            values["retention.ms"] = _retention(changes["retention_ms"][1])
        if "retention_bytes" in changes:
            values["retention.bytes"] = _retention(changes["retention_bytes"][1])
        if "max_record_bytes" in changes:
            values["max.message.bytes"] = _max_message(changes["max_record_bytes"][1])  # type: ignore[arg-type]
        if values:
            admin = self._ck.admin
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
        if changes:
            log.info("topic %s on %s: changed %s", self._full(name), self.url, changes)
        return changes

    def _add_partitions(self, name: str, old: int, new: int) -> None:
        full = self._full(name)
        future = self._admin.create_partitions(
            [self._ck.admin.NewPartitions(full, new)],
            request_timeout=self.request_timeout,
            operation_timeout=self.request_timeout,
        )[full]
        self._result(future, f"adding partitions to topic {name!r} ({old} -> {new})")
        deadline = time.monotonic() + self.request_timeout
        while time.monotonic() < deadline and self._partition_count(name) < new:
            time.sleep(0.05)  # metadata reaches every broker shortly after
        log.warning(
            "topic %s on %s now has %d partitions instead of %d: keyed records (cameras) map to other"
            " partitions from now on, so a key's new records may be read before its older ones",
            full,
            self.url,
            new,
            old,
        )

    def topics(self) -> list[TopicInfo]:
        md = self._metadata()
        fulls = sorted(t for t, m in md.topics.items() if self._mine(t) and m.error is None and m.partitions)
        configs = self._describe_configs(fulls)
        tps = [(f, p) for f in fulls for p in sorted(md.topics[f].partitions)]
        bounds = self._offsets.bounds(tps)
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

    def offsets_for_time(self, topic: str, timestamp_ms: int) -> dict[int, int]:
        n = self._partition_count(topic)
        full = self._full(topic)
        found = self._offsets.for_time([(full, p) for p in range(n)], timestamp_ms)
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
        res, missing = self._answer(
            futures[full_group],
            f"reading the offsets of group {full_group!r}",
            f"reading group offsets: no answer from {self.url}",
            lambda err: err.code() in (ck.KafkaError.GROUP_ID_NOT_FOUND, ck.KafkaError._UNKNOWN_GROUP),
        )
        if missing is not None:
            return {}
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
            check_partition(topic, p, n)
            if o < 0:
                raise InputError(f"offset {o} for {topic}/{p} is negative")
        if not offsets:
            return
        full_group = self._full(group)
        request = ck.ConsumerGroupTopicPartitions(
            full_group, [ck.TopicPartition(self._full(topic), p, o) for p, o in sorted(offsets.items())]
        )
        futures = self._admin.alter_consumer_group_offsets([request], request_timeout=self.request_timeout)

        def active(err: Any) -> bool:  # the group has members
            return err.code() in (
                ck.KafkaError.UNKNOWN_MEMBER_ID,
                ck.KafkaError.REBALANCE_IN_PROGRESS,
                ck.KafkaError.ILLEGAL_GENERATION,
            )

        res, err = self._answer(
            futures[full_group],
            f"setting the offsets of group {group!r}",
            f"setting group offsets: no answer from {self.url}",
            active,
        )
        if err is not None:
            raise LogError(
                f"group {group!r} on {self.url} has active members: stop them before setting its offsets"
            )
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
                log.debug("describing group %s failed: %s", g, message(e))
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
        bounds = self._offsets.bounds([(t, p) for t, ps in sorted(parts.items()) for p in ps])
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
        check_offset_reset(offset_reset)
        c = KafkaConsumer(self, list(topics), group, offset_reset, partitions)
        self._consumers.add(c)
        return c

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
        """A share-group member; Unsupported, with the alternative, on a broker without share groups.

        Where a share group starts is the broker's `share.auto.offset.reset` (latest unless set),
        whatever `start_from` says.
        """
        from .share import KafkaShareConsumer

        check_offset_reset(offset_reset)
        return KafkaShareConsumer(self, list(topics), group, lease_s=lease_s, max_deliveries=max_deliveries)

    def enforce_retention(self) -> int:
        """Kafka brokers apply retention.ms / retention.bytes themselves (log.retention.check.interval.ms,
        whole segments at a time); nothing to do here, so nothing is removed by this call."""
        log.info("Kafka at %s applies topic retention on the brokers; nothing to do", self.url)
        return 0


def _retention(value: int | None) -> str:
    """A retention.ms / retention.bytes setting: None (keep for ever) is -1."""
    return str(-1 if value is None else int(value))


def _max_message(max_record_bytes: int) -> str:
    """The max.message.bytes setting of a topic whose values may have `max_record_bytes`."""
    return str(int(max_record_bytes) + RECORD_OVERHEAD)
