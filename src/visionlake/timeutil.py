"""Parsing of times, durations and sizes typed by users (`--since 2h`, `--retention 7d`, `10GB`).

Each has bounds, so that a typo ends in a message rather than an OverflowError deep in datetime or a
database driver: durations and ages at most 100 years, times within the years 1970-9999 (the
capture times a worker accepts), sizes 1 B to 1 PiB.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta

from .errors import InputError
from .frames import parse_iso

MAX_DURATION = timedelta(days=36525)  # 100 years
MIN_TIME = datetime(1970, 1, 1, tzinfo=UTC)
MAX_TIME = datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
MAX_SIZE = 1024**5  # 1 PiB

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)\s*$")
_UNITS_S = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)\s*$", re.I)


def parse_duration(text: str, what: str = "duration") -> timedelta:
    m = _DURATION.match(text)
    if not m:
        raise InputError(f"invalid {what} {text!r}: use a number and a unit, e.g. 30s, 15m, 2h, 7d")
    seconds = float(m.group(1)) * _UNITS_S[m.group(2)]
    if not seconds <= MAX_DURATION.total_seconds():  # also inf, from a number too long for a float
        raise InputError(f"invalid {what} {text!r}: at most 100 years ({MAX_DURATION.days}d)")
    return timedelta(seconds=seconds)


def parse_time(text: str, what: str = "time", now: datetime | None = None) -> datetime:
    """ISO 8601 (naive means UTC), 'now', or a duration meaning that long ago ('2h', '7d')."""
    now = now or datetime.now(UTC)
    t = text.strip()
    if t == "now":
        return now
    if _DURATION.match(t):
        return now - parse_duration(t, what)
    try:
        when = parse_iso(t)
    except ValueError:
        raise InputError(
            f"invalid {what} {text!r}: use ISO 8601 (2026-11-22T10:00:00Z), 'now' or an age such as 2h"
        ) from None
    except OverflowError:  # valid, but not once moved to UTC (0001-01-01T00:00+01:00)
        when = None
    if when is None or not MIN_TIME <= when <= MAX_TIME:
        raise InputError(f"invalid {what} {text!r}: times must be within the years 1970-9999 (UTC)")
    return when


def parse_size(text: str, what: str = "size") -> int:
    m = _SIZE.match(text)
    if not m:
        raise InputError(f"invalid {what} {text!r}: use bytes or a unit, e.g. 512KB, 10MB, 1GiB")
    unit = m.group(2).lower().rstrip("b").rstrip("i")
    factor = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}[unit]
    n = float(m.group(1)) * factor
    if not (math.isfinite(n) and 1 <= n <= MAX_SIZE):
        raise InputError(f"invalid {what} {text!r}: sizes go from 1 B to 1 PiB ({MAX_SIZE} bytes)")
    return int(n)
