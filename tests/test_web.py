"""The web dashboard (`visionlake serve`), as people and scripts meet it: a real server (uvicorn in a
thread) over a real lake (Megamind frames, haar-face version 1 by a worker, version 2 by a replay with
min_neighbors=2, so the versions disagree), driven by a real browser (Playwright with Debian's
chromium) and by plain HTTP.

Every page must load without console errors and show its content; a screenshot of each is kept
under the test's tmp dir and in /tmp/vl-web-shots/ to look at.
"""

from __future__ import annotations

import http.client
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from itertools import islice
from pathlib import Path

import cv2
import numpy as np
import pytest
from media import sample

pytest.importorskip("fastapi", reason="the dashboard extra is not installed (scripts/setup.sh dashboard)")
httpx = pytest.importorskip("httpx")
uvicorn = pytest.importorskip("uvicorn")

from visionlake.analytics.compare import compare_versions  # noqa: E402
from visionlake.detectors import load_detector  # noqa: E402
from visionlake.ingest.publish import ingest  # noqa: E402
from visionlake.ingest.sources import VideoFileSource  # noqa: E402
from visionlake.lake import Lake  # noqa: E402
from visionlake.replay import prepare_replay  # noqa: E402
from visionlake.tracking import TrackerSettings  # noqa: E402
from visionlake.web.app import create_app  # noqa: E402
from visionlake.workers.worker import Worker  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
SHOTS = Path("/tmp/vl-web-shots")
TOKEN = "s3cret-dashboard-token"
N_MEGAMIND, N_HALL = 20, 6


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lake_root(tmp_path_factory) -> Path:
    """Two cameras: 20 Megamind frames an hour ago, 6 more as camera 'hall' three hours ago; haar-face
    version 1 by a tracking worker, version 2 (min_neighbors=2: more faces, true and false) by a replay."""
    root = tmp_path_factory.mktemp("web") / "lake"
    with Lake(lake=root) as lk:
        start = datetime.now(UTC) - timedelta(hours=1)
        video = sample("Megamind.avi")
        src = VideoFileSource(video, fps=2, resize=(320, 240), start_time=start)
        assert ingest(lk, islice(src, N_MEGAMIND), "megamind").frames == N_MEGAMIND
        src = VideoFileSource(video, fps=1, resize=(320, 240), start_time=start - timedelta(hours=2))
        assert ingest(lk, islice(src, N_HALL), "hall").frames == N_HALL
        v1 = Worker(
            lk, load_detector("haar-face"), until_idle=True, idle_timeout=0.3, tracking=TrackerSettings()
        ).run()
        assert v1.processed == N_MEGAMIND + N_HALL and v1.detections > 0
        v2 = prepare_replay(lk, load_detector("haar-face", {"min_neighbors": "2"}), version="2").run()
        assert v2.processed == N_MEGAMIND + N_HALL and v2.detections > v1.detections
    return root


