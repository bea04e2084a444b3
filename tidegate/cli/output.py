"""How the list commands print: tables drawn by rich, or JSON with ``--json``.

On a terminal a table gets colours, and its free-text columns wrap to the terminal's width
(ids and names are never cut). When stdout is a pipe or a file
it is plain text: no colour, no wrapping, no truncation, columns separated by at least two
spaces and no trailing blanks, so ``grep``, ``awk`` and ``cut`` keep working. ``--json``
prints one JSON document whose timestamps are ISO 8601 and durations are seconds.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any, Literal, TypeVar

import click
from rich.cells import cell_len
from rich.console import Console
from rich.table import Table
from rich.text import Text

from tidegate.names import BackfillStatus, PartitionStatus, RunStatus, StepStatus

F = TypeVar("F", bound=Callable[..., Any])

WRAPPED_MIN_WIDTH = 24  # a free-text column on a narrow terminal wraps, but not narrower than this
PLAIN_WIDTH = 1_000_000  # wide enough that rich never wraps or cuts a row of a piped table

STATUS_STYLES: dict[str, str] = {
    StepStatus.SUCCEEDED: "green",
    StepStatus.FAILED: "red",
    StepStatus.SKIPPED: "yellow",
    StepStatus.RUNNING: "cyan",
    RunStatus.SUCCESS: "green",
    RunStatus.FAILURE: "red",
    RunStatus.CANCELED: "yellow",
    BackfillStatus.COMPLETED: "green",
    PartitionStatus.MATERIALIZED: "green",
    PartitionStatus.MISSING: "yellow",
}


@dataclass(frozen=True)
class Column:
    header: str
    justify: Literal["left", "right"] = "left"
    styled: bool = False  # colour the cell by its value (statuses) on a terminal
    wrap: bool = False  # free text that may wrap on a narrow terminal (ids and names never do)


def json_option(fn: F) -> F:
    """``--json``: print the rows as JSON instead of a table."""
    return click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")(fn)


def print_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, default=_jsonable))


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, tuple | set | frozenset):
        return list(value)
    return str(value)


def print_table(columns: Sequence[Column], rows: Iterable[Sequence[str]], *, header: bool = True) -> None:
    """Rows of cells under ``columns``; plain, aligned text when stdout is not a terminal."""
    terminal = sys.stdout.isatty()
    table = Table(box=None, pad_edge=False, show_header=header, header_style="bold" if terminal else "", padding=(0, 1))
    for column in columns:
        wraps = terminal and column.wrap
        table.add_column(column.header, justify=column.justify, no_wrap=not wraps, overflow="fold")
    texts = [list(row) for row in rows]
    for row in texts:
        cells = []
        for column, cell in zip(columns, row, strict=True):
            style = STATUS_STYLES.get(cell, "") if column.styled and terminal else ""
            cells.append(Text(cell, style=style))
        table.add_row(*cells)
    if terminal:
        console = Console(highlight=False)
        # Never narrower than the table's minimum: rich would cut ids and names to fit; the
        # terminal wraps a long line instead.
        console.width = max(console.width, _narrowest(columns, texts))
        console.print(table)
        return
    console = Console(width=PLAIN_WIDTH, no_color=True, highlight=False, force_terminal=False, color_system=None)
    with console.capture() as captured:
        console.print(table)
    for line in captured.get().splitlines():
        click.echo(line.rstrip())


def _narrowest(columns: Sequence[Column], rows: Sequence[Sequence[str]]) -> int:
    """The width below which rich would have to cut a column that must not wrap."""
    total = 2 * (len(columns) - 1)
    for index, column in enumerate(columns):
        widest = max([cell_len(column.header), *(cell_len(row[index]) for row in rows)])
        total += min(widest, WRAPPED_MIN_WIDTH) if column.wrap else widest
    return total
