"""PostgreSQL catalog: the same tables and migrations as SQLite, for several machines at once.

URL: ``postgresql://user:password@host:port/database`` (``postgres://`` and ``postgresql+psycopg://``
are accepted too); any libpq parameter can follow as a query string, e.g. ``?sslmode=require`` or
``?connect_timeout=3``. The driver is psycopg 3 (``pip install 'visionlake[postgres]'``). Times are
stored as UTC without a zone, as in SQLite. The password never appears in `url`, in messages or in logs.

**Opening.** A first connection is made at once, bounded by ``connect_timeout`` (10 s unless the URL
says otherwise), and its failure is classified:

- host unreachable, port closed, no answer in time, server starting or full: `BackendUnavailable`
  (exit code 3: try again later), naming host, port and database;
- wrong password, unknown role, login refused by ``pg_hba.conf``, database missing or no CONNECT
  right: `ConfigError` (exit code 2: retrying will not help, the URL or the server's setup must
  change), naming the user and the database.

Migrations run in one transaction holding ``pg_advisory_xact_lock`` on a fixed key, so several
workers opening a fresh database at once create the tables once; the others wait and find them.

**Concurrent writers.** `write_results` relies on PostgreSQL's own row locks and takes no extra lock:

1. the batch is sorted by (frame_id, model, model_version) (a stable sort: a frame twice in one batch
   still keeps its last result), so every writer takes its locks in the same order and two workers
   handling overlapping batches queue instead of deadlocking;
2. the ``INSERT ... ON CONFLICT DO UPDATE`` of the ``results`` rows comes before the detections are
   replaced, and it locks each (frame_id, model, model_version) row: a second transaction for the same
   key waits there until the first commits;
3. the engine runs at READ COMMITTED (pinned, whatever the server's default), so the waiting
   transaction's ``DELETE`` of that key's detections is a new statement with a new snapshot, sees the
   first writer's committed detections and removes them before inserting its own: one set survives.

A deadlock or serialisation failure caused by something else (a user's own transaction on these rows)
is retried up to three times; the whole batch is one transaction, so a retry is safe. Per-key advisory
locks would do the same job with an extra round trip and with pressure on the shared lock table for
big batches; the row lock of the upsert is already there.

**User SQL (`query`).** Each query runs on a separate small connection pool:

- connections open with ``default_transaction_read_only=on``, and every query runs in an explicit
  ``BEGIN READ ONLY`` transaction that is always rolled back: the server refuses every write
  (INSERT/UPDATE/DELETE/MERGE, DDL, ``SELECT ... FOR UPDATE``, ``nextval``, ``SELECT INTO``) with
  SQLSTATE 25006, reported as `ReadOnlyViolation` ("nothing was changed");
- ``SET LOCAL statement_timeout`` enforces the time limit (also on lock waits and ``pg_sleep``);
- SELECT, WITH, VALUES and TABLE statements run through a server-side cursor
  (``DECLARE ... CURSOR FOR <sql>``): the server accepts only a query there (no COPY, SET, DO, CALL,
  data-modifying WITH), the extended protocol refuses a second statement, and ``FETCH max_rows + 1``
  makes the row cap real (an endless result stops at the cap without being computed further);
  rows come in small batches and count against the byte cap as they arrive, so a huge result stops
  near the cap (one row is held whole: PostgreSQL limits a value to 1 GB, not less);
  EXPLAIN and SHOW run through the extended protocol too (one statement only);
- every other command (COPY, SET, RESET, DO, CALL, LOCK, VACUUM, GRANT, BEGIN, PREPARE, LISTEN, ...)
  is refused by its first keyword before anything is sent;
- functions that act outside the transaction are refused by name anywhere in the text (also inside
  strings, which catches ``query_to_xml('...')``): backend signalling (``pg_terminate_backend``,
  ``pg_cancel_backend``, ``pg_reload_conf``...), server files (``pg_read_file``, ``pg_ls_dir``,
  ``pg_stat_file``, ``lo_import``/``lo_export`` and the other large-object calls, adminpack's
  ``pg_file_write``), ``dblink*`` (a second connection is not read-only), session advisory locks,
  ``set_config``, ``pg_notify``, replication and WAL control, ``query_to_xml*``/``cursor_to_xml``;
- after the rollback the connection runs ``DISCARD ALL`` before going back to the pool, so nothing a
  query did to the session (an advisory lock, a prepared statement, a setting) outlives it.

Not guarded: the denylist is lexical, so a function name spelled with unicode escapes
(``U&"..."``) or a user-defined SECURITY DEFINER function that calls one is not caught; CPU and memory
use within the time limit; reading any table the role can read. **In production point the query
side at a read-only role**: a login role that has only ``CONNECT`` on the database, ``USAGE`` on the
schema and ``SELECT`` on the four tables (and ``schema_version``, ``rollup_hours``, ``result_labels``), is not a superuser and is not a member
of ``pg_read_server_files``, ``pg_write_server_files``, ``pg_execute_server_program`` or
``pg_signal_backend``; open the catalog with that role's URL in query-only processes (the web
dashboard, ``visionlake sql``). Opening needs no write right when the schema is current.
"""

