"""The Compare view driven by a scripted engine: runs, live streaming, figures, charts, cancel/resume, files."""

from __future__ import annotations

import csv
import datetime
import io
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from PySide6.QtCore import Qt
from PySide6.QtGui import QImage

from app.core import lab
from app.core.engine import Sampling
from app.core.lab import Experiment, RunResult
from app.core.problem_sets import builtin_problem_set
from app.core.scripted_engine import EffortScript, ScriptedEngine, split_pieces
from app.ui import workers
from app.ui.compare import CompareWindow, RunCard

DAY = datetime.date(2025, 8, 8)
WORDS = {"low": 5, "medium": 15, "high": 45}


def right_at_high(prompt: str, effort: str) -> str:
    """Right answers at high effort only (the muffin problem's answer is 25)."""
    return "**25**" if effort == "high" else "**24**"


@pytest.fixture
def make_lab(qtbot) -> Iterator[Callable[..., tuple[CompareWindow, ScriptedEngine]]]:  # type: ignore[no-untyped-def]
    made: list[CompareWindow] = []

    def make(
        script: object | None = None, *, loaded: bool = True, **kw: object
    ) -> tuple[CompareWindow, ScriptedEngine]:
        engine = ScriptedEngine(script or EffortScript(WORDS, step=2), **kw)  # type: ignore[arg-type]
        if loaded:
            engine.load("scripted:gpt-oss-20b")
        w = CompareWindow(lambda: engine if engine.loaded else None)
        qtbot.addWidget(w)
        w.show()
        made.append(w)
        return w, engine

    yield make
    for w in made:
        w.shutdown()
    workers.stop_all()


def cards(w: CompareWindow) -> dict[lab.RunKey, RunCard]:
    return dict(w.results.cards)


def test_single_prompt_runs_side_by_side_with_figures(make_lab, qtbot) -> None:  # type: ignore[no-untyped-def]
    w, engine = make_lab()
    assert not w.setup.start_button.isEnabled()  # no prompt yet
    w.setup.prompt_edit.setPlainText("Why is the sky blue?")
    w.setup.effort_boxes["medium"].setChecked(False)
    w.setup.runs_spin.setValue(2)
    assert w.setup.plan_label.text() == "4 runs: 1 question × 2 efforts × 2"
    busy: list[bool] = []
    w.busy_changed.connect(busy.append)
    qtbot.mouseClick(w.setup.start_button, Qt.MouseButton.LeftButton)
    assert w.running and not w.setup.start_button.isEnabled() and w.setup.cancel_button.isEnabled()
    qtbot.waitUntil(lambda: not w.running, timeout=10000)
    exp = w.experiment
    assert exp is not None and exp.complete and busy == [True, False]
    assert exp.spec.efforts == ["low", "high"] and len(exp.results()) == 4
    assert exp.path is not None and exp.path.exists()  # recorded as it ran
    # columns: one per effort, one card per run, figures from the results
    assert set(w.results.columns) == {"low", "high"}
    for key, card in cards(w).items():
        r = exp.result(key)
        assert r is not None and card.result is r
        figs = card.figures()
        assert figs["reasoning"] == f"{r.reasoning_tokens:,}" and figs["final"] == f"{r.final_tokens:,}"
        assert figs["total"] == f"{r.total_s:.2f} s" and figs["TTFT"] == f"{r.first_final_s:.2f} s"
        assert f"<b>{figs['reasoning']}</b>" in card.figures_label.text()
        assert (
            card.message is not None
            and card.message.reasoning_text == r.reasoning
            and card.message.answer_view.markdown == r.final
        )
        assert not card.message.reasoning_expanded  # collapsible, collapsed when done
        assert card.message.meta.isHidden() and card.message.model_label.isHidden()
        assert getattr(card.message, "actions", None) is None or card.message.actions.isHidden()
        assert card.mark.isHidden()  # nothing to check for a free prompt
    card = cards(w)[("prompt", "high", 1)]
    assert card.message is not None
    qtbot.mouseClick(card.message.reasoning_toggle, Qt.MouseButton.LeftButton)  # open the reasoning
    assert card.message.reasoning_expanded and card.message.reasoning_view.toPlainText() == card.result.reasoning
    low0 = exp.result(("prompt", "low", 0))
    assert low0 is not None and low0.reasoning_tokens == len(split_pieces(EffortScript(WORDS).reasoning_for("low", 0)))
    assert w.results.charts["accuracy"].isHidden() and not w.results.tabs.isTabVisible(1)
    assert w.setup.progress.value() == 1000 and "Finished" in w.setup.progress_label.text()
    assert engine.prompts and all("Why is the sky blue?" in p for p in engine.prompts)


