"""The image archive on a real local directory and on a real S3 server (SeaweedFS, auth enforced).

The contract (safe keys, idempotent writes, confined reads) runs on both backends; then what only S3
has: credentials, buckets, an unreachable or paused endpoint, settings from the lake's config file,
and a real worker writing frames of a real video to S3.
"""

from __future__ import annotations

import importlib
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from itertools import islice
from pathlib import Path

import cv2
import numpy as np
import pytest
from media import sample
from servers.s3 import _free_ports, s3_filesystem

from visionlake.archive import PARTIAL_DIR, PARTIAL_MAX_AGE, Archive, escape_segment
from visionlake.config import load_settings
from visionlake.errors import (
    ArchiveConflict,
    ArchiveError,
    BackendUnavailable,
    ConfigError,
    MissingDependency,
)
from visionlake.frames import check_camera_id, make_frame_id
from visionlake.lake import Lake

T0 = datetime(2026, 11, 3, 23, 59, 59, tzinfo=UTC)
BACKENDS = ["local", "s3"]

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


@dataclass
class Store:
    """An archive at `<area>/archive` plus plain access to the whole area (a tmp dir or a bucket)."""

    backend: str
    archive: Archive
    objects: Callable[[], set[str]]  # every object in the area, as a path relative to it
    write_raw: Callable[[str, bytes], str]  # writes around the archive; returns the object's URI
    read_raw: Callable[[str], bytes]  # reads a URI without the archive's checks
    area_uri: str


def s3_options(server: dict, **extra) -> dict:
    return {"endpoint_url": server["endpoint_url"], "key": server["key"], "secret": server["secret"], **extra}


def _local_store(tmp_path: Path) -> Store:
    def objects() -> set[str]:
        return {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()}

    def write_raw(rel: str, data: bytes) -> str:
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        return str(p)

    return Store(
        "local",
        Archive(str(tmp_path / "archive")),
        objects,
        write_raw,
        lambda uri: Path(uri).read_bytes(),
        str(tmp_path),
    )


def _s3_store(server: dict, bucket: str) -> Store:
    fs = s3_filesystem(server)

    def objects() -> set[str]:
        fs.invalidate_cache()
        return {p.removeprefix(f"{bucket}/") for p in fs.find(bucket)}

    def write_raw(rel: str, data: bytes) -> str:
        fs.pipe_file(f"{bucket}/{rel}", data)
        return f"s3://{bucket}/{rel}"

    return Store(
        "s3",
        Archive(f"s3://{bucket}/archive", s3_options(server)),
        objects,
        write_raw,
        lambda uri: fs.cat_file(uri),
        f"s3://{bucket}",
    )


@pytest.fixture(autouse=True)
def no_aws_environment(monkeypatch, tmp_path) -> Path:
    """No AWS settings from this machine: no AWS_* variables, an empty HOME (no ~/.aws), no IMDS.

    Every test here says where its credentials and endpoint come from; the ones about the standard
    places set them in this empty environment.
    """
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return home


@pytest.fixture(params=BACKENDS)
def store(request, tmp_path) -> Store:
    if request.param == "local":
        return _local_store(tmp_path)
    return _s3_store(request.getfixturevalue("s3_server"), request.getfixturevalue("s3_bucket"))


@pytest.fixture
def archive(store) -> Archive:
    return store.archive


@pytest.fixture
def local_archive(tmp_path) -> Archive:
    return Archive(str(tmp_path / "archive"))


@pytest.fixture(scope="module")
def data() -> bytes:
    return sample("HappyFish.jpg").read_bytes()


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def count_writes(archive: Archive, monkeypatch) -> list[str]:
    """Spy on what puts an object under its key: the link of a written file into place locally (a
    re-put may write a temporary copy first, which the link then refuses), s3fs's _pipe_file on S3."""
    calls: list[str] = []
    owner = archive.fs if archive.s3 else archive
    name = "_pipe_file" if archive.s3 else "_link"
    real = getattr(owner, name)

    def spy(path, *args, **kwargs):
        out = real(path, *args, **kwargs)
        calls.append(path)  # only what went through
        return out

    monkeypatch.setattr(owner, name, spy)
    return calls


# --- the contract, on every backend -----------------------------------------------------------


