"""`visionlake report`, `visionlake tracks` and `visionlake compare`: the attendance story and model-version comparison
without SQL. A thin layer over `visionlake.analytics`, imported inside each command so that CLI
start-up never loads SQLAlchemy, NumPy or matplotlib.

Unknown models or versions are bad input (exit 2), named in the message with the versions that exist.
"""

from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from .cli_common import FormatOpt, command_group, count_option, existing_lake, number_option, time_option
from .output import Format, err_console, esc, record_out, rows_out

report_app = command_group(
    "Reports over the catalog: detections over time, busy hours, top and latest frames.\n\n"
    "Each model counts with one version per frame: --model-version if given, else the newest "
    "registered version that processed the frame, so a replay never counts a frame twice."
)


class Bucket(StrEnum):
    minute = "minute"
    hour = "hour"
    day = "day"


class GroupBy(StrEnum):
    camera = "camera"
    label = "label"
    model_version = "model-version"


CameraOpt = Annotated[str | None, typer.Option("--camera", help="Only this camera")]
LabelOpt = Annotated[str | None, typer.Option("--label", help="Only detections of this label")]
ModelOpt = Annotated[str | None, typer.Option("--model", help="Only results of this model")]
VersionOpt = Annotated[
    str | None,
    typer.Option("--model-version", help="Only this version [default: each model's newest, frame by frame]"),
]
SinceOpt = Annotated[datetime | None, time_option("Captured at or after (ISO 8601 or an age like 2h)")]
UntilOpt = Annotated[datetime | None, time_option("Captured before")]
LimitOpt = Annotated[int, count_option("How many frames", max=10_000)]
MinFramesOpt = Annotated[
    int,
    count_option(
        "Only tracks seen in this many frames or more (short ones are mostly noise)", "--min-frames"
    ),
]
PlotOpt = Annotated[
    Path | None, typer.Option("--plot", help="Also draw the report into this .png or .svg file")
]


def register(app: typer.Typer) -> None:
    """Add `report` and `compare` to `app` (once: calling it again changes nothing)."""
    if any(g.name == "report" for g in app.registered_groups):
        return
    app.add_typer(report_app, name="report")
    app.command("tracks")(tracks)
    app.command("compare")(compare)


def _filter(camera, label, model, model_version, since, until):  # noqa: ANN001, ANN202 - plain values
    from .analytics.reports import ReportFilter

    return ReportFilter(camera, label, model, model_version, since, until)


def _show(ctx: typer.Context, make, plot: Path | None, fmt: Format) -> None:  # noqa: ANN001
    """Run a report (`make(catalog)`), print it, and draw it if asked; the plot's path is checked first."""
    from .analytics.plots import plot_format, plot_report

    if plot is not None:
        plot_format(plot)  # a bad extension fails before any query
    rep = make(existing_lake(ctx).catalog)
    rows_out(rep.columns, rep.rows, fmt, title=rep.title)
    if plot is not None:
        plot_report(rep, plot)
        err_console.print(f"wrote {esc(plot)}")


@report_app.command("counts")
def report_counts(
    ctx: typer.Context,
    camera: CameraOpt = None,
    label: LabelOpt = None,
    model: ModelOpt = None,
    model_version: VersionOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    bucket: Annotated[Bucket, typer.Option("--bucket", help="Time bucket (UTC)")] = Bucket.hour,
    by: Annotated[
        list[GroupBy] | None,
        typer.Option(
            "--by", help="Group by camera, label or model-version; repeat for several [default: camera]"
        ),
    ] = None,
    plot: PlotOpt = None,
    fmt: FormatOpt = Format.table,
) -> None:
    """Frames processed and detections per minute, hour or day.

    `frames` counts every processed frame, also those where nothing was found, so quiet hours show
    as zeros rather than gaps.
    """
    from .analytics.reports import counts

    flt = _filter(camera, label, model, model_version, since, until)
    groups = tuple(g.value for g in by) if by else ("camera",)
    _show(ctx, lambda cat: counts(cat, flt, bucket.value, groups), plot, fmt)


@report_app.command("hours")
def report_hours(
    ctx: typer.Context,
    camera: CameraOpt = None,
    label: LabelOpt = None,
    model: ModelOpt = None,
    model_version: VersionOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    plot: PlotOpt = None,
    fmt: FormatOpt = Format.table,
) -> None:
    """The busiest hours of the day (UTC, 0-23): frames and detections per hour of day."""
    from .analytics.reports import hours

    flt = _filter(camera, label, model, model_version, since, until)
    _show(ctx, lambda cat: hours(cat, flt), plot, fmt)


