"""The experiment definition (problems × efforts × seeds, the model it ran on) and one run's result."""

from __future__ import annotations

import dataclasses
import os
import platform
import time
import uuid
from dataclasses import dataclass, field
from datetime import date as Date
from pathlib import Path
from typing import Any

from app.core.chat import EFFORTS
from app.core.engine import ModelInfo, Sampling
from app.core.errors import HarmonicaError
from app.core.problem_sets import Problem, ProblemError
from app.core.scripted_engine import is_scripted_path

MAX_RUNS_PER_EFFORT = 1000
SINGLE_PROMPT_ID = "prompt"

# One character per generated token in RunResult.channels: what the parser made of that token.
REASONING, FINAL, PREAMBLE, OTHER = "r", "f", "c", "-"

RunKey = tuple[str, str, int]  # (problem id, effort, repeat index)


class LabError(HarmonicaError):
    """A problem with an experiment that the user can act on; the message is for people."""


# =================================================================================================
# Model identity
# =================================================================================================
@dataclass
class ModelRef:
    """Which model file an experiment ran on; sha256 is filled in once it is known."""

    file: str
    path: str
    size: int
    name: str = ""
    description: str = ""
    n_ctx: int = 0
    sha256: str | None = None

    @classmethod
    def from_info(cls, info: ModelInfo) -> ModelRef:
        p = str(info.path)
        return cls(
            file=Path(p).name if info.source == "file" else p,
            path=p,
            size=info.size_bytes,
            name=info.name,
            description=info.description,
            n_ctx=info.n_ctx,
        )

    @property
    def is_file(self) -> bool:
        return bool(self.path) and not is_scripted_path(self.path) and Path(self.path).is_file()

    def same_model(self, other: ModelRef) -> bool:
        return self.file == other.file and self.size == other.size

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelRef:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def machine_info() -> dict[str, Any]:
    """Where the figures were measured (times mean little without it)."""
    info: dict[str, Any] = {
        "os": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count() or 0,
        "python": platform.python_version(),
    }
    try:
        from importlib.metadata import version

        info["llama_cpp_python"] = version("llama_cpp_python")
    except Exception:  # noqa: BLE001 - not installed (scripted runs) or odd metadata
        pass
    return info


# =================================================================================================
# The experiment definition and its results
# =================================================================================================
_SAMPLING_FIELDS = ("temperature", "top_p", "top_k", "min_p", "repeat_penalty", "max_tokens")


def sampling_dict(s: Sampling) -> dict[str, Any]:
    return {k: getattr(s, k) for k in ("seed", *_SAMPLING_FIELDS)}


