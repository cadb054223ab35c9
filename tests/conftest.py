"""Shared fixtures. Every test writes under pytest's tmp_path, never into the working tree."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from visionlake.lake import Lake
from visionlake.log.base import FrameLog
from visionlake.log.sqlite import SqliteLog

pytest_plugins = ["servers.kafka", "servers.postgres", "servers.s3"]

#: Frame-log backends the contract suite runs against; the Kafka backend adds itself here.
LOG_BACKENDS = ["sqlite"]


def _make_sqlite_log(root: Path, **options) -> FrameLog:
    options.setdefault("session_timeout", 3.0)
    options.setdefault("heartbeat_interval", 0.1)
    return SqliteLog(root, **options)


@pytest.fixture(params=LOG_BACKENDS)
def log_factory(request, tmp_path) -> Iterator[Callable[..., FrameLog]]:
    """Makes frame logs of one backend; each call with the same `name` opens the same log again."""
    opened: list[FrameLog] = []

    def make(name: str = "log", **options) -> FrameLog:
        if request.param == "sqlite":
            lg = _make_sqlite_log(tmp_path / name, **options)
        else:  # pragma: no cover - backends added later
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
