"""Effort experiments: per-token channel counts, statistics, rendering, resume, exports, real engine."""

from __future__ import annotations

import csv
import datetime
import io
import json
import re
import statistics
import threading
import time
from pathlib import Path

import pytest

from app.core.engine import EngineError, Sampling
from app.core.harmony import render_prompt
from app.core.lab import (
    CSV_COLUMNS,
    EtaEstimator,
    Experiment,
    ExperimentStarted,
    ExperimentStopped,
    LabError,
    Progress,
    RunDelta,
    RunFinished,
    RunResult,
    RunStarted,
    default_experiment_path,
    open_experiment,
    run_experiment,
    spread,
    summarize,
)
from app.core.problem_sets import Check, Problem, builtin_problem_set
from app.core.scripted_engine import EffortScript, ScriptedEngine, split_pieces

TEMPLATE = (Path(__file__).parents[1] / "fixtures" / "chat_template_gpt_oss.jinja").read_text(encoding="utf-8")
DAY = datetime.date(2025, 8, 8)


def engine_for(script: object, **kw: object) -> ScriptedEngine:
    e = ScriptedEngine(script, **kw)  # type: ignore[arg-type]
    e.load("scripted:gpt-oss-20b")
    return e


def body_tokens(text: str, **kw: bool) -> int:
    """How many token pieces the scripted engine cuts a message body into."""
    return len(split_pieces(text, **kw))


# --- channel accounting ---------------------------------------------------------------------------
def test_tokens_are_counted_per_channel_from_parser_events() -> None:
    reasoning = "First add, then subtract: 12 * 9 = 108."
    final = "She has **25** left."
    script = (
        f"<|channel|>analysis<|message|>{reasoning}<|end|>"
        f"<|start|>assistant<|channel|>final<|message|>{final}<|return|>"
    )
    exp = Experiment.create("How many muffins?", efforts=["medium"], date=DAY)
    events = list(run_experiment(engine_for(script), exp))
    (r,) = exp.results()
    assert r.reasoning_tokens == body_tokens(reasoning) and r.final_tokens == body_tokens(final)
    header_tokens = len(split_pieces(script.replace(reasoning, "").replace(final, "").replace("<|return|>", "")))
    assert r.other_tokens == header_tokens
    assert (
        r.generated_tokens
        == len(r.token_ids)
        == len(r.channels)
        == r.reasoning_tokens + r.final_tokens + r.other_tokens
    )
    assert r.raw_output == script  # special tokens kept, stop token appended
    assert (r.reasoning, r.final, r.stop_reason) == (reasoning, final, "return")
    assert r.first_token_s is not None and r.first_final_s is not None and r.first_final_s >= r.first_token_s
    assert r.total_s >= r.first_final_s
    assert [type(e) for e in events][:3] == [ExperimentStarted, RunStarted, Progress]
    assert isinstance(events[-1], ExperimentStopped) and events[-1].reason == "complete"
    streamed = [e for e in events if isinstance(e, RunDelta)]
    assert "".join(e.reasoning for e in streamed) == reasoning and "".join(e.final for e in streamed) == final


def test_utf8_split_across_tokens_is_counted_in_its_channel() -> None:
    reasoning = "日本語を考える ok"
    final = "答え: **三**"
    script = (
        f"<|channel|>analysis<|message|>{reasoning}<|end|>"
        f"<|start|>assistant<|channel|>final<|message|>{final}<|return|>"
    )
    exp = Experiment.create("q", efforts=["low"], date=DAY)
    list(run_experiment(engine_for(script, split_multibyte=True), exp))
    (r,) = exp.results()
    assert r.reasoning == reasoning and r.final == final
    assert r.reasoning_tokens == body_tokens(reasoning, split_multibyte=True)
    assert r.final_tokens == body_tokens(final, split_multibyte=True)
    # every byte piece of a character belongs to its message's channel: headers, reasoning, headers, answer
    assert re.fullmatch(r"-+r+-+f+", r.channels), r.channels


