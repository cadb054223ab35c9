"""Output for people (Rich tables) and for scripts (`--format json|csv`), in one place."""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Sequence
from datetime import datetime
from enum import StrEnum
from typing import Any

from rich.console import Console
from rich.table import Table

console = Console()
err_console = Console(stderr=True)


class Format(StrEnum):
    table = "table"
    json = "json"
    csv = "csv"


def _plain(v: Any) -> Any:
    if isinstance(v, datetime):
        return v.isoformat()
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    return v


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def rows_out(
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    fmt: Format = Format.table,
    title: str | None = None,
) -> None:
    """Print rows as a table, JSON (a list of objects) or CSV with a header line."""
    if fmt == Format.json:
        print(
            json.dumps([{c: _plain(v) for c, v in zip(columns, r, strict=False)} for r in rows], default=str)
        )
    elif fmt == Format.csv:
        w = csv.writer(sys.stdout, lineterminator="\n")
        w.writerow(columns)
        w.writerows([[_plain(v) for v in r] for r in rows])
    else:
        t = Table(title=title, title_justify="left", title_style="bold")
        for c in columns:
            t.add_column(str(c))
        for r in rows:
            t.add_row(*["" if v is None else str(_plain(v)) for v in r])
        console.print(t)


def record_out(data: dict, fmt: Format = Format.table, title: str | None = None) -> None:
    """Print one summary object: key/value table, JSON object, or a one-row CSV."""
    if fmt == Format.json:
        print(json.dumps(data, default=_plain))
    elif fmt == Format.csv:
        flat = {k: v for k, v in data.items() if not isinstance(v, dict | list)}
        rows_out(list(flat), [list(flat.values())], fmt)
    else:
        t = Table(title=title, show_header=False, title_justify="left", title_style="bold")
        t.add_column(style="bold")
        t.add_column()
        for k, v in data.items():
            if isinstance(v, dict | list):
                v = json.dumps(v, default=_plain) if v else "-"
            t.add_row(k.replace("_", " "), str(_plain(v)))
        console.print(t)
