"""Errors of the face-identity parts (all exit code 2: something the user can fix)."""

from __future__ import annotations

from ..errors import InputError, MissingDependency

INSTALL_HINT = "pip install 'visionlake[faces]' (or scripts/setup.sh faces)"


class FacesUnavailable(MissingDependency):
    """dlib or the face-recognition model files are not installed; the message says how to install them."""

    def __init__(self, problem: str) -> None:
        # MissingDependency's own message is built from (what, extra, module); this one names the file
        # or module that is missing, then gives the same install command.
        Exception.__init__(self, f"face identity needs the optional extra 'faces': {problem}; {INSTALL_HINT}")
        self.extra = "faces"


class PhotoError(InputError):
    """An enrolment photo cannot be used: unreadable, corrupt, or not exactly one face in it."""

    def __init__(self, photo: str, reason: str, faces: int | None = None) -> None:
        super().__init__(f"photo {photo!r}: {reason}")
        self.photo = photo
        self.reason = reason
        self.faces = faces  # how many faces were found, when that is the problem


class EmptyGallery(InputError):
    """Identification was asked of a gallery with no enrolled identity."""


class UnknownIdentity(InputError):
    """A name that is not enrolled in the gallery."""