def test_preamble_and_bare_final_are_accounted() -> None:
    script = (
        "<|channel|>commentary<|message|>Checking.<|end|><|start|>assistant<|channel|>final<|message|>Yes.<|return|>"
    )
    exp = Experiment.create("q", efforts=["high"], date=DAY)
    list(run_experiment(engine_for(script), exp))
    (r,) = exp.results()
    assert r.reasoning_tokens == 0 and r.final_tokens == 2 and r.preamble == "Checking." and "c" in r.channels
    # no header at all: the whole output is the answer
    exp2 = Experiment.create("q", efforts=["low"], date=DAY)
    list(run_experiment(engine_for("Just the answer 42<|return|>"), exp2))
    (r2,) = exp2.results()
    assert r2.final == "Just the answer 42" and r2.final_tokens == r2.generated_tokens == body_tokens(
        "Just the answer 42"
    )


# --- statistics -----------------------------------------------------------------------------------
def test_figures_per_effort_follow_the_scripted_reasoning_lengths() -> None:
    words = {"low": 4, "medium": 12, "high": 40}
    script = EffortScript(words, step=3, answer=lambda _p, e: "**25**" if e != "low" else "**24**")
    problems = [Problem("p1", "How many? Reply with the number.", "25", Check("number", "25"))]
    exp = Experiment.create(problems, runs=3, date=DAY)
    list(run_experiment(engine_for(script), exp))
    summary = exp.summary()
    for effort, _base in words.items():
        want = [body_tokens(script.reasoning_for(effort, n)) for n in range(3)]
        got = [r.reasoning_tokens for r in exp.results() if r.effort == effort]
        assert got == want
        s = summary[effort].reasoning_tokens
        assert s is not None and s.n == 3
        assert s.mean == pytest.approx(statistics.fmean(want)) and s.stdev == pytest.approx(statistics.stdev(want))
        assert (s.min, s.max) == (min(want), max(want))
        assert summary[effort].total_s is not None and summary[effort].total_s.n == 3
    assert (
        summary["low"].reasoning_tokens.mean
        < summary["medium"].reasoning_tokens.mean
        < summary["high"].reasoning_tokens.mean
    )
    assert (summary["low"].accuracy, summary["medium"].accuracy, summary["high"].accuracy) == (0.0, 1.0, 1.0)
    assert exp.marks("p1", "low") == [False, False, False] and exp.marks("p1", "high") == [True, True, True]
    seeds = {(r.effort, r.repeat): r.seed for r in exp.results()}
    assert seeds[("low", 0)] == seeds[("high", 0)] == 1 and seeds[("low", 2)] == 3  # paired seeds


def test_spread_and_summary_edge_cases() -> None:
    assert spread([]) is None and spread([None, None]) is None
    one = spread([7])
    assert one is not None and (one.n, one.mean, one.stdev, one.min, one.max) == (1, 7.0, 0.0, 7.0, 7.0)
    s = spread([2, None, 4, 9])
    assert s is not None and s.n == 3 and s.mean == 5.0 and s.stdev == pytest.approx(statistics.stdev([2, 4, 9]))
    failed = RunResult("p", "low", 0, 1, {}, "q", error="boom", reasoning_tokens=999)
    good = RunResult("p", "low", 1, 2, {}, "q", reasoning_tokens=10, total_s=1.0, correct=True)
    open_q = RunResult("p", "low", 2, 3, {}, "q", reasoning_tokens=20, total_s=3.0, correct=None)
    sm = summarize([failed, good, open_q], ["low", "high"])
    assert sm["low"].errors == 1 and sm["low"].finished == 2 and sm["low"].checked == 1 and sm["low"].accuracy == 1.0
    assert sm["low"].reasoning_tokens.mean == 15.0  # the failed run is left out
    assert sm["high"].finished == 0 and sm["high"].accuracy is None and sm["high"].reasoning_tokens is None


def test_eta_uses_measured_time_per_effort() -> None:
    eta = EtaEstimator()
    assert eta.eta(["low"]) is None
    eta.add("low", 2.0)
    eta.add("low", 4.0)
    eta.add("high", 10.0)
    assert eta.eta(["low", "high", "high"]) == pytest.approx(3 + 10 + 10)
    assert eta.eta(["medium"]) == pytest.approx((2 + 4 + 10) / 3)  # not measured yet: the overall mean
    assert eta.eta([], current="high", elapsed=4.0) == pytest.approx(6.0)
    assert eta.eta([], current="high", elapsed=40.0) == 0.0


