"""Reasoning-effort experiments: the same prompts at several efforts and seeds, measured, resumable, exported."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
import platform
import statistics
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date as Date
from datetime import datetime
from pathlib import Path
from typing import Any

from app.core import paths
from app.core.chat import EFFORTS, ChatError, Conversation, Message, TurnEvent, TurnFinished, TurnStarted, run_turn
from app.core.engine import (
    EngineError,
    EngineLike,
    EngineWrapper,
    GenerationStats,
    ModelInfo,
    Sampling,
    close_stream,
)
from app.core.errors import HarmonicaError
from app.core.fsutil import atomic_write
from app.core.harmony import SPECIAL_TOKEN_IDS, FinalDelta, PreambleDelta, ReasoningDelta
from app.core.problem_sets import Problem, ProblemError
from app.core.scripted_engine import is_scripted_path
from app.core.units import format_bytes

FORMAT = "harmonica-experiment"
VERSION = 1
MAX_RUNS_PER_EFFORT = 1000
SINGLE_PROMPT_ID = "prompt"

# One character per generated token in RunResult.channels: what the parser made of that token.
REASONING, FINAL, PREAMBLE, OTHER = "r", "f", "c", "-"
_UNMARKED = "?"
_SPECIAL_IDS = frozenset(SPECIAL_TOKEN_IDS.values())
_STOP_MARKERS = {"return": "<|return|>", "call": "<|call|>"}

RunKey = tuple[str, str, int]  # (problem id, effort, repeat index)
_append_lock = threading.Lock()  # the runner and the UI (model hash) both append to a file


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


# =================================================================================================
# Statistics
# =================================================================================================
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


# =================================================================================================
# The experiment: spec + results, safe to read from the UI thread while a runner adds to it
# =================================================================================================
class Experiment:
    """An experiment definition and the runs finished so far (possibly loaded from disk)."""

    def __init__(self, spec: ExperimentSpec, results: Iterable[RunResult] = (), path: Path | None = None) -> None:
        spec.validate()
        self.spec = spec
        self.path = path  # the experiment file that records finished runs (None: not persisted)
        self.warnings: list[str] = []  # problems found while opening (damaged lines)
        self._lock = threading.Lock()
        self._results: dict[RunKey, RunResult] = {}
        for r in results:
            self._results[r.key] = r

    @classmethod
    def create(
        cls,
        problems: Sequence[Problem] | str,
        *,
        efforts: Sequence[str] = EFFORTS,
        runs: int = 1,
        instructions: str = "",
        seed: int = 1,
        sampling: Sampling | None = None,
        problem_set: str | None = None,
        date: Date | None = None,
        grammar: str | None = None,
        title: str = "",
    ) -> Experiment:
        """A new experiment; a plain string is one prompt. Efforts are kept in low→high order."""
        if isinstance(problems, str):
            if not problems.strip():
                raise LabError("Enter a prompt to run.")
            problem_list = [Problem(SINGLE_PROMPT_ID, problems.strip())]
        else:
            problem_list = list(problems)
        s = dataclasses.replace(sampling) if sampling is not None else Sampling()
        s.seed = None
        ordered = [e for e in EFFORTS if e in set(efforts)] + [e for e in efforts if e not in EFFORTS]
        if not title:
            first = " ".join(problem_list[0].prompt.split()) if problem_list else ""
            title = problem_set or (first[:60] + ("…" if len(first) > 60 else ""))
        spec = ExperimentSpec(
            problems=problem_list,
            efforts=ordered,
            runs=int(runs),
            instructions=instructions.strip(),
            seed=int(seed),
            sampling=s,
            problem_set=problem_set,
            date=(date or Date.today()).isoformat(),
            machine=machine_info(),
            grammar=grammar,
            title=title,
        )
        return cls(spec)

    # --- results ----------------------------------------------------------------------------------
    def add(self, result: RunResult) -> None:
        with self._lock:
            self._results[result.key] = result

    def result(self, key: RunKey) -> RunResult | None:
        with self._lock:
            return self._results.get(key)

    def results(self) -> list[RunResult]:
        """A snapshot of all recorded runs, in plan order."""
        with self._lock:
            snapshot = dict(self._results)
        order = {k: i for i, k in enumerate(self.spec.plan())}
        return sorted(snapshot.values(), key=lambda r: order.get(r.key, len(order)))

    def pending(self) -> list[RunKey]:
        """Runs still to do, in order: never run, or failed (a resume tries those again)."""
        with self._lock:
            done = {k for k, r in self._results.items() if r.ok}
        return [k for k in self.spec.plan() if k not in done]

    @property
    def total(self) -> int:
        return len(self.spec.problems) * len(self.spec.efforts) * self.spec.runs

    @property
    def done(self) -> int:
        return self.total - len(self.pending())

    @property
    def complete(self) -> bool:
        return not self.pending()

    def summary(self) -> dict[str, EffortSummary]:
        results = [r for r in self.results() if r.effort in self.spec.efforts]
        return summarize(results, self.spec.efforts, len(self.spec.problems) * self.spec.runs)

    def marks(self, problem_id: str, effort: str) -> list[bool | None]:
        """Per repeat: True/False when checked, None when not run yet, failed or not checkable."""
        out: list[bool | None] = []
        for r in range(self.spec.runs):
            res = self.result((problem_id, effort, r))
            out.append(res.correct if res is not None and res.ok else None)
        return out

    def set_model(self, model: ModelRef) -> None:
        self.spec.model = model

    def set_model_sha256(self, path: str, digest: str) -> bool:
        """Record the model file's digest if `path` is this experiment's model; True if it was."""
        m = self.spec.model
        if m is None or Path(m.path) != Path(path) or m.sha256 == digest:
            return False
        m.sha256 = digest
        if self.path is not None:
            ExperimentFile(self.path).append({"type": "model", "sha256": digest})
        return True

    def check_model(self, info: ModelInfo | None) -> str | None:
        """Why `info` (the loaded model) cannot continue this experiment, or None if it can."""
        if info is None:
            return "No model is loaded. Open a gpt-oss model first (File → Open model…)."
        if self.spec.model is None or not self.results():
            return None
        now = ModelRef.from_info(info)
        if not self.spec.model.same_model(now):
            m = self.spec.model
            return (
                f"This experiment was run with {m.file or m.name} ({format_bytes(m.size, decimals=2)}); the loaded model is "
                f"{now.file or now.name} ({format_bytes(now.size, decimals=2)}). Load the same model to resume it, "
                "or start a new experiment."
            )
        return None

    # --- persistence ------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "kind": "export",
            "exported": datetime.now().astimezone().isoformat(timespec="seconds"),
            "experiment": self.spec.to_dict(),
            "summary": {e: s.to_dict() for e, s in self.summary().items()},
            "runs": [r.to_dict() for r in self.results()],
        }

    def save(self, path: str | Path) -> Path:
        """Write the experiment file (header + every run) to `path`; later runs are appended there."""
        p = Path(path)
        ExperimentFile.write(p, self)
        self.path = p
        return p

    def export_json(self, path: str | Path) -> Path:
        p = Path(path)
        _atomic_write(p, json.dumps(self.to_dict(), ensure_ascii=False, indent=1).encode("utf-8"))
        return p

    def export_csv(self, path: str | Path) -> Path:
        p = Path(path)
        _atomic_write(p, self.csv_text().encode("utf-8-sig"))  # the BOM makes Excel read UTF-8
        return p

    def csv_text(self) -> str:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(CSV_COLUMNS)
        m = self.spec.model
        for r in self.results():
            problem = _problem_or_none(self.spec, r.problem_id)
            s = r.sampling
            row: dict[str, Any] = {
                "experiment_id": self.spec.id,
                "problem_set": self.spec.problem_set or "",
                "problem_id": r.problem_id,
                "category": problem.category if problem else "",
                "prompt": r.prompt,
                "instructions": r.instructions,
                "effort": r.effort,
                "repeat": r.repeat + 1,
                "seed": r.seed,
                **{k: s.get(k) for k in _SAMPLING_FIELDS},
                "model_file": r.model_file or (m.file if m else ""),
                "model_sha256": (m.sha256 if m else "") or "",
                "reasoning_tokens": r.reasoning_tokens,
                "final_tokens": r.final_tokens,
                "other_tokens": r.other_tokens,
                "generated_tokens": r.generated_tokens,
                "prompt_tokens": r.prompt_tokens,
                "first_token_s": _num(r.first_token_s),
                "first_final_s": _num(r.first_final_s),
                "total_s": _num(r.total_s),
                "tokens_per_s": _num(r.tokens_per_s),
                "stop_reason": r.stop_reason,
                "expected": problem.answer if problem and problem.answer is not None else "",
                "extracted": r.extracted or "",
                "correct": "" if r.correct is None else int(r.correct),
                "error": r.error or "",
                "reasoning": r.reasoning,
                "final": r.final,
                "raw_output": r.raw_output,
            }
            w.writerow(["" if row[c] is None else row[c] for c in CSV_COLUMNS])
        return buf.getvalue()


CSV_COLUMNS = (
    "experiment_id",
    "problem_set",
    "problem_id",
    "category",
    "prompt",
    "instructions",
    "effort",
    "repeat",
    "seed",
    *_SAMPLING_FIELDS,
    "model_file",
    "model_sha256",
    "reasoning_tokens",
    "final_tokens",
    "other_tokens",
    "generated_tokens",
    "prompt_tokens",
    "first_token_s",
    "first_final_s",
    "total_s",
    "tokens_per_s",
    "stop_reason",
    "expected",
    "extracted",
    "correct",
    "error",
    "reasoning",
    "final",
    "raw_output",
)


def _num(v: float | None) -> str:
    return "" if v is None else f"{v:.4f}"


def _problem_or_none(spec: ExperimentSpec, pid: str) -> Problem | None:
    try:
        return spec.problem(pid)
    except KeyError:
        return None


def _atomic_write(path: Path, data: bytes) -> None:
    try:
        atomic_write(path, data)
    except OSError as e:
        raise LabError(f"Could not write {path.name}: {e.strerror or e}.") from None


class ExperimentFile:
    """The append-only JSONL file of an experiment: a header line, then one line per finished run.

    Each run is appended (and fsync'ed) as soon as it finishes, so a crash or a cancel loses at
    most the run in progress; a line cut short by a crash is ignored when the file is opened.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @staticmethod
    def write(path: Path, experiment: Experiment) -> None:
        lines = [
            json.dumps(
                {"type": "experiment", "format": FORMAT, "version": VERSION, "spec": experiment.spec.to_dict()},
                ensure_ascii=False,
            )
        ]
        lines += [json.dumps({"type": "run", "run": r.to_dict()}, ensure_ascii=False) for r in experiment.results()]
        _atomic_write(path, ("\n".join(lines) + "\n").encode("utf-8"))

    def append(self, record: dict[str, Any]) -> None:
        data = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
        try:
            with _append_lock, open(self.path, "ab") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        except OSError as e:
            raise LabError(f"Could not save to the experiment file {self.path}: {e.strerror or e}.") from None

    def append_run(self, result: RunResult) -> None:
        self.append({"type": "run", "run": result.to_dict()})


def default_experiment_path(spec: ExperimentSpec) -> Path:
    """Where a new experiment is recorded until the user saves it elsewhere."""
    folder = paths.data_dir() / "lab"
    folder.mkdir(parents=True, exist_ok=True)
    stamp = datetime.fromtimestamp(spec.created).strftime("%Y%m%d-%H%M%S")
    return folder / f"{stamp}-{spec.id[:8]}.jsonl"


def open_experiment(path: str | Path) -> Experiment:
    """Open an experiment file (JSONL, resumable) or a JSON export. Raises LabError when unusable."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as e:
        raise LabError(f"{p.name} cannot be read: {e.strerror or e}.") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise LabError(f"{p.name} is not an experiment file (it is not UTF-8 text).") from None
    whole: Any = None
    try:
        whole = json.loads(text)
    except ValueError:
        pass
    if isinstance(whole, dict) and whole.get("kind") == "export":
        return _from_export(p, whole)
    return _from_jsonl(p, text)


def _check_format(obj: dict[str, Any], name: str) -> None:
    if obj.get("format") != FORMAT:
        raise LabError(f"{name} is not a Harmonica experiment.")
    if not isinstance(obj.get("version"), int) or obj["version"] > VERSION:
        raise LabError(
            f"{name} was written by a newer Harmonica (format version {obj.get('version')}); update to open it."
        )


def _from_export(p: Path, obj: dict[str, Any]) -> Experiment:
    _check_format(obj, p.name)
    if not isinstance(obj.get("experiment"), dict):
        raise LabError(f"{p.name} has no experiment definition.")
    spec = ExperimentSpec.from_dict(obj["experiment"])
    exp = Experiment(spec)  # an export is a snapshot: resuming records into a new experiment file
    for i, r in enumerate(obj.get("runs") or []):
        try:
            exp.add(RunResult.from_dict(r))
        except LabError as e:
            exp.warnings.append(f"Run {i + 1}: {e}; it will be run again on resume.")
    return exp


def _from_jsonl(p: Path, text: str) -> Experiment:
    lines = text.splitlines()
    first = next((i for i, line in enumerate(lines) if line.strip()), None)
    if first is None:
        raise LabError(f"{p.name} is empty.")
    try:
        head = json.loads(lines[first])
    except ValueError:
        raise LabError(f"{p.name} is not a Harmonica experiment (its first line is not JSON).") from None
    if not isinstance(head, dict) or head.get("type") != "experiment":
        raise LabError(f"{p.name} is not a Harmonica experiment.")
    _check_format(head, p.name)
    if not isinstance(head.get("spec"), dict):
        raise LabError(f"{p.name} has no experiment definition.")
    exp = Experiment(ExperimentSpec.from_dict(head["spec"]), path=p)
    for n in range(first + 1, len(lines)):
        line = lines[n].strip()
        if not line:
            continue
        try:
            rec = json.loads(line)
            if not isinstance(rec, dict):
                raise ValueError("not an object")
        except ValueError:
            last = all(not x.strip() for x in lines[n + 1 :])
            exp.warnings.append(
                f"Line {n + 1} is damaged"
                + (" (cut short, probably while the app stopped)" if last else "")
                + "; the run it held will be run again on resume."
            )
            continue
        kind = rec.get("type")
        try:
            if kind == "run" and isinstance(rec.get("run"), dict):
                exp.add(RunResult.from_dict(rec["run"]))
            elif kind == "model" and isinstance(rec.get("sha256"), str) and exp.spec.model is not None:
                exp.spec.model.sha256 = rec["sha256"]
            elif kind == "model_ref" and isinstance(rec.get("model"), dict):
                exp.spec.model = ModelRef.from_dict(rec["model"])
            else:
                exp.warnings.append(f"Line {n + 1} holds an unknown record and was ignored.")
        except (LabError, TypeError) as e:
            exp.warnings.append(f"Line {n + 1}: {e}; the run will be run again on resume.")
    return exp


# =================================================================================================
# Running
# =================================================================================================
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


def _is_special(token_id: int, piece: bytes) -> bool:
    if token_id in _SPECIAL_IDS:
        return True
    return len(piece) <= 40 and piece.startswith(b"<|") and piece.endswith(b"|>") and b" " not in piece


class _Recorder(EngineWrapper):
    """Wraps an engine for run_turn, keeping every generated token and what the parser made of it.

    run_turn feeds each token to the parser and yields that token's events before it pulls the
    next one, so an event always belongs to the latest token, and to the text tokens right before
    it that produced nothing yet (a UTF-8 character or a "<" split across tokens).
    """

    def __init__(self, engine: EngineLike, clock: Callable[[], float]) -> None:
        super().__init__(engine)
        self._clock = clock
        self.prompt_ids: list[int] | None = None
        self.ids: list[int] = []
        self.pieces: list[bytes] = []
        self.kinds: list[str] = []
        self.special: list[bool] = []
        self.first_token_t: float | None = None
        self.stream_called_t: float | None = None

    def stream(
        self,
        prompt: str | Sequence[int],
        sampling: Sampling | None = None,
        *,
        cancel: threading.Event | None = None,
        grammar: str | None = None,
    ) -> Iterator[tuple[int, bytes]]:
        self.prompt_ids = None if isinstance(prompt, str) else list(prompt)
        self.stream_called_t = self._clock()
        inner = super().stream(prompt, sampling, cancel=cancel, grammar=grammar)  # input errors raise here
        return self._relay(inner)

    def _relay(self, inner: Iterator[tuple[int, bytes]]) -> Iterator[tuple[int, bytes]]:
        try:
            for token_id, piece in inner:
                if self.first_token_t is None:
                    self.first_token_t = self._clock()
                self.ids.append(int(token_id))
                self.pieces.append(bytes(piece))
                self.kinds.append(_UNMARKED)
                self.special.append(_is_special(int(token_id), bytes(piece)))
                yield token_id, piece
        finally:
            close_stream(inner)  # the real engine holds its generation lock until its generator ends

    def mark(self, kind: str) -> None:
        i = len(self.ids) - 1
        if i >= 0 and self.special[i]:
            i -= 1  # a marker flushes the text held back from the tokens before it
        while i >= 0 and self.kinds[i] == _UNMARKED and not self.special[i]:
            self.kinds[i] = kind
            i -= 1

    def channels(self) -> str:
        return "".join(OTHER if k == _UNMARKED else k for k in self.kinds)

    def raw_output(self, stop_reason: str) -> str:
        return b"".join(self.pieces).decode("utf-8", "replace") + _STOP_MARKERS.get(stop_reason, "")

    def rendered_prompt(self) -> str | None:
        if self.prompt_ids is None:
            return None
        try:
            return self.detokenize(self.prompt_ids).decode("utf-8", "replace")
        except Exception:  # noqa: BLE001 - a figure we can do without
            return None


def run_one(
    engine: EngineLike,
    spec: ExperimentSpec,
    key: RunKey,
    *,
    cancel: threading.Event | None = None,
    clock: Callable[[], float] = time.perf_counter,
    delta_interval_s: float = 0.05,
) -> Iterator[RunDelta | RunResult]:
    """Run one generation of the experiment through chat.run_turn; yields RunDeltas, then the RunResult.

    A cancelled run yields no RunResult (it is not finished and a resume runs it again).
    ChatError/EngineError before or during generation give a RunResult with `error` set.
    """
    problem_id, effort, repeat = key
    problem = spec.problem(problem_id)
    seed = spec.seed_for(repeat)
    sampling = dataclasses.replace(spec.sampling, seed=seed)
    conv = Conversation()
    conv.add_user(problem.prompt)
    rec = _Recorder(engine, clock)
    info = engine.info
    result = RunResult(
        problem_id=problem_id,
        effort=effort,
        repeat=repeat,
        seed=seed,
        sampling=sampling_dict(sampling),
        prompt=problem.prompt,
        instructions=spec.instructions,
        started=time.time(),
        model_file=ModelRef.from_info(info).file if info is not None else "",
    )
    run = _RunWatch(key, rec, result, clock, delta_interval_s)
    try:
        for ev in run_turn(
            rec,
            conv,
            effort=effort,
            sampling=sampling,
            cancel=cancel,
            developer=spec.instructions or None,
            date=spec.date_value,
            grammar=spec.grammar,
        ):
            delta = run.on_event(ev)
            if delta is not None:
                yield delta
    except (ChatError, EngineError) as e:
        result.error = str(e) or e.__class__.__name__
        # A ChatError before generation (prompt too long, template refused it) is about this
        # problem; anything else means the engine is in trouble and the experiment should stop.
        about_prompt = isinstance(e, ChatError) and not run.started and engine.info is not None
        result.error_kind = "prompt" if about_prompt else "engine"
    result.total_s = clock() - run.t0
    delta = run.flush()
    if delta is not None:
        yield delta
    message = run.message
    if message is None and result.error is None:
        result.error = "The generation ended without a message."
    if message is not None:
        if message.stop_reason == "cancelled":
            return
        _take_message(result, message)
    if cancel is not None and cancel.is_set() and result.error is None:
        return
    _take_tokens(result, rec)
    _discount_waiting(result, rec, message.stats if message is not None else None, run.t0)
    if result.ok:
        grade = problem.grade(result.final)
        if grade is not None:
            result.correct = grade.correct
            result.extracted = grade.extracted
    yield result


class _RunWatch:
    """Follows one run's events: marks each token's channel, times the answer, batches the deltas."""

    def __init__(
        self, key: RunKey, rec: _Recorder, result: RunResult, clock: Callable[[], float], interval_s: float
    ) -> None:
        self.key, self.rec, self.result = key, rec, result
        self._clock = clock
        self._interval_s = interval_s
        self._reasoning: list[str] = []
        self._final: list[str] = []
        self._last_flush = clock()
        self.t0 = clock()
        self.started = False
        self.message: Message | None = None

    def on_event(self, ev: TurnEvent) -> RunDelta | None:
        """Take in one event; a RunDelta when it is time to show the text that came."""
        if isinstance(ev, ReasoningDelta):
            self.rec.mark(REASONING)
            self._reasoning.append(ev.text)
        elif isinstance(ev, FinalDelta):
            self.rec.mark(FINAL)
            if self.result.first_final_s is None:
                self.result.first_final_s = self._clock() - self.t0
            self._final.append(ev.text)
        elif isinstance(ev, PreambleDelta):
            self.rec.mark(PREAMBLE)
        elif isinstance(ev, TurnStarted):
            self.started = True
            self.result.prompt_tokens = ev.prompt_tokens
        elif isinstance(ev, TurnFinished):
            self.message = ev.message
        if (self._reasoning or self._final) and self._clock() - self._last_flush >= self._interval_s:
            return self.flush()
        return None

    def flush(self) -> RunDelta | None:
        """The text not shown yet, if any."""
        if not (self._reasoning or self._final):
            return None
        delta = RunDelta(self.key, "".join(self._reasoning), "".join(self._final))
        self._reasoning.clear()
        self._final.clear()
        self._last_flush = self._clock()
        return delta


def _take_message(result: RunResult, message: Message) -> None:
    result.reasoning = message.thinking
    result.final = message.content
    result.preamble = message.preamble
    result.stop_reason = message.stop_reason or ""
    st = message.stats
    if st is not None:
        result.cached_tokens = st.cached_tokens
        result.prompt_tokens = st.prompt_tokens or result.prompt_tokens
        result.tokens_per_s = st.tokens_per_s


def _take_tokens(result: RunResult, rec: _Recorder) -> None:
    result.rendered_prompt = rec.rendered_prompt()
    result.token_ids = list(rec.ids)
    result.channels = rec.channels()
    result.raw_output = rec.raw_output(result.stop_reason)
    result.generated_tokens = len(rec.ids)
    result.reasoning_tokens = result.channels.count(REASONING)
    result.final_tokens = result.channels.count(FINAL)
    result.other_tokens = result.generated_tokens - result.reasoning_tokens - result.final_tokens


def _discount_waiting(result: RunResult, rec: _Recorder, st: GenerationStats | None, t0: float) -> None:
    """Take the wait for a turn out of the run's times.

    A shared engine (the app's scheduler) may make the run wait for its turn before the engine
    starts; that wait is someone else's generation, not this run's. The engine's own time to
    first token dates its start: whatever came before it, after stream() was called, was waiting.
    """
    if rec.first_token_t is not None and rec.stream_called_t is not None and st is not None and st.ttft_s > 0:
        result.wait_s = max(0.0, (rec.first_token_t - st.ttft_s) - rec.stream_called_t)
    result.total_s = max(0.0, result.total_s - result.wait_s)
    if result.first_final_s is not None:
        result.first_final_s = max(0.0, result.first_final_s - result.wait_s)
    if rec.first_token_t is not None:
        result.first_token_s = max(0.0, rec.first_token_t - t0 - result.wait_s)


def _bind_model(experiment: Experiment, info: ModelInfo) -> None:
    """Record the loaded model as the experiment's (until it has runs), and start or extend its file."""
    model_changed = False
    if experiment.spec.model is None or not experiment.results():
        keep = experiment.spec.model.sha256 if experiment.spec.model is not None else None
        experiment.spec.model = ModelRef.from_info(info)
        if keep and experiment.spec.model.same_model(ModelRef.from_info(info)):
            experiment.spec.model.sha256 = keep
        model_changed = True
    if experiment.path is None:
        return
    if not experiment.path.exists() or experiment.path.stat().st_size == 0:
        experiment.save(experiment.path)  # a new file (or a reopened export): header and runs so far
    elif model_changed and experiment.spec.model is not None:
        ExperimentFile(experiment.path).append({"type": "model_ref", "model": experiment.spec.model.to_dict()})


def run_experiment(
    engine: EngineLike | None,
    experiment: Experiment,
    *,
    cancel: threading.Event | None = None,
    clock: Callable[[], float] = time.perf_counter,
    delta_interval_s: float = 0.05,
    progress_interval_s: float = 0.25,
) -> Iterator[LabEvent]:
    """Run the experiment's pending runs in plan order, recording each finished run.

    Finished runs are added to `experiment` and appended to its file (experiment.path) at once,
    so cancelling (within one token, through `cancel`) or a crash loses only the run in progress,
    and calling this again resumes: finished runs are skipped. Raises LabError up front when the
    engine cannot run this experiment (no model, or a different model than its earlier runs).
    """
    info = engine.info if engine is not None else None
    problem = experiment.check_model(info)
    if problem is not None:
        raise LabError(problem)
    assert engine is not None and info is not None  # check_model refuses a missing model
    _bind_model(experiment, info)
    todo = experiment.pending()
    total = experiment.total
    eta = EtaEstimator(experiment.results())
    yield ExperimentStarted(total, total - len(todo))
    t_start = clock()
    plan_pos = {k: i + 1 for i, k in enumerate(experiment.spec.plan())}
    for i, key in enumerate(todo):
        if cancel is not None and cancel.is_set():
            yield ExperimentStopped("cancelled")
            return
        done = total - len(todo) + i
        remaining = [k[1] for k in todo[i + 1 :]]
        yield RunStarted(key, experiment.spec.seed_for(key[2]), plan_pos[key])
        yield Progress(done, total, done / total if total else 1.0, eta.eta(remaining, key[1]), clock() - t_start)
        t_run = clock()
        last_progress = t_run
        result: RunResult | None = None
        for item in run_one(
            engine, experiment.spec, key, cancel=cancel, clock=clock, delta_interval_s=delta_interval_s
        ):
            if isinstance(item, RunResult):
                result = item
                continue
            yield item
            now = clock()
            if now - last_progress >= progress_interval_s:
                last_progress = now
                elapsed = now - t_run
                expect = eta.expected(key[1])
                part = min(0.95, elapsed / expect) if expect else 0.0
                yield Progress(done, total, (done + part) / total, eta.eta(remaining, key[1], elapsed), now - t_start)
        if result is None:  # cancelled mid-run: not recorded
            yield ExperimentStopped("cancelled")
            return
        experiment.add(result)
        if experiment.path is not None:
            try:
                ExperimentFile(experiment.path).append_run(result)
            except LabError as e:
                yield RunFinished(result)
                yield ExperimentStopped("error", str(e))
                return
        if result.ok:
            eta.add(result.effort, result.total_s)
        yield RunFinished(result)
        done += 1
        yield Progress(done, total, done / total if total else 1.0, eta.eta(remaining), clock() - t_start)
        if not result.ok and result.error_kind != "prompt":
            yield ExperimentStopped("error", result.error or "")
            return
    yield ExperimentStopped("complete")
