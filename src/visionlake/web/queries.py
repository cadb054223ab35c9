"""The dashboard's reads that the catalog interface does not offer as such: filters from a query
string, the gallery with keyset paging, a frame's results per model version, the newest processed
frame per camera (the live page), and the overview (status with lag per partition, dead letters).

Every query is SQLAlchemy Core over the catalog's tables (`catalog.schema`), so it runs the same on
SQLite and PostgreSQL. The gallery pages by (captured_at, frame_id), newest first, with a
`before` cursor: each page is one range scan on the frames(captured_at) index, whatever its depth,
where OFFSET would read and throw away every row before the page.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from ..analytics._sql import engine_of
from ..analytics.reports import ReportFilter, check_model, frame_conditions, version_rule
from ..catalog import schema as S
from ..catalog.base import Catalog, naive_utc
from ..errors import InputError, UnknownFrame
from ..frames import FRAME_ID_CHARS, MAX_FRAME_ID, iso
from ..lake import FRAMES_TOPIC, Lake, dlq_topic
from ..redact import redact_url
from ..timeutil import parse_time

#: Thumbnails per gallery page at most.
MAX_PAGE = 200
#: Dead letters read for the overview's count by reason (the newest ones, per partition).
DLQ_SAMPLE = 1000
DLQ_SECONDS = 1.5


def check_frame_text(text: str) -> str:
    """A frame id or prefix from a URL: only the frame-id alphabet, else UnknownFrame (404)."""
    if not text or len(text) > MAX_FRAME_ID or not set(text) <= FRAME_ID_CHARS:
        raise UnknownFrame(f"no frame {text[:80]!r}: frame ids are 1-{MAX_FRAME_ID} of A-Z a-z 0-9 _ -")
    return text


def fmt_time(ts: Any) -> str:
    """A catalog time (naive UTC, or text from SQLite) as 'YYYY-MM-DD HH:MM:SS' UTC."""
    if isinstance(ts, str):
        ts = datetime.fromisoformat(ts)
    if not isinstance(ts, datetime):
        return "" if ts is None else str(ts)
    return f"{naive_utc(ts):%Y-%m-%d %H:%M:%S}"


def iso_time(ts: Any) -> str | None:
    if isinstance(ts, str):
        ts = datetime.fromisoformat(ts)
    return iso(ts) if isinstance(ts, datetime) else None


# --- filters -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Filters(ReportFilter):
    """The filters every page shares, parsed from a query string (empty values mean no filter):
    the reports' filter, and the gallery's minimum count and minimum score."""

    min_count: int = 0
    min_score: float | None = None  # on the detector's own scale (HOG margins exceed 1)

    @classmethod
    def parse(cls, params: Any) -> Filters:
        def text(name: str) -> str | None:
            v = params.get(name)
            v = v.strip() if isinstance(v, str) else None
            if v and len(v) > 256:
                raise InputError(f"{name} is too long ({len(v)} characters, at most 256)")
            return v or None

        since, until = text("since"), text("until")
        raw = text("min_count")
        try:
            min_count = int(raw) if raw is not None else 0
        except ValueError:
            raise InputError(f"min_count must be a whole number, got {raw!r}") from None
        if not 0 <= min_count <= 1_000_000:
            raise InputError(f"min_count must be from 0 to 1000000, got {min_count}")
        raw = text("min_score")
        try:
            min_score = float(raw) if raw is not None else None
        except ValueError:
            raise InputError(f"min_score must be a number, got {raw!r}") from None
        if min_score is not None and not -1e6 <= min_score <= 1e6:  # also refuses nan
            raise InputError(f"min_score must be from -1000000 to 1000000, got {raw}")
        flt = cls(
            camera=text("camera"),
            label=text("label"),
            model=text("model"),
            model_version=text("model_version"),
            since=parse_time(since, "since") if since else None,
            until=parse_time(until, "until") if until else None,
            min_count=min_count,
            min_score=min_score,
        )
        if flt.since and flt.until and flt.since >= flt.until:
            raise InputError(f"since ({since}) must be before until ({until})")
        return flt

    def report(self) -> ReportFilter:
        """The filter without the gallery's minimum count, for the reports (their cache key too)."""
        return ReportFilter(self.camera, self.label, self.model, self.model_version, self.since, self.until)

    def as_params(self) -> dict[str, str]:
        """The non-empty filters as query parameters (for links that keep them)."""
        out = {
            "camera": self.camera,
            "label": self.label,
            "model": self.model,
            "model_version": self.model_version,
            "since": iso(self.since) if self.since else None,
            "until": iso(self.until) if self.until else None,
            "min_count": str(self.min_count) if self.min_count else None,
            "min_score": str(self.min_score) if self.min_score is not None else None,  # round-trips
        }
        return {k: v for k, v in out.items() if v}


