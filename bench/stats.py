"""Figures of a benchmark: samples, their median and spread, and the target they are held against."""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from typing import Literal

from attrs import field, frozen

__all__ = ["Figure", "Result", "Target", "fmt", "medians"]


def _floats(values: Iterable[float]) -> tuple[float, ...]:
    return tuple(float(v) for v in values)


def _figures(values: Iterable[Figure]) -> tuple[Figure, ...]:
    return tuple(values)


def _targets(values: Iterable[Target]) -> tuple[Target, ...]:
    return tuple(values)


@frozen
class Figure:
    """One measured quantity: its samples (one per run) in ``unit``; the median is the figure reported."""

    name: str
    unit: str
    samples: tuple[float, ...] = field(converter=_floats)

    def __attrs_post_init__(self) -> None:
        if not self.samples:
            raise ValueError(f"figure {self.name!r} has no samples: a benchmark must run at least once")

    @property
    def median(self) -> float:
        """The median of the samples."""
        return statistics.median(self.samples)

    @property
    def low(self) -> float:
        """The smallest sample."""
        return min(self.samples)

    @property
    def high(self) -> float:
        """The largest sample."""
        return max(self.samples)

    @property
    def runs(self) -> int:
        """How many samples there are."""
        return len(self.samples)

    def spread(self) -> str:
        """``min–max`` of the samples, in the figure's unit, for the tables."""
        return f"{_fmt(self.low)}–{_fmt(self.high)}"


@frozen
class Target:
    """What a figure should be: ``at most`` or ``at least`` ``limit`` (in the figure's unit)."""

    figure: str
    bound: Literal["at most", "at least"]
    limit: float

    def met(self, value: float) -> bool:
        """Whether ``value`` meets the target."""
        return value <= self.limit if self.bound == "at most" else value >= self.limit

    def describe(self, unit: str) -> str:
        """``≤ 5 ms`` or ``≥ 50 %``."""
        sign = "≤" if self.bound == "at most" else "≥"
        return f"{sign} {_fmt(self.limit)} {unit}".rstrip()


@frozen
class Result:
    """One benchmark's outcome: its figures, targets (possibly none) and notes (what was measured, how)."""

    key: str
    title: str
    figures: tuple[Figure, ...] = field(converter=_figures)
    targets: tuple[Target, ...] = field(converter=_targets, factory=tuple)
    notes: str = ""
    skipped: str | None = None  # why the benchmark could not run here, if it did not

    def figure(self, name: str) -> Figure:
        """The figure called ``name``; ``KeyError`` naming the known ones."""
        for figure in self.figures:
            if figure.name == name:
                return figure
        raise KeyError(f"{self.key} has no figure {name!r}; it has {[f.name for f in self.figures]}")


def _fmt(value: float) -> str:
    """A figure with about three significant digits."""
    if value == 0:
        return "0"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    if abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def fmt(value: float) -> str:
    """Public alias of the figure formatter, for the report."""
    return _fmt(value)


def medians(values: Sequence[float]) -> float:
    """The median of ``values`` (a shorthand used by the benchmarks)."""
    return statistics.median(values)
