"""The `visionlake` command: a thin layer over the Python API, one function per command.

Exit codes: 0 success, 1 failure, 2 bad input (missing file, bad option, bad SQL), 3 a backend or
stream could not be reached, 130 interrupted.
"""

import json
import logging
import signal
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.logging import RichHandler
from rich.text import Text

from . import __version__
from .cli_analytics import register as register_analytics
from .cli_batch import register as register_batch_commands
from .cli_common import (
    FormatOpt,
    Setting,
    State,
    camera_option,
    command_group,
    count_option,
    duration_option,
    existing_lake,
    number_option,
    seconds_option,
    size_option,
    time_option,
)
from .cli_common import progress_bar as _progress
from .cli_faces import register as register_faces
from .cli_web import register as register_web
from .errors import InputError, SourceUnreachable, UnknownFrame, VisionlakeError
from .lake import FRAMES_TOPIC
from .limits import DEFAULT_MAX_PIXELS, DEFAULT_QUERY_MAX_BYTES, MAX_PARTITIONS
from .log.base import DEFAULT_LEASE_S, DEFAULT_MAX_DELIVERIES
from .output import Format, console, err_console, esc, human_bytes, plural, record_out, rows_out
from .workers.batching import DEFAULT_BATCH_SECONDS, DEFAULT_BATCH_SIZE

app = command_group(
    "A data platform for computer vision: frame log, detector workers, image archive, SQL catalog.",
    name="visionlake",
    add_completion=False,
    pretty_exceptions_enable=False,
)
log_app = command_group("Inspect and use the frame log, in the spirit of Kafka's console tools.")
ingest_app = command_group("Turn videos, cameras and image folders into frame records.")
app.add_typer(log_app, name="log")
app.add_typer(ingest_app, name="ingest")


def _state(ctx: typer.Context) -> State:
    return ctx.find_root().obj


def _print_version(value: bool) -> None:
    """Eager, so that `visionlake --version` needs no command."""
    if value:
        print(f"visionlake {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    ctx: typer.Context,
    lake: Annotated[
        str | None,
        typer.Option("--lake", envvar="VISIONLAKE_HOME", help="Lake directory [default: ./visionlake-data]"),
    ] = None,
    log: Annotated[
        str | None, typer.Option("--log", help="Frame log URL [default: the lake's embedded log]")
    ] = None,
    catalog: Annotated[
        str | None, typer.Option("--catalog", help="Catalog URL [default: LAKE/catalog.db]")
    ] = None,
    archive: Annotated[
        str | None, typer.Option("--archive", help="Archive URL [default: LAKE/archive]")
    ] = None,
    verbose: Annotated[
        int, typer.Option("--verbose", "-v", count=True, help="-v: what happens; -vv: debug")
    ] = 0,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit"),
    ] = False,
) -> None:
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    if err_console.is_terminal:
        logging.basicConfig(
            level=level, format="%(message)s", handlers=[RichHandler(console=err_console, show_path=False)]
        )
    else:  # a log file, a pipe, a parent process: one plain line per record, never wrapped
        logging.basicConfig(
            level=level, format="%(asctime)s %(levelname)s %(message)s", datefmt="%Y-%m-%d %H:%M:%S"
        )
    ctx.obj = State(lake, log, catalog, archive)


# --- ingest ------------------------------------------------------------------------------------


MetricsPortOpt = Annotated[
    int | None,
    count_option(
        "Serve Prometheus metrics on this port (/metrics) while ingesting", "--metrics-port", max=65535
    ),
]
MetricsHostOpt = Annotated[str, typer.Option("--metrics-host", help="Address --metrics-port listens on")]


def _run_ingest(
    ctx: typer.Context,
    source,
    camera: str,
    total: int | None,
    quality: int,
    motion: bool,
    fmt: Format,
    metrics_port: int | None = None,
    metrics_host: str = "127.0.0.1",
    spread: int = 1,
) -> None:
    from .ingest.motion import MotionGate
    from .ingest.publish import ingest

    metrics = None
    if metrics_port is not None:  # before anything else: a port in use fails at once
        from .metrics import Metrics

        m = Metrics()
        m.serve(metrics_port, metrics_host)
        metrics = m.ingest(camera)
    lake = _state(ctx).lake
    gate = MotionGate() if motion else None
    stop = {"flag": False}

    def on_signal(*_a: object) -> None:
        stop["flag"] = True

    old = signal.signal(signal.SIGTERM, on_signal)
    with _progress() as prog:
        task = prog.add_task(f"ingest {camera}", total=total, info="")

        def on_frame(s) -> None:
            prog.update(
                task, advance=1, info=f"{s.frames} sent, {s.skipped_motion} still, {len(s.errors)} bad"
            )

        try:
            stats = ingest(
                lake,
                source,
                camera,
                quality=quality,
                motion=gate,
                on_frame=on_frame,
                should_stop=lambda: stop["flag"],
                metrics=metrics,
                spread=spread,
            )
        finally:
            signal.signal(signal.SIGTERM, old)
    d = stats.as_dict()
    if fmt == Format.table:  # people get sizes in units and each bad file once, below the table
        d["bytes"] = human_bytes(stats.bytes)
        d["errors"] = len(stats.errors)
    record_out(d, fmt, title=f"Ingested camera {camera}")
    for src, reason in stats.errors if fmt == Format.table else []:
        err_console.print(f"[yellow]skipped[/] {esc(src)}: {esc(reason)}", soft_wrap=True)


