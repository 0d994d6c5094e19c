"""One table builder for every result file: rows of records × columns, each cell a reducer over its
row's records, written as a markdown table (and, by the caller, beside it as JSON)."""
from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Column:
    """A column: its header, the reducer that turns a row (its label and records) into the cell's
    text, and whether numbers in it align right."""

    header: str
    cell: Callable[[object, list], str]
    right: bool = False


def markdown(columns: list[Column], rows: list[tuple[object, list]]) -> list[str]:
    """The markdown lines of a table: one row per ``(label, records)``."""
    lines = ["|" + "|".join(f" {c.header} " if c.header else " " for c in columns) + "|",
             "|" + "|".join("---:" if c.right else "---" for c in columns) + "|"]
    return lines + ["| " + " | ".join(c.cell(label, records) for c in columns) + " |" for label, records in rows]


def summarize(values: list[float]) -> dict:
    """``{"mean", "std"}`` of a column's values for a JSON summary (std None for one value)."""
    return {"mean": statistics.mean(values), "std": statistics.stdev(values) if len(values) > 1 else None}
