"""A real pyspark session in local mode, shared by the whole test session (start-up costs ~10 s).

The engine under test reuses it (`SparkSession.builder.getOrCreate`), so tests pay the start-up once.
`PYSPARK_PYTHON` is set to this interpreter so executors import the same environment.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator

import pytest

SPARK_MASTER = "local[2]"


@pytest.fixture(scope="session")
def spark() -> Iterator[object]:
    os.environ["PYSPARK_PYTHON"] = sys.executable
    os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable
    from pyspark.sql import SparkSession

    session = (
        SparkSession.builder.master(SPARK_MASTER)
        .appName("visionlake-tests")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "4")
        .config("spark.driver.memory", "2g")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()
