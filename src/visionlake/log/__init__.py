"""Frame-log backends, chosen by URL."""

from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError
from ..redact import redact_url
from .base import (
    DEFAULT_MAX_RECORD_BYTES,
    DEFAULT_PARTITIONS,
    Consumer,
    FrameLog,
    GroupInfo,
    Producer,
    TopicConfig,
    TopicInfo,
)

__all__ = [
    "DEFAULT_MAX_RECORD_BYTES",
    "DEFAULT_PARTITIONS",
    "Consumer",
    "FrameLog",
    "GroupInfo",
    "Producer",
    "TopicConfig",
    "TopicInfo",
    "open_log",
]


def open_log(url: str, **options: object) -> FrameLog:
    """`sqlite:///dir` (or a plain directory path) for the embedded log, `kafka://host:9092` for Kafka."""
    if url.startswith("sqlite://"):
        from .sqlite import SqliteLog

        return SqliteLog(Path(url.removeprefix("sqlite://")), **options)  # type: ignore[arg-type]
    if "://" not in url:
        from .sqlite import SqliteLog

        return SqliteLog(Path(url), **options)  # type: ignore[arg-type]
    if url.startswith("kafka://"):
        from .kafka import KafkaLog

        return KafkaLog(url, **options)  # type: ignore[arg-type]
    raise ConfigError(
        f"unsupported log URL {redact_url(url.split('?')[0])!r}: use sqlite:///DIR, a directory path or "
        "kafka://host:9092"
    )