def _check_quality(q: int) -> int:
    if not 1 <= q <= 100:
        raise InputError(f"--quality must be 1-100, got {q}")
    return q


SpreadOpt = Annotated[
    int,
    count_option(
        "Send the camera's frames round-robin to this many partitions, so that as many workers share "
        "it; they are then processed out of order, and not tracked",
        "--spread",
        max=10_000,
    ),
]


@ingest_app.command("video")
def ingest_video(
    ctx: typer.Context,
    path: Annotated[Path, typer.Argument(help="Video file (any format OpenCV's FFmpeg reads)")],
    camera: Annotated[str, camera_option("Camera id the frames are keyed by", "--camera")],
    fps: Annotated[
        float | None, number_option("Sample to this many frames per second of video", max=1000)
    ] = None,
    resize: Annotated[str | None, typer.Option(help="Resize frames to WxH, e.g. 640x480")] = None,
    quality: Annotated[int, count_option("JPEG quality 1-100", max=100)] = 90,
    motion: Annotated[bool, typer.Option("--motion", help="Publish only frames with motion")] = False,
    start: Annotated[
        datetime | None,
        time_option(
            "When the video's first frame was filmed: 'file' (the file's modification time), 'now' "
            "(as if filmed live), an ISO 8601 time or an age like 2h [default: file]",
            "--start",
            none_word="file",
            show_default=False,
        ),
    ] = None,
    metrics_port: MetricsPortOpt = None,
    metrics_host: MetricsHostOpt = "127.0.0.1",
    spread: SpreadOpt = 1,
    fmt: FormatOpt = Format.table,
) -> None:
    """Publish the frames of a video file.

    A frame's capture time is --start plus its position in the video. Frame ids come from the
    camera, the frame's index and that time, so ingesting a file again with the same --start
    (the default 'file' included) gives the same frames, and the catalog counts them once.
    """
    from .ingest.sources import VideoFileSource, parse_size

    src = VideoFileSource(path, fps=fps, resize=parse_size(resize), start_time=start)
    _run_ingest(
        ctx,
        src,
        camera,
        src.expected_frames,
        _check_quality(quality),
        motion,
        fmt,
        metrics_port,
        metrics_host,
        spread,
    )


@ingest_app.command("camera")
def ingest_camera(
    ctx: typer.Context,
    source: Annotated[str, typer.Argument(help="Device index (0) or rtsp:// / http:// stream URL")],
    camera: Annotated[str, camera_option("Camera id the frames are keyed by", "--camera")],
    fps: Annotated[float | None, number_option("Keep at most this many frames per second", max=1000)] = None,
    resize: Annotated[str | None, typer.Option(help="Resize frames to WxH")] = None,
    quality: Annotated[int, count_option("JPEG quality 1-100", max=100)] = 90,
    motion: Annotated[bool, typer.Option("--motion", help="Publish only frames with motion")] = False,
    max_frames: Annotated[int | None, count_option("Stop after this many frames")] = None,
    open_attempts: Annotated[int, count_option("Tries to open the stream before giving up", max=1000)] = 3,
    max_reconnects: Annotated[
        int | None, count_option("Give up after this many failed reconnects in a row", min=0)
    ] = None,
    metrics_port: MetricsPortOpt = None,
    metrics_host: MetricsHostOpt = "127.0.0.1",
    spread: SpreadOpt = 1,
    fmt: FormatOpt = Format.table,
) -> None:
    """Publish a live camera or network stream; reconnects with backoff when it drops or stalls."""
    from .ingest.sources import CameraSource, parse_size

    src = CameraSource(
        source,
        fps=fps,
        resize=parse_size(resize),
        open_attempts=open_attempts,
        max_reconnects=max_reconnects,
        max_frames=max_frames,
    )
    _run_ingest(
        ctx, src, camera, max_frames, _check_quality(quality), motion, fmt, metrics_port, metrics_host, spread
    )
    if src.stopped_reason:  # gave up after failed reconnects: what was sent is kept, but say so
        raise SourceUnreachable(f"camera {camera} ({src.name}): {src.stopped_reason}")


