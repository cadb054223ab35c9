"""Reports and model-version comparison over the catalog, for people who would rather not write SQL.

`reports` counts frames and detections (over time, by hour of day, top and latest frames), `compare`
sets two versions of a model side by side and matches their boxes, `plots` draws a report. The CLI
(`visionlake report`, `visionlake compare`) is a thin layer over these functions.
"""

from __future__ import annotations

from .compare import Comparison, compare_versions, iou_matrix, match_boxes
from .reports import Report, ReportFilter, UnknownModel, counts, hours, latest, top

__all__ = [
    "Comparison",
    "Report",
    "ReportFilter",
    "UnknownModel",
    "compare_versions",
    "counts",
    "hours",
    "iou_matrix",
    "latest",
    "match_boxes",
    "top",
]
