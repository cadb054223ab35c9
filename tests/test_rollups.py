"""The hourly roll-up (`rollup_hours`) on both backends: every report read from it equals the same
report counted from the raw tables (`exact=True`), after random writes in awkward orders; the
roll-up kept by the writers equals the one the schema 3 migration computes from the raw tables.
"""

from __future__ import annotations

import random
import threading
from datetime import UTC, datetime, timedelta
from itertools import product

import sqlalchemy as sa
from test_catalog import meta, result

from visionlake.analytics.reports import ReportFilter, _use_rollup, counts, hours, top
from visionlake.catalog import open_catalog
from visionlake.catalog import schema as S
from visionlake.catalog.versions import rebuild_rollup
from visionlake.frames import FrameMeta
from visionlake.types import Detections

T0 = datetime(2026, 11, 3, 6, 0, tzinfo=UTC)
CAMERAS = ("cam-a", "cam-b", "cam-c")
LABELS = ("face", "person", "cat")


def boxes(rng: random.Random, labels: tuple[str, ...] = LABELS) -> Detections:
    n = rng.choice([0, 0, 1, 1, 2, 3, 5])
    return Detections.from_list(
        [
            {"label": rng.choice(labels), "score": rng.random(), "box": [1.0, 2.0, 30.0, 40.0]}
            for _ in range(n)
        ]
    )


