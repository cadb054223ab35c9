"""Exception classes. Every error a user can cause names the input and what is wrong with it.

`exit_code` is what the CLI exits with, so scripts can tell bad input (2) from an
unreachable backend (3) and from anything else that failed (1).
"""

from __future__ import annotations


class VisionlakeError(Exception):
    """Base class of all visionlake errors."""

    exit_code = 1


class InputError(VisionlakeError):
    """The user gave something unusable: a missing file, a bad option value, bad SQL."""

    exit_code = 2


class ConfigError(InputError):
    """A setting (flag, environment variable or config file) is invalid."""


class BackendUnavailable(VisionlakeError):
    """A log, catalog, archive or stream could not be reached."""

    exit_code = 3


class MissingDependency(VisionlakeError):
    """An optional extra is not installed; the message carries the pip command."""

    exit_code = 2

    def __init__(self, what: str, extra: str, module: str | None = None) -> None:
        hint = f"pip install 'visionlake[{extra}]'"
        detail = f" (module {module!r} not importable)" if module else ""
        super().__init__(f"{what} needs the optional extra {extra!r}{detail}: {hint}")
        self.extra = extra


# --- frame log -------------------------------------------------------------------------------


class LogError(VisionlakeError):
    """Something went wrong in the frame log."""


class UnknownTopic(LogError, InputError):
    exit_code = 2


class RecordTooLarge(LogError, InputError):
    """A record exceeds the topic's maximum record size."""

    exit_code = 2


class CommitFailed(LogError):
    """Offsets could not be committed because the member lost its partitions in a rebalance."""


class LogWriteFailed(LogError, BackendUnavailable):
    """The log could not store a flushed batch (disk full, say); the producer keeps it for a retry.

    A BackendUnavailable, so that workers retry once the operator has made room.
    """

    exit_code = 3


class Unsupported(LogError, InputError):
    """The log backend (or the broker behind it) lacks a feature that was asked for."""

    exit_code = 2


class LogCorrupted(LogError):
    """Stored data the index still lists is missing or short.

    Not a BackendUnavailable: retrying cannot bring the bytes back, so the reader must stop and say so.
    """


# --- frames ----------------------------------------------------------------------------------


class FrameError(VisionlakeError):
    """A record or image cannot be used as a frame; `reason` goes to the dead-letter topic."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# --- catalog, archive, detectors, ingest -----------------------------------------------------


class CatalogError(VisionlakeError):
    """The SQL catalog refused an operation."""


class UnknownFrame(CatalogError, InputError):
    """No frame has this id (or id prefix)."""

    exit_code = 2


class AmbiguousFrameId(CatalogError, InputError):
    """A frame id prefix that more than one frame id starts with."""

    exit_code = 2


class ReadOnlyViolation(CatalogError, InputError):
    """A query tried to write, attach a database or change a setting."""

    exit_code = 2


class QueryError(CatalogError, InputError):
    """A query is invalid or ran past its time limit."""

    exit_code = 2


class ModelVersionConflict(CatalogError, InputError):
    """A model version is already recorded with different parameters."""

    exit_code = 2


class ArchiveError(VisionlakeError):
    """The image archive refused a key or could not be written."""


class ArchiveConflict(ArchiveError, InputError):
    """The archive already holds other content under a frame's key: a frame id names one image."""

    exit_code = 2


class ArchiveFull(ArchiveError, BackendUnavailable):
    """The archive's disk is full: writers wait for room (a BackendUnavailable) rather than fail."""

    exit_code = 3


class UnknownDetector(InputError):
    """No detector plugin of that name is installed."""


class SourceError(InputError):
    """A video, camera, stream or image folder cannot be opened or read."""


class SourceUnreachable(SourceError, BackendUnavailable):
    """A camera or stream URL did not answer within the retry budget."""

    exit_code = 3
