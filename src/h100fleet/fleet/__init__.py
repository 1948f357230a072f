"""Control-node code that looks at the fleet as a whole."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

MISSING = "-"


def markdown_table(columns: Sequence[tuple[str, str]], rows: Iterable[Mapping[str, object]]) -> list[str]:
    """A Markdown table: a header of titles, then one line per row with its values in column order ("|" escaped,
    missing values as "-"). columns: (key, title) pairs."""
    lines = [
        "| " + " | ".join(title for _, title in columns) + " |",
        "|" + "|".join("---" for _ in columns) + "|",
    ]
    for row in rows:
        cells = (str(row.get(key, MISSING)).replace("|", "\\|") for key, _ in columns)
        lines.append("| " + " | ".join(cells) + " |")
    return lines