@dataclass
class ExperimentSpec:
    """What to run: problems × efforts × repeats, with one base seed (run i uses seed + i)."""

    problems: list[Problem]
    efforts: list[str]
    runs: int = 1
    instructions: str = ""
    seed: int = 1
    sampling: Sampling = field(default_factory=Sampling)
    problem_set: str | None = None  # the set's name; None for a single prompt
    date: str = field(default_factory=lambda: Date.today().isoformat())  # "Current date" in every prompt
    model: ModelRef | None = None
    machine: dict[str, Any] = field(default_factory=dict)
    grammar: str | None = None  # GBNF forcing the output shape (tests with random-weight models)
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    created: float = field(default_factory=time.time)
    title: str = ""

    def validate(self) -> None:
        if not self.problems:
            raise LabError("There is nothing to run: enter a prompt or choose a problem set.")
        ids = [p.id for p in self.problems]
        if len(set(ids)) != len(ids):
            raise LabError("Two problems share an id; every problem needs its own.")
        if not self.efforts:
            raise LabError("Choose at least one reasoning effort.")
        bad = [e for e in self.efforts if e not in EFFORTS]
        if bad:
            raise LabError(f"Unknown reasoning effort {bad[0]!r}; choose low, medium or high.")
        if len(set(self.efforts)) != len(self.efforts):
            raise LabError("An effort is listed twice.")
        if not 1 <= self.runs <= MAX_RUNS_PER_EFFORT:
            raise LabError(f"Runs per effort must be between 1 and {MAX_RUNS_PER_EFFORT}.")
        if not 0 <= self.seed <= 0xFFFFFFFF - self.runs:
            raise LabError("The seed must be a whole number from 0 to 4,294,967,295 (minus the number of runs).")
        try:
            Date.fromisoformat(self.date)
        except ValueError:
            raise LabError(f"The experiment's date {self.date!r} is not a valid date.") from None

    @property
    def date_value(self) -> Date:
        return Date.fromisoformat(self.date)

    def seed_for(self, repeat: int) -> int:
        # The same seeds at every effort and for every problem: run i of low and run i of high
        # differ only in the effort, which is what the comparison is about.
        return self.seed + repeat

    def problem(self, problem_id: str) -> Problem:
        for p in self.problems:
            if p.id == problem_id:
                return p
        raise KeyError(problem_id)

    @property
    def checked(self) -> bool:
        """True when at least one problem has a checker (accuracy means something)."""
        return any(p.check is not None for p in self.problems)

    def plan(self) -> list[RunKey]:
        """Every run, in the order they are run: problem by problem, repeat by repeat, effort by
        effort, so a cancelled experiment still holds comparable runs at every effort."""
        return [(p.id, e, r) for p in self.problems for r in range(self.runs) for e in self.efforts]

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "created": self.created,
            "date": self.date,
            "problem_set": self.problem_set,
            "problems": [p.to_dict() for p in self.problems],
            "efforts": list(self.efforts),
            "runs": self.runs,
            "instructions": self.instructions,
            "seed": self.seed,
            "sampling": {k: getattr(self.sampling, k) for k in _SAMPLING_FIELDS},
            "model": self.model.to_dict() if self.model else None,
            "machine": dict(self.machine),
            "grammar": self.grammar,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ExperimentSpec:
        try:
            problems = [Problem.from_dict(p) for p in d["problems"]]
            s = d.get("sampling") or {}
            sampling = Sampling(**{k: s[k] for k in _SAMPLING_FIELDS if k in s})
            spec = cls(
                problems=problems,
                efforts=[str(e) for e in d["efforts"]],
                runs=int(d.get("runs", 1)),
                instructions=str(d.get("instructions") or ""),
                seed=int(d.get("seed", 1)),
                sampling=sampling,
                problem_set=d.get("problem_set"),
                date=str(d.get("date") or Date.today().isoformat()),
                model=ModelRef.from_dict(d["model"]) if d.get("model") else None,
                machine=dict(d.get("machine") or {}),
                grammar=d.get("grammar"),
                id=str(d.get("id") or uuid.uuid4().hex),
                created=float(d.get("created") or time.time()),
                title=str(d.get("title") or ""),
            )
        except (KeyError, TypeError, ValueError, ProblemError) as e:
            raise LabError(f"The experiment's definition is damaged ({e}).") from None
        spec.validate()
        return spec


@dataclass
class RunResult:
    """One generation of an experiment, with everything needed to judge and reproduce it."""

    problem_id: str
    effort: str
    repeat: int
    seed: int
    sampling: dict[str, Any]
    prompt: str
    instructions: str = ""
    rendered_prompt: str | None = None  # exactly what the model read, special tokens included
    reasoning: str = ""
    final: str = ""
    preamble: str = ""
    raw_output: str = ""  # the harmony output, special tokens kept, the stop token appended
    token_ids: list[int] = field(default_factory=list)
    channels: str = ""  # one of r/f/c/- per token: reasoning, final, commentary, other (headers…)
    reasoning_tokens: int = 0
    final_tokens: int = 0
    other_tokens: int = 0
    generated_tokens: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    wait_s: float = 0.0  # time spent waiting for the engine (another client's turn); left out of every time
    first_token_s: float | None = None  # from the start of the run (prompt work included)
    first_final_s: float | None = None  # time to the first token of the final answer
    total_s: float = 0.0
    tokens_per_s: float = 0.0  # generation speed after the first token (the engine's measure)
    stop_reason: str = ""
    correct: bool | None = None  # None: the problem has no checker (or the run failed)
    extracted: str | None = None  # what the checker read as the answer
    error: str | None = None
    error_kind: str | None = None  # "prompt": this problem cannot run here; "engine": the model failed
    model_file: str = ""
    started: float = 0.0  # wall-clock time (epoch seconds)

    @property
    def key(self) -> RunKey:
        return (self.problem_id, self.effort, self.repeat)

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunResult:
        known = {f.name for f in dataclasses.fields(cls)}
        try:
            r = cls(**{k: v for k, v in d.items() if k in known})
            r.repeat = int(r.repeat)
            r.seed = int(r.seed)
        except (TypeError, ValueError) as e:
            raise LabError(f"a run record is damaged ({e})") from None
        return r
