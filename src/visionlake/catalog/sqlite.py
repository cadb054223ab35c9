"""SQLite catalog: the embedded default, one file in the lake."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection

from ..errors import BackendUnavailable
from ..limits import DEFAULT_QUERY_MAX_BYTES
from .base import QueryResult, SqlCatalog
from .readonly import run_readonly

#: How long a new connection keeps asking for WAL mode while another process holds the file's lock.
WAL_WAIT_S = 60.0
#: Pages the WAL may hold before a commit copies them into the database file (SQLite's default is
#: 1000, about 4 MB). A worker's batch adds 15-20 pages, and each of these checkpoints costs the
#: committing writer 10-50 ms (two fsyncs with synchronous=NORMAL): half the average cost of a
#: batch's catalog write. At 10000 (a WAL of up to about 40 MB) they come ten times less often and a
#: page written many times in between (the roll-up's, the indexes') is copied once. Durability is
#: unchanged in kind: a commit survives a crash of the process; after a power loss the transactions
#: not yet on disk roll back, whose age the kernel's write-back bounds (about 30 s) either way.
WAL_CHECKPOINT_PAGES = 10000


def _use_wal(dbapi_conn) -> None:  # noqa: ANN001 - a sqlite3 connection
    """WAL mode, once per catalog file (it persists). Switching a fresh file needs its exclusive lock,
    and SQLite answers "database is locked" at once, without waiting, while another process that
    opens the same fresh catalog holds it (creating the tables): so ask again until it is free."""
    deadline = time.monotonic() + WAL_WAIT_S
    while True:
        try:
            if dbapi_conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                dbapi_conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


class SqliteCatalog(SqlCatalog):
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise BackendUnavailable(f"cannot create the catalog directory {self.path.parent}: {e}") from e
        engine = sa.create_engine(
            f"sqlite:///{self.path}",
            connect_args={"timeout": 60, "isolation_level": None},
        )

        @sa.event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn, _record) -> None:
            _use_wal(dbapi_conn)
            dbapi_conn.execute("PRAGMA synchronous=NORMAL")
            dbapi_conn.execute(f"PRAGMA wal_autocheckpoint={WAL_CHECKPOINT_PAGES}")
            dbapi_conn.execute("PRAGMA foreign_keys=ON")

        @sa.event.listens_for(engine, "begin")
        def _on_begin(conn) -> None:
            # pysqlite's own transaction handling is off (isolation_level None); take the write
            # lock at BEGIN so concurrent workers queue instead of failing on lock upgrade.
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        super().__init__(engine, f"sqlite:///{self.path}")

    def _insert(self, table: sa.Table):
        return sqlite_insert(table)

    def _lock_for_migration(self, conn: Connection) -> None:
        pass  # BEGIN IMMEDIATE already holds the write lock

    def query(
        self,
        sql: str,
        *,
        max_rows: int = 1000,
        timeout: float = 10.0,
        max_bytes: int = DEFAULT_QUERY_MAX_BYTES,
    ) -> QueryResult:
        return run_readonly(self.path, sql, max_rows=max_rows, timeout=timeout, max_bytes=max_bytes)