def test_waiting_for_a_shared_engine_is_not_counted_as_run_time() -> None:
    class Queued(ScriptedEngine):
        """Like the app's scheduler proxy: the generator waits for its turn before the engine starts."""

        def stream(self, prompt, sampling=None, *, cancel=None, grammar=None):  # type: ignore[no-untyped-def, override]
            inner = super().stream(prompt, sampling, cancel=cancel, grammar=grammar)

            def waiting():  # type: ignore[no-untyped-def]
                time.sleep(0.3)  # another client's generation
                yield from inner

            return waiting()

    engine = Queued(EffortScript({"low": 20, "medium": 20, "high": 20}), delay_s=0.002)
    engine.load("scripted:x")
    exp = Experiment.create("q", efforts=["low"], date=DAY)
    list(run_experiment(engine, exp))
    (r,) = exp.results()
    assert r.wait_s == pytest.approx(0.3, abs=0.1)
    assert r.total_s < 0.25 and r.first_token_s is not None and r.first_token_s < 0.05
    assert r.first_final_s is not None and r.first_token_s < r.first_final_s < r.total_s


def test_runs_through_the_app_scheduler_take_turns_with_chat() -> None:
    from app.core.chat import Conversation, run_turn
    from app.core.scheduler import EngineScheduler

    engine = engine_for(EffortScript({"low": 150, "medium": 150, "high": 150}), delay_s=0.002)
    sched = EngineScheduler(engine)
    lab_client, chat_client = sched.client("lab"), sched.client("chat")
    exp = Experiment.create("q", efforts=["low", "high"], runs=2, date=DAY)
    chat_done = threading.Event()

    def chat() -> None:
        for _ in range(2):
            conv = Conversation()
            conv.add_user("hi")
            list(run_turn(chat_client, conv, effort="low"))
        chat_done.set()

    started = False
    for ev in run_experiment(lab_client, exp):
        if isinstance(ev, RunStarted) and not started:
            started = True
            threading.Thread(target=chat, daemon=True).start()
    assert chat_done.wait(10) and exp.complete
    results = exp.results()
    assert all(r.ok and r.stop_reason == "return" and r.rendered_prompt for r in results)
    assert any(r.wait_s > 0.1 for r in results)  # a chat answer came between lab runs...
    spread_of_totals = max(r.total_s for r in results) / min(r.total_s for r in results)
    assert spread_of_totals < 2.0  # ...and its time was not counted as the lab run's


# --- prompts --------------------------------------------------------------------------------------
@pytest.mark.parametrize("instructions", ["", "Answer tersely."])
def test_rendered_prompts_carry_the_effort_exactly_as_the_template_renders_it(instructions: str) -> None:
    engine = ScriptedEngine(EffortScript(), chat_template=TEMPLATE)
    engine.load("scripted:gpt-oss-20b")
    exp = Experiment.create("What is 17 * 23?", runs=1, instructions=instructions, date=DAY)
    list(run_experiment(engine, exp))
    msgs: list[dict[str, str]] = [{"role": "user", "content": "What is 17 * 23?"}]
    if instructions:
        msgs.insert(0, {"role": "developer", "content": instructions})
    for r in exp.results():
        want = render_prompt(msgs, chat_template=TEMPLATE, reasoning_effort=r.effort, date=DAY)
        assert r.rendered_prompt == want
        assert (
            f"\nKnowledge cutoff: 2024-06\nCurrent date: 2025-08-08\n\nReasoning: {r.effort}\n\n# Valid channels"
            in want
        )
        others = {"low", "medium", "high"} - {r.effort}
        assert not any(f"Reasoning: {o}" in r.rendered_prompt for o in others)
        if instructions:
            assert "<|start|>developer<|message|># Instructions\n\nAnswer tersely." in r.rendered_prompt
    assert [p.count("Reasoning: ") for p in engine.prompts] == [1, 1, 1]


# --- cancel and resume ----------------------------------------------------------------------------
def test_cancel_stops_within_a_token_and_the_run_is_not_recorded() -> None:
    long = (
        "<|channel|>analysis<|message|>"
        + " word" * 2000
        + "<|end|><|start|>assistant<|channel|>final<|message|>x<|return|>"
    )
    engine = engine_for(long, delay_s=0.001)
    exp = Experiment.create("q", efforts=["high"], runs=2, date=DAY)
    cancel = threading.Event()
    events = []
    for ev in run_experiment(engine, exp, cancel=cancel, delta_interval_s=0.0):
        events.append(ev)
        if isinstance(ev, RunDelta) and not cancel.is_set():
            cancel.set()
    assert engine.last_stats.stop_reason == "cancelled" and engine.last_stats.generated_tokens <= 6
    assert isinstance(events[-1], ExperimentStopped) and events[-1].reason == "cancelled"
    assert exp.results() == [] and len(exp.pending()) == 2


