"""The dashboard on Kafka + PostgreSQL + S3: the same pages and API over a lake of servers.

The browser tests (test_web.py) run on the embedded defaults; here the JSON twins, a thumbnail, a
report chart, the frame page and /metrics are read through the application itself (in-process,
httpx's ASGI transport) over a lake whose log is a Kafka-protocol broker, whose catalog is
PostgreSQL and whose archive is an S3 server, all started by the test suite.
"""

from __future__ import annotations

from itertools import islice

import cv2
import numpy as np
import pytest
from media import sample

pytest.importorskip("fastapi", reason="the dashboard extra is not installed (scripts/setup.sh dashboard)")
httpx = pytest.importorskip("httpx")

from visionlake.detectors import load_detector  # noqa: E402
from visionlake.ingest.sources import VideoFileSource  # noqa: E402
from visionlake.lake import Lake  # noqa: E402
from visionlake.web.app import create_app  # noqa: E402
from visionlake.workers.worker import Worker  # noqa: E402


@pytest.fixture
def server_lake(tmp_path, kafka_server, postgres_url, s3_server, s3_bucket):
    root = tmp_path / "lake"
    root.mkdir()
    (root / "visionlake.toml").write_text(
        f'archive = "s3://{s3_bucket}/web"\n'
        "[archive_options]\n"
        f'endpoint_url = "{s3_server["endpoint_url"]}"\n'
        f'key = "{s3_server["key"]}"\n'
        f'secret = "{s3_server["secret"]}"\n'
    )
    lake = Lake(
        lake=root,
        log=f"kafka://{kafka_server.bootstrap}?topic_prefix=web-{tmp_path.name}",
        catalog=postgres_url,
    )
    try:
        src = VideoFileSource(sample("Megamind.avi"), fps=2, resize=(320, 240))
        assert lake.ingest(islice(src, 6), "lobby").frames == 6
        stats = Worker(lake, load_detector("haar-face"), until_idle=True, idle_timeout=2.0).run()
        assert stats.processed == 6
        yield lake
    finally:
        lake.close()


def test_the_dashboard_reads_a_lake_of_kafka_postgres_and_s3(server_lake):
    import asyncio

    app = create_app(server_lake)

    async def visit() -> dict:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://dashboard") as c:
            out = {}
            for path in ("/api/overview", "/api/frames?camera=lobby", "/api/reports/counts", "/metrics", "/"):
                r = await c.get(path)
                assert r.status_code == 200, (path, r.text[:500])
                out[path] = r
            first = out["/api/frames?camera=lobby"].json()["frames"][0]["frame_id"]
            for path in (f"/thumb/{first}.jpg?w=120", f"/frames/{first[:8]}", "/reports/hours.png"):
                r = await c.get(path)
                assert r.status_code == 200, (path, r.text[:500])
                out[path.split("?")[0].split("/")[1]] = r
            return out

    got = asyncio.run(visit())
    overview = got["/api/overview"].json()
    assert overview["log"].startswith("kafka://") and overview["catalog"].startswith("postgresql")
    assert [(c["camera"], c["frames"]) for c in overview["cameras"]] == [("lobby", 6)]
    assert [g["group"] for g in overview["groups"]] == ["haar-face.1"]
    assert len(got["/api/frames?camera=lobby"].json()["frames"]) == 6
    thumb = cv2.imdecode(np.frombuffer(got["thumb"].content, np.uint8), cv2.IMREAD_COLOR)
    assert thumb is not None and thumb.shape[1] == 120  # made from the S3 archive's image
    assert b"s3://" in got["frames"].content  # the frame page shows the archive path
    assert got["reports"].content[:8] == b"\x89PNG\r\n\x1a\n"
    assert 'visionlake_backend_up{backend="catalog"} 1.0' in got["/metrics"].text
    assert 'visionlake_group_lag{group="haar-face.1"' in got["/metrics"].text
