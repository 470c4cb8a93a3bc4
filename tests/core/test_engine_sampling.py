"""Every Sampling field changes or constrains what the real engine samples, on both sampling paths.

A tiny random-weight gpt-oss model with sharper logits than the default (weights scaled up) gives
a next-token distribution far from uniform. Its logits after the prompt are read from llama.cpp;
each test draws the first answer token many times (the prompt stays cached, so every draw
evaluates only its last token again and sees the same logits) and compares with what that
field should give. Paths: the CPU sampler (LogitSampler over llama.cpp's logits) and llama.cpp's
backend sampling (LoadSettings.backend_sampling=True runs it on the CPU backend here; on a GPU it
runs inside the decode).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from app.core.engine import Engine, LoadSettings, Sampling
from tests.fixtures.gguf_factory import write_gpt_oss_gguf
from tests.fixtures.stats import Z_LIMIT, assert_fits, chi_square_z, penalised, softmax, top_p_probs

PROMPT = "<|start|>user<|message|>hello world and the model is a tool to call<|end|><|start|>assistant"
N = 2000  # draws per distribution check
GRAMMAR = r"""
root ::= <|channel|> "final" <|message|> [a-z ]{2,10} <|return|>
"""


@pytest.fixture(scope="module")
def peaked_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_gpt_oss_gguf(tmp_path_factory.mktemp("sampling") / "peaked.gguf", scale=0.2)


def _engine(path: Path, backend: bool) -> Engine:
    e = Engine()
    e.load(path, LoadSettings(n_ctx=512, n_threads=1, backend_sampling=backend))
    return e


@pytest.fixture(scope="module")
def cpu(peaked_model: Path) -> Iterator[Engine]:
    e = _engine(peaked_model, backend=False)
    yield e
    e.unload()


@pytest.fixture(scope="module")
def backend(peaked_model: Path) -> Iterator[Engine]:
    e = _engine(peaked_model, backend=True)
    yield e
    e.unload()


@pytest.fixture(scope="module")
def prompt(cpu: Engine) -> list[int]:
    return cpu.tokenize(PROMPT)


@pytest.fixture(scope="module")
def logits(cpu: Engine, prompt: list[int]) -> np.ndarray:
    """The model's next-token logits after the prompt (CPU path: llama.cpp keeps them)."""
    from app.core import llama_ext
    from app.core.sampler import logits_view

    assert list(cpu.stream(prompt, Sampling(max_tokens=0))) == []
    addr = llama_ext.logits_address(cpu._ctx, -1)
    return logits_view(addr, cpu._n_vocab).copy()


def _stop_ids(e: Engine) -> set[int]:
    """Tokens that end a generation (not yielded; counted as one outcome, -1)."""
    import llama_cpp

    return {
        t
        for t in range(e._n_vocab)
        if t in e._stop_ids or (t != e._end_id and llama_cpp.llama_vocab_is_eog(e._vocab, t))
    }


def _first_tokens(e: Engine, prompt: list[int], n: int = N, **kw: object) -> list[int]:
    out = []
    for i in range(n):
        got = list(e.stream(prompt, Sampling(seed=1000 + i, max_tokens=1, **kw)))  # type: ignore[arg-type]
        out.append(got[0][0] if got else -1)
    return out


def _outcomes(e: Engine, probs: np.ndarray) -> tuple[dict[int, int], np.ndarray]:
    """Map token ids to outcome indices with every stop token pooled into the last one."""
    stops = _stop_ids(e)
    index: dict[int, int] = {}
    ref: list[float] = []
    for t in range(len(probs)):
        if t not in stops:
            index[t] = len(ref)
            ref.append(float(probs[t]))
    index[-1] = len(ref)
    ref.append(float(sum(probs[t] for t in stops)))
    return index, np.array(ref)


def _fits(e: Engine, draws: list[int], probs: np.ndarray) -> float:
    index, ref = _outcomes(e, probs)
    return chi_square_z([index[d] for d in draws], ref)


# --- the CPU sampler -------------------------------------------------------------------------------


def test_distribution_and_temperature(cpu: Engine, prompt: list[int], logits: np.ndarray) -> None:
    """The first token follows softmax(logits / T) exactly, and T really changes it."""
    draws = _first_tokens(cpu, prompt, temperature=0.6)
    assert _fits(cpu, draws, softmax(logits, 0.6)) < Z_LIMIT
    assert _fits(cpu, draws, softmax(logits)) > Z_LIMIT
    plain = _first_tokens(cpu, prompt, temperature=1.0)
    assert _fits(cpu, plain, softmax(logits)) < Z_LIMIT