def test_chart_bars_equal_the_computed_statistics(make_lab, qtbot) -> None:  # type: ignore[no-untyped-def]
    w, _ = make_lab(EffortScript(WORDS, step=4, answer=right_at_high))
    ps = builtin_problem_set()
    exp = Experiment.create(ps.problems[:1], runs=3, problem_set="muffins", date=DAY)
    assert w.start(exp)
    qtbot.waitUntil(lambda: not w.running, timeout=10000)
    summary = exp.summary()
    for name, attr in (("reasoning", "reasoning_tokens"), ("time", "total_s")):
        bars = w.results.charts[name].bars()
        assert [b.label for b in bars] == ["Low", "Medium", "High"]
        for b, effort in zip(bars, ["low", "medium", "high"], strict=False):
            s = getattr(summary[effort], attr)
            assert b.value == s.mean and b.error == s.stdev and (b.low, b.high) == (s.min, s.max)
            assert b.note == "n = 3"
    means = [b.value for b in w.results.charts["reasoning"].bars()]
    assert means[0] < means[1] < means[2]  # longer reasoning at higher effort, as scripted
    acc = w.results.charts["accuracy"].bars()
    assert [b.value for b in acc] == [0.0, 0.0, 100.0] and [b.note for b in acc] == ["0/3", "0/3", "3/3"]
    assert w.results.columns["high"].accuracy.text() == "3/3 ✓"
    high_card = cards(w)[(ps.problems[0].id, "high", 0)]
    assert high_card.mark.text() == "✓ 25" and not high_card.mark.isHidden()
    assert cards(w)[(ps.problems[0].id, "low", 0)].mark.text() == "✗ 24"


def test_problem_set_table_marks_each_item_per_effort(make_lab, qtbot) -> None:  # type: ignore[no-untyped-def]
    w, _ = make_lab(EffortScript(WORDS, answer=right_at_high))
    ps = builtin_problem_set()
    w.setup.mode_set.setChecked(True)
    assert w.setup.current_set() is not None and w.setup.current_set().name == ps.name
    assert "27 problems" in w.setup.set_info.text() and "all checked" in w.setup.set_info.text()
    exp = Experiment.create(ps.problems[:3], runs=2, problem_set="three", date=DAY)
    assert w.start(exp)
    qtbot.waitUntil(lambda: not w.running, timeout=10000)
    assert w.results.tabs.isTabVisible(1) and w.results.table.rowCount() == 3
    headers = [w.results.table.horizontalHeaderItem(c).text() for c in range(w.results.table.columnCount())]
    assert headers[:3] == ["#", "Question", "Expected"] and headers[3:] == ["Low  0%", "Medium  0%", "High  33%"]
    assert (
        w.results.table.item(0, 2).text() == "25"
        and w.results.table.item(0, 5).text() == "✓ ✓"
        and w.results.table.item(0, 3).text() == "✗ ✗"
    )
    assert w.results.table.item(1, 5).text() == "✗ ✗"  # "**25**" is wrong for the train question
    # double-click a row: the Runs tab shows that problem's runs
    w.results.table.cellDoubleClicked.emit(2, 1)
    assert w.results.tabs.currentIndex() == 0 and w.results.problem_picker.currentData() == ps.problems[2].id
    assert {k[0] for k in cards(w)} == {ps.problems[2].id} and len(cards(w)) == 6
    assert (
        w.results.prompt_label.text() == ps.problems[2].prompt
        and w.results.expected_label.text() == "Expected: the number 9"
    )


