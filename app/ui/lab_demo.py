"""Effort-lab demo: a scripted model answers a problem set at three efforts (screenshots, trying the view).

`python -m app.ui.lab_demo [--problems N] [--runs N] [--screenshot PNG]` runs a scripted
experiment to completion in the Compare view, then shows it (or saves a screenshot and quits).
The scripted model thinks longer at higher effort and is right more often, at about the speed
gpt-oss-20b reaches on one H200 (~285 tokens/s); its figures are made up, the measuring is real.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from collections.abc import Sequence

from app.core.problem_sets import Problem, builtin_problem_set
from app.core.scripted_engine import ScriptedEngine, prompt_effort

TOKENS_PER_S = 285.0
_WORDS = {"low": 70, "medium": 230, "high": 560}
_RIGHT = {"low": 0.62, "medium": 0.86, "high": 0.97}
_CATEGORY = {"arithmetic": 1.0, "letters": 0.75, "logic": 1.3}
_STEPS = (
    "Let me restate what is given and what is asked.",
    "Work through it one step at a time.",
    "Compute the intermediate value first, then use it.",
    "Double-check by counting again from the start.",
    "Make sure the units and the question match.",
    "Consider whether there is a trick in the wording.",
    "So the result follows; verify it once more against the question.",
)


def _unit(*parts: object) -> float:
    """A deterministic number in [0, 1) from the parts (stable across runs and machines)."""
    h = hashlib.sha256("|".join(map(str, parts)).encode()).digest()
    return int.from_bytes(h[:8], "big") / 2**64


def _wrong(p: Problem) -> str:
    if p.check is not None and p.check.type == "number" and p.answer is not None:
        v = float(p.answer)
        off = 1 if _unit(p.id, "off") < 0.5 else -1
        w = v + off * (1 if v == int(v) else 0.25)
        return str(int(w)) if w == int(w) else f"{w:g}"
    if p.check is not None and p.check.choices:
        return next(c for c in p.check.choices if c.lower() != (p.answer or "").lower())
    return "I am not sure."


class DemoModel:
    """The scripted model's script: a function of the rendered prompt (see ScriptedEngine)."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        self.calls: dict[tuple[str, str], int] = {}

    def __call__(self, prompt: str) -> str:
        effort = prompt_effort(prompt) or "medium"
        problem = next((p for p in self.problems if p.prompt in prompt), None)
        pid = problem.id if problem else "prompt"
        n = self.calls.get((pid, effort), 0)
        self.calls[(pid, effort)] = n + 1
        factor = _CATEGORY.get(problem.category if problem else "", 1.0) * (0.7 + 0.6 * _unit(pid, effort, n, "len"))
        words = max(12, int(_WORDS[effort] * factor))
        head = f"The question: {' '.join((problem.prompt if problem else 'the prompt').split()[:14])}…"
        body = " ".join(_STEPS[i % len(_STEPS)] for i in range(words // 8))
        right = problem is None or _unit(pid, effort, n, "right") < _RIGHT[effort]
        answer = (problem.answer if right else _wrong(problem)) if problem else "A short answer."
        return (
            f"<|channel|>analysis<|message|>{head} {body}<|end|>"
            f"<|start|>assistant<|channel|>final<|message|>{answer}<|return|>"
        )


def start_lab_demo(n_problems: int = 9, runs: int = 2) -> object:
    """The Compare window with a scripted engine, already running a scripted experiment."""
    from app.core.lab import Experiment
    from app.ui.compare import CompareWindow

    ps = builtin_problem_set()
    # A spread of categories: every third problem of each kind, up to n_problems.
    picked = [p for i, p in enumerate(ps.problems) if i % 3 == 0][:n_problems]
    engine = ScriptedEngine(DemoModel(picked), delay_s=1 / TOKENS_PER_S, prompt_delay_s=0.05, name="gpt-oss-20b")
    engine.load("scripted:gpt-oss-20b")
    window = CompareWindow(lambda: engine)
    window.setup.mode_set.setChecked(True)
    window.setup.runs_spin.setValue(runs)
    exp = Experiment.create(picked, runs=runs, problem_set=f"{ps.name} ({len(picked)})")
    window.start(exp)
    return window


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problems", type=int, default=9)
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--theme", choices=("light", "dark"), default="light")
    ap.add_argument("--screenshot", metavar="PNG", help="save the window when the experiment is done, then quit")
    ap.add_argument("--tab", choices=("runs", "problems"), default="runs")
    args = ap.parse_args(argv)
    from PySide6.QtWidgets import QApplication

    from app.ui import style

    app = QApplication.instance() or QApplication(sys.argv[:1])
    style.apply(app, args.theme == "dark")  # type: ignore[arg-type]
    window = start_lab_demo(args.problems, args.runs)
    from app.ui.compare import CompareWindow

    assert isinstance(window, CompareWindow)
    window.show()

    def done(_exp: object) -> None:
        exp = window.experiment
        if exp is not None and "low" in exp.spec.efforts and "high" in exp.spec.efforts:
            # Show a question where the efforts disagree: wrong at low, right at high.
            telling = [
                p.id for p in exp.spec.problems if False in exp.marks(p.id, "low") and all(exp.marks(p.id, "high"))
            ]
            if telling:
                window.results.show_problem(telling[0])
        if args.tab == "problems":
            window.results.tabs.setCurrentIndex(1)
        if args.screenshot:
            from PySide6.QtCore import QTimer

            def shoot() -> None:
                window.grab().save(args.screenshot)
                app.quit()

            QTimer.singleShot(600, shoot)

    window.experiment_finished.connect(done)
    code = int(app.exec())
    window.shutdown()
    return code


if __name__ == "__main__":
    sys.exit(main())
