"""Frame-log backends, chosen by URL."""

from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError
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
    """`sqlite:///dir` (or a plain directory path) for the embedded log."""
    if url.startswith("sqlite://"):
        from .sqlite import SqliteLog

        return SqliteLog(Path(url.removeprefix("sqlite://")), **options)  # type: ignore[arg-type]
    if "://" not in url:
        from .sqlite import SqliteLog

        return SqliteLog(Path(url), **options)  # type: ignore[arg-type]
    if url.startswith("kafka://"):
        raise ConfigError(f"log URL {url!r}: the Kafka backend is not part of this release yet")
    raise ConfigError(f"unsupported log URL {url!r}: use sqlite:///DIR or a directory path")