class Server:
    """uvicorn serving `create_app(lake, token)` in a thread on a free port."""

    def __init__(self, root: Path, token: str | None = None) -> None:
        self.lake = Lake(lake=root)
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        config = uvicorn.Config(
            create_app(self.lake, token=token),
            host="127.0.0.1",
            port=port,
            log_level="warning",
            timeout_graceful_shutdown=1,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "server did not start"
            time.sleep(0.05)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.lake.close()


@pytest.fixture(scope="module")
def server(lake_root) -> Iterator[Server]:
    s = Server(lake_root)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def locked(lake_root) -> Iterator[Server]:
    s = Server(lake_root, token=TOKEN)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def browser():
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is missing: apt-get install chromium (scripts/setup.sh test)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    SHOTS.mkdir(parents=True, exist_ok=True)
    return tmp_path_factory.mktemp("shots")


class Tab:
    """A browser page that records console errors and saves screenshots in both places."""

    def __init__(self, browser, shots: Path) -> None:
        self.context = browser.new_context(viewport={"width": 1280, "height": 900})
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.shots = shots

    def open(self, url: str, status: int = 200):
        resp = self.page.goto(url, wait_until="load")
        assert resp is not None and resp.status == status, f"{url}: {resp and resp.status}"
        if status != 200:  # the browser logs the expected error status of the page itself
            self.expected(status)
        return self.page

    def expected(self, status: int) -> None:
        self.errors[:] = [e for e in self.errors if f"status of {status}" not in e]

    def shot(self, name: str) -> None:
        path = self.shots / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        shutil.copy(path, SHOTS / path.name)

    def wait_until(self, script: str, arg: object = None, timeout: float = 15.0) -> None:
        """Poll `script` from here: the pages' CSP forbids the eval that page.wait_for_function uses."""
        deadline = time.monotonic() + timeout
        while not self.page.evaluate(script, arg):
            assert time.monotonic() < deadline, f"timed out waiting for {script}"
            time.sleep(0.1)

    def images_loaded(self) -> None:
        """Every <img> on the page decoded (none broken); lazy ones are made to load first."""
        self.page.evaluate("Array.from(document.images).forEach(i => { i.loading = 'eager'; })")
        self.wait_until("() => Array.from(document.images).every(i => i.complete)")
        broken = self.page.evaluate(
            "Array.from(document.images).filter(i => !i.naturalWidth).map(i => i.src)"
        )
        assert broken == []

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def tab(browser, shots) -> Iterator[Tab]:
    t = Tab(browser, shots)
    yield t
    t.close()
    assert t.errors == [], f"console errors: {t.errors}"


def frame_ids(lake_root: Path, camera: str | None = None) -> list[str]:
    with Lake(lake=lake_root) as lk:
        sql = "SELECT frame_id FROM frames" + (f" WHERE camera = '{camera}'" if camera else "")
        return [r[0] for r in lk.catalog.query(sql + " ORDER BY captured_at DESC, frame_id DESC").rows]


# --- pages -------------------------------------------------------------------------------------------


def test_overview_shows_cameras_models_groups_and_dead_letters(server, tab):
    page = tab.open(server.url + "/")
    cams = page.inner_text("#cameras")
    assert "megamind" in cams and "hall" in cams and str(N_MEGAMIND) in cams
    models = page.inner_text("#models")
    assert "haar-face" in models and "2" in models
    groups = page.inner_text("#groups")
    assert "haar-face.1" in groups and "replay.haar-face.2" in groups
    assert "frames.dlq" in page.inner_text("#dead-letters")
    tab.shot("overview")
    doc = httpx.get(server.url + "/api/overview").json()
    assert {c["camera"]: c["frames"] for c in doc["cameras"]} == {"megamind": N_MEGAMIND, "hall": N_HALL}
    group = next(g for g in doc["groups"] if g["group"] == "haar-face.1")
    assert group["partitions"] and all(p["lag"] == 0 for p in group["partitions"])
    assert doc["dead_letters"]["records"] == 0
    # the lake was just made: its results were all stored in the last 5 minutes
    rates = {(m["model"], m["model_version"]): m for m in doc["models"]}
    assert (
        rates[("haar-face", "1")]["fps_recent"] > 0 and rates[("haar-face", "1")]["ms_per_frame_recent"] > 0
    )
    assert all(c["fps_recent"] >= 0 for c in doc["cameras"])


def test_gallery_filters_by_camera_and_min_count_and_pages_by_keyset(server, tab, lake_root):
    page = tab.open(server.url + "/frames")
    tab.images_loaded()
    shown = page.eval_on_selector_all("#gallery a.thumb", "els => els.map(e => e.dataset.frameId)")
    assert shown == frame_ids(lake_root)  # all 26, newest first
    tab.shot("gallery")

    page.select_option("select[name=camera]", "hall")
    with page.expect_navigation():
        page.click("form.filters button[type=submit]")
    cams = page.eval_on_selector_all("#gallery a.thumb", "els => els.map(e => e.dataset.camera)")
    assert cams == ["hall"] * N_HALL
    tab.images_loaded()
    tab.shot("gallery-hall")

    # min count: frames whose newest version (2) found at least two faces
    with Lake(lake=lake_root) as lk:
        want = {
            r[0]
            for r in lk.catalog.query(
                "SELECT frame_id FROM results WHERE model_version = '2' AND n_detections >= 2"
            ).rows
        }
    assert 0 < len(want) < N_MEGAMIND + N_HALL
    page = tab.open(server.url + "/frames?min_count=2&model=haar-face")
    got = page.eval_on_selector_all("#gallery a.thumb", "els => els.map(e => e.dataset.frameId)")
    assert set(got) == want
    v1 = httpx.get(server.url + "/api/frames", params={"min_count": 2, "model_version": "1"}).json()
    assert len(v1["frames"]) < len(want)  # version 1 finds fewer faces

    # min score: frames with a box of the newest version scoring at least the median score
    with Lake(lake=lake_root) as lk:
        scores = sorted(r[0] for r in lk.catalog.query("SELECT score FROM detections").rows)
        cut = scores[len(scores) // 2]
        strong = {
            r[0]
            for r in lk.catalog.query(
                f"SELECT DISTINCT frame_id FROM detections WHERE model_version = '2' AND score >= {cut}"
            ).rows
        }
    assert 0 < len(strong) < len(frame_ids(lake_root))
    page = tab.open(server.url + f"/frames?min_score={cut}")
    got = page.eval_on_selector_all("#gallery a.thumb", "els => els.map(e => e.dataset.frameId)")
    assert set(got) == strong
    assert float(page.input_value("input[name=min_score]")) == cut  # the form keeps the filter
    bad = httpx.get(server.url + "/api/frames", params={"min_score": "high"})
    assert bad.status_code == 400 and "min_score must be a number" in bad.json()["error"]

    # keyset pages of 5 cover every frame once, in order
    seen, before = [], None
    while True:
        doc = httpx.get(server.url + "/api/frames", params={"limit": 5, "before": before}).json()
        seen += [f["frame_id"] for f in doc["frames"]]
        before = doc["next"]
        if before is None:
            break
    assert seen == frame_ids(lake_root)
    bad = httpx.get(server.url + "/api/frames", params={"since": "yesterday-ish"})
    assert bad.status_code == 400 and "since" in bad.json()["error"]


def test_thumbnail_is_small_and_has_the_requested_width(server, lake_root):
    fid = frame_ids(lake_root)[0]
    with Lake(lake=lake_root) as lk:
        original = lk.archive.get(lk.catalog.frame(fid)["uri"])
    r = httpx.get(f"{server.url}/thumb/{fid}.jpg", params={"w": 120})
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    assert "max-age" in r.headers["cache-control"]
    img = cv2.imdecode(np.frombuffer(r.content, np.uint8), cv2.IMREAD_COLOR)
    assert img.shape[:2] == (90, 120) and len(r.content) < len(original)
    assert httpx.get(f"{server.url}/thumb/{fid}.jpg", params={"w": 120}).content == r.content  # cached
    assert httpx.get(f"{server.url}/thumb/{fid}.jpg", params={"w": 5000}).status_code == 400
    boxed = httpx.get(f"{server.url}/image/{fid}.jpg", params={"boxes": 1, "model_version": "2"})
    img = cv2.imdecode(np.frombuffer(boxed.content, np.uint8), cv2.IMREAD_COLOR)
    assert boxed.status_code == 200 and img.shape[:2] == (240, 320)


def test_frame_page_takes_a_prefix_and_lists_detections_per_version(server, tab, lake_root):
    with Lake(lake=lake_root) as lk:
        fid = lk.catalog.query(
            "SELECT frame_id FROM results WHERE model_version = '2' ORDER BY n_detections DESC LIMIT 1"
        ).rows[0][0]
        uri = lk.catalog.frame(fid)["uri"]
    page = tab.open(f"{server.url}/frames/{fid[:8]}")
    assert page.inner_text("#frame-id") == fid
    meta = page.inner_text("#frame-meta")
    assert uri in meta and ("megamind" in meta or "hall" in meta)
    versions = page.eval_on_selector_all("section.version", "els => els.map(e => e.dataset.version)")
    assert sorted(versions) == ["1", "2"]
    assert "face" in page.inner_text("section.version[data-version='2'] table")
    tab.images_loaded()
    assert page.evaluate("document.getElementById('frame-image').naturalWidth") == 320
    tab.shot("frame")
    tab.open(f"{server.url}/frames/ffffffffffff", status=404)
    assert "no frame" in page.inner_text("#error-message")
    assert httpx.get(f"{server.url}/api/frames/{fid[:8]}").json()["frame_id"] == fid


def test_reports_page_charts_and_csv(server, tab):
    page = tab.open(server.url + "/reports?bucket=minute&by=camera&limit=5")
    tab.images_loaded()
    widths = page.eval_on_selector_all("img.chart", "els => els.map(e => e.naturalWidth)")
    assert widths == [1000] * 5  # counts, visitors, hours, top, latest
    assert page.locator("#report-top a.thumb").count() == 5
    assert page.locator("#report-latest a.thumb").count() == 5
    # the longest stays: each a crop of the track's best box, linking to its frame
    crops = page.eval_on_selector_all("#report-tracks a.thumb img", "els => els.map(e => e.naturalWidth)")
    assert crops and all(0 < w <= 160 for w in crops)
    tab.shot("reports")
    tracks = httpx.get(server.url + "/api/reports/tracks").json()
    tid, fid = tracks["rows"][0][0], tracks["rows"][0][9]
    crop = httpx.get(f"{server.url}/track/{tid}.jpg", params={"w": 64})
    img = cv2.imdecode(np.frombuffer(crop.content, np.uint8), cv2.IMREAD_COLOR)
    assert crop.status_code == 200 and img.shape[1] <= 64
    assert httpx.get(f"{server.url}/track/12345.jpg").status_code == 404
    assert httpx.get(f"{server.url}/track/../../etc.jpg").status_code == 404
    frame = tab.open(f"{server.url}/frames/{fid}")
    assert str(tid) in frame.inner_text("section.version[data-version='1'] table")
    visitors = httpx.get(server.url + "/reports/visitors.csv", params={"bucket": "hour"})
    assert visitors.text.splitlines()[0] == "hour,camera,label,visitors,entries,mean_dwell_s"
    assert {line.split(",")[1] for line in visitors.text.splitlines()[1:]} <= {"megamind", "hall"}
    csv = httpx.get(server.url + "/reports/counts.csv", params={"bucket": "hour"})
    assert csv.status_code == 200 and csv.text.splitlines()[0] == "hour,camera,frames,detections"
    png = httpx.get(server.url + "/reports/hours.png", params={"camera": "hall"})
    assert png.content[:8] == b"\x89PNG\r\n\x1a\n"
    assert httpx.get(server.url + "/reports/counts.png", params={"bucket": "week"}).status_code == 400
    doc = httpx.get(server.url + "/api/reports/hours").json()
    assert doc["columns"] == ["hour", "frames", "detections"] and len(doc["rows"]) == 24


def test_compare_lists_a_known_disagreement(server, tab):
    c = compare_versions(server.lake.catalog, "haar-face", "1", "2")
    assert c.worst.rows, "versions 1 and 2 should disagree somewhere"
    fid, _, _, only_a, only_b, _ = c.worst.rows[0]
    page = tab.open(server.url + "/compare?model=haar-face&a=1&b=2")
    assert page.locator(f"#worst a[data-frame-id='{fid}']").count() == 1
    text = page.inner_text("#agreement")
    assert str(c.agreement["only_b"]) in text and str(c.agreement["matched"]) in text
    assert "megamind" in page.inner_text("#side-by-side")
    tab.images_loaded()
    tab.shot("compare")
    page.click(f"#worst a[data-frame-id='{fid}']")
    page.wait_for_url(f"**/frames/{fid}")
    doc = httpx.get(server.url + "/api/compare", params={"model": "haar-face", "a": "1", "b": "2"}).json()
    assert doc["agreement"] == c.agreement and doc["worst"][0]["frame_id"] == fid


def test_sql_console_runs_reads_and_refuses_writes(server, tab):
    page = tab.open(server.url + "/sql")
    page.fill("#sql-input", "SELECT camera, count(*) AS n FROM frames GROUP BY camera ORDER BY camera")
    with page.expect_navigation():
        page.click("form.sql button")
    cells = page.eval_on_selector_all("#sql-result td", "els => els.map(e => e.textContent)")
    assert cells == ["hall", str(N_HALL), "megamind", str(N_MEGAMIND)]
    tab.shot("sql")
    page.fill("#sql-input", "DELETE FROM frames")
    with page.expect_navigation():
        page.click("form.sql button")
    assert "refused" in page.inner_text("#sql-error")
    tab.expected(400)  # the refused statement's page is a 400, which the browser logs
    tab.shot("sql-refused")
    r = httpx.get(server.url + "/api/sql", params={"q": "DELETE FROM frames"})
    assert r.status_code == 400 and "read-only" in r.json()["error"]
    r = httpx.post(server.url + "/api/sql", json={"q": "DROP TABLE frames"})
    assert r.status_code == 400
    csv = httpx.get(server.url + "/api/sql.csv", params={"q": "SELECT count(*) AS n FROM frames"})
    assert csv.text.split() == ["n", str(N_MEGAMIND + N_HALL)]


def test_path_traversal_urls_get_404(server):
    conn = http.client.HTTPConnection(server.url.removeprefix("http://"), timeout=10)
    for path in (
        "/thumb/..%2F..%2Fetc%2Fpasswd.jpg",
        "/image/../../etc/passwd",
        "/image/..%2F..%2F..%2Fetc%2Fpasswd.jpg",
        "/thumb/%2Fetc%2Fpasswd.jpg",
        "/frames/..%2F..%2Fetc%2Fpasswd",
        "/api/frames/..%2F..%2Fetc%2Fpasswd",
        "/static/..%2F..%2F..%2F..%2Fetc%2Fpasswd",
        "/static/../../../../etc/passwd",
        "/thumb/....jpg",
    ):
        conn.request("GET", path)  # sent as is: no client-side normalisation of ../
        resp = conn.getresponse()
        body = resp.read()
        assert resp.status == 404, path
        assert b"root:" not in body, path
    conn.close()


def test_metrics_endpoint_parses_and_shows_lag_catalog_counts_and_backends(server, locked):
    pytest.importorskip("prometheus_client", reason="the metrics extra is not installed")
    from prometheus_client.parser import text_string_to_metric_families

    r = httpx.get(server.url + "/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
    }

    def values(name: str) -> dict[tuple, float]:
        return {labels: v for (n, labels), v in samples.items() if n == name}

    assert values("visionlake_backend_up") == {(("backend", "catalog"),): 1.0, (("backend", "log"),): 1.0}
    lags = values("visionlake_group_lag")
    groups = {dict(k)["group"] for k in lags}
    assert "haar-face.1" in groups and all(v >= 0 for v in lags.values())
    assert {dict(k)["partition"] for k in lags} >= {"0", "1", "2", "3"}  # per partition
    results = values("visionlake_catalog_results")
    assert {(dict(k)["model"], dict(k)["model_version"]) for k in results} >= {
        ("haar-face", "1"),
        ("haar-face", "2"),
    }
    frames = values("visionlake_catalog_frames")
    ends = values("visionlake_topic_end_offset")
    assert sum(frames.values()) == sum(v for k, v in ends.items() if dict(k)["topic"] == "frames")
    # with a token, Prometheus needs it too
    assert httpx.get(locked.url + "/metrics").status_code == 401
    ok = httpx.get(locked.url + "/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert ok.status_code == 200 and "visionlake_group_lag" in ok.text


def test_a_token_guards_everything_and_the_login_form_works(locked, browser, shots, lake_root):
    fid = frame_ids(lake_root)[0]
    for path in ("/", "/api/overview", f"/thumb/{fid}.jpg", f"/image/{fid}.jpg", "/api/live/stream"):
        r = httpx.get(locked.url + path)
        assert r.status_code == 401, path
        assert b"\xff\xd8" not in r.content[:2]
    assert (
        httpx.get(locked.url + "/api/overview", headers={"Authorization": "Bearer wrong"}).status_code == 401
    )
    ok = httpx.get(locked.url + "/api/overview", headers={"Authorization": f"Bearer {TOKEN}"})
    assert ok.status_code == 200 and ok.json()["cameras"]

    t = Tab(browser, shots)
    try:
        page = t.open(locked.url + "/frames?camera=hall", status=401)
        assert page.locator("input[name=token]").count() == 1
        t.shot("login")
        page.fill("input[name=token]", "not-the-token")
        with page.expect_navigation():
            page.click(".login button")
        assert "wrong token" in page.inner_text("#login-error")
        t.expected(401)
        page.fill("input[name=token]", TOKEN)
        with page.expect_navigation():
            page.click(".login button")
        assert page.url == locked.url + "/frames?camera=hall"
        assert page.locator("#gallery a.thumb").count() == N_HALL
        t.images_loaded()
        cookie = next(c for c in t.context.cookies() if c["name"] == "vl_session")
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and TOKEN not in cookie["value"]
        assert t.errors == []
    finally:
        t.close()


def test_serve_refuses_a_public_address_without_a_token(lake_root):
    code = "from visionlake.cli import app, main\nfrom visionlake.cli_web import register\nregister(app)\nmain()\n"
    env = {k: v for k, v in os.environ.items() if not k.startswith("VISIONLAKE_")}
    cmd = [sys.executable, "-c", code, "--lake", str(lake_root), "serve"]
    out = subprocess.run([*cmd, "--host", "0.0.0.0"], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "without a token" in out.stderr
    port = free_port()
    proc = subprocess.Popen(
        [*cmd, "--port", str(port)],
        env={**env, "VISIONLAKE_TOKEN": TOKEN},
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/api/overview", timeout=2)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline and proc.poll() is None, "serve did not start"
                time.sleep(0.2)
        assert r.status_code == 401
        r = httpx.get(f"http://127.0.0.1:{port}/api/overview", headers={"Authorization": f"Bearer {TOKEN}"})
        assert r.status_code == 200 and len(r.json()["cameras"]) == 2
    finally:
        proc.terminate()
        proc.wait(10)


# --- last: it adds frames to the lake ----------------------------------------------------------------


def test_live_page_shows_a_frame_processed_after_it_opened(server, tab, lake_root):
    page = tab.open(server.url + "/live")
    tab.images_loaded()
    before = page.eval_on_selector("figure.live-cam[data-camera='megamind']", "e => e.dataset.frameId")
    assert before == frame_ids(lake_root, "megamind")[0]
    page.wait_for_selector("#live-state.on", timeout=10_000)
    tab.shot("live-before")

    with Lake(lake=lake_root) as lk:  # a few new frames, captured now, and a worker that processes them
        src = VideoFileSource(sample("Megamind.avi"), fps=2, resize=(320, 240), start_time=datetime.now(UTC))
        assert ingest(lk, islice(src, 3), "megamind").frames == 3
        assert Worker(lk, load_detector("haar-face"), until_idle=True, idle_timeout=0.3).run().processed == 3
    newest = frame_ids(lake_root, "megamind")[0]
    assert newest != before
    tab.wait_until(
        "id => document.querySelector(\"figure.live-cam[data-camera='megamind']\").dataset.frameId === id",
        newest,
    )
    src = page.eval_on_selector("figure.live-cam[data-camera='megamind'] img", "e => e.src")
    assert f"/image/{newest}.jpg" in src
    tab.images_loaded()
    tab.shot("live-after")