# --- gallery -----------------------------------------------------------------------------------------


def parse_cursor(text: str | None) -> tuple[datetime, str] | None:
    """`before` cursor of the gallery: '<ISO time>~<frame id>'."""
    if not text:
        return None
    ts, sep, fid = text.rpartition("~")
    try:
        if not sep:
            raise ValueError
        when = naive_utc(datetime.fromisoformat(ts.replace("Z", "+00:00")))
        check_frame_text(fid)
    except (ValueError, UnknownFrame):
        raise InputError(f"invalid page cursor {text[:100]!r}") from None
    return when, fid


def make_cursor(captured_at: datetime, frame_id: str) -> str:
    return f"{iso(captured_at)}~{frame_id}"


def gallery(catalog: Catalog, flt: Filters, before: str | None = None, limit: int = 48) -> dict[str, Any]:
    """A page of frames, newest first, and the cursor of the next page (None at the end).

    A frame is listed when a result of the chosen model/version (each model's newest version per
    frame unless a version is given, as the reports count) has at least `min_count` detections (of
    `label`, scoring at least `min_score`; at least one with a label or a minimum score). Without
    model, version, label, min_count and min_score, every frame is listed, processed or not.
    """
    if not 1 <= limit <= MAX_PAGE:
        raise InputError(f"limit must be from 1 to {MAX_PAGE}, got {limit}")
    cursor = parse_cursor(before)
    engine = engine_of(catalog)
    f, r, d = S.frames.c, S.results.c, S.detections.c
    rf = flt.report()
    with engine.connect() as conn:
        check_model(conn, flt.model, flt.model_version)
        rule = version_rule(conn, rf)
        box_conds = [d.label == flt.label] if flt.label is not None else []
        if flt.min_score is not None:
            box_conds.append(d.score >= flt.min_score)
        n_label = (
            sa.select(sa.func.count())
            .where(
                d.frame_id == r.frame_id, d.model == r.model, d.model_version == r.model_version, *box_conds
            )
            .scalar_subquery()
            if box_conds
            else r.n_detections
        )
        stmt = sa.select(f.frame_id, f.camera, f.captured_at, f.width, f.height).where(*frame_conditions(rf))
        filtered = flt.model or flt.model_version or box_conds or flt.min_count
        if filtered:
            need = max(flt.min_count, 1 if box_conds else 0)
            stmt = stmt.where(sa.exists().where(r.frame_id == f.frame_id, *rule, n_label >= need))
        if cursor is not None:  # keyset paging; the plain <= is the bound an index range can use
            stmt = stmt.where(
                f.captured_at <= cursor[0],
                sa.or_(
                    f.captured_at < cursor[0],
                    sa.and_(f.captured_at == cursor[0], f.frame_id < cursor[1]),
                ),
            )
        rows = conn.execute(stmt.order_by(f.captured_at.desc(), f.frame_id.desc()).limit(limit + 1)).all()
        page = rows[:limit]
        ids = [row[0] for row in page]
        counts: dict[str, list[dict]] = {fid: [] for fid in ids}
        if ids:
            for fid, mod, ver, n in conn.execute(
                sa.select(r.frame_id, r.model, r.model_version, n_label)
                .where(r.frame_id.in_(ids), *rule)
                .order_by(r.frame_id, r.model)
            ):
                counts[fid].append({"model": mod, "model_version": ver, "count": int(n or 0)})
    items = [
        {
            "frame_id": fid,
            "camera": cam,
            "captured_at": iso_time(ts),
            "time": fmt_time(ts),
            "width": w,
            "height": h,
            "results": counts[fid],
            "count": sum(c["count"] for c in counts[fid]),
        }
        for fid, cam, ts, w, h in page
    ]
    nxt = make_cursor(page[-1][2], page[-1][0]) if len(rows) > limit else None
    return {"frames": items, "next": nxt, "filters": flt.as_params()}


