"""Prometheus metrics (`--metrics-port`): what a scrape of a running worker or ingest shows.

A real worker process runs over real frames of a sample video plus a poisoned record and is scraped
over HTTP while it runs; the counts must match what was sent, the histograms must count every frame,
the dead letter must carry its reason's kind. Ingest metrics are checked through the Python API and
the same HTTP server in-process (a video ingest ends before a scrape could see it).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path

import pytest
from media import jpeg, sample, video_frames

pytest.importorskip("prometheus_client")
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from visionlake.detectors import load_detector  # noqa: E402
from visionlake.errors import BackendUnavailable, InputError, MissingDependency  # noqa: E402
from visionlake.ingest.publish import ingest  # noqa: E402
from visionlake.ingest.sources import ImageFolderSource, VideoFileSource  # noqa: E402
from visionlake.lake import Lake  # noqa: E402
from visionlake.metrics import NO_WORKER_METRICS, Metrics, reason_kind  # noqa: E402
from visionlake.workers.worker import Worker  # noqa: E402

FRAMES = 10
POISON = b"this is not an image at all"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(port: int) -> list[tuple[str, dict[str, str], float]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return [(s.name, s.labels, s.value) for fam in text_string_to_metric_families(text) for s in fam.samples]


def total(samples, name: str, **labels: str) -> float:
    return sum(v for n, lab, v in samples if n == name and all(lab.get(k) == x for k, x in labels.items()))


def env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("VISIONLAKE_")}


def cli(lake: Path, *args: object) -> list[str]:
    return [sys.executable, "-m", "visionlake", "--lake", str(lake), *map(str, args)]


@pytest.fixture
def lake(tmp_path) -> Path:
    """10 frames of vtest.avi filmed from now on, and one record that is no image."""
    root = tmp_path / "lake"
    with Lake(lake=root) as lk:
        src = VideoFileSource(sample("vtest.avi"), resize=(320, 240), start_time=datetime.now(UTC))
        assert ingest(lk, islice(src, FRAMES), "hall").frames == FRAMES
        with lk.log.producer() as p:
            p.send("frames", POISON, key=b"hall")
    return root


def test_a_running_worker_is_scraped_with_counts_matching_the_frames_sent(lake):
    port = free_port()
    proc = subprocess.Popen(
        cli(lake, "worker", "-d", "haar-face", "--until-idle", "--idle-timeout", 60, "--metrics-port", port)
        + ["--format", "json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env(),
    )
    try:
        deadline, samples = time.monotonic() + 60, []
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                samples = scrape(port)
            except OSError:  # not listening yet
                samples = []
            done = total(samples, "visionlake_frames_processed_total") + total(
                samples, "visionlake_dead_letters_total"
            )
            if done >= FRAMES + 1:
                break
            time.sleep(0.2)
        assert proc.poll() is None, proc.communicate()[1]
    finally:
        proc.send_signal(signal.SIGTERM)  # finishes, commits and prints its summary
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    version = load_detector("haar-face").model_version
    mv = {"model": "haar-face", "model_version": version}

    assert total(samples, "visionlake_frames_processed_total", **mv) == FRAMES == summary["processed"]
    assert total(samples, "visionlake_processing_seconds_count", **mv) == FRAMES
    assert 0 < total(samples, "visionlake_processing_seconds_sum", **mv) < 60
    # capture time (now, when ingested) to catalog commit: seconds, not the video file's age
    assert total(samples, "visionlake_publish_to_catalog_seconds_count", **mv) == FRAMES
    assert 0 < total(samples, "visionlake_publish_to_catalog_seconds_sum", **mv) / FRAMES < 120
    assert total(samples, "visionlake_publish_to_catalog_seconds_bucket", le="+Inf", **mv) == FRAMES
    assert total(samples, "visionlake_dead_letters_total", reason="undecodable", **mv) == 1
    assert total(samples, "visionlake_dead_letters_total") == 1 == summary["dead_lettered"]
    assert total(samples, "visionlake_detections_total", **mv) == summary["detections"]
    assert all(lab["label"] == "face" for n, lab, _ in samples if n == "visionlake_detections_total")
    info = [lab for n, lab, v in samples if n == "visionlake_worker_info" and v == 1]
    assert info == [{"worker": summary["worker"], "group": f"haar-face.{version}", **mv}]
    # bounded labels: no frame id, offset or error text anywhere
    label_values = {v for _, lab, _ in samples for v in lab.values()}
    assert not any(len(v) > 40 or "@" in v for v in label_values), label_values


def test_worker_processes_serve_on_consecutive_ports(lake):
    port = free_port()
    proc = subprocess.Popen(
        cli(lake, "worker", "-d", "haar-face", "--processes", 2, "--until-idle", "--idle-timeout", 60)
        + ["--metrics-port", str(port), "--format", "json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env(),
    )
    try:
        deadline, seen = time.monotonic() + 60, {}
        while time.monotonic() < deadline and proc.poll() is None:
            for p in (port, port + 1):
                with contextlib.suppress(OSError):  # not listening yet
                    seen[p] = scrape(p)
            done = sum(
                total(s, "visionlake_frames_processed_total") + total(s, "visionlake_dead_letters_total")
                for s in seen.values()
            )
            if len(seen) == 2 and done >= FRAMES + 1:
                break
            time.sleep(0.2)
        assert proc.poll() is None, proc.communicate()[1]
    finally:
        proc.send_signal(signal.SIGTERM)  # forwarded to both children
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert sorted(seen) == [port, port + 1]
    # at least once: a frame handled by one child and, after the second joined and took its partition
    # before the commit, again by the other counts on both
    assert sum(total(s, "visionlake_frames_processed_total") for s in seen.values()) >= FRAMES
    names = {lab["worker"] for s in seen.values() for n, lab, _ in s if n == "visionlake_worker_info"}
    assert len(names) == 2  # one worker per port


def test_a_metrics_port_in_use_is_a_clear_error(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        commands = [
            ["worker", "-d", "haar-face", "--until-idle", "--metrics-port", port],
            ["ingest", "video", sample("vtest.avi"), "--camera", "c", "--metrics-port", port],
        ]
        for args in commands:
            proc = subprocess.run(
                cli(tmp_path / "lake", *args), capture_output=True, text=True, timeout=60, env=env()
            )
            assert proc.returncode == 2, (args, proc.stderr)
            message = " ".join(proc.stderr.split())
            assert f"--metrics-port {port}" in message and "in use" in message, message
    assert not (tmp_path / "lake").exists()  # failed before touching the lake


def test_ingest_counts_frames_bytes_and_errors_served_over_http(tmp_path):
    folder = tmp_path / "door"
    folder.mkdir()
    for i, image in enumerate(video_frames("vtest.avi", 3, (160, 120))):
        (folder / f"{i}.jpg").write_bytes(jpeg(image))
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not really a JPEG")
    metrics = Metrics()
    server = metrics.serve(0)  # the system picks the port
    try:
        with Lake(lake=tmp_path / "lake") as lk:
            stats = ingest(lk, ImageFolderSource(folder), "door", metrics=metrics.ingest("door"))
        samples = scrape(server.server_address[1])
    finally:
        server.shutdown()
    assert stats.frames == 3 and len(stats.errors) == 1
    assert total(samples, "visionlake_frames_ingested_total", camera="door") == 3
    assert total(samples, "visionlake_ingest_bytes_total", camera="door") == stats.bytes > 0
    assert total(samples, "visionlake_ingest_errors_total", camera="door") == 1
    assert not any(n.startswith("visionlake_frames_processed") for n, _, _ in samples)  # no worker here


def test_each_backend_outage_waited_out_is_counted_on_its_backend(lake):
    metrics = Metrics()
    with Lake(lake=lake) as lk:
        write, calls = lk.catalog.write_results, {"n": 0}

        def flaky(rows, trackers=()):
            calls["n"] += 1
            if calls["n"] <= 2:
                raise BackendUnavailable("catalog down (test)")
            return write(rows, trackers)

        lk.catalog.write_results = flaky  # type: ignore[method-assign]
        w = Worker(
            lk,
            load_detector("haar-face"),
            until_idle=True,
            idle_timeout=0.3,
            retry_initial=0.01,
            metrics=metrics,
        )
        stats = w.run()
    assert stats.processed == FRAMES and stats.retries == 2
    samples = [(s.name, s.labels, s.value) for fam in metrics.registry.collect() for s in fam.samples]
    assert total(samples, "visionlake_backend_errors_total", backend="catalog") == 2
    assert total(samples, "visionlake_backend_errors_total") == 2
    assert total(samples, "visionlake_frames_processed_total") == FRAMES  # counted once, after the retry
    assert Worker(lk, load_detector("haar-face")).metrics is NO_WORKER_METRICS  # off: the no-op


def test_dead_letter_reasons_become_a_few_fixed_words():
    cases = {
        "empty record: no image bytes": "empty",
        "oversized record: 2000000 bytes, the limit is 1048576": "oversized",
        "undecodable image: not JPEG or PNG (first bytes 0011)": "undecodable",
        "truncated JPEG: no end-of-image marker (the missing rows would decode as grey)": "undecodable",
        "image header claims absurd dimensions 99999x2 (limit 16384x16384, 100000000 pixels)": "absurd_dimensions",
        "header says 10x10 but the image is 20x20": "size_mismatch",
        "conflict: frame abc of camera 'x' is already stored with other content": "conflict",
        "detector haar-face failed: ValueError: boom": "detector_failed",
        "claim-check reference unreadable: gone": "claim_check",
        "header vl-seq='x' is not an integer": "bad_header",
        "something nobody wrote yet 12345": "other",
    }
    assert {r: reason_kind(r) for r in cases} == cases


def test_without_the_extra_metrics_name_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # import fails as if not installed
    with pytest.raises(MissingDependency) as exc:
        Metrics()
    assert "scripts/setup.sh metrics" in str(exc.value) and "pip install -e '.[metrics]'" in str(exc.value)
    assert exc.value.exit_code == 2


def test_serving_on_an_address_that_cannot_be_bound_is_input_error():
    with pytest.raises(InputError, match="--metrics-port 9"):
        Metrics().serve(9, host="192.0.2.1")  # TEST-NET-1: no interface has it


def test_the_cli_and_the_worker_do_not_load_prometheus_client():
    code = (
        "import sys, visionlake.cli, visionlake.workers.worker, visionlake.ingest.publish\n"
        "assert 'prometheus_client' not in sys.modules, 'prometheus_client imported'\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
