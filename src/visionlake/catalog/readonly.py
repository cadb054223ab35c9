"""Safe user SQL on SQLite: a read-only connection, an authorizer, a time limit, a row and a byte cap.

Three layers, any one of which would stop a write: the file is opened with `mode=ro`, the connection
runs with `query_only`, and the authorizer refuses every action that is not a read (ATTACH, pragmas that
set a value, DDL, DML). The authorizer also gives the user a message that names what was refused.

Size: rows are counted against `max_bytes` as they are fetched, and SQLITE_LIMIT_LENGTH keeps each
value within the cap's share of a row (the cap divided by the statement's result columns, read from
its EXPLAIN bytecode; at least 64 KiB), so that `zeroblob(10**9)` or `randomblob()` in many columns
fails inside SQLite before allocating anything large.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from ..errors import QueryError, ReadOnlyViolation
from ..limits import DEFAULT_QUERY_MAX_BYTES
from .base import ByteBudget, QueryResult, check_query_limits, too_big

#: pragmas that only read (their argument names a table or index, never a new value).
READ_PRAGMAS = {
    "table_info",
    "table_xinfo",
    "table_list",
    "index_list",
    "index_info",
    "index_xinfo",
    "foreign_key_list",
    "database_list",
    "collation_list",
    "function_list",
    "module_list",
    "compile_options",
    "pragma_list",
}

_READ_ACTIONS = {
    sqlite3.SQLITE_SELECT,
    sqlite3.SQLITE_READ,
    sqlite3.SQLITE_FUNCTION,
    sqlite3.SQLITE_RECURSIVE,
}
_ACTION_NAMES = {
    getattr(sqlite3, f"SQLITE_{n}"): n.lower().replace("_", " ")
    for n in (
        "CREATE_INDEX CREATE_TABLE CREATE_TEMP_INDEX CREATE_TEMP_TABLE CREATE_TEMP_TRIGGER CREATE_TEMP_VIEW "
        "CREATE_TRIGGER CREATE_VIEW DELETE DROP_INDEX DROP_TABLE DROP_TEMP_INDEX DROP_TEMP_TABLE "
        "DROP_TEMP_TRIGGER DROP_TEMP_VIEW DROP_TRIGGER DROP_VIEW INSERT PRAGMA TRANSACTION UPDATE ATTACH "
        "DETACH ALTER_TABLE REINDEX ANALYZE CREATE_VTABLE DROP_VTABLE SAVEPOINT"
    ).split()
}


#: smallest per-value length limit: room for any SQL literal or catalog value
_MIN_VALUE_LIMIT = 64 * 1024
_MAX_SQLITE_LIMIT = 2**31 - 1


def _result_columns(conn: sqlite3.Connection, sql: str) -> int | None:
    """How many columns `sql` returns, from its bytecode (EXPLAIN prepares it and runs nothing).

    None when EXPLAIN fails (bad SQL, refused, or already an EXPLAIN): the statement itself then
    reports its error, or is an EXPLAIN whose own columns are small.
    """
    try:
        ops = conn.execute("EXPLAIN " + sql).fetchall()
    except (sqlite3.Error, sqlite3.Warning):
        return None
    return max((op[3] for op in ops if op[1] == "ResultRow"), default=1)


def run_readonly(
    db: Path, sql: str, *, max_rows: int, timeout: float, max_bytes: int = DEFAULT_QUERY_MAX_BYTES
) -> QueryResult:
    """Run one statement read-only against SQLite file `db`."""
    if not sql.strip():
        raise QueryError("empty SQL statement")
    check_query_limits(max_rows, max_bytes, timeout)
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    refused: list[str] = []

    def authorize(
        action: int, arg1: str | None, arg2: str | None, _db: str | None, _trigger: str | None
    ) -> int:
        if action in _READ_ACTIONS:
            return sqlite3.SQLITE_OK
        if action == sqlite3.SQLITE_PRAGMA and arg1 and arg1.lower() in READ_PRAGMAS:
            return sqlite3.SQLITE_OK
        what = _ACTION_NAMES.get(action, f"action {action}")
        refused.append(
            f"{what} {arg1 or ''}".strip()
            + (f" = {arg2}" if action == sqlite3.SQLITE_PRAGMA and arg2 else "")
        )
        return sqlite3.SQLITE_DENY

    deadline = time.monotonic() + timeout
    conn.set_progress_handler(lambda: int(time.monotonic() > deadline), 10_000)
    try:
        conn.execute("PRAGMA query_only = 1")
        conn.set_authorizer(authorize)
        ncols = _result_columns(conn, sql) or 1
        refused.clear()  # the statement itself reports what EXPLAIN saw
        per_value = max(max_bytes // max(ncols, 1), _MIN_VALUE_LIMIT)
        conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, min(per_value, _MAX_SQLITE_LIMIT))
        cur = conn.execute(sql)
        columns = [d[0] for d in cur.description or []]
        budget = ByteBudget(max_bytes)
        rows: list[tuple] = []
        truncated = False
        for row in cur:
            if len(rows) == max_rows:
                truncated = True
                break
            budget.add(row)
            rows.append(tuple(row))
    except sqlite3.DatabaseError as e:
        if refused:  # name the statement's own action, not SQLite's internal sqlite_master edits
            what = next((r for r in refused if "sqlite_master" not in r), refused[0])
            raise ReadOnlyViolation(
                f"refused: the catalog is read-only for queries ({what} is not allowed); nothing was changed"
            ) from None
        msg = str(e)
        if "interrupted" in msg:
            raise QueryError(f"query ran past its time limit of {timeout:g} s and was stopped") from None
        if "too big" in msg:  # SQLITE_TOOBIG: a value over the length limit set above
            raise too_big(max_bytes) from None
        if "readonly" in msg or "read-only" in msg:
            raise ReadOnlyViolation(f"refused: the catalog is read-only for queries ({msg})") from None
        raise QueryError(f"bad SQL: {msg}") from None
    except sqlite3.Warning as e:  # e.g. more than one statement
        raise QueryError(f"bad SQL: {e}") from None
    finally:
        conn.close()
    return QueryResult(columns, rows, truncated)
