"""An Engine look-alike that replays scripted harmony output: deterministic UI tests, demos, benchmarks."""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from app.core.engine import EngineError, GenerationStats, LoadSettings, ModelInfo, PromptProgressFn, Sampling
from app.core.harmony import SPECIAL_TOKEN_IDS

# A script is harmony text, a list of pieces (each piece one token), or a function of the prompt
# text that returns either; the function form lets a demo or lab answer differently per effort.
Script = str | Sequence[str] | Callable[[str], "str | Sequence[str]"]

_STOP_REASONS = {"<|return|>": "return", "<|call|>": "call", "<|endoftext|>": "eos"}
_SPECIAL_RE = re.compile(r"(<\|[a-z_0-9]+\|>)")
# Roughly how a BPE tokenizer cuts English and code: a word with its leading space, runs of
# punctuation, runs of whitespace; long words are cut further into ≤ 6-character pieces.
_PIECE_RE = re.compile(r" ?[A-Za-z]+| ?[0-9]{1,3}| ?[^\sA-Za-z0-9]+|\s+")
_MAX_PIECE = 6
_FIRST_TEXT_ID = 1000
PROMPT_BATCH = 512  # prompt tokens per progress report, like llama.cpp's default batch
# load() takes this pseudo path ("scripted:" + a name) for a model that has no file at all.
SCRIPTED_PREFIX = "scripted:"


def is_scripted_path(path: str | os.PathLike[str]) -> bool:
    """True for the pseudo path of a scripted model ("scripted:gpt-oss-20b"), which names no file."""
    return str(path).startswith(SCRIPTED_PREFIX)


def split_pieces(text: str, *, split_multibyte: bool = False) -> list[str | bytes]:
    """Cut harmony text into token-sized pieces; special tokens stay whole.

    With split_multibyte, characters of 3+ UTF-8 bytes (CJK, emoji) are cut into two byte pieces,
    as byte-level BPE often does, so consumers must buffer partial UTF-8.
    """
    pieces: list[str | bytes] = []
    for part in _SPECIAL_RE.split(text):
        if not part:
            continue
        if _SPECIAL_RE.fullmatch(part):
            pieces.append(part)
            continue
        for m in _PIECE_RE.finditer(part):
            word = m.group(0)
            for i in range(0, len(word), _MAX_PIECE):
                chunk = word[i : i + _MAX_PIECE]
                if split_multibyte and any(len(c.encode()) >= 3 for c in chunk):
                    for c in chunk:
                        raw = c.encode()
                        if len(raw) >= 3:
                            pieces.extend([raw[:1], raw[1:]])
                        else:
                            pieces.append(c)
                else:
                    pieces.append(chunk)
    return pieces


@dataclass
class _Turn:
    pieces: list[str | bytes]
    stop_reason: str  # why generation ends when the pieces run out


