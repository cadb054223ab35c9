"""Share groups on the embedded log: several members read one partition, each record leased to one.

Kafka's share groups (KIP-932) in the log's own database, so that a busy camera's one partition can
feed any number of workers. Per (group, topic, partition) the log keeps a start offset (every record
before it is acknowledged) and the first offset never handed out; between the two, one row per record
says whether it is available, leased (to which member, until when, delivered how often) or
acknowledged. Every change is one SQLite transaction, so a crash at any point leaves each record in
exactly one of those states:

- `poll` leases available records (released, or whose lease ran out, or whose member's process is
  gone) before new ones, and raises their delivery count;
- `acknowledge` marks records done and moves the start offset over the acknowledged run;
- `release` (and `close`) hands leased records back at once, without counting the delivery.

Ordering within a partition is given up: members finish records in any order. A record delivered
more than `max_deliveries` times is still handed out, with its `delivery_count`, so that the reader
can dead-letter it rather than crash on it again.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import time
from collections.abc import Iterable, Sequence

from ..errors import InputError
from ..types import Record
from .base import DEFAULT_LEASE_S, DEFAULT_MAX_DELIVERIES, OffsetReset, ShareConsumer
from .sqlite import (
    HOST,
    IDLE_POLL_S,
    SegmentReader,
    SqliteLog,
    _SegmentMissing,
    decode_headers,
    member_id,
    pid_alive,
)

log = logging.getLogger("visionlake.log")

AVAILABLE, LEASED, ACKED = 0, 1, 2


_INDEX_COLUMNS = "r.offset, r.ts, r.key, r.segment, r.pos, r.len, r.headers"


def is_share_group(conn: sqlite3.Connection, group: str) -> bool:
    return conn.execute("SELECT 1 FROM share_partitions WHERE grp=? LIMIT 1", (group,)).fetchone() is not None


def share_offsets(conn: sqlite3.Connection, group: str, tid: int) -> dict[int, int]:
    return dict(
        conn.execute(
            "SELECT partition, start_offset FROM share_partitions WHERE grp=? AND tid=?", (group, tid)
        )
    )


def share_members(conn: sqlite3.Connection, group: str) -> list[str]:
    return [
        r[0] for r in conn.execute("SELECT member FROM share_members WHERE grp=? ORDER BY member", (group,))
    ]


class SqliteShareConsumer(ShareConsumer):
    """One member of a share group on the embedded log."""

    def __init__(
        self,
        log_: SqliteLog,
        topics: Sequence[str],
        group: str,
        offset_reset: OffsetReset = "earliest",
        *,
        lease_s: float = DEFAULT_LEASE_S,
        max_deliveries: int = DEFAULT_MAX_DELIVERIES,
        start_from: str | None = None,
    ) -> None:
        if lease_s <= 0 or max_deliveries < 1:
            raise InputError(
                f"a share group needs a lease > 0 s and max deliveries >= 1, got {lease_s}, {max_deliveries}"
            )
        self.log = log_
        self.group = group
        self.lease_s = lease_s
        self.max_deliveries = max_deliveries
        self.conn = log_.connect()
        self.member_id = member_id()
        self._topics = log_.open_topics(self.conn, topics)
        self._names = {tid: t for t, (tid, _) in self._topics.items()}
        self._tids = ",".join(str(tid) for tid in self._names)  # integers from the log's own table
        self._segments = SegmentReader(log_, self.conn, self._topics)
        self._held: set[tuple[int, int, int]] = set()  # (tid, partition, offset) leased to this member
        self._last_reap = 0.0
        self._closed = False
        self._join(offset_reset, start_from)

    # -- membership --------------------------------------------------------------------------

    def _join(self, offset_reset: OffsetReset, start_from: str | None) -> None:
        """Register, and give each partition new to the group its start offset: where consumer group
        `start_from` committed, else the partition's start or end (`offset_reset`)."""
        with SqliteLog.write(self.conn) as c:
            if c.execute("SELECT 1 FROM groups WHERE name=?", (self.group,)).fetchone():
                raise InputError(
                    f"group {self.group!r} is a consumer group (ordered reading, one member per partition);"
                    f" a share group needs a name of its own, e.g. {self.group + '.shared'!r}"
                )
            for tid, _ in self._topics.values():
                committed = dict(
                    c.execute(
                        "SELECT partition, offset FROM offsets WHERE grp=? AND tid=?", (start_from, tid)
                    )
                )
                for p, start, end in c.execute(
                    "SELECT partition, start_offset, end_offset FROM partitions WHERE tid=?", (tid,)
                ).fetchall():
                    first = committed.get(p, start if offset_reset == "earliest" else end)
                    c.execute(
                        "INSERT OR IGNORE INTO share_partitions VALUES(?,?,?,?,?)",
                        (self.group, tid, p, max(first, start), max(first, start)),
                    )
            self._register(c, time.time())
        log.info("member %s joined share group %s on %s", self.member_id, self.group, sorted(self._topics))

    def _register(self, c: sqlite3.Connection, now: float) -> None:
        """This member's row: what `log groups` lists, and the host and pid that tell it is gone."""
        c.execute(
            "INSERT OR REPLACE INTO share_members VALUES(?,?,?,?,?,?)",
            (self.group, self.member_id, json.dumps(sorted(self._topics)), HOST, os.getpid(), now),
        )

    def _reap(self, c: sqlite3.Connection, now: float) -> int:
        """Make available again the leases that ran out or whose member's process is gone.

        A member on another host, or one busy with a long batch, keeps its leases until they run out
        (`lease_s`): its silence alone does not take them. A member silent past the session timeout
        and holding nothing is dropped from the list.
        """
        freed = c.execute(
            "UPDATE share_records SET state=?, member=NULL, lease_until=NULL"
            " WHERE grp=? AND state=? AND lease_until<?",
            (AVAILABLE, self.group, LEASED, now),
        ).rowcount
        holders = c.execute(
            "SELECT DISTINCT r.member, m.host, m.pid FROM share_records r LEFT JOIN share_members m"
            " ON m.grp=r.grp AND m.member=r.member WHERE r.grp=? AND r.state=? AND r.member<>?",
            (self.group, LEASED, self.member_id),
        ).fetchall()
        gone = [
            m
            for m, host, pid in holders
            if host is None or (host == HOST and pid is not None and not pid_alive(pid))
        ]
        for m in gone:
            n = c.execute(
                "UPDATE share_records SET state=?, member=NULL, lease_until=NULL WHERE grp=? AND state=? AND member=?",
                (AVAILABLE, self.group, LEASED, m),
            ).rowcount
            c.execute("DELETE FROM share_members WHERE grp=? AND member=?", (self.group, m))
            log.warning(
                "share group %s: member %s is gone; %d record(s) it held are available again",
                self.group,
                m,
                n,
            )
            freed += n
        c.execute(
            "DELETE FROM share_members WHERE grp=? AND heartbeat<? AND member NOT IN"
            " (SELECT member FROM share_records WHERE grp=? AND state=? AND member IS NOT NULL)",
            (self.group, now - self.log.session_timeout, self.group, LEASED),
        )
        return freed

    # -- reading -----------------------------------------------------------------------------

    def poll(self, max_records: int = 100, timeout: float = 1.0) -> list[Record]:
        deadline = time.monotonic() + timeout
        pause = 0.002
        while True:
            records = self._acquire(max_records) if self._ready() else []
            now = time.monotonic()
            if records or now >= deadline or self._closed:
                return records
            time.sleep(min(pause, deadline - now))
            pause = min(pause * 2, IDLE_POLL_S)

    def _ready(self) -> bool:
        """Read-only check that a lease could be taken now: spares the write lock when idle."""
        now = time.time()
        if now - self._last_reap >= self.log.heartbeat_interval:
            return True  # heartbeat, and look for members that are gone
        row = self.conn.execute(
            "SELECT EXISTS(SELECT 1 FROM share_records WHERE grp=? AND (state=? OR (state=? AND lease_until<?)))"
            " OR EXISTS(SELECT 1 FROM share_partitions s JOIN partitions p ON p.tid=s.tid AND p.partition=s.partition"
            f" WHERE s.grp=? AND s.tid IN ({self._tids}) AND p.end_offset>s.next_offset)",
            (self.group, AVAILABLE, LEASED, now, self.group),
        ).fetchone()
        return bool(row[0])

    def _acquire(self, max_records: int) -> list[Record]:
        now = time.time()
        until = now + self.lease_s
        with SqliteLog.write(self.conn) as c:
            beat = "UPDATE share_members SET heartbeat=? WHERE grp=? AND member=?"
            if c.execute(beat, (now, self.group, self.member_id)).rowcount == 0:
                self._register(c, now)  # dropped while silent (a long stall): back on the list
            if now - self._last_reap >= self.log.heartbeat_interval:
                self._reap(c, now)
                self._last_reap = now
            # (tid, partition, index row, deliveries): records handed back or whose lease ran out first
            again = c.execute(
                f"SELECT s.tid, s.partition, s.deliveries, {_INDEX_COLUMNS} FROM share_records s"
                " JOIN records r ON r.tid=s.tid AND r.partition=s.partition AND r.offset=s.offset"
                " WHERE s.grp=? AND (s.state=? OR (s.state=? AND s.lease_until<?))"
                f" AND s.tid IN ({self._tids}) ORDER BY s.partition, s.offset LIMIT ?",
                (self.group, AVAILABLE, LEASED, now, max_records),
            ).fetchall()
            taken = [(tid, p, tuple(row), deliveries + 1) for tid, p, deliveries, *row in again]
            taken += self._fresh(c, max_records - len(taken))
            c.executemany(
                "INSERT OR REPLACE INTO share_records VALUES(?,?,?,?,?,?,?,?)",
                [(self.group, tid, p, row[0], LEASED, d, self.member_id, until) for tid, p, row, d in taken],
            )
        out: list[Record] = []
        for tid, p, row, deliveries in taken:
            topic = self._names[tid]
            try:
                (value,) = self._segments.read(topic, p, [row])
            except _SegmentMissing as e:  # retention removed it: nothing left to deliver
                self.acknowledge_offsets([(tid, p, row[0])])
                log.warning("share group %s: %s/%d@%d is past retention: %s", self.group, topic, p, row[0], e)
                continue
            offset, ts, key, _seg, _pos, _len, hdr = row
            out.append(Record(topic, p, offset, ts, key, value, decode_headers(hdr), deliveries))
            self._held.add((tid, p, offset))
        return out

    def _fresh(self, c: sqlite3.Connection, want: int) -> list[tuple[int, int, tuple, int]]:
        """Records never handed out, a few from each partition in turn."""
        if want <= 0:
            return []
        out: list[tuple[int, int, tuple, int]] = []
        parts = [
            (tid, p, nxt, start, end)
            for tid, _ in self._topics.values()
            for p, nxt, start, end in c.execute(
                "SELECT s.partition, s.next_offset, p.start_offset, p.end_offset FROM share_partitions s"
                " JOIN partitions p ON p.tid=s.tid AND p.partition=s.partition WHERE s.grp=? AND s.tid=?",
                (self.group, tid),
            )
            if end > nxt
        ]
        for i, (tid, p, nxt, start, _end) in enumerate(parts):
            share = -(-(want - len(out)) // (len(parts) - i))  # what is left, split over the rest
            if nxt < start:
                log.warning(
                    "share group %s: %s/%d offset %d is past retention; resuming at %d",
                    self.group,
                    self._names[tid],
                    p,
                    nxt,
                    start,
                )
                nxt = start
            rows = c.execute(
                "SELECT offset, ts, key, segment, pos, len, headers FROM records"
                " WHERE tid=? AND partition=? AND offset>=? ORDER BY offset LIMIT ?",
                (tid, p, nxt, share),
            ).fetchall()
            if rows:
                out += [(tid, p, tuple(r), 1) for r in rows]
                c.execute(
                    "UPDATE share_partitions SET next_offset=? WHERE grp=? AND tid=? AND partition=?",
                    (rows[-1][0] + 1, self.group, tid, p),
                )
        return out

    # -- finishing ---------------------------------------------------------------------------

    def _keys(self, records: Iterable[Record]) -> list[tuple[int, int, int]]:
        return [(self._topics[r.topic][0], r.partition, r.offset) for r in records]

    def acknowledge(self, records: Iterable[Record]) -> int:
        return self.acknowledge_offsets(self._keys(records))

    def acknowledge_offsets(self, keys: list[tuple[int, int, int]]) -> int:
        """Done, whoever holds the lease now: the results are stored, so a second holder only reuses them."""
        if not keys:
            return 0
        with SqliteLog.write(self.conn) as c:
            done = c.executemany(
                "UPDATE share_records SET state=?, member=NULL, lease_until=NULL"
                " WHERE grp=? AND tid=? AND partition=? AND offset=? AND state<>?",
                [(ACKED, self.group, tid, p, o, ACKED) for tid, p, o in keys],
            ).rowcount
            for tid, p in {(tid, p) for tid, p, _ in keys}:
                self._advance(c, tid, p)
        self._held.difference_update(keys)
        return done

    def _advance(self, c: sqlite3.Connection, tid: int, p: int) -> None:
        """Move the start offset over the acknowledged run and forget those rows."""
        low = c.execute(
            "SELECT min(offset) FROM share_records WHERE grp=? AND tid=? AND partition=? AND state<>?",
            (self.group, tid, p, ACKED),
        ).fetchone()[0]
        if low is None:
            low = c.execute(
                "SELECT next_offset FROM share_partitions WHERE grp=? AND tid=? AND partition=?",
                (self.group, tid, p),
            ).fetchone()[0]
        c.execute(
            "DELETE FROM share_records WHERE grp=? AND tid=? AND partition=? AND offset<?",
            (self.group, tid, p, low),
        )
        c.execute(
            "UPDATE share_partitions SET start_offset=max(start_offset, ?) WHERE grp=? AND tid=? AND partition=?",
            (low, self.group, tid, p),
        )

    def release(self, records: Iterable[Record]) -> int:
        return self._release(self._keys(records))

    def _release(self, keys: Iterable[tuple[int, int, int]]) -> int:
        keys = list(keys)
        if not keys:
            return 0
        with SqliteLog.write(self.conn) as c:
            n = c.executemany(
                "UPDATE share_records SET state=?, member=NULL, lease_until=NULL, deliveries=deliveries-1"
                " WHERE grp=? AND tid=? AND partition=? AND offset=? AND state=? AND member=?",
                [(AVAILABLE, self.group, tid, p, o, LEASED, self.member_id) for tid, p, o in keys],
            ).rowcount
        self._held.difference_update(keys)
        return n

    def assignment(self) -> list[tuple[str, int]]:
        return sorted((t, p) for t, (_, n) in self._topics.items() for p in range(n))

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            released = self._release(self._held)
            with SqliteLog.write(self.conn) as c:
                c.execute("DELETE FROM share_members WHERE grp=? AND member=?", (self.group, self.member_id))
            if released:
                log.info(
                    "member %s left share group %s, handing back %d record(s)",
                    self.member_id,
                    self.group,
                    released,
                )
        except Exception as e:  # noqa: BLE001 - the leases run out by themselves; keep the error we are closing on
            log.warning("member %s could not leave share group %s cleanly: %s", self.member_id, self.group, e)
        self._segments.close()
        self.conn.close()