# --- one frame -----------------------------------------------------------------------------------------


def frame_detail(catalog: Catalog, text: str) -> dict[str, Any]:
    """A frame (by id or unique prefix), its results per model version with their detections."""
    fid = catalog.resolve_frame_id(check_frame_text(text))
    row = catalog.frame(fid)
    if row is None:  # deleted between the two reads
        raise UnknownFrame(f"no frame {fid!r} in the catalog")
    engine = engine_of(catalog)
    r, m = S.results.c, S.models.c
    with engine.connect() as conn:
        results = conn.execute(
            sa.select(r.model, r.model_version, r.n_detections, r.processed_at, r.latency_ms)
            .outerjoin(S.models, (m.model == r.model) & (m.model_version == r.model_version))
            .where(r.frame_id == fid)
            .order_by(r.model, m.created_at.desc().nulls_last(), r.model_version.desc())
        ).all()
    versions = []
    for mod, ver, n, processed, latency in results:
        dets = catalog.detections_for(fid, mod, ver)
        versions.append(
            {
                "model": mod,
                "model_version": ver,
                "n_detections": n,
                "processed_at": iso_time(processed),
                "latency_ms": round(float(latency), 2),
                "detections": [
                    {
                        "label": x["label"],
                        "score": round(float(x["score"]), 4),
                        "box": [round(float(x[k]), 1) for k in ("x1", "y1", "x2", "y2")],
                        "track_id": x.get("track_id"),
                    }
                    for x in dets
                ],
            }
        )
    return {
        "frame_id": fid,
        "camera": row["camera"],
        "seq": row["seq"],
        "captured_at": iso_time(row["captured_at"]),
        "time": fmt_time(row["captured_at"]),
        "width": row["width"],
        "height": row["height"],
        "bytes": row["bytes"],
        "sha256": row["sha256"],
        "uri": redact_url(row["uri"]),
        "topic": row["topic"],
        "partition": row["partition"],
        "offset": row["offset"],
        "results": versions,
    }


def models(catalog: Catalog) -> dict[str, list[str]]:
    """Each model's registered versions, newest first."""
    from ..analytics.reports import registered_versions

    with engine_of(catalog).connect() as conn:
        return registered_versions(conn)


def cameras(catalog: Catalog) -> list[str]:
    f = S.frames.c
    with engine_of(catalog).connect() as conn:
        return list(conn.execute(sa.select(f.camera).distinct().order_by(f.camera)).scalars())


# --- live ----------------------------------------------------------------------------------------------


def newest_per_camera(
    catalog: Catalog, cams: list[str], model: str | None = None, model_version: str | None = None
) -> dict[str, dict[str, Any]]:
    """Per camera, the newest captured frame with a result (of the model/version, if given).

    One index range scan per camera (frames(camera, captured_at), newest first, until a frame
    has a result), cheap enough to poll every half second.
    """
    f, r = S.frames.c, S.results.c
    cond = [r.frame_id == f.frame_id]
    if model:
        cond.append(r.model == model)
    if model_version:
        cond.append(r.model_version == model_version)
    out: dict[str, dict[str, Any]] = {}
    with engine_of(catalog).connect() as conn:
        for cam in cams:
            row = conn.execute(
                sa.select(f.frame_id, f.captured_at)
                .where(f.camera == cam, sa.exists().where(*cond))
                .order_by(f.captured_at.desc(), f.frame_id.desc())
                .limit(1)
            ).first()
            if row is not None:
                out[cam] = {
                    "camera": cam,
                    "frame_id": row[0],
                    "captured_at": iso_time(row[1]),
                    "time": fmt_time(row[1]),
                }
    return out


# --- overview ------------------------------------------------------------------------------------------