def test_live_run_streams_into_its_card(make_lab, qtbot) -> None:  # type: ignore[no-untyped-def]
    w, _ = make_lab(EffortScript({"low": 400, "medium": 400, "high": 400}), delay_s=0.002)
    w.setup.prompt_edit.setPlainText("Think a lot")
    w.setup.effort_boxes["low"].setChecked(False)
    w.setup.effort_boxes["medium"].setChecked(False)
    w.setup.runs_spin.setValue(1)
    assert w.start()
    card = cards(w)[("prompt", "high", 0)]
    qtbot.waitUntil(lambda: card.message is not None and len(card.message.reasoning_text) > 20, timeout=5000)
    assert w.running and card.result is None and card.message.reasoning_expanded
    assert "Run 1 of 1" in w.setup.progress_label.text() or w.setup.progress_label.text() == "Starting…"
    w.cancel()
    qtbot.waitUntil(lambda: not w.running, timeout=5000)
    assert "Cancelled after 0 of 1" in w.setup.progress_label.text() and w.setup.resume_button.isEnabled()
    assert w.experiment is not None and w.experiment.results() == []
    fresh = cards(w)[("prompt", "high", 0)]
    assert fresh.message is None and fresh.result is None  # the cancelled run's partial text is not kept


def test_cancel_then_resume_skips_finished_runs(make_lab, qtbot) -> None:  # type: ignore[no-untyped-def]
    w, engine = make_lab(EffortScript(WORDS), delay_s=0.003)
    w.setup.prompt_edit.setPlainText("Count to ten")
    w.setup.runs_spin.setValue(2)
    finished: list[RunResult] = []
    w.run_finished.connect(finished.append)
    assert w.start()
    qtbot.waitUntil(lambda: len(finished) >= 2, timeout=10000)
    # measured runs give an ETA: "Run 3 of 6 · medium · about 2 s left" (or "almost done" when short)
    assert re.fullmatch(r"Run \d of 6( · \w+)? · (about .+ left|almost done)", w.setup.progress_label.text()), (
        w.setup.progress_label.text()
    )
    w.cancel()
    qtbot.waitUntil(lambda: not w.running, timeout=5000)
    exp = w.experiment
    assert exp is not None and not exp.complete
    done_before = {r.key for r in exp.results()}
    assert len(done_before) >= 2 and w.setup.resume_button.isEnabled()
    n_prompts = len(engine.prompts)
    qtbot.mouseClick(w.setup.resume_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not w.running, timeout=15000)
    assert exp.complete and len(exp.results()) == 6
    rerun = engine.prompts[n_prompts:]
    assert len(rerun) == 6 - len(done_before)  # finished runs were not run again
    assert [r.key for r in finished].count(next(iter(done_before))) == 1
    assert len(lab.open_experiment(exp.path).results()) == 6  # type: ignore[arg-type]
    assert not w.setup.resume_button.isEnabled()


