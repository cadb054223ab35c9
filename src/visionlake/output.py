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

from rich import box
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
    if isinstance(v, datetime):  # for people: to the second (JSON and CSV keep the full value)
        v = v.isoformat(sep=" ", timespec="seconds")
    return Text(sanitize("" if v is None else str(_plain(v))))


#: Columns of single words up to this long (a frame id is 24) are never folded in tables.
ID_WIDTH = 40
#: Other columns may fold down to this width before a table switches to one block per row.
FOLDED_WIDTH = 12


def _print_title(title: str | None) -> None:
    """A table's title on its own line: wrapped at words to the terminal, not cut to the table's width."""
    if title is not None:
        console.print(Text(sanitize(title), style="bold"))


def _plain(v: Any) -> Any:
    if isinstance(v, datetime):
        return v.isoformat()
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    return v


def plural(n: int, word: str) -> str:
    """'1 image', '2 images': counts in sentences people read."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


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
        _table(columns, [[_cell(v) for v in r] for r in rows], title)


def _whole(texts: list[Text]) -> bool:
    """Whether a column holds short single words (ids, names, numbers), never to be folded."""
    return all(" " not in t.plain and len(t.plain) <= ID_WIDTH for t in texts)


def _table(columns: Sequence[str], cells: list[list[Text]], title: str | None) -> None:
    """A table that fits the terminal without cutting a value.

    Columns of single words (frame ids, cameras, counts) keep their width; the others (paths,
    times, text) share what is left and fold onto more lines. When even that cannot fit, each row
    is printed as a block of `column  value` lines instead, so a frame id is never cut.
    """
    _print_title(title)
    heads = [_cell(str(c).replace("_", " ")) for c in columns]  # headings may wrap between words
    cols = [[r[i] for r in cells if i < len(r)] for i in range(len(columns))]
    natural = [max([h.cell_len] + [t.cell_len for t in col]) for h, col in zip(heads, cols, strict=True)]
    least = [  # a whole column: its widest value, and no narrower than a word of its heading
        max([t.cell_len for t in col] + [len(w) for w in h.plain.split()])
        for h, col in zip(heads, cols, strict=True)
    ]
    whole = [bool(col) and _whole(col) for col in cols]
    room = console.width - 2 * (len(columns) - 1)  # two characters between columns
    widths = _fit(natural, least, whole, room)
    if widths is None:
        _blocks(heads, cells)
        return
    t = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 1, 0, 0))
    for h, w in zip(heads, widths, strict=True):
        t.add_column(h, overflow="fold", width=w)
    for r in cells:
        t.add_row(*r)
    console.print(t)


def _fit(natural: list[int], values: list[int], whole: list[bool], room: int) -> list[int] | None:
    """Column widths within `room`: whole columns at their widest value, the rest sharing what is
    left in proportion to their natural width (at least FOLDED_WIDTH); None if that cannot fit."""
    if sum(natural) <= room:
        return natural
    fixed = sum(v for v, w in zip(values, whole, strict=True) if w)
    flexible = [n for n, w in zip(natural, whole, strict=True) if not w]
    left = room - fixed
    if left < FOLDED_WIDTH * len(flexible):
        return None
    total = sum(flexible) or 1
    share = [max(FOLDED_WIDTH, left * n // total) for n in flexible]
    while sum(share) > left:  # rounding up to the minimum may overshoot: take it from the widest
        share[share.index(max(share))] -= 1
    it = iter(share)
    return [v if w else next(it) for v, w in zip(values, whole, strict=True)]


def _blocks(heads: list[Text], cells: list[list[Text]]) -> None:
    """Each row as `column  value` lines, for tables too wide for the terminal."""
    for n, row in enumerate(cells, 1):
        block = Table(box=None, show_header=False, padding=(0, 1, 0, 0))
        block.add_column(style="bold", no_wrap=True)
        block.add_column(overflow="fold")
        for h, v in zip(heads, row, strict=False):
            block.add_row(h, v)
        console.print(Text(f"-- {n} --", style="dim"))
        console.print(block)


def record_out(data: dict, fmt: Format = Format.table, title: str | None = None) -> None:
    """Print one summary object: key/value table, JSON object, or a one-row CSV."""
    if fmt == Format.json:
        print(json.dumps(data, default=_plain))
    elif fmt == Format.csv:
        flat = {k: v for k, v in data.items() if not isinstance(v, dict | list)}
        rows_out(list(flat), [list(flat.values())], fmt)
    else:
        t = Table(show_header=False)
        t.add_column(style="bold")
        t.add_column(overflow="fold")
        for k, v in data.items():
            if isinstance(v, dict | list):
                v = json.dumps(v, default=_plain) if v else "-"
            t.add_row(_cell(str(k).replace("_", " ")), _cell(v))
        _print_title(title)
        console.print(t)
