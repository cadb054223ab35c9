"""The embedded frame log: record bytes in append-only segment files, the index in SQLite.

Layout under the log directory::

    log.db                                 topics, partitions, segments, record index, groups, offsets
    data/<topic>/<partition>/<base>.seg    record values, appended; a segment rolls at `segment_bytes`

Why this split: SQLite alone writes 50 KB blobs at about a sixth of the speed of a file append, while
appending values to a file and indexing them in one SQLite transaction keeps most of the raw speed and
still gives atomic, crash-safe batches. A batch is visible only once its index rows commit, and the
index commits only after the bytes are written, so a crash mid-batch leaves at most an unreferenced
tail in a segment file, never a record pointing at missing bytes.

Consumer groups live in the same database: members heartbeat on poll, a member whose process is gone
(kill -9 included, checked by pid on this host) or silent past the session timeout is expelled, and
every membership change bumps the group generation, after which each member recomputes the same
round-robin assignment from the sorted member list. Share groups (record-by-record leases, several
members per partition) keep their state in the same database: log/sqlite_share.py.
"""

from __future__ import annotations

import errno
import json
import logging
import marshal
import os
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path

from ..errors import BackendUnavailable, InputError, LogCorrupted, LogWriteFailed, UnknownTopic
from ..types import Headers, Record, RecordMetadata
from .base import (
    DEFAULT_LEASE_S,
    DEFAULT_MAX_DELIVERIES,
    UNCHANGED,
    Consumer,
    FrameLog,
    GroupInfo,
    GroupPartition,
    OffsetReset,
    PartitionInfo,
    Producer,
    ShareConsumer,
    TopicChanges,
    TopicConfig,
    TopicInfo,
    Unchanged,
    check_offset_reset,
    check_partitions,
    check_record_size,
    check_topic_name,
    partition_for,
    topic_changes,
)

log = logging.getLogger("visionlake.log")

HOST = socket.gethostname()
#: The longest pause between two looks at an idle partition. A new frame waits for it before a worker
#: sees it, so it bounds the latency the log adds (p90 about 14 ms at 50 ms, 5 ms at 5 ms, measured
#: with 2 cameras at 15 fps); each look is one indexed read of tens of microseconds.
IDLE_POLL_S = 0.005

SCHEMA = """
CREATE TABLE IF NOT EXISTS topics(
  id INTEGER PRIMARY KEY, name TEXT UNIQUE NOT NULL, partitions INT NOT NULL,
  retention_ms INT, retention_bytes INT, max_record_bytes INT NOT NULL, created_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS partitions(
  tid INT, partition INT, start_offset INT NOT NULL, end_offset INT NOT NULL, bytes INT NOT NULL,
  active_segment INT NOT NULL, PRIMARY KEY(tid, partition)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS segments(
  tid INT, partition INT, base_offset INT, bytes INT NOT NULL, max_ts INT,
  PRIMARY KEY(tid, partition, base_offset)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS records(
  tid INT, partition INT, offset INT, ts INT NOT NULL, key BLOB, segment INT NOT NULL,
  pos INT NOT NULL, len INT NOT NULL, headers BLOB, PRIMARY KEY(tid, partition, offset)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS records_ts ON records(tid, partition, ts);
CREATE TABLE IF NOT EXISTS groups(name TEXT PRIMARY KEY, generation INT NOT NULL);
CREATE TABLE IF NOT EXISTS members(
  grp TEXT, member TEXT, topics TEXT NOT NULL, host TEXT, pid INT, heartbeat REAL NOT NULL,
  joined REAL NOT NULL, PRIMARY KEY(grp, member));
CREATE TABLE IF NOT EXISTS group_topics(grp TEXT, tid INT, PRIMARY KEY(grp, tid)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS offsets(
  grp TEXT, tid INT, partition INT, offset INT NOT NULL, committed_at REAL NOT NULL,
  PRIMARY KEY(grp, tid, partition));
CREATE TABLE IF NOT EXISTS share_partitions(
  grp TEXT, tid INT, partition INT, start_offset INT NOT NULL, next_offset INT NOT NULL,
  PRIMARY KEY(grp, tid, partition)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS share_records(
  grp TEXT, tid INT, partition INT, offset INT, state INT NOT NULL, deliveries INT NOT NULL,
  member TEXT, lease_until REAL, PRIMARY KEY(grp, tid, partition, offset)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS share_records_state ON share_records(grp, state);
CREATE TABLE IF NOT EXISTS share_members(
  grp TEXT, member TEXT, topics TEXT NOT NULL, host TEXT, pid INT, heartbeat REAL NOT NULL,
  PRIMARY KEY(grp, member));
"""


def encode_headers(headers: Headers | None) -> bytes:
    """Headers for the index: marshal of (name, value) pairs, C-fast both ways.

    The index is private to the embedded log (values live in segment files), so a Python-native
    encoding is fine here; `marshal` version 4 has been stable since Python 3.4.
    """
    if not headers:
        return b""
    return marshal.dumps([(str(k), bytes(v)) for k, v in headers], 4)


def decode_headers(blob: bytes | None) -> Headers:
    return marshal.loads(blob) if blob else []


