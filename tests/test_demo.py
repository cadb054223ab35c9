"""`visionlake demo` end to end: on the embedded defaults and on Kafka + PostgreSQL + S3."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from visionlake.demo import CAMERAS, find_samples


def run_demo(lake, *global_args: str) -> dict:
    try:
        find_samples()
    except Exception as e:  # pragma: no cover - only without opencv-doc
        pytest.skip(str(e))
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "visionlake",
            "--lake",
            str(lake),
            *global_args,
            "demo",
            "--fps",
            "0.5",
            "--resize",
            "384x288",
            "--format",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout)


def check_summary(summary: dict) -> None:
    ingested = {i["camera"]: i["frames"] for i in summary["ingested"]}
    assert set(ingested) == set(CAMERAS) and all(n > 0 for n in ingested.values())
    total = sum(ingested.values())
    workers = {w["model"]: w for w in summary["workers"]}
    assert set(workers) == {"haar-face", "hog-person"}
    for w in workers.values():
        assert w["processed"] == total and w["dead_lettered"] == 0
        assert w["per_camera"] == ingested
    (per_model, faces) = summary["queries"]
    rows = {(r[0], r[1]): r[3] for r in per_model["rows"]}  # camera, model, version, frames
    assert rows == {(c, m): ingested[c] for c in CAMERAS for m in workers}
    assert faces["rows"], "the Megamind camera shows faces"


def test_demo_on_the_embedded_defaults(tmp_path):
    summary = run_demo(tmp_path / "lake")
    check_summary(summary)
    # the demo films "now": the README's `search --since 2h` finds its frames, and the top face's
    # id prefix printed after "Next:" opens that frame
    found = subprocess.run(
        [sys.executable, "-m", "visionlake", "--lake", str(tmp_path / "lake"), "search", "--label", "face"]
        + ["--since", "2h", "--format", "json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert found.returncode == 0 and json.loads(found.stdout), found.stderr
    top = summary["queries"][1]["rows"][0][0]
    shown = subprocess.run(
        [sys.executable, "-m", "visionlake", "--lake", str(tmp_path / "lake"), "show", top[:12]]
        + ["-o", str(tmp_path / "face.jpg")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0 and top in shown.stderr, shown.stderr


def test_demo_on_kafka_postgres_and_s3(tmp_path, kafka_server, postgres_url, s3_server, s3_bucket):
    lake = tmp_path / "lake"
    lake.mkdir()
    (lake / "visionlake.toml").write_text(
        f'archive = "s3://{s3_bucket}/demo"\n'
        "[archive_options]\n"
        f'endpoint_url = "{s3_server["endpoint_url"]}"\n'
        f'key = "{s3_server["key"]}"\n'
        f'secret = "{s3_server["secret"]}"\n'
    )
    summary = run_demo(
        lake,
        "--log",
        f"kafka://{kafka_server.bootstrap}?topic_prefix=demo-{tmp_path.name}",
        "--catalog",
        postgres_url,
    )
    check_summary(summary)
    uris = [r[4] for r in summary["queries"][1]["rows"]]  # frame_id, camera, captured_at, score, uri
    assert all(u.startswith(f"s3://{s3_bucket}/demo/megamind/") for u in uris)
    # the dashboard over the same lake of servers: its API, a thumbnail from S3, a chart, /metrics
    from visionlake.lake import Lake

    with Lake(
        lake=lake,
        log=f"kafka://{kafka_server.bootstrap}?topic_prefix=demo-{tmp_path.name}",
        catalog=postgres_url,
    ) as lk:
        check_dashboard(lk, summary)


def check_dashboard(lake, summary: dict) -> None:
    """The dashboard's pages and API read this lake (whatever its backends) through the application."""
    import asyncio

    pytest.importorskip("fastapi", reason="the dashboard extra is not installed")
    httpx = pytest.importorskip("httpx")
    import cv2
    import numpy as np

    from visionlake.web.app import create_app

    top = summary["queries"][1]["rows"][0][0]

    async def visit() -> dict:
        transport = httpx.ASGITransport(app=create_app(lake))
        async with httpx.AsyncClient(transport=transport, base_url="http://dashboard") as c:
            paths = ["/api/overview", "/api/frames?camera=megamind", "/metrics", "/", f"/frames/{top[:8]}"]
            paths += [f"/thumb/{top}.jpg?w=120", "/reports/hours.png"]
            out = {}
            for path in paths:
                r = await c.get(path)
                assert r.status_code == 200, (path, r.text[:500])
                out[path] = r
            return out

    got = asyncio.run(visit())
    overview = got["/api/overview"].json()
    ingested = {i["camera"]: i["frames"] for i in summary["ingested"]}
    assert {c["camera"]: c["frames"] for c in overview["cameras"]} == ingested
    assert {g["group"] for g in overview["groups"]} == {"haar-face.1", "hog-person.2"}
    assert got["/api/frames?camera=megamind"].json()["frames"]
    thumb = cv2.imdecode(np.frombuffer(got[f"/thumb/{top}.jpg?w=120"].content, np.uint8), cv2.IMREAD_COLOR)
    assert thumb is not None and thumb.shape[1] == 120  # made from the archive's image
    assert top.encode() in got[f"/frames/{top[:8]}"].content
    assert got["/reports/hours.png"].content[:8] == b"\x89PNG\r\n\x1a\n"
    metrics = got["/metrics"].text
    assert 'visionlake_backend_up{backend="catalog"} 1.0' in metrics and "visionlake_group_lag{" in metrics
