"""ScriptedEngine: replays harmony text as realistic token pieces with the Engine interface."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from app.core.engine import EngineError, LoadSettings, Sampling
from app.core.harmony import SPECIAL_TOKEN_IDS
from app.core.scripted_engine import ScriptedEngine, split_pieces

SCRIPT = (
    "<|channel|>analysis<|message|>We need to greet the user politely.<|end|>"
    "<|start|>assistant<|channel|>final<|message|>Hello there, how can I help?<|return|>"
)


def loaded(*scripts: object, **kw: object) -> ScriptedEngine:
    e = ScriptedEngine(list(scripts), **kw)  # type: ignore[arg-type]
    e.load("scripted:test")
    return e


def test_split_pieces_keeps_special_tokens_whole_and_text_intact() -> None:
    pieces = split_pieces(SCRIPT)
    assert "".join(p for p in pieces if isinstance(p, str)) == SCRIPT
    for tok in ("<|channel|>", "<|message|>", "<|end|>", "<|start|>", "<|return|>"):
        assert tok in pieces
    assert all(len(p) <= 6 for p in pieces if isinstance(p, str) and not p.startswith("<|"))
    assert len(pieces) > 20  # word-sized, not characters or the whole text


def test_split_multibyte_cuts_utf8_between_pieces() -> None:
    pieces = split_pieces("ok 🎉 日本", split_multibyte=True)
    assert any(isinstance(p, bytes) and len(p) == 1 for p in pieces)
    joined = b"".join(p if isinstance(p, bytes) else p.encode() for p in pieces)
    assert joined.decode() == "ok 🎉 日本"


def test_stream_replays_script_and_stops_on_return_token() -> None:
    e = loaded(SCRIPT)
    out = list(e.stream("<|start|>user<|message|>hi<|end|><|start|>assistant", Sampling()))
    text = b"".join(p for _, p in out).decode()
    assert text == SCRIPT.removesuffix("<|return|>")
    assert e.last_stats.stop_reason == "return"
    assert e.last_stats.generated_tokens == len(out)
    ids = {p: t for t, p in out}
    assert ids[b"<|channel|>"] == SPECIAL_TOKEN_IDS["<|channel|>"]
    assert ids[b"<|end|>"] == SPECIAL_TOKEN_IDS["<|end|>"]


def test_stop_reasons_call_eos_and_unterminated() -> None:
    e = loaded(
        "<|channel|>commentary to=functions.f <|constrain|>json<|message|>{}<|call|>",
        "<|channel|>final<|message|>x<|endoftext|>",
        "<|channel|>final<|message|>y",
    )
    for expected in ("call", "eos", "eos"):
        list(e.stream("p", Sampling()))
        assert e.last_stats.stop_reason == expected


def test_max_tokens_gives_length() -> None:
    e = loaded(SCRIPT)
    out = list(e.stream("p", Sampling(max_tokens=5)))
    assert len(out) == 5 and e.last_stats.stop_reason == "length"


def test_context_limit_stops_generation_and_rejects_long_prompt() -> None:
    e = ScriptedEngine([SCRIPT], n_ctx=64)
    e.load("scripted:x", LoadSettings(n_ctx=64))
    prompt = "word " * 40
    n = len(e.tokenize(prompt))
    assert 35 < n < 50
    out = list(e.stream(prompt, Sampling()))
    assert len(out) == 64 - n and e.last_stats.stop_reason == "length"
    with pytest.raises(EngineError, match="too long"):
        e.stream("word " * 80, Sampling())


def test_cancel_stops_within_a_token() -> None:
    e = loaded(SCRIPT, delay_s=0.01)
    cancel = threading.Event()
    got = []
    t0 = time.perf_counter()
    for i, piece in enumerate(e.stream("p", Sampling(), cancel=cancel)):
        got.append(piece)
        if i == 3:
            cancel.set()
    assert len(got) == 4 and e.last_stats.stop_reason == "cancelled"
    assert time.perf_counter() - t0 < 0.5


def test_stats_measure_real_time_and_cache_reuse() -> None:
    e = loaded(SCRIPT, delay_s=0.002)
    list(e.stream("<|start|>user<|message|>hi<|end|><|start|>assistant", Sampling()))
    s = e.last_stats
    assert s.total_s >= s.generated_tokens * 0.002 * 0.9
    assert 0 < s.tokens_per_s < 1000
    assert s.cached_tokens == 0 and s.prompt_tokens > 0
    second = e.prompts[0] + SCRIPT.removesuffix("<|return|>") + "<|end|><|start|>user<|message|>more<|end|>"
    list(e.stream(second, Sampling()))
    assert e.last_stats.cached_tokens >= e.last_stats.prompt_tokens - 10


def test_scripts_queue_callable_and_prompts_recorded() -> None:
    e = loaded(lambda prompt: "<|channel|>final<|message|>" + ("H" if "Reasoning: high" in prompt else "L"))
    out = b"".join(p for _, p in e.stream("Reasoning: high\n", Sampling()))
    assert out.endswith(b"H")
    out = b"".join(p for _, p in e.stream("Reasoning: low\n", Sampling(), grammar="root ::= x"))
    assert out.endswith(b"L")
    assert e.prompts == ["Reasoning: high\n", "Reasoning: low\n"] and e.grammars == [None, "root ::= x"]


def test_queue_consumes_in_order_and_repeats_last() -> None:
    e = loaded("<|channel|>final<|message|>one", "<|channel|>final<|message|>two")
    outs = [b"".join(p for _, p in e.stream("p", Sampling())) for _ in range(3)]
    assert [o.rsplit(b">", 1)[1] for o in outs] == [b"one", b"two", b"two"]


def test_piece_list_script_is_replayed_verbatim() -> None:
    e = loaded(["<|channel|>", "final", "<|message|>", b"\xe2\x82", b"\xac", "!"])
    out = list(e.stream("p", Sampling()))
    assert [p for _, p in out] == [b"<|channel|>", b"final", b"<|message|>", b"\xe2\x82", b"\xac", b"!"]


def test_load_validates_path_reports_progress_and_can_be_cancelled(tmp_path: Path) -> None:
    e = ScriptedEngine([SCRIPT])
    with pytest.raises(EngineError, match="not found"):
        e.load(tmp_path / "missing.gguf")
    f = tmp_path / "m.gguf"
    f.write_bytes(b"GGUF")
    seen: list[float] = []
    info = e.load(f, LoadSettings(n_ctx=2048), progress=lambda x: seen.append(x) is None)
    assert seen[0] == 0.0 and seen[-1] == 1.0 and info.name == "m" and e.n_ctx == 2048 and e.loaded
    with pytest.raises(EngineError, match="cancelled"):
        ScriptedEngine([SCRIPT]).load("scripted:x", progress=lambda x: x < 0.5)
    e.unload()
    assert not e.loaded and e.info is None
    with pytest.raises(EngineError, match="No model"):
        e.stream("p", Sampling())


def test_tokenize_round_trips_and_special_flag() -> None:
    e = loaded(SCRIPT)
    ids = e.tokenize("<|start|>user<|message|>héllo<|end|>")
    assert ids[0] == SPECIAL_TOKEN_IDS["<|start|>"]
    assert e.detokenize(ids).decode() == "<|start|>user<|message|>héllo<|end|>"
    plain = e.tokenize("<|end|>", special=False)
    assert SPECIAL_TOKEN_IDS["<|end|>"] not in plain