def _write_all(fd: int, chunks: list[bytes]) -> None:
    """Append every chunk with writev (no joined copy), finishing short writes."""
    iov_max = 1024
    for i in range(0, len(chunks), iov_max):
        part = chunks[i : i + iov_max]
        want = sum(len(c) for c in part)
        done = os.writev(fd, part)
        if done < want:  # rare: finish the rest with plain writes
            rest = memoryview(b"".join(part))[done:]
            while rest:
                rest = rest[os.write(fd, rest) :]


def member_id() -> str:
    """A group member's name: host, pid (how a dead member is recognised) and a random part."""
    return f"{HOST}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def pid_alive(pid: int) -> bool:
    """True if a process with that pid runs on this host (zombies count as dead)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        return stat[stat.rindex(b")") + 2 : stat.rindex(b")") + 3] != b"Z"
    except OSError:
        return True


def round_robin(partitions: Sequence[int], members: Sequence[str]) -> dict[str, list[int]]:
    """Partition i goes to sorted member i mod m: deterministic, so every member computes the same."""
    out: dict[str, list[int]] = {m: [] for m in members}
    ms = sorted(members)
    for i, p in enumerate(sorted(partitions)):
        if ms:
            out[ms[i % len(ms)]].append(p)
    return out


class SqliteLog(FrameLog):
    """Embedded frame log in a directory; safe for many processes on one machine."""

    def __init__(
        self,
        root: str | Path,
        *,
        segment_bytes: int = 64 * 1024 * 1024,
        fsync: bool = False,
        session_timeout: float = 30.0,
        heartbeat_interval: float = 0.5,
        default_config: TopicConfig | None = None,
        retention_check_interval: float = 60.0,
    ) -> None:
        self.root = Path(root)
        self.url = f"sqlite://{self.root.resolve()}"
        try:
            (self.root / "data").mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise BackendUnavailable(f"cannot create the frame log at {self.root}: {e}") from e
        self.segment_bytes = segment_bytes
        self.fsync = fsync
        self.session_timeout = session_timeout
        self.heartbeat_interval = heartbeat_interval
        self.default_config = default_config or TopicConfig()
        self.retention_check_interval = retention_check_interval
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._conn.executescript(SCHEMA)

    # -- connections -------------------------------------------------------------------------

    @property
    def _conn(self) -> sqlite3.Connection:
        """This thread's admin connection (sqlite3 connections must not be shared by threads)."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self.connect()
            self._conns.append(conn)
        return conn

    def connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(
                self.root / "log.db", timeout=60, isolation_level=None, check_same_thread=False
            )
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL" if self.fsync else "PRAGMA synchronous=NORMAL")
        except sqlite3.Error as e:
            raise BackendUnavailable(f"cannot open the frame log database {self.root / 'log.db'}: {e}") from e
        return conn

    @staticmethod
    @contextmanager
    def write(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
        """One write transaction; the SQLite write lock also serialises segment appends.

        A failed COMMIT (disk full) is rolled back too, so that the connection can be used again, and
        the database's refusal is a LogWriteFailed: a BackendUnavailable that workers wait out.
        """
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    with suppress(sqlite3.Error):  # keep the error that got us here
                        conn.execute("ROLLBACK")
                raise
        except sqlite3.OperationalError as e:  # disk full, I/O error, locked past the timeout
            full = getattr(e, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL
            why = "disk full" if full else "its database refused a write"
            raise LogWriteFailed(f"cannot write to the frame log: {why} ({e})") from e

    def segment_path(self, topic: str, partition: int, base: int) -> Path:
        return self.root / "data" / topic / str(partition) / f"{base:020d}.seg"

    # -- topics ------------------------------------------------------------------------------

    def create_topic(self, name: str, config: TopicConfig | None = None, exist_ok: bool = True) -> None:
        check_topic_name(name)
        cfg = config or self.default_config
        if cfg.partitions < 1:
            raise InputError(f"topic {name!r}: partitions must be >= 1, got {cfg.partitions}")
        check_partitions(name, cfg.partitions)
        with self.write(self._conn) as c:
            row = c.execute("SELECT id FROM topics WHERE name=?", (name,)).fetchone()
            if row:
                if not exist_ok:
                    raise InputError(f"topic {name!r} already exists")
                return
            tid = c.execute(
                "INSERT INTO topics(name, partitions, retention_ms, retention_bytes, max_record_bytes,"
                " created_at) VALUES(?,?,?,?,?,?)",
                (
                    name,
                    cfg.partitions,
                    cfg.retention_ms,
                    cfg.retention_bytes,
                    cfg.max_record_bytes,
                    time.time(),
                ),
            ).lastrowid
            c.executemany(
                "INSERT INTO partitions VALUES(?,?,0,0,0,0)", [(tid, p) for p in range(cfg.partitions)]
            )
            c.executemany(
                "INSERT INTO segments VALUES(?,?,0,0,NULL)", [(tid, p) for p in range(cfg.partitions)]
            )
        for p in range(cfg.partitions):
            (self.root / "data" / name / str(p)).mkdir(parents=True, exist_ok=True)
        log.info("created topic %s with %d partitions", name, cfg.partitions)

    def alter_topic(
        self,
        name: str,
        *,
        partitions: int | Unchanged = UNCHANGED,
        retention_ms: int | None | Unchanged = UNCHANGED,
        retention_bytes: int | None | Unchanged = UNCHANGED,
        max_record_bytes: int | Unchanged = UNCHANGED,
    ) -> TopicChanges:
        """Change the given settings; more partitions are refused.

        Running producers and group members keep the partition count they started with, so adding
        partitions under them would split a camera's records over two partitions and make members
        disagree on the assignment.
        """
        with self.write(self._conn) as c:
            tid, n, rms, rbytes, maxb = self._topic_row(c, name)
            changes = topic_changes(
                name,
                TopicConfig(n, rms, rbytes, maxb),
                partitions=partitions,
                retention_ms=retention_ms,
                retention_bytes=retention_bytes,
                max_record_bytes=max_record_bytes,
            )
            if "partitions" in changes:
                raise InputError(
                    f"topic {name!r} has {n} partitions and the embedded log cannot add more to an existing"
                    f" topic (running producers and consumers keep the count they started with): create a"
                    f" new topic with {changes['partitions'][1]} partitions and replay into it"
                )
            for setting, (_old, new) in changes.items():  # setting: a TopicConfig field, not user text
                c.execute(f"UPDATE topics SET {setting}=? WHERE id=?", (new, tid))
        if changes:
            log.info("topic %s: changed %s", name, changes)
        return changes

    def _topic_row(self, conn: sqlite3.Connection, name: str) -> tuple:
        row = conn.execute(
            "SELECT id, partitions, retention_ms, retention_bytes, max_record_bytes FROM topics WHERE name=?",
            (name,),
        ).fetchone()
        if row is None:
            known = [r[0] for r in conn.execute("SELECT name FROM topics ORDER BY name")]
            raise UnknownTopic(f"unknown topic {name!r}; topics: {', '.join(known) or 'none yet'}")
        return row

    def open_topics(self, conn: sqlite3.Connection, topics: Iterable[str]) -> dict[str, tuple[int, int]]:
        """{name: (topic id, partitions)} for a reader, creating the topics that do not exist yet."""
        out = {}
        for t in topics:
            self.ensure_topic(t)
            row = self._topic_row(conn, t)
            out[t] = (row[0], row[1])
        return out

    def topic_config(self, name: str) -> TopicConfig:
        _, parts, rms, rbytes, maxb = self._topic_row(self._conn, name)
        return TopicConfig(parts, rms, rbytes, maxb)

    def topics(self) -> list[TopicInfo]:
        out = []
        for tid, name, parts, rms, rbytes, maxb in self._conn.execute(
            "SELECT id, name, partitions, retention_ms, retention_bytes, max_record_bytes FROM topics ORDER BY name"
        ).fetchall():
            pinfo = [
                PartitionInfo(p, s, e, b)
                for p, s, e, b in self._conn.execute(
                    "SELECT partition, start_offset, end_offset, bytes FROM partitions WHERE tid=? ORDER BY partition",
                    (tid,),
                )
            ]
            out.append(TopicInfo(name, TopicConfig(parts, rms, rbytes, maxb), pinfo))
        return out

    # -- groups ------------------------------------------------------------------------------

    def groups(self) -> list[GroupInfo]:
        c = self._conn
        names = [r[0] for r in c.execute("SELECT name FROM groups ORDER BY name")]
        out = []
        for g in names:
            members = c.execute(
                "SELECT member, topics FROM members WHERE grp=? ORDER BY member", (g,)
            ).fetchall()
            subscribed = {t for _, ts in members for t in json.loads(ts)}
            committed = {
                (tid, p): o
                for tid, p, o in c.execute("SELECT tid, partition, offset FROM offsets WHERE grp=?", (g,))
            }
            # every topic the group ever read: a partition never committed still shows its lag
            tids = {tid for tid, _ in committed} | {
                r[0] for r in c.execute("SELECT tid FROM group_topics WHERE grp=?", (g,))
            }
            rows = c.execute("SELECT id, name, partitions FROM topics ORDER BY name").fetchall()
            parts: list[GroupPartition] = []
            for tid, name, n in rows:
                if name not in subscribed and tid not in tids:
                    continue
                owners = round_robin(range(n), [m for m, ts in members if name in json.loads(ts)])
                owner_of = {p: m for m, ps in owners.items() for p in ps}
                ends = dict(c.execute("SELECT partition, end_offset FROM partitions WHERE tid=?", (tid,)))
                for p in range(n):
                    parts.append(GroupPartition(name, p, committed.get((tid, p)), ends[p], owner_of.get(p)))
            out.append(GroupInfo(g, [m for m, _ in members], parts))
        return sorted(out + self._share_groups(), key=lambda g: g.group)

    def _share_groups(self) -> list[GroupInfo]:
        """Share groups, their start offsets as the committed ones (see sqlite_share.py)."""
        from .sqlite_share import share_members

        c = self._conn
        rows = c.execute(
            "SELECT s.grp, t.name, s.partition, s.start_offset, p.end_offset FROM share_partitions s"
            " JOIN topics t ON t.id=s.tid JOIN partitions p ON p.tid=s.tid AND p.partition=s.partition"
            " ORDER BY s.grp, t.name, s.partition"
        ).fetchall()
        out: dict[str, GroupInfo] = {}
        for g, topic, p, start, end in rows:
            info = out.get(g) or out.setdefault(g, GroupInfo(g, share_members(c, g), kind="share"))
            info.partitions.append(GroupPartition(topic, p, start, end))
        return list(out.values())

    def offsets_for_time(self, topic: str, timestamp_ms: int) -> dict[int, int]:
        """Per partition, the first offset whose timestamp is >= timestamp_ms (the end offset if none)."""
        tid, n = self._topic_row(self._conn, topic)[:2]
        out = {}
        for p in range(n):
            row = self._conn.execute(
                "SELECT min(offset) FROM records WHERE tid=? AND partition=? AND ts>=?",
                (tid, p, timestamp_ms),
            ).fetchone()
            if row[0] is None:
                row = self._conn.execute(
                    "SELECT end_offset FROM partitions WHERE tid=? AND partition=?", (tid, p)
                ).fetchone()
            out[p] = row[0]
        return out

    def commit_group_offsets(self, group: str, topic: str, offsets: dict[int, int]) -> None:
        """Set a group's committed offsets (like kafka-consumer-groups --reset-offsets)."""
        tid = self._topic_row(self._conn, topic)[0]
        with self.write(self._conn) as c:
            c.execute("INSERT OR IGNORE INTO groups VALUES(?, 0)", (group,))
            c.executemany(
                "INSERT OR REPLACE INTO offsets VALUES(?,?,?,?,?)",
                [(group, tid, p, o, time.time()) for p, o in offsets.items()],
            )

    def share_offsets(self, group: str, topic: str) -> dict[int, int]:
        from .sqlite_share import share_offsets

        return share_offsets(self._conn, group, self._topic_row(self._conn, topic)[0])

    def group_offsets(self, group: str, topic: str) -> dict[int, int]:
        tid = self._topic_row(self._conn, topic)[0]
        return dict(
            self._conn.execute("SELECT partition, offset FROM offsets WHERE grp=? AND tid=?", (group, tid))
        )

    def delete_group(self, group: str) -> None:
        with self.write(self._conn) as c:
            for table, col in (
                ("offsets", "grp"),
                ("members", "grp"),
                ("group_topics", "grp"),
                ("groups", "name"),
            ):
                c.execute(f"DELETE FROM {table} WHERE {col}=?", (group,))

    # -- clients -----------------------------------------------------------------------------

    def producer(self) -> SqliteProducer:
        return SqliteProducer(self)

    def consumer(
        self,
        topics: Sequence[str],
        group: str | None = None,
        offset_reset: OffsetReset = "earliest",
        partitions: Iterable[int] | None = None,
    ) -> SqliteConsumer:
        check_offset_reset(offset_reset)
        return SqliteConsumer(self, list(topics), group, offset_reset, partitions)

    def share_consumer(
        self,
        topics: Sequence[str],
        group: str,
        offset_reset: OffsetReset = "earliest",
        *,
        lease_s: float = DEFAULT_LEASE_S,
        max_deliveries: int = DEFAULT_MAX_DELIVERIES,
        start_from: str | None = None,
    ) -> ShareConsumer:
        from .sqlite_share import SqliteShareConsumer

        check_offset_reset(offset_reset)
        return SqliteShareConsumer(
            self,
            topics,
            group,
            offset_reset,
            lease_s=lease_s,
            max_deliveries=max_deliveries,
            start_from=start_from,
        )

    # -- retention ---------------------------------------------------------------------------

    def enforce_retention(self) -> int:
        removed = 0
        now_ms = int(time.time() * 1000)
        for tid, name, rms, rbytes in self._conn.execute(
            "SELECT id, name, retention_ms, retention_bytes FROM topics"
            " WHERE retention_ms IS NOT NULL OR retention_bytes IS NOT NULL"
        ).fetchall():
            for (p,) in self._conn.execute("SELECT partition FROM partitions WHERE tid=?", (tid,)).fetchall():
                removed += self._retain_partition(tid, name, p, rms, rbytes, now_ms)
        return removed

    def _retain_partition(
        self, tid: int, topic: str, p: int, rms: int | None, rbytes: int | None, now_ms: int
    ) -> int:
        removed = 0
        doomed: list[Path] = []
        with self.write(self._conn) as c:
            active, total = c.execute(
                "SELECT active_segment, bytes FROM partitions WHERE tid=? AND partition=?", (tid, p)
            ).fetchone()
            segs = c.execute(
                "SELECT base_offset, bytes, max_ts FROM segments WHERE tid=? AND partition=? ORDER BY base_offset",
                (tid, p),
            ).fetchall()
            for i, (base, nbytes, max_ts) in enumerate(segs):
                if base == active:
                    break
                too_old = rms is not None and max_ts is not None and max_ts < now_ms - rms
                too_big = rbytes is not None and total > rbytes
                if not (too_old or too_big):
                    break
                nxt = segs[i + 1][0]
                removed += c.execute(
                    "DELETE FROM records WHERE tid=? AND partition=? AND offset>=? AND offset<?",
                    (tid, p, base, nxt),
                ).rowcount
                c.execute(
                    "DELETE FROM segments WHERE tid=? AND partition=? AND base_offset=?", (tid, p, base)
                )
                total -= nbytes
                c.execute(
                    "UPDATE partitions SET start_offset=?, bytes=? WHERE tid=? AND partition=?",
                    (nxt, total, tid, p),
                )
                doomed.append(self.segment_path(topic, p, base))
        for path in doomed:
            path.unlink(missing_ok=True)
        if removed:
            log.info("retention removed %d records from %s/%d", removed, topic, p)
        return removed

    def close(self) -> None:
        for conn in self._conns:
            conn.close()
        self._conns.clear()
        self._local = threading.local()


class SqliteProducer(Producer):
    """Batches records in memory; `flush` appends each partition's values and indexes them in one commit."""

    def __init__(
        self, log_: SqliteLog, batch_records: int = 1000, batch_bytes: int = 16 * 1024 * 1024
    ) -> None:
        self.log = log_
        self.conn = log_.connect()
        self.batch_records = batch_records
        self.batch_bytes = batch_bytes
        self._pending: list[tuple[str, int, bytes, bytes | None, bytes, int]] = []
        self._pending_bytes = 0
        self._topics: dict[str, tuple[int, int, int]] = {}  # name -> (tid, partitions, max bytes)
        self._rr = 0
        self._fds: dict[tuple[int, int, int], int] = {}
        self._last_retention = time.monotonic()
        self._lock = threading.Lock()  # guards _pending
        self._flush_lock = threading.Lock()  # one flush at a time: each writes the head of _pending

    def _topic(self, name: str) -> tuple[int, int, int]:
        info = self._topics.get(name)
        if info is None:
            try:
                row = self.log._topic_row(self.conn, name)
            except UnknownTopic:
                self.log.create_topic(name)  # auto-create, as Kafka brokers do by default
                row = self.log._topic_row(self.conn, name)
            info = self._topics[name] = (row[0], row[1], row[4])
        return info

    def send(
        self,
        topic: str,
        value: bytes,
        key: bytes | None = None,
        headers: Headers | None = None,
        timestamp_ms: int | None = None,
        partition: int | None = None,
    ) -> None:
        tid, nparts, max_bytes = self._topic(topic)
        check_record_size(topic, value, max_bytes)
        if partition is None:
            partition = partition_for(key, nparts, self._rr)
            self._rr += 1
        elif not 0 <= partition < nparts:
            raise InputError(f"topic {topic!r} has partitions 0-{nparts - 1}, not {partition}")
        ts = int(time.time() * 1000) if timestamp_ms is None else int(timestamp_ms)
        with self._lock:
            self._pending.append((topic, partition, bytes(value), key, encode_headers(headers), ts))
            self._pending_bytes += len(value)
            full = len(self._pending) >= self.batch_records or self._pending_bytes >= self.batch_bytes
        if full:
            self.flush()

    def _fd(self, topic: str, tid: int, p: int, base: int) -> int:
        fd = self._fds.get((tid, p, base))
        if fd is None:
            path = self.log.segment_path(topic, p, base)
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = self._fds[(tid, p, base)] = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        return fd

    def flush(self, timeout: float = 30.0) -> list[RecordMetadata]:
        """Write the queued records; they leave the queue only once indexed, so a failed flush
        (LogWriteFailed) loses nothing. Bytes a failed write left at a segment's end are never indexed:
        the retry appends after them, as positions come from the file size.
        """
        with self._flush_lock:
            with self._lock:
                batch = list(self._pending)
            if not batch:
                return []
            try:
                out = self._write(batch)
            except (OSError, sqlite3.Error, LogWriteFailed) as e:
                raise self._write_failed(e, len(batch)) from e
            with self._lock:
                del self._pending[: len(batch)]
                self._pending_bytes -= sum(len(r[2]) for r in batch)
        if time.monotonic() - self._last_retention > self.log.retention_check_interval:
            self._last_retention = time.monotonic()
            self.log.enforce_retention()
        return out

    def _write_failed(self, e: OSError | sqlite3.Error | LogWriteFailed, n: int) -> LogWriteFailed:
        if isinstance(e, LogWriteFailed) and isinstance(e.__cause__, sqlite3.Error):
            e = e.__cause__
        if isinstance(e, OSError):
            why = {
                errno.ENOSPC: "disk full",
                errno.EDQUOT: "disk quota exceeded",
                errno.EFBIG: "file too large (file system or process file size limit)",
            }.get(e.errno or 0, "write error")
            detail = f"{e.strerror or e}" + (f": {e.filename}" if e.filename else "")
        else:
            full = getattr(e, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL
            why, detail = ("disk full" if full else "index write error"), f"{self.log.root / 'log.db'}: {e}"
        return LogWriteFailed(
            f"cannot write to the frame log at {self.log.root}: {why} ({detail}); "
            f"the {n} queued records are kept: flush again once that is fixed"
        )

    def _write(self, batch: list[tuple[str, int, bytes, bytes | None, bytes, int]]) -> list[RecordMetadata]:
        """Append each partition's values, then index them all in one transaction."""
        by_part: dict[tuple[str, int], list[int]] = {}
        for i, (topic, p, *_rest) in enumerate(batch):
            by_part.setdefault((topic, p), []).append(i)
        out: list[RecordMetadata | None] = [None] * len(batch)
        with SqliteLog.write(self.conn) as c:
            for (topic, p), idxs in by_part.items():
                tid = self._topics[topic][0]
                end, active, total = c.execute(
                    "SELECT end_offset, active_segment, bytes FROM partitions WHERE tid=? AND partition=?",
                    (tid, p),
                ).fetchone()
                seg_bytes = c.execute(
                    "SELECT bytes FROM segments WHERE tid=? AND partition=? AND base_offset=?",
                    (tid, p, active),
                ).fetchone()[0]
                if seg_bytes >= self.log.segment_bytes:  # roll to a new segment
                    old = self._fds.pop((tid, p, active), None)
                    if old is not None:
                        os.close(old)
                    active, seg_bytes = end, 0
                    c.execute("INSERT INTO segments VALUES(?,?,?,0,NULL)", (tid, p, active))
                    c.execute(
                        "UPDATE partitions SET active_segment=? WHERE tid=? AND partition=?", (active, tid, p)
                    )
                fd = self._fd(topic, tid, p, active)
                pos = os.fstat(fd).st_size
                rows, values, max_ts, nbytes = [], [], 0, 0
                for j, i in enumerate(idxs):
                    _, _, value, key, hdr, ts = batch[i]
                    rows.append((tid, p, end + j, ts, key, active, pos + nbytes, len(value), hdr))
                    values.append(value)
                    nbytes += len(value)
                    max_ts = max(max_ts, ts)
                    out[i] = RecordMetadata(topic, p, end + j)
                _write_all(fd, values)
                if self.log.fsync:
                    os.fdatasync(fd)
                c.executemany("INSERT INTO records VALUES(?,?,?,?,?,?,?,?,?)", rows)
                c.execute(
                    "UPDATE partitions SET end_offset=?, bytes=? WHERE tid=? AND partition=?",
                    (end + len(idxs), total + nbytes, tid, p),
                )
                c.execute(
                    "UPDATE segments SET bytes=bytes+?, max_ts=max(coalesce(max_ts, 0), ?)"
                    " WHERE tid=? AND partition=? AND base_offset=?",
                    (nbytes, max_ts, tid, p, active),
                )
        return out  # type: ignore[return-value]

    def close(self) -> None:
        self.flush()
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()
        self.conn.close()


class _SegmentMissing(Exception):
    """A segment file the index refers to could not be opened."""

    def __init__(self, segment: int, offset: int, path: Path) -> None:
        super().__init__(f"segment file {path} is missing (offset {offset})")
        self.segment, self.offset, self.path = segment, offset, path


class SegmentReader:
    """Reads record values out of segment files for one reader, keeping each file open once."""

    def __init__(self, log_: SqliteLog, conn: sqlite3.Connection, topics: dict[str, tuple[int, int]]) -> None:
        self.log = log_
        self.conn = conn
        self.topics = topics  # name -> (tid, partitions)
        self._files: dict[tuple[str, int, int], int] = {}

    def read(self, topic: str, p: int, rows: list[tuple]) -> list[bytes]:
        """Values of index rows: one pread each into a fresh bytes object (no second copy).

        Raises _SegmentMissing for a segment file that is not there (retention may just have removed it).
        """
        values = []
        for row in rows:
            key = (topic, p, row[3])
            fd = self._files.get(key)
            if fd is None:
                path = self.log.segment_path(topic, p, row[3])
                try:
                    fd = self._files[key] = os.open(path, os.O_RDONLY)
                except FileNotFoundError:
                    raise _SegmentMissing(row[3], row[0], path) from None
            data = os.pread(fd, row[5], row[4])
            if len(data) != row[5]:
                raise self.corrupted(
                    topic, p, row[3], f"ends before offset {row[0]} ({row[5]} bytes at position {row[4]})"
                )
            values.append(data)
        return values

    def corrupted(self, topic: str, p: int, segment: int, what: str) -> LogCorrupted:
        """The error for a segment file the index still lists but that is missing or short."""
        tid = self.topics[topic][0]
        first, last = self.conn.execute(
            "SELECT min(offset), max(offset) FROM records WHERE tid=? AND partition=? AND segment=?",
            (tid, p, segment),
        ).fetchone()
        path = self.log.segment_path(topic, p, segment)
        return LogCorrupted(
            f"frame log {self.log.root}: segment file {path} of {topic}/{p} {what}, but the index still"
            f" lists offsets {first}-{last} in it (retention did not remove it). Restore the file from a"
            f" backup; to give those records up instead, move the consumer group past offset {last}"
            f" (FrameLog.commit_group_offsets)"
        )

    def close(self) -> None:
        for fd in self._files.values():
            os.close(fd)
        self._files.clear()


class SqliteConsumer(Consumer):
    """A reader of the embedded log; with a group it is one member sharing the partitions."""

    def __init__(
        self,
        log_: SqliteLog,
        topics: list[str],
        group: str | None,
        offset_reset: OffsetReset,
        partitions: Iterable[int] | None,
    ) -> None:
        self.log = log_
        self.conn = log_.connect()
        self.group = group
        self.offset_reset = offset_reset
        self.member_id = member_id()
        self._topics = log_.open_topics(self.conn, topics)
        self._positions: dict[tuple[str, int], int] = {}
        self._consumed: dict[tuple[str, int], int] = {}
        self._generation = -1
        self._last_heartbeat = 0.0
        self._rr = 0
        self._segments = SegmentReader(log_, self.conn, self._topics)
        self._closed = False
        if group is None:
            for t, (_, n) in self._topics.items():
                for p in partitions if partitions is not None else range(n):
                    if not 0 <= p < n:
                        raise InputError(f"topic {t!r} has partitions 0-{n - 1}, not {p}")
                    self._positions[(t, p)] = self._reset_offset(t, p)
        else:
            self._join()

    # -- membership --------------------------------------------------------------------------

    def _join(self) -> None:
        now = time.time()
        with SqliteLog.write(self.conn) as c:
            if c.execute("SELECT 1 FROM share_partitions WHERE grp=? LIMIT 1", (self.group,)).fetchone():
                raise InputError(
                    f"group {self.group!r} is a share group (worker --shared); ordered reading needs a"
                    " consumer group of another name"
                )
            c.execute("INSERT OR IGNORE INTO groups VALUES(?, 0)", (self.group,))
            c.executemany(
                "INSERT OR IGNORE INTO group_topics VALUES(?,?)",
                [(self.group, tid) for tid, _ in self._topics.values()],
            )
            c.execute(
                "INSERT OR REPLACE INTO members VALUES(?,?,?,?,?,?,?)",
                (self.group, self.member_id, json.dumps(sorted(self._topics)), HOST, os.getpid(), now, now),
            )
            c.execute("UPDATE groups SET generation=generation+1 WHERE name=?", (self.group,))
            self._sync(c)
        self._last_heartbeat = time.monotonic()
        log.info("member %s joined group %s: partitions %s", self.member_id, self.group, self.assignment())

    def _expire(self, c: sqlite3.Connection) -> None:
        """Expel members whose process is gone or that stopped heartbeating."""
        now = time.time()
        dead = [
            m
            for m, host, pid, hb in c.execute(
                "SELECT member, host, pid, heartbeat FROM members WHERE grp=?", (self.group,)
            )
            if m != self.member_id
            and (
                hb < now - self.log.session_timeout
                or (host == HOST and pid is not None and not pid_alive(pid))
            )
        ]
        if dead:
            c.executemany("DELETE FROM members WHERE grp=? AND member=?", [(self.group, m) for m in dead])
            c.execute("UPDATE groups SET generation=generation+1 WHERE name=?", (self.group,))
            log.warning("group %s: expelled %d dead member(s) %s; rebalancing", self.group, len(dead), dead)

    def _sync(self, c: sqlite3.Connection) -> None:
        """Recompute the assignment if the generation moved (inside the caller's transaction)."""
        gen = c.execute("SELECT generation FROM groups WHERE name=?", (self.group,)).fetchone()[0]
        if gen == self._generation:
            return
        members = c.execute("SELECT member, topics FROM members WHERE grp=?", (self.group,)).fetchall()
        mine: set[tuple[str, int]] = set()
        for t, (_, n) in self._topics.items():
            subs = [m for m, ts in members if t in json.loads(ts)]
            mine.update((t, p) for p in round_robin(range(n), subs).get(self.member_id, []))
        old = set(self._positions)
        for tp in old - mine:
            del self._positions[tp]
            self._consumed.pop(tp, None)
        for t, p in sorted(mine - old):
            tid = self._topics[t][0]
            row = c.execute(
                "SELECT offset FROM offsets WHERE grp=? AND tid=? AND partition=?", (self.group, tid, p)
            ).fetchone()
            self._positions[(t, p)] = row[0] if row else self._reset_offset(t, p, c)
        if self._generation >= 0 and old != mine:
            log.info(
                "group %s generation %d: member %s now reads %s",
                self.group,
                gen,
                self.member_id,
                sorted(mine),
            )
        self._generation = gen

    def _heartbeat(self, force: bool = False) -> None:
        if self.group is None or (
            not force and time.monotonic() - self._last_heartbeat < self.log.heartbeat_interval
        ):
            return
        with SqliteLog.write(self.conn) as c:
            cur = c.execute(
                "UPDATE members SET heartbeat=? WHERE grp=? AND member=?",
                (time.time(), self.group, self.member_id),
            )
            if cur.rowcount == 0:  # we were expelled (stalled too long): rejoin
                log.warning("member %s was expelled from group %s; rejoining", self.member_id, self.group)
                now = time.time()
                c.execute(
                    "INSERT INTO members VALUES(?,?,?,?,?,?,?)",
                    (
                        self.group,
                        self.member_id,
                        json.dumps(sorted(self._topics)),
                        HOST,
                        os.getpid(),
                        now,
                        now,
                    ),
                )
                c.execute("UPDATE groups SET generation=generation+1 WHERE name=?", (self.group,))
            self._expire(c)
            self._sync(c)
        self._last_heartbeat = time.monotonic()

    # -- reading -----------------------------------------------------------------------------

    def _bounds(self, t: str, p: int, c: sqlite3.Connection | None = None) -> tuple[int, int]:
        row = (
            (c or self.conn)
            .execute(
                "SELECT start_offset, end_offset FROM partitions WHERE tid=? AND partition=?",
                (self._topics[t][0], p),
            )
            .fetchone()
        )
        return row[0], row[1]

    def _reset_offset(self, t: str, p: int, c: sqlite3.Connection | None = None) -> int:
        start, end = self._bounds(t, p, c)
        return start if self.offset_reset == "earliest" else end

    def poll(self, max_records: int = 100, timeout: float = 1.0) -> list[Record]:
        deadline = time.monotonic() + timeout
        pause = 0.002
        while True:
            self._heartbeat()
            records = self._fetch(max_records)
            now = time.monotonic()
            if records or now >= deadline or self._closed:
                return records
            time.sleep(min(pause, deadline - now))
            pause = min(pause * 2, IDLE_POLL_S)

    def _fetch(self, max_records: int) -> list[Record]:
        tps = sorted(self._positions)
        if not tps:
            return []
        self._rr = (self._rr + 1) % len(tps)
        out: list[Record] = []
        for tp in tps[self._rr :] + tps[: self._rr]:
            if len(out) >= max_records:
                break
            t, p = tp
            tid = self._topics[t][0]
            pos = self._positions[tp]
            rows = self.conn.execute(
                "SELECT offset, ts, key, segment, pos, len, headers FROM records"
                " WHERE tid=? AND partition=? AND offset>=? ORDER BY offset LIMIT ?",
                (tid, p, pos, max_records - len(out)),
            ).fetchall()
            if rows and rows[0][0] > pos:
                start, _ = self._bounds(t, p)
                if pos < start:
                    log.warning("%s/%d: offset %d is past retention; resuming at %d", t, p, pos, start)
            try:
                values = self._segments.read(t, p, rows)
            except _SegmentMissing as e:
                if e.offset < self._bounds(t, p)[0]:  # retention removed it after the query: resume
                    continue  # at the new start next round
                raise self._segments.corrupted(t, p, e.segment, "is missing") from None
            for (offset, ts, key, _seg, _pos, _len, hdr), value in zip(rows, values, strict=True):
                out.append(Record(t, p, offset, ts, key, value, decode_headers(hdr)))
            if rows:
                self._positions[tp] = self._consumed[tp] = rows[-1][0] + 1
        return out

    # -- offsets -----------------------------------------------------------------------------

    def commit(self, offsets: dict[tuple[str, int], int] | None = None) -> dict[tuple[str, int], int]:
        if self.group is None:
            raise InputError("commit needs a consumer group")
        todo = dict(self._consumed if offsets is None else offsets)
        if not todo:
            return {}
        with SqliteLog.write(self.conn) as c:
            alive = c.execute(
                "UPDATE members SET heartbeat=? WHERE grp=? AND member=?",
                (time.time(), self.group, self.member_id),
            ).rowcount
            if not alive:
                log.warning(
                    "member %s is no longer in group %s: %d offsets not committed",
                    self.member_id,
                    self.group,
                    len(todo),
                )
                return {}
            self._sync(c)
            done = {tp: o for tp, o in todo.items() if tp in self._positions}
            c.executemany(
                "INSERT OR REPLACE INTO offsets VALUES(?,?,?,?,?)",
                [(self.group, self._topics[t][0], p, o, time.time()) for (t, p), o in done.items()],
            )
        lost = set(todo) - set(done)
        if lost:
            log.warning(
                "partitions %s moved to another member before commit; they resume there", sorted(lost)
            )
        for tp in done:
            if self._consumed.get(tp) == done[tp]:
                self._consumed.pop(tp, None)
        return done

    def assignment(self) -> list[tuple[str, int]]:
        return sorted(self._positions)

    def _check_assigned(self, topic: str, partition: int) -> None:
        if (topic, partition) not in self._positions:
            raise InputError(f"partition {topic}/{partition} is not assigned to this consumer")

    def seek(self, topic: str, partition: int, offset: int) -> None:
        self._check_assigned(topic, partition)
        start, end = self._bounds(topic, partition)
        self._positions[(topic, partition)] = min(max(offset, start), end)

    def seek_to(self, where: OffsetReset) -> None:
        for t, p in self._positions:
            start, end = self._bounds(t, p)
            self._positions[(t, p)] = start if where == "earliest" else end

    def seek_to_time(self, timestamp_ms: int) -> None:
        for t, p in list(self._positions):
            row = self.conn.execute(
                "SELECT min(offset) FROM records WHERE tid=? AND partition=? AND ts>=?",
                (self._topics[t][0], p, timestamp_ms),
            ).fetchone()
            self._positions[(t, p)] = row[0] if row[0] is not None else self._bounds(t, p)[1]

    def position(self, topic: str, partition: int) -> int:
        self._check_assigned(topic, partition)
        return self._positions[(topic, partition)]

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.group is not None:
            try:
                with SqliteLog.write(self.conn) as c:
                    c.execute("DELETE FROM members WHERE grp=? AND member=?", (self.group, self.member_id))
                    c.execute("UPDATE groups SET generation=generation+1 WHERE name=?", (self.group,))
                log.info("member %s left group %s", self.member_id, self.group)
            except LogWriteFailed as e:  # the others expel this member once its process is gone
                log.warning("member %s could not leave group %s: %s", self.member_id, self.group, e)
        self._segments.close()
        self.conn.close()