@ingest_app.command("images")
def ingest_images(
    ctx: typer.Context,
    directory: Annotated[Path, typer.Argument(help="Folder of images, walked recursively")],
    camera: Annotated[str | None, camera_option("Camera id [default: the folder's name]", "--camera")] = None,
    resize: Annotated[str | None, typer.Option(help="Resize images to WxH")] = None,
    quality: Annotated[
        int, count_option("JPEG quality 1-100 for images that need re-encoding", max=100)
    ] = 90,
    metrics_port: MetricsPortOpt = None,
    metrics_host: MetricsHostOpt = "127.0.0.1",
    fmt: FormatOpt = Format.table,
) -> None:
    """Publish every image of a folder; unreadable files are listed with their reason."""
    from .ingest.sources import ImageFolderSource, parse_size

    src = ImageFolderSource(directory, resize=parse_size(resize))
    cam = camera or directory.resolve().name
    _run_ingest(ctx, src, cam, src.count(), _check_quality(quality), False, fmt, metrics_port, metrics_host)


# --- workers -----------------------------------------------------------------------------------


def _detector(name: str, params: list[str] | None):
    from .detectors import load_detector
    from .detectors.base import parse_params

    return load_detector(name, parse_params(params or []))


def _run_worker(worker, fmt: Format, label: str) -> None:
    stats = _drive_worker(worker, label)
    record_out(stats.as_dict(), fmt, title=f"Worker {stats.worker}")


def _drive_worker(worker, label: str):
    """Run `worker` with a progress bar and signal handling; the caller prints its stats."""
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, worker.stop)
    with _progress() as prog:
        task = prog.add_task(label, total=worker.max_frames, info="")

        def on_batch(st) -> None:
            prog.update(
                task,
                completed=st.processed + st.dead_lettered,
                info=f"{st.detections} detections, {st.dead_lettered} dead-lettered",
            )

        worker.on_batch = on_batch
        return worker.run()


TrackOpt = Annotated[
    bool,
    typer.Option(
        "--track",
        help="Follow objects across each camera's frames: every box gets a track id and the catalog's "
        "tracks table a row per object (needs the track extra)",
    ),
]
TrackerOpt = Annotated[str, typer.Option("--tracker", help="With --track: bytetrack or sort")]
TrackLostOpt = Annotated[
    float,
    seconds_option(
        "With --track: seconds of capture time a track lives on without a matching box", "--track-lost"
    ),
]


def _tracking(track: bool, tracker: str, lost: float):
    """The tracker settings of --track (None without it); refuses a missing `trackers` package now
    rather than at the first frame."""
    if not track:
        return None
    from .tracking import TrackerSettings, require_trackers

    settings = TrackerSettings(kind=tracker, lost_seconds=lost)
    require_trackers()
    return settings


