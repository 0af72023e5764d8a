"""Printing data the way the ``openstack`` client does: tables for people, JSON/YAML for scripts.

Every command that prints data adds the shared options with
:func:`add_format_options` (``-f table|json|yaml``, ``-c COLUMN`` repeatable)
and prints through :func:`render_table` (a list) or :func:`render_one` (one
object). Column names are the human headers (``Auth URL``), and JSON/YAML use
the same names as keys, as the ``openstack`` client does.
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import json
import sys
import unicodedata
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

import yaml
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from stackhop.errors import StackhopError, UsageError

FORMATS = ("table", "json", "yaml")


def add_format_options(parser: argparse.ArgumentParser, *, columns: bool = True) -> None:
    """Add ``-f/--format`` and (unless ``columns=False``) ``-c/--column`` to a command."""
    group = parser.add_argument_group("output formatters")
    group.add_argument(
        "-f",
        "--format",
        choices=FORMATS,
        default="table",
        dest="format",
        help="output format (default: table)",
    )
    if columns:
        group.add_argument(
            "-c",
            "--column",
            action="append",
            dest="columns",
            metavar="COLUMN",
            help="show only this column (repeat to show several)",
        )


def plain(value: Any) -> Any:
    """Turn dataclasses, enums, tuples and mappings into JSON/YAML-ready values."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return plain(value.value)
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [plain(v) for v in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def dump(data: Any, fmt: str, stream: TextIO) -> None:
    """Write a whole document as JSON or YAML (for results that are not one table)."""
    data = plain(data)
    if fmt == "json":
        json.dump(data, stream, indent=2, sort_keys=False)
        stream.write("\n")
    elif fmt == "yaml":
        yaml.safe_dump(data, stream, sort_keys=False, default_flow_style=False)
    else:
        raise UsageError(f"format {fmt!r} cannot show this result; use -f json or -f yaml")


def select_columns(columns: Sequence[str], wanted: Sequence[str] | None) -> list[str]:
    """The columns ``-c`` asks for, matched case-insensitively, in the order asked."""
    if not wanted:
        return list(columns)
    by_lower = {c.lower(): c for c in columns}
    chosen = []
    for w in wanted:
        col = by_lower.get(w.lower())
        if col is None:
            raise UsageError(f"no column {w!r}; columns are: {', '.join(columns)}")
        chosen.append(col)
    return chosen


def _cell(value: Any, styles: Mapping[str, str] | None) -> Text:
    # Values become Text, never markup: a "[...]" in a name must print as is.
    if value is None:
        return Text("")
    if isinstance(value, list | tuple):
        text = "\n".join(str(v) for v in value)
    elif isinstance(value, Mapping):
        text = "\n".join(f"{k}={v}" for k, v in value.items())
    elif isinstance(value, bool):
        text = "yes" if value else "no"
    else:
        text = str(value)
    return Text(text, style=(styles or {}).get(text, ""))


def _console(stream: TextIO) -> Console:
    terminal = stream.isatty()
    # Off a terminal, never fold lines: scripts grep and cut what we print.
    return Console(file=stream, width=None if terminal else 10_000, soft_wrap=False)


def _table(stream: TextIO) -> Table:
    return Table(box=box.ROUNDED if stream.isatty() else box.ASCII, show_lines=False)


def _print(table: Table, title: str | None, stream: TextIO) -> None:
    console = _console(stream)
    if title:
        # A separate line: rich pads a table title with spaces to the table's width.
        console.print(Text(title, style="bold"))
    console.print(table)


def render_table(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[str],
    fmt: str,
    stream: TextIO | None = None,
    *,
    selected: Sequence[str] | None = None,
    title: str | None = None,
    styles: Mapping[str, str] | None = None,
) -> None:
    """Print a list of objects: a table, or a JSON/YAML list of mappings.

    ``columns`` are the headers, in order, and the keys looked up in each row;
    ``selected`` is what ``-c`` asked for. ``styles`` maps a cell text (e.g.
    ``missing``) to a rich style, used on terminals only.
    """
    stream = stream or sys.stdout
    cols = select_columns(columns, selected)
    if fmt != "table":
        dump([{c: row.get(c) for c in cols} for row in rows], fmt, stream)
        return
    table = _table(stream)
    for c in cols:
        table.add_column(c, overflow="fold")
    for row in rows:
        table.add_row(*(_cell(row.get(c), styles) for c in cols))
    _print(table, title, stream)


def render_one(
    mapping: Mapping[str, Any],
    fmt: str,
    stream: TextIO | None = None,
    *,
    selected: Sequence[str] | None = None,
    title: str | None = None,
) -> None:
    """Print one object: a Field/Value table, or a JSON/YAML mapping."""
    stream = stream or sys.stdout
    keys = select_columns(list(mapping), selected)
    if fmt != "table":
        dump({k: mapping[k] for k in keys}, fmt, stream)
        return
    table = _table(stream)
    table.add_column("Field")
    table.add_column("Value", overflow="fold")
    for k in keys:
        table.add_row(Text(k), _cell(mapping[k], None))
    _print(table, title, stream)


def printable(text: str) -> str:
    """``text`` with control and format characters (newlines, right-to-left overrides, which
    names from a cloud may hold) shown as escapes, so a name cannot forge or reorder a line."""
    return "".join(
        c.encode("unicode_escape").decode("ascii") if unicodedata.category(c)[0] == "C" else c
        for c in text
    )


def error_line(exc: StackhopError | str) -> str:
    """The one line an error prints as: ``stackhop: <message>``."""
    message = exc.message if isinstance(exc, StackhopError) else exc
    return "stackhop: " + printable(" ".join(str(message).split()))


def report_error(exc: StackhopError | str, stream: TextIO | None = None) -> None:
    """Print an error as its one line (to stderr by default)."""
    print(error_line(exc), file=stream or sys.stderr)
