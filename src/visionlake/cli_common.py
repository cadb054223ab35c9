"""Pieces every command module shares: the `--format` option and the progress bar on stderr."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from .output import Format, err_console

__all__ = ["FormatOpt", "progress_bar"]

FormatOpt = Annotated[
    Format, typer.Option("--format", "-f", help="table for people, json or csv for scripts")
]


def progress_bar(transient: bool = False) -> Progress:
    """A Rich progress bar on stderr, shown only on a terminal (scripts' output stays clean)."""
    return Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        console=err_console,
        transient=transient,
        disable=not err_console.is_terminal,
    )
