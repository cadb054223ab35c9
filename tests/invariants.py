"""The delivery invariants of a lake, checked from the outside after a fault.

`check_invariants` reads everything back the way an operator would (the log's records, the catalog's
rows, the archive's objects, the groups' committed offsets) and returns an `InvariantReport` listing
every violation with its details; `report.assert_ok(context)` fails with all of them at once. The
invariants:

1. every frame ingested (a frame id carried by a record of the frames topic) has exactly one
   ``results`` row per model version that was run to completion, unless that model refused it, in
   which case the dead-letter topic ``frames.dlq`` holds the record with a ``vl-error`` reason; no
   result exists for a frame that was never ingested, and every result has its frame row;
2. every result was published: ``frames.detections`` holds at least one event for it (events are
   at-least-once: duplicates are counted, not refused);
3. no duplicated detection: per (frame, model, version) the ``detections`` rows number
   ``results.n_detections`` and no two of them are identical, and ``result_labels`` holds their
   count per label;
4. the archive holds exactly the frames' images: no object without a frame row (a left-over
   temporary file counts), and every ``frames.uri`` exists with the size and sha256 of its row;
5. committed offsets never move backwards (`OffsetMonitor` samples them during the run);
6. after the final clean run, each named group's lag on the frames topic is 0.

Nothing here uses a mock: it reads the real log (embedded or Kafka), catalog (SQLite or PostgreSQL)
and archive (a directory or S3) through the lake's own clients.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import sqlalchemy as sa

from visionlake.archive import PARTIAL_DIR
from visionlake.errors import FrameError
from visionlake.frames import meta_from_record
from visionlake.lake import FRAMES_TOPIC, Lake, detections_topic, dlq_topic
from visionlake.log.base import FrameLog
from visionlake.types import Record

#: at most this many examples of one kind of violation are spelled out (the count is always given)
MAX_EXAMPLES = 8


# --- reading the log back ------------------------------------------------------------------------


def read_topic(log: FrameLog, topic: str, timeout: float = 30.0) -> tuple[list[Record], str | None]:
    """Every record of `topic` from its start to its end offsets (taken first); (records, problem)."""
    try:
        infos = {t.name: t for t in log.topics()}
    except Exception as e:  # noqa: BLE001 - reported as a violation, not raised
        return [], f"cannot list the topics of the log: {type(e).__name__}: {e}"
    info = infos.get(topic)
    if info is None:
        return [], None  # never written: no records
    need = {p.partition: p.end_offset for p in info.partitions if p.end_offset > p.start_offset}
    out: list[Record] = []
    if not need:
        return out, None
    deadline = time.monotonic() + timeout
    with log.consumer([topic]) as c:
        while need and time.monotonic() < deadline:
            for r in c.poll(1000, 0.2):
                out.append(r)
                if r.offset + 1 >= need.get(r.partition, 0):
                    need.pop(r.partition, None)
    if need:
        return (
            out,
            f"topic {topic}: could not read partitions {sorted(need)} to their end within {timeout:g} s",
        )
    return out, None


# --- committed offsets over time -------------------------------------------------------------------


class OffsetMonitor:
    """Samples a group's committed offsets every `interval` seconds from a thread of its own.

    `open_log` makes the monitor's own log client (clients are not shared across threads). Sampling
    errors (a broker down, a busy database) are counted, never taken for a regression.
    """

    def __init__(
        self,
        open_log: Callable[[], FrameLog],
        group: str,
        topic: str = FRAMES_TOPIC,
        interval: float = 0.05,
    ) -> None:
        self.open_log = open_log
        self.group = group
        self.topic = topic
        self.interval = interval
        self.samples: list[tuple[float, dict[int, int]]] = []
        self.errors = 0
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0 = time.monotonic()

    def start(self) -> OffsetMonitor:
        self._thread = threading.Thread(target=self._run, name=f"offsets-{self.group}", daemon=True)
        self._thread.start()
        return self

    def __enter__(self) -> OffsetMonitor:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        log = None
        try:
            while not self._stop.is_set():
                try:
                    if log is None:
                        log = self.open_log()
                    self.samples.append(
                        (time.monotonic() - self._t0, log.group_offsets(self.group, self.topic))
                    )
                except Exception as e:  # noqa: BLE001 - a sampling gap, not a finding
                    self.errors += 1
                    self.last_error = f"{type(e).__name__}: {e}"
                self._stop.wait(self.interval)
        finally:
            if log is not None:
                with contextlib.suppress(Exception):
                    log.close()

    def stop(self, timeout: float = 60.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                self.errors += 1
                self.last_error = f"sampling thread still running after {timeout:g} s"

    def regressions(self) -> list[str]:
        """Every partition whose committed offset went down (or vanished) between two samples."""
        out: list[str] = []
        last: dict[int, tuple[float, int]] = {}
        for t, offsets in self.samples:
            for p, (t0, o0) in last.items():
                o = offsets.get(p)
                if o is None:
                    out.append(
                        f"group {self.group} {self.topic}/{p}: committed offset {o0} (t={t0:.2f} s) vanished at t={t:.2f} s"
                    )
                elif o < o0:
                    out.append(
                        f"group {self.group} {self.topic}/{p}: committed offset went back from {o0} "
                        f"(t={t0:.2f} s) to {o} (t={t:.2f} s)"
                    )
            for p, o in offsets.items():
                last[p] = (t, o)
        return out

    def summary(self) -> str:
        return f"{len(self.samples)} samples, {self.errors} sampling errors" + (
            f" (last: {self.last_error})" if self.last_error else ""
        )


# --- the report ------------------------------------------------------------------------------------


@dataclass
class InvariantReport:
    violations: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    summary: dict[str, object] = field(default_factory=dict)

    def add(self, kind: str, detail: str) -> None:
        self.violations[kind].append(detail)

    @property
    def ok(self) -> bool:
        return not any(self.violations.values())

    def kinds(self) -> set[str]:
        return {k for k, v in self.violations.items() if v}

    def describe(self) -> str:
        lines = []
        for kind, items in sorted(self.violations.items()):
            if not items:
                continue
            lines.append(f"- {kind}: {len(items)}")
            lines += [f"    {d}" for d in items[:MAX_EXAMPLES]]
            if len(items) > MAX_EXAMPLES:
                lines.append(f"    ... and {len(items) - MAX_EXAMPLES} more")
        lines.append(f"state: {json.dumps(self.summary, sort_keys=True, default=str)}")
        return "\n".join(lines)

    def assert_ok(self, context: str = "") -> None:
        if not self.ok:
            n = sum(len(v) for v in self.violations.values())
            raise AssertionError(f"{n} invariant violation(s) [{context}]:\n{self.describe()}")


# --- the check -------------------------------------------------------------------------------------


def _source(r: Record) -> str:
    return f"{r.topic}/{r.partition}@{r.offset}"


def _archive_objects(lake: Lake) -> tuple[set[str], str | None]:
    """Every object under the archive root, as the archive's own paths (no protocol)."""
    archive = lake.archive
    if archive.local:
        root = os.path.normpath(archive.root)
        found = set()
        partial = os.path.join(root, PARTIAL_DIR)
        for folder, _dirs, files in os.walk(root):
            if os.path.commonpath([folder, partial]) == partial:
                continue  # writes a killed worker left half done; the archive sweeps them by age
            found.update(os.path.normpath(os.path.join(folder, f)) for f in files)
        return found, None
    try:
        archive.fs.invalidate_cache()
        return {p for p in archive.fs.find(archive.root)}, None
    except Exception as e:  # noqa: BLE001
        return set(), f"cannot list the archive {archive.url}: {type(e).__name__}: {e}"