def test_hostile_camera_ids_stay_inside_the_root(store, data):
    archive = store.archive
    keys = set()
    for n, camera in enumerate(HOSTILE_CAMERAS):
        fid = make_frame_id(camera, n, T0)
        key = archive.key(camera, T0, fid)
        parts = key.split("/")
        assert len(parts) == 5, key  # camera / yyyy / mm / dd / frame.jpg: the camera is ONE segment
        assert parts[0] not in ("", ".", "..") and "\\" not in parts[0] and ":" not in parts[0]
        assert parts[1:] == ["2026", "11", "03", f"{fid}.jpg"]
        uri = archive.put(key, data)
        assert uri == archive.uri(key)
        assert store.read_raw(uri) == data
        assert archive.get(uri) == data and archive.exists(uri)
        keys.add(key)
    assert len(keys) == len(HOSTILE_CAMERAS)  # escaping is injective: no two cameras share a folder
    # nothing was written anywhere but under the archive root, and exactly under the escaped keys
    assert store.objects() == {f"archive/{k}" for k in keys}


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


def test_key_uses_the_utc_date(local_archive):
    late = datetime(2026, 11, 3, 22, 30, tzinfo=timezone(timedelta(hours=-5)))  # Nov 4th in UTC
    assert local_archive.key("cam", late, "abc") == "cam/2026/11/04/abc.jpg"


def test_put_is_idempotent(store, data, monkeypatch):
    archive = store.archive
    key = archive.key("cam", T0, make_frame_id("cam", 1, T0))
    uri = archive.put(key, data)
    writes = count_writes(archive, monkeypatch)
    assert archive.put(key, data) == uri  # same object again: nothing rewritten
    assert writes == []
    assert store.read_raw(uri) == data
    assert store.objects() == {f"archive/{key}"}


