"""Hand-written SQL for the worker's hot path (`write_results` and the reads before it), on SQLite and
PostgreSQL alike.

A worker writes the catalog once per batch of frames: a dozen statements or so. Built, cache-keyed
and compiled by SQLAlchemy Core on every call, they cost several milliseconds of CPU a batch on
SQLite, several times what SQLite takes to run them (docs/benchmarks.md, "Worker overhead"). Here
they are plain SQL text run with `Connection.exec_driver_sql`: the same connection, transaction,
events (`handle_error`) and error wrapping (`sqlalchemy.exc.DBAPIError`) as `Connection.execute`,
without building anything.

The text uses `:name` placeholders and SQL both backends accept (``ON CONFLICT (...) DO UPDATE`` /
``DO NOTHING`` and ``excluded`` are SQLite >= 3.24 and PostgreSQL >= 9.5 syntax); for psycopg each
`:name` becomes `%(name)s`. SQLite has no time type: SQLAlchemy stores a `DateTime` there as the text
``YYYY-MM-DD HH:MM:SS.ffffff`` and compares those strings, so `Raw.time` writes times in exactly that
form and `Raw.read_time` reads them back; PostgreSQL takes and returns `datetime` itself.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any

from sqlalchemy.engine import Connection

_PLACEHOLDER = re.compile(r"(?<![:\w]):(\w+)")
#: Values per IN (...) list: well under SQLite's and PostgreSQL's parameter limits.
IN_LIST_MAX = 500


@lru_cache(maxsize=128)
def _pyformat(sql: str) -> str:
    """`:name` placeholders as psycopg's `%(name)s` (the statements here hold no literal %)."""
    assert "%" not in sql, sql
    return _PLACEHOLDER.sub(r"%(\1)s", sql)


def _sqlite_time(t: datetime) -> str:
    """A naive UTC time as SQLAlchemy's SQLite DateTime stores it (microseconds always written)."""
    return "%04d-%02d-%02d %02d:%02d:%02d.%06d" % (  # noqa: UP031 - the fastest of the formats here
        t.year,
        t.month,
        t.day,
        t.hour,
        t.minute,
        t.second,
        t.microsecond,
    )


class Raw:
    """Hand-written statements on one SQLAlchemy connection, inside its transaction."""

    __slots__ = ("conn", "sqlite")

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.sqlite = conn.dialect.name == "sqlite"

    def _sql(self, sql: str) -> str:
        return sql if self.sqlite else _pyformat(sql)

    def rows(self, sql: str, params: Mapping[str, Any]) -> list:
        """The rows of one query (tuples; times as stored: see `read_time`)."""
        return self.conn.exec_driver_sql(self._sql(sql), dict(params)).fetchall()

    def rows_in(self, sql: str, values: Sequence[Any], params: Mapping[str, Any] | None = None) -> list:
        """The rows of a query whose ``IN {ids}`` takes `values`, run once per slice of `chunks`."""
        out: list = []
        for chunk in chunks(list(values)):
            ids, in_params = _in_list(chunk)
            out += self.rows(sql.format(ids=ids), {**(params or {}), **in_params})
        return out

    def many(self, sql: str, rows: Sequence[Mapping[str, Any]]) -> None:
        """One statement, once per row (the driver's executemany); nothing when there are no rows."""
        if rows:
            self.conn.exec_driver_sql(self._sql(sql), list(rows))

    def time(self, t: datetime | None) -> Any:
        """A naive UTC time as a parameter."""
        if t is None or not self.sqlite:
            return t
        return _sqlite_time(t)

    def read_time(self, value: Any) -> Any:
        """A stored time as a naive UTC `datetime`."""
        if self.sqlite and isinstance(value, str):
            return datetime.fromisoformat(value)
        return value

    def with_times(self, row: Mapping[str, Any], *names: str) -> dict[str, Any]:
        """`row` with the times under `names` as parameters."""
        out = dict(row)
        if self.sqlite:
            for n in names:
                out[n] = self.time(out[n])
        return out


def chunks(items: list, n: int = IN_LIST_MAX) -> Iterable[list]:
    """`items` in slices short enough for one IN (...) list."""
    for i in range(0, len(items), n):
        yield items[i : i + n]


def _in_list(values: Iterable[Any]) -> tuple[str, dict[str, Any]]:
    """``(:in0, :in1, ...)`` and its parameters, for a `col IN` clause."""
    params = {f"in{i}": v for i, v in enumerate(values)}
    return "(" + ", ".join(f":{k}" for k in params) + ")", params


# --- the statements ------------------------------------------------------------------------------

INSERT_FRAMES = (
    'INSERT INTO frames (frame_id, camera, seq, captured_at, width, height, bytes, sha256, uri, topic, "partition", '
    '"offset") VALUES (:frame_id, :camera, :seq, :captured_at, :width, :height, :bytes, :sha256, :uri, :topic, '
    ":partition, :offset) ON CONFLICT DO NOTHING"
)
UPSERT_RESULTS = (
    "INSERT INTO results (frame_id, model, model_version, n_detections, processed_at, latency_ms, "
    "frame_captured_at) VALUES (:frame_id, :model, :model_version, :n_detections, :processed_at, :latency_ms, "
    ":frame_captured_at) ON CONFLICT (frame_id, model, model_version) DO UPDATE SET "
    "n_detections = excluded.n_detections, processed_at = excluded.processed_at, "
    "latency_ms = excluded.latency_ms, frame_captured_at = excluded.frame_captured_at"
)
INSERT_DETECTIONS = (
    "INSERT INTO detections (frame_id, model, model_version, label, score, x1, y1, x2, y2, track_id) "
    "VALUES (:frame_id, :model, :model_version, :label, :score, :x1, :y1, :x2, :y2, :track_id)"
)
INSERT_LABELS = (
    "INSERT INTO result_labels (frame_id, model, model_version, label, n_detections, frame_captured_at) "
    "VALUES (:frame_id, :model, :model_version, :label, :n_detections, :frame_captured_at)"
)
DELETE_DETECTIONS = (
    "DELETE FROM detections WHERE frame_id = :k_frame AND model = :k_model AND model_version = :k_version"
)
DELETE_LABELS = (
    "DELETE FROM result_labels WHERE frame_id = :k_frame AND model = :k_model AND model_version = :k_version"
)
UPSERT_ROLLUP = (
    'INSERT INTO rollup_hours ("view", model, model_version, label, camera, "hour", frames, detections) '
    "VALUES (:view, :model, :model_version, :label, :camera, :hour, :frames, :detections) "
    'ON CONFLICT ("view", model, model_version, label, camera, "hour") DO UPDATE SET '
    "frames = rollup_hours.frames + excluded.frames, "
    "detections = rollup_hours.detections + excluded.detections"
)
DELETE_EMPTY_ROLLUP = (
    'DELETE FROM rollup_hours WHERE "view" = :k_view AND model = :k_model AND model_version = :k_model_version '
    'AND label = :k_label AND camera = :k_camera AND "hour" = :k_hour AND frames = 0'
)