@app.command()
def worker(
    ctx: typer.Context,
    detector: Annotated[
        str, typer.Option("--detector", "-d", help="Detector plugin name (see `visionlake detectors`)")
    ],
    param: Annotated[
        list[str] | None, typer.Option("--param", "-p", help="Detector parameter key=value")
    ] = None,
    group: Annotated[
        str | None,
        typer.Option(
            help="Consumer group [default: DETECTOR.VERSION, or DETECTOR.VERSION.shared with --shared]"
        ),
    ] = None,
    topic: Annotated[str, typer.Option(help="Frames topic")] = FRAMES_TOPIC,
    start: Annotated[
        str, typer.Option("--from", help="Where a new group starts: earliest or latest")
    ] = "earliest",
    until_idle: Annotated[
        bool, typer.Option("--until-idle", help="Exit when no frame arrived for --idle-timeout s")
    ] = False,
    idle_timeout: Annotated[float, seconds_option("Seconds without frames that count as idle")] = 3.0,
    max_frames: Annotated[int | None, count_option("Exit after this many frames")] = None,
    batch_size: Annotated[int, count_option("Records per poll at most", max=1000)] = DEFAULT_BATCH_SIZE,
    batch_seconds: Annotated[
        float,
        seconds_option(
            "Work per batch aimed at: a batch's results reach the catalog together, and fast detectors get"
            " bigger batches (up to --batch-size) than slow ones"
        ),
    ] = DEFAULT_BATCH_SECONDS,
    processes: Annotated[int, count_option("Run this many worker processes in the group", max=256)] = 1,
    threads: Annotated[
        int | None,
        count_option(
            "Detector threads per worker (OpenCV's and a plugin's OpenMP) [default: the libraries'; 1 with"
            " --processes]",
            max=256,
        ),
    ] = None,
    max_pixels: Annotated[
        int,
        typer.Option(
            min=1,
            max=100_000_000,
            help="Largest frame decoded, in pixels; bigger ones go to the dead letters",
        ),
    ] = DEFAULT_MAX_PIXELS,
    metrics_port: Annotated[
        int | None,
        count_option(
            "Serve Prometheus metrics on this port (/metrics); with --processes N, child i serves on "
            "PORT+i (PORT to PORT+N-1)",
            "--metrics-port",
            max=65535,
        ),
    ] = None,
    metrics_host: MetricsHostOpt = "127.0.0.1",
    track: TrackOpt = False,
    tracker: TrackerOpt = "bytetrack",
    track_lost: TrackLostOpt = 2.0,
    autoscale: Annotated[
        str | None,
        typer.Option(
            "--autoscale",
            metavar="MIN:MAX",
            help="Run MIN to MAX worker processes, added while the group's lag is not falling and "
            "removed after it stayed at 0 for --cooldown seconds",
        ),
    ] = None,
    cooldown: Annotated[
        float, seconds_option("With --autoscale: seconds of no lag before a worker is removed", "--cooldown")
    ] = 30.0,
    shared: Annotated[
        bool,
        typer.Option(
            "--shared",
            help="Share every partition with the group's other workers, record by record (a share "
            "group: one busy camera on many workers; frames are finished in any order, so no --track)",
        ),
    ] = False,
    lease: Annotated[
        float,
        seconds_option("With --shared: seconds a worker holds a frame before another may take it", "--lease"),
    ] = DEFAULT_LEASE_S,
    max_deliveries: Annotated[
        int,
        count_option(
            "With --shared: deliveries of a frame that no worker finished before it is dead-lettered",
            "--max-deliveries",
            max=1000,
        ),
    ] = DEFAULT_MAX_DELIVERIES,
    fmt: FormatOpt = Format.table,
) -> None:
    """Run a detector over the frames topic as a member of a consumer group (or, --shared, a share group)."""
    from .workers.worker import SharedReading, Worker, check_reading

    if start not in ("earliest", "latest"):
        raise InputError(f"--from must be earliest or latest, got {start!r}")
    tracking = _tracking(track, tracker, track_lost)
    reading = SharedReading(lease, max_deliveries) if shared else None
    check_reading(reading, tracking)
    det = _detector(detector, param)
    if processes > 1 or autoscale:
        from .workers import scaling

        if processes > 1 and autoscale:
            raise InputError("--processes and --autoscale both set the number of workers: give one")
        args = [
            "--detector",
            detector,
            "--topic",
            topic,
            "--from",
            start,
            "--idle-timeout",
            str(idle_timeout),
            "--batch-size",
            str(batch_size),
            "--batch-seconds",
            str(batch_seconds),
            "--threads",
            str(threads or 1),
            "--max-pixels",
            str(max_pixels),
        ]
        args += [x for p in param or [] for x in ("--param", p)]
        args += ["--group", group] if group else []
        args += ["--track", "--tracker", tracker, "--track-lost", str(track_lost)] if track else []
        args += ["--shared", "--lease", str(lease), "--max-deliveries", str(max_deliveries)] if shared else []
        if autoscale:  # the supervisor decides when workers stop: no --until-idle or --max-frames
            if max_frames is not None:
                raise InputError("--max-frames cannot be combined with --autoscale")
            _autoscale(
                ctx, det, autoscale, cooldown, args, group, topic, until_idle, idle_timeout, shared, fmt
            )
            return
        args += ["--until-idle"] if until_idle else []
        args += ["--max-frames", str(max_frames)] if max_frames is not None else []
        if metrics_port is not None and metrics_port + processes - 1 > 65535:
            raise InputError(
                f"--metrics-port {metrics_port} with --processes {processes} goes past port 65535"
            )

        def own(i: int) -> list[str]:  # each child serves its metrics on a port of its own
            return (
                []
                if metrics_port is None
                else ["--metrics-port", str(metrics_port + i), "--metrics-host", metrics_host]
            )

        results = scaling.collect(scaling.spawn(_state(ctx).global_argv(), args, processes, own))
        keys = ["worker", "processed", "reused", "dead_lettered", "detections", "fps", "seconds"]
        rows_out(keys, [[r[k] for k in keys] for r in results], fmt, title=f"{processes} workers")
        return
    metrics = None
    if metrics_port is not None:  # before the lake opens: a port in use fails at once
        from .metrics import Metrics

        metrics = Metrics()
        metrics.serve(metrics_port, metrics_host)
    w = Worker(
        _state(ctx).lake,
        det,
        group=group,
        topic=topic,
        offset_reset=start,
        batch_size=batch_size,
        batch_seconds=batch_seconds,
        until_idle=until_idle,
        idle_timeout=idle_timeout,
        max_frames=max_frames,
        threads=threads,
        max_pixels=max_pixels,
        metrics=metrics,
        tracking=tracking,
        shared=reading,
    )
    _run_worker(w, fmt, f"{det.name} {det.model_version}")


