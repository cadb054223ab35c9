"""visionlake: a data platform for computer vision.

Frames flow from cameras, videos and image folders onto a partitioned frame log; detector workers in
consumer groups process them; images go to an archive and metadata, model versions and detections to
a SQL catalog. `Lake` is the one entry point the CLI and other tools use.

The names below import lazily, so `import visionlake` stays cheap for plugins and the CLI. Ingesting
is `Lake.ingest` (the function is `visionlake.ingest.publish.ingest`): a name `ingest` here would be
shadowed by the `visionlake.ingest` subpackage as soon as anything imports it.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "Lake": "visionlake.lake",
    "Detections": "visionlake.types",
    "Record": "visionlake.types",
    "Detector": "visionlake.detectors.base",
    "load_detector": "visionlake.detectors.registry",
    "list_detectors": "visionlake.detectors.registry",
    "Worker": "visionlake.workers.worker",
    "VideoFileSource": "visionlake.ingest.sources",
    "CameraSource": "visionlake.ingest.sources",
    "ImageFolderSource": "visionlake.ingest.sources",
    "VisionlakeError": "visionlake.errors",
}
__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'visionlake' has no attribute {name!r}")
