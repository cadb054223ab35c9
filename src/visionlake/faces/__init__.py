"""Face identity: embeddings (dlib, from the optional `faces` extra), a gallery of enrolled people,
nearest-neighbour search, clustering of unknown faces, enrolment checks and the face-id detector.

Importing this package imports neither dlib nor SciPy; `FaceEmbedder()` loads dlib and its models.
"""

from .cluster import MAX_EXACT, cluster_faces, purity
from .detector import FaceIdDetector, FaceIdentities
from .embed import DIM, FaceEmbedder, unavailable_reason
from .enrol import default_face_detector, enrol_photos, read_photo, single_face
from .errors import EmptyGallery, FacesUnavailable, PhotoError, UnknownIdentity
from .match import THRESHOLD, UNKNOWN, EmbeddingIndex, Gallery, Match, pairwise, search

__all__ = [
    "DIM",
    "MAX_EXACT",
    "THRESHOLD",
    "UNKNOWN",
    "EmbeddingIndex",
    "EmptyGallery",
    "FaceEmbedder",
    "FaceIdDetector",
    "FaceIdentities",
    "FacesUnavailable",
    "Gallery",
    "Match",
    "PhotoError",
    "UnknownIdentity",
    "cluster_faces",
    "default_face_detector",
    "enrol_photos",
    "pairwise",
    "purity",
    "read_photo",
    "search",
    "single_face",
    "unavailable_reason",
]
