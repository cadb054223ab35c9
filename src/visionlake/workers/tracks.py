"""A worker's trackers: one per camera, fed a batch's frames in order, saved with their results.

The catalog holds the truth. A camera's tracker state is written in the transaction of the results it
produced, so the stored state always covers exactly the stored results of that camera (for one model
version). That gives the restart rule:

- a frame captured after the state's last frame is new to the tracker: its boxes update it and get
  the track ids it returns;
- a re-delivered frame (its results stored already, so captured no later than the state's last frame)
  keeps the track ids stored with it, and the tracker is not fed it twice;
- a frame that arrives out of capture order and was never tracked gets no track ids.

Before each batch the saved states of its cameras are read (one query): a tracker in memory whose
last frame is not the saved one is replaced by the saved one. That covers a first sight of a camera,
a camera another worker moved on meanwhile (a partition that moved away and back, a re-delivery), and
a batch that failed before its results were written (the tracker in memory had moved past them).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime

from ..catalog import Catalog, TrackerState
from ..frames import FrameMeta
from ..tracking import CameraTracker, TrackerSettings
from ..types import Detections

log = logging.getLogger("visionlake.worker")


class BatchTracker:
    """The trackers of one worker (one model version) over the cameras it is handed."""

    def __init__(self, catalog: Catalog, model: str, version: str, settings: TrackerSettings) -> None:
        self.catalog = catalog
        self.model = model
        self.model_version = version
        self.settings = settings
        self._live: dict[str, CameraTracker] = {}

    def track(
        self, frames: Sequence[tuple[FrameMeta, Detections, bool]]
    ) -> tuple[list[Detections], list[TrackerState]]:
        """Track ids for a batch's (frame, detections, re-delivered?) in log order; returns the
        detections with their ids and the states to save with them."""
        saved = self.catalog.tracker_states(self.model, self.model_version, {m.camera for m, _, _ in frames})
        for camera in {m.camera for m, _, _ in frames}:
            live, state = self._live.get(camera), saved.get(camera)
            if live is None or state is None or live.last_frame != state.last_frame_id:
                self._live[camera] = self._load(camera, state)
        out: list[Detections] = []
        done: dict[str, Detections] = {}  # a frame twice in one batch gets the same ids twice
        moved: dict[str, CameraTracker] = {}
        for meta, dets, reused in frames:
            if meta.frame_id in done:
                out.append(done[meta.frame_id])
                continue
            tracker = self._live[meta.camera]
            at = _aware(meta.captured_at)
            if tracker.last_time is None or at > tracker.last_time:
                dets = dets.with_tracks(tracker.update(dets, meta.frame_id, at))
                moved[meta.camera] = tracker
            elif not reused:
                log.debug(
                    "frame %s of camera %s is older than the camera's last tracked frame: not tracked",
                    meta.frame_id,
                    meta.camera,
                )
            done[meta.frame_id] = dets
            out.append(dets)
        states = [
            TrackerState(cam, self.model, self.model_version, t.state, t.last_frame, t.last_time)
            for cam, t in moved.items()
            if t.last_time is not None
        ]
        return out, states

    def _load(self, camera: str, saved: TrackerState | None) -> CameraTracker:
        """The saved tracker of `camera`, or a new one (no state, other settings, unreadable state)."""
        fresh = CameraTracker(camera, self.model, self.model_version, self.settings)
        if saved is None:
            return fresh
        expect = {"camera": camera, "model": self.model, "model_version": self.model_version}
        try:
            tracker = CameraTracker.restore(saved.state, expect)
        except Exception as e:  # another visionlake or trackers version wrote it: start new tracks
            log.warning("tracker state of camera %s is unreadable (%s); its tracks start anew", camera, e)
            return _continuing(fresh, saved)
        if tracker.settings != self.settings:
            log.info(
                "camera %s: tracker settings changed (%s -> %s); its tracks start anew",
                camera,
                tracker.settings,
                self.settings,
            )
            return _continuing(fresh, saved)
        return tracker


def _continuing(fresh: CameraTracker, saved: TrackerState) -> CameraTracker:
    """A new tracker that still knows which frames the saved one had seen (they keep their ids)."""
    fresh.last_frame, fresh.last_time = saved.last_frame_id, saved.last_captured_at
    return fresh


def _aware(ts: datetime) -> datetime:
    return ts if ts.tzinfo is not None else ts.replace(tzinfo=UTC)
