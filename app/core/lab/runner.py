"""Running an experiment: one generation through chat.run_turn, measured and graded; the resumable loop over the plan."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Iterator

from app.core.chat import ChatError, Conversation, Message, TurnEvent, TurnFinished, TurnStarted, run_turn
from app.core.engine import EngineError, EngineLike, GenerationStats, ModelInfo
from app.core.harmony import FinalDelta, PreambleDelta, ReasoningDelta
from app.core.lab.events import (
    ExperimentStarted,
    ExperimentStopped,
    LabEvent,
    Progress,
    RunDelta,
    RunFinished,
    RunStarted,
)
from app.core.lab.experiment import Experiment
from app.core.lab.files import ExperimentFile
from app.core.lab.recorder import _Recorder
from app.core.lab.spec import (
    FINAL,
    PREAMBLE,
    REASONING,
    ExperimentSpec,
    LabError,
    ModelRef,
    RunKey,
    RunResult,
    sampling_dict,
)
from app.core.lab.stats import EtaEstimator


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