from __future__ import annotations

import hashlib
import random
import re
import threading
import time
from collections.abc import Sequence
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.engine import Connection

from ..errors import (
    BackendUnavailable,
    ConfigError,
    MissingDependency,
    QueryError,
    ReadOnlyViolation,
)
from ..limits import DEFAULT_QUERY_MAX_BYTES
from ..redact import redact_url
from .base import ByteBudget, FrameResult, QueryResult, SqlCatalog, TrackerState, check_query_limits

#: URL schemes accepted for this backend
SCHEMES = ("postgresql", "postgres", "postgresql+psycopg")
DEFAULT_CONNECT_TIMEOUT = 10  # seconds, libpq's connect_timeout (minimum 2)
#: pg_advisory_xact_lock key serialising migrations (per database)
MIGRATION_LOCK = int.from_bytes(
    hashlib.sha256(b"visionlake.catalog.migrate").digest()[:8], "big", signed=True
)
_CURSOR = "vl_query"
_DECLARE_PREFIX = f'DECLARE "{_CURSOR}" CURSOR FOR '
_RETRY_SQLSTATES = {"40P01", "40001"}  # deadlock detected, serialization failure

#: run through the extended protocol; SELECT, WITH, VALUES, TABLE (and anything not named in
#: _REFUSED_COMMANDS, for the server to judge) go through the server-side cursor
_PLAIN_COMMANDS = {"explain", "show"}
#: every other command of PostgreSQL's grammar: refused by its first keyword
_REFUSED_COMMANDS = {
    "abort", "alter", "analyze", "analyse", "begin", "call", "checkpoint", "close", "cluster",
    "comment", "commit", "copy", "create", "deallocate", "declare", "delete", "discard", "do", "drop",
    "end", "execute", "fetch", "grant", "import", "insert", "listen", "load", "lock", "merge", "move",
    "notify", "prepare", "reassign", "refresh", "reindex", "release", "reset", "revoke", "rollback",
    "savepoint", "security", "set", "start", "truncate", "unlisten", "update", "vacuum",
}  # fmt: skip
_WRITE_WORDS = {"insert", "update", "delete", "merge", "truncate", "create", "drop", "alter"}

#: functions that act outside the read-only transaction (files, other sessions, the server)
_DENIED_FUNCTIONS = re.compile(
    r"(?<![\w$])("
    r"pg_terminate_backend|pg_cancel_backend|pg_reload_conf|pg_rotate_logfile\w*|pg_promote"
    r"|pg_switch_(?:wal|xlog)|pg_create_\w+|pg_drop_replication_slot|pg_copy_\w+_replication_slot"
    r"|pg_replication_\w+|pg_logical_\w+|pg_(?:start|stop)_backup|pg_backup_(?:start|stop)"
    r"|pg_(?:wal|xlog)_replay_\w+|pg_log_backend_memory_contexts|pg_stat_reset\w*"
    r"|pg_import_system_collations|pg_read_file|pg_read_binary_file|pg_ls_\w+|pg_stat_file"
    r"|pg_file_\w+|pg_logdir_ls|lo_import|lo_export|lo_unlink|lo_create|lo_creat|lo_put"
    r"|lo_from_bytea|lo_open|lo_close|lo_truncate\w*|lo_lseek\w*|loread|lowrite|dblink\w*"
    r"|pg_advisory_\w+|pg_try_advisory_\w+|set_config|pg_notify|query_to_xml\w*|cursor_to_xml\w*"
    r")(?![\w$])",
    re.IGNORECASE,
)
_COMMENT_OR_SPACE = re.compile(r"\s+|--[^\n]*|/\*.*?\*/|\(", re.DOTALL)
_COMMENTS = re.compile(r"--[^\n]*|/\*.*?\*/", re.DOTALL)
_WORD = re.compile(r"[A-Za-z_]\w*")


