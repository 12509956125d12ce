"""Tables as data: what the read commands show, before anything draws it.

The views (:mod:`.views`, :mod:`.replicas`, :mod:`.settings_view`) build these with rich's own
vocabulary (``Table``, ``add_column``, ``add_row``, ``Text``, ``append``, ``Group``), and nothing
here imports rich: on a terminal :func:`to_rich` hands them to rich to draw; anywhere else
:mod:`.plain` prints them as plain columns with the standard library alone, so ``khronos status
| cat`` never loads rich (about 40% of a read's CPU). :func:`terminal` makes rich's own choice
between the two, so both ways of running a command draw the same bytes.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any, Literal, TextIO

if TYPE_CHECKING:
    from rich.console import RenderableType

__all__ = ["Column", "Group", "Table", "Text", "terminal", "to_rich"]


class Text:
    """Plain text in styled spans, never markup (Telegram's and the worker's text is shown as
    it is)."""

    __slots__ = ("spans",)

    def __init__(self, text: str = "", style: str = "") -> None:
        self.spans: list[tuple[str, str]] = [(text, style)] if text else []

    def append(self, text: str, style: str = "") -> None:
        self.spans.append((text, style))

    @property
    def plain(self) -> str:
        return "".join(text for text, _ in self.spans)

    def __bool__(self) -> bool:
        return bool(self.plain)


Cell = str | Text
Justify = Literal["left", "center", "right"]


class Column:
    """A column's header, alignment, style and its cells, top to bottom."""

    __slots__ = ("cells", "header", "justify", "no_wrap", "style")

    def __init__(self, header: str, justify: Justify, style: str, no_wrap: bool) -> None:
        self.header, self.justify, self.style, self.no_wrap = header, justify, style, no_wrap
        self.cells: list[Cell] = []


class Table:
    """A table: a ``title`` above, columns, rows, and sections (a rule after some rows)."""

    def __init__(
        self,
        *headers: str,
        title: str | None = None,
        title_justify: Justify = "center",
        show_header: bool = True,
        box: bool | None = True,
        padding: tuple[int, int] | None = None,
    ) -> None:
        self.title, self.title_justify = title, title_justify
        self.show_header, self.box, self.padding = show_header, box, padding
        self.columns: list[Column] = []
        self.sections: set[int] = set()  # rows after which a section ends
        for header in headers:
            self.add_column(header)

    def add_column(
        self,
        header: str = "",
        *,
        justify: Justify = "left",
        style: str = "",
        no_wrap: bool = False,
    ) -> None:
        self.columns.append(Column(header, justify, style, no_wrap))

    def add_row(self, *cells: Cell) -> None:
        for column, cell in zip(self.columns, cells, strict=True):
            column.cells.append(cell)

    def add_section(self) -> None:
        self.sections.add(len(self.columns[0].cells) - 1 if self.columns else -1)


class Group:
    """Several tables, one after the other."""

    def __init__(self, *renderables: Table | Text) -> None:
        self.renderables = list(renderables)


def terminal(stream: TextIO | None = None) -> bool:
    """Whether rich would draw for a terminal on ``stream`` (stdout): ``TTY_COMPATIBLE``, then
    ``FORCE_COLOR``, then ``isatty()``, as ``rich.console.Console.is_terminal`` decides."""
    compatible = os.environ.get("TTY_COMPATIBLE", "")
    if compatible in ("0", "1"):
        return compatible == "1"
    force = os.environ.get("FORCE_COLOR")
    if force is not None:
        return force != ""
    isatty = getattr(stream or sys.stdout, "isatty", None)
    try:
        return False if isatty is None else bool(isatty())
    except ValueError:  # a closed stream
        return False


def to_rich(view: Any) -> RenderableType:
    """The rich renderable that draws ``view`` (a Table, Group, Text or str)."""
    from rich.console import Group as RichGroup
    from rich.table import Table as RichTable
    from rich.text import Text as RichText

    if isinstance(view, Group):
        return RichGroup(*(to_rich(part) for part in view.renderables))
    if isinstance(view, Text):
        text = RichText()
        for part, style in view.spans:
            text.append(part, style or None)
        return text
    if isinstance(view, str):
        return view
    if not isinstance(view, Table):
        return view  # type: ignore[no-any-return]  # already rich's
    options: dict[str, Any] = {"show_header": view.show_header}
    if view.title is not None:
        options.update(title=view.title, title_justify=view.title_justify)
    if view.box is None:
        options["box"] = None
    if view.padding is not None:
        options["padding"] = view.padding
    table = RichTable(**options)
    for column in view.columns:
        table.add_column(
            column.header,
            justify=column.justify,
            style=column.style or None,
            no_wrap=column.no_wrap,
        )
    rows = zip(*(column.cells for column in view.columns), strict=True)
    for number, row in enumerate(rows):
        table.add_row(*(to_rich(Text(cell) if isinstance(cell, str) else cell) for cell in row))
        if number in view.sections:
            table.add_section()
    return table