def _autoscale(ctx, det, spec, cooldown, args, group, topic, until_idle, idle_timeout, shared, fmt) -> None:  # noqa: ANN001, PLR0913
    """`worker --autoscale MIN:MAX`: supervise worker processes on the group's lag."""
    from .workers import scaling
    from .workers.autoscale import Policy, Supervisor, group_lag
    from .workers.worker import default_group

    interval = min(2.0, cooldown / 3)
    policy = Policy.parse(spec, interval=interval, settle=min(10.0, cooldown / 2), cooldown=cooldown)
    lake = _state(ctx).lake
    group = group or default_group(det.name, det.model_version, shared)
    lake.log.ensure_topic(topic)
    children: list = []

    def start(_i: int):  # noqa: ANN202 - a Popen
        child = scaling.start_worker(_state(ctx).global_argv(), args, stderr=None)  # logs go to ours
        children.append((child, scaling.PipeReader(child.proc.stdout)))
        return child.proc

    sup = Supervisor(policy, start, lambda: group_lag(lake.log, group, topic, shared))
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, sup.stop)
    sup.run(until_idle=idle_timeout if until_idle else None)
    summaries = []
    for child, out in children:
        out.join()
        lines = out.text().strip().splitlines()
        summaries.append(
            json.loads(lines[-1])
            if lines
            else {"worker": f"pid {child.proc.pid}", "exit": child.proc.returncode}
        )
    keys = ["worker", "processed", "reused", "dead_lettered", "detections", "fps", "seconds"]
    if fmt == Format.json:
        print(json.dumps({"workers": summaries, "decisions": sup.decisions}))
        return
    rows_out(keys, [[r.get(k) for k in keys] for r in summaries], fmt, title=f"{len(summaries)} workers")
    if fmt == Format.table:
        rows_out(
            ["action", "workers", "lag", "reason"],
            [[d["action"], d["workers"], d["lag"], d["reason"]] for d in sup.decisions],
            fmt,
            title="Scaling decisions",
        )


@app.command()
def replay(
    ctx: typer.Context,
    detector: Annotated[str, typer.Option("--detector", "-d", help="Detector plugin name")],
    model_version: Annotated[
        str | None,
        typer.Option("--model-version", help="Version label of the new results [default: the plugin's]"),
    ] = None,
    param: Annotated[
        list[str] | None, typer.Option("--param", "-p", help="Detector parameter key=value")
    ] = None,
    start: Annotated[
        str, typer.Option("--from", help="earliest, or a time (ISO 8601 or an age like 2h)")
    ] = "earliest",
    end: Annotated[str | None, typer.Option("--to", help="Stop at frames captured after this time")] = None,
    topic: Annotated[str, typer.Option(help="Frames topic")] = FRAMES_TOPIC,
    restart: Annotated[
        bool, typer.Option("--restart", help="Start over even if this replay ran before")
    ] = False,
    source: Annotated[
        str,
        typer.Option(
            help="Where frames come from: log, archive (catalog + archive: every frame ever kept), or auto "
            "(the archive once retention has dropped records from the log)"
        ),
    ] = "auto",
    track: TrackOpt = False,
    tracker: TrackerOpt = "bytetrack",
    track_lost: TrackLostOpt = 2.0,
    fmt: FormatOpt = Format.table,
) -> None:
    """Re-run a model version over the history; results sit beside older versions'."""
    from .replay import prepare_replay

    tracking = _tracking(track, tracker, track_lost)
    lake = _state(ctx).lake
    w = prepare_replay(
        lake,
        _detector(detector, param),
        version=model_version,
        start=start,
        end=end,
        topic=topic,
        restart=restart,
        source=source,
        tracking=tracking,
    )
    stats = _drive_worker(w, f"replay {w.model} {w.model_version}")
    from .replay import compare_versions

    cols, rows = compare_versions(lake, w.model)
    title = f"{w.model}: versions side by side"
    if fmt == Format.json:  # one document, so that scripts can parse stdout
        versions = [dict(zip(cols, r, strict=True)) for r in rows]
        print(json.dumps({"replay": stats.as_dict(), "versions": versions}, default=_json_number))
    elif fmt == Format.csv:  # one header and its rows; the run's summary goes to stderr
        err_console.print(
            f"replay {esc(w.model)} {esc(w.model_version)} from the {stats.source}: {stats.processed} "
            f"frames, {stats.detections} detections"
        )
        rows_out(cols, rows, fmt)
    else:
        record_out(stats.as_dict(), fmt, title=f"Worker {stats.worker}")
        rows_out(cols, rows, fmt, title=title)


def _json_number(v):
    """Numeric columns come back as Decimal from PostgreSQL; JSON wants them as numbers."""
    from decimal import Decimal

    return float(v) if isinstance(v, Decimal) else str(v)


@app.command()
def detectors(fmt: FormatOpt = Format.table) -> None:
    """List installed detector plugins."""
    from .detectors import list_detectors

    rows = [
        [d.name, d.version, json.dumps(d.defaults), "yes" if d.available else "no", d.problem or ""]
        for d in list_detectors()
    ]
    rows_out(["name", "version", "parameters", "available", "note"], rows, fmt, title="Detectors")


# --- catalog -----------------------------------------------------------------------------------


