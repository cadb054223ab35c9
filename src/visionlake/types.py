"""Plain data types shared by every layer: log records and detections.

`Detections` lives in `visionlake.detections` (it needs NumPy) and is imported from here lazily, so
that what only handles records (the frame log, the CLI's start-up) never loads NumPy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .detections import Detections

Headers = list[tuple[str, bytes]]


@dataclass(frozen=True, slots=True)
class Record:
    """One record read from a frame-log topic (the same shape for every log backend)."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes
    headers: Headers = field(default_factory=list)
    #: how many times a share group has handed this record out, this time included (1 elsewhere)
    delivery_count: int = 1

    def header(self, name: str) -> str | None:
        """The last value of header `name` as text, or None when absent."""
        for k, v in reversed(self.headers):
            if k == name:
                return v.decode("utf-8", "replace")
        return None


@dataclass(frozen=True, slots=True)
class RecordMetadata:
    """Where a produced record landed."""

    topic: str
    partition: int
    offset: int


def __getattr__(name: str) -> Any:
    if name == "Detections":
        from .detections import Detections

        return Detections
    raise AttributeError(f"module 'visionlake.types' has no attribute {name!r}")


__all__ = ["Detections", "Headers", "Record", "RecordMetadata"]
