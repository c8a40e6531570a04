"""Plain-text tables for the terminal: every column as wide as its widest cell."""

from __future__ import annotations


def printable(text: str) -> str:
    """``text`` with each character a terminal would act on (a line break, a tab, an escape
    sequence's ESC) written as its escape, ``\\n``, ``\\x1b``: names are data, shown whole."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii")
                   for c in text)


def format_table(header: list[str], rows: list[list[str]], left: int = 1) -> list[str]:
    """The lines of a table of ``header`` and ``rows`` (cells already text; shown
    :func:`printable`), columns two spaces apart: the first ``left`` columns aligned left
    (names), the others right (numbers)."""
    header, rows = [printable(str(c)) for c in header], [[printable(str(c)) for c in r] for r in rows]
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(str(c).ljust(w) if i < left else str(c).rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    return [line(header), *(line(r) for r in rows)]
