"""`visionlake demo`: the whole platform on two sample videos, in about a minute on two cores.

Two cameras (Megamind.avi with faces, vtest.avi with pedestrians from Debian's opencv-doc) are
ingested while a face worker and a person worker, each its own process and consumer group, process
the frames as they arrive. The summary shows what went where and two SQL queries over the catalog.
"""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from pathlib import Path

from rich.progress import Progress

from .errors import SourceError
from .ingest.publish import ingest
from .ingest.sources import VideoFileSource, parse_size
from .lake import Lake
from .output import Format, console, human_bytes, record_out, rows_out
from .workers import scaling

SAMPLE_DIRS = ("/usr/share/doc/opencv-doc/examples/data",)
CAMERAS = {"megamind": "Megamind.avi", "vtest": "vtest.avi"}
WORKERS = ("haar-face", "hog-person")

QUERIES = {
    "Detections per camera and model version": (
        "SELECT f.camera, r.model, r.model_version, count(*) AS frames, sum(r.n_detections) AS detections "
        "FROM frames f JOIN results r ON r.frame_id = f.frame_id "
        "GROUP BY f.camera, r.model, r.model_version ORDER BY 1, 2, 3"
    ),
    # one model version (the newest registered), so a face found by two versions is listed once
    "Where are the five most confident faces?": (
        "SELECT f.frame_id, f.camera, f.captured_at, round(CAST(d.score AS numeric), 2) AS score, f.uri "
        "FROM detections d JOIN frames f ON f.frame_id = d.frame_id "
        "WHERE d.label = 'face' AND d.model = 'haar-face' AND d.model_version = "
        "(SELECT model_version FROM models WHERE model = 'haar-face' ORDER BY created_at DESC LIMIT 1) "
        "ORDER BY d.score DESC LIMIT 5"
    ),
}


def find_samples() -> dict[str, Path]:
    dirs = [os.environ["VISIONLAKE_SAMPLES"]] if os.environ.get("VISIONLAKE_SAMPLES") else list(SAMPLE_DIRS)
    for d in dirs:
        paths = {cam: Path(d) / name for cam, name in CAMERAS.items()}
        if all(p.is_file() for p in paths.values()):
            return paths
    raise SourceError(
        f"sample videos {', '.join(CAMERAS.values())} not found in {', '.join(dirs)}: "
        "install Debian's opencv-doc (apt-get install opencv-doc) or set VISIONLAKE_SAMPLES to their folder"
    )


def run_demo(
    lake: Lake, global_argv: list[str], *, fps: float, resize: str | None, progress: Progress
) -> dict:
    samples = find_samples()
    size = parse_size(resize)
    start = time.monotonic()
    lake.log.ensure_topic("frames")
    lake.catalog  # noqa: B018 - create the catalog before the workers race to
    procs = [
        p
        for det in WORKERS
        for p in scaling.spawn(
            global_argv, ["--detector", det, "--until-idle", "--idle-timeout", "5", "--threads", "1"]
        )
    ]
    ingested = []
    filmed = datetime.now(UTC)  # the sample videos play as two cameras filming now
    with progress:
        for cam, path in samples.items():
            src = VideoFileSource(path, fps=fps, resize=size, start_time=filmed)
            task = progress.add_task(f"ingest {cam}", total=src.expected_frames, info="")
            stats = ingest(lake, src, cam, on_frame=lambda s, t=task: progress.update(t, completed=s.frames))
            ingested.append(stats.as_dict())
        wait = progress.add_task("workers finishing", total=None, info="")
        workers = scaling.collect(procs)
        progress.update(wait, completed=1, total=1)
    elapsed = time.monotonic() - start
    queries = []
    for title, sql in QUERIES.items():
        res = lake.catalog.query(sql)
        queries.append({"title": title, "sql": sql, "columns": res.columns, "rows": res.rows})
    return {
        "lake": str(lake.root),
        "seconds": round(elapsed, 1),
        "ingested": ingested,
        "workers": workers,
        "queries": queries,
    }


def print_summary(summary: dict, fmt: Format) -> None:
    if fmt == Format.json:
        import json

        print(json.dumps(summary, default=str))
        return
    console.rule("[bold]visionlake demo")
    rows_out(
        ["camera", "frames", "bytes", "fps", "errors"],
        [
            [i["camera"], i["frames"], human_bytes(i["bytes"]), i["fps"], len(i["errors"])]
            for i in summary["ingested"]
        ],
        title="Frames ingested",
    )
    rows_out(
        ["worker", "model", "processed", "detections", "dead-lettered", "frames/s"],
        [
            [
                w["worker"],
                f"{w['model']} {w['model_version']}",
                w["processed"],
                w["detections"],
                w["dead_lettered"],
                w["fps"],
            ]
            for w in summary["workers"]
        ],
        title="Frames processed per worker",
    )
    for q in summary["queries"]:
        console.print(f'\n[bold]{q["title"]}[/]\n[dim]visionlake sql "{q["sql"]}"[/]')
        rows_out(q["columns"], q["rows"])
    record_out({"lake": summary["lake"], "time taken": f"{summary['seconds']} s"}, title="Done")
    faces = summary["queries"][1]["rows"]
    show = (
        f"visionlake show {faces[0][0][:12]} -o face.jpg" if faces else "visionlake show FRAME_ID -o face.jpg"
    )
    console.print(
        "Next: [bold]visionlake serve[/] and open http://127.0.0.1:8000/ (the dashboard), "
        "[bold]visionlake report counts --label face[/], [bold]visionlake search --label face --since 1h[/], "
        f"[bold]{show}[/] (a frame id or its first characters)"
    )