def test_put_never_replaces_another_image_under_a_key(store, data, monkeypatch):
    # a key names one image: the catalog row describing it must stay true
    archive = store.archive
    key = archive.key("cam", T0, "frame1")
    uri = archive.put(key, data)
    other = bytearray(data)
    other[len(other) // 2] ^= 0xFF  # same size, other bytes
    writes = count_writes(archive, monkeypatch)
    assert archive.put(key, data) == uri  # the same image again (a re-delivery) writes nothing
    for bad in (bytes(other), b"partial"):
        with pytest.raises(ArchiveConflict, match="already holds another image"):
            archive.put(key, bad)
    assert writes == []
    assert archive.get(uri) == data == store.read_raw(uri)
    assert store.objects() == {f"archive/{key}"}


def test_many_puts_leave_only_final_objects(store, data):
    archive = store.archive
    keys = {archive.key(f"cam{i % 3}", T0 + timedelta(days=i), f"f{i}") for i in range(30)}
    uris = {archive.put(k, data) for k in keys}
    assert uris == {archive.uri(k) for k in keys}
    assert store.objects() == {f"archive/{k}" for k in keys}


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
def test_put_of_a_key_climbing_out_is_refused(store, data, rel):
    with pytest.raises(ArchiveError):
        store.archive.put(rel, data)
    assert store.objects() == set()


def test_get_outside_the_archive_is_refused(store, data):
    archive = store.archive
    secret = store.write_raw("secret.txt", b"not an image")
    sibling = store.write_raw("archive2/x.jpg", data)  # shares the root's name as a prefix
    inside = store.write_raw("archive/cam/2026/11/03/ok.jpg", data)
    assert archive.get(inside) == data  # the refusals below are about the place, not the store
    root = archive.uri("x").rsplit("/", 1)[0]
    uris = [
        f"{root}/../secret.txt",
        f"{root}/./../secret.txt",
        f"{root}//../secret.txt",
        f"{root}/cam/../../secret.txt",
        f"{root}/cam/2026/11/03/../../../../secret.txt",
        secret,
        sibling,
        "/etc/passwd",
        f"{root}/..",
        root,
    ]
    if store.backend == "local":
        uris += [f"file://{root}/../secret.txt"]
    else:
        bucket = archive.bucket
        uris += [
            sibling.replace("s3://", "s3a://"),
            f"s3://other-{bucket}/archive/x.jpg",  # same prefix, another bucket
            f"s3://{bucket}archive/x.jpg",
            f"{store.area_uri}/secret.txt",
        ]
    for uri in uris:
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
def test_invalid_frame_ids_are_refused(local_archive, frame_id):
    with pytest.raises(ArchiveError) as e:
        local_archive.key("cam", T0, frame_id)
    assert "frame id" in str(e.value)


def test_frame_id_with_a_trailing_newline_is_refused(local_archive):
    with pytest.raises(ArchiveError):
        local_archive.key("cam", T0, "abc\n")


def test_valid_frame_ids_are_accepted(local_archive):
    for fid in [make_frame_id("cam", 1, T0), "x" * 128, "A-b_9"]:
        assert local_archive.key("cam", T0, fid).endswith(f"/{fid}.jpg")


# --- local only -------------------------------------------------------------------------------


def test_local_put_rewrites_nothing_and_leaves_no_temporary_files(tmp_path, local_archive, data):
    key = local_archive.key("cam", T0, make_frame_id("cam", 1, T0))
    uri = local_archive.put(key, data)
    path = Path(uri)
    mtime = path.stat().st_mtime_ns
    assert local_archive.put(key, data) == uri
    assert path.stat().st_mtime_ns == mtime
    assert files_under(tmp_path / "archive") == [path]
    assert not [p for p in (tmp_path / "archive").rglob("*") if ".tmp" in p.name]


def test_local_writers_racing_on_one_key_store_one_image(tmp_path, local_archive, data):
    # the final name is linked, never renamed over: the loser is told, no temporary file stays
    key = local_archive.key("cam", T0, "frame1")
    images = [data, data[::-1], data + b"x", data[:-1]] * 4
    barrier = threading.Barrier(len(images))

    def put(image: bytes) -> bytes | None:
        barrier.wait()
        try:
            local_archive.put(key, image)
        except ArchiveConflict:
            return None
        return image

    with ThreadPoolExecutor(len(images)) as pool:
        stored = [x for x in pool.map(put, images) if x is not None]
    assert len(set(stored)) == 1
    assert Path(local_archive.uri(key)).read_bytes() == stored[0]
    assert files_under(tmp_path / "archive") == [Path(local_archive.uri(key))]


def test_local_put_makes_again_a_folder_pruned_since(tmp_path, local_archive, data):
    # the archive remembers the folders it made; one removed behind its back is made again
    first = Path(local_archive.put(local_archive.key("cam", T0, "f1"), data))
    shutil.rmtree(tmp_path / "archive" / "cam")
    second = Path(local_archive.put(local_archive.key("cam", T0, "f2"), data))
    assert second.parent == first.parent and second.read_bytes() == data
    assert files_under(tmp_path / "archive") == [second]


def test_local_uris_are_plain_paths(tmp_path, local_archive, data):
    uri = local_archive.put(local_archive.key("cam", T0, "f1"), data)
    assert uri == str(tmp_path / "archive" / "cam/2026/11/03/f1.jpg")
    assert Path(uri).resolve().is_relative_to((tmp_path / "archive").resolve())


def test_file_url_archive_works_like_a_path(tmp_path, data):
    archive = Archive(f"file://{tmp_path}/arch")
    uri = archive.put(archive.key("../cam", T0, "f1"), data)
    assert Path(uri).resolve().is_relative_to((tmp_path / "arch").resolve())
    assert archive.get(uri) == data


# --- S3 only ----------------------------------------------------------------------------------


def test_s3_uris_are_full_urls_of_real_objects(s3_server, s3_bucket, data):
    archive = Archive(f"s3://{s3_bucket}/lake/archive/", s3_options(s3_server))
    key = archive.key("../front door", T0, "f1")
    uri = archive.put(key, data)
    assert uri == f"s3://{s3_bucket}/lake/archive/%2E%2E%2Ffront%20door/2026/11/03/f1.jpg"
    fs = s3_filesystem(s3_server)
    assert fs.cat_file(uri) == data
    assert fs.info(uri)["ContentType"] == "image/jpeg"
    assert fs.find(s3_bucket) == [uri.removeprefix("s3://")]


def test_s3_credentials_and_endpoint_from_the_environment(
    s3_server, s3_bucket, data, no_aws_environment, monkeypatch
):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server["key"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server["secret"])
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server["endpoint_url"])
    archive = Archive(f"s3://{s3_bucket}/env")
    assert archive.get(archive.put("cam/2026/11/03/f1.jpg", data)) == data


