"""Tracks: a multi-object tracker per camera over a detector's boxes, in frame order.

The tracker is Roboflow's `trackers` package (ByteTrack or SORT, its own implementations), not ours.
`CameraTracker` adapts it to visionlake:

- one library tracker per label, since the library matches boxes whatever their class;
- a track id for every input box, in input order (-1 while a track is unconfirmed: the library
  gives a box an id from its second matched frame on);
- track ids that are unique across cameras, models and restarts: a 63-bit hash of the camera, the
  model version, the frame the tracker started on, the label and the library's own counter, so a
  tracker rebuilt from nothing never reuses the ids of an earlier one;
- its whole state as bytes (`state` / `CameraTracker.restore`), so a worker can keep it with its
  results and a restart continues the same tracks with the same ids.

`trackers` depends on `opencv-python` (OpenCV 5), which would replace the `opencv-python-headless`
4.x that visionlake needs (OpenCV 5 has no Haar cascades or HOG people detector); it is installed
without its dependencies (`scripts/setup.sh track`, or the pip lines in `INSTALL_HINT`).
"""

from __future__ import annotations

import hashlib
import pickle
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

from .errors import InputError, VisionlakeError
from .types import Detections

__all__ = ["KINDS", "CameraTracker", "TrackerSettings", "TrackingUnavailable", "require_trackers", "track_id"]

#: Tracker kinds: visionlake name -> the `trackers` class.
KINDS = {"bytetrack": "ByteTrackTracker", "sort": "SORTTracker"}

INSTALL_HINT = (
    "pip install --no-deps 'trackers==2.6.1' 'supervision==0.31.2' 'pydeprecate==0.13.0' && "
    "pip install requests tqdm defusedxml   (or: scripts/setup.sh track)"
)

#: Bytes of a stored tracker state are only read back by the same `trackers` version.
STATE_FORMAT = "visionlake-tracker-1"


class TrackingUnavailable(VisionlakeError):
    """The `trackers` package is not installed; the message says how to install it."""

    exit_code = 2

    def __init__(self, module: str) -> None:
        super().__init__(f"tracking needs the package {module!r}, which is not installed: {INSTALL_HINT}")


def require_trackers() -> None:
    """Raise TrackingUnavailable, with the install hint, unless the tracker packages import."""
    try:
        import supervision  # noqa: F401
        import trackers  # noqa: F401
    except ImportError as e:
        raise TrackingUnavailable(e.name or "trackers") from None


@dataclass(frozen=True)
class TrackerSettings:
    """What the library tracker is built with. Times are seconds of capture time, so the settings
    hold whatever rate a camera is sampled at.

    - `lost_seconds`: how long a track survives without a matching box (people walking behind a
      sign, a missed detection) before a box there starts a new track;
    - `min_score`: boxes below it neither start nor confirm a track (ByteTrack still uses them to
      continue one); on the detector's own score scale;
    - `min_iou`: the least overlap between a track's predicted box and a box to match them;
    - `min_frames`: frames a new track must be matched in before it gets an id.
    """

    kind: str = "bytetrack"
    lost_seconds: float = 2.0
    min_score: float = 0.0
    min_iou: float = 0.1
    min_frames: int = 2

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise InputError(f"tracker {self.kind!r} is not one of {', '.join(KINDS)}")
        if not 0 < float(self.lost_seconds) < 1e6:
            raise InputError(f"tracker setting lost_seconds must be positive, got {self.lost_seconds!r}")
        if not 0 < self.min_iou <= 1:
            raise InputError(f"tracker setting min_iou must be in (0, 1], got {self.min_iou!r}")
        if not isinstance(self.min_frames, int) or not 1 <= self.min_frames <= 100:
            raise InputError(f"tracker setting min_frames must be 1-100, got {self.min_frames!r}")

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def build(self) -> Any:
        """A new library tracker. The library counts `lost_track_buffer` in frames at `frame_rate`
        and ages tracks by the timestamps it is given: 30 frames a second makes it seconds * 30."""
        try:
            import trackers
        except ImportError as e:
            raise TrackingUnavailable(e.name or "trackers") from None
        cls = getattr(trackers, KINDS[self.kind])
        params: dict[str, Any] = dict(
            lost_track_buffer=max(1, round(self.lost_seconds * 30)),
            frame_rate=30.0,
            track_activation_threshold=self.min_score,
            minimum_consecutive_frames=self.min_frames,
            minimum_iou_threshold=self.min_iou,
        )
        if self.kind == "bytetrack":
            params["high_conf_det_threshold"] = self.min_score
        return cls(**params)


def track_id(camera: str, model: str, version: str, origin: str, label: str, local: int) -> int:
    """A positive 63-bit id, the same for the same track of the same tracker instance."""
    text = f"{camera}\n{model}\n{version}\n{origin}\n{label}\n{local}".encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "big") >> 1


@dataclass
class CameraTracker:
    """The tracks of one camera for one model version. Feed it every frame of the camera in capture
    order, also frames with no boxes (they age the tracks)."""

    camera: str
    model: str
    model_version: str
    settings: TrackerSettings = field(default_factory=TrackerSettings)
    origin: str = ""  # the frame id this tracker started on: part of every track id
    last_frame: str = ""  # the frame id of the last update: where a restored state continues from
    last_time: datetime | None = None
    _by_label: dict[str, Any] = field(default_factory=dict)

    def update(self, detections: Detections, frame_id: str, captured_at: datetime) -> np.ndarray:
        """Track ids of `detections` (int64, aligned with its boxes; -1 for a box with no confirmed
        track yet)."""
        import supervision as sv

        if not self.origin:
            self.origin = frame_id
        ids = np.full(len(detections), -1, dtype=np.int64)
        t = captured_at.timestamp()
        labels = detections.label
        for label in sorted(set(labels.tolist()) | set(self._by_label)):  # absent labels age too
            rows = np.flatnonzero(labels == label)
            if label not in self._by_label:
                self._by_label[label] = self.settings.build()
            found = self._by_label[label].update(
                sv.Detections(
                    xyxy=detections.xyxy[rows].reshape(-1, 4),
                    confidence=detections.score[rows],
                    class_id=np.zeros(len(rows), dtype=int),
                    data={"row": rows},
                ),
                timestamp=t,
            )
            for row, local in zip(found.data.get("row", []), found.tracker_id, strict=True):
                if local >= 0:
                    ids[row] = track_id(
                        self.camera, self.model, self.model_version, self.origin, label, int(local)
                    )
        self.last_frame, self.last_time = frame_id, captured_at
        return ids

    @property
    def state(self) -> bytes:
        """Everything needed to continue: settings, ids and the library trackers (pickled)."""
        return pickle.dumps((STATE_FORMAT, self), protocol=pickle.HIGHEST_PROTOCOL)

    @classmethod
    def restore(cls, state: bytes, expect: Mapping[str, str] | None = None) -> CameraTracker:
        """A tracker from `state`. Only states this process's catalog wrote are restored: pickles
        run code when loaded, so never pass bytes from elsewhere."""
        fmt, tracker = pickle.loads(state)
        if fmt != STATE_FORMAT or not isinstance(tracker, cls):
            raise InputError(f"not a tracker state of this visionlake ({fmt!r})")
        for key, value in (expect or {}).items():
            if getattr(tracker, key) != value:
                raise InputError(f"tracker state is for {key} {getattr(tracker, key)!r}, not {value!r}")
        return tracker
