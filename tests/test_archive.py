"""The image archive on a real local directory: safe keys, idempotent atomic writes, confined reads."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from media import sample

from visionlake.archive import Archive, escape_segment
from visionlake.errors import ArchiveError
from visionlake.frames import check_camera_id, make_frame_id

T0 = datetime(2026, 11, 3, 23, 59, 59, tzinfo=UTC)

HOSTILE_CAMERAS = [
    "../../etc",
    "..",
    ".",
    "/abs",
    "/",
    "a/b",
    "a%2Fb",  # must not collide with "a/b" after escaping
    "c:\\x",
    "\\\\server\\share",
    "caméra-東京-🚗",
    "front door",
    " ",
    "~root",
    "$HOME",
    "a/../../..",
    ".hidden",
    "x" * 128,
]


@pytest.fixture
def archive(tmp_path) -> Archive:
    return Archive(str(tmp_path / "archive"))


@pytest.fixture(scope="module")
def data() -> bytes:
    return sample("HappyFish.jpg").read_bytes()


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def test_hostile_camera_ids_stay_inside_the_root(tmp_path, archive, data):
    root = (tmp_path / "archive").resolve()
    keys = set()
    for n, camera in enumerate(HOSTILE_CAMERAS):
        fid = make_frame_id(camera, n, T0)
        key = archive.key(camera, T0, fid)
        parts = key.split("/")
        assert len(parts) == 5, key  # camera / yyyy / mm / dd / frame.jpg: the camera is ONE segment
        assert parts[0] not in ("", ".", "..") and "\\" not in parts[0] and ":" not in parts[0]
        assert parts[1:] == ["2026", "11", "03", f"{fid}.jpg"]
        uri = archive.put(key, data)
        written = Path(uri).resolve()
        assert written.is_relative_to(root), (camera, uri)
        assert written.read_bytes() == data
        assert archive.get(uri) == data and archive.exists(uri)
        keys.add(key)
    assert len(keys) == len(HOSTILE_CAMERAS)  # escaping is injective: no two cameras share a folder
    # nothing was written anywhere but the archive root
    assert {p.name for p in tmp_path.iterdir()} == {"archive"}
    assert len(files_under(root)) == len(HOSTILE_CAMERAS)


def test_escaped_segments_are_distinct_and_plain():
    escaped = [escape_segment(c) for c in HOSTILE_CAMERAS]
    assert len(set(escaped)) == len(escaped)
    assert escape_segment("cam-01_A") == "cam-01_A"  # plain ids stay readable
    for seg in escaped:
        assert "/" not in seg and "." not in seg and "\\" not in seg
    with pytest.raises(ArchiveError):
        escape_segment("")


@pytest.mark.parametrize("camera", ["é" * 128, "." * 128, "東" * 100], ids=["e-acute", "dots", "cjk"])
def test_longest_valid_camera_ids_can_be_archived(archive, data, camera):
    assert check_camera_id(camera) == camera  # the ingest side accepts this id
    fid = make_frame_id(camera, 1, T0)
    uri = archive.put(archive.key(camera, T0, fid), data)
    assert archive.get(uri) == data


def test_key_uses_the_utc_date(archive):
    late = datetime(2026, 11, 3, 22, 30, tzinfo=timezone(timedelta(hours=-5)))  # Nov 4th in UTC
    assert archive.key("cam", late, "abc") == "cam/2026/11/04/abc.jpg"


def test_put_is_idempotent_and_leaves_no_temporary_files(tmp_path, archive, data):
    key = archive.key("cam", T0, make_frame_id("cam", 1, T0))
    uri = archive.put(key, data)
    path = Path(uri)
    mtime = path.stat().st_mtime_ns
    assert archive.put(key, data) == uri  # same object again: nothing rewritten
    assert path.stat().st_mtime_ns == mtime
    assert path.read_bytes() == data
    assert files_under(tmp_path / "archive") == [path]
    assert not [p for p in (tmp_path / "archive").rglob("*") if ".tmp" in p.name]


def test_put_replaces_a_different_object_atomically(tmp_path, archive, data):
    key = archive.key("cam", T0, "frame1")
    uri = archive.put(key, b"partial")  # e.g. left by something else; different size
    inode = os.stat(uri).st_ino
    assert archive.put(key, data) == uri
    assert Path(uri).read_bytes() == data
    assert os.stat(uri).st_ino != inode  # a new file renamed into place, not rewritten in place
    assert files_under(tmp_path / "archive") == [Path(uri)]


def test_many_puts_leave_only_final_files(tmp_path, archive, data):
    uris = {archive.put(archive.key(f"cam{i % 3}", T0 + timedelta(days=i), f"f{i}"), data) for i in range(30)}
    assert {str(p) for p in files_under(tmp_path / "archive")} == {str(Path(u)) for u in uris}


@pytest.mark.parametrize(
    "rel",
    [
        "../outside.jpg",
        "cam/../../outside.jpg",
        "./../outside.jpg",
        "..",
        "cam/2026/../../..",
    ],
)
def test_put_of_a_key_climbing_out_is_refused(tmp_path, archive, data, rel):
    with pytest.raises(ArchiveError):
        archive.put(rel, data)
    assert not (tmp_path / "outside.jpg").exists()
    assert files_under(tmp_path / "archive") == []


def test_get_outside_the_archive_is_refused(tmp_path, archive, data):
    secret = tmp_path / "secret.txt"
    secret.write_text("not an image")
    sibling = tmp_path / "archive2" / "x.jpg"
    sibling.parent.mkdir()
    sibling.write_bytes(data)
    root = archive.root
    for uri in [
        f"{root}/../secret.txt",
        f"{root}/./../secret.txt",
        f"{root}//../secret.txt",
        f"{root}/cam/../../secret.txt",
        f"file://{root}/../secret.txt",
        str(secret),
        str(sibling),  # shares the root's name as a prefix
        "/etc/passwd",
        f"{root}/..",
    ]:
        with pytest.raises(ArchiveError) as e:
            archive.get(uri)
        assert "archive" in str(e.value), uri
        with pytest.raises(ArchiveError):
            archive.exists(uri)


def test_get_of_a_missing_key_is_an_archive_error(archive):
    uri = archive.uri(archive.key("cam", T0, "nothere"))
    assert not archive.exists(uri)
    with pytest.raises(ArchiveError) as e:
        archive.get(uri)
    assert "nothere" in str(e.value)


@pytest.mark.parametrize(
    "frame_id",
    ["", "../x", "..", "a/b", "a\\b", "a.b", "x" * 129, "a b", "é", "a\x00b", "\nabc", "%2e%2e", "C:"],
)
def test_invalid_frame_ids_are_refused(archive, frame_id):
    with pytest.raises(ArchiveError) as e:
        archive.key("cam", T0, frame_id)
    assert "frame id" in str(e.value)


def test_frame_id_with_a_trailing_newline_is_refused(archive):
    with pytest.raises(ArchiveError):
        archive.key("cam", T0, "abc\n")


def test_valid_frame_ids_are_accepted(archive):
    for fid in [make_frame_id("cam", 1, T0), "x" * 128, "A-b_9"]:
        assert archive.key("cam", T0, fid).endswith(f"/{fid}.jpg")


def test_file_url_archive_works_like_a_path(tmp_path, data):
    archive = Archive(f"file://{tmp_path}/arch")
    uri = archive.put(archive.key("../cam", T0, "f1"), data)
    assert Path(uri).resolve().is_relative_to((tmp_path / "arch").resolve())
    assert archive.get(uri) == data
