"""The one Markdown table formatter of the benchmark reports (gpu_check.md, docs/performance.md).

Every table the benchmark scripts write goes through :func:`markdown_table`: rows are mappings
from column name to value, cells are formatted by :func:`cell` (numbers a caller wants with a
fixed precision arrive as strings already), and numeric columns can be right-aligned.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from typing import Any


def cell(value: Any) -> str:
    """One table cell: ``-`` for ``None``, ``yes``/``no``, floats to 4 significant digits,
    sequences joined with commas; ``|`` and line breaks escaped so the row stays one row.

    Example:
        >>> [cell(None), cell(True), cell(1 / 3), cell([1, 2.5]), cell("a|b")]
        ['-', 'yes', '0.3333', '1, 2.5', 'a\\\\|b']
    """
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(cell(v) for v in value)
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[str] | None = None,
    *,
    right: Collection[str] = (),
) -> str:
    """``rows`` as a Markdown table.

    Args:
        rows: one mapping per row; a column a row lacks is shown as ``-``.
        columns: the columns, in order; default: every key, in order of first appearance.
        right: the columns to right-align (numbers).

    Example:
        >>> print(markdown_table([{"case": "a", "us": 1.23456}, {"case": "b", "ok": True}],
        ...                      right={"us"}))
        | case | us | ok |
        | --- | ---: | --- |
        | a | 1.235 | - |
        | b | - | yes |
    """
    if columns is None:
        columns = list(dict.fromkeys(key for row in rows for key in row))
    rule = ["---:" if name in right else "---" for name in columns]
    lines = ["| " + " | ".join(columns) + " |", "| " + " | ".join(rule) + " |"]
    lines += ["| " + " | ".join(cell(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines)
