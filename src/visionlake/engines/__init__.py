"""Engines run the batch steps: `local` (worker processes on this machine) or `spark` (pyspark).

    with open_engine("spark", master="local[2]") as engine:
        report = engine.extract("images.parquet", "features", FeatureExtractor(algo="sift"))

Both implement `visionlake.engines.base.Engine` and read each other's outputs.
"""

from __future__ import annotations

from ..errors import InputError, MissingDependency
from .base import EncodeReport, Engine, ExtractReport, Progress, Rejected

__all__ = ["ENGINES", "EncodeReport", "Engine", "ExtractReport", "Progress", "Rejected", "open_engine"]

ENGINES = ("local", "spark")


def open_engine(name: str, *, master: str | None = None, processes: int | None = None) -> Engine:
    """The engine called `name`. `master`: Spark master URL (spark only; default local[*], or
    local[processes] when `processes` is given). `processes`: worker processes (default: one per CPU).

    InputError for an unknown name or an option the engine does not take; MissingDependency (with the
    pip command) for spark without pyspark installed.
    """
    if name == "local":
        if master is not None:
            raise InputError(f"--master {master!r} applies to the spark engine only, not to 'local'")
        from .local import LocalEngine

        return LocalEngine(processes=processes)
    if name == "spark":
        try:
            import pyspark  # noqa: F401
        except ImportError as exc:
            raise MissingDependency("the Spark engine", "spark", "pyspark") from exc
        from .spark import SparkEngine

        if master is None and processes is not None:
            if not isinstance(processes, int) or processes < 1:
                raise InputError(f"processes must be an integer >= 1, not {processes!r}")
            master = f"local[{processes}]"
        return SparkEngine(master=master)
    raise InputError(f"unknown engine {name!r}: choose one of {', '.join(ENGINES)}")
