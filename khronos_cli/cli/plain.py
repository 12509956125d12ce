"""Tables without a terminal: full-width plain columns, for pipes, files and scripts.

Rich fits a table to the console's width (80 columns when stdout is a pipe): it cuts cells
(``1608/0/…``), folds headers and draws boxes. Without a terminal khronos prints the same
tables as plain aligned columns instead: a header row, then one line per row, two spaces between
columns, every cell whole and on one line, no box, no colour, no trailing spaces (``kubectl get``
and ``docker ps`` print this way), so ``khronos breakers | cat`` shows every number and ``awk``
can read the leading columns. A title is printed only above the tables of a group (``--all``),
where it says which replica a table is.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

from khronos_cli.cli.grid import Column, Group, Table, Text, terminal, to_rich

__all__ = ["lines", "show"]

GAP = "  "


def show(view: Table | Group | Text | str) -> None:
    """A view on stdout: drawn by rich for a terminal, plain columns for anything else (rich is
    imported only in the first case)."""
    if terminal() or not isinstance(view, Table | Group | Text | str):
        from khronos_cli.cli import output  # a terminal, or a renderable of rich's own

        output.stdout.print(to_rich(view))
        return
    sys.stdout.write("".join(line + "\n" for line in lines(view)))
    sys.stdout.flush()


def lines(renderable: Table | Group | Text | str) -> Iterator[str]:
    """The plain lines of a table, a group of them, or text."""
    if isinstance(renderable, Table):
        yield from _table(renderable)
    elif isinstance(renderable, Group):
        for number, part in enumerate(renderable.renderables):
            if number:
                yield ""
            if isinstance(part, Table) and part.title:
                yield _cell(part.title)
            yield from lines(part)
    else:
        text = renderable.plain if isinstance(renderable, Text) else str(renderable)
        yield from (line.rstrip() for line in text.split("\n"))


def _table(table: Table) -> Iterator[str]:
    header = table.show_header and any(_cell(column.header) for column in table.columns)
    columns = [
        [_cell(column.header)] * header + [_cell(cell) for cell in column.cells]
        for column in table.columns
    ]
    widths = [max((len(cell) for cell in cells), default=0) for cells in columns]
    for row in zip(*columns, strict=True):
        yield GAP.join(map(_fit, table.columns, row, widths)).rstrip()


def _fit(column: Column, text: str, width: int) -> str:
    if column.justify == "right":
        return text.rjust(width)
    if column.justify == "center":
        return text.center(width)
    return text.ljust(width)


def _cell(value: object) -> str:
    """A cell's text on one line: a Text's plain characters, a string as it is (never markup)."""
    text = value.plain if isinstance(value, Text) else str(value)
    return " ".join(text.split("\n")).strip()