@app.command()
def sql(
    ctx: typer.Context,
    query: Annotated[str, typer.Argument(help="One read-only SQL statement")],
    max_rows: Annotated[int, count_option("Row cap")] = 1000,
    timeout: Annotated[float, seconds_option("Query time limit in seconds")] = 10.0,
    max_bytes: Annotated[
        int,
        size_option(
            "Result size cap, e.g. 16MB: a bigger result is an error, not cut [default: 64MiB]",
            show_default=False,
        ),
    ] = DEFAULT_QUERY_MAX_BYTES,
    fmt: FormatOpt = Format.table,
) -> None:
    """Query the catalog with SQL (read-only; tables: frames, models, results, detections)."""
    res = existing_lake(ctx).catalog.query(query, max_rows=max_rows, timeout=timeout, max_bytes=max_bytes)
    rows_out(res.columns, res.rows, fmt)
    if res.truncated:
        err_console.print(f"[yellow]stopped at the row cap of {max_rows} rows; use --max-rows to see more[/]")


@app.command()
def search(
    ctx: typer.Context,
    camera: Annotated[str | None, typer.Option(help="Only this camera")] = None,
    label: Annotated[str | None, typer.Option(help="Frames with detections of this label")] = None,
    min_count: Annotated[int, count_option("At least this many matching detections")] = 1,
    since: Annotated[
        datetime | None, time_option("Captured at or after (ISO 8601 or an age like 2h)")
    ] = None,
    until: Annotated[datetime | None, time_option("Captured before")] = None,
    model: Annotated[str | None, typer.Option(help="Results of this model")] = None,
    model_version: Annotated[str | None, typer.Option("--model-version", help="...and this version")] = None,
    limit: Annotated[int, count_option("Row cap")] = 100,
    fmt: FormatOpt = Format.table,
) -> None:
    """Find frames by camera, time and detections, with their archive paths."""
    from .catalog import SearchFilter

    flt = SearchFilter(
        camera=camera,
        label=label,
        min_count=min_count,
        since=since,
        until=until,
        model=model,
        model_version=model_version,
        limit=limit,
    )
    res = existing_lake(ctx).catalog.search(flt)
    rows_out(res.columns, res.rows, fmt, title=f"{len(res.rows)} frames")
    if res.truncated:
        err_console.print(f"[yellow]more frames match; showing the first {limit} (--limit)[/]")


@app.command()
def show(
    ctx: typer.Context,
    frame_id: Annotated[str, typer.Argument(help="Frame id, or its first characters (4 or more)")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Where to write the annotated JPEG")],
    model: Annotated[str | None, typer.Option(help="Only boxes of this model")] = None,
    model_version: Annotated[
        str | None,
        typer.Option("--model-version", help="Boxes of this version [default: each model's newest]"),
    ] = None,
) -> None:
    """Write a frame with its detection boxes drawn (one version per model)."""
    import cv2

    from .frames import decode_image
    from .render import draw_detections

    if not cv2.haveImageWriter(str(out)):  # imwrite raises on an unknown extension
        raise InputError(f"cannot write --out {str(out)!r}: unknown image extension; use .jpg or .png")
    lake = existing_lake(ctx)
    frame_id = lake.catalog.resolve_frame_id(frame_id)
    row = lake.catalog.frame(frame_id)
    if row is None:  # removed since it was resolved
        raise UnknownFrame(f"no frame {frame_id!r} in the catalog {lake.catalog.url}")
    image = decode_image(lake.archive.get(row["uri"]))
    dets = lake.catalog.detections_for(frame_id, model, model_version)
    try:
        written = cv2.imwrite(str(out), draw_detections(image, dets))
    except cv2.error as e:
        raise InputError(f"cannot write --out {str(out)!r}: {e.err or e}") from None
    if not written:
        raise InputError(f"cannot write --out {str(out)!r}: unknown image extension or unwritable folder")
    versions = sorted({f"{d['model']} {d['model_version']}" for d in dets})
    drawn = f" of {', '.join(versions)}" if versions else ""
    err_console.print(f"wrote {esc(out)}: frame {frame_id} with {len(dets)} boxes{esc(drawn)}")


@app.command()
def status(ctx: typer.Context, fmt: FormatOpt = Format.table) -> None:
    """Cameras, topics, consumer groups with lag, and frames processed per model version."""
    from .status import lake_status

    st = lake_status(existing_lake(ctx))
    if fmt == Format.json:
        print(json.dumps(st, default=str))
        return
    console.print(
        f"lake {esc(st['lake'])}  log {esc(st['log'])}  catalog {esc(st['catalog'])}  archive {esc(st['archive'])}"
    )
    empty = {
        "cameras": "none in the catalog yet (a worker adds them as it processes frames)",
        "topics": "none yet (ingest creates the frames topic)",
        "groups": "none yet (a worker joins one)",
        "models": "none yet (a worker records its model version)",
    }
    for key in ("cameras", "topics", "groups", "models"):
        items = st[key]
        if not items:
            console.print(f"[bold]{key.capitalize()}[/]: {empty[key]}")
            continue
        rows = [
            [human_bytes(v) if k == "bytes" else v for k, v in i.items()]  # people read units
            for i in items
        ]
        rows_out(list(items[0]), rows, fmt, title=key.capitalize())


# --- log ---------------------------------------------------------------------------------------


@log_app.command("topics")
def log_topics(ctx: typer.Context, fmt: FormatOpt = Format.table) -> None:
    """Topics with partitions, record counts, bytes and settings."""
    topics = existing_lake(ctx).log.topics()
    columns = ["topic", "partition", "start", "end", "records", "bytes"]
    settings = ["retention_ms", "retention_bytes", "max_record_bytes"]
    if fmt != Format.table:  # scripts: one row per partition, settings repeated
        rows_out(
            columns + settings,
            [
                [t.name, p.partition, p.start_offset, p.end_offset, p.records, p.bytes]
                + [getattr(t.config, k) for k in settings]
                for t in topics
                for p in t.partitions
            ],
            fmt,
        )
        return
    if not topics:
        console.print("no topics yet (ingest creates the frames topic)")
    for t in topics:  # people: a line of settings per topic, then its partitions (fits 80 columns)
        c = t.config
        retention = [
            _duration_text(c.retention_ms) if c.retention_ms is not None else "",
            human_bytes(c.retention_bytes) + " per partition" if c.retention_bytes is not None else "",
        ]
        kept = " and ".join(r for r in retention if r) or "forever"
        console.print(
            Text(
                f"{t.name}: {plural(len(t.partitions), 'partition')}, {plural(t.records, 'record')}, "
                f"{human_bytes(t.bytes)}; "
                f"keeps {kept}; records up to {human_bytes(c.max_record_bytes)}",
                style="bold",
            )
        )
        rows_out(
            ["partition", "start", "end", "records", "size"],
            [
                [p.partition, p.start_offset, p.end_offset, p.records, human_bytes(p.bytes)]
                for p in t.partitions
            ],
        )


def _duration_text(ms: int) -> str:
    """A retention in the largest whole unit: 7d, 36h, 90s."""
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("min", 60_000), ("s", 1000)):
        if ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms} ms"


