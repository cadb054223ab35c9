"""Detector plugins: the `Detector` interface and discovery by entry points (``visionlake.detectors``).

Bundled: ``haar-face`` (OpenCV Haar cascade), ``hog-person`` (OpenCV HOG people detector) and ``yuface``
(libfacedetection CNN, optional extra). Importing this package imports no plugin module.
"""

from .base import Detector, parse_params
from .registry import DetectorInfo, get_detector_class, list_detectors, load_detector

__all__ = [
    "Detector",
    "DetectorInfo",
    "get_detector_class",
    "list_detectors",
    "load_detector",
    "parse_params",
]
