"""What a running experiment reports: start, each run's text and result, progress, the stop."""

from __future__ import annotations

from dataclasses import dataclass

from app.core.lab.spec import RunKey, RunResult


@dataclass(frozen=True)
class ExperimentStarted:
    """The runner begins: `done` of `total` runs were already finished (resume)."""

    total: int
    done: int


@dataclass(frozen=True)
class RunStarted:
    key: RunKey
    seed: int
    position: int  # 1-based position of this run in the plan


@dataclass(frozen=True)
class RunDelta:
    """Text generated since the last RunDelta of this run (batched, a few per second)."""

    key: RunKey
    reasoning: str = ""
    final: str = ""


@dataclass(frozen=True)
class RunFinished:
    """A run ended and was recorded; result.error says when it failed."""

    result: RunResult


@dataclass(frozen=True)
class Progress:
    """done/total finished runs; fraction also counts the run in progress; eta_s None = not known yet."""

    done: int
    total: int
    fraction: float
    eta_s: float | None
    elapsed_s: float


@dataclass(frozen=True)
class ExperimentStopped:
    """The runner ended: reason is "complete", "cancelled" or "error" (message says why)."""

    reason: str
    message: str = ""


LabEvent = ExperimentStarted | RunStarted | RunDelta | RunFinished | Progress | ExperimentStopped
