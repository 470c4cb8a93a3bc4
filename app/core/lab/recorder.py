"""The token recorder: an engine wrapper that keeps every generated token and the channel it went to."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence

from app.core.engine import EngineLike, EngineWrapper, Sampling, close_stream
from app.core.harmony import SPECIAL_TOKEN_IDS
from app.core.lab.spec import OTHER

_UNMARKED = "?"
_SPECIAL_IDS = frozenset(SPECIAL_TOKEN_IDS.values())
_STOP_MARKERS = {"return": "<|return|>", "call": "<|call|>"}


def _is_special(token_id: int, piece: bytes) -> bool:
    if token_id in _SPECIAL_IDS:
        return True
    return len(piece) <= 40 and piece.startswith(b"<|") and piece.endswith(b"|>") and b" " not in piece


class _Recorder(EngineWrapper):
    """Wraps an engine for run_turn, keeping every generated token and what the parser made of it.

    run_turn feeds each token to the parser and yields that token's events before it pulls the
    next one, so an event always belongs to the latest token, and to the text tokens right before
    it that produced nothing yet (a UTF-8 character or a "<" split across tokens).
    """

    def __init__(self, engine: EngineLike, clock: Callable[[], float]) -> None:
        super().__init__(engine)
        self._clock = clock
        self.prompt_ids: list[int] | None = None
        self.ids: list[int] = []
        self.pieces: list[bytes] = []
        self.kinds: list[str] = []
        self.special: list[bool] = []
        self.first_token_t: float | None = None
        self.stream_called_t: float | None = None

    def stream(
        self,
        prompt: str | Sequence[int],
        sampling: Sampling | None = None,
        *,
        cancel: threading.Event | None = None,
        grammar: str | None = None,
    ) -> Iterator[tuple[int, bytes]]:
        self.prompt_ids = None if isinstance(prompt, str) else list(prompt)
        self.stream_called_t = self._clock()
        inner = super().stream(prompt, sampling, cancel=cancel, grammar=grammar)  # input errors raise here
        return self._relay(inner)

    def _relay(self, inner: Iterator[tuple[int, bytes]]) -> Iterator[tuple[int, bytes]]:
        try:
            for token_id, piece in inner:
                if self.first_token_t is None:
                    self.first_token_t = self._clock()
                self.ids.append(int(token_id))
                self.pieces.append(bytes(piece))
                self.kinds.append(_UNMARKED)
                self.special.append(_is_special(int(token_id), bytes(piece)))
                yield token_id, piece
        finally:
            close_stream(inner)  # the real engine holds its generation lock until its generator ends

    def mark(self, kind: str) -> None:
        i = len(self.ids) - 1
        if i >= 0 and self.special[i]:
            i -= 1  # a marker flushes the text held back from the tokens before it
        while i >= 0 and self.kinds[i] == _UNMARKED and not self.special[i]:
            self.kinds[i] = kind
            i -= 1

    def channels(self) -> str:
        return "".join(OTHER if k == _UNMARKED else k for k in self.kinds)

    def raw_output(self, stop_reason: str) -> str:
        return b"".join(self.pieces).decode("utf-8", "replace") + _STOP_MARKERS.get(stop_reason, "")

    def rendered_prompt(self) -> str | None:
        if self.prompt_ids is None:
            return None
        try:
            return self.detokenize(self.prompt_ids).decode("utf-8", "replace")
        except Exception:  # noqa: BLE001 - a figure we can do without
            return None