def _archive_path(lake: Lake, uri: str) -> str:
    archive = lake.archive
    if archive.local:
        return os.path.normpath(uri)
    return archive.fs._strip_protocol(uri)


def group_lag(log: FrameLog, group: str, topic: str = FRAMES_TOPIC) -> dict[int, int]:
    """Per partition with records, end offset minus the group's committed offset (0 when none)."""
    infos = {t.name: t for t in log.topics()}
    if topic not in infos:
        return {}
    committed = log.group_offsets(group, topic)
    lag = {}
    for p in infos[topic].partitions:
        done = committed.get(p.partition, 0)
        lag[p.partition] = max(0, p.end_offset - max(done, p.start_offset))
    return lag


def check_invariants(
    lake: Lake,
    models: Sequence[tuple[str, str]],
    *,
    groups: Iterable[str] = (),
    monitors: Iterable[OffsetMonitor] = (),
    expected_frames: int | set[str] | None = None,
    topic: str = FRAMES_TOPIC,
) -> InvariantReport:
    """Check every invariant of the module docstring; returns the report (see `assert_ok`).

    `models`: the (model, version) pairs run to completion. `groups`: groups whose lag must be 0.
    `monitors`: stopped OffsetMonitors. `expected_frames`: how many distinct frames (or which frame
    ids) the test ingested, compared with what the log holds.
    """
    rep = InvariantReport()
    log = lake.log

    # -- the log: frames, dead letters, detection events
    frames_recs, problem = read_topic(log, topic)
    if problem:
        rep.add("log unreadable", problem)
    dlq_recs, problem = read_topic(log, dlq_topic(topic))
    if problem:
        rep.add("log unreadable", problem)
    event_recs, problem = read_topic(log, detections_topic(topic))
    if problem:
        rep.add("log unreadable", problem)

    by_frame: dict[str, list[str]] = defaultdict(list)  # frame id -> sources of its records
    unparsable: list[str] = []  # records without a frame id: every model must dead-letter them
    for r in frames_recs:
        try:
            by_frame[meta_from_record(r).frame_id].append(_source(r))
        except FrameError:
            unparsable.append(_source(r))
    refused: dict[str, dict[str, str]] = defaultdict(dict)  # source -> {model: reason}
    for r in dlq_recs:
        src, reason, model = r.header("vl-source"), r.header("vl-error"), r.header("vl-failed-by")
        if not src or not reason or not model:
            rep.add("dead letter without its headers", f"{_source(r)}: headers {dict(r.headers)!r}")
            continue
        refused[src][model] = reason
    events: Counter[tuple[str, str, str]] = Counter()
    for r in event_recs:
        try:
            e = json.loads(r.value)
            events[(e["frame_id"], e["model"], e["model_version"])] += 1
        except (ValueError, KeyError, TypeError) as e:
            rep.add("unreadable detection event", f"{_source(r)}: {e}")

    if expected_frames is not None:
        on_log = set(by_frame)
        if isinstance(expected_frames, int):
            if len(on_log) != expected_frames:
                rep.add(
                    "frames on the log",
                    f"{len(on_log)} distinct frame ids on topic {topic}, the test ingested {expected_frames}",
                )
        else:
            for fid in sorted(expected_frames - on_log):
                rep.add("frame lost by the log", f"frame {fid} was ingested but no record carries it")
            for fid in sorted(on_log - expected_frames):
                rep.add("frame invented by the log", f"frame {fid} is on the log but was never ingested")

    # -- the catalog
    with lake.catalog.engine.connect() as conn:
        frame_rows = {
            fid: (sha, uri, nbytes)
            for fid, sha, uri, nbytes in conn.execute(
                sa.text("SELECT frame_id, sha256, uri, bytes FROM frames")
            )
        }
        result_rows = conn.execute(
            sa.text("SELECT frame_id, model, model_version, n_detections FROM results")
        ).all()
        det_counts = {
            (f, m, v): n
            for f, m, v, n in conn.execute(
                sa.text(
                    "SELECT frame_id, model, model_version, count(*) FROM detections "
                    "GROUP BY frame_id, model, model_version"
                )
            )
        }
        grouped = (
            "SELECT frame_id, model, model_version, label, count(*) FROM detections "
            "GROUP BY frame_id, model, model_version, label"
        )
        kept = "SELECT frame_id, model, model_version, label, n_detections FROM result_labels"
        label_drift = [
            *[("missing", *row) for row in conn.execute(sa.text(f"{grouped} EXCEPT {kept}"))],
            *[("stale", *row) for row in conn.execute(sa.text(f"{kept} EXCEPT {grouped}"))],
        ]
        twins = conn.execute(
            sa.text(
                "SELECT frame_id, model, model_version, label, score, x1, y1, x2, y2, count(*) FROM detections "
                "GROUP BY frame_id, model, model_version, label, score, x1, y1, x2, y2 HAVING count(*) > 1"
            )
        ).all()

    results: dict[tuple[str, str], dict[str, int]] = defaultdict(dict)  # (model, version) -> {frame: n}
    seen: Counter[tuple[str, str, str]] = Counter()
    for fid, model, version, n in result_rows:
        seen[(fid, model, version)] += 1
        results[(model, version)][fid] = n
    for key, count in seen.items():
        if count > 1:
            rep.add("duplicated result", f"{key}: {count} results rows")

    for model, version in models:
        mine = results.get((model, version), {})
        for fid, sources in sorted(by_frame.items()):
            if fid in mine:
                continue
            reasons = [refused[s][model] for s in sources if model in refused.get(s, {})]
            if not reasons:
                rep.add(
                    "frame lost",
                    f"frame {fid} (records {', '.join(sources)}) has no result for {model} {version} "
                    "and no dead letter",
                )
        for src in unparsable:
            if model not in refused.get(src, {}):
                rep.add("record lost", f"{src} carries no frame and was not dead-lettered by {model}")
        for fid in sorted(set(mine) - set(by_frame)):
            rep.add("result for a frame never ingested", f"frame {fid}: {model} {version}")

    for (model, version), mine in sorted(results.items()):
        for fid, n in sorted(mine.items()):
            if fid not in frame_rows:
                rep.add("result without its frame row", f"frame {fid}: {model} {version}")
            stored = det_counts.get((fid, model, version), 0)
            if stored != n:
                rep.add(
                    "detections disagree with results",
                    f"frame {fid} {model} {version}: results.n_detections={n}, {stored} detections rows",
                )
            if events[(fid, model, version)] == 0:
                rep.add(
                    "result never published",
                    f"frame {fid} {model} {version}: no event on {detections_topic(topic)}",
                )
    for key, n in sorted(det_counts.items()):
        if key[0] not in results.get((key[1], key[2]), {}):
            rep.add("detections without a result", f"{key}: {n} rows")
    for row in twins:
        rep.add("duplicated detection", f"{tuple(row[:9])} stored {row[9]} times")
    for how, *row in label_drift:  # result_labels is kept with the detections, in their transaction
        rep.add("label counts disagree with detections", f"{how} in result_labels: {tuple(row)}")

    # -- the archive
    objects, problem = _archive_objects(lake)
    if problem:
        rep.add("archive unreadable", problem)
    referenced: dict[str, str] = {}
    for fid, (sha, uri, nbytes) in sorted(frame_rows.items()):
        path = _archive_path(lake, uri)
        referenced[path] = fid
        if not problem and path not in objects:
            rep.add("archive object missing", f"frame {fid}: {uri} is not in the archive")
            continue
        try:
            data = lake.archive.get(uri)
        except Exception as e:  # noqa: BLE001
            rep.add("archive object unreadable", f"frame {fid}: {uri}: {type(e).__name__}: {e}")
            continue
        if len(data) != nbytes or hashlib.sha256(data).hexdigest() != sha:
            rep.add(
                "archive object differs from its row",
                f"frame {fid}: {uri} holds {len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()[:12]}; "
                f"the row says {nbytes} bytes, sha256 {sha[:12]}",
            )
    for path in sorted(objects - set(referenced)):
        rep.add("archive object without a frame row", path)

    # -- offsets over time, and the final lag
    monitors = list(monitors)
    for m in monitors:
        for problem in m.regressions():
            rep.add("offset moved backwards", problem)
    lags = {}
    for g in groups:
        try:
            lag = group_lag(log, g, topic)
        except Exception as e:  # noqa: BLE001
            rep.add("lag unreadable", f"group {g}: {type(e).__name__}: {e}")
            continue
        lags[g] = sum(lag.values())
        if lags[g]:
            rep.add(
                "lag after the final run", f"group {g}: lag {lag} (committed {log.group_offsets(g, topic)})"
            )

    rep.summary = {
        "records": len(frames_recs),
        "frames_on_log": len(by_frame),
        "unparsable_records": len(unparsable),
        "dead_letters": len(dlq_recs),
        "events": sum(events.values()),
        "duplicate_events": sum(n - 1 for n in events.values() if n > 1),
        "frame_rows": len(frame_rows),
        "results": {f"{m} {v}": len(r) for (m, v), r in sorted(results.items())},
        "detections": sum(det_counts.values()),
        "archive_objects": len(objects),
        "lag": lags,
        "offset_samples": {m.group: m.summary() for m in monitors},
    }
    return rep


def assert_invariants(
    lake: Lake, models: Sequence[tuple[str, str]], context: str = "", **kwargs
) -> InvariantReport:
    """`check_invariants`, printed, and failed with every violation unless all hold."""
    rep = check_invariants(lake, models, **kwargs)
    print(f"invariants [{context}]: {'ok' if rep.ok else 'VIOLATED'}; {json.dumps(rep.summary, default=str)}")
    rep.assert_ok(context)
    return rep
