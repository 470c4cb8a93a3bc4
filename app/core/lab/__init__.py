"""Reasoning-effort experiments: the same prompts at several efforts and seeds, measured, resumable, exported.

The package is split by job: ``spec`` (the experiment definition, the model it ran on, one run's
result), ``stats`` (spreads, per-effort summaries, the time left), ``experiment`` (the experiment
and its runs, JSON/CSV export), ``files`` (the append-only experiment file), ``reading`` (opening
files and exports), ``events`` (what the runner reports), ``recorder`` (tokens and their channels)
and ``runner`` (``run_one``, ``run_experiment``). Import from ``app.core.lab``; the modules are its inside.
"""

from __future__ import annotations

from app.core.lab.events import (
    ExperimentStarted,
    ExperimentStopped,
    LabEvent,
    Progress,
    RunDelta,
    RunFinished,
    RunStarted,
)
from app.core.lab.experiment import CSV_COLUMNS, Experiment
from app.core.lab.files import FORMAT, VERSION, ExperimentFile, default_experiment_path
from app.core.lab.reading import open_experiment
from app.core.lab.runner import run_experiment, run_one
from app.core.lab.spec import (
    FINAL,
    MAX_RUNS_PER_EFFORT,
    OTHER,
    PREAMBLE,
    REASONING,
    SINGLE_PROMPT_ID,
    ExperimentSpec,
    LabError,
    ModelRef,
    RunKey,
    RunResult,
    machine_info,
    sampling_dict,
)
from app.core.lab.stats import EffortSummary, EtaEstimator, Spread, spread, summarize

__all__ = [
    "CSV_COLUMNS",
    "FINAL",
    "FORMAT",
    "MAX_RUNS_PER_EFFORT",
    "OTHER",
    "PREAMBLE",
    "REASONING",
    "SINGLE_PROMPT_ID",
    "VERSION",
    "EffortSummary",
    "EtaEstimator",
    "Experiment",
    "ExperimentFile",
    "ExperimentSpec",
    "ExperimentStarted",
    "ExperimentStopped",
    "LabError",
    "LabEvent",
    "ModelRef",
    "Progress",
    "RunDelta",
    "RunFinished",
    "RunKey",
    "RunResult",
    "RunStarted",
    "Spread",
    "default_experiment_path",
    "machine_info",
    "open_experiment",
    "run_experiment",
    "run_one",
    "sampling_dict",
    "spread",
    "summarize",
]
