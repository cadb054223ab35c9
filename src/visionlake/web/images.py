"""Thumbnails and annotated images, made on the fly from the archive.

The archive path always comes from the frame's catalog row (the URL gives only a frame id, checked
against the frame-id alphabet and resolved through the catalog), so no URL can name a file. Decoded
images are never sent whole for a thumbnail: each is resized to the width asked for (at most the
image's own) and encoded as JPEG. Results are kept in an LRU cache bounded by bytes.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

import cv2
import numpy as np

from ..catalog.base import Catalog
from ..errors import ArchiveError, InputError, UnknownFrame
from ..frames import decode_image, encode_jpeg
from .queries import check_frame_text

MIN_WIDTH, MAX_WIDTH = 16, 1024
THUMB_QUALITY = 80
#: Bytes of JPEGs the cache keeps.
CACHE_BYTES = 64 * 2**20


class ByteLRU:
    """A thread-safe LRU of bytes values whose total size stays within `max_bytes`."""

    def __init__(self, max_bytes: int = CACHE_BYTES) -> None:
        self.max_bytes = max_bytes
        self.used = 0
        self._items: OrderedDict[tuple, bytes] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get(self, key: tuple) -> bytes | None:
        with self._lock:
            value = self._items.get(key)
            if value is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return value

    def put(self, key: tuple, value: bytes) -> None:
        if len(value) > self.max_bytes // 4:  # one huge value would flush everything else
            return
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self.used -= len(old)
            self._items[key] = value
            self.used += len(value)
            while self.used > self.max_bytes:
                _, dropped = self._items.popitem(last=False)
                self.used -= len(dropped)

    def __len__(self) -> int:
        return len(self._items)


def check_width(w: int) -> int:
    if not MIN_WIDTH <= w <= MAX_WIDTH:
        raise InputError(f"w must be from {MIN_WIDTH} to {MAX_WIDTH} pixels, got {w}")
    return w


class Images:
    """Reads frames through the catalog and the archive; caches thumbnails."""

    def __init__(self, lake, cache: ByteLRU | None = None) -> None:  # noqa: ANN001 - a Lake
        self.lake = lake
        self.cache = cache or ByteLRU()

    @property
    def catalog(self) -> Catalog:
        return self.lake.catalog

    def _original(self, frame_id: str) -> tuple[dict, bytes]:
        check_frame_text(frame_id)
        row = self.catalog.frame(frame_id)  # exact ids only: image URLs never take a prefix
        if row is None:
            raise UnknownFrame(f"no frame {frame_id!r} in the catalog")
        try:
            return row, self.lake.archive.get(row["uri"])
        except ArchiveError as e:
            if "is not in the archive" in str(e) or "is not inside the archive" in str(e):
                raise UnknownFrame(f"frame {frame_id!r} has no image in the archive") from None
            raise

    def thumbnail(self, frame_id: str, width: int) -> bytes:
        return self._small(("thumb", frame_id, width), frame_id, width, lambda image: image)

    def _small(self, key: tuple, frame_id: str, width: int, part: Any) -> bytes:
        """`part(frame)` as a cached JPEG at most `width` pixels wide."""
        check_width(width)
        cached = self.cache.get(key)
        if cached is not None:
            return cached
        _, data = self._original(frame_id)
        out = encode_jpeg(_narrow(part(decode_image(data)), width), THUMB_QUALITY)
        self.cache.put(key, out)
        return out

    def annotated(
        self,
        frame_id: str,
        boxes: bool = True,
        model: str | None = None,
        model_version: str | None = None,
        width: int | None = None,
    ) -> bytes:
        """The frame as JPEG with its detections drawn (one version per model: the one given, else
        each model's newest with a result for the frame). Not cached: a replay adds versions."""
        from ..render import draw_detections

        if width is not None:
            check_width(width)
        _, data = self._original(frame_id)
        image = decode_image(data)
        if boxes:
            image = draw_detections(image, self.catalog.detections_for(frame_id, model, model_version))
        return encode_jpeg(_narrow(image, width), 90)

    def crop(self, frame_id: str, box: tuple[float, float, float, float], width: int) -> bytes:
        """The part of a frame around `box` (x1, y1, x2, y2, with a quarter of its size as margin),
        `width` pixels wide at most: a track's best look, in the gallery of tracks."""

        def around(image: np.ndarray) -> np.ndarray:
            h, w = image.shape[:2]
            x1, y1, x2, y2 = box
            mx, my = (x2 - x1) / 4, (y2 - y1) / 4
            left, top = max(0, int(x1 - mx)), max(0, int(y1 - my))
            right, bottom = min(w, int(x2 + mx + 1)), min(h, int(y2 + my + 1))
            return image[top:bottom, left:right] if right > left and bottom > top else image

        return self._small(
            ("crop", frame_id, tuple(round(v, 1) for v in box), width), frame_id, width, around
        )


def _narrow(image: np.ndarray, width: int | None) -> np.ndarray:
    """`image` resized to `width` pixels wide when it is wider."""
    h, w = image.shape[:2]
    if width is None or width >= w:
        return image
    return cv2.resize(image, (width, max(1, round(h * width / w))), interpolation=cv2.INTER_AREA)
