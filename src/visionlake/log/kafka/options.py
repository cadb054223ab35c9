"""The Kafka log's URL and options, and the librdkafka settings they make.

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
"""

from __future__ import annotations

import logging
import os
import socket
from urllib.parse import parse_qsl

from ...errors import ConfigError
from ...redact import redact_url

HOST = socket.gethostname()
#: Headroom between a topic's value limit and its max.message.bytes: key, headers and batch framing.
RECORD_OVERHEAD = 16 * 1024
#: Largest produce request / single record the producer accepts; the topic's limit is what applies.
MAX_REQUEST_BYTES = 64 * 1024 * 1024 + RECORD_OVERHEAD

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
CLIENTS = ("producer", "consumer", "admin")


def parse_url(url: str) -> tuple[str, dict[str, str]]:
    """``kafka://h1:9092,h2:9092?k=v`` -> ("h1:9092,h2:9092", {"k": "v"}); port 9092 by default.

    ``user:password@`` is refused: Kafka clients take no credentials from broker addresses, and
    librdkafka would echo the password in every connection error.
    """
    if not url.startswith("kafka://"):
        raise ConfigError(f"log URL {redact_url(url.split('?')[0])!r} is not a kafka:// URL")
    hosts, _, query = url.removeprefix("kafka://").partition("?")
    shown = redact_url(f"kafka://{hosts}")
    if "@" in hosts:
        raise ConfigError(
            f"log URL {shown!r}: Kafka takes no user or password in the URL; set security.protocol, "
            "sasl.mechanism, sasl.username and sasl.password under [log_options] in the lake's "
            "visionlake.toml instead"
        )
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


def split_options(
    options: dict[str, object],
) -> tuple[dict[str, object], dict[str, object], dict[str, dict[str, object]]]:
    """(visionlake options, librdkafka settings for every client, settings for one client by client)."""
    mine: dict[str, object] = {}
    common: dict[str, object] = {}
    targeted: dict[str, dict[str, object]] = {c: {} for c in CLIENTS}
    for key, value in options.items():
        norm = key.strip().replace(".", "_").replace("-", "_").lower()
        if norm in OPTIONS:
            mine[norm] = _coerce(key, OPTIONS[norm], value)
            continue
        name = key.strip().replace("_", ".")
        client, _, rest = name.partition(".")
        if client in CLIENTS and rest:
            targeted[client][rest] = _rd_value(value)
        else:
            common[name] = _rd_value(value)
    return mine, common, targeted


def common_settings(servers: str, common: dict[str, object]) -> dict[str, object]:
    """The librdkafka settings of every client: visionlake's, then the user's."""
    return {
        "bootstrap.servers": servers,
        "client.id": f"visionlake-{HOST}-{os.getpid()}",
        "allow.auto.create.topics": False,  # topics are created with their settings, never implicitly
        "logger": _RdLogger(logging.getLogger("visionlake.log.kafka.librdkafka")),
        **common,
    }


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
