r"""Output for people (Rich tables) and for scripts (`--format json|csv`), in one place.

Stored values (camera ids, labels, SQL results) are data, never markup or terminal commands:

- tables and key/value records render every value, column name and title as plain `Text`, so
  ``[/]`` or ``[link=...]`` in a camera id prints literally instead of crashing or making a link;
- control characters (C0, DEL, C1: ESC, BEL, CR...) and the bidi controls that reorder what a
  terminal shows become visible escapes: ``\x1b``, ``\x07``, ``\u202e`` (Python's notation,
  ``\xNN`` up to U+00FF, ``\uNNNN`` above; a newline shows as ``\x0a`` too, so one value is one line);
- JSON keeps data exact (`json.dumps` escapes control characters itself);
- CSV keeps data exact when stdout is a file or a pipe (it is for scripts), and is escaped like a
  table only when stdout is a terminal, where raw escapes would reach the terminal, not a script.

`esc` does the same for a value put into a Rich markup string (messages on stderr).
"""

from __future__ import annotations

import csv
import json
import re
import sys
from collections.abc import Sequence
from datetime import datetime
from enum import StrEnum
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

console = Console()
err_console = Console(stderr=True)


class Format(StrEnum):
    table = "table"
    json = "json"
    csv = "csv"


#: C0, DEL, C1 and the bidi controls (embeddings, overrides, isolates, marks)
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _visible(m: re.Match[str]) -> str:
    c = ord(m.group())
    return f"\\x{c:02x}" if c <= 0xFF else f"\\u{c:04x}"


def sanitize(text: str) -> str:
    """`text` with every control or bidi character replaced by its visible escape (see above)."""
    return _UNSAFE.sub(_visible, text)


def esc(value: Any) -> str:
    """`value` for a Rich markup string: sanitized, and its brackets escaped."""
    return escape(sanitize(str(value)))


def _cell(v: Any) -> Text:
    return Text(sanitize("" if v is None else str(_plain(v))))


def _title(title: str | None) -> Text | None:
    return None if title is None else Text(sanitize(title))


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
        tty = sys.stdout.isatty()  # a person reads it: no raw escapes to the terminal
        plain = csv.writer(sys.stdout, lineterminator="\n")
        # the writer quotes a field for the characters of its line terminator only: a bare CR in a
        # value would end the line for readers, so such a row is quoted whole
        quoted = csv.writer(sys.stdout, lineterminator="\n", quoting=csv.QUOTE_ALL)
        for r in [columns, *rows]:
            cells = [("" if v is None else sanitize(str(_plain(v)))) if tty else _plain(v) for v in r]
            cr = any(isinstance(c, str) and "\r" in c for c in cells)
            (quoted if cr else plain).writerow(cells)
    else:
        t = Table(title=_title(title), title_justify="left", title_style="bold")
        for c in columns:
            t.add_column(_cell(c))
        for r in rows:
            t.add_row(*[_cell(v) for v in r])
        console.print(t)


def record_out(data: dict, fmt: Format = Format.table, title: str | None = None) -> None:
    """Print one summary object: key/value table, JSON object, or a one-row CSV."""
    if fmt == Format.json:
        print(json.dumps(data, default=_plain))
    elif fmt == Format.csv:
        flat = {k: v for k, v in data.items() if not isinstance(v, dict | list)}
        rows_out(list(flat), [list(flat.values())], fmt)
    else:
        t = Table(title=_title(title), show_header=False, title_justify="left", title_style="bold")
        t.add_column(style="bold")
        t.add_column()
        for k, v in data.items():
            if isinstance(v, dict | list):
                v = json.dumps(v, default=_plain) if v else "-"
            t.add_row(_cell(str(k).replace("_", " ")), _cell(v))
        console.print(t)
