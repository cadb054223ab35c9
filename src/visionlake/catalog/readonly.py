"""Safe user SQL on SQLite: a read-only connection, an authorizer, a time limit and a row cap.

Three layers, any one of which would stop a write: the file is opened with `mode=ro`, the connection
runs with `query_only`, and the authorizer refuses every action that is not a read (ATTACH, pragmas that
set a value, DDL, DML). The authorizer also gives the user a message that names what was refused.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from ..errors import QueryError, ReadOnlyViolation
from .base import QueryResult

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


def run_readonly(db: Path, sql: str, *, max_rows: int, timeout: float) -> QueryResult:
    """Run one statement read-only against SQLite file `db`."""
    if not sql.strip():
        raise QueryError("empty SQL statement")
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
        cur = conn.execute(sql)
        columns = [d[0] for d in cur.description or []]
        rows = cur.fetchmany(max_rows + 1)
    except sqlite3.DatabaseError as e:
        if refused:  # name the statement's own action, not SQLite's internal sqlite_master edits
            what = next((r for r in refused if "sqlite_master" not in r), refused[0])
            raise ReadOnlyViolation(
                f"refused: the catalog is read-only for queries ({what} is not allowed); nothing was changed"
            ) from None
        msg = str(e)
        if "interrupted" in msg:
            raise QueryError(f"query ran past its time limit of {timeout:g} s and was stopped") from None
        if "readonly" in msg or "read-only" in msg:
            raise ReadOnlyViolation(f"refused: the catalog is read-only for queries ({msg})") from None
        raise QueryError(f"bad SQL: {msg}") from None
    except sqlite3.Warning as e:  # e.g. more than one statement
        raise QueryError(f"bad SQL: {e}") from None
    finally:
        conn.close()
    return QueryResult(columns, [tuple(r) for r in rows[:max_rows]], len(rows) > max_rows)
