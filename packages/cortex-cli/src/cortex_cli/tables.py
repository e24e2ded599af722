"""Aligned text tables, and colour only on a TTY and never with NO_COLOR."""

import re
import sys
from collections.abc import Callable, Sequence
from typing import Any

import click

__all__ = ["Paint", "ago", "color_option", "isatty", "paint", "table"]

Paint = Callable[[str], str]
"""Colours one cell's text (or leaves it as it is)."""

_COLOURS = {
    "up": "green",
    "loaded": "green",
    "down": "red",
    "failed": "red",
    "cordoned": "yellow",
    "draining": "yellow",
    "loading": "cyan",
    "unloading": "cyan",
}
_WORDS = re.compile(r"\b(" + "|".join(_COLOURS) + r")\b")


def isatty() -> bool:
    """Whether standard output is a terminal (a seam: tests cannot give CliRunner one)."""
    return sys.stdout.isatty()


def paint(enabled: bool) -> Paint:
    """A painter colouring the state words (``up``, ``loaded``, ``down``...) of a cell."""

    def colour(text: str) -> str:
        return _WORDS.sub(lambda m: click.style(m[0], fg=_COLOURS[m[0]]), text)

    return colour if enabled else str


def table(rows: Sequence[Sequence[str]], painted: Sequence[int] = (), colour: Paint = str) -> str:
    """Columns padded to their widest cell; the cells in columns ``painted`` go through ``colour``.

    Padding is computed on the plain text, so colour codes never shift a column.
    """
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for n, row in enumerate(rows):
        cells = []
        for i, (cell, width) in enumerate(zip(row, widths, strict=True)):
            pad = " " * (width - len(cell))
            cells.append((colour(cell) if n and i in painted else cell) + pad)
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def ago(moment: float | None, now: float) -> str:
    """``3 s ago``, ``5 min ago``, ``2 h ago``; ``never`` for no moment."""
    if moment is None:
        return "never"
    seconds = max(0.0, now - moment)
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.0f} h ago"


def color_option(command: Callable[..., Any]) -> Callable[..., Any]:
    """``--color/--no-color``; by default colour on a TTY unless ``NO_COLOR`` is set (non-empty).

    ``NO_COLOR`` is read through click (``envvar``), as the CLI reads all of its environment.
    """

    def remember(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
        ctx.meta["cortex.no_color"] = bool(value)

    def decide(ctx: click.Context, _param: click.Parameter, value: bool | None) -> bool:
        if value is not None:
            return value
        return not ctx.meta.get("cortex.no_color") and isatty()

    command = click.option(
        "--color/--no-color",
        "color",
        default=None,
        callback=decide,
        help="Colour the states (default: on a terminal, unless NO_COLOR is set).",
    )(command)
    return click.option(
        "--no-color-env",
        envvar="NO_COLOR",
        hidden=True,
        is_eager=True,
        expose_value=False,
        callback=remember,
    )(command)
