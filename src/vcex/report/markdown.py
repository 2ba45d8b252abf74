"""Markdown tables, written once for every page the benchmark scripts generate."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

ALIGNMENTS = {"": "---", "l": ":---", "c": ":---:", "r": "---:"}
MISSING = "–"  # a cell with no value (None)


def markdown_table(
    header: Sequence[str], rows: Iterable[Sequence[object]], align: Sequence[str] | str | None = None
) -> list[str]:
    """The lines of a GitHub Markdown table: ``| a | b |``, the separator, then one line per row.

    Cells are written with ``str`` (preformat numbers before), None as "–", and a literal ``|`` escaped.
    ``align``: one of "", "l", "c", "r" per column (or one string of such letters, e.g. "lrr"); default none.
    """
    if align is None:
        align = [""] * len(header)
    if len(align) != len(header):
        raise ValueError(f"align has {len(align)} entries for {len(header)} columns")
    unknown = sorted({a for a in align if a not in ALIGNMENTS})
    if unknown:
        raise ValueError(f"unknown alignment {unknown}: use '', 'l', 'c' or 'r'")
    lines = [_row(header), "|" + "".join(f"{ALIGNMENTS[a]}|" for a in align)]
    for number, row in enumerate(rows):
        if len(row) != len(header):
            raise ValueError(f"row {number} has {len(row)} cells for {len(header)} columns: {list(row)}")
        lines.append(_row(row))
    return lines


def _row(cells: Sequence[object]) -> str:
    return "| " + " | ".join(MISSING if cell is None else str(cell).replace("|", "\\|") for cell in cells) + " |"