def test_resume_after_cancel_skips_finished_runs(tmp_path: Path) -> None:
    ps = builtin_problem_set()
    exp = Experiment.create(ps.problems[:2], runs=2, problem_set=ps.name, date=DAY)
    exp.save(tmp_path / "exp.jsonl")
    engine = engine_for(EffortScript(), delay_s=0.0005)
    cancel = threading.Event()
    finished: list[RunFinished] = []
    for ev in run_experiment(engine, exp, cancel=cancel, delta_interval_s=0.0):
        if isinstance(ev, RunFinished):
            finished.append(ev)
            if len(finished) == 4:
                cancel.set()
    assert len(finished) == 4 and exp.done == 4 and exp.total == 12
    first_keys = [f.result.key for f in finished]
    # reopen from disk, as after a restart, and resume on a fresh engine
    again = open_experiment(tmp_path / "exp.jsonl")
    assert again.warnings == [] and [r.key for r in again.results()] == first_keys
    engine2 = engine_for(EffortScript())
    events = list(run_experiment(engine2, again))
    started = [e.key for e in events if isinstance(e, RunStarted)]
    assert len(engine2.prompts) == 8 and not set(started) & set(first_keys)
    assert started == again.spec.plan()[4:]
    assert isinstance(events[0], ExperimentStarted) and (events[0].done, events[0].total) == (4, 12)
    assert again.complete and len(open_experiment(tmp_path / "exp.jsonl").results()) == 12
    progress = [e for e in events if isinstance(e, Progress)]
    assert progress[-1].done == 12 and progress[-1].fraction == 1.0 and progress[-1].eta_s == 0.0


def test_a_line_cut_short_by_a_crash_is_run_again(tmp_path: Path) -> None:
    exp = Experiment.create("q", efforts=["low", "high"], runs=1, date=DAY)
    path = exp.save(tmp_path / "e.jsonl")
    list(run_experiment(engine_for(EffortScript()), exp))
    text = path.read_text(encoding="utf-8")
    path.write_text(text[: len(text) - 40], encoding="utf-8")  # the last run's line is cut off
    back = open_experiment(path)
    assert len(back.results()) == 1 and back.pending() == [("prompt", "high", 0)]
    assert len(back.warnings) == 1 and "cut short" in back.warnings[0]


def test_resume_refuses_a_different_model(tmp_path: Path) -> None:
    exp = Experiment.create("q", efforts=["low"], runs=2, date=DAY)
    engine = engine_for(EffortScript())
    cancel = threading.Event()
    for ev in run_experiment(engine, exp, cancel=cancel):
        if isinstance(ev, RunFinished):
            cancel.set()
    other = ScriptedEngine(EffortScript(), name="gpt-oss-120b")
    other.load("scripted:gpt-oss-120b")
    with pytest.raises(LabError, match="Load the same model"):
        next(run_experiment(other, exp))
    with pytest.raises(LabError, match="No model is loaded"):
        next(run_experiment(None, exp))


def test_prompt_errors_skip_the_problem_and_engine_errors_stop(tmp_path: Path) -> None:
    problems = [Problem("long", "word " * 3000), Problem("ok", "short")]
    exp = Experiment.create(problems, efforts=["low"], date=DAY)
    engine = ScriptedEngine(EffortScript(), n_ctx=1024)
    engine.load("scripted:x")
    events = list(run_experiment(engine, exp))
    bad, good = exp.results()
    assert bad.error and "too long" in bad.error and bad.error_kind == "prompt" and good.ok
    assert events[-1] == ExperimentStopped("complete") and exp.pending() == [("long", "low", 0)]

    class Broken(ScriptedEngine):
        def stream(self, *a: object, **k: object):  # type: ignore[no-untyped-def, override]
            raise EngineError("llama.cpp failed while generating (code -1).")

    broken = Broken(EffortScript())
    broken.load("scripted:x")
    exp2 = Experiment.create([Problem("a", "x"), Problem("b", "y")], efforts=["low"], date=DAY)
    events2 = list(run_experiment(broken, exp2))
    assert events2[-1] == ExperimentStopped("error", "llama.cpp failed while generating (code -1).")
    assert len(exp2.results()) == 1 and exp2.results()[0].error_kind == "engine"


