"""Building blocks of the report's template context: tables, figures, notes, sections."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

import pandas as pd

from irm_bench.report import formatting as f


@dataclass
class Table:
    """A table to render: an id, a caption, header cells and rows of cell strings."""

    id: str
    caption: str
    header: list[str]
    rows: list[list[str]]
    number: int = 0
    kind: ClassVar[str] = "table"


@dataclass
class Figure:
    """An inline-SVG figure with its number and caption."""

    id: str
    svg: str
    caption: str
    number: int = 0
    kind: ClassVar[str] = "figure"


@dataclass
class Note:
    """A paragraph of text."""

    text: str
    kind: ClassVar[str] = "note"


@dataclass
class Section:
    """One section (or subsection) of the report: blocks in reading order."""

    id: str
    title: str
    blocks: list[Note | Figure | Table] = field(default_factory=list)
    subsections: list[Section] = field(default_factory=list)

    def add(self, block: Note | Figure | Table) -> None:
        self.blocks.append(block)

    def walk(self) -> list[Note | Figure | Table]:
        """Blocks of this section and its subsections, in reading order."""
        out = list(self.blocks)
        for sub in self.subsections:
            out += sub.walk()
        return out


def add_figure(sec: Section, frame: pd.DataFrame, what: str, build: Callable[[], Figure]) -> None:
    """Add the figure ``build()`` draws, or a note when its table has no rows."""
    if frame.empty:
        sec.add(Note(f"No {what} in this run: its table has no rows."))
    else:
        sec.add(build())


def plus_minus(mean: str, std: str) -> str:
    return mean if std == f.MISSING else f"{mean} ± {std}"


def protocols_of(frame: pd.DataFrame) -> str:
    return ", ".join(sorted(set(frame["protocol"].astype(str))))
