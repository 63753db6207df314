"""The command line's tables: a header row, columns as wide as their widest cell, two spaces
between them, the last column never padded or cut; colour only on a terminal (click removes
styles when the output is not one). And the ``-o table|wide|json|yaml`` choice every command
that prints a table takes."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import click

# A cell: its text, or (text, colour) with a click colour name
Cell = str | tuple[str, str]

STATE_COLOURS = {
    "ok": "green",
    "succeeded": "green",
    "measured": "green",
    "running": "cyan",
    "pending": "cyan",
    "failed": "red",
    "timed_out": "red",
    "lost": "red",
    "INVALID": "red",
    "suspended": "yellow",
    "cancelled": "yellow",
    "interrupted": "yellow",
    "missed": "yellow",
    "overdue": "red",
}

OUTPUT = click.option(
    "-o",
    "--output",
    "output",
    type=click.Choice(["table", "wide", "json", "yaml"]),
    default="table",
    show_default=True,
    help="table, wide (more columns), json or yaml.",
)


def coloured(text: str, key: str | None = None) -> Cell:
    """``text`` in the colour its state (or ``key``) has, if any."""
    colour = STATE_COLOURS.get(key or text.split(" ", 1)[0].split(",", 1)[0])
    return (text, colour) if colour else text


def render(headers: Sequence[str], rows: Sequence[Sequence[Cell]]) -> list[str]:
    """The table's lines (styled cells carry ANSI codes, stripped off a terminal)."""
    plain = [[c if isinstance(c, str) else c[0] for c in row] for row in rows]
    widths = [len(h) for h in headers]
    for texts in plain:
        for i, text in enumerate(texts[:-1]):
            widths[i] = max(widths[i], len(text))
    lines = [
        "  ".join(h.ljust(w) for h, w in zip(headers[:-1], widths, strict=False))
        + "  "
        + headers[-1]
    ]
    for cells_in, texts in zip(rows, plain, strict=True):
        cells = []
        for i, (cell, text) in enumerate(zip(cells_in, texts, strict=True)):
            padded = text if i == len(cells_in) - 1 else text.ljust(widths[i])
            cells.append(click.style(padded, fg=cell[1]) if isinstance(cell, tuple) else padded)
        lines.append("  ".join(cells).rstrip())
    return lines


def echo_table(headers: Sequence[str], rows: Sequence[Sequence[Cell]]) -> None:
    for line in render(headers, rows):
        click.echo(line)


def echo_data(data: Any, output: str) -> None:
    """``data`` as JSON or YAML (the machine-readable forms of every table)."""
    if output == "yaml":
        import yaml

        click.echo(yaml.safe_dump(data, sort_keys=False, default_flow_style=False), nl=False)
    else:
        click.echo(json.dumps(data, indent=2, default=str))
