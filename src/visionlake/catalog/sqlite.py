"""SQLite catalog: the embedded default, one file in the lake."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection

from ..errors import BackendUnavailable
from ..limits import DEFAULT_QUERY_MAX_BYTES
from .base import QueryResult, SqlCatalog
from .readonly import run_readonly


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
            dbapi_conn.execute("PRAGMA journal_mode=WAL")
            dbapi_conn.execute("PRAGMA synchronous=NORMAL")
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
