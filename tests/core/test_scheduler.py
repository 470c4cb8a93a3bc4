"""EngineScheduler: one generation at a time, fair round-robin turns, cancel while queued, per-client stats."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from app.core import chat
from app.core.engine import EngineError, Sampling
from app.core.harmony import FinalDelta
from app.core.scheduler import EngineScheduler, QueueState, TurnCancelled
from app.core.scripted_engine import ScriptedEngine

ANSWER = "<|channel|>analysis<|message|>think<|end|><|start|>assistant<|channel|>final<|message|>{}<|return|>"


def wait_until(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise AssertionError("condition not reached in time")
        time.sleep(0.005)


def scripted(*scripts: str, **kw: object) -> ScriptedEngine:
    e = ScriptedEngine(list(scripts), **kw)  # type: ignore[arg-type]
    e.load("scripted:x")
    return e


class Overlap:
    """Wraps an engine's stream to record whether two generations ever ran at once."""

    def __init__(self, engine: ScriptedEngine) -> None:
        self.active = 0
        self.max_active = 0
        self.lock = threading.Lock()
        real = engine.stream

        def stream(*a: object, **kw: object) -> Iterator[tuple[int, bytes]]:
            inner = real(*a, **kw)  # type: ignore[arg-type]

            def run() -> Iterator[tuple[int, bytes]]:
                with self.lock:
                    self.active += 1
                    self.max_active = max(self.max_active, self.active)
                try:
                    yield from inner
                finally:
                    with self.lock:
                        self.active -= 1

            return run()

        engine.stream = stream  # type: ignore[method-assign]


# --- turn order --------------------------------------------------------------------------------


def test_round_robin_between_clients_fifo_within_one() -> None:
    s = EngineScheduler(scripted("x"))
    granted: list[str] = []
    holder = s.acquire("chat")

    def take(label: str, client: str) -> None:
        t = s.acquire(client)
        granted.append(label)
        s.release(t)

    threads = []
    for label, client in [("api1", "api"), ("api2", "api"), ("api3", "api"), ("lab1", "lab"), ("chat2", "chat")]:
        th = threading.Thread(target=take, args=(label, client))
        th.start()
        threads.append(th)
        n = len(threads)
        wait_until(lambda n=n: s.state.total_waiting == n)  # type: ignore[misc]
    assert s.state.running == "chat"
    assert s.state.waiting == {"chat": 1, "api": 3, "lab": 1}
    s.release(holder)
    for th in threads:
        th.join(5)
    # After chat: api, lab, chat, then api's remaining requests in their own order.
    assert granted == ["api1", "lab1", "chat2", "api2", "api3"]
    assert s.state == QueueState()


def test_queue_state_listener_and_description() -> None:
    s = EngineScheduler(scripted("x"))
    seen: list[QueueState] = []
    remove = s.add_listener(seen.append)
    t = s.acquire("chat")
    waiter = threading.Thread(target=lambda: s.release(s.acquire("api")))
    waiter.start()
    wait_until(lambda: s.state.waiting == {"api": 1})
    st = s.state
    assert st.running == "chat" and st.running_since is not None
    assert st.describe() == "chat is generating; 1 waiting (api 1)"
    s.release(t)
    waiter.join(5)
    assert s.state.describe() == "idle"
    assert any(x.running == "api" for x in seen) and seen[-1] == QueueState()
    remove()
    n = len(seen)
    s.release(s.acquire("chat"))
    assert len(seen) == n


def test_cancel_while_waiting_leaves_the_queue_promptly() -> None:
    s = EngineScheduler(scripted("x"))
    holder = s.acquire("chat")
    cancel = threading.Event()
    result: list[object] = []

    def wait() -> None:
        try:
            s.acquire("api", cancel)
            result.append("granted")
        except TurnCancelled:
            result.append("cancelled")

    th = threading.Thread(target=wait)
    th.start()
    wait_until(lambda: s.state.waiting == {"api": 1})
    t0 = time.monotonic()
    cancel.set()
    th.join(5)
    assert result == ["cancelled"] and time.monotonic() - t0 < 0.5
    assert s.state.waiting == {}
    s.release(holder)
    assert s.state.running is None  # the cancelled ticket was not granted afterwards