def test_temperature_zero_is_greedy(cpu: Engine, prompt: list[int], logits: np.ndarray) -> None:
    assert set(_first_tokens(cpu, prompt, 20, temperature=0.0)) == {int(np.argmax(logits))}


def test_top_k(cpu: Engine, prompt: list[int], logits: np.ndarray) -> None:
    top = set(np.argsort(-logits)[:4].tolist())
    draws = _first_tokens(cpu, prompt, 400, top_k=4)
    assert set(draws) == top  # only those, and all of them


def test_top_p(cpu: Engine, prompt: list[int], logits: np.ndarray) -> None:
    nucleus = top_p_probs(softmax(logits), 0.25)
    draws = _first_tokens(cpu, prompt, 1000, top_p=0.25)
    assert len(set(draws)) > 1 and all(nucleus[d] > 0 for d in draws)
    assert _fits(cpu, draws, nucleus) < Z_LIMIT


def test_min_p(cpu: Engine, prompt: list[int], logits: np.ndarray) -> None:
    p = softmax(logits)
    allowed = set(np.flatnonzero(p >= 0.3 * p.max()).tolist())
    draws = _first_tokens(cpu, prompt, 400, min_p=0.3)
    assert len(set(draws)) > 1 and set(draws) <= allowed


def _logits_after(e: Engine, tokens: list[int]) -> np.ndarray:
    from app.core import llama_ext
    from app.core.sampler import logits_view

    assert list(e.stream(tokens, Sampling(max_tokens=0))) == []
    return logits_view(llama_ext.logits_address(e._ctx, -1), e._n_vocab).copy()


def test_repeat_penalty_works_and_penalises_the_context(cpu: Engine, prompt: list[int], logits: np.ndarray) -> None:
    """Any penalty other than 1.0 used to fail outright (wrong llama.cpp call). The penalty now
    applies to the last 64 context tokens, harmony control tokens excepted."""
    # Put the likeliest next tokens into the user's message, so the penalty has mass to move.
    likely = [int(t) for t in np.argsort(-logits)[:40] if int(t) not in cpu._control_ids]
    context = prompt[:-2] + likely + prompt[-2:]
    x = _logits_after(cpu, context)
    recent = [t for t in context[-64:] if t not in cpu._control_ids]
    assert softmax(x)[sorted(set(recent))].sum() > 0.05
    draws = _first_tokens(cpu, context, repeat_penalty=3.0)
    assert _fits(cpu, draws, softmax(penalised(x, recent, 3.0))) < Z_LIMIT
    assert _fits(cpu, draws, softmax(x)) > Z_LIMIT
    for rp in (0.8, 1.1, 1.3):
        out = list(cpu.stream(prompt, Sampling(seed=3, max_tokens=30, repeat_penalty=rp)))
        assert cpu.last_stats is not None and cpu.last_stats.stop_reason in ("length", "return", "call", "eos")
        assert len(out) == 30 or cpu.last_stats.stop_reason != "length"


def test_repeat_penalty_with_grammar(cpu: Engine, prompt: list[int]) -> None:
    out = list(cpu.stream(prompt, Sampling(seed=2, max_tokens=40, repeat_penalty=1.5), grammar=GRAMMAR))
    assert b"".join(p for _, p in out).startswith(b"<|channel|>final<|message|>")
    assert cpu.last_stats is not None and cpu.last_stats.stop_reason == "return"


def test_seed(cpu: Engine, prompt: list[int]) -> None:
    def gen(seed: int | None) -> list[int]:
        return [t for t, _ in cpu.stream(prompt, Sampling(seed=seed, max_tokens=25))]

    assert gen(7) == gen(7)
    assert gen(7) != gen(8)
    assert gen(None) != gen(None)


def test_max_tokens(cpu: Engine, prompt: list[int]) -> None:
    for n in (1, 2, 5):
        out = list(cpu.stream(prompt, Sampling(seed=4, max_tokens=n, temperature=0.0)))
        assert len(out) == n
        assert cpu.last_stats is not None and cpu.last_stats.stop_reason == "length"


# --- llama.cpp backend sampling ---------------------------------------------------------------------


def test_backend_distribution(backend: Engine, prompt: list[int], logits: np.ndarray) -> None:
    assert backend._backend_sampling
    draws = _first_tokens(backend, prompt, temperature=1.0)
    assert backend._bchain is not None  # it really sampled inside the decode
    assert _fits(backend, draws, softmax(logits)) < Z_LIMIT


