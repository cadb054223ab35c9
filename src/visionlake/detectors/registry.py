"""Detector discovery through the entry-point group ``visionlake.detectors``.

A plugin package declares ``[project.entry-points."visionlake.detectors"] my-name = "pkg.mod:MyDetector"``.
`load_detector` imports only the module of the detector asked for; `list_detectors` imports each plugin
to report its version and defaults, and reports a plugin that fails to import instead of failing.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Mapping
from dataclasses import dataclass, field

from ..errors import UnknownDetector, VisionlakeError
from .base import Detector

GROUP = "visionlake.detectors"


@dataclass(frozen=True)
class DetectorInfo:
    """What `list_detectors` knows about one installed plugin."""

    name: str
    version: str
    defaults: dict[str, object] = field(default_factory=dict)
    available: bool = True
    problem: str | None = None  # why it cannot run here, e.g. the install hint of a missing extra
    summary: str = ""  # first line of the class docstring
    target: str = ""  # the entry point, "module:Class"


def _entry_points() -> dict[str, importlib.metadata.EntryPoint]:
    found: dict[str, importlib.metadata.EntryPoint] = {}
    for ep in importlib.metadata.entry_points(group=GROUP):
        found.setdefault(ep.name, ep)  # the first distribution on sys.path wins, as for imports
    return found


def _load_class(ep: importlib.metadata.EntryPoint) -> type[Detector]:
    try:
        cls = ep.load()
    except Exception as exc:
        raise VisionlakeError(
            f"detector plugin {ep.name!r} ({ep.value}) failed to import: {type(exc).__name__}: {exc}"
        ) from exc
    if not (isinstance(cls, type) and issubclass(cls, Detector)):
        raise VisionlakeError(f"detector plugin {ep.name!r} ({ep.value}) is not a visionlake Detector class")
    if getattr(cls, "name", None) != ep.name:
        raise VisionlakeError(
            f"detector plugin {ep.name!r} ({ep.value}) declares name {getattr(cls, 'name', None)!r}; "
            "the entry point and the class must use the same name"
        )
    return cls


def get_detector_class(name: str) -> type[Detector]:
    """The class registered as `name`, importing only its module; UnknownDetector when not installed."""
    eps = _entry_points()
    ep = eps.get(name)
    if ep is None:
        installed = ", ".join(sorted(eps)) or "none"
        raise UnknownDetector(f"unknown detector {name!r}; installed: {installed}")
    return _load_class(ep)


def load_detector(name: str, params: Mapping[str, object] | None = None) -> Detector:
    """A ready detector: the plugin `name` built with `params` (strings are coerced to each type)."""
    cls = get_detector_class(name)
    return cls(**dict(params or {}))


def list_detectors() -> list[DetectorInfo]:
    """Every installed detector plugin, sorted by name, with whether it can run here and why not."""
    out: list[DetectorInfo] = []
    for name, ep in sorted(_entry_points().items()):
        try:
            cls = _load_class(ep)
        except VisionlakeError as exc:
            out.append(DetectorInfo(name, "", {}, False, str(exc), "", ep.value))
            continue
        try:
            problem = cls.unavailable_reason()
        except Exception as exc:  # a plugin's own check must not break the listing
            problem = f"availability check failed: {type(exc).__name__}: {exc}"
        doc = (cls.__doc__ or "").strip().splitlines()
        out.append(
            DetectorInfo(
                name=name,
                version=str(cls.version),
                defaults=dict(cls.defaults),
                available=problem is None,
                problem=problem,
                summary=doc[0] if doc else "",
                target=ep.value,
            )
        )
    return out