# --- persistence and export -----------------------------------------------------------------------
def _finished_experiment(tmp_path: Path) -> Experiment:
    ps = builtin_problem_set()
    exp = Experiment.create(
        ps.problems[:3],
        runs=2,
        problem_set=ps.name,
        instructions="Be brief.",
        sampling=Sampling(temperature=0.7, top_p=0.9, max_tokens=500),
        date=DAY,
    )
    exp.save(tmp_path / "e.jsonl")
    answer = lambda prompt, effort: "**25**" if "muffins" in prompt else f"Maybe **{len(effort)}**"  # noqa: E731
    list(run_experiment(engine_for(EffortScript(step=2, answer=answer)), exp))
    return exp


def test_json_export_reopens_to_the_same_experiment(tmp_path: Path) -> None:
    exp = _finished_experiment(tmp_path)
    exp.set_model_sha256(exp.spec.model.path, "ab" * 32)  # type: ignore[union-attr]
    out = exp.export_json(tmp_path / "export.json")
    back = open_experiment(out)
    assert back.spec.to_dict() == exp.spec.to_dict()
    assert [r.to_dict() for r in back.results()] == [r.to_dict() for r in exp.results()]
    assert back.summary() == exp.summary() and back.complete
    data = json.loads(out.read_text(encoding="utf-8"))
    assert data["experiment"]["model"]["sha256"] == "ab" * 32
    assert data["summary"]["high"]["reasoning_tokens"]["mean"] == exp.summary()["high"].reasoning_tokens.mean
    # the experiment file re-opens the same way, including the hash recorded after the runs
    again = open_experiment(exp.path)  # type: ignore[arg-type]
    assert again.spec.to_dict() == exp.spec.to_dict()
    assert [r.to_dict() for r in again.results()] == [r.to_dict() for r in exp.results()]


def test_resuming_a_json_export_records_into_a_new_experiment_file(tmp_path: Path) -> None:
    exp = Experiment.create("q", efforts=["low", "high"], runs=2, date=DAY)
    cancel = threading.Event()
    for ev in run_experiment(engine_for(EffortScript()), exp, cancel=cancel):
        if isinstance(ev, RunFinished) and len(exp.results()) == 2:
            cancel.set()
    export = exp.export_json(tmp_path / "snapshot.json")
    back = open_experiment(export)
    assert back.path is None and back.done == 2
    back.path = tmp_path / "resumed.jsonl"
    list(run_experiment(engine_for(EffortScript()), back))
    again = open_experiment(tmp_path / "resumed.jsonl")
    assert again.complete and again.warnings == [] and len(again.results()) == 4
    assert [r.to_dict() for r in again.results()[:2]] == [r.to_dict() for r in exp.results()]


def test_csv_export_has_every_run_and_figure(tmp_path: Path) -> None:
    exp = _finished_experiment(tmp_path)
    path = exp.export_csv(tmp_path / "runs.csv")
    rows = list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8-sig"))))
    assert len(rows) == 18 and tuple(rows[0].keys()) == CSV_COLUMNS
    for row, r in zip(rows, exp.results(), strict=False):
        assert (row["problem_id"], row["effort"], int(row["repeat"]), int(row["seed"])) == (
            r.problem_id,
            r.effort,
            r.repeat + 1,
            r.seed,
        )
        assert int(row["reasoning_tokens"]) == r.reasoning_tokens and row["raw_output"] == r.raw_output
        assert float(row["temperature"]) == 0.7 and float(row["top_p"]) == 0.9 and row["max_tokens"] == "500"
        assert (
            row["instructions"] == "Be brief."
            and row["prompt"] == r.prompt
            and row["model_file"] == "scripted:gpt-oss-20b"
        )
        assert row["correct"] == str(int(bool(r.correct)))
    muffins = [row for row in rows if row["problem_id"] == "arith-muffins"]
    assert {row["correct"] for row in muffins} == {"1"} and {row["extracted"] for row in muffins} == {"25"}


