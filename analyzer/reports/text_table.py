"""Plain-text tables for the reports: aligned columns, names left and numbers right."""

from __future__ import annotations


def cell(value: object) -> str:
    """A value as a table shows it: '-' for none, floats short (4 decimals under 1, else whole)."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}" if value < 1 else f"{value:.0f}"
    return str(value)


def table(header: list[str], rows: list[tuple], left: int = 2) -> list[str]:
    """The lines of a table: the header, a rule, the rows; the first `left` columns (names)
    left-aligned, the others (numbers) right-aligned."""
    cells = [header] + [[cell(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]

    def fmt(row: list[str]) -> str:
        return "  ".join(c.ljust(w) if i < left else c.rjust(w)
                         for i, (c, w) in enumerate(zip(row, widths, strict=True))).rstrip()

    return [fmt(cells[0]), fmt(["-" * w for w in widths])] + [fmt(r) for r in cells[1:]]
