"""Pieces every command module shares: command groups with readable help, the `--format` option,
progress on stderr, and the option types with bounds.

Every numeric, time and size option is made here, so one set of bounds and messages covers the CLI:
a value out of range is a usage error (exit 2) that names the option, never an OverflowError from a
driver or a silent nonsense value (a negative limit, a NaN timeout). The bounds: counts 1 to 10**9
unless a command needs others; seconds finite, > 0 and at most a day (PostgreSQL's statement_timeout
ends at 24.8 days); times and ages as in `timeutil` (years 1970-9999, ages up to 100 years); sizes
1 B to 1 PiB.
"""

import math
import os
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
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
from typer.core import TyperGroup

from .errors import InputError
from .lake import Lake
from .output import Format, err_console, sanitize

__all__ = [
    "MAX_COUNT",
    "MAX_SECONDS",
    "FormatOpt",
    "Setting",
    "LineProgress",
    "State",
    "camera_option",
    "command_group",
    "count_option",
    "duration_option",
    "existing_lake",
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


# --- the lake of a command -----------------------------------------------------------------------


class State:
    """The global options, and the lake they name (opened on first use)."""

    def __init__(self, lake: str | None, log: str | None, catalog: str | None, archive: str | None) -> None:
        self.args = {"lake": lake, "log": log, "catalog": catalog, "archive": archive}
        self._lake: Lake | None = None

    @property
    def lake(self) -> Lake:
        if self._lake is None:
            self._lake = Lake(**self.args)
        return self._lake

    def global_argv(self) -> list[str]:
        """The global options again, for child processes."""
        argv = []
        for k, v in self.args.items():
            if v:
                argv += [f"--{k}", str(v)]
        return argv


def existing_lake(ctx: typer.Context) -> Lake:
    """The lake of a command that only reads. A path that holds no lake is an error here, not a new
    empty lake: a mistyped --lake would otherwise report zeros as if all were well."""
    lake = ctx.find_root().obj.lake
    s = lake.settings
    embedded = [p for p in (_sqlite_path(s.log, "sqlite://"), _sqlite_path(s.catalog, "sqlite:///")) if p]
    if len(embedded) == 2 and not any(p.exists() for p in embedded):
        where = "it does not exist" if not s.lake.exists() else "it holds no frame log and no catalog"
        raise InputError(
            f"no lake at {s.lake}: {where}; check --lake or VISIONLAKE_HOME "
            "(ingest, worker and demo create a lake; this command only reads one)"
        )
    return lake


def _sqlite_path(url: str, prefix: str) -> Path | None:
    """The file or folder of an embedded backend's URL, None for a server."""
    if url.startswith(prefix):
        return Path(url[len(prefix) :])
    return Path(url) if "://" not in url else None


# --- help ----------------------------------------------------------------------------------------

#: How Typer's type names read in --help, in Click's words ("<str>" and "<list[str]>" become TEXT).
_TYPE_WORDS = {
    "str": "TEXT",
    "int": "INTEGER",
    "int range": "INTEGER",
    "float": "NUMBER",
    "float range": "NUMBER",
    "datetime": "TIME",
    "path": "PATH",
    "file": "PATH",
    "directory": "PATH",
}


def _type_word(param: Any, typer_text: str | None) -> str:
    """The type column of --help for one parameter: blank for a flag, the metavar if it has one."""
    if getattr(param, "is_flag", False) or getattr(param, "count", False):
        return ""
    if param.metavar and param.param_type_name == "option":
        return param.metavar
    text = (typer_text or "").strip("<>").removesuffix("...")
    if text.startswith("list[") and text.endswith("]"):
        text = text[5:-1]  # a repeatable option: the type of one value
    if text in _TYPE_WORDS:
        return _TYPE_WORDS[text]
    return f"[{text}]" if "|" in text else text.upper()  # choices stay as Click shows them


def _tidy_param(param: Any) -> Any:
    typer_text = param.display_type_rich
    # Typer's rich help asks each parameter for its type text: answer in Click's words
    param.display_type_rich = lambda ctx: _type_word(param, typer_text(ctx))
    if param.param_type_name == "argument" and not param.metavar:
        param.metavar = param.name.upper()  # "Usage: ... SRC OUT", not "{src} {out}"
    return param


def _tidy(command: Any) -> None:
    for param in command.params:
        _tidy_param(param)
    help_option = command.get_help_option

    def tidy_help_option(ctx: Any) -> Any:
        option = help_option(ctx)
        return None if option is None else _tidy_param(option)

    command.get_help_option = tidy_help_option


class _TidyGroup(TyperGroup):
    """A command group whose --help names types as people read them (TEXT, INTEGER, PATH)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _tidy(self)
        for cmd in self.commands.values():
            _tidy(cmd)


def command_group(help: str, **kwargs: Any) -> typer.Typer:
    """A Typer app for a command or command group, with the CLI's shared settings."""
    kwargs.setdefault("no_args_is_help", True)
    kwargs.setdefault("rich_markup_mode", "markdown")  # docstring paragraphs reflow to the terminal
    return typer.Typer(help=help, cls=_TidyGroup, **kwargs)


# --- progress -------------------------------------------------------------------------------------

#: Seconds between progress lines when stderr is not a terminal (CI logs, pipes, files).
PROGRESS_SECONDS_ENV = "VISIONLAKE_PROGRESS_SECONDS"
DEFAULT_PROGRESS_SECONDS = 15.0


class LineProgress(Progress):
    """Progress for logs: no live bar, but a plain line per unfinished task every few seconds.

    A job run under CI or through a pipe would otherwise be silent for minutes. Jobs shorter than
    the interval print nothing, so short commands' stderr stays clean; a job that printed lines
    ends with one line per task saying it is done.
    """

    def __init__(self, *columns: Any, interval: float, **kwargs: Any) -> None:
        super().__init__(*columns, disable=True, **kwargs)
        self.interval = interval
        self._stopping = threading.Event()
        self._ticker: threading.Thread | None = None
        self._printed = False
        self._t0 = time.monotonic()

    def start(self) -> None:
        super().start()
        if self._ticker is None:
            self._t0 = time.monotonic()
            self._ticker = threading.Thread(target=self._tick, name="progress-lines", daemon=True)
            self._ticker.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._ticker is not None:
            self._ticker.join()
            self._ticker = None
        if self._printed:
            for task in self.tasks:
                self._line(task, done=True)
        super().stop()

    def _tick(self) -> None:
        while not self._stopping.wait(self.interval):
            for task in self.tasks:
                if not task.finished:
                    self._line(task)
            self._printed = True

    def _line(self, task: Any, done: bool = False) -> None:
        count = f"{task.completed:g}" + (f"/{task.total:g}" if task.total else "")
        pct = f" ({100 * task.completed / task.total:.0f}%)" if task.total else ""
        info = task.fields.get("info") or ""
        state = "done" if done else "running"
        elapsed = task.finished_time if task.finished_time is not None else time.monotonic() - self._t0
        text = f"{task.description}: {state}, {count}{pct} in {elapsed:.0f} s" + (f"; {info}" if info else "")
        print(sanitize(text), file=sys.stderr, flush=True)


def progress_seconds() -> float:
    """The interval of progress lines, from the environment (seconds > 0; 0 or bad: the default)."""
    try:
        value = float(os.environ.get(PROGRESS_SECONDS_ENV, ""))
    except ValueError:
        return DEFAULT_PROGRESS_SECONDS
    return value if math.isfinite(value) and value > 0 else DEFAULT_PROGRESS_SECONDS


def progress_bar(transient: bool = False) -> Progress:
    """A Rich progress bar on stderr when it is a terminal, else a line every few seconds.

    Descriptions are plain text: they hold camera ids, which may contain '[' and ']'.
    """
    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}", style="bold", markup=False),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}", markup=False),
        TimeElapsedColumn(),
    )
    if not err_console.is_terminal:
        return LineProgress(*columns, interval=progress_seconds(), console=err_console)
    return Progress(*columns, console=err_console, transient=transient)


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


def time_option(help: str, *decls: str, none_word: str | None = None, **kw: Any) -> Any:
    """A point in time: ISO 8601, 'now' or an age such as 2h (see timeutil.parse_time); with
    `none_word`, that word too, as None (the command's own default, e.g. 'file' for a file's time)."""

    def parse(text: Any) -> Any:
        from .timeutil import parse_time

        if none_word is not None and isinstance(text, str) and text.strip().lower() == none_word:
            return None
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