def test_open_reports_files_that_are_not_experiments(tmp_path: Path) -> None:
    (tmp_path / "a.jsonl").write_text('{"prompt": "hi"}\n', encoding="utf-8")
    (tmp_path / "b.json").write_text("[1, 2]", encoding="utf-8")
    (tmp_path / "c.jsonl").write_bytes(b"\xff\xfe")
    (tmp_path / "d.jsonl").write_text("", encoding="utf-8")
    future = {"type": "experiment", "format": "harmonica-experiment", "version": 99, "spec": {}}
    (tmp_path / "e.jsonl").write_text(json.dumps(future), encoding="utf-8")
    for name, msg in (
        ("a.jsonl", "not a Harmonica experiment"),
        ("b.json", "not a Harmonica experiment"),
        ("c.jsonl", "not UTF-8"),
        ("d.jsonl", "empty"),
        ("e.jsonl", "newer Harmonica"),
        ("missing.jsonl", "cannot be read"),
    ):
        with pytest.raises(LabError, match=msg):
            open_experiment(tmp_path / name)


def test_spec_validation_messages() -> None:
    with pytest.raises(LabError, match="Enter a prompt"):
        Experiment.create("   ")
    with pytest.raises(LabError, match="at least one reasoning effort"):
        Experiment.create("q", efforts=[])
    with pytest.raises(LabError, match="between 1 and"):
        Experiment.create("q", runs=0)
    with pytest.raises(LabError, match="Unknown reasoning effort"):
        Experiment.create("q", efforts=["max"])
    exp = Experiment.create("q", efforts=["high", "low"])
    assert exp.spec.efforts == ["low", "high"]  # always shown low → high


def test_default_path_is_in_the_app_data_folder() -> None:
    exp = Experiment.create("q")
    p = default_experiment_path(exp.spec)
    assert p.parent.name == "lab" and p.suffix == ".jsonl" and exp.spec.id[:8] in p.name


# --- the real engine ------------------------------------------------------------------------------
GRAMMAR = (
    'root ::= <|channel|> "analysis" <|message|> [a-z ]{3,20} <|end|> <|start|> "assistant" '
    '<|channel|> "final" <|message|> [a-z0-9 ]{1,8} <|return|>'
)


def test_real_engine_experiment_on_a_tiny_model(tiny_model_path: Path, tmp_path: Path) -> None:
    pytest.importorskip("llama_cpp")
    from app.core.engine import Engine, LoadSettings

    engine = Engine()
    info = engine.load(tiny_model_path, LoadSettings(n_ctx=512, n_threads=1))
    try:
        exp = Experiment.create(
            "hello world", efforts=["low", "high"], runs=2, grammar=GRAMMAR, sampling=Sampling(max_tokens=80), date=DAY
        )
        exp.save(tmp_path / "real.jsonl")
        events = list(run_experiment(engine, exp))
        assert events[-1] == ExperimentStopped("complete"), events[-1]
        results = exp.results()
        assert len(results) == 4 and [r.seed for r in results] == [1, 1, 2, 2]
        msg_id, end_id = engine.tokenize("<|message|>")[0], engine.tokenize("<|end|>")[0]
        for r in results:
            assert r.ok and r.stop_reason == "return" and r.reasoning and r.final
            assert r.raw_output.startswith("<|channel|>analysis<|message|>") and r.raw_output.endswith("<|return|>")
            assert engine.detokenize(r.token_ids).decode() + "<|return|>" == r.raw_output
            # reasoning tokens are exactly those between the first <|message|> and <|end|>
            first_msg, first_end = r.token_ids.index(msg_id), r.token_ids.index(end_id)
            assert r.reasoning_tokens == first_end - first_msg - 1
            assert r.final_tokens == len(r.token_ids) - r.token_ids.index(msg_id, first_end) - 1
            assert r.generated_tokens == len(r.token_ids) == r.reasoning_tokens + r.final_tokens + r.other_tokens
            want = render_prompt(
                [{"role": "user", "content": "hello world"}],
                chat_template=info.chat_template,
                reasoning_effort=r.effort,
                date=DAY,
            )
            assert r.rendered_prompt == want and f"\n\nReasoning: {r.effort}\n\n" in want
            assert r.first_final_s is not None and 0 < r.first_final_s <= r.total_s and r.tokens_per_s > 0
            assert r.prompt_tokens == len(engine.tokenize(want))
        assert exp.spec.model is not None and exp.spec.model.file == tiny_model_path.name
        assert exp.spec.model.size == tiny_model_path.stat().st_size
        back = open_experiment(exp.path)  # type: ignore[arg-type]
        assert [r.to_dict() for r in back.results()] == [r.to_dict() for r in results]
    finally:
        engine.unload()
