"""An experiment: its spec and the runs finished so far, safe to read while a runner adds to it; JSON and CSV export."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import threading
from collections.abc import Iterable, Sequence
from datetime import date as Date
from datetime import datetime
from pathlib import Path
from typing import Any

from app.core.chat import EFFORTS
from app.core.engine import ModelInfo, Sampling
from app.core.lab.files import FORMAT, VERSION, ExperimentFile, _atomic_write
from app.core.lab.spec import (
    _SAMPLING_FIELDS,
    SINGLE_PROMPT_ID,
    ExperimentSpec,
    LabError,
    ModelRef,
    RunKey,
    RunResult,
    machine_info,
)
from app.core.lab.stats import EffortSummary, summarize
from app.core.problem_sets import Problem
from app.core.units import format_bytes


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
