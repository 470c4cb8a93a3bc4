"""The engine interface (EngineLike, LoadableEngine), a pass-through wrapper, and prompt-reading progress."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Generator, Iterator, Sequence
from typing import Protocol, runtime_checkable

from app.core.engine.types import GenerationStats, LoadSettings, ModelInfo, Sampling

# --- the engine interface ---------------------------------------------------------------------------


@runtime_checkable
class EngineLike(Protocol):
    """What generating code needs from an engine, and all it may use.

    Engine and ScriptedEngine satisfy it, and so do the wrappers between them and run_turn: the
    scheduler's client (turns), the API server's counting wrapper and the lab's recorder.
    """

    @property
    def info(self) -> ModelInfo | None: ...

    @property
    def n_ctx(self) -> int: ...

    @property
    def loaded(self) -> bool: ...

    @property
    def last_stats(self) -> GenerationStats | None:
        """Figures of this engine's latest generation (a new object per generation)."""

    def tokenize(self, text: str, *, special: bool = True) -> list[int]: ...

    def detokenize(self, ids: Sequence[int]) -> bytes: ...

    def stream(
        self,
        prompt: str | Sequence[int],
        sampling: Sampling | None = None,
        *,
        cancel: threading.Event | None = None,
        grammar: str | None = None,
    ) -> Iterator[tuple[int, bytes]]: ...


@runtime_checkable
class LoadableEngine(EngineLike, Protocol):
    """An engine that loads models itself (Engine, ScriptedEngine): what the scheduler owns."""

    def load(
        self,
        path: str | os.PathLike[str],
        settings: LoadSettings | None = None,
        progress: Callable[[float], bool] | None = None,
    ) -> ModelInfo: ...

    def unload(self) -> None: ...


class EngineWrapper:
    """An EngineLike that hands everything to `inner`: subclass it to watch what passes (tokens, prompts)."""

    def __init__(self, inner: EngineLike) -> None:
        self._inner = inner

    @property
    def info(self) -> ModelInfo | None:
        return self._inner.info

    @property
    def n_ctx(self) -> int:
        return self._inner.n_ctx

    @property
    def loaded(self) -> bool:
        return self._inner.loaded

    @property
    def last_stats(self) -> GenerationStats | None:
        return self._inner.last_stats

    def tokenize(self, text: str, *, special: bool = True) -> list[int]:
        return self._inner.tokenize(text, special=special)

    def detokenize(self, ids: Sequence[int]) -> bytes:
        return self._inner.detokenize(ids)

    def stream(
        self,
        prompt: str | Sequence[int],
        sampling: Sampling | None = None,
        *,
        cancel: threading.Event | None = None,
        grammar: str | None = None,
    ) -> Iterator[tuple[int, bytes]]:
        return self._inner.stream(prompt, sampling, cancel=cancel, grammar=grammar)


# --- prompt-reading progress ("Reading your message…" before the first token) ---------------------
# Kept apart from the generation code: engines that can say how far they are in evaluating a long
# prompt (Engine, ScriptedEngine, and the scheduler's clients of them) take `progress` in stream().

PromptProgressFn = Callable[[int, int], None]  # (prompt tokens evaluated so far, tokens to evaluate)


@runtime_checkable
class ReportsPromptProgress(Protocol):
    """An engine whose stream() also takes `progress`, called after each evaluated prompt batch."""

    reports_prompt_progress: bool

    def stream(
        self,
        prompt: str | Sequence[int],
        sampling: Sampling | None = None,
        *,
        cancel: threading.Event | None = None,
        grammar: str | None = None,
        progress: PromptProgressFn | None = None,
    ) -> Iterator[tuple[int, bytes]]: ...


def stream_with_progress(
    engine: EngineLike,
    prompt: str | Sequence[int],
    sampling: Sampling | None = None,
    *,
    cancel: threading.Event | None = None,
    grammar: str | None = None,
    progress: PromptProgressFn | None = None,
) -> Iterator[tuple[int, bytes]]:
    """`engine.stream`, reporting prompt progress to `progress` where the engine can (else silently not)."""
    if progress is not None and isinstance(engine, ReportsPromptProgress) and engine.reports_prompt_progress:
        return engine.stream(prompt, sampling, cancel=cancel, grammar=grammar, progress=progress)
    return engine.stream(prompt, sampling, cancel=cancel, grammar=grammar)


def close_stream(stream: Iterator[tuple[int, bytes]]) -> None:
    """End a token stream early. An engine holds its generation lock until its generator ends, so a
    wrapper that stops reading must close it rather than drop it."""
    if isinstance(stream, Generator):
        stream.close()