def test_export_and_reopen_round_trip(make_lab, qtbot, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    w, _ = make_lab()
    w.setup.prompt_edit.setPlainText("Name a colour")
    w.setup.instructions_edit.setPlainText("One word.")
    w.setup.runs_spin.setValue(2)
    w.setup.seed_spin.setValue(40)
    w.setup.temp_spin.setValue(0.8)
    w.setup.max_tokens_spin.setValue(512)
    assert w.start()
    qtbot.waitUntil(lambda: not w.running, timeout=10000)
    exp = w.experiment
    assert exp is not None and exp.spec.sampling == Sampling(temperature=0.8, max_tokens=512)
    assert w.export_json(tmp_path / "e.json") and w.export_csv(tmp_path / "e.csv")
    assert "Exported" in w.setup.notice.text.text()
    data = json.loads((tmp_path / "e.json").read_text(encoding="utf-8"))
    assert len(data["runs"]) == 6 and data["experiment"]["seed"] == 40
    rows = list(csv.DictReader(io.StringIO((tmp_path / "e.csv").read_text(encoding="utf-8-sig"))))
    assert (
        len(rows) == 6
        and {r["instructions"] for r in rows} == {"One word."}
        and {r["seed"] for r in rows} == {"40", "41"}
    )
    assert w.save_experiment(tmp_path / "saved.jsonl") and exp.path == tmp_path / "saved.jsonl"

    w2, _ = make_lab()
    assert w2.open_experiment(tmp_path / "e.json")
    back = w2.experiment
    assert back is not None and back.spec.to_dict() == exp.spec.to_dict()
    assert [r.to_dict() for r in back.results()] == [r.to_dict() for r in exp.results()]
    assert (
        w2.setup.prompt_edit.toPlainText() == "Name a colour"
        and w2.setup.instructions_edit.toPlainText() == "One word."
    )
    assert (w2.setup.runs_spin.value(), w2.setup.seed_spin.value(), w2.setup.max_tokens_spin.value()) == (2, 40, 512)
    assert w2.setup.temp_spin.value() == pytest.approx(0.8)
    assert len(cards(w2)) == 6 and all(c.result is not None for c in cards(w2).values())
    assert [b.value for b in w2.results.charts["reasoning"].bars()] == [
        b.value for b in w.results.charts["reasoning"].bars()
    ]
    assert "6 of 6 runs finished" in w2.setup.notice.text.text()
    assert not w2.open_experiment(tmp_path / "e.csv") and w2.setup.notice.kind == "error"


def test_charts_export_as_png(make_lab, qtbot, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    w, _ = make_lab(EffortScript(WORDS, answer=right_at_high))
    exp = Experiment.create(builtin_problem_set().problems[:1], runs=1, problem_set="one", date=DAY)
    assert w.start(exp)
    qtbot.waitUntil(lambda: not w.running, timeout=10000)
    files = w.export_charts(tmp_path)
    assert sorted(p.name.rsplit("-", 1)[1] for p in files) == ["accuracy.png", "reasoning.png", "time.png"]
    for p in files:
        img = QImage(str(p))
        chart = w.results.charts[p.stem.rsplit("-", 1)[1]]
        assert img.width() == 2 * max(chart.width(), 300)


def test_import_reports_malformed_lines(make_lab, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    w, _ = make_lab()
    f = tmp_path / "mine.jsonl"
    f.write_text('{"prompt": "2+2?", "answer": 4}\n{"prompt": oops}\n{"answer": 3}\n', encoding="utf-8")
    result = w.import_problem_set(f)
    assert result is not None and len(result.problem_set) == 1
    assert w.setup.notice.text.text() == "Imported 1 problem from mine. 2 lines were skipped."
    assert (
        w.setup.notice.detail_lines[0].startswith("Line 2: not valid JSON")
        and w.setup.notice.detail_lines[1] == 'Line 3: missing "prompt"'
    )
    assert (
        w.setup.notice.details.isVisibleTo(w) and w.setup.mode_set.isChecked() and w.setup.current_set().name == "mine"
    )
    bad = tmp_path / "bad.jsonl"
    bad.write_text("nope\n", encoding="utf-8")
    w.import_problem_set(bad)
    assert (
        w.setup.notice.kind == "error"
        and "no usable problems" in w.setup.notice.text.text()
        and w.setup.current_set().name == "mine"
    )


def test_no_model_or_busy_engine_blocks_start(make_lab, qtbot) -> None:  # type: ignore[no-untyped-def]
    w, engine = make_lab(loaded=False)
    w.setup.prompt_edit.setPlainText("hi")
    assert not w.setup.start_button.isEnabled() and "Load a model" in w.setup.start_button.toolTip()
    assert not w.start() and "Load a model" in w.setup.notice.text.text()
    assert w.setup.model_label.text() == "No model loaded"
    engine.load("scripted:gpt-oss-20b")
    w.refresh_model()
    assert w.setup.start_button.isEnabled() and w.setup.model_label.text() == "Model: gpt-oss-20b (scripted)"
    w.set_engine_busy(True)
    assert not w.setup.start_button.isEnabled() and "chat is generating" in w.setup.start_button.toolTip()
    w.set_engine_busy(False)
    assert w.setup.start_button.isEnabled()


def test_model_file_hash_is_computed_and_recorded(make_lab, qtbot, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import hashlib

    model = tmp_path / "gpt-oss-20b-test.gguf"
    model.write_bytes(b"GGUF" + bytes(200_000))
    w, engine = make_lab(loaded=False)
    engine.load(model)
    w.refresh_model()
    digest = hashlib.sha256(model.read_bytes()).hexdigest()
    qtbot.waitUntil(lambda: w.model_sha256(str(model)) == digest, timeout=10000)
    assert f"SHA-256 {digest[:12]}" in w.setup.model_label.text()
    w.setup.prompt_edit.setPlainText("hi")
    w.setup.runs_spin.setValue(1)
    assert w.start()
    qtbot.waitUntil(lambda: not w.running, timeout=10000)
    exp = w.experiment
    assert exp is not None and exp.spec.model is not None and exp.spec.model.sha256 == digest
    assert lab.open_experiment(exp.path).spec.model.sha256 == digest  # type: ignore[arg-type, union-attr]


def test_real_engine_experiment_in_the_view(qtbot, tiny_model_path: Path) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip("llama_cpp")
    from app.core.engine import Engine, LoadSettings

    engine = Engine()
    engine.load(tiny_model_path, LoadSettings(n_ctx=512, n_threads=1))
    w = CompareWindow(lambda: engine)
    qtbot.addWidget(w)
    w.show()
    try:
        grammar = (
            'root ::= <|channel|> "analysis" <|message|> [a-z ]{3,16} <|end|> <|start|> "assistant" '
            '<|channel|> "final" <|message|> [a-z ]{1,8} <|return|>'
        )
        exp = Experiment.create(
            "hello world", efforts=["low", "high"], runs=1, grammar=grammar, sampling=Sampling(max_tokens=64), date=DAY
        )
        assert w.start(exp)
        qtbot.waitUntil(lambda: not w.running, timeout=30000)
        assert exp.complete, w.setup.notice.text.text()
        for r in exp.results():
            assert r.stop_reason == "return" and r.reasoning_tokens > 0 and r.final_tokens > 0
            assert f"Reasoning: {r.effort}" in (r.rendered_prompt or "")
            card = cards(w)[r.key]
            assert card.figures()["reasoning"] == str(r.reasoning_tokens)
        assert [b.value for b in w.results.charts["reasoning"].bars()] == [
            exp.summary()[e].reasoning_tokens.mean for e in ("low", "high")
        ]
        assert exp.spec.model is not None and exp.spec.model.file == tiny_model_path.name
        qtbot.waitUntil(lambda: exp.spec.model.sha256 is not None, timeout=10000)  # type: ignore[union-attr]
    finally:
        w.shutdown()
        engine.unload()


def test_the_default_run_count_shows_how_long_it_takes(make_window, qtbot) -> None:  # type: ignore[no-untyped-def]
    from app.core.speed import experiment_seconds

    w, engine = make_window()
    w.composer.edit.setPlainText("hello")
    qtbot.keyClick(w.composer.edit, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: not w.generating, timeout=5000)
    speed = engine.last_stats.tokens_per_s
    assert speed > 0
    lab_window = w.panels.show_lab()
    setup = lab_window.setup
    setup.prompt_edit.setPlainText("What is 17 × 23?")
    text = setup.plan_label.text()
    assert text.startswith("9 runs: 1 question × 3 efforts × 3 · about ") and "tokens a second" in text
    assert f"at {speed:.0f} tokens a second" in text
    seconds = experiment_seconds(["low", "medium", "high"], 1, 3, speed)
    setup.runs_spin.setValue(6)  # twice the runs: twice the time
    assert setup.plan_label.text().startswith("18 runs") and experiment_seconds(
        ["low", "medium", "high"], 1, 6, speed
    ) == pytest.approx(2 * seconds)
    lab_window.close()