class ScriptedEngine:
    """Replays scripts token by token with the interface of app.core.engine.Engine.

    `scripts` is one script or a list of scripts (a piece-list script must therefore be wrapped:
    `[["<|channel|>", "final", ...]]`). Each call to stream() consumes the next script of the
    queue; the last one repeats.
    A terminating `<|return|>` / `<|call|>` / `<|endoftext|>` is treated as the stop token: it is
    not yielded and decides last_stats.stop_reason, like the real engine.
    """

    reports_prompt_progress = True  # stream(progress=…), as Engine

    def __init__(
        self,
        scripts: Script | Sequence[Script] | None = None,
        *,
        delay_s: float = 0.0,
        prompt_delay_s: float = 0.0,
        n_ctx: int = 8192,
        name: str = "gpt-oss-20b (scripted)",
        chat_template: str | None = None,
        split_multibyte: bool = False,
        load_delay_s: float = 0.0,
    ) -> None:
        if scripts is None:
            self._scripts: list[Script] = []
        elif isinstance(scripts, str) or callable(scripts):
            self._scripts = [scripts]
        else:
            self._scripts = list(scripts)
        self.delay_s = delay_s
        self.prompt_delay_s = prompt_delay_s
        self.load_delay_s = load_delay_s
        self.split_multibyte = split_multibyte
        self._n_ctx = n_ctx
        self._name = name
        self._chat_template = chat_template
        self._info: ModelInfo | None = None
        self._vocab: dict[str, int] = dict(SPECIAL_TOKEN_IDS)
        self._rev: dict[int, bytes] = {i: t.encode() for t, i in SPECIAL_TOKEN_IDS.items()}
        self._cache: list[int] = []
        self.prompts: list[str] = []  # every prompt received, decoded (tests inspect these)
        self.grammars: list[str | None] = []
        self.last_stats = GenerationStats()
        self._lock = threading.Lock()

    # --- scripts -------------------------------------------------------------------------------
    def queue(self, *scripts: Script) -> None:
        """Add scripts to be replayed by the following stream() calls."""
        self._scripts.extend(scripts)

    def _next_turn(self, prompt_text: str) -> _Turn:
        if not self._scripts:
            raise EngineError("The scripted engine has nothing to say: no script was queued.")
        script = self._scripts.pop(0) if len(self._scripts) > 1 else self._scripts[0]
        if callable(script):
            script = script(prompt_text)
        pieces: list[str | bytes] = (
            split_pieces(script, split_multibyte=self.split_multibyte) if isinstance(script, str) else list(script)
        )
        stop = "eos"
        for i, p in enumerate(pieces):
            if isinstance(p, str) and p in _STOP_REASONS:
                stop = _STOP_REASONS[p]
                pieces = pieces[:i]
                break
        return _Turn(pieces, stop)

    # --- Engine interface ----------------------------------------------------------------------
    def load(
        self,
        path: str | os.PathLike[str],
        settings: LoadSettings | None = None,
        progress: Callable[[float], bool] | None = None,
    ) -> ModelInfo:
        """'Load' a model: any existing file or the pseudo path 'scripted:'; progress may cancel."""
        p = str(path)
        scripted = is_scripted_path(p)
        if not scripted and not Path(p).is_file():
            raise EngineError(f"The model file was not found: {p}")
        settings = settings or LoadSettings()
        for i in range(11):
            if progress is not None and progress(i / 10) is False:
                raise EngineError("Loading was cancelled.")
            if self.load_delay_s:
                time.sleep(self.load_delay_s / 10)
        n_ctx = min(settings.n_ctx, self._n_ctx) if settings.n_ctx else self._n_ctx
        name = self._name if scripted else Path(p).stem
        self._info = ModelInfo(
            path=Path(p),
            name=name,
            arch="gpt-oss",
            n_ctx_train=131072,
            n_ctx=n_ctx,
            n_params=20_914_757_184,
            size_bytes=0 if scripted else Path(p).stat().st_size,
            chat_template=self._chat_template,
            n_layer=24,
            n_expert=32,
            n_swa=128,
            description="gpt-oss 20B (scripted replay)",
            source="scripted" if scripted else "file",
            loaded_at=time.time(),
        )
        self._cache = []
        return self._info

    def unload(self) -> None:
        self._info = None
        self._cache = []

    @property
    def loaded(self) -> bool:
        return self._info is not None

    @property
    def info(self) -> ModelInfo | None:
        return self._info

    @property
    def n_ctx(self) -> int:
        return self._info.n_ctx if self._info else 0

    def tokenize(self, text: str, special: bool = True) -> list[int]:
        ids: list[int] = []
        for piece in split_pieces(text):
            assert isinstance(piece, str)
            if not special and piece in SPECIAL_TOKEN_IDS:
                for sub in split_pieces(piece.replace("<|", "< |")):  # spelled out as plain text
                    ids.append(self._id_of(str(sub)))
                continue
            ids.append(self._id_of(piece))
        return ids

    def detokenize(self, ids: Sequence[int]) -> bytes:
        return b"".join(self._rev.get(i, b"") for i in ids)

    def _id_of(self, piece: str | bytes) -> int:
        key = piece if isinstance(piece, str) else "\x00" + piece.hex()
        with self._lock:
            tid = self._vocab.get(key)
            if tid is None:
                tid = _FIRST_TEXT_ID + len(self._vocab)
                self._vocab[key] = tid
                self._rev[tid] = piece.encode() if isinstance(piece, str) else piece
        return tid

    def stream(
        self,
        prompt: str | Sequence[int],
        sampling: Sampling | None = None,
        *,
        cancel: threading.Event | None = None,
        grammar: str | None = None,
        progress: PromptProgressFn | None = None,
    ) -> Iterator[tuple[int, bytes]]:
        """Yield (token_id, piece_bytes) of the next script; stats land in last_stats at the end.

        Like Engine, reports reading the prompt to `progress` in PROMPT_BATCH-token batches
        (`prompt_delay_s` is spread over them), so UI tests see "Reading your message…"."""
        if self._info is None:
            raise EngineError("No model is loaded.")
        sampling = sampling or Sampling()
        ids = self.tokenize(prompt) if isinstance(prompt, str) else list(prompt)
        if len(ids) >= self.n_ctx:
            raise EngineError(
                f"The conversation is too long for the context window ({len(ids):,} tokens; the limit is {self.n_ctx:,})."
            )
        prompt_text = self.detokenize(ids).decode("utf-8", "replace")
        self.prompts.append(prompt_text)
        self.grammars.append(grammar)
        turn = self._next_turn(prompt_text)
        return self._run(ids, turn, sampling, cancel, progress)

    def _read_prompt(self, todo: int, cancel: threading.Event | None, progress: PromptProgressFn | None) -> None:
        """Evaluate `todo` prompt tokens in batches: the delay, and a progress report per batch."""
        batches = max(1, -(-todo // PROMPT_BATCH))
        for k in range(batches):
            if self.prompt_delay_s:
                if cancel is not None:
                    if cancel.wait(self.prompt_delay_s / batches):
                        return
                else:
                    time.sleep(self.prompt_delay_s / batches)
            if progress is not None:
                progress(min(todo, (k + 1) * PROMPT_BATCH), todo)

    def _run(
        self,
        ids: list[int],
        turn: _Turn,
        sampling: Sampling,
        cancel: threading.Event | None,
        progress: PromptProgressFn | None = None,
    ) -> Iterator[tuple[int, bytes]]:
        stats = GenerationStats(prompt_tokens=len(ids))
        common = 0
        for a, b in zip(self._cache, ids, strict=False):
            if a != b:
                break
            common += 1
        stats.cached_tokens = min(common, len(ids) - 1) if ids else 0
        self.last_stats = stats
        t0 = time.perf_counter()
        self._read_prompt(len(ids) - stats.cached_tokens, cancel, progress)
        t_first: float | None = None
        stop = turn.stop_reason
        generated: list[int] = []
        limit = sampling.max_tokens
        room = self.n_ctx - len(ids)
        try:
            for piece in turn.pieces:
                if cancel is not None and cancel.is_set():
                    stop = "cancelled"
                    break
                if limit is not None and len(generated) >= limit:
                    stop = "length"
                    break
                if len(generated) >= room:
                    stop = "length"
                    break
                if self.delay_s:
                    if cancel is not None:
                        if cancel.wait(self.delay_s):
                            stop = "cancelled"
                            break
                    else:
                        time.sleep(self.delay_s)
                tid = self._id_of(piece)
                generated.append(tid)
                if t_first is None:
                    t_first = time.perf_counter()
                yield tid, piece.encode() if isinstance(piece, str) else piece
            else:
                if cancel is not None and cancel.is_set():
                    stop = "cancelled"
        except GeneratorExit:
            stop = "cancelled"
            raise
        finally:
            end = time.perf_counter()
            stats.generated_tokens = len(generated)
            stats.total_s = end - t0
            stats.ttft_s = (t_first - t0) if t_first is not None else stats.total_s
            evaluated = stats.prompt_tokens - stats.cached_tokens
            stats.prompt_tokens_per_s = evaluated / stats.ttft_s if stats.ttft_s > 0 else 0.0
            if t_first is not None and len(generated) > 1 and end > t_first:
                stats.tokens_per_s = (len(generated) - 1) / (end - t_first)
            stats.stop_reason = stop
            self._cache = ids + generated


_EFFORT_RE = re.compile(r"\nReasoning: (low|medium|high)\n")
_REASONING_WORDS = [
    "Let",
    "me",
    "think",
    "about",
    "this",
    "step",
    "by",
    "step.",
    "The",
    "question",
    "asks",
    "for",
    "one",
    "value,",
    "so",
    "I",
    "restate",
    "what",
    "is",
    "given,",
    "work",
    "out",
    "each",
    "part,",
    "then",
    "check",
    "the",
    "result",
    "against",
    "the",
    "question",
    "before",
    "answering.",
]


def prompt_effort(prompt: str) -> str | None:
    """The reasoning effort a rendered gpt-oss prompt asks for ("Reasoning: high" → "high")."""
    m = _EFFORT_RE.search(prompt)
    return m.group(1) if m else None


class EffortScript:
    """A ScriptedEngine script that answers the way gpt-oss does at each reasoning effort.

    The reasoning is `words[effort]` words long, plus `step` more for every earlier answer at that
    effort (so repeated runs differ, and their spread is known in advance); the final answer is
    `answer(prompt, effort)` (default: a short fixed sentence). Deterministic for a given call order.
    """

    def __init__(
        self,
        words: dict[str, int] | None = None,
        *,
        step: int = 0,
        answer: Callable[[str, str], str] | None = None,
    ) -> None:
        self.words = dict(words or {"low": 8, "medium": 24, "high": 64})
        self.step = step
        self.answer = answer or (lambda _prompt, effort: f"Done at **{effort}** effort.")
        self.calls: dict[str, int] = {}

    def reasoning_for(self, effort: str, n: int) -> str:
        count = self.words.get(effort, 16) + self.step * n
        return " ".join(_REASONING_WORDS[i % len(_REASONING_WORDS)] for i in range(count))

    def __call__(self, prompt: str) -> str:
        effort = prompt_effort(prompt) or "medium"
        n = self.calls.get(effort, 0)
        self.calls[effort] = n + 1
        return (
            f"<|channel|>analysis<|message|>{self.reasoning_for(effort, n)}<|end|>"
            f"<|start|>assistant<|channel|>final<|message|>{self.answer(prompt, effort)}<|return|>"
        )
