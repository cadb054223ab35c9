"""Reports as pictures (PNG or SVG) with matplotlib, for people who want to see the busy hours at once.

matplotlib is an optional extra (`dashboard`) and is imported only when a plot is drawn, never at CLI
start-up. It draws on a bare `Figure` with the Agg canvas: no pyplot, so no global backend state and
no display needed. Figures are 1000x500 pixels (10x5 inches at 100 dpi).
"""

from __future__ import annotations

from collections import defaultdict
from datetime import timedelta
from pathlib import Path
from typing import Any

from ..errors import InputError, MissingDependency
from ._sql import BUCKET_STEPS
from .reports import Report

FORMATS = {".png": "png", ".svg": "svg"}
SIZE_IN = (10.0, 5.0)
DPI = 100
#: Lines drawn at most in a counts plot; the groups with the most detections are kept.
MAX_LINES = 10


def plot_format(path: str | Path) -> str:
    """'png' or 'svg' from the file's extension; InputError naming the path for anything else."""
    fmt = FORMATS.get(Path(path).suffix.lower())
    if fmt is None:
        raise InputError(f"cannot plot to {str(path)!r}: use a .png or .svg file name")
    return fmt


def _figure() -> Any:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as e:
        err = MissingDependency("plotting a report", "dashboard", "matplotlib")
        err.args = (f"{err}; in a checkout: scripts/setup.sh dashboard, or pip install -e '.[dashboard]'",)
        raise err from e
    fig = Figure(figsize=SIZE_IN, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def plot_report(result: Report, path: str | Path) -> Path:
    """Draw `result` into `path` (.png or .svg): counts as lines over time (one per group, 0 where
    frames were processed and nothing found, a gap where no frame was processed), hours as bars
    0-23, top and latest frames as horizontal bars. Returns the path written."""
    fmt = plot_format(path)
    fig = _figure()
    ax = fig.add_subplot()
    draw = {"counts": _counts, "hours": _hours, "top": _frames, "latest": _frames, "visitors": _visitors}.get(
        result.kind
    )
    if draw is None:
        raise InputError(f"cannot plot a report of kind {result.kind!r}")
    title = result.title
    if not result.rows:
        ax.text(0.5, 0.5, "no data", ha="center", va="center", fontsize=16, transform=ax.transAxes)
        ax.set_axis_off()
    else:
        title = draw(ax, result) or title
    ax.set_title(title, fontsize=11, wrap=True)
    out = Path(path)
    try:
        fig.savefig(out, format=fmt, dpi=DPI)
    except OSError as e:
        raise InputError(f"cannot write the plot {str(path)!r}: {e.strerror or e}") from None
    return out


def _counts(ax: Any, rep: Report) -> str | None:
    i_frames = rep.columns.index("frames")
    names = rep.columns[1:i_frames]
    li = names.index("label") if "label" in names else None

    def base(g: tuple) -> tuple:  # the group without its label: what frames were counted for
        return g if li is None else g[:li] + g[li + 1 :]

    processed: dict[tuple, set] = defaultdict(set)  # group without label -> buckets with frames
    found: dict[tuple, dict] = defaultdict(dict)  # group -> bucket -> detections
    for row in rep.rows:
        g = tuple(row[1:i_frames])
        processed[base(g)].add(row[0])
        found[g][row[0]] = row[-1]
    groups = [g for g in found if li is None or g[li] is not None] or list(found)
    ranked = sorted(groups, key=lambda g: -sum(found[g].values()))
    shown = ranked[:MAX_LINES]
    step = BUCKET_STEPS.get(rep.bucket or "", timedelta(hours=1))
    for g in shown:
        xs: list = []
        ys: list = []
        for t in sorted(processed[base(g)]):  # 0 where frames were processed and nothing found
            if xs and t - xs[-1] > step:  # no frames at all in between: a gap, not a zero
                xs.append(xs[-1] + step)
                ys.append(float("nan"))
            xs.append(t)
            ys.append(found[g].get(t, 0))
        name = " / ".join("-" if v is None else str(v) for v in g) or "all"
        ax.plot(xs, ys, marker="o", markersize=3, linewidth=1.5, label=name)
    _time_axis(ax, rep, step, "detections")
    if len(shown) > 1 or rep.by:
        ax.legend(fontsize="small", title=" / ".join(names) or None)
    if len(ranked) > len(shown):
        return f"{rep.title} - {len(shown)} largest of {len(ranked)} groups"
    return None


def _time_axis(ax: Any, rep: Report, step: timedelta, ylabel: str) -> None:
    """Dates along x (a bucket of margin either side: one bucket alone would be drawn on a span of
    years), whole numbers from 0 up along y."""
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
    from matplotlib.ticker import MaxNLocator

    times = sorted({row[0] for row in rep.rows})
    if times:
        ax.set_xlim(times[0] - step, times[-1] + step)
    locator = AutoDateLocator()
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))
    ax.set_xlabel(f"{rep.bucket} (UTC)")
    ax.set_ylabel(ylabel)
    ax.set_ylim(bottom=0)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(True, alpha=0.3)


def _visitors(ax: Any, rep: Report) -> None:
    """Visitors over time, one line per camera and label (0 between buckets with visitors)."""
    step = BUCKET_STEPS.get(rep.bucket or "", timedelta(hours=1))
    lines: dict[tuple, dict] = defaultdict(dict)
    for bucket, camera, label, n, *_ in rep.rows:
        lines[(camera, label)][bucket] = n
    times = sorted({row[0] for row in rep.rows})
    span = []
    t = times[0]
    while t <= times[-1] and len(span) < 10_000:
        span.append(t)
        t += step
    for (camera, label), per in sorted(lines.items(), key=lambda kv: -sum(kv[1].values()))[:MAX_LINES]:
        ax.plot(span, [per.get(t, 0) for t in span], marker="o", markersize=3, label=f"{camera} / {label}")
    _time_axis(ax, rep, step, "visitors (tracks seen)")
    ax.legend(fontsize="small", title="camera / label")


def _hours(ax: Any, rep: Report) -> None:
    from matplotlib.ticker import MaxNLocator

    hours = [r[0] for r in rep.rows]
    ax.bar(hours, [r[2] for r in rep.rows], color="tab:blue", label="detections")
    ax.set_xticks(range(24))
    ax.set_xlim(-0.6, 23.6)
    ax.set_xlabel("hour of day (UTC)")
    ax.set_ylabel("detections")
    ax.grid(True, axis="y", alpha=0.3)
    frames_ax = ax.twinx()
    frames_ax.plot(
        hours, [r[1] for r in rep.rows], color="tab:orange", marker="o", markersize=3, label="frames"
    )
    frames_ax.set_ylabel("frames processed")
    frames_ax.set_ylim(bottom=0)
    for a in (ax, frames_ax):
        a.yaxis.set_major_locator(MaxNLocator(integer=True))
    lines = ax.get_legend_handles_labels()
    more = frames_ax.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], fontsize="small", loc="upper left")


def _frames(ax: Any, rep: Report) -> None:
    from matplotlib.ticker import MaxNLocator

    rows = list(reversed(rep.rows))  # the first row on top
    names = [f"{r[0][:12]}  {r[1]}  {r[2]:%Y-%m-%d %H:%M:%S}" for r in rows]
    ax.barh(range(len(rows)), [r[3] for r in rows], color="tab:blue")
    ax.set_yticks(range(len(rows)), names, fontsize=8, family="monospace")
    ax.set_xlabel("detections")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("frame (id, camera, capture time UTC)")
    ax.grid(True, axis="x", alpha=0.3)
