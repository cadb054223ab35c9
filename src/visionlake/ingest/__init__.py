"""Frame sources (video files, cameras and streams, image folders) and the motion gate."""

from __future__ import annotations

from .motion import MotionGate
from .sources import (
    CameraSource,
    CapturedFrame,
    ImageFolderSource,
    SkippedFile,
    VideoFileSource,
    parse_size,
)

__all__ = [
    "CameraSource",
    "CapturedFrame",
    "ImageFolderSource",
    "MotionGate",
    "SkippedFile",
    "VideoFileSource",
    "parse_size",
]
