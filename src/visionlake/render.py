"""Drawing detections onto a frame (`visionlake show`)."""

from __future__ import annotations

import zlib

import cv2
import numpy as np


def _color(name: str) -> tuple[int, int, int]:
    h = zlib.crc32(name.encode())
    return (64 + h % 192, 64 + (h >> 8) % 192, 64 + (h >> 16) % 192)


def draw_detections(image: np.ndarray, detections: list[dict]) -> np.ndarray:
    """A copy of `image` with each detection's box and "label score (model)" drawn on it; a tracked
    box also shows the last four digits of its track id ("person #0421 0.93 ...")."""
    out = image.copy()
    thick = max(1, round(min(out.shape[:2]) / 300))
    for d in detections:
        track = d.get("track_id")
        # a tracked box takes its track's colour, so one object keeps one colour from frame to frame
        color = _color(f"{d['model']}:{d['label']}" if track is None else f"track:{track}")
        p1, p2 = (int(d["x1"]), int(d["y1"])), (int(d["x2"]), int(d["y2"]))
        cv2.rectangle(out, p1, p2, color, thick)
        mark = "" if track is None else f" #{int(track) % 10000:04d}"
        text = f"{d['label']}{mark} {d['score']:.2f} ({d['model']} {d['model_version']})"
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.4, 1)
        y = max(p1[1], th + base)
        cv2.rectangle(out, (p1[0], y - th - base), (p1[0] + tw, y), color, -1)
        cv2.putText(out, text, (p1[0], y - base), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    return out