@log_app.command("groups")
def log_groups(ctx: typer.Context, fmt: FormatOpt = Format.table) -> None:
    """Consumer and share groups: members, committed offsets and lag per partition.

    A share group (`worker --shared`) has no owner per partition: its members share each one, and its
    committed offset is the point before which every record is acknowledged.
    """
    rows = []
    for g in existing_lake(ctx).log.groups():
        shared = f"shared by {len(g.members)}" if g.kind == "share" else ""
        for p in g.partitions:
            rows.append([g.group, p.topic, p.partition, p.committed, p.end_offset, p.lag, p.owner or shared])
        if not g.partitions:
            rows.append([g.group, "", "", "", "", "", ""])
    rows_out(["group", "topic", "partition", "committed", "end", "lag", "member"], rows, fmt, title="Groups")


@log_app.command("create")
def log_create(
    ctx: typer.Context,
    topic: Annotated[str, typer.Argument(help="Topic name")],
    partitions: Annotated[
        int | None,
        count_option(
            "Number of partitions (4 for a new topic); an existing topic's can only grow", max=MAX_PARTITIONS
        ),
    ] = None,
    retention: Annotated[
        Setting | None,
        duration_option("Keep records this long, e.g. 7d ('forever': no limit, the default)", forever=True),
    ] = None,
    retention_bytes: Annotated[
        Setting | None,
        size_option("Keep at most this much per partition, e.g. 10GB ('forever': no limit)", forever=True),
    ] = None,
    max_record_bytes: Annotated[
        int | None, size_option("Largest record accepted (1MiB for a new topic)")
    ] = None,
) -> None:
    """Create a topic; on an existing one, change only the settings given."""
    from .errors import UnknownTopic
    from .log import TopicConfig

    given: dict[str, int | None] = {}
    if partitions is not None:
        given["partitions"] = partitions
    if retention is not None:
        given["retention_ms"] = retention.value
    if retention_bytes is not None:
        given["retention_bytes"] = retention_bytes.value
    if max_record_bytes is not None:
        given["max_record_bytes"] = max_record_bytes
    lg = _state(ctx).lake.log
    if given:  # an existing topic keeps every setting not given
        try:
            changes = lg.alter_topic(topic, **given)  # type: ignore[arg-type]
        except UnknownTopic:
            pass
        else:
            if not changes:
                err_console.print(f"topic {topic} unchanged: it already has those settings")
            else:
                shown = ", ".join(
                    f"{k} {'forever' if a is None else a} -> {'forever' if b is None else b}"
                    for k, (a, b) in changes.items()
                )
                err_console.print(f"updated topic {topic}: {shown}")
            return
    cfg = TopicConfig(**given)  # type: ignore[arg-type]
    lg.create_topic(topic, cfg, exist_ok=False)  # without options, an existing topic is an error
    err_console.print(f"created topic {topic} with {cfg.partitions} partitions")


@log_app.command("retention")
def log_retention(ctx: typer.Context) -> None:
    """Apply every topic's retention now (it also runs periodically while producing)."""
    n = _state(ctx).lake.log.enforce_retention()
    err_console.print(f"removed {n} records past retention")