def test_acquire_timeout_and_close() -> None:
    s = EngineScheduler(scripted("x"))
    holder = s.acquire("chat")
    with pytest.raises(TimeoutError):
        s.acquire("api", timeout=0.05)
    assert s.state.waiting == {}
    errors: list[BaseException] = []
    th = threading.Thread(target=lambda: _catch(errors, lambda: s.acquire("api")))
    th.start()
    wait_until(lambda: s.state.total_waiting == 1)
    s.close()
    th.join(5)
    assert len(errors) == 1 and isinstance(errors[0], TurnCancelled)
    s.release(holder)
    with pytest.raises(TurnCancelled):
        s.acquire("chat")


def _catch(errors: list[BaseException], fn: Callable[[], object]) -> None:
    try:
        fn()
    except BaseException as exc:  # noqa: BLE001
        errors.append(exc)


# --- client proxies over a scripted engine ---------------------------------------------------------


def test_proxy_interface_matches_the_engine() -> None:
    e = scripted(ANSWER.format("hi"), n_ctx=4096)
    c = EngineScheduler(e).client("chat")
    assert c.info is e.info and c.n_ctx == 4096 and c.loaded
    assert c.tokenize("hello <|end|>") == e.tokenize("hello <|end|>")
    assert c.last_stats is None
    out = b"".join(p for _, p in c.stream(c.tokenize("<|start|>user<|message|>q<|end|><|start|>assistant")))
    assert out.endswith(b"hi") and c.last_stats is not None and c.last_stats.stop_reason == "return"
    none = EngineScheduler(None).client("chat")
    assert none.info is None and none.n_ctx == 0 and not none.loaded
    with pytest.raises(EngineError, match="No model"):
        none.stream("x")


def test_stream_waits_for_the_turn_and_releases_on_finish_error_and_close() -> None:
    e = scripted(ANSWER.format("one two three four"))
    s = EngineScheduler(e)
    chat_c, api_c = s.client("chat"), s.client("api")
    prompt = chat_c.tokenize("<|start|>user<|message|>q<|end|><|start|>assistant")

    # Closed early: the turn passes on.
    g = chat_c.stream(prompt)
    next(g)
    assert s.state.running == "chat"
    g.close()  # type: ignore[attr-defined]
    assert s.state.running is None and chat_c.last_stats is not None
    assert chat_c.last_stats.stop_reason == "cancelled"

    # Runs to the end: released.
    list(api_c.stream(prompt))
    assert s.state.running is None and api_c.last_stats.stop_reason == "return"  # type: ignore[union-attr]

    # Raises mid-stream: released, error propagates.
    def boom(*_a: object, **_k: object) -> Iterator[tuple[int, bytes]]:
        yield 1, b"x"
        raise EngineError("decode failed")

    e.stream = boom  # type: ignore[method-assign]
    g = chat_c.stream(prompt)
    with pytest.raises(EngineError, match="decode failed"):
        list(g)
    assert s.state.running is None


def test_input_errors_raise_at_call_time_before_queueing() -> None:
    e = scripted(ANSWER.format("x"), n_ctx=64)
    s = EngineScheduler(e)
    holder = s.acquire("chat")
    api = s.client("api")
    with pytest.raises(EngineError, match="too long"):
        api.stream(list(range(1000, 1100)))
    assert s.state.waiting == {}
    s.release(holder)


