"""Figures from finished runs: spreads, per-effort summaries and the time left."""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from app.core.lab.spec import RunResult


@dataclass(frozen=True)
class Spread:
    """Mean, sample standard deviation (0 for one value), minimum and maximum of n values."""

    n: int
    mean: float
    stdev: float
    min: float
    max: float

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def spread(values: Iterable[float | int | None]) -> Spread | None:
    """Spread of the values that are not None; None when there are none."""
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not vals:
        return None
    sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
    return Spread(len(vals), statistics.fmean(vals), sd, min(vals), max(vals))


@dataclass(frozen=True)
class EffortSummary:
    """The figures of one effort across all its finished runs."""

    effort: str
    planned: int
    finished: int
    errors: int
    checked: int  # finished runs whose problem has a checker
    correct: int
    reasoning_tokens: Spread | None
    final_tokens: Spread | None
    total_s: Spread | None
    first_final_s: Spread | None
    tokens_per_s: Spread | None

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.checked if self.checked else None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "effort": self.effort,
            "planned": self.planned,
            "finished": self.finished,
            "errors": self.errors,
            "checked": self.checked,
            "correct": self.correct,
            "accuracy": self.accuracy,
        }
        for name in ("reasoning_tokens", "final_tokens", "total_s", "first_final_s", "tokens_per_s"):
            s = getattr(self, name)
            d[name] = s.to_dict() if s else None
        return d


def summarize(
    results: Sequence[RunResult], efforts: Sequence[str], planned_per_effort: int = 0
) -> dict[str, EffortSummary]:
    """Per-effort figures; failed runs are counted as errors and left out of every figure."""
    out: dict[str, EffortSummary] = {}
    for e in efforts:
        runs = [r for r in results if r.effort == e]
        ok = [r for r in runs if r.ok]
        graded = [r for r in ok if r.correct is not None]
        out[e] = EffortSummary(
            effort=e,
            planned=planned_per_effort,
            finished=len(ok),
            errors=len(runs) - len(ok),
            checked=len(graded),
            correct=sum(1 for r in graded if r.correct),
            reasoning_tokens=spread(r.reasoning_tokens for r in ok),
            final_tokens=spread(r.final_tokens for r in ok),
            total_s=spread(r.total_s for r in ok),
            first_final_s=spread(r.first_final_s for r in ok),
            tokens_per_s=spread(r.tokens_per_s for r in ok if r.tokens_per_s),
        )
    return out


class EtaEstimator:
    """Remaining time from measured run durations, per effort (high runs take longer than low)."""

    def __init__(self, results: Iterable[RunResult] = ()) -> None:
        self._durations: dict[str, list[float]] = {}
        for r in results:
            if r.ok:
                self.add(r.effort, r.total_s)

    def add(self, effort: str, seconds: float) -> None:
        self._durations.setdefault(effort, []).append(seconds)

    def expected(self, effort: str) -> float | None:
        d = self._durations.get(effort)
        if d:
            return statistics.fmean(d)
        every = [x for v in self._durations.values() for x in v]
        return statistics.fmean(every) if every else None

    def eta(self, remaining: Sequence[str], current: str | None = None, elapsed: float = 0.0) -> float | None:
        """Seconds left for the efforts in `remaining` plus what is left of the `current` run."""
        total = 0.0
        for e in remaining:
            x = self.expected(e)
            if x is None:
                return None
            total += x
        if current is not None:
            x = self.expected(current)
            if x is None:
                return None
            total += max(0.0, x - elapsed)
        return total
