"""Pieces every command module shares: the `--format` option, the progress bar on stderr, and the
option types with bounds.

Every numeric, time and size option is made here, so one set of bounds and messages covers the CLI:
a value out of range is a usage error (exit 2) that names the option, never an OverflowError from a
driver or a silent nonsense value (a negative limit, a NaN timeout). The bounds: counts 1 to 10**9
unless a command needs others; seconds finite, > 0 and at most a day (PostgreSQL's statement_timeout
ends at 24.8 days); times and ages as in `timeutil` (years 1970-9999, ages up to 100 years); sizes
1 B to 1 PiB.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Any

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from .errors import InputError
from .output import Format, err_console

__all__ = [
    "MAX_COUNT",
    "MAX_SECONDS",
    "FormatOpt",
    "Setting",
    "camera_option",
    "count_option",
    "duration_option",
    "number_option",
    "progress_bar",
    "seconds_option",
    "size_option",
    "time_option",
]

MAX_COUNT = 1_000_000_000
MAX_SECONDS = 86_400.0

FormatOpt = Annotated[
    Format, typer.Option("--format", "-f", help="table for people, json or csv for scripts")
]


def progress_bar(transient: bool = False) -> Progress:
    """A Rich progress bar on stderr, shown only on a terminal (scripts' output stays clean).

    Descriptions are plain text: they hold camera ids, which may contain '[' and ']'.
    """
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}", style="bold", markup=False),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}", markup=False),
        TimeElapsedColumn(),
        console=err_console,
        transient=transient,
        disable=not err_console.is_terminal,
    )


# --- option types ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Setting:
    """A size or duration option that also takes 'forever': `value` None (no limit)."""

    value: int | None


def _bad(e: InputError) -> typer.BadParameter:
    return typer.BadParameter(str(e))


def count_option(help: str, *decls: str, min: int = 1, max: int = MAX_COUNT, **kw: Any) -> Any:
    """An integer option within [min, max]."""
    return typer.Option(*decls, min=min, max=max, help=help, **kw)


def number_option(
    help: str, *decls: str, max: float, metavar: str = "NUMBER", what: str = "a number", **kw: Any
) -> Any:
    """A finite float option > 0 and <= max (Typer's min= would let 0, nan and inf through)."""

    def parse(text: Any) -> float:
        try:
            value = float(text)
        except (TypeError, ValueError):
            raise typer.BadParameter(f"{text!r} is not {what}") from None
        if not (math.isfinite(value) and 0 < value <= max):
            raise typer.BadParameter(f"must be {what} > 0 and at most {max:g}, got {text!r}")
        return value

    return typer.Option(*decls, parser=parse, metavar=metavar, help=help, **kw)


def seconds_option(help: str, *decls: str, max: float = MAX_SECONDS, **kw: Any) -> Any:
    """A time limit in seconds: finite, > 0, at most `max` (a day unless told)."""
    return number_option(help, *decls, max=max, metavar="SECONDS", what="a number of seconds", **kw)


def time_option(help: str, *decls: str, **kw: Any) -> Any:
    """A point in time: ISO 8601, 'now' or an age such as 2h (see timeutil.parse_time)."""

    def parse(text: Any) -> Any:
        from .timeutil import parse_time

        try:
            return parse_time(text) if isinstance(text, str) else text
        except InputError as e:
            raise _bad(e) from None

    return typer.Option(*decls, parser=parse, metavar="TIME", help=help, **kw)


def _settable(convert: Any, forever: bool) -> Any:
    """A parser of `convert(text)`; with `forever`, a Setting, and 'forever' itself as Setting(None)."""

    def parse(text: Any) -> Any:
        if not isinstance(text, str):
            return text
        if forever and text.strip().lower() == "forever":
            return Setting(None)
        try:
            value = convert(text)
        except InputError as e:
            raise _bad(e) from None
        return Setting(value) if forever else value

    return parse


def duration_option(help: str, *decls: str, forever: bool = False, **kw: Any) -> Any:
    """A duration such as 30s or 7d, in milliseconds ('forever' too, as a Setting, if allowed)."""

    def millis(text: str) -> int:
        from .timeutil import parse_duration

        return int(parse_duration(text).total_seconds() * 1000)

    return typer.Option(*decls, parser=_settable(millis, forever), metavar="DURATION", help=help, **kw)


def size_option(help: str, *decls: str, forever: bool = False, **kw: Any) -> Any:
    """A size such as 512KB or 10GB, in bytes ('forever' too, as a Setting, if allowed)."""

    def size(text: str) -> int:
        from .timeutil import parse_size

        return parse_size(text)

    return typer.Option(*decls, parser=_settable(size, forever), metavar="SIZE", help=help, **kw)


def camera_option(help: str, *decls: str, **kw: Any) -> Any:
    """A camera id, checked before any source is opened (a stream may take a while to open)."""

    def parse(text: Any) -> Any:
        from .frames import check_camera_id

        try:
            return check_camera_id(text) if isinstance(text, str) else text
        except InputError as e:
            raise _bad(e) from None

    return typer.Option(*decls, parser=parse, metavar="TEXT", help=help, **kw)
