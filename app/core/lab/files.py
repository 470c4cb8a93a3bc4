"""The experiment file on disk: its format, atomic writes, the append-only JSONL log and where new ones go."""

from __future__ import annotations

import json
import os
import threading
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.core import paths
from app.core.fsutil import atomic_write
from app.core.lab.spec import ExperimentSpec, LabError, RunResult

if TYPE_CHECKING:
    from app.core.lab.experiment import Experiment

FORMAT = "harmonica-experiment"
VERSION = 1
_append_lock = threading.Lock()  # the runner and the UI (model hash) both append to a file


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


def _check_format(obj: dict[str, Any], name: str) -> None:
    if obj.get("format") != FORMAT:
        raise LabError(f"{name} is not a Harmonica experiment.")
    if not isinstance(obj.get("version"), int) or obj["version"] > VERSION:
        raise LabError(
            f"{name} was written by a newer Harmonica (format version {obj.get('version')}); update to open it."
        )
