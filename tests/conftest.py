"""Shared fixtures. Every test writes under pytest's tmp_path, never into the working tree."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from visionlake.lake import Lake
from visionlake.log.base import FrameLog
from visionlake.log.sqlite import SqliteLog

pytest_plugins = ["servers.kafka", "servers.postgres", "servers.s3", "servers.spark"]


def pytest_configure(config) -> None:
    """Hypothesis keeps its cache in a temporary directory, not in the working tree."""
    import tempfile

    from hypothesis.configuration import set_hypothesis_home_dir

    set_hypothesis_home_dir(tempfile.mkdtemp(prefix="visionlake-hypothesis-"))


#: Frame-log backends the contract suite runs against.
LOG_BACKENDS = ["sqlite", "kafka"]


def _make_sqlite_log(root: Path, **options) -> FrameLog:
    options.setdefault("session_timeout", 3.0)
    options.setdefault("heartbeat_interval", 0.1)
    return SqliteLog(root, **options)


@pytest.fixture(params=LOG_BACKENDS)
def log_factory(request, tmp_path) -> Iterator[Callable[..., FrameLog]]:
    """Makes frame logs of one backend; each call with the same `name` opens the same log again."""
    opened: list[FrameLog] = []
    kafka_namespace = f"t{uuid.uuid4().hex[:10]}"

    def make(name: str = "log", **options) -> FrameLog:
        if request.param == "sqlite":
            lg = _make_sqlite_log(tmp_path / name, **options)
        elif request.param == "kafka":
            # one shared broker; each (test, name) is its own namespace of topics and groups
            if "segment_bytes" in options:
                pytest.skip(
                    "segment_bytes is an embedded-log setting: Kafka brokers apply retention themselves, "
                    "on their own schedule (enforce_retention() is a no-op; tansu 0.6 applies none)"
                )
            from visionlake.log.kafka import KafkaLog

            options.setdefault("topic_prefix", f"{kafka_namespace}.{name}.")
            options.setdefault("heartbeat_interval", 0.5)
            lg = KafkaLog(f"kafka://{request.getfixturevalue('kafka_broker')}", **options)
        else:  # pragma: no cover
            raise AssertionError(request.param)
        opened.append(lg)
        return lg

    yield make
    for lg in opened:
        lg.close()


@pytest.fixture
def frame_log(log_factory) -> FrameLog:
    return log_factory()


@pytest.fixture
def lake(tmp_path) -> Iterator[Lake]:
    lk = Lake(lake=tmp_path / "lake")
    yield lk
    lk.close()


# --- a catalog on every backend (the contract suites of the catalog, the reports, the roll-up) --------


@pytest.fixture(params=["sqlite", "postgres"])
def catalog_url(request, tmp_path) -> str:
    """A URL of an empty catalog: a file in tmp_path, or a fresh database on the test PostgreSQL."""
    if request.param == "sqlite":
        return str(tmp_path / "lake" / "catalog.db")
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def catalog(catalog_url):
    from visionlake.catalog import open_catalog

    cat = open_catalog(catalog_url)
    yield cat
    cat.close()
