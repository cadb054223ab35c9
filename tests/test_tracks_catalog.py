"""The tracks table and the saved tracker states, on every catalog backend: kept by `write_results`
from the track ids of the boxes it writes, the same after a rewrite, repaired when a rewrite takes
boxes away from a track; and a schema 5 catalog upgraded in place."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa
from test_catalog import T0, Store, meta, result

from visionlake.catalog import TrackerState, open_catalog
from visionlake.catalog import schema as S
from visionlake.catalog.schema import SCHEMA_VERSION
from visionlake.types import Detections

CAM = "door"


def tracked(*items: tuple[str, float, tuple[float, float, float, float], int | None]) -> Detections:
    return Detections.from_list(
        [{"label": lab, "score": s, "box": list(b), "track_id": tid} for lab, s, b, tid in items]
    )


def frames(n: int, camera: str = CAM):
    return [meta(camera, i, T0 + timedelta(seconds=i)) for i in range(n)]


def track_rows(catalog) -> dict[int, tuple]:
    """track id -> camera, label, first and last seen, frames, best frame, score and x1."""
    t = S.tracks.c
    stmt = sa.select(
        t.track_id,
        t.camera,
        t.label,
        t.first_seen,
        t.last_seen,
        t.frames,
        t.best_frame_id,
        t.best_score,
        t.best_x1,
    ).order_by(t.track_id)
    with catalog.engine.connect() as conn:
        return {r[0]: tuple(r[1:]) for r in conn.execute(stmt)}


def at(seconds: int) -> object:
    return (T0 + timedelta(seconds=seconds)).replace(tzinfo=None)


@pytest.fixture
def store(catalog_url):
    s = Store(catalog_url)
    yield s
    s.close()


def test_a_track_sums_up_its_boxes_over_batches(catalog):
    f = frames(5)
    person = ("person", 0.5, (10, 10, 50, 90))
    catalog.write_results(
        [
            result(f[0], tracked(("person", 0.4, (10, 10, 50, 90), None)), version="1"),  # unconfirmed yet
            result(f[1], tracked(("person", 0.6, (12, 10, 52, 90), 7), ("face", 0.9, (1, 1, 5, 5), 8))),
        ]
    )
    catalog.write_results(
        [
            result(f[2], tracked(("person", 0.9, (14, 10, 54, 90), 7))),
            result(f[3], tracked(person[:2] + (person[2], 7))),
            result(f[4], tracked(("person", 0.3, (20, 10, 60, 90), 9))),
        ]
    )
    assert track_rows(catalog) == {
        7: (CAM, "person", at(1), at(3), 3, f[2].frame_id, pytest.approx(0.9), 14.0),
        8: (CAM, "face", at(1), at(1), 1, f[1].frame_id, pytest.approx(0.9), 1.0),
        9: (CAM, "person", at(4), at(4), 1, f[4].frame_id, pytest.approx(0.3), 20.0),
    }
    # untracked boxes keep a NULL track id; the rows say which model version tracked them
    assert catalog.query("SELECT count(*) FROM detections WHERE track_id IS NULL").rows == [(1,)]
    assert catalog.query("SELECT DISTINCT model, model_version FROM tracks").rows == [("haar-face", "1")]


def test_writing_the_same_frames_again_changes_no_track(catalog):
    f = frames(3)
    batch = [result(m, tracked(("person", 0.5 + i / 10, (i, 0, i + 10, 20), 42))) for i, m in enumerate(f)]
    catalog.write_results(batch)
    first = track_rows(catalog)
    catalog.write_results(batch[1:])  # a re-delivery after a crash: the same rows again
    catalog.write_results(batch + batch)  # a frame twice in one batch
    assert track_rows(catalog) == first
    assert first[42][4] == 3


def test_a_rewrite_that_moves_boxes_to_another_track_repairs_both(catalog):
    f = frames(4)
    catalog.write_results([result(m, tracked(("person", 0.5, (0, 0, 10, 20), 1))) for m in f])
    assert track_rows(catalog)[1][4] == 4
    # a second writer of the last two frames gave their boxes another id (two owners at a rebalance)
    catalog.write_results([result(m, tracked(("person", 0.8, (0, 0, 10, 20), 2))) for m in f[2:]])
    rows = track_rows(catalog)
    assert rows[1][1:5] == ("person", at(0), at(1), 2)
    assert rows[2][1:5] == ("person", at(2), at(3), 2)
    # and a rewrite without any track ids leaves no empty track behind
    catalog.write_results([result(m, Detections.empty()) for m in f])
    assert track_rows(catalog) == {}


def test_tracker_states_are_saved_with_the_results_and_read_back_by_camera(catalog):
    f = frames(2) + frames(1, "yard")
    state = TrackerState(CAM, "haar-face", "1", b"\x00state\xff", f[1].frame_id, f[1].captured_at)
    catalog.write_results([result(m) for m in f], [state])
    got = catalog.tracker_states("haar-face", "1", [CAM, "yard", "nowhere"])
    assert got == {CAM: state}
    newer = TrackerState(CAM, "haar-face", "1", b"later", f[0].frame_id, f[1].captured_at + timedelta(1))
    catalog.write_results([result(f[0])], [newer])
    assert catalog.tracker_states("haar-face", "1", [CAM])[CAM] == newer
    assert catalog.tracker_states("haar-face", "2", [CAM]) == {}
    assert catalog.tracker_states("haar-face", "1", []) == {}


def test_a_failed_write_saves_neither_the_tracks_nor_the_state(catalog):
    f = frames(2)
    good = result(f[0], tracked(("person", 0.5, (0, 0, 10, 20), 5)))
    bad = result(f[1], tracked(("person", float("nan"), (0, 0, 10, 20), 5)), model="x" * 10_000)
    state = TrackerState(CAM, "haar-face", "1", b"s", f[1].frame_id, f[1].captured_at)
    with pytest.raises(Exception):  # noqa: B017, PT011 - each backend refuses the row its own way
        catalog.write_results([good, bad], [state])
    assert track_rows(catalog) == {}
    assert catalog.tracker_states("haar-face", "1", [CAM]) == {}


def test_a_schema_5_catalog_gets_track_ids_tracks_and_states(catalog_url, store, catalog):
    f = frames(2)
    catalog.write_results([result(m, tracked(("face", 0.9, (1, 1, 5, 5), None))) for m in f])
    catalog.close()
    store.execute("DROP TABLE tracks")
    store.execute("DROP TABLE tracker_states")
    store.execute("DROP INDEX detections_track")
    store.execute("ALTER TABLE detections DROP COLUMN track_id")
    store.execute(f"DELETE FROM schema_version WHERE version >= {SCHEMA_VERSION}")
    again = open_catalog(catalog_url)
    try:
        assert again.schema_version() == SCHEMA_VERSION
        assert again.query("SELECT count(*), count(track_id) FROM detections").rows == [(2, 0)]
        again.write_results([result(f[1], tracked(("face", 0.9, (1, 1, 5, 5), 3)))])
        assert list(track_rows(again)) == [3]
    finally:
        again.close()