def dead_letters(lake: Lake, topic: str = FRAMES_TOPIC) -> dict[str, Any]:
    """The dead-letter topic's size, and its newest records (at most DLQ_SAMPLE, read for at most
    DLQ_SECONDS) counted by reason (the `vl-error` header up to its first ':')."""
    name = dlq_topic(topic)
    info = next((t for t in lake.log.topics() if t.name == name), None)
    out: dict[str, Any] = {"topic": name, "records": 0, "read": 0, "reasons": {}}
    if info is None or info.records == 0:
        return out
    out["records"] = info.records
    per_part = max(1, DLQ_SAMPLE // max(1, len(info.partitions)))
    wanted = {p.partition: p.end_offset for p in info.partitions if p.records}
    reasons: Counter[str] = Counter()
    read = 0
    deadline = time.monotonic() + DLQ_SECONDS
    with lake.log.consumer([name], group=None, partitions=list(wanted)) as c:
        for p in info.partitions:
            if p.partition in wanted:
                c.seek(name, p.partition, max(p.start_offset, p.end_offset - per_part))
        while wanted and time.monotonic() < deadline:
            batch = c.poll(max_records=500, timeout=0.2)
            for rec in batch:
                if rec.offset < wanted.get(rec.partition, -1):
                    reasons[(rec.header("vl-error") or "unknown").split(":")[0]] += 1
                    read += 1
                if rec.offset >= wanted.get(rec.partition, 0) - 1:
                    wanted.pop(rec.partition, None)
            if not batch and all(c.position(name, p) >= end for p, end in wanted.items()):
                break
    out["read"] = read
    out["reasons"] = dict(reasons.most_common())
    return out


#: The window of the overview's rates (frames/s of cameras and of workers).
RECENT_S = 300


def recent_rates(catalog: Catalog, seconds: int = RECENT_S) -> dict[str, dict]:
    """Frames per second over the last `seconds`: per camera (frames filmed in the window) and per
    model version (results processed in it, with their mean decode+detect ms), from the indexes
    frames(captured_at) and results(model, model_version, processed_at)."""
    f, r = S.frames.c, S.results.c
    since = datetime.now(UTC).replace(tzinfo=None) - timedelta(seconds=seconds)
    with engine_of(catalog).connect() as conn:
        cams = conn.execute(
            sa.select(f.camera, sa.func.count()).where(f.captured_at >= since).group_by(f.camera)
        ).all()
        models = conn.execute(
            sa.select(r.model, r.model_version, sa.func.count(), sa.func.avg(r.latency_ms))
            .where(r.processed_at >= since)
            .group_by(r.model, r.model_version)
        ).all()
    return {
        "cameras": {c: round(n / seconds, 2) for c, n in cams},
        "models": {
            (m, v): {"fps": round(n / seconds, 2), "ms": round(float(ms), 1) if ms is not None else None}
            for m, v, n, ms in models
        },
    }


def overview(lake: Lake) -> dict[str, Any]:
    counts = lake.catalog.counts()  # type: ignore[attr-defined]
    rates = recent_rates(lake.catalog)
    topics = lake.log.topics()
    groups = lake.log.groups()
    return {
        "lake": str(lake.root),
        "log": redact_url(lake.log.url),
        "catalog": redact_url(lake.catalog.url),
        "archive": redact_url(lake.archive.url),
        "cameras": [
            {
                "camera": c,
                "frames": n,
                "first": iso_time(a),
                "last": iso_time(b),
                "last_time": fmt_time(b),
                "fps_recent": rates["cameras"].get(c, 0.0),
            }
            for c, n, a, b in counts["cameras"]
        ],
        "topics": [
            {"topic": t.name, "partitions": len(t.partitions), "records": t.records, "bytes": t.bytes}
            for t in topics
        ],
        "groups": [
            {
                "group": g.group,
                "members": len(g.members),
                "lag": g.lag,
                "partitions": [
                    {
                        "topic": p.topic,
                        "partition": p.partition,
                        "committed": p.committed,
                        "end_offset": p.end_offset,
                        "lag": p.lag,
                        "owner": p.owner,
                    }
                    for p in g.partitions
                ],
            }
            for g in groups
        ],
        "models": [
            {
                "model": m,
                "model_version": v,
                "frames": n,
                "detections": int(d or 0),
                "fps_recent": rates["models"].get((m, v), {}).get("fps", 0.0),
                "ms_per_frame_recent": rates["models"].get((m, v), {}).get("ms"),
            }
            for m, v, n, d in counts["models"]
        ],
        "recent_seconds": RECENT_S,
        "dead_letters": dead_letters(lake),
        "generated_at": iso(datetime.now(UTC)),
    }
