"""How the CLI prints a result on stdout: JSON (for scripts and pipes) or a table (for people)."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from typing import Any, TextIO

__all__ = ["emit"]

_CELL = 80  # longest cell of a table of rows; a key/value table shows values whole


def _compact(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, default=str, separators=(",", ":"))


def _flatten(doc: Mapping[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    for key, value in doc.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            rows += _flatten(value, f"{name}.")
        else:
            rows.append((name, _compact(value)))
    return rows


def _one_line(text: str, width: int) -> str:
    text = " ⏎ ".join(part.strip() for part in text.splitlines() if part.strip())
    return text if len(text) <= width else text[: width - 1] + "…"


def _grid(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def table(doc: Any) -> str:
    """A list of objects as rows and columns; an object as key/value lines (nested keys dotted)."""
    if isinstance(doc, list):
        if not doc:
            return "(none)"
        columns: list[str] = []
        for row in doc:
            columns += [key for key in row if key not in columns]
        cells = [[_one_line(_compact(row.get(c)), _CELL) for c in columns] for row in doc]
        return _grid(columns, cells)
    if isinstance(doc, Mapping):
        pairs = [[key, " ⏎ ".join(value.splitlines())] for key, value in _flatten(doc)]
        return _grid(["field", "value"], pairs)
    return _compact(doc)


def emit(doc: Any, fmt: str = "json", stream: TextIO | None = None) -> None:
    """Print a command's result on stdout."""
    out = stream or sys.stdout
    out.write((table(doc) if fmt == "table" else json.dumps(doc, indent=2, default=str)) + "\n")
    out.flush()
