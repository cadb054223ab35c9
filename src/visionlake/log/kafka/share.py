"""`KafkaShareConsumer`: a member of a Kafka share group (KIP-932), where the brokers have them.

Share groups are Apache Kafka 4's queues: every member reads every partition, the broker leases each
record to one member (`group.share.record.lock.duration.ms`, 30 s by default), counts its deliveries
and gives it up after `group.share.delivery.count.limit` (5). librdkafka's share consumer (a preview
in confluent-kafka 2.15 and later) speaks the protocol; against a broker without it, it polls nothing
for ever and reports no error. So before joining, `share_group_support` asks the broker which
requests it serves (ApiVersions, the first request every Kafka client sends) and the log refuses
`--shared` with what to do instead when ShareGroupHeartbeat is not among them.
"""

from __future__ import annotations

import logging
import socket
import struct
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ...errors import BackendUnavailable, Unsupported
from ...types import Record
from ..base import ShareConsumer

if TYPE_CHECKING:
    from .log import KafkaLog

log = logging.getLogger("visionlake.log.kafka")

API_VERSIONS = 18
SHARE_GROUP_HEARTBEAT = 76
SHARE_FETCH = 78
SHARE_ACKNOWLEDGE = 79


def broker_api_keys(server: str, timeout: float = 5.0) -> set[int]:
    """The request types (API keys) the broker at host:port serves, from an ApiVersions v0 request.

    Version 0 of ApiVersions is answered by every broker since Kafka 0.10, whatever it supports.
    Plaintext only: a TLS or SASL listener needs its handshake first.
    """
    host, _, port = server.rpartition(":")
    client = b"visionlake-probe"
    body = struct.pack(">hhih", API_VERSIONS, 0, 1, len(client)) + client
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout) as s:
            s.sendall(struct.pack(">i", len(body)) + body)
            size = struct.unpack(">i", _read(s, 4))[0]
            data = _read(s, size)
    except (OSError, ValueError, struct.error) as e:
        raise BackendUnavailable(f"cannot ask the Kafka broker at {server} what it supports: {e}") from None
    _corr, error, n = struct.unpack(">ihi", data[:10])
    if error:
        raise BackendUnavailable(f"the Kafka broker at {server} refused ApiVersions (error code {error})")
    return {struct.unpack(">h", data[10 + 6 * i : 12 + 6 * i])[0] for i in range(n)}


def _read(s: socket.socket, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = s.recv(n - len(out))
        if not chunk:
            raise OSError("the broker closed the connection")
        out += chunk
    return out


def share_group_support(settings: dict[str, object], url: str) -> None:
    """Raise Unsupported, saying what to do instead, unless the brokers serve share groups."""
    protocol = str(settings.get("security.protocol", "plaintext")).lower()
    if protocol != "plaintext":
        log.warning("Kafka %s: cannot check share-group support over %s; trying to join", url, protocol)
        return
    server = str(settings["bootstrap.servers"]).split(",")[0].strip()
    keys = broker_api_keys(server)
    missing = {SHARE_GROUP_HEARTBEAT, SHARE_FETCH, SHARE_ACKNOWLEDGE} - keys
    if missing:
        raise Unsupported(
            f"the Kafka broker at {url} has no share groups (KIP-932: Apache Kafka 4.1 or later, with "
            f"share groups enabled; it lacks API key(s) {sorted(missing)}). To run several workers on "
            "one camera on this broker, spread the camera over partitions when ingesting "
            "(ingest ... --spread N) and run workers without --shared"
        )


class KafkaShareConsumer(ShareConsumer):
    """librdkafka's share consumer in explicit acknowledgement mode.

    The lease and the delivery limit are the broker's settings; `lease_s` and `max_deliveries` only
    tell the worker what they are.
    """

    def __init__(
        self, log_: KafkaLog, topics: list[str], group: str, *, lease_s: float, max_deliveries: int
    ) -> None:
        share_group_support(log_._common, log_.url)
        ck = log_._ck
        self.log = log_
        self.group = group
        self.lease_s = lease_s
        self.max_deliveries = max_deliveries
        self._ck = ck
        self._nparts = {}
        for t in topics:
            log_.ensure_topic(t)
            self._nparts[t] = log_._partition_count(t)
        self._held: dict[tuple[str, int, int], Any] = {}
        self._closed = False
        self._c = log_._client(
            ck.ShareConsumer,
            "consumer",
            {},
            {"group.id": log_._full(group), "share.acknowledgement.mode": "explicit"},
        )
        self._c.subscribe([log_._full(t) for t in topics])

    def poll(self, max_records: int = 100, timeout: float = 1.0) -> list[Record]:
        """Records of one broker batch (librdkafka hands out what it fetched; `max_records` is a hint)."""
        if self._closed:
            return []
        deadline = time.monotonic() + timeout
        out: list[Record] = []
        while not out and time.monotonic() < deadline:
            try:
                batch = self._c.poll(max(0.0, deadline - time.monotonic()))
            except self._ck.KafkaException as e:
                raise self.log._error(e, f"reading share group {self.group!r}") from None
            for m in batch:
                if m.error() is not None:
                    self.log._warn(f"share-{m.error().code()}", "Kafka %s: %s", self.log.url, m.error().str())
                    continue
                ts_type, ts = m.timestamp()
                r = Record(
                    self.log._short(m.topic()),
                    m.partition(),
                    m.offset(),
                    ts if ts_type != self._ck.TIMESTAMP_NOT_AVAILABLE else 0,
                    m.key(),
                    m.value() or b"",
                    [(k, v if v is not None else b"") for k, v in (m.headers() or [])],
                    m.delivery_count() or 1,
                )
                self._held[(r.topic, r.partition, r.offset)] = m
                out.append(r)
        return out

    def _settle(self, records: Iterable[Record], how: Any) -> int:
        n = 0
        for r in records:
            m = self._held.pop((r.topic, r.partition, r.offset), None)
            if m is not None:
                self._c.acknowledge(m, how)
                n += 1
        if n:
            try:
                self._c.commit_sync(self.log.request_timeout)
            except self._ck.KafkaException as e:
                raise self.log._error(e, f"acknowledging records of share group {self.group!r}") from None
        return n

    def acknowledge(self, records: Iterable[Record]) -> int:
        return self._settle(records, self._ck.AcknowledgeType.ACCEPT)

    def release(self, records: Iterable[Record]) -> int:
        return self._settle(records, self._ck.AcknowledgeType.RELEASE)

    def assignment(self) -> list[tuple[str, int]]:
        return sorted((t, p) for t, n in self._nparts.items() for p in range(n))

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            held = list(self._held.values())
            for m in held:
                self._c.acknowledge(m, self._ck.AcknowledgeType.RELEASE)
            self._held.clear()
            self._c.close()
        except self._ck.KafkaException as e:  # the broker's leases run out by themselves
            log.warning("share group %s: could not leave cleanly: %s", self.group, e)