def test_generations_never_overlap_and_outputs_are_not_mixed() -> None:
    words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot"]
    e = scripted(lambda prompt: ANSWER.format(" ".join([prompt.split("say ")[1].split("<")[0]] * 5)), delay_s=0.002)
    ov = Overlap(e)
    s = EngineScheduler(e)
    results: dict[str, str] = {}
    stats: dict[str, int] = {}

    def ask(word: str, client: str) -> None:
        c = s.client(client)
        conv = chat.Conversation()
        conv.add_user(f"say {word}")
        for _ev in chat.run_turn(c, conv, sampling=Sampling()):
            pass
        results[word] = conv.messages[-1].content
        assert c.last_stats is not None
        stats[word] = c.last_stats.generated_tokens

    threads = [threading.Thread(target=ask, args=(w, ["chat", "api", "lab"][i % 3])) for i, w in enumerate(words)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(20)
    assert results == {w: " ".join([w] * 5) for w in words}
    assert ov.max_active == 1
    # Each proxy kept its own generation's stats: the longer words took more tokens.
    assert stats["charlie"] > stats["echo"]


def test_cancel_while_queued_ends_the_stream_without_output() -> None:
    e = scripted(ANSWER.format("x"))
    s = EngineScheduler(e)
    holder = s.acquire("chat")
    api = s.client("api")
    cancel = threading.Event()
    g = api.stream(api.tokenize("<|start|>assistant"), cancel=cancel)
    out: list[object] = []
    th = threading.Thread(target=lambda: out.extend(g))
    th.start()
    wait_until(lambda: s.state.waiting == {"api": 1})
    cancel.set()
    th.join(5)
    assert out == [] and api.last_stats is not None and api.last_stats.stop_reason == "cancelled"
    s.release(holder)


def test_scheduler_cancel_stops_running_and_queued_requests_of_a_client() -> None:
    e = scripted(ANSWER.format(" ".join(["word"] * 400)), delay_s=0.005)
    s = EngineScheduler(e)
    results: list[str] = []

    def run(client: str) -> None:
        c = s.client(client)
        conv = chat.Conversation()
        conv.add_user("go")
        list(chat.run_turn(c, conv))
        results.append(f"{client}:{conv.messages[-1].stop_reason}")

    threads = [threading.Thread(target=run, args=(c,)) for c in ("api", "api", "chat")]
    for th in threads:
        th.start()
        time.sleep(0.05)
    wait_until(lambda: s.state.total_waiting == 2)
    assert s.cancel("api") == 2
    # The chat request may be queued behind a stopped api one; it is not cancelled.
    for th in threads:
        th.join(30)
    assert sorted(results) == ["api:cancelled", "api:cancelled", "chat:return"]


def test_exclusive_turn_refuses_requests_validated_before_it() -> None:
    e = scripted(ANSWER.format("x"))
    s = EngineScheduler(e)
    api = s.client("api")
    holder = s.acquire("chat")
    g = api.stream(api.tokenize("<|start|>assistant"))
    errors: list[BaseException] = []
    th = threading.Thread(target=lambda: _catch(errors, lambda: list(g)))
    th.start()
    wait_until(lambda: s.state.waiting == {"api": 1})
    loader = threading.Thread(target=lambda: _exclusive(s))
    loader.start()
    wait_until(lambda: s.state.waiting == {"api": 1, "loader": 1})
    s.release(holder)  # api goes first (round robin after chat), then the loader
    th.join(5)
    loader.join(5)
    assert not errors  # it ran before the model changed
    # Now a request validated before an exclusive turn:
    holder = s.acquire("chat")
    g = api.stream(api.tokenize("<|start|>assistant"))
    th = threading.Thread(target=lambda: _catch(errors, lambda: list(g)))
    th.start()
    wait_until(lambda: s.state.waiting == {"api": 1})
    s.release(holder)
    th.join(5)
    assert not errors
    g = api.stream(api.tokenize("<|start|>assistant"))
    _exclusive(s)
    with pytest.raises(EngineError, match="model was changed"):
        list(g)
    assert s.state.running is None


def _exclusive(s: EngineScheduler) -> None:
    with s.exclusive("loader"):
        time.sleep(0.01)


def test_engine_can_be_replaced_between_turns() -> None:
    a, b = scripted(ANSWER.format("from a")), scripted(ANSWER.format("from b"))
    s = EngineScheduler(a)
    c = s.client("chat")
    conv = chat.Conversation()
    conv.add_user("q")
    list(chat.run_turn(c, conv))
    with s.exclusive("loader"):
        s.engine = b
    conv.add_user("q2")
    list(chat.run_turn(c, conv))
    assert [m.content for m in conv.messages if m.role == "assistant"] == ["from a", "from b"]


# --- the real engine ---------------------------------------------------------------------------------

GRAMMAR = (
    'root ::= <|channel|> "analysis" <|message|> [a-z ]{{2,6}} <|end|> <|start|> "assistant" '
    '<|channel|> "final" <|message|> "{}" <|return|>'
)


@pytest.fixture(scope="module")
def real_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    pytest.importorskip("llama_cpp")
    from app.core.engine import Engine, LoadSettings
    from tests.fixtures.gguf_factory import write_gpt_oss_gguf

    e = Engine()
    e.load(write_gpt_oss_gguf(tmp_path_factory.mktemp("sched") / "tiny.gguf"), LoadSettings(n_ctx=512, n_threads=1))
    yield e
    e.unload()


class LockSpy:
    """Stands in for Engine._gen_lock and counts acquire attempts."""

    def __init__(self, lock: object) -> None:
        self.lock = lock
        self.attempts = 0

    def acquire(self, *a: object, **kw: object) -> bool:
        self.attempts += 1
        return self.lock.acquire(*a, **kw)  # type: ignore[attr-defined, no-any-return]

    def release(self) -> None:
        self.lock.release()  # type: ignore[attr-defined]

    def locked(self) -> bool:
        return self.lock.locked()  # type: ignore[attr-defined, no-any-return]


def test_real_engine_queued_request_never_waits_on_the_engine_lock(
    real_engine: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = LockSpy(real_engine._gen_lock)  # type: ignore[attr-defined]
    monkeypatch.setattr(real_engine, "_gen_lock", spy)
    s = EngineScheduler(real_engine)  # type: ignore[arg-type]
    chat_c, api_c = s.client("chat"), s.client("api")
    prompt = chat_c.tokenize("<|start|>user<|message|>hello world<|end|><|start|>assistant")
    g = chat_c.stream(prompt, Sampling(seed=1, max_tokens=40), grammar="root ::= [a-z]{30,40}")
    first = next(g)  # chat is mid-generation and holds the engine lock
    assert spy.locked() and spy.attempts == 1
    got: list[bytes] = []
    th = threading.Thread(
        target=lambda: got.extend(
            p for _, p in api_c.stream(prompt, Sampling(seed=2, max_tokens=5), grammar="root ::= [a-z]{5}")
        )
    )
    th.start()
    wait_until(lambda: s.state.waiting == {"api": 1})
    time.sleep(0.1)
    assert spy.attempts == 1  # the queued request waits in the scheduler, not on the engine's lock
    rest = list(g)
    th.join(10)
    assert 30 <= len(first[1] + b"".join(p for _, p in rest)) <= 40 and len(b"".join(got)) == 5
    assert spy.attempts == 2 and not spy.locked()
    assert chat_c.last_stats.generated_tokens == len(rest) + 1  # type: ignore[union-attr]
    assert api_c.last_stats.generated_tokens == len(got)  # type: ignore[union-attr]


def test_real_engine_concurrent_turns_are_not_mixed(real_engine: object) -> None:
    s = EngineScheduler(real_engine)  # type: ignore[arg-type]
    answers = {"chat": "first answer", "api": "second answer", "lab": "third answer"}
    out: dict[str, tuple[str, str | None]] = {}

    def ask(client: str) -> None:
        c = s.client(client)
        conv = chat.Conversation()
        conv.add_user("hello world")
        deltas = "".join(
            ev.text
            for ev in chat.run_turn(
                c, conv, sampling=Sampling(seed=3, max_tokens=60), grammar=GRAMMAR.format(answers[client])
            )
            if isinstance(ev, FinalDelta)
        )
        out[client] = (deltas, conv.messages[-1].stop_reason)

    threads = [threading.Thread(target=ask, args=(c,)) for c in answers]
    for th in threads:
        th.start()
    for th in threads:
        th.join(30)
    assert out == {c: (a, "return") for c, a in answers.items()}


def test_tiny_model_path_fixture_works_with_a_scheduler(tiny_model_path: Path) -> None:
    pytest.importorskip("llama_cpp")
    from app.core.engine import Engine, LoadSettings

    e = Engine()
    s = EngineScheduler(e)
    with s.exclusive("loader"):
        e.load(tiny_model_path, LoadSettings(n_ctx=256, n_threads=1))
    try:
        c = s.client("chat")
        conv = chat.Conversation()
        conv.add_user("hello")
        list(chat.run_turn(c, conv, sampling=Sampling(seed=1, max_tokens=50), grammar=GRAMMAR.format("ok")))
        assert conv.messages[-1].content == "ok" and c.last_stats.stop_reason == "return"  # type: ignore[union-attr]
    finally:
        with s.exclusive("loader"):
            e.unload()
