"""Parsing of times, durations and sizes typed by users (`--since 2h`, `--retention 7d`, `10GB`)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from .errors import InputError
from .frames import parse_iso

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)\s*$")
_UNITS_S = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)\s*$", re.I)


def parse_duration(text: str, what: str = "duration") -> timedelta:
    m = _DURATION.match(text)
    if not m:
        raise InputError(f"invalid {what} {text!r}: use a number and a unit, e.g. 30s, 15m, 2h, 7d")
    return timedelta(seconds=float(m.group(1)) * _UNITS_S[m.group(2)])


def parse_time(text: str, what: str = "time", now: datetime | None = None) -> datetime:
    """ISO 8601 (naive means UTC), 'now', or a duration meaning that long ago ('2h', '7d')."""
    now = now or datetime.now(UTC)
    t = text.strip()
    if t == "now":
        return now
    if _DURATION.match(t):
        return now - parse_duration(t, what)
    try:
        return parse_iso(t)
    except ValueError:
        raise InputError(
            f"invalid {what} {text!r}: use ISO 8601 (2026-11-22T10:00:00Z), 'now' or an age such as 2h"
        ) from None


def parse_size(text: str, what: str = "size") -> int:
    m = _SIZE.match(text)
    if not m:
        raise InputError(f"invalid {what} {text!r}: use bytes or a unit, e.g. 512KB, 10MB, 1GiB")
    unit = m.group(2).lower().rstrip("b").rstrip("i")
    factor = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}[unit]
    return int(float(m.group(1)) * factor)
