"""The public Python API: every name in `visionlake.__all__` imports, and is what it says it is."""

from __future__ import annotations

import datetime as dt
import importlib
import pkgutil
import subprocess
import sys
import types

import pytest
from media import video_frames

import visionlake
from visionlake import Lake
from visionlake.ingest.sources import CapturedFrame


def _import_subpackages() -> None:
    """Import every subpackage: once imported, `visionlake.<name>` is the module, whatever
    `visionlake.__getattr__` would have returned for that name."""
    for info in pkgutil.iter_modules(visionlake.__path__, "visionlake."):
        if info.ispkg:
            importlib.import_module(info.name)


@pytest.mark.parametrize("name", visionlake.__all__)
def test_every_public_name_imports_and_is_not_a_module(name):
    _import_subpackages()  # a subpackage attribute must not shadow a public name
    namespace: dict = {}
    exec(f"from visionlake import {name}", namespace)
    obj = namespace[name]
    assert not isinstance(obj, types.ModuleType), f"visionlake.{name} is a module, not the public {name}"
    assert obj is getattr(visionlake, name)


def test_public_names_import_in_a_fresh_interpreter():
    """`from visionlake import ...` of all names at once, as the README does, in a clean process."""
    names = ", ".join(visionlake.__all__)
    code = (
        "import types\n"
        f"from visionlake import {names}\n"
        f"objs = [{names}]\n"
        "assert not any(isinstance(o, types.ModuleType) for o in objs), objs\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr


def test_lake_ingest_publishes_a_source_and_returns_its_stats(tmp_path):
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    frames = [
        CapturedFrame(image, i, start + dt.timedelta(seconds=i), f"vtest.avi#frame={i}")
        for i, image in enumerate(video_frames("vtest.avi", 3, (160, 120)))
    ]
    with Lake(lake=tmp_path / "lake") as lake:
        stats = lake.ingest(frames, camera="lobby", quality=80)
        assert (stats.camera, stats.frames, stats.errors) == ("lobby", 3, [])
        (topic,) = [t for t in lake.log.topics() if t.name == "frames"]
        assert topic.records == 3
