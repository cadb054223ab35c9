"""The few SQL pieces that differ between SQLite and PostgreSQL, so the reports stay one set of queries.

Times are stored as naive UTC: SQLite keeps them as text (`YYYY-MM-DD HH:MM:SS.ffffff`), so buckets
are `strftime` prefixes; PostgreSQL has real timestamps, so buckets are `date_trunc`. Both come back
here as naive datetimes, so results do not depend on the backend.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from ..catalog.base import Catalog
from ..errors import InputError

BUCKETS = ("minute", "hour", "day")
#: Each bucket's length.
BUCKET_STEPS = {"minute": timedelta(minutes=1), "hour": timedelta(hours=1), "day": timedelta(days=1)}

_SQLITE_FORMATS = {
    "minute": "%Y-%m-%d %H:%M:00",
    "hour": "%Y-%m-%d %H:00:00",
    "day": "%Y-%m-%d 00:00:00",
}


def engine_of(catalog: Catalog) -> Engine:
    """The SQLAlchemy engine behind a catalog (reports need SQL, not the abstract interface)."""
    engine = getattr(catalog, "engine", None)
    if not isinstance(engine, Engine):
        raise InputError(f"reports need a SQL catalog; {type(catalog).__name__} has no SQL engine")
    return engine


def check_bucket(bucket: str) -> str:
    if bucket not in BUCKETS:
        raise InputError(f"bucket must be one of {', '.join(BUCKETS)}, got {bucket!r}")
    return bucket


def time_bucket(col: Any, bucket: str, dialect: str) -> sa.ColumnElement:
    """`col` truncated to the start of its minute, hour or day."""
    check_bucket(bucket)
    if dialect == "sqlite":
        return sa.func.strftime(_SQLITE_FORMATS[bucket], col)
    return sa.func.date_trunc(bucket, col)


def floor_time(ts: datetime, bucket: str) -> datetime:
    """The start of the minute, hour or day `ts` falls in (in Python: a bucket of rows already read)."""
    if bucket == "minute":
        return ts.replace(second=0, microsecond=0)
    if bucket == "hour":
        return ts.replace(minute=0, second=0, microsecond=0)
    return ts.replace(hour=0, minute=0, second=0, microsecond=0)


def hour_of_day(col: Any, dialect: str) -> sa.ColumnElement:
    """The hour 0-23 of `col`, as an integer."""
    if dialect == "sqlite":
        return sa.cast(sa.func.strftime("%H", col), sa.Integer)
    return sa.cast(sa.extract("hour", col), sa.Integer)


def as_datetime(value: Any) -> datetime:
    """A bucket value as a naive UTC datetime (SQLite hands back text, PostgreSQL a datetime)."""
    if isinstance(value, datetime):
        return value.replace(tzinfo=None)
    return datetime.fromisoformat(str(value))