def fill(catalog, seed: int = 7, n: int = 70) -> list:
    """Frames over ~30 hours and 3 cameras; haar-face 1 on most, 2 on part of them (some written
    before 1, some after), a frame written twice, hog-person on some; returns the frame metas."""
    rng = random.Random(seed)
    frames = [
        meta(rng.choice(CAMERAS), i, T0 + timedelta(minutes=rng.randrange(30 * 60), seconds=rng.random()))
        for i in range(n)
    ]
    catalog.ensure_model("haar-face", "1", {"v": 1})
    catalog.ensure_model("hog-person", "1", {})
    v1 = [m for m in frames if rng.random() < 0.8]
    v2 = rng.sample(frames, n // 2)
    catalog.write_results([result(m, boxes(rng)) for m in v1[: len(v1) // 2]])
    catalog.ensure_model("haar-face", "2", {"v": 2})  # newer than 1
    early, late = v2[: len(v2) // 2], v2[len(v2) // 2 :]
    catalog.write_results([result(m, boxes(rng), version="2") for m in early])
    # version 1 after version 2 on some frames (the newest view must not change), a partial replay
    catalog.write_results([result(m, boxes(rng)) for m in v1[len(v1) // 2 :]])
    for chunk in (late[:5], late[5:]):
        catalog.write_results([result(m, boxes(rng), version="2") for m in chunk])
    # the same (frame, version) written again with other boxes, also twice in one batch
    again = rng.sample(v1, 6) + rng.sample(v2, 4)
    catalog.write_results([result(m, boxes(rng)) for m in again[:6]])
    catalog.write_results(
        [result(m, boxes(rng), version="2") for m in again[6:]] + [result(again[6], boxes(rng), version="2")]
    )
    catalog.write_results(
        [result(m, boxes(rng, ("person",)), model="hog-person") for m in frames if rng.random() < 0.4]
    )
    return frames


def rollup_rows(conn) -> list[tuple]:
    t = S.rollup_hours.c
    rows = conn.execute(
        sa.select(t.view, t.model, t.model_version, t.label, t.camera, t.hour, t.frames, t.detections)
    ).all()
    return sorted(tuple(r) for r in rows)


def rebuilt_rows(catalog) -> list[tuple]:
    """The roll-up as the migration computes it from the raw tables (rolled back afterwards)."""
    with catalog.engine.connect() as conn:
        tx = conn.begin()
        try:
            rebuild_rollup(conn)
            return rollup_rows(conn)
        finally:
            tx.rollback()


def kept_rows(catalog) -> list[tuple]:
    with catalog.engine.connect() as conn:
        return rollup_rows(conn)


H = T0.replace(tzinfo=None)
FILTERS = [
    ReportFilter(),
    ReportFilter(camera="cam-a"),
    ReportFilter(label="face"),
    ReportFilter(label="dog"),
    ReportFilter(model="haar-face"),
    ReportFilter(model="haar-face", model_version="1"),
    ReportFilter(model="haar-face", model_version="2", label="person"),
    ReportFilter(model_version="1"),
    ReportFilter(model="hog-person", camera="cam-b"),
    ReportFilter(since=H + timedelta(hours=3), until=H + timedelta(hours=20)),  # whole hours
    ReportFilter(since=H + timedelta(hours=3, minutes=17), until=H + timedelta(hours=20, seconds=30.5)),
    ReportFilter(since=H + timedelta(hours=5, minutes=10), until=H + timedelta(hours=6, minutes=50)),
    ReportFilter(since=H + timedelta(hours=5, minutes=10), until=H + timedelta(hours=5, minutes=50)),
    ReportFilter(since=H + timedelta(hours=7, minutes=59), label="face", camera="cam-c"),
    ReportFilter(until=H + timedelta(hours=9, minutes=1), model="haar-face", label="cat"),
]
GROUPINGS = [(), ("camera",), ("label",), ("model-version",), ("camera", "label", "model-version")]


def assert_reports_match(catalog, filters=FILTERS) -> None:
    for flt, bucket, by in product(filters, ("hour", "day"), GROUPINGS):
        fast = counts(catalog, flt, bucket, by)
        slow = counts(catalog, flt, bucket, by, exact=True)
        assert fast.columns == slow.columns
        assert fast.rows == slow.rows, (flt, bucket, by)
    for flt in filters:
        assert hours(catalog, flt).rows == hours(catalog, flt, exact=True).rows, flt
        for k in (1, 3, 10):
            assert top(catalog, flt, k).rows == top(catalog, flt, k, exact=True).rows, (flt, k)


def uses_rollup(catalog, flt: ReportFilter) -> bool:
    with catalog.engine.connect() as conn:
        return _use_rollup(conn, flt, "hour")


def label_counts(catalog) -> tuple[list[tuple], list[tuple]]:
    """(result_labels as kept, the same counted from detections)."""
    with catalog.engine.connect() as conn:
        kept = conn.execute(
            sa.text("SELECT frame_id, model, model_version, label, n_detections FROM result_labels")
        ).all()
        counted = conn.execute(
            sa.text(
                "SELECT frame_id, model, model_version, label, count(*) FROM detections "
                "GROUP BY frame_id, model, model_version, label"
            )
        ).all()
    return sorted(map(tuple, kept)), sorted(map(tuple, counted))


def test_reports_from_the_rollup_equal_the_exact_counts(catalog):
    fill(catalog)
    kept, counted = label_counts(catalog)  # rewritten results and re-sent frames included
    assert kept == counted and kept
    assert uses_rollup(catalog, ReportFilter()) and uses_rollup(catalog, ReportFilter(model="haar-face"))
    assert counts(catalog).rows  # something to compare
    assert_reports_match(catalog)
    assert kept_rows(catalog) == rebuilt_rows(catalog)
    # frames with no detections count as frames: every frame with a result is in the totals
    total = sum(r[-2] for r in counts(catalog, by=()).rows)
    with catalog.engine.connect() as conn:
        assert total == conn.execute(sa.select(sa.func.count(sa.distinct(S.results.c.frame_id)))).scalar()


def test_other_seeds_and_a_third_version(catalog):
    for seed in (1, 2):
        fill(catalog, seed=seed, n=40)
    rng = random.Random(3)
    catalog.ensure_model("haar-face", "3", {"v": 3})
    with catalog.engine.connect() as conn:
        fids = list(conn.execute(sa.select(S.frames.c.frame_id, S.frames.c.camera, S.frames.c.captured_at)))
    picked = rng.sample(fids, 15)
    catalog.write_results(
        [
            result(FrameMeta(fid, cam, 0, as_utc(ts), 768, 576), boxes(rng), version="3")
            for fid, cam, ts in picked
        ]
    )
    assert kept_rows(catalog) == rebuilt_rows(catalog)
    assert_reports_match(catalog, FILTERS[:9])


def as_utc(ts) -> datetime:
    ts = ts if isinstance(ts, datetime) else datetime.fromisoformat(ts)
    return ts.replace(tzinfo=UTC)


def test_a_version_registered_after_its_results_takes_over(catalog):
    frames = fill(catalog, n=40)
    rng = random.Random(5)
    catalog.write_results([result(m, boxes(rng), version="9") for m in frames[:12]])  # no models row
    assert not uses_rollup(catalog, ReportFilter()) and uses_rollup(catalog, ReportFilter(model="hog-person"))
    assert_reports_match(catalog, FILTERS[:4])  # counted from the raw tables
    assert kept_rows(catalog) == rebuilt_rows(catalog)
    catalog.ensure_model("haar-face", "9", {"v": 9})  # now the newest: the roll-up is repaired
    assert uses_rollup(catalog, ReportFilter())
    assert kept_rows(catalog) == rebuilt_rows(catalog)
    assert_reports_match(catalog, FILTERS[:9])


def test_minute_buckets_are_counted_exactly(catalog):
    fill(catalog, n=30)
    flt = ReportFilter(model="haar-face")
    assert counts(catalog, flt, "minute").rows == counts(catalog, flt, "minute", exact=True).rows


def test_a_version_2_catalog_is_upgraded_and_backfilled(catalog_url, catalog):
    fill(catalog)
    kept = kept_rows(catalog)
    expected = {
        (flt, by): counts(catalog, flt, "hour", by, exact=True).rows
        for flt, by in product(FILTERS[:9], GROUPINGS[:4])
    }
    with catalog.engine.begin() as conn:  # back to schema version 2
        S.rollup_hours.drop(conn)
        conn.execute(sa.delete(S.schema_version).where(S.schema_version.c.version >= 3))
    catalog.close()
    again = open_catalog(catalog_url)
    try:
        assert again.schema_version() == S.SCHEMA_VERSION
        assert kept_rows(again) == kept
        for (flt, by), rows in expected.items():
            assert counts(again, flt, "hour", by).rows == rows, (flt, by)
        with again.engine.connect() as conn:
            assert conn.execute(
                sa.select(S.schema_version.c.version).order_by(S.schema_version.c.version)
            ).scalars().all() == list(range(1, S.SCHEMA_VERSION + 1))
    finally:
        again.close()


def test_a_version_3_catalog_gets_capture_times_and_label_counts(catalog_url, catalog):
    fill(catalog)
    expected = {(flt, k): top(catalog, flt, k, exact=True).rows for flt in FILTERS for k in (1, 10)}
    with catalog.engine.begin() as conn:  # back to schema version 3
        conn.execute(sa.text("DROP INDEX results_top"))
        conn.execute(sa.text("ALTER TABLE results DROP COLUMN frame_captured_at"))
        conn.execute(sa.text("CREATE INDEX results_n_detections ON results (n_detections)"))
        conn.execute(sa.text("DROP TABLE result_labels"))
        conn.execute(sa.delete(S.schema_version).where(S.schema_version.c.version >= 4))
    catalog.close()
    again = open_catalog(catalog_url)
    try:
        assert again.schema_version() == S.SCHEMA_VERSION
        r, f = S.results.c, S.frames.c
        with again.engine.connect() as conn:
            copied = sa.select(
                sa.func.count(), sa.func.sum(sa.case((r.frame_captured_at == f.captured_at, 1), else_=0))
            )
            n, same = conn.execute(
                copied.select_from(S.results.join(S.frames, r.frame_id == f.frame_id))
            ).one()
            indexes = {ix["name"] for ix in sa.inspect(conn).get_indexes("results")}
        assert n > 0 and same == n
        assert "results_top" in indexes and "results_n_detections" not in indexes
        kept, counted = label_counts(again)  # schema 5 fills result_labels from the detections
        assert kept == counted and kept
        for (flt, k), rows in expected.items():
            assert top(again, flt, k).rows == rows, (flt, k)
    finally:
        again.close()


def test_writers_of_the_same_frames_at_once_keep_the_rollup_exact(catalog_url, catalog):
    """Two writers (versions 1 and 2 of the same frames, in overlapping batches) at the same time."""
    frames = [meta(CAMERAS[i % 3], i, T0 + timedelta(minutes=7 * i)) for i in range(60)]
    catalog.ensure_model("haar-face", "1", {"v": 1})
    catalog.ensure_model("haar-face", "2", {"v": 2})
    catalog.ensure_model("hog-person", "1", {})
    catalog.write_results([result(m, model="hog-person") for m in frames])  # the frames exist already
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def write(version: str, seed: int) -> None:
        rng = random.Random(seed)
        cat = open_catalog(catalog_url)
        try:
            barrier.wait(30)
            order = frames[::-1] if version == "2" else frames
            for i in range(0, len(order), 6):
                cat.write_results([result(m, boxes(rng), version=version) for m in order[i : i + 6]])
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)
        finally:
            cat.close()

    threads = [threading.Thread(target=write, args=(v, s)) for v, s in (("1", 1), ("2", 2))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert kept_rows(catalog) == rebuilt_rows(catalog)
    assert_reports_match(catalog, FILTERS[:2])