def test_s3_credentials_and_endpoint_from_the_aws_files(s3_server, s3_bucket, data, no_aws_environment):
    aws = no_aws_environment / ".aws"
    aws.mkdir()
    (aws / "credentials").write_text(
        f"[default]\naws_access_key_id = {s3_server['key']}\naws_secret_access_key = {s3_server['secret']}\n"
    )
    (aws / "config").write_text(
        f"[default]\nregion = us-east-1\nendpoint_url = {s3_server['endpoint_url']}\n"
    )
    archive = Archive(f"s3://{s3_bucket}/files")
    assert archive.get(archive.put("cam/2026/11/03/f1.jpg", data)) == data


def test_s3_missing_bucket_is_a_clear_config_error(s3_server):
    start = time.monotonic()
    with pytest.raises(ConfigError) as e:
        Archive("s3://no-such-bucket-here/lake", s3_options(s3_server))
    assert time.monotonic() - start < 5
    assert not isinstance(e.value, ArchiveError)  # a setting to fix, not a bad frame to dead-letter
    msg = str(e.value)
    assert "bucket 'no-such-bucket-here' does not exist" in msg and s3_server["endpoint_url"] in msg
    assert e.value.exit_code == 2


@pytest.mark.parametrize("wrong", ["secret", "key"])
def test_s3_wrong_credentials_are_a_clear_config_error(s3_server, s3_bucket, wrong):
    bad = "WrongSecretValue123456789" if wrong == "secret" else "AKIAWRONGKEYID000000"
    options = s3_options(s3_server, **{wrong: bad})
    with pytest.raises(ConfigError) as e:
        Archive(f"s3://{s3_bucket}/lake", options)
    msg = str(e.value)
    assert f"access key id {options['key']!r}" in msg
    assert s3_server["endpoint_url"] in msg and s3_bucket in msg
    assert ("SignatureDoesNotMatch" if wrong == "secret" else "InvalidAccessKeyId") in msg
    assert options["secret"] not in msg and s3_server["secret"] not in msg  # never the secret


def test_s3_wrong_secret_from_the_environment_names_the_key(
    s3_server, s3_bucket, no_aws_environment, monkeypatch
):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server["key"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "NotTheRightSecret42")
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server["endpoint_url"])
    with pytest.raises(ConfigError) as e:
        Archive(f"s3://{s3_bucket}/env")
    assert repr(s3_server["key"]) in str(e.value) and "NotTheRightSecret42" not in str(e.value)


def test_s3_no_credentials_at_all_is_a_clear_config_error(s3_server, s3_bucket, no_aws_environment):
    with pytest.raises(ConfigError) as e:
        Archive(f"s3://{s3_bucket}/lake", {"endpoint_url": s3_server["endpoint_url"]})
    assert "credentials" in str(e.value) and "AWS_ACCESS_KEY_ID" in str(e.value)


def test_s3_anonymous_access_is_refused_by_the_test_server(s3_server, s3_bucket):
    with pytest.raises(ConfigError) as e:
        Archive(f"s3://{s3_bucket}/lake", {"endpoint_url": s3_server["endpoint_url"], "anon": True})
    assert "refused" in str(e.value)


def test_s3_unreachable_endpoint_is_backend_unavailable_within_bounded_time(s3_bucket, s3_server):
    port = _free_ports(1)[0]  # nothing listens here
    options = s3_options(s3_server, endpoint_url=f"http://127.0.0.1:{port}")
    start = time.monotonic()
    with pytest.raises(BackendUnavailable) as e:
        Archive(f"s3://{s3_bucket}/lake", options)  # the defaults: the check gives up after ~10 s
    took = time.monotonic() - start
    assert 5 < took < 15, took
    assert f"127.0.0.1:{port}" in str(e.value) and e.value.exit_code == 3
    assert not isinstance(e.value, ArchiveError)
    start = time.monotonic()
    with pytest.raises(BackendUnavailable):
        Archive(f"s3://{s3_bucket}/lake", {**options, "retry_seconds": 1})
    assert time.monotonic() - start < 3


def test_s3_bad_archive_options_are_config_errors(s3_server, s3_bucket):
    with pytest.raises(ConfigError) as e:
        Archive(f"s3://{s3_bucket}/lake", s3_options(s3_server, endpoint="http://typo"))
    assert "archive_options" in str(e.value)
    with pytest.raises(ConfigError):
        Archive(f"s3://{s3_bucket}/lake", s3_options(s3_server, retry_seconds="soon"))
    with pytest.raises(ConfigError):
        Archive("s3://", s3_options(s3_server))


