"""Engine on tiny random-weight gpt-oss models: loading, streaming, stop reasons, cancel, KV reuse."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from app.core.engine import Engine, EngineError, LoadSettings, Sampling, check_model_file, split_grammar_stops
from tests.fixtures.gguf_factory import write_gpt_oss_gguf, write_llama_gguf

PROMPT = "<|start|>user<|message|>hello world<|end|><|start|>assistant"

# Harmony-shaped output forced through GBNF; special tokens are written as <|...|> token references.
GRAMMAR_FINAL = r"""
root ::= <|channel|> "analysis" <|message|> text <|end|> <|start|> "assistant" <|channel|> "final" <|message|> text <|return|>
text ::= [a-z ]{1,12}
"""
GRAMMAR_CALL = r"""
root ::= <|channel|> "analysis" <|message|> text <|end|> <|start|> "assistant" <|channel|> "commentary to=functions.f " <|constrain|> "json" <|message|> "{\"a\":1}" <|call|>
text ::= [a-z ]{1,12}
"""
# Never complete, so generation only ends on max_tokens, a full context or cancel.
ENDLESS = "root ::= [a-z ] root"
GRAMMAR_EOT = r"""
root ::= <|channel|> "final" <|message|> [a-z]{3} <|endoftext|>
"""


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    path = write_gpt_oss_gguf(tmp_path_factory.mktemp("engine") / "tiny.gguf")
    e = Engine()
    e.load(path, LoadSettings(n_ctx=512, n_threads=1))
    yield e
    e.unload()


def run(e: Engine, prompt: str | list[int], **kw: object) -> list[tuple[int, bytes]]:
    grammar = kw.pop("grammar", None)
    cancel = kw.pop("cancel", None)
    return list(e.stream(prompt, Sampling(**kw), grammar=grammar, cancel=cancel))  # type: ignore[arg-type]


def text(out: list[tuple[int, bytes]]) -> bytes:
    return b"".join(p for _, p in out)


# --- loading --------------------------------------------------------------------------------------


def test_load_reports_model_info(tiny_model_path: Path) -> None:
    e = Engine()
    assert not e.loaded and e.info is None and e.n_ctx == 0
    seen: list[float] = []
    info = e.load(tiny_model_path, LoadSettings(n_ctx=256), progress=lambda f: seen.append(f) is None)
    try:
        assert e.loaded and e.info is info
        assert info.arch == "gpt-oss" and info.name == "tiny-gpt-oss"
        assert info.n_ctx == e.n_ctx == 256
        assert info.n_ctx_train == 4096
        assert info.n_layer == 2 and info.n_expert == 4 and info.n_swa == 128
        assert info.size_bytes == tiny_model_path.stat().st_size
        assert info.n_params > 0
        template = Path("tests/fixtures/chat_template_gpt_oss.jinja")
        assert info.chat_template is not None and "<|start|>" in info.chat_template
        if template.exists():
            assert info.chat_template == template.read_text(encoding="utf-8")
        assert seen and seen[-1] == pytest.approx(1.0)
    finally:
        e.unload()
    assert not e.loaded and e.info is None


def test_load_reports_llama_cpp_buffers(tiny_model_path: Path) -> None:
    e = Engine()
    info = e.load(tiny_model_path, LoadSettings(n_ctx=1024, use_mmap=True))
    e.unload()
    assert info.buffers["CPU_Mapped model"] > 0
    assert info.buffers["CPU KV"] > 0 and info.buffers["CPU compute"] > 0
    assert all(isinstance(v, int) and v >= 0 for v in info.buffers.values())


def test_devices_empty_hides_gpus_and_unknown_device_is_explained(tiny_model_path: Path) -> None:
    e = Engine()
    info = e.load(tiny_model_path, LoadSettings(n_ctx=256, n_gpu_layers=99, devices=()))
    try:
        assert all(k.startswith(("CPU", "AMX")) for k in info.buffers), info.buffers
        assert len(run(e, PROMPT, seed=1, max_tokens=3)) == 3
    finally:
        e.unload()
    with pytest.raises(EngineError, match=r"Cannot use the chosen GPU: llama\.cpp has no device named CUDA7"):
        e.load(tiny_model_path, LoadSettings(n_ctx=256, devices=("CUDA7",)))
    with pytest.raises(EngineError, match="CPU is the CPU, not a GPU"):
        e.load(tiny_model_path, LoadSettings(n_ctx=256, devices=("CPU",)))
    assert not e.loaded


def test_load_cancelled_by_progress(tiny_model_path: Path) -> None:
    e = Engine()
    with pytest.raises(EngineError, match="cancelled"):
        e.load(tiny_model_path, LoadSettings(n_ctx=256), progress=lambda f: False)
    assert not e.loaded


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(EngineError, match="does not exist"):
        Engine().load(tmp_path / "nope.gguf")


def test_not_a_gguf(tmp_path: Path) -> None:
    p = tmp_path / "notes.gguf"
    p.write_bytes(b"this is a text file, not a model\n" * 10)
    with pytest.raises(EngineError, match="not a GGUF"):
        Engine().load(p)


def test_damaged_header(tmp_path: Path) -> None:
    p = tmp_path / "bad.gguf"
    p.write_bytes(
        b"GGUF" + (3).to_bytes(4, "little") + (5).to_bytes(8, "little") + (10**12).to_bytes(8, "little") + b"\xff" * 64
    )
    with pytest.raises(EngineError, match="damaged"):
        Engine().load(p)


def test_unreadable_and_absurd_headers(tmp_path: Path) -> None:
    import struct

    # An array that claims far more elements than the file could hold must fail fast, not loop.
    key = b"x"
    p = tmp_path / "huge-array.gguf"
    p.write_bytes(
        b"GGUF"
        + struct.pack("<IQQ", 3, 0, 1)
        + struct.pack("<Q", len(key))
        + key
        + struct.pack("<IIQ", 9, 8, 10**15)
        + b"\0" * 64
    )
    with pytest.raises(EngineError, match="damaged"):
        check_model_file(p)
    d = tmp_path / "dir.gguf"
    d.mkdir()
    with pytest.raises(EngineError, match="not a file"):
        check_model_file(d)


def test_truncated_file(tiny_model_path: Path, tmp_path: Path) -> None:
    p = tmp_path / "cut.gguf"
    data = tiny_model_path.read_bytes()
    p.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(EngineError, match="incomplete"):
        Engine().load(p)
    # The data extent check is exact: the whole file passes, one byte less does not.
    assert check_model_file(tiny_model_path).data_end <= len(data)
    p.write_bytes(data[: check_model_file(tiny_model_path).data_end - 1])
    with pytest.raises(EngineError, match="incomplete"):
        check_model_file(p)


def test_wrong_architecture(tmp_path: Path) -> None:
    p = write_llama_gguf(tmp_path / "llama.gguf")
    with pytest.raises(EngineError, match="'llama' model"):
        Engine().load(p)


def test_llama_load_failure_is_explained(tmp_path: Path) -> None:
    # Right architecture, but the metadata promises a block whose tensors are not in the file.
    p = write_gpt_oss_gguf(tmp_path / "short.gguf", n_layer=2, extra_metadata={"gpt-oss.block_count": 3})
    e = Engine()
    with pytest.raises(EngineError, match=r"could not load short.gguf: .*blk\.2"):
        e.load(p)
    assert not e.loaded


@pytest.mark.parametrize(
    "bad",
    [{"gpt-oss.expert_used_count": 9}, {"gpt-oss.block_count": 0}, {"gpt-oss.embedding_length": 0}],
)
def test_settings_llama_would_abort_on_are_rejected(tmp_path: Path, bad: dict[str, int]) -> None:
    p = write_gpt_oss_gguf(tmp_path / "bad-hparams.gguf", extra_metadata=bad)
    with pytest.raises(EngineError, match="invalid model settings"):
        Engine().load(p)


def test_missing_split_part(tmp_path: Path) -> None:
    first = write_gpt_oss_gguf(tmp_path / "m-00001-of-00003.gguf", extra_metadata={"split.count": 3})
    with pytest.raises(EngineError, match=r"missing: m-00002-of-00003\.gguf"):
        check_model_file(first)
    with pytest.raises(EngineError, match="first part"):
        check_model_file(write_gpt_oss_gguf(tmp_path / "odd-name.gguf", extra_metadata={"split.count": 3}))


@pytest.mark.parametrize("expert_type", ["F32", "F16", "Q8_0", "MXFP4"])
def test_factory_variants_load_and_run(tiny_model_factory: Callable[..., Path], expert_type: str) -> None:
    path = tiny_model_factory(f"{expert_type}.gguf", expert_type=expert_type, dense_type="F16", n_layer=1)
    e = Engine()
    # Extra CPU buffers off: on some VMs llama.cpp's AMX kernels for Q8_0 raise SIGILL.
    e.load(path, LoadSettings(n_ctx=128, n_threads=1, cpu_extra_buffers=False))
    try:
        assert len(run(e, PROMPT, seed=1, max_tokens=3)) == 3
    finally:
        e.unload()


def test_full_size_vocab_uses_real_special_ids() -> None:
    from tests.fixtures.gguf_factory import HARMONY_SPECIALS, REAL_VOCAB_SIZE, build_vocab

    v = build_vocab(REAL_VOCAB_SIZE)
    assert len(v.tokens) == REAL_VOCAB_SIZE == len(set(v.tokens))
    for text, tid in HARMONY_SPECIALS.items():
        assert v.tokens[tid] == text


# --- tokens ---------------------------------------------------------------------------------------


def test_tokenize_keeps_special_tokens(engine: Engine) -> None:
    ids = engine.tokenize(PROMPT)
    assert engine.detokenize(ids) == PROMPT.encode()
    specials = [
        engine.tokenize(t) for t in ("<|start|>", "<|message|>", "<|end|>", "<|channel|>", "<|return|>", "<|call|>")
    ]
    assert all(len(s) == 1 for s in specials)
    assert len({s[0] for s in specials}) == len(specials)
    # With special=False control tokens are plain text and take several tokens. (llama.cpp makes
    # <|start|>, <|channel|>, <|message|>, <|constrain|> and <|end|> USER_DEFINED for gpt-oss, and
    # those are matched even then.)
    assert len(engine.tokenize("<|return|>", special=False)) > 1
    assert len(engine.tokenize("<|start|>", special=False)) == 1
    with pytest.raises(EngineError, match="outside the vocabulary"):
        engine.detokenize([10**7])


# --- streaming and stop reasons -------------------------------------------------------------------


def test_stream_yields_pieces_and_stats(engine: Engine) -> None:
    out = run(engine, PROMPT, seed=3, max_tokens=12)
    assert 0 < len(out) <= 12
    assert all(isinstance(t, int) and isinstance(p, bytes) for t, p in out)
    assert [p for _, p in out] == [engine.detokenize([t]) for t, _ in out]
    s = engine.last_stats
    assert s is not None and s.generated_tokens == len(out)
    assert s.prompt_tokens == len(engine.tokenize(PROMPT))
    assert 0 < s.ttft_s <= s.total_s
    if s.stop_reason == "length":
        assert len(out) == 12
        assert s.tokens_per_s > 0


def test_stop_return_with_special_tokens_kept(engine: Engine) -> None:
    out = run(engine, PROMPT, seed=7, max_tokens=80, grammar=GRAMMAR_FINAL)
    t = text(out)
    assert t.startswith(b"<|channel|>analysis<|message|>")
    assert b"<|end|><|start|>assistant<|channel|>final<|message|>" in t
    assert engine.last_stats is not None and engine.last_stats.stop_reason == "return"
    assert b"<|return|>" not in t  # the stop token itself is not yielded
    pieces = [p for _, p in out]
    assert b"<|channel|>" in pieces and b"<|message|>" in pieces and b"<|end|>" in pieces


def test_stop_call(engine: Engine) -> None:
    out = run(engine, PROMPT, seed=7, max_tokens=80, grammar=GRAMMAR_CALL)
    assert text(out).endswith(b'<|channel|>commentary to=functions.f <|constrain|>json<|message|>{"a":1}')
    assert engine.last_stats is not None and engine.last_stats.stop_reason == "call"


def test_stop_endoftext(engine: Engine) -> None:
    out = run(engine, PROMPT, seed=1, max_tokens=20, grammar=GRAMMAR_EOT)
    assert text(out).startswith(b"<|channel|>final<|message|>")
    assert engine.last_stats is not None and engine.last_stats.stop_reason == "eos"


def test_grammar_output_is_deterministic_with_seed(engine: Engine) -> None:
    a = run(engine, PROMPT, seed=11, max_tokens=80, grammar=GRAMMAR_FINAL)
    b = run(engine, PROMPT, seed=11, max_tokens=80, grammar=GRAMMAR_FINAL)
    c = run(engine, PROMPT, seed=12, max_tokens=80, grammar=GRAMMAR_FINAL)
    assert a == b
    assert a != c


def test_max_tokens_gives_length(engine: Engine) -> None:
    out = run(engine, PROMPT, seed=5, max_tokens=4, grammar=ENDLESS)
    assert len(out) == 4
    assert engine.last_stats is not None and engine.last_stats.stop_reason == "length"
    assert run(engine, PROMPT, seed=5, max_tokens=0) == []
    assert engine.last_stats.stop_reason == "length"


def test_full_context_gives_length(tiny_model_path: Path) -> None:
    e = Engine()
    e.load(tiny_model_path, LoadSettings(n_ctx=64, n_threads=1))
    try:
        n_ctx = e.n_ctx  # llama.cpp may round the context up
        prompt = (e.tokenize("hello " * 2000))[: n_ctx - 4]
        out = run(e, prompt, seed=1, grammar=ENDLESS)
        # Four tokens fill the context; a fifth can still be sampled from the last logits.
        assert len(out) == 5
        assert len(e.cached_tokens) == n_ctx
        assert e.last_stats is not None and e.last_stats.stop_reason == "length"
    finally:
        e.unload()


def test_prompt_longer_than_context(tiny_model_path: Path) -> None:
    e = Engine()
    e.load(tiny_model_path, LoadSettings(n_ctx=64, n_threads=1))
    try:
        long = e.tokenize("hello " * 2000)
        with pytest.raises(EngineError, match=rf"{len(long)} tokens but the context holds {e.n_ctx}"):
            e.stream(long)
        assert e.cached_tokens == []  # nothing was evaluated
    finally:
        e.unload()


def test_bad_inputs(engine: Engine) -> None:
    with pytest.raises(EngineError, match="grammar is invalid"):
        engine.stream(PROMPT, grammar="root ::= (")
    with pytest.raises(EngineError, match="empty"):
        engine.stream("")
    with pytest.raises(EngineError, match="outside the vocabulary"):
        engine.stream([1, 2, -5])
    with pytest.raises(EngineError, match="No model"):
        Engine().stream(PROMPT)


def test_checking_a_file_does_not_import_numpy(tiny_model_path: Path) -> None:
    import subprocess
    import sys

    code = (
        "import sys; from app.core.engine import check_model_file; "
        f"check_model_file({str(tiny_model_path)!r}); print('numpy' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_split_grammar_stops_leaves_strings_and_classes() -> None:
    body, found = split_grammar_stops(
        'a ::= "<|return|>" [<|call|>] <|call|> # <|return|>\n', ["<|return|>", "<|call|>"]
    )
    assert found == {"<|call|>"}
    assert '"<|return|>"' in body and "[<|call|>]" in body and "# <|return|>" in body


# --- cancel ---------------------------------------------------------------------------------------


def test_cancel_from_another_thread_lands_within_one_token(engine: Engine) -> None:
    cancel = threading.Event()
    asked, done = threading.Event(), threading.Event()

    def canceller() -> None:
        asked.wait(5)
        cancel.set()
        done.set()

    th = threading.Thread(target=canceller)
    th.start()
    got: list[int] = []
    for tok, _ in engine.stream(
        PROMPT, Sampling(seed=2, max_tokens=200), cancel=cancel, grammar="root ::= [a-z]{100,150}"
    ):
        got.append(tok)
        if len(got) == 5:
            asked.set()
            assert done.wait(5)
    th.join()
    assert len(got) == 5
    assert engine.last_stats is not None and engine.last_stats.stop_reason == "cancelled"
    # The engine is usable afterwards and its cache matches what was really evaluated.
    run(engine, PROMPT, seed=2, max_tokens=3)
    assert engine.last_stats.stop_reason in ("length", "return", "call", "eos")


def test_cancel_before_start(engine: Engine) -> None:
    cancel = threading.Event()
    cancel.set()
    assert run(engine, PROMPT + " again", seed=1, max_tokens=5, cancel=cancel) == []
    assert engine.last_stats is not None and engine.last_stats.stop_reason == "cancelled"


def test_closing_the_stream_releases_the_engine(engine: Engine) -> None:
    it = engine.stream(PROMPT, Sampling(seed=1, max_tokens=50), grammar="root ::= [a-z]{40,50}")
    next(it)
    it.close()  # type: ignore[attr-defined]
    assert engine.last_stats is not None and engine.last_stats.stop_reason == "cancelled"
    assert len(run(engine, PROMPT, seed=1, max_tokens=2)) == 2


def test_one_generation_at_a_time(engine: Engine) -> None:
    started, release = threading.Event(), threading.Event()
    order: list[str] = []

    def first() -> None:
        for i, _ in enumerate(engine.stream(PROMPT, Sampling(seed=1, max_tokens=6), grammar="root ::= [a-z]{6,8}")):
            if i == 0:
                started.set()
                release.wait(5)
        order.append("first")

    th = threading.Thread(target=first)
    th.start()
    assert started.wait(5)
    second = engine.stream(PROMPT, Sampling(seed=1, max_tokens=2))

    def go() -> None:
        list(second)
        order.append("second")

    th2 = threading.Thread(target=go)
    th2.start()
    th2.join(0.2)
    assert order == []  # the second waits for the first
    release.set()
    th.join(5)
    th2.join(5)
    assert order == ["first", "second"]


# --- KV cache prefix reuse ------------------------------------------------------------------------


def _turns(e: Engine, seed: int) -> tuple[list[int], list[int], list[tuple[int, bytes]]]:
    first = e.tokenize(PROMPT)
    out1 = run(e, first, seed=seed, max_tokens=10, grammar=ENDLESS)
    assert len(out1) == 10
    second = (
        first + [t for t, _ in out1] + e.tokenize("<|end|><|start|>user<|message|>and more<|end|><|start|>assistant")
    )
    out2 = run(e, second, seed=seed + 1, max_tokens=8)
    return first, second, out2


def test_prefix_reuse_matches_fresh_engine(tiny_model_path: Path) -> None:
    e = Engine()
    e.load(tiny_model_path, LoadSettings(n_ctx=512, n_threads=1))
    try:
        first, second, out2 = _turns(e, seed=21)
        s = e.last_stats
        assert s is not None
        # The last of the 10 tokens was never evaluated (generation ended on max_tokens).
        assert s.cached_tokens == len(first) + 9
        assert s.prompt_tokens == len(second)
        assert e.cached_tokens[: len(second)] == second
    finally:
        e.unload()
    fresh = Engine()
    fresh.load(tiny_model_path, LoadSettings(n_ctx=512, n_threads=1))
    try:
        assert run(fresh, second, seed=22, max_tokens=8) == out2
        assert fresh.last_stats is not None and fresh.last_stats.cached_tokens == 0
    finally:
        fresh.unload()


def test_prefix_reuse_after_divergence(engine: Engine) -> None:
    base = engine.tokenize(PROMPT)
    run(engine, base, seed=1, max_tokens=6)
    other = base[:-3] + engine.tokenize("different ending")
    run(engine, other, seed=1, max_tokens=2)
    assert engine.last_stats is not None and engine.last_stats.cached_tokens == len(base) - 3
    # Same prompt again: everything but the last token is reused (its logits are needed).
    run(engine, other, seed=1, max_tokens=2)
    assert engine.last_stats.cached_tokens == len(other) - 1


@pytest.mark.parametrize("swa_full", [False, True])
def test_sliding_window_reuse(tiny_model_factory: Callable[..., Path], swa_full: bool) -> None:
    """Once the sliding-window cache has dropped old keys, reuse falls back to a saved window."""
    path = tiny_model_factory("swa.gguf", sliding_window=8)
    settings = LoadSettings(n_ctx=1024, n_batch=32, n_threads=1, swa_full=swa_full)
    e = Engine()
    e.load(path, settings)
    try:
        first = e.tokenize(PROMPT)
        out1 = run(e, first, seed=3, max_tokens=300, grammar=ENDLESS)
        assert len(out1) == 300  # far past the 256-cell sliding-window cache
        second = (
            first + [t for t, _ in out1[:5]] + e.tokenize("<|end|><|start|>user<|message|>hi<|end|><|start|>assistant")
        )
        out2 = run(e, second, seed=4, max_tokens=6)
        s = e.last_stats
        assert s is not None
        if swa_full:
            assert s.cached_tokens == len(first) + 5
        else:
            # The window at the end of the first prompt was saved; reuse resumes from there.
            assert s.cached_tokens == len(first)
    finally:
        e.unload()
    fresh = Engine()
    fresh.load(path, settings)
    try:
        assert run(fresh, second, seed=4, max_tokens=6) == out2
    finally:
        fresh.unload()


def test_unload_and_reload(tiny_model_path: Path) -> None:
    e = Engine()
    e.load(tiny_model_path, LoadSettings(n_ctx=128))
    e.load(tiny_model_path, LoadSettings(n_ctx=256))  # replaces the first
    assert e.n_ctx == 256
    e.unload()
    e.unload()  # idempotent
    with pytest.raises(EngineError, match="No model"):
        e.tokenize("x")


def test_reading_a_long_prompt_reports_progress_batch_by_batch(tiny_model_factory: Callable[..., Path]) -> None:
    """stream(progress=…) hears after each evaluated batch how much of the prompt is read."""
    path = tiny_model_factory("progress.gguf")
    e = Engine()
    e.load(path, LoadSettings(n_ctx=1024, n_batch=32, n_threads=1))
    try:
        prompt = e.tokenize(PROMPT * 4)
        seen: list[tuple[int, int]] = []
        first_token_after: list[int] = []

        for _ in e.stream(prompt, Sampling(seed=1, max_tokens=2), progress=lambda d, t: seen.append((d, t))):
            first_token_after.append(len(seen))
        total = len(prompt)
        assert seen[-1] == (total, total) and len(seen) == -(-total // 32)  # one report per batch
        assert [d for d, _ in seen] == sorted(d for d, _ in seen) and all(t == total for _, t in seen)
        assert first_token_after[0] == len(seen)  # all of it before the first token
        # The cached prefix is not read again: the next turn reports only the new tokens.
        seen.clear()
        more = prompt + e.tokenize("<|end|><|start|>user<|message|>and now?<|end|><|start|>assistant")
        list(e.stream(more, Sampling(seed=1, max_tokens=1), progress=lambda d, t: seen.append((d, t))))
        assert seen and seen[-1][1] < total and seen[-1][0] == seen[-1][1]
        # Without `progress` nothing changes (and nothing is left set for the next caller).
        assert len(run(e, prompt, seed=1, max_tokens=1)) == 1
    finally:
        e.unload()