def parse_url(url: str) -> sa.URL:
    """The SQLAlchemy URL for psycopg 3 from any accepted spelling; ConfigError otherwise."""
    try:
        u = sa.make_url(url)
    except sa.exc.ArgumentError as e:
        raise ConfigError(f"invalid PostgreSQL catalog URL: {e}") from None
    if u.drivername not in SCHEMES:
        raise ConfigError(
            f"unsupported PostgreSQL catalog URL scheme {u.drivername!r}: use postgresql://user:password@"
            "host:port/database (the driver is psycopg 3)"
        )
    if not u.database:
        raise ConfigError(
            "the PostgreSQL catalog URL names no database: postgresql://user@host:port/DATABASE"
        )
    return u.set(drivername="postgresql+psycopg")


def display_url(u: sa.URL) -> str:
    """postgresql://user:***@host:port/db?...: what messages and `status` show.

    libpq also takes ``?password=`` (and ``sslpassword``) in the query, so the query goes through
    `redact_url` like every other URL shown.
    """
    return redact_url(u.set(drivername="postgresql").render_as_string(hide_password=True))


def _first_keyword(sql: str) -> str:
    pos = 0
    while m := _COMMENT_OR_SPACE.match(sql, pos):
        if m.end() == pos:
            break
        pos = m.end()
    w = _WORD.match(sql, pos)
    return w.group(0).lower() if w else ""