def test_backend_fields(backend: Engine, prompt: list[int], logits: np.ndarray) -> None:
    assert set(_first_tokens(backend, prompt, 10, temperature=0.0)) == {int(np.argmax(logits))}
    assert set(_first_tokens(backend, prompt, 300, top_k=3)) == set(np.argsort(-logits)[:3].tolist())
    p = softmax(logits)
    assert set(_first_tokens(backend, prompt, 300, min_p=0.3)) <= set(np.flatnonzero(p >= 0.3 * p.max()).tolist())
    nucleus = top_p_probs(p, 0.25)
    assert all(nucleus[d] > 0 for d in _first_tokens(backend, prompt, 300, top_p=0.25))
    hot = _first_tokens(backend, prompt, 1500, temperature=0.6)
    assert _fits(backend, hot, softmax(logits, 0.6)) < Z_LIMIT


def test_backend_seeded_reproducibly(backend: Engine, prompt: list[int]) -> None:
    def gen(seed: int | None) -> list[int]:
        return [t for t, _ in backend.stream(prompt, Sampling(seed=seed, max_tokens=25))]

    a = gen(5)
    assert gen(5) == a
    assert gen(6) != a
    assert gen(None) != gen(None)


def test_backend_and_cpu_paths_take_turns(backend: Engine, prompt: list[int]) -> None:
    """A grammar or a repeat penalty needs the CPU sampler; the engine switches back and forth."""
    first = [t for t, _ in backend.stream(prompt, Sampling(seed=9, max_tokens=10))]
    out = list(backend.stream(prompt, Sampling(seed=2, max_tokens=40), grammar=GRAMMAR))
    assert backend._bchain is None
    assert b"".join(p for _, p in out).startswith(b"<|channel|>final<|message|>")
    assert backend.last_stats is not None and backend.last_stats.stop_reason == "return"
    assert len(list(backend.stream(prompt, Sampling(seed=2, max_tokens=5, repeat_penalty=1.3)))) <= 5
    assert [t for t, _ in backend.stream(prompt, Sampling(seed=9, max_tokens=10))] == first
    assert backend._bchain is not None


def test_backend_stop_tokens_end_the_turn(backend: Engine, prompt: list[int]) -> None:
    """A sampled stop token is not yielded and names the stop reason, as on the CPU path."""
    stops = _stop_ids(backend)
    seen_stop = False
    for seed in range(60):
        out = list(backend.stream(prompt, Sampling(seed=seed, max_tokens=60, temperature=1.5)))
        s = backend.last_stats
        assert s is not None
        assert not {t for t, _ in out} & stops
        if s.stop_reason != "length":
            assert s.stop_reason in ("return", "call", "eos")
            seen_stop = True
            break
    assert seen_stop


def test_backend_cancel_lands_within_one_token(backend: Engine, prompt: list[int]) -> None:
    for seed in range(20):
        cancel = threading.Event()
        got = []
        for tok, _ in backend.stream(prompt, Sampling(seed=seed, max_tokens=200), cancel=cancel):
            got.append(tok)
            if len(got) == 5:
                cancel.set()
        s = backend.last_stats
        assert s is not None
        if s.stop_reason == "cancelled":
            assert len(got) == 5
            return
        assert len(got) < 5  # a stop token came first: try another seed
    pytest.fail("every seed stopped early")


def test_backend_prefix_reuse_matches_a_fresh_engine(peaked_model: Path, backend: Engine, prompt: list[int]) -> None:
    first = [t for t, _ in backend.stream(prompt, Sampling(seed=1, max_tokens=6, temperature=0.0))]
    follow = prompt + first + backend.tokenize("<|end|><|start|>user<|message|>more<|end|><|start|>assistant")
    again = [t for t, _ in backend.stream(follow, Sampling(seed=1, max_tokens=6, temperature=0.0))]
    assert backend.last_stats is not None and backend.last_stats.cached_tokens >= len(prompt)
    fresh = _engine(peaked_model, backend=True)
    try:
        assert [t for t, _ in fresh.stream(follow, Sampling(seed=1, max_tokens=6, temperature=0.0))] == again
    finally:
        fresh.unload()


def test_distribution_check_can_fail(cpu: Engine, prompt: list[int], logits: np.ndarray) -> None:
    """Power: the same check rejects draws made at another temperature."""
    draws = _first_tokens(cpu, prompt, 1500, temperature=1.3)
    assert _fits(cpu, draws, softmax(logits)) > Z_LIMIT
    assert_fits([0] * 10, [1.0])  # the helper itself accepts a perfect fit
