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