@log_app.command("produce")
def log_produce(
    ctx: typer.Context,
    topic: Annotated[str, typer.Argument(help="Topic")],
    files: Annotated[list[Path], typer.Argument(help="Files; each becomes one record")],
    key: Annotated[str | None, typer.Option(help="Record key (the camera id for frames)")] = None,
    header: Annotated[list[str] | None, typer.Option("--header", "-H", help="Header name=value")] = None,
    fmt: FormatOpt = Format.table,
) -> None:
    """Publish files as raw records."""
    headers = []
    for h in header or []:
        name, sep, value = h.partition("=")
        if not sep or not name:
            raise InputError(f"invalid --header {h!r}: expected name=value")
        headers.append((name, value.encode()))
    payloads = []
    for f in files:  # read everything first: a missing file means nothing is sent
        try:
            payloads.append(f.read_bytes())
        except OSError as e:
            raise InputError(f"cannot read {f}: {e.strerror}") from None
    with _state(ctx).lake.log.producer() as prod:
        for data in payloads:
            prod.send(topic, data, key=key.encode() if key else None, headers=headers)
        meta = prod.flush()
    rows_out(
        ["file", "topic", "partition", "offset"],
        [[str(f), m.topic, m.partition, m.offset] for f, m in zip(files, meta, strict=True)],
        fmt,
    )


@log_app.command("consume")
def log_consume(
    ctx: typer.Context,
    topic: Annotated[str, typer.Argument(help="Topic")],
    group: Annotated[str | None, typer.Option(help="Consume as this group and commit")] = None,
    start: Annotated[
        str, typer.Option("--from", help="earliest or latest (for a new group or no group)")
    ] = "earliest",
    limit: Annotated[int | None, count_option("Stop after this many records")] = None,
    idle_timeout: Annotated[float, seconds_option("Stop after this many seconds without records")] = 2.0,
    out: Annotated[
        Path | None, typer.Option("--out", help="Write each value to a file in this folder")
    ] = None,
    fmt: FormatOpt = Format.table,
) -> None:
    """Read records: one line each (partition, offset, time, key, size, headers)."""
    from .frames import CONTENT_TYPE

    if start not in ("earliest", "latest"):
        raise InputError(f"--from must be earliest or latest, got {start!r}")
    lg = existing_lake(ctx).log
    lg.topic_config(topic)  # a clear error for an unknown topic
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    rows = []
    with lg.consumer([topic], group=group, offset_reset=start) as cons:
        idle_since = time.monotonic()
        while limit is None or len(rows) < limit:
            recs = cons.poll(min(100, (limit or 100) - len(rows)) if limit else 100, timeout=0.2)
            if not recs:
                if time.monotonic() - idle_since > idle_timeout:
                    break
                continue
            idle_since = time.monotonic()
            for r in recs:
                path = ""
                if out is not None:
                    ext = (
                        ".jpg"
                        if r.header("content-type") == CONTENT_TYPE or r.value[:2] == b"\xff\xd8"
                        else (".json" if r.value[:1] in (b"{", b"[") else ".bin")
                    )
                    p = out / f"{r.topic}-{r.partition}-{r.offset}{ext}"
                    p.write_bytes(r.value)
                    path = str(p)
                headers = {k: v.decode(errors="replace") for k, v in r.headers}
                rows.append(
                    [
                        r.partition,
                        r.offset,
                        r.timestamp_ms,
                        (r.key or b"").decode(errors="replace"),
                        len(r.value),
                        headers if fmt == Format.json else json.dumps(headers),
                        path,
                    ]
                )
            if group:
                cons.commit()
    rows_out(
        ["partition", "offset", "timestamp_ms", "key", "bytes", "headers", "file"],
        rows,
        fmt,
        title=f"{len(rows)} records from {topic}",
    )


# --- demo --------------------------------------------------------------------------------------


@app.command()
def demo(
    ctx: typer.Context,
    fps: Annotated[float, number_option("Frames per second sampled from each video", max=1000)] = 2.0,
    resize: Annotated[str | None, typer.Option(help="Frame size WxH [default: native]")] = None,
    fmt: FormatOpt = Format.table,
) -> None:
    """End to end on sample videos: ingest two cameras, run face and person workers, query the catalog."""
    from .demo import print_summary, run_demo

    st = _state(ctx)
    summary = run_demo(st.lake, st.global_argv(), fps=fps, resize=resize, progress=_progress())
    print_summary(summary, fmt)


register_batch_commands(app)
register_analytics(app)
register_web(app)
register_faces(app)


def main() -> None:
    """Entry point: map visionlake errors to a message and an exit code (usage errors are Typer's: 2)."""
    try:
        app(prog_name="visionlake")
    except VisionlakeError as e:
        err_console.print(f"[red]error:[/] {esc(e)}", highlight=False, soft_wrap=True)
        sys.exit(e.exit_code)