@report_app.command("top")
def report_top(
    ctx: typer.Context,
    camera: CameraOpt = None,
    label: LabelOpt = None,
    model: ModelOpt = None,
    model_version: VersionOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    limit: LimitOpt = 10,
    plot: PlotOpt = None,
    fmt: FormatOpt = Format.table,
) -> None:
    """The frames with the most detections, with their archive paths (see them with `show`)."""
    from .analytics.reports import top

    flt = _filter(camera, label, model, model_version, since, until)
    _show(ctx, lambda cat: top(cat, flt, limit), plot, fmt)


@report_app.command("latest")
def report_latest(
    ctx: typer.Context,
    camera: CameraOpt = None,
    label: LabelOpt = None,
    model: ModelOpt = None,
    model_version: VersionOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    limit: LimitOpt = 10,
    plot: PlotOpt = None,
    fmt: FormatOpt = Format.table,
) -> None:
    """The most recently captured frames with a result, and how many detections each has."""
    from .analytics.reports import latest

    flt = _filter(camera, label, model, model_version, since, until)
    _show(ctx, lambda cat: latest(cat, flt, limit), plot, fmt)


@report_app.command("visitors")
def report_visitors(
    ctx: typer.Context,
    camera: CameraOpt = None,
    label: LabelOpt = None,
    model: ModelOpt = None,
    model_version: VersionOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    bucket: Annotated[Bucket, typer.Option("--bucket", help="Time bucket (UTC)")] = Bucket.hour,
    min_frames: MinFramesOpt = 2,
    plot: PlotOpt = None,
    fmt: FormatOpt = Format.table,
) -> None:
    """Unique visitors per camera: tracks seen in each hour (or minute, day), those that started in it
    (entries) and their mean dwell time. Needs tracks (`worker --track`).

    A track is one object followed across frames; one that spans two hours is a visitor in both.
    """
    from .analytics.tracks import TrackFilter, visitors

    tf = TrackFilter(_filter(camera, label, model, model_version, since, until), min_frames)
    _show(ctx, lambda cat: visitors(cat, tf, bucket.value), plot, fmt)


class TrackOrder(StrEnum):
    first_seen = "first-seen"
    dwell = "dwell"
    frames = "frames"


def tracks(
    ctx: typer.Context,
    camera: CameraOpt = None,
    label: LabelOpt = None,
    model: ModelOpt = None,
    model_version: Annotated[
        str | None,
        typer.Option("--model-version", help="Only this version [default: each model's newest with tracks]"),
    ] = None,
    since: Annotated[datetime | None, time_option("Seen at or after (ISO 8601 or an age like 2h)")] = None,
    until: Annotated[datetime | None, time_option("Seen before")] = None,
    min_frames: MinFramesOpt = 2,
    order: Annotated[
        TrackOrder, typer.Option("--order", help="Newest first, longest stay first, or most frames first")
    ] = TrackOrder.first_seen,
    limit: Annotated[int, count_option("How many tracks", max=100_000)] = 50,
    fmt: FormatOpt = Format.table,
) -> None:
    """Tracks: objects followed across a camera's frames (`worker --track`), with first and last
    capture time, dwell seconds, frames and the best frame (`show` it)."""
    from .analytics.tracks import TrackFilter
    from .analytics.tracks import tracks as list_tracks

    tf = TrackFilter(_filter(camera, label, model, model_version, since, until), min_frames)
    rep = list_tracks(existing_lake(ctx).catalog, tf, order=order.value, limit=limit)
    rows_out(rep.columns, rep.rows, fmt, title=rep.title)


def compare(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="Model (detector) name, e.g. haar-face")],
    a: Annotated[str, typer.Argument(help="Version A, e.g. the one in use")],
    b: Annotated[str, typer.Argument(help="Version B, e.g. the one a replay produced")],
    iou: Annotated[
        float, number_option("Boxes of the same label match at this IoU or more", "--iou", max=1.0)
    ] = 0.5,
    camera: CameraOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    worst: Annotated[
        int, count_option("List this many frames where A and B disagree most", min=0, max=10_000)
    ] = 20,
    fmt: FormatOpt = Format.table,
) -> None:
    """Compare two versions of a model: counts side by side, box agreement, frames that differ most.

    Agreement covers the frames both versions processed: boxes match greedily (A's highest score
    first) within the same label at IoU >= --iou. json prints one object (agreement, side_by_side,
    worst); csv prints the side-by-side counts.
    """
    from .analytics.compare import compare_versions

    flt = _filter(camera, None, None, None, since, until)
    c = compare_versions(existing_lake(ctx).catalog, model, a, b, flt, iou=iou, worst=worst)
    if fmt == Format.json:
        record_out(c.as_dict(), fmt)
    elif fmt == Format.csv:
        rows_out(c.side_by_side.columns, c.side_by_side.rows, fmt)
    else:
        record_out(c.agreement, fmt, title=f"{model}: {a} (A) against {b} (B)")
        rows_out(c.side_by_side.columns, c.side_by_side.rows, fmt, title=c.side_by_side.title)
        rows_out(c.worst.columns, c.worst.rows, fmt, title=c.worst.title)