def _plain(value: object) -> object:
    """numeric aggregates (sum of bigint, avg) as int or float, as SQLite gives them."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    return value


def _refused(what: str) -> ReadOnlyViolation:
    return ReadOnlyViolation(
        f"refused: the catalog is read-only for queries ({what} is not allowed); nothing was changed"
    )


class PostgresCatalog(SqlCatalog):
    """The catalog in a PostgreSQL database (see the module docstring for locking and query guards)."""

    def __init__(self, url: str, *, pool_size: int = 5) -> None:
        try:
            import psycopg  # noqa: F401 - only to fail early with the install hint
        except ImportError:
            raise MissingDependency("the PostgreSQL catalog", "postgres", "psycopg") from None
        self._url = parse_url(url)
        shown = display_url(self._url)
        q = dict(self._url.query)
        try:
            self._connect_timeout = float(q.get("connect_timeout") or DEFAULT_CONNECT_TIMEOUT)
        except (TypeError, ValueError):
            raise ConfigError(
                f"connect_timeout in the catalog URL must be a number of seconds, got {q['connect_timeout']!r}"
            ) from None
        args: dict = {}
        if "connect_timeout" not in q:
            args["connect_timeout"] = DEFAULT_CONNECT_TIMEOUT
        if "application_name" not in q:
            args["application_name"] = "visionlake"
        self._connect_args = args
        engine = sa.create_engine(
            self._url,
            connect_args=args,
            isolation_level="READ COMMITTED",  # the write protocol above relies on it
            pool_size=pool_size,
            max_overflow=2 * pool_size,
            pool_pre_ping=True,  # a server restart costs one failed ping, not a failed write
        )
        self._map_connection_errors(engine)
        self._query_engine: sa.Engine | None = None
        self._query_engine_lock = threading.Lock()
        self.url = shown
        try:
            with engine.connect() as conn:  # fail here, classified, rather than inside a migration
                conn.exec_driver_sql("SELECT 1")
            super().__init__(engine, shown)
        except BaseException:
            engine.dispose()
            raise

    # -- connection errors -------------------------------------------------------------------

    def _where(self) -> str:
        u = self._url
        host = u.host or "the local socket"
        return f"{host}:{u.port or 5432}"

    def _map_connection_errors(self, engine: sa.Engine) -> None:
        """Connection failures, at open or later (a pool reconnecting after a server restart), become
        BackendUnavailable or ConfigError; a connection lost mid-statement becomes BackendUnavailable."""

        @sa.event.listens_for(engine, "handle_error")
        def _on_error(ctx) -> None:
            if ctx.is_pre_ping:
                return  # the pool reconnects by itself
            if ctx.connection is None:  # while connecting
                raise self._connect_error(ctx.original_exception)
            if ctx.is_disconnect:
                raise BackendUnavailable(
                    f"lost the connection to the PostgreSQL catalog {self.url}: "
                    f"{str(ctx.original_exception).strip()}"
                )

    def _connect_error(self, orig: BaseException | None) -> Exception:
        import psycopg

        u = self._url
        user = u.username or "(default user)"
        reason = re.sub(r"^connection failed: ", "", str(orig or "unknown error")).strip()
        reason = re.sub(r"\s+", " ", reason)
        low = reason.lower()
        where, db = self._where(), u.database
        if isinstance(orig, psycopg.errors.ConnectionTimeout) or "timeout expired" in low:
            return BackendUnavailable(
                f"the PostgreSQL catalog at {where} (database {db!r}) did not answer within "
                f"{self._connect_timeout:g} s (connect_timeout): is the host reachable and the server up?"
            )
        if "database" in low and "does not exist" in low:
            return ConfigError(
                f"database {db!r} does not exist on the PostgreSQL server at {where}: create it first "
                f"(CREATE DATABASE {db}; or createdb -h {u.host or 'localhost'} -p {u.port or 5432} "
                f"-U {user} {db})"
            )
        auth_markers = (
            "password authentication failed",
            "no password supplied",
            "authentication failed",
            "pg_hba.conf",
            "permission denied for database",
        )
        if any(m in low for m in auth_markers) or ("role" in low and "does not exist" in low):
            return ConfigError(
                f"PostgreSQL at {where} refused user {user!r} on database {db!r}: {reason}; "
                "check the user name and password in the catalog URL (and the server's pg_hba.conf)"
            )
        return BackendUnavailable(
            f"cannot reach the PostgreSQL catalog at {where} (database {db!r}, user {user!r}): {reason}"
        )

    # -- dialect hooks -----------------------------------------------------------------------

    def _insert(self, table: sa.Table):
        return pg_insert(table)

    def _lock_for_migration(self, conn: Connection) -> None:
        conn.execute(sa.select(sa.func.pg_advisory_xact_lock(MIGRATION_LOCK)))

    def write_results(self, batch: Sequence[FrameResult], trackers: Sequence[TrackerState] = ()) -> None:
        ordered = sorted(batch, key=lambda r: (r.meta.frame_id, r.model, r.model_version))
        for attempt in range(1, 4):
            try:
                return super().write_results(ordered, trackers)
            except sa.exc.DBAPIError as e:
                state = getattr(e.orig, "sqlstate", None)
                if state not in _RETRY_SQLSTATES or attempt == 3:
                    raise
                time.sleep(random.uniform(0.02, 0.1) * attempt)
        return None

    # -- user SQL ----------------------------------------------------------------------------

    def _queries(self) -> sa.Engine:
        """A separate small pool whose sessions are read-only by default."""
        with self._query_engine_lock:
            if self._query_engine is None:
                self._query_engine = self._make_query_engine()
            return self._query_engine

    def _make_query_engine(self) -> sa.Engine:
        options = " ".join(
            x for x in (self._url.query.get("options"), "-c default_transaction_read_only=on") if x
        )
        args = dict(self._connect_args, options=options, prepare_threshold=None)
        if "application_name" not in self._url.query:
            args["application_name"] = "visionlake-query"
        engine = sa.create_engine(
            self._url, connect_args=args, pool_size=2, max_overflow=8, pool_pre_ping=True
        )

        @sa.event.listens_for(engine, "connect")
        def _autocommit(dbapi_conn, _record) -> None:
            dbapi_conn.autocommit = True  # transactions are begun and ended by query() itself

        return engine

    def query(
        self,
        sql: str,
        *,
        max_rows: int = 1000,
        timeout: float = 10.0,
        max_bytes: int = DEFAULT_QUERY_MAX_BYTES,
    ) -> QueryResult:
        import psycopg

        if not isinstance(sql, str) or not sql.strip():
            raise QueryError("empty SQL statement")
        if "\x00" in sql:
            raise QueryError("bad SQL: the statement contains a NUL character")
        command = _first_keyword(sql)
        if not command and not _COMMENTS.sub("", sql).strip(" \t\r\n;"):
            raise QueryError("empty SQL statement (only comments)")
        if command in _REFUSED_COMMANDS:
            raise _refused(command.upper())
        if m := _DENIED_FUNCTIONS.search(sql):
            raise _refused(f"{m.group(1).lower()}(), which acts outside the query,")
        check_query_limits(max_rows, max_bytes, timeout)
        ms = max(1, round(timeout * 1000))
        budget = ByteBudget(max_bytes)
        try:
            fairy = self._queries().raw_connection()
        except sa.exc.DBAPIError as e:
            raise self._connect_error(e.orig) from e
        except psycopg.Error as e:  # the pool's own connect is not wrapped by SQLAlchemy
            raise self._connect_error(e) from e
        pg = fairy.driver_connection
        cur = None
        try:
            pg.execute("BEGIN TRANSACTION READ ONLY")
            pg.execute(f"SET LOCAL statement_timeout = {ms}")
            rows: list = []
            if command in _PLAIN_COMMANDS:
                cur = pg.cursor()
                for row in cur.stream(sql):
                    rows.append(row)
                    if len(rows) > max_rows:
                        break
                    budget.add(row)
            else:
                cur = pg.cursor(name=_CURSOR)
                cur.execute(sql)
                while cur.description and len(rows) <= max_rows:
                    batch = cur.fetchmany(min(100, max_rows + 1 - len(rows)))
                    for row in batch:
                        rows.append(row)
                        if len(rows) <= max_rows:
                            budget.add(row)
                    if not batch:
                        break
            columns = [d.name for d in cur.description or []]
        except psycopg.OperationalError as e:
            if not isinstance(e, psycopg.errors.QueryCanceled | psycopg.errors.TransactionRollback) and (
                pg.closed or pg.broken
            ):
                raise BackendUnavailable(
                    f"lost the connection to the PostgreSQL catalog {self.url}: {e}"
                ) from e
            raise self._query_error(e, sql, timeout) from None
        except psycopg.Error as e:
            raise self._query_error(e, sql, timeout) from None
        finally:
            if not self._reset(pg, cur):
                fairy.invalidate()  # never hand a session in an unknown state to the next query
            fairy.close()
        out = [tuple(_plain(v) for v in row) for row in rows[:max_rows]]
        return QueryResult(columns, out, len(rows) > max_rows)

    @staticmethod
    def _reset(pg, cur) -> bool:
        """Roll back and DISCARD ALL: the pooled session keeps nothing of the query."""
        try:
            if not pg.closed and not pg.broken:
                pg.execute("ROLLBACK")
                if cur is not None:
                    cur.close()
                pg.execute("DISCARD ALL")
            return True
        except Exception:  # noqa: BLE001 - a broken connection is invalidated by the caller
            return False

    def _query_error(self, e, sql: str, timeout: float) -> Exception:
        import psycopg

        diag = e.diag
        msg = diag.message_primary or str(e).strip()
        state = e.sqlstate
        if isinstance(e, psycopg.errors.QueryCanceled) or state == "57014":
            return QueryError(f"query ran past its time limit of {timeout:g} s and was stopped")
        if state == "25006":  # read_only_sql_transaction
            return _refused(msg.replace(" in a read-only transaction", "").removeprefix("cannot execute "))
        if state == "0A000" and "data-modifying" in msg:
            return _refused("a data-modifying statement in WITH")
        if state == "0A000" and "not allowed in a non-volatile function" in msg:
            return _refused(f"{msg.split()[0]} inside a function")
        if state == "42601":
            if "multiple commands" in msg:
                return QueryError("bad SQL: only one statement is allowed per query")
            if "INTO is not allowed" in msg:
                return _refused("SELECT ... INTO")
            word = self._word_at(sql, diag.statement_position)
            if word in _WRITE_WORDS:
                return _refused(word.upper())
        if state == "25001" and "read-write" in msg:
            return _refused("switching the transaction to read-write")
        if state == "42501":
            return QueryError(f"not permitted: {msg}")
        detail = f" ({diag.message_hint})" if diag.message_hint else ""
        return QueryError(f"bad SQL: {msg}{detail}")

    @staticmethod
    def _word_at(sql: str, position: str | None) -> str:
        """The word at a server-reported 1-based position of the DECLARE statement."""
        if not position or not position.isdigit():
            return ""
        i = int(position) - 1 - len(_DECLARE_PREFIX)
        m = _WORD.match(sql, i) if 0 <= i < len(sql) else None
        return m.group(0).lower() if m else ""

    def close(self) -> None:
        super().close()
        if self._query_engine is not None:
            self._query_engine.dispose()