def test_s3_without_s3fs_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "s3fs", None)
    registry = importlib.import_module("fsspec.registry")._registry  # classes imported so far
    for proto in ("s3", "s3a"):
        monkeypatch.delitem(registry, proto, raising=False)
    with pytest.raises(MissingDependency) as e:
        Archive("s3://bucket/prefix", {"endpoint_url": "http://127.0.0.1:1"})
    assert "pip install 'visionlake[s3]'" in str(e.value) and "s3fs" in str(e.value)


def test_s3_put_rides_out_a_paused_server(s3_server, s3_bucket, data):
    """SIGSTOP the server during a put: requests time out and are retried until SIGCONT."""
    archive = Archive(
        f"s3://{s3_bucket}/lake",
        s3_options(s3_server, config_kwargs={"read_timeout": 1, "connect_timeout": 1}),
    )
    key = archive.key("cam", T0, "during-outage")
    result: dict = {}

    def put() -> None:
        try:
            result["uri"] = archive.put(key, data)
        except Exception as e:  # noqa: BLE001 - reported by the assertion below
            result["error"] = e

    os.kill(s3_server["pid"], 19)  # SIGSTOP
    try:
        t = threading.Thread(target=put)
        t.start()
        time.sleep(2)
        assert t.is_alive() and not result  # still retrying: nothing failed, nothing pretended
    finally:
        os.kill(s3_server["pid"], 18)  # SIGCONT
    t.join(30)
    assert result.get("uri") == archive.uri(key), result
    assert archive.get(result["uri"]) == data


def test_s3_an_outage_longer_than_the_retry_budget_is_backend_unavailable(s3_server, s3_bucket, data):
    archive = Archive(
        f"s3://{s3_bucket}/lake",
        s3_options(s3_server, retry_seconds=2, config_kwargs={"read_timeout": 1, "connect_timeout": 1}),
    )
    key = archive.key("cam", T0, "too-long")
    os.kill(s3_server["pid"], 19)
    try:
        start = time.monotonic()
        with pytest.raises(BackendUnavailable) as e:
            archive.put(key, data)
        assert time.monotonic() - start < 5
    finally:
        os.kill(s3_server["pid"], 18)
    assert not isinstance(e.value, ArchiveError)  # a worker stops uncommitted instead of dead-lettering
    assert archive.get(archive.put(key, data)) == data  # and once it is back, the same put works


# --- a lake on S3: settings from visionlake.toml, a real worker on real frames ----------------


def s3_lake(root: Path, server: dict, bucket: str, **config_kwargs) -> Lake:
    root.mkdir(parents=True, exist_ok=True)
    extra = "".join(f"{k} = {v}\n" for k, v in config_kwargs.items())
    (root / "visionlake.toml").write_text(
        f'archive = "s3://{bucket}/lake1/archive"\n'
        "[archive_options]\n"
        f'endpoint_url = "{server["endpoint_url"]}"\n'
        f'key = "{server["key"]}"\n'
        f'secret = "{server["secret"]}"\n' + (f"[archive_options.config_kwargs]\n{extra}" if extra else "")
    )
    return Lake(lake=root)


@pytest.fixture
def lake_on_s3(tmp_path, s3_server, s3_bucket, no_aws_environment, monkeypatch) -> Iterator[Lake]:
    for name in ("VISIONLAKE_HOME", "VISIONLAKE_LOG", "VISIONLAKE_CATALOG", "VISIONLAKE_ARCHIVE"):
        monkeypatch.delenv(name, raising=False)
    lake = s3_lake(tmp_path / "lake", s3_server, s3_bucket, read_timeout=1, connect_timeout=1)
    yield lake
    lake.close()


def test_settings_read_archive_options_from_the_lake_config(tmp_path, s3_server, s3_bucket, monkeypatch):
    monkeypatch.delenv("VISIONLAKE_ARCHIVE", raising=False)
    lake = s3_lake(tmp_path / "lake", s3_server, s3_bucket, read_timeout=7)
    s = lake.settings
    assert s.archive == f"s3://{s3_bucket}/lake1/archive"
    assert s.archive_options["endpoint_url"] == s3_server["endpoint_url"]
    assert s.archive_options["config_kwargs"] == {"read_timeout": 7}
    assert lake.archive.url == s.archive and lake.archive.bucket == s3_bucket
    assert lake.archive.fs.config_kwargs["read_timeout"] == 7
    # a flag still wins over the file, and the options stay with the file
    assert load_settings(tmp_path / "lake", archive="s3://other/x").archive == "s3://other/x"
    (tmp_path / "lake" / "visionlake.toml").write_text('archive_options = "not a table"\n')
    with pytest.raises(ConfigError) as e:
        load_settings(tmp_path / "lake")
    assert "archive_options" in str(e.value)


