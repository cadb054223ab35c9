"""`Lake`: the one object that builds the log, catalog and archive from settings.

The CLI, the demo, the benchmarks and the tests all go through it, so a backend chosen by URL is
chosen once, here.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import Settings, load_settings
from .log import FrameLog, open_log

if TYPE_CHECKING:  # the archive pulls in OpenCV and the catalog SQLAlchemy: only when opened
    from .archive import Archive
    from .catalog import Catalog
    from .ingest.publish import IngestStats

FRAMES_TOPIC = "frames"


def detections_topic(topic: str) -> str:
    return f"{topic}.detections"


def dlq_topic(topic: str) -> str:
    return f"{topic}.dlq"


class Lake:
    """Lazily opened backends of one lake; close it (or use `with`) to release them."""

    def __init__(self, settings: Settings | None = None, **overrides: str | Path | None) -> None:
        self.settings = settings or load_settings(**overrides)  # type: ignore[arg-type]

    @property
    def root(self) -> Path:
        return self.settings.lake

    @cached_property
    def log(self) -> FrameLog:
        return open_log(self.settings.log, **self.settings.log_options)

    @cached_property
    def catalog(self) -> Catalog:
        from .catalog import open_catalog

        return open_catalog(self.settings.catalog)

    @cached_property
    def archive(self) -> Archive:
        from .archive import Archive

        return Archive(self.settings.archive, self.settings.archive_options)

    def ingest(self, source: Iterable[Any], camera: str, **options: Any) -> IngestStats:
        """Publish every frame of `source` (a `VideoFileSource`, `CameraSource`, `ImageFolderSource` or
        any iterable of captured frames) as camera `camera`; returns what was ingested.

        `options` go to `visionlake.ingest.publish.ingest`: `topic`, `quality`, `motion`, `on_frame`,
        `should_stop`.
        """
        from .ingest.publish import ingest

        return ingest(self, source, camera, **options)

    def close(self) -> None:
        for name in ("log", "catalog"):
            if name in self.__dict__:
                self.__dict__.pop(name).close()

    def __enter__(self) -> Lake:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
