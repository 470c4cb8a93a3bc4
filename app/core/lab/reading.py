"""Opening an experiment file (resumable JSONL, damaged lines skipped with a warning) or a JSON export."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from app.core.lab.experiment import Experiment
from app.core.lab.files import _check_format
from app.core.lab.spec import ExperimentSpec, LabError, ModelRef, RunResult


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