def _megamind(n: int, resize=(320, 240)):
    """Frames 1..n of Megamind.avi (frame 0 is black: a 2 KB JPEG, unlike the 13 KB of the others)."""
    from visionlake.ingest.sources import VideoFileSource

    return islice(VideoFileSource(sample("Megamind.avi"), resize=resize), 1, n + 1)


def _catalog_uris(lake: Lake) -> list[str]:
    return [u for (u,) in lake.catalog.query("SELECT uri FROM frames ORDER BY frame_id").rows]


def _assert_frames_on_s3(lake: Lake, server: dict, bucket: str, n: int, size: tuple[int, int]) -> None:
    uris = _catalog_uris(lake)
    assert len(uris) == n
    fs = s3_filesystem(server)
    for uri in uris:
        assert uri.startswith(f"s3://{bucket}/lake1/archive/megamind/"), uri
        image = cv2.imdecode(np.frombuffer(fs.cat_file(uri), np.uint8), cv2.IMREAD_COLOR)
        assert image is not None and (image.shape[1], image.shape[0]) == size


def test_worker_archives_real_frames_to_s3(lake_on_s3, s3_server, s3_bucket):
    from visionlake.detectors import load_detector
    from visionlake.ingest.publish import ingest
    from visionlake.workers.worker import Worker

    lake = lake_on_s3
    n = ingest(lake, _megamind(6), "megamind").frames
    stats = Worker(lake, load_detector("haar-face"), until_idle=True, idle_timeout=1.0).run()
    assert stats.processed == n == 6 and stats.dead_lettered == 0
    _assert_frames_on_s3(lake, s3_server, s3_bucket, n, (320, 240))
    assert stats.detections > 0  # Megamind has faces: the detector really ran on the decoded frames


def test_producer_and_worker_ride_out_a_paused_s3_server(lake_on_s3, s3_server, s3_bucket):
    """Frames over the record limit go to S3 at ingest (claim check); S3 pauses during both steps."""
    from visionlake.detectors import load_detector
    from visionlake.ingest.publish import ingest
    from visionlake.log.base import TopicConfig
    from visionlake.workers.worker import Worker

    lake = lake_on_s3
    lake.log.create_topic("frames", TopicConfig(partitions=2, max_record_bytes=5_000))
    out: dict = {}

    def during_outage(name: str, fn) -> None:
        os.kill(s3_server["pid"], 19)  # SIGSTOP
        try:
            t = threading.Thread(target=lambda: out.__setitem__(name, fn()))
            t.start()
            time.sleep(1.5)
            assert t.is_alive(), f"{name} finished while S3 was paused: {out}"
        finally:
            os.kill(s3_server["pid"], 18)  # SIGCONT
        t.join(60)
        assert name in out, f"{name} failed (see the captured log)"

    during_outage("ingest", lambda: ingest(lake, _megamind(4), "megamind"))
    assert out["ingest"].frames == out["ingest"].claim_checked == 4
    during_outage(
        "worker", lambda: Worker(lake, load_detector("haar-face"), until_idle=True, idle_timeout=1.0).run()
    )
    assert out["worker"].processed == 4 and out["worker"].dead_lettered == 0
    _assert_frames_on_s3(lake, s3_server, s3_bucket, 4, (320, 240))


def test_local_writes_a_killed_process_left_half_done_are_swept_by_age(tmp_path, local_archive, data):
    # a kill -9 between writing the temporary file and linking it leaves it in .partial
    partial = tmp_path / "archive" / PARTIAL_DIR
    stale, fresh = partial / "stale.tmp", partial / "fresh.tmp"
    stale.write_bytes(data[:100])
    fresh.write_bytes(data[:100])
    old = time.time() - PARTIAL_MAX_AGE - 60
    os.utime(stale, (old, old))
    uri = local_archive.put(local_archive.key("cam", T0, "f1"), data)
    Archive(str(tmp_path / "archive"))  # opening the archive sweeps; a write in flight is fresh
    assert not stale.exists() and fresh.exists()
    assert files_under(tmp_path / "archive") == sorted([Path(uri), fresh])
