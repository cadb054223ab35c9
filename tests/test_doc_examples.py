"""Every fenced code block of README.md and docs/*.md is checked, so a block that rots fails here.

- ```bash: every command line (continuations joined, comments dropped) runs, in order, in a
  temporary folder with a temporary lake (VISIONLAKE_HOME). Placeholders (clip.mp4, FRAME_ID,
  ./photos, SIGMA, ...) become sample media or values read back from the lake (PLACEHOLDERS). A line
  that would take minutes or needs a server runs in the form given in LINES, on a tiny input, or,
  where even that is too slow here, is listed there with the reason and the test that covers it.
  A line in no table runs as written; if it fails, so does this test.
- ```python: executed in a subprocess in a temporary folder, after a prelude that defines the
  placeholder names (PY_PRELUDE) and with the placeholder paths substituted.
- ```sql: every statement runs with `visionlake sql` on the lake the README tour made.
- ```toml: parses, and a lake with it as visionlake.toml resolves to the settings it names.
- ```json: JSON lines, each with the benchmark output contract's keys.
- ``` (no language): diagrams and layouts; they must not hold a command.

Each document's commands run in order in a session of their own (SPLITS gives a document's
independent lines a second one); the sessions run in parallel threads. The time it all took is
printed at the end: BUDGET_SECONDS on a 2-core machine.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2
import pytest
from media import sample

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BIN = Path(sys.executable).parent  # .venv/bin when run as .venv/bin/pytest
#: The longest a single documented line may take here before it counts as failed.
LINE_TIMEOUT = 120
#: The whole file stays under this on a 2-core machine.
BUDGET_SECONDS = 90


# ---------------------------------------------------------------------------------------------------
# Blocks and lines


@dataclass(frozen=True)
class Block:
    doc: str  # "README.md", "docs/batch.md"
    line: int  # line of the opening fence
    lang: str
    text: str

    @property
    def id(self) -> str:
        return f"{self.doc}:{self.line}:{self.lang or 'plain'}"


def fenced_blocks(path: Path) -> list[Block]:
    blocks, open_at, lang, body = [], None, "", []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        fence = re.match(r"\s*```\s*([\w+-]*)\s*$", line)
        if open_at is None and fence:
            open_at, lang, body = n, fence.group(1).lower(), []
        elif open_at is not None and re.match(r"\s*```\s*$", line):
            blocks.append(Block(str(path.relative_to(ROOT)), open_at, lang, "\n".join(body)))
            open_at = None
        elif open_at is not None:
            body.append(line)
    assert open_at is None, f"{path.name}:{open_at}: code block never closed"
    return blocks


ALL_BLOCKS = [b for doc in DOCS for b in fenced_blocks(doc)]


def strip_comment(line: str) -> str:
    """The line without its shell comment (a # outside quotes, at the start or after a blank)."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
    return line.rstrip()


def command_lines(block: Block) -> list[tuple[int, str]]:
    """(doc line number, command) of each command of a bash block: continuations joined, comments,
    blank lines and the whitespace runs that align comments dropped."""
    out, pending, start = [], "", 0
    for n, raw in enumerate(block.text.splitlines(), block.line + 1):
        line = strip_comment(raw)
        if not pending:
            start = n
        if line.endswith("\\"):
            pending += line[:-1].strip() + " "
            continue
        command = " ".join((pending + line.strip()).split())
        pending = ""
        if command:
            out.append((start, command))
    return out


# ---------------------------------------------------------------------------------------------------
# What the test runs instead of a placeholder or a line too slow for it


@dataclass(frozen=True)
class Run:
    """Run this command instead (placeholders in braces), on a tiny input; `expect`: a regex stdout matches."""

    command: str
    why: str
    expect: str | None = None
    covered_by: str | None = None  # the test (path::name) that runs what this form leaves out


@dataclass(frozen=True)
class Skip:
    """Not run here; `covered_by` names the test (path::name) that runs the same thing."""

    why: str
    covered_by: str | None = None


#: Placeholder words of the docs -> the context key the test puts there (see Session.value).
PLACEHOLDERS = {
    "clip.mp4": "clip",  # the first 2 s of a sample video (Session.clip), written by the test
    "FRAME_ID": "frame_id",  # a frame of the lake with detections, read back with `visionlake sql`
    "./photos": "photos",  # a folder of 4 opencv-doc sample images
    "./256_ObjectCategories": "categories",  # 2 labelled sub-folders of 12 small opencv-doc images
    "SIGMA": "sigma",  # the sigma the previous `visionlake encode` printed
    "photo1.jpg": "photo1.jpg",  # opencv-doc's fruits.jpg, written to the working folder
    "photo2.png": "photo2.png",  # opencv-doc's box.png, likewise
    ".venv/bin/": "bin",  # the virtual environment running this test
    "bench/": "bench",  # the repository's bench/ folder, whatever the working directory
}

FMNIST_LIMIT = "--limit 60"  # images per split: the whole chain in seconds instead of minutes
DEPLOY_OFFLINE = "needs a Docker engine or a Kubernetes cluster, which these machines do not have"
BENCH_SLOW = "bench/run.py runs for minutes here; its entry point runs for real in `--quick --only log` (docs/benchmarks.md), and the benchmark names are checked against bench/run.py"

FACES_DLIB = (
    "needs face photos and dlib (about 100 ms a face): the test named enrols two people from Megamind "
    "frames and runs these commands"
)

#: Lines run in another form or not run, keyed by (document, command as written, comments dropped).
LINES: dict[tuple[str, str], Run | Skip] = {
    # README.md
    ("README.md", "make demo"): Run(
        "make -n -C {root} demo",
        "make's dry run (the recipe: scripts/setup.sh, then the demo); setup installs with apt and pip, "
        "and the demo on whole videos takes a minute: the test named runs it on sampled frames",
        r"scripts/setup\.sh .*\n.*visionlake demo",
        "tests/test_demo.py::test_demo_on_the_embedded_defaults",
    ),
    ("README.md", "make test"): Run(
        "make -n -C {root} test",
        "make's dry run: the whole suite, of which this test is part, is what .ci/run runs",
        r"scripts/setup\.sh all,test\n.*pytest",
    ),
    ("README.md", "$vl ingest camera rtsp://user:pw@cam/stream --camera door"): Run(
        "$vl ingest camera http://127.0.0.1:{port}/vtest.avi --camera door --max-frames 3",
        "no camera here: a sample video served over HTTP is a network stream OpenCV reads the same way",
        r"frames\s*\S\s*3\b",
    ),
    ("README.md", "scripts/setup.sh kafka,postgres,s3"): Run(
        "bash -n {root}/scripts/setup.sh && {check_extras} kafka,postgres,s3",
        "installs into .venv and needs apt; CI's `make test` runs scripts/setup.sh all,test before "
        "the suite: here the script parses and the extras exist",
    ),
    ("README.md", ".venv/bin/pip install -e '.[kafka,postgres,s3]'"): Run(
        "{check_extras} kafka,postgres,s3",
        "reinstalls the package under the running suite; the extras exist in pyproject.toml",
    ),
    (
        "README.md",
        "visionlake --log kafka://broker:9092 --catalog postgresql://user@db/visionlake "
        "--archive s3://bucket/lake demo",
    ): Skip(
        "needs Kafka, PostgreSQL and S3 servers; the test named starts all three and runs this demo on them",
        "tests/test_demo.py::test_demo_on_kafka_postgres_and_s3",
    ),
    # docs/batch.md
    ("docs/batch.md", "visionlake dataset fashion-mnist data/fmnist"): Run(
        f"visionlake dataset fashion-mnist data/fmnist {FMNIST_LIMIT}",
        "the 70,000 images take minutes through the chain below; the first 60 of each split",
    ),
    (
        "docs/batch.md",
        "visionlake dataset pack ./photos photos-spark --engine spark --master spark://host:7077",
    ): Skip(
        "no Spark cluster, and Spark starts in 6-10 s here; the test named runs this command with --master local[2]",
        "tests/batch/test_bovw.py::test_dataset_pack_on_spark_through_the_cli",
    ),
    (
        "docs/batch.md",
        "visionlake vocab train train-f.parquet vocab.npz -k 512 --sample 200000 --seed 0",
    ): Run(
        "visionlake vocab train train-f.parquet vocab.npz -k 32 --sample 200000 --seed 0",
        "k = 32 on the 60-image split: seconds instead of a minute",
    ),
    (
        "docs/batch.md",
        "visionlake bovw run data/fmnist/train.parquet data/fmnist/test.parquet --workdir runs/fmnist --format json",
    ): Run(
        "visionlake bovw run data/fmnist/train.parquet data/fmnist/test.parquet --workdir runs/fmnist-run "
        "--format json -k 32",
        "on the 60-image splits with k = 32 (the defaults' k = 512 and the full dataset take minutes)",
        r'"accuracy"',
    ),
    (
        "docs/batch.md",
        "visionlake worker --detector bovw-classifier --param model=model.joblib --param ignore=empty",
    ): Run(
        "visionlake ingest images {photos} --camera feeder && visionlake worker --detector bovw-classifier "
        "--param model=model.joblib --param ignore=empty --until-idle --idle-timeout 1",
        "a worker runs until stopped: frames from the photos, then --until-idle",
        r"\b4\b",
    ),
    # docs/operations.md
    (
        "docs/operations.md",
        "visionlake --log kafka://127.0.0.1:9092 --catalog postgresql://postgres@127.0.0.1/visionlake "
        "--archive s3://visionlake-demo/lake demo",
    ): Skip(
        "needs Kafka, PostgreSQL and S3 servers; the test named starts all three and runs this demo on them",
        "tests/test_demo.py::test_demo_on_kafka_postgres_and_s3",
    ),
    ("docs/operations.md", "visionlake worker --detector hog-person --processes 2"): Run(
        "visionlake ingest images {photos} --camera door && "
        "visionlake worker --detector hog-person --processes 2 --until-idle --idle-timeout 1",
        "a worker runs until stopped: frames from the photos, then --until-idle",
    ),
    (
        "docs/operations.md",
        "visionlake ingest camera rtsp://user:pw@cam/stream --camera dock --spread 4",
    ): Run(
        "visionlake ingest camera http://127.0.0.1:{port}/vtest.avi --camera dock --max-frames 4 --spread 4",
        "no camera here: a sample video served over HTTP is a network stream OpenCV reads the same way",
        r"frames\s*\S\s*4\b",
        "tests/test_spread.py::test_two_workers_share_one_spread_camera_and_tracking_leaves_it_alone",
    ),
    ("docs/operations.md", "visionlake worker --detector hog-person --shared --processes 2"): Run(
        "visionlake ingest images {photos} --camera gate && "
        "visionlake worker --detector hog-person --shared --processes 2 --until-idle --idle-timeout 1",
        "a worker runs until stopped: frames from the photos, then --until-idle",
        None,
        "tests/test_share_groups.py::test_two_shared_workers_split_one_camera_and_tracking_is_refused",
    ),
    ("docs/operations.md", "visionlake worker --detector hog-person --autoscale 1:4 --cooldown 60"): Run(
        "visionlake ingest images {photos} --camera hall && "
        "visionlake worker --detector hog-person --autoscale 1:2 --cooldown 2 --until-idle --idle-timeout 1",
        "a supervisor runs until stopped: frames from the photos, a short cool-down, then --until-idle",
        None,
        "tests/test_autoscale.py::test_a_burst_scales_workers_up_and_its_end_scales_them_down",
    ),
    ("README.md", "$vl serve"): Skip(
        "serves until stopped; the test named starts it on a free port and drives every page in a browser",
        "tests/test_web.py::test_overview_shows_cameras_models_groups_and_dead_letters",
    ),
    # docs/dashboard.md
    ("docs/dashboard.md", "visionlake serve"): Skip(
        "serves until stopped; the test named starts it on a free port and drives every page in a browser",
        "tests/test_web.py::test_overview_shows_cameras_models_groups_and_dead_letters",
    ),
    (
        "docs/dashboard.md",
        'visionlake serve --host 0.0.0.0 --port 8080 --token "$(openssl rand -hex 16)"',
    ): Skip(
        "serves until stopped, on every address; the test named checks the token guards every page",
        "tests/test_web.py::test_a_token_guards_everything_and_the_login_form_works",
    ),
    ("docs/dashboard.md", "visionlake report counts --label face --bucket hour"): Run(
        "visionlake ingest video {clip} --camera lobby --start now && "
        "visionlake worker --detector haar-face --until-idle --idle-timeout 1 && "
        "visionlake report counts --label face --bucket hour",
        "a lake to report on first: clip.mp4 (faces) as camera lobby, processed by a face worker",
        r"lobby\s+\d+\s+[1-9]",
    ),
    # docs/faces.md: dlib at 100 ms a face; the test named runs these commands on Megamind's faces
    ("docs/faces.md", "visionlake faces enroll roxanne roxanne-1.jpg roxanne-2.jpg"): Skip(
        FACES_DLIB, "tests/test_faces_catalog.py::test_faces_commands_and_a_face_id_worker_end_to_end"
    ),
    ("docs/faces.md", "visionlake worker --detector face-id --until-idle"): Skip(
        FACES_DLIB, "tests/test_faces_catalog.py::test_faces_commands_and_a_face_id_worker_end_to_end"
    ),
    ("docs/faces.md", "visionlake search --model face-id --label roxanne --since 1d"): Skip(
        FACES_DLIB, "tests/test_faces_catalog.py::test_faces_commands_and_a_face_id_worker_end_to_end"
    ),
    ("docs/faces.md", "visionlake faces who FRAME_ID"): Skip(
        FACES_DLIB, "tests/test_faces_catalog.py::test_faces_commands_and_a_face_id_worker_end_to_end"
    ),
    ("docs/faces.md", "visionlake faces cluster --since 1d"): Skip(
        FACES_DLIB, "tests/test_faces_catalog.py::test_faces_commands_and_a_face_id_worker_end_to_end"
    ),
    ("docs/faces.md", "visionlake faces name 0 bernard"): Skip(
        FACES_DLIB, "tests/test_faces_catalog.py::test_faces_commands_and_a_face_id_worker_end_to_end"
    ),
    ("docs/faces.md", "visionlake faces similar FRAME_ID --face 0 --limit 10"): Skip(
        FACES_DLIB, "tests/test_faces_catalog.py::test_faces_commands_and_a_face_id_worker_end_to_end"
    ),
    ("docs/faces.md", "visionlake faces remove bernard"): Skip(
        FACES_DLIB, "tests/test_faces_catalog.py::test_faces_commands_and_a_face_id_worker_end_to_end"
    ),
    ("docs/faces.md", "visionlake faces forget --forget-after 30d"): Skip(
        FACES_DLIB, "tests/test_faces_catalog.py::test_faces_commands_and_a_face_id_worker_end_to_end"
    ),
    # docs/deploy.md: no Docker engine or cluster here; the test named checks the files offline
    ("docs/deploy.md", "docker build -t visionlake ."): Skip(
        DEPLOY_OFFLINE,
        "tests/test_deploy.py::test_dockerfile_slim_base_non_root_user_health_check_and_entry_point",
    ),
    ("docs/deploy.md", "docker compose -f deploy/compose.yaml up --build"): Skip(
        DEPLOY_OFFLINE,
        "tests/test_deploy.py::test_compose_runs_kafka_kraft_postgres_minio_ingest_workers_and_the_dashboard",
    ),
    ("docs/deploy.md", "docker compose -f deploy/compose.yaml up -d --scale worker=4"): Skip(
        DEPLOY_OFFLINE, "tests/test_deploy.py::test_compose_dependencies_volumes_and_health_checks_exist"
    ),
    ("docs/deploy.md", "docker compose -f deploy/compose.yaml exec dashboard visionlake log groups"): Skip(
        DEPLOY_OFFLINE + "; `visionlake log groups` itself runs in the test named",
        "tests/test_cli_conventions.py::test_log_topics_and_status_fit_80_columns_with_sizes_in_units",
    ),
    (
        "docs/deploy.md",
        "CAMERA_URL=rtsp://user:pw@cam/stream CAMERA_ID=door docker compose -f deploy/compose.yaml --profile camera up -d",
    ): Skip(DEPLOY_OFFLINE, "tests/test_deploy.py::test_every_visionlake_command_parses_with_the_real_cli"),
    ("docs/deploy.md", "kubectl apply -f deploy/kubernetes/config.yaml"): Skip(
        DEPLOY_OFFLINE, "tests/test_deploy.py::test_kubernetes_manifests_match_the_schemas"
    ),
    ("docs/deploy.md", "kubectl apply -f deploy/kubernetes/topics-job.yaml"): Skip(
        DEPLOY_OFFLINE, "tests/test_deploy.py::test_kubernetes_manifests_match_the_schemas"
    ),
    (
        "docs/deploy.md",
        "kubectl apply -f deploy/kubernetes/worker.yaml -f deploy/kubernetes/serve.yaml -f deploy/kubernetes/ingest.yaml",
    ): Skip(DEPLOY_OFFLINE, "tests/test_deploy.py::test_kubernetes_manifests_match_the_schemas"),
    ("docs/deploy.md", "kubectl apply -f deploy/kubernetes/keda-scaledobject.yaml"): Skip(
        DEPLOY_OFFLINE,
        "tests/test_deploy.py::test_keda_scaledobject_scales_the_worker_on_its_consumer_groups_lag",
    ),
    ("docs/deploy.md", "kubectl get scaledobject visionlake-worker"): Skip(
        DEPLOY_OFFLINE,
        "tests/test_deploy.py::test_keda_scaledobject_scales_the_worker_on_its_consumer_groups_lag",
    ),
    ("docs/deploy.md", ".venv/bin/python -m pytest -q tests/test_deploy.py"): Run(
        "{bin}python -m pytest -q -p no:cacheprovider {root}/tests/test_deploy.py",
        "the repository's tests folder, from this test's working folder",
        r"\d+ passed",
    ),
    # docs/benchmarks.md
    ("docs/benchmarks.md", ".venv/bin/python bench/run.py --quick"): Skip(BENCH_SLOW + " (about 2-3 min)"),
    ("docs/benchmarks.md", ".venv/bin/python bench/run.py"): Skip(BENCH_SLOW + " (about 25 min)"),
    ("docs/benchmarks.md", ".venv/bin/python bench/run.py --quick --only kafka --only catalog"): Skip(
        BENCH_SLOW + " (about 75 s)"
    ),
    ("docs/benchmarks.md", ".venv/bin/python bench/run.py --only kafka --only catalog"): Skip(
        BENCH_SLOW + " (about 4 min)"
    ),
    (
        "docs/benchmarks.md",
        ".venv/bin/python bench/run.py --only pack --only extract --only vocab --only encode --only accuracy",
    ): Skip(BENCH_SLOW + " (full sizes: about 12 min)"),
    ("docs/benchmarks.md", "visionlake dataset fashion-mnist data/fmnist"): Skip(
        "the same command as docs/batch.md's, which runs above", "docs/batch.md"
    ),
    (
        "docs/benchmarks.md",
        "visionlake bovw run data/fmnist/train.parquet data/fmnist/test.parquet --workdir runs/fmnist --format json",
    ): Skip("the same command as docs/batch.md's, which runs above", "docs/batch.md"),
    (
        "docs/benchmarks.md",
        "/usr/bin/time -v visionlake bovw run data/fmnist/train.parquet data/fmnist/test.parquet "
        "--workdir runs/fmnist --format json",
    ): Skip(
        "docs/batch.md's command, run above, under /usr/bin/time -v (which only measures)",
        "docs/batch.md",
    ),
    ("docs/benchmarks.md", ".venv/bin/python bench/run.py --quick --only live"): Skip(
        BENCH_SLOW + " (about 25 s: two cameras streaming in real time, a worker and the dashboard)"
    ),
    ("docs/benchmarks.md", ".venv/bin/python bench/hog_accuracy.py"): Run(
        "{bin}python {bench}hog_accuracy.py --quick",
        "the full grid times 10 settings 3 times (minutes); --quick scores the before and after settings",
        r'"setting": "after"',
    ),
}

#: A flag added to every documented command it matches, and why.
EXTRA_ARGS = [
    (
        re.compile(r"^visionlake (?:features extract|vocab train|encode|bovw run) (?!.*--engine spark)"),
        "--processes 1",
        "one engine worker: on 2 cores shared by the parallel sessions, more only add start-up",
    ),
]

#: Names the Python blocks use as placeholders -> code that defines them from real sample images.
PY_PRELUDE = {
    "list_of_image_bytes": (
        "from pathlib import Path as _P\n"
        "_data = _P({media!r})\n"
        "_boards = sorted(_data.glob('left0*.jpg')) + sorted(_data.glob('right0*.jpg'))\n"
        "_photos = [_data / n for n in ('aero1.jpg', 'baboon.jpg', 'building.jpg', 'butterfly.jpg', "
        "'fruits.jpg', 'home.jpg', 'messi5.jpg', 'orange.jpg', 'apple.jpg', 'starry_night.jpg', "
        "'squirrel_cls.jpg', 'stuff.jpg', 'lena.jpg', 'graf1.png', 'box.png', 'board.jpg', 'smarties.png', "
        "'pic1.png')]\n"
        "_photos = [p for p in _photos if p.exists()]\n"
        "_n = min(len(_boards), len(_photos))\n"
        "list_of_image_bytes = [p.read_bytes() for p in _boards[: _n - 2] + _photos[: _n - 2]]\n"
        "labels = ['chessboard'] * (_n - 2) + ['photo'] * (_n - 2)\n"
        "more_image_bytes = [p.read_bytes() for p in _boards[_n - 2 : _n] + _photos[_n - 2 : _n]]\n"
    ),
}

COMMAND_START = re.compile(
    r"^\s*(?:\$\w+|\.venv/\S*|scripts/\S+|bench/\S+|(?:visionlake|python3?|pip|make|bash|sh)(?=\s|$))"
)
BENCH_KEYS = ("metric", "value", "unit", "baseline", "baseline_value")


# ---------------------------------------------------------------------------------------------------
# Sample media the placeholders stand for

LABEL_ME = {"photo1.jpg": "fruits.jpg", "photo2.png": "box.png"}
PHOTOS = ["aero1.jpg", "baboon.jpg", "home.jpg", "messi5.jpg"]
CATEGORIES = {
    "chessboard": [f"left{i:02d}.jpg" for i in (1, 2, 3, 4, 5, 6)]
    + [f"right{i:02d}.jpg" for i in (1, 2, 3, 4, 5, 6)],
    "photo": [
        *PHOTOS,
        "butterfly.jpg",
        "orange.jpg",
        "apple.jpg",
        "starry_night.jpg",
        "stuff.jpg",
        "board.jpg",
    ],
}


def write_clip(path: Path, video: str, seconds: float, size: tuple[int, int] | None = None) -> None:
    """The first `seconds` of a sample video, as an MP4 with a fresh modification time."""
    cap = cv2.VideoCapture(str(sample(video)))
    fps = cap.get(cv2.CAP_PROP_FPS) or 24.0
    ok, frame = cap.read()
    assert ok, f"OpenCV cannot read {video}"
    size = size or (frame.shape[1], frame.shape[0])
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    assert out.isOpened(), f"OpenCV cannot write {path}"
    for _ in range(round(fps * seconds)):
        out.write(cv2.resize(frame, size, interpolation=cv2.INTER_AREA))
        ok, frame = cap.read()
        if not ok:
            break
    out.release()
    cap.release()


def write_images(folder: Path, names: list[str], size: int = 320) -> Path:
    """Sample images, their longer side reduced to `size` pixels, saved as JPEG or PNG as they were."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        image = cv2.imread(str(sample(name)), cv2.IMREAD_COLOR)
        scale = size / max(image.shape[:2])
        if scale < 1:
            image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        assert cv2.imwrite(str(folder / name), image)
    return folder


def benchmark_names() -> set[str]:
    """The --only names bench/run.py accepts, read from its source (importing it has side effects)."""
    tree = ast.parse((ROOT / "bench" / "run.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "BENCHMARKS" for t in node.targets):
            table = ast.literal_eval(node.value)
            return set(table) | set(table.values())
    raise AssertionError("bench/run.py has no BENCHMARKS table")


# ---------------------------------------------------------------------------------------------------
# A document's session: its bash lines in order, in one folder with one lake


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the base class's signature
        pass


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request, client_address):  # a client that stops reading (--max-frames)
        pass


@dataclass
class Outcome:
    line: int
    command: str  # as written
    ran: str | None  # what ran (None: skipped)
    why: str
    seconds: float = 0.0
    error: str | None = None


@dataclass
class Session:
    doc: str
    root: Path
    env: dict[str, str] = field(default_factory=dict)
    last_stdout: str = ""
    outcomes: list[Outcome] = field(default_factory=list)
    _values: dict[str, str] = field(default_factory=dict)
    #: What clip.mp4 holds: (sample video, seconds, size); Megamind.avi shows faces, vtest.avi people.
    clip: tuple[str, float, tuple[int, int] | None] = ("Megamind.avi", 2.0, None)
    _server: _QuietServer | None = None

    @property
    def lake(self) -> Path:
        return self.root / "lake"

    def value(self, key: str) -> str:
        if key not in self._values:
            self._values[key] = self._make(key)
        return self._values[key]

    def _make(self, key: str) -> str:
        if key == "clip":
            write_clip(self.root / "clip.mp4", *self.clip)
            return "clip.mp4"
        if key == "photos":
            write_images(self.root / "photos", PHOTOS)
            return "./photos"
        if key == "categories":
            for label, names in CATEGORIES.items():
                write_images(self.root / "256_ObjectCategories" / label, names, size=240)
            return "./256_ObjectCategories"
        if key == "frame_id":
            out = self.sh(
                'visionlake sql "SELECT frame_id FROM results WHERE n_detections > 0 ORDER BY frame_id LIMIT 1" --format csv'
            )
            ids = out.split()[1:]
            assert ids, f"no frame with detections in the lake for FRAME_ID: {out!r}"
            return ids[0]
        if key == "sigma":
            found = re.search(r"sigma\W+([0-9][0-9.eE+-]*)", self.last_stdout)
            assert found, f"SIGMA: the previous command printed no sigma:\n{self.last_stdout}"
            return found.group(1)
        if key in LABEL_ME:  # images to label, in the working folder
            assert cv2.imwrite(str(self.root / key), cv2.imread(str(sample(LABEL_ME[key]))))
            return key
        if key == "bin":
            return f"{BIN}/"
        if key == "bench":
            return f"{ROOT / 'bench'}/"
        if key == "root":
            return str(ROOT)
        if key == "port":  # an HTTP server of the sample videos (AVI: MP4 over HTTP needs range requests)
            handler = partial(_QuietHandler, directory=str(sample("vtest.avi").parent))
            self._server = _QuietServer(("127.0.0.1", 0), handler)
            threading.Thread(target=self._server.serve_forever, daemon=True).start()
            return str(self._server.server_address[1])
        if key == "check_extras":  # `{check_extras} a,b`: fails unless pyproject.toml has extras a and b
            code = (
                "import sys, tomllib; have = tomllib.load(open(sys.argv[1], 'rb'))['project']"
                "['optional-dependencies']; missing = set(sys.argv[2].split(',')) - set(have); "
                "sys.exit(f'no such extras in pyproject.toml: {sorted(missing)}' if missing else 0)"
            )
            return f"{shlex.quote(sys.executable)} -c {shlex.quote(code)} {shlex.quote(str(ROOT / 'pyproject.toml'))}"
        raise KeyError(key)

    def substitute(self, command: str) -> str:
        for word, key in PLACEHOLDERS.items():
            pattern = rf"(?<![\w./-]){re.escape(word)}" + (r"(?![\w.-])" if word[-1].isalnum() else "")
            if re.search(pattern, command):
                command = re.sub(pattern, lambda _m, k=key: self.value(k), command)
        return command

    def fill(self, template: str) -> str:
        return re.sub(r"\{(\w+)\}", lambda m: self.value(m.group(1)), template)

    def sh(self, command: str, timeout: float = LINE_TIMEOUT) -> str:
        env = {
            **os.environ,
            **self.env,
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "VISIONLAKE_HOME": str(self.lake),
            "COLUMNS": "160",
            "OMP_NUM_THREADS": "1",
        }
        for name in ("VISIONLAKE_LOG", "VISIONLAKE_CATALOG", "VISIONLAKE_ARCHIVE"):
            env.pop(name, None)
        proc = subprocess.Popen(
            ["bash", "-o", "pipefail", "-c", command],
            cwd=self.root,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # a timeout ends the command's workers too
        )
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            stdout, stderr = proc.communicate()
            raise AssertionError(f"still running after {timeout} s\n--- stderr\n{stderr[-3000:]}") from None
        if proc.returncode != 0:
            raise AssertionError(
                f"exit {proc.returncode}\n--- stdout\n{stdout[-2000:]}\n--- stderr\n{stderr[-3000:]}"
            )
        return stdout

    def run_line(self, line: int, command: str) -> None:
        action = LINES.get((self.doc, command))
        outcome = Outcome(line, command, None, "")
        self.outcomes.append(outcome)
        if isinstance(action, Skip):
            outcome.why = action.why + (f" [covered by {action.covered_by}]" if action.covered_by else "")
            return
        t = time.perf_counter()
        try:
            assignment = re.fullmatch(r"(\w+)=(\S+)", command)
            if assignment:  # vl=.venv/bin/visionlake: a shell variable the later lines use
                outcome.ran = self.substitute(command)
                self.env[assignment.group(1)] = self.substitute(assignment.group(2))
                return
            if isinstance(action, Run):
                outcome.ran, outcome.why = self.fill(action.command), action.why
                if action.covered_by:
                    outcome.why += f" [covered by {action.covered_by}]"
            else:
                outcome.ran = self.substitute(command)
            for pattern, flag, why in EXTRA_ARGS:
                if pattern.search(outcome.ran) and flag.split()[0] not in outcome.ran:
                    outcome.ran = f"{outcome.ran} {flag}"
                    outcome.why = f"{outcome.why}; {why}" if outcome.why else why
            self.last_stdout = self.sh(outcome.ran)
            if re.search(r"bench/\w+\.py", outcome.ran):  # benchmark output: the JSON-lines contract
                records = [json.loads(x) for x in self.last_stdout.splitlines() if x.startswith("{")]
                assert records, f"no JSON lines on stdout:\n{self.last_stdout[-2000:]}"
                for record in records:
                    assert all(k in record for k in BENCH_KEYS), f"a line lacks {BENCH_KEYS}: {record}"
            if isinstance(action, Run) and action.expect:
                assert re.search(action.expect, self.last_stdout), (
                    f"output does not match {action.expect!r}:\n{self.last_stdout[-2000:]}"
                )
        except Exception as e:  # noqa: BLE001 - reported with the line, the session goes on
            outcome.error = f"{type(e).__name__}: {e}"
        finally:
            outcome.seconds = time.perf_counter() - t

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


def run_session(
    doc: str, root: Path, select: Callable[[str], bool], after: Callable[[Session], None] | None = None
) -> Session:
    session = Session(doc, root)
    root.mkdir(parents=True, exist_ok=True)
    try:
        for block in ALL_BLOCKS:
            if block.doc == doc and block.lang in SHELL:
                for line, command in command_lines(block):
                    if select(command):
                        session.run_line(line, command)
        if after is not None:
            after(session)
    finally:
        session.close()
    return session


def run_python_block(block: Block, root: Path) -> str:
    root.mkdir(parents=True, exist_ok=True)
    session = Session(block.doc, root, clip=("vtest.avi", 2.0, None))
    code = session.substitute(block.text)
    code = code.replace('"clip.mp4"', repr(str(root / "clip.mp4")))
    prelude = "".join(
        text.format(media=str(sample("vtest.avi").parent))
        for name, text in PY_PRELUDE.items()
        if name in code
    )
    proc = subprocess.run(
        [sys.executable, "-c", prelude + code],
        cwd=root,
        env={**os.environ, "OMP_NUM_THREADS": "1", "VISIONLAKE_HOME": str(root / "lake")},
        capture_output=True,
        text=True,
        timeout=LINE_TIMEOUT,
    )
    session.close()
    if proc.returncode != 0:
        raise AssertionError(f"{block.id} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc.stdout


def run_sql_blocks(session: Session) -> None:
    """catalog.md's queries on the README tour's lake (faces, people, two haar-face versions)."""
    for block in ALL_BLOCKS:
        if block.lang != "sql":
            continue
        text = "\n".join(line for line in block.text.splitlines() if not line.strip().startswith("--"))
        for n, statement in enumerate(s.strip() for s in text.split(";")):
            if statement:
                session.outcomes.append(
                    Outcome(block.line, f"{block.doc} statement {n + 1}", statement[:60], "catalog query")
                )
                t = time.perf_counter()
                try:
                    session.sh(f"visionlake sql {shlex.quote(statement)} --format json")
                except Exception as e:  # noqa: BLE001
                    session.outcomes[-1].error = f"{block.id}: {e}"
                session.outcomes[-1].seconds = time.perf_counter() - t


# ---------------------------------------------------------------------------------------------------
# The runs, started together in threads once per test session


SHELL = ("bash", "sh", "shell")
#: Lines of a document that use nothing its other lines make run in a folder of their own, in
#: parallel with the rest: (document, name, what the lines match). Keeps the longest within budget.
SPLITS = [("docs/batch.md", "caltech", re.compile(r"caltech|256_ObjectCategories"))]


def _sessions() -> dict[str, tuple[str, Callable[[str], bool]]]:
    """Session name -> (document, which of its command lines it runs); the longest first."""
    docs = sorted({b.doc for b in ALL_BLOCKS if b.lang in SHELL}, key=lambda d: (d != "docs/batch.md", d))
    out: dict[str, tuple[str, Callable[[str], bool]]] = {}
    for doc in docs:
        splits = [(name, pattern) for d, name, pattern in SPLITS if d == doc]
        out[doc] = (doc, lambda c, ps=[p for _, p in splits]: not any(p.search(c) for p in ps))
        for name, pattern in splits:
            out[f"{doc}#{name}"] = (doc, lambda c, p=pattern: bool(p.search(c)))
    return out


SESSIONS = _sessions()
PYTHON_BLOCKS = [b for b in ALL_BLOCKS if b.lang == "python"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    sample("Megamind.avi")  # skips the module when opencv-doc is missing
    started = time.perf_counter()
    pool = ThreadPoolExecutor(max_workers=4)
    futures: dict[str, Future] = {}
    for name, (doc, select) in SESSIONS.items():
        root = tmp_path_factory.mktemp(name.replace("/", "-").replace("#", "-"))
        after = run_sql_blocks if doc == "README.md" else None
        futures[name] = pool.submit(run_session, doc, root, select, after)
    for block in PYTHON_BLOCKS:
        futures[block.id] = pool.submit(run_python_block, block, tmp_path_factory.mktemp("python"))
    yield futures
    pool.shutdown(wait=True)
    print(f"\ndoc examples: {time.perf_counter() - started:.1f} s in all (budget {BUDGET_SECONDS} s)")


def report(session: Session) -> str:
    rows = []
    for o in session.outcomes:
        state = "FAIL" if o.error else ("skip" if o.ran is None else "ok")
        rows.append(f"  {state:4} {o.seconds:5.1f}s {session.doc}:{o.line}: {o.command}")
        if o.ran is not None and o.ran != o.command:
            rows.append(f"             ran: {o.ran}")
        if o.why:
            rows.append(f"             why: {o.why}")
        if o.error:
            rows.append("             " + o.error.replace("\n", "\n             "))
    return "\n".join(rows)


@pytest.mark.parametrize("name", SESSIONS)
def test_every_shell_line_runs(runs, name):
    session: Session = runs[name].result()
    print(f"\n{name}\n{report(session)}")
    failed = [o for o in session.outcomes if o.error]
    assert not failed, f"{len(failed)} documented command(s) failed:\n{report(session)}"


@pytest.mark.parametrize("block", PYTHON_BLOCKS, ids=lambda b: b.id)
def test_every_python_block_runs(runs, block):
    out = runs[block.id].result()
    print(out)


def test_the_readme_python_snippet_finds_people(runs):
    (block,) = [b for b in PYTHON_BLOCKS if b.doc == "README.md"]
    rows = runs[block.id].result().strip()
    found = re.fullmatch(r"\[\((\d+),\)\]", rows)
    assert found and int(found.group(1)) > 0, f"no person found in vtest.avi's first 2 s: {rows}"


def test_every_table_entry_names_a_documented_line():
    """A line that left the docs leaves the table too, and every covering test exists."""
    documented = {(b.doc, c) for b in ALL_BLOCKS if b.lang in SHELL for _, c in command_lines(b)}
    stale = [key for key in LINES if key not in documented]
    assert not stale, f"LINES entries for lines no longer in the docs: {stale}"
    for (doc, command), action in LINES.items():
        if not action.covered_by:
            continue
        if "::" in action.covered_by:
            path, name = action.covered_by.split("::")
            assert f"def {name}(" in (ROOT / path).read_text(), f"{action.covered_by} does not exist"
        elif action.covered_by.endswith(".md"):  # the same command, run for another document
            same = command.removeprefix("/usr/bin/time -v ")
            assert (action.covered_by, same) in documented, f"{doc}: {command}: not in {action.covered_by}"
            assert not isinstance(LINES.get((action.covered_by, same)), Skip), f"{command} runs nowhere"


def test_benchmark_lines_name_real_benchmarks():
    """The bench/run.py lines run here or not: each names benchmarks bench/run.py has."""
    names = benchmark_names()
    lines = [(b.doc, c) for b in ALL_BLOCKS if b.lang in SHELL for _, c in command_lines(b)]
    for doc, command in lines:
        if "bench/run.py" in command:
            args = shlex.split(command.split("bench/run.py", 1)[1])
            unknown = set(args) - {"--quick", "--only"} - names
            assert not unknown, f"{doc}: {command}: no benchmark {sorted(unknown)}"


@pytest.mark.parametrize("block", [b for b in ALL_BLOCKS if b.lang == "json"], ids=lambda b: b.id)
def test_json_blocks_are_benchmark_lines(block):
    for n, line in enumerate(block.text.splitlines(), block.line + 1):
        if line.strip():
            record = json.loads(line)
            missing = [k for k in BENCH_KEYS if k not in record]
            assert not missing, f"{block.doc}:{n}: no {missing}"


@pytest.mark.parametrize("block", [b for b in ALL_BLOCKS if b.lang == "yaml"], ids=lambda b: b.id)
def test_yaml_blocks_parse_and_scrape_configs_name_host_ports(block):
    import yaml

    data = yaml.safe_load(block.text)
    assert isinstance(data, dict) and data, block.id
    for job in data.get("scrape_configs", []):  # Prometheus: every target is host:port
        assert job["job_name"]
        for static in job["static_configs"]:
            for target in static["targets"]:
                host, _, port = target.rpartition(":")
                assert host and port.isdigit() and 0 < int(port) < 65536, target


@pytest.mark.parametrize("block", [b for b in ALL_BLOCKS if b.lang == "toml"], ids=lambda b: b.id)
def test_toml_blocks_are_lake_settings(block, tmp_path):
    from visionlake.config import load_settings

    data = tomllib.loads(block.text)
    lake = tmp_path / "lake"
    lake.mkdir()
    (lake / "visionlake.toml").write_text(block.text)
    env = {
        k: os.environ.pop(k)
        for k in ("VISIONLAKE_LOG", "VISIONLAKE_CATALOG", "VISIONLAKE_ARCHIVE")
        if k in os.environ
    }
    try:
        settings = load_settings(lake=lake)
    finally:
        os.environ.update(env)
    for key in ("log", "catalog", "archive"):
        if key in data:
            assert getattr(settings, key) == data[key]
    for key in ("log_options", "archive_options"):
        if key in data:
            assert getattr(settings, key).keys() >= data[key].keys() or getattr(settings, key)


@pytest.mark.parametrize("block", [b for b in ALL_BLOCKS if b.lang == ""], ids=lambda b: b.id)
def test_plain_blocks_hold_no_command(block):
    commands = [line for line in block.text.splitlines() if COMMAND_START.match(line)]
    assert not commands, f"{block.id} is a plain block with commands (make it ```bash): {commands}"


def test_every_block_has_a_check():
    checked = {*SHELL, "python", "sql", "toml", "json", "yaml", ""}
    unknown = [b.id for b in ALL_BLOCKS if b.lang not in checked]
    assert not unknown, f"code blocks of a language this test does not check: {unknown}"
