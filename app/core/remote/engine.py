"""RemoteEngine: the engine protocol over HTTP, so a model served elsewhere runs through the scheduler like a local one.

run_turn renders the prompt and hands the engine a `chat.RenderedPrompt`; this engine sends its
text as raw harmony where the server offers that (llama-server, vLLM with gpt-oss) or its
`request` as a chat completion otherwise, and yields harmony pieces that the app's own parser
reads. Token counts before generation are estimates (the tokenizer is on the server); the
server's own counts replace them in the stats when it reports usage. Context-window checks are
the server's: its refusal becomes a RemoteContextError that keeps the conversation.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from app.core.chat import ChatRequest, RenderedPrompt
from app.core.engine import EngineError, GenerationStats, LoadSettings, ModelInfo, Sampling, split_grammar_stops
from app.core.harmony import SPECIAL_TOKEN_IDS
from app.core.remote.dialects import (
    ChatDeltaMapper,
    Kind,
    Piece,
    RawReader,
    StreamOutcome,
    chat_body,
    chat_messages,
    kind_of,
    raw_body,
    wire_tools,
)
from app.core.remote.http import (
    HttpClient,
    RemoteAuthError,
    RemoteContextError,
    RemoteDropped,
    RemoteError,
    RemoteModelMissing,
    RemoteUnreachable,
    display_host,
)
from app.core.remote.probe import RemoteModel, ServerInfo, uses_raw_harmony
from app.core.scripted_engine import split_pieces

log = logging.getLogger(__name__)

_FIRST_TEXT_ID = 300_000  # above every real o200k id, so no pseudo id is mistaken for a special token
_MAX_VOCAB = 500_000
_STOPS = ("<|return|>", "<|call|>", "<|endoftext|>")
MIN_ROOM = 256  # answer tokens asked for at least when the context is nearly full (the server refuses if not)


@dataclass(frozen=True)
class RemoteTarget:
    """Where a remote model runs, as the UI names it."""

    connection_id: str
    name: str  # the connection's name ("studio-pc")
    host: str
    kind: str
    model: str
    raw: bool  # answers come as raw harmony text

    @property
    def kind_label(self) -> str:
        return kind_of(self.kind).label

    @property
    def mode_label(self) -> str:
        return "raw harmony" if self.raw else "chat completions"


class RemoteEngine:
    """A model served by another program, used through its OpenAI-compatible API.

    Satisfies LoadableEngine so the scheduler can hold it; `load` is not how it starts (the
    runtime's connect job probes the server and adopts it), and `unload` closes its connections.
    """

    def __init__(self, target: RemoteTarget, server: ServerInfo, model: RemoteModel, api_key: str = "") -> None:
        self.target = target
        self._kind: Kind = kind_of(server.kind)
        self._client = HttpClient(server.api_url, api_key, label=target.name)
        # llama-server's raw endpoint (/completion) is at its root, not under /v1.
        self._root = HttpClient(server.root_url, api_key, label=target.name) if self._kind.raw == "llama" else None
        self._server = server
        self._model = model
        n_ctx = model.n_ctx
        self._info: ModelInfo | None = ModelInfo(
            path=Path(f"{target.name}/{model.id}"),
            name=model.id,
            arch="gpt-oss",
            n_ctx_train=n_ctx,
            n_ctx=n_ctx,
            n_params=0,
            size_bytes=0,
            chat_template=server.chat_template,
            n_layer=0,
            n_expert=0,
            description=f"{model.id} on {target.name} ({server.kind_label}, {target.mode_label})",
            source="remote",
            loaded_at=time.time(),
        )
        self._vocab: dict[str, int] = {}
        self._rev: dict[int, bytes] = {}
        self._vocab_lock = threading.Lock()
        self._gen_lock = threading.Lock()
        self.last_stats: GenerationStats | None = None

    @classmethod
    def connect(
        cls,
        connection_id: str,
        name: str,
        server: ServerInfo,
        model_id: str,
        api_key: str = "",
    ) -> RemoteEngine:
        """An engine for `model_id` on a probed server; RemoteModelMissing-like RemoteError when it is not served."""
        model = server.model(model_id)
        if model is None:
            have = ", ".join(m.id for m in server.models[:8]) or "none"
            raise RemoteError(f"{name} does not serve the model “{model_id}” (it serves: {have}).")
        target = RemoteTarget(
            connection_id, name, display_host(server.api_url), server.kind, model_id, uses_raw_harmony(server, model)
        )
        return cls(target, server, model, api_key)

    # --- the engine protocol ---------------------------------------------------------------------
    @property
    def info(self) -> ModelInfo | None:
        return self._info

    @property
    def n_ctx(self) -> int:
        return self._info.n_ctx if self._info else 0

    @property
    def loaded(self) -> bool:
        return self._info is not None

    def load(
        self,
        path: str | os.PathLike[str],
        settings: LoadSettings | None = None,
        progress: Callable[[float], bool] | None = None,
    ) -> ModelInfo:
        raise EngineError("A model on another computer is chosen under Connections, not opened as a file.")

    def unload(self) -> None:
        self._info = None
        self._client.close()
        if self._root is not None:
            self._root.close()

    def tokenize(self, text: str, *, special: bool = True) -> list[int]:
        """An estimate of the server's tokens (word pieces of ≤ 6 characters; special tokens whole), reversible."""
        ids: list[int] = []
        for piece in split_pieces(text):
            key = piece if isinstance(piece, str) else piece.decode("utf-8", "replace")
            if special and key in SPECIAL_TOKEN_IDS:
                ids.append(SPECIAL_TOKEN_IDS[key])
                continue
            ids.append(self._id_of(key))
        return ids

    def _id_of(self, piece: str) -> int:
        with self._vocab_lock:
            tid = self._vocab.get(piece)
            if tid is None:
                if len(self._vocab) >= _MAX_VOCAB:
                    self._vocab.clear()
                    self._rev.clear()
                tid = _FIRST_TEXT_ID + len(self._vocab)
                self._vocab[piece] = tid
                self._rev[tid] = piece.encode("utf-8")
            return tid

    def detokenize(self, ids: Sequence[int]) -> bytes:
        by_id = {v: k.encode() for k, v in SPECIAL_TOKEN_IDS.items()}
        return b"".join(self._rev.get(i, by_id.get(i, b"")) for i in ids)

    def stream(
        self,
        prompt: str | Sequence[int],
        sampling: Sampling | None = None,
        *,
        cancel: threading.Event | None = None,
        grammar: str | None = None,
    ) -> Iterator[tuple[int, bytes]]:
        """Validate now (errors raise here), then a generator of harmony pieces from the server."""
        if self._info is None:
            raise EngineError("The remote model was disconnected; choose it again under Connections.")
        sampling = sampling or Sampling()
        request = prompt.request if isinstance(prompt, RenderedPrompt) else None
        if isinstance(prompt, str):
            text = prompt
        elif isinstance(prompt, RenderedPrompt):
            text = prompt.text
        else:
            text = self.detokenize(prompt).decode("utf-8", "replace")
        if not self.target.raw and request is None:
            raise EngineError(
                f"{self.target.name} answers chat requests only; this prompt came without its conversation."
            )
        n_prompt = len(prompt) if not isinstance(prompt, str) else len(self.tokenize(prompt))
        # Only llama-server reads GBNF (the app's grammar dialect); other servers get none.
        gbnf = grammar if grammar and self.target.raw and self._kind.raw == "llama" else None
        return self._generate(text, request, sampling, cancel or threading.Event(), n_prompt, gbnf)

    # --- generation ---------------------------------------------------------------------------------
    def _generate(
        self,
        text: str,
        request: ChatRequest | None,
        sampling: Sampling,
        cancel: threading.Event,
        n_prompt: int,
        grammar: str | None = None,
    ) -> Iterator[tuple[int, bytes]]:
        if not self._gen_lock.acquire(timeout=30):
            raise EngineError("The remote model is busy with another answer.")
        outcome = StreamOutcome()
        stats = GenerationStats(prompt_tokens=n_prompt)
        self.last_stats = stats
        t0 = time.perf_counter()
        reason = ""
        try:
            try:
                mapper = yield from self._stream(text, request, sampling, cancel, n_prompt, grammar, outcome, stats, t0)
            except (RemoteAuthError, RemoteContextError, RemoteModelMissing, RemoteUnreachable, RemoteDropped):
                raise
            except RemoteError as exc:
                # A server that lists a gpt-oss model but refuses raw completions (an older vLLM, a proxy in
                # front of it): nothing was generated, so the same turn goes as a chat completion from now on.
                if not self.target.raw or request is None or outcome.pieces or cancel.is_set():
                    raise
                log.warning("%s refused raw completions (%s); using chat completions", self.target.name, exc)
                self.target = dataclasses.replace(self.target, raw=False)
                mapper = yield from self._stream(text, request, sampling, cancel, n_prompt, grammar, outcome, stats, t0)
            if cancel.is_set():
                reason = "cancelled"
                return
            yield from self._tail(mapper)
            if not outcome.stop_reason:
                raise RemoteDropped(
                    f"The answer from {self.target.name} ended before the model finished it. What arrived is kept; "
                    "press Continue to finish it."
                )
            reason = outcome.stop_reason
        finally:
            t_end = time.perf_counter()
            stats.prompt_tokens = outcome.prompt_tokens or n_prompt
            stats.cached_tokens = outcome.cached_tokens
            stats.generated_tokens = outcome.completion_tokens or outcome.pieces
            stats.stop_reason = reason or ("cancelled" if cancel.is_set() else "error")
            stats.total_s = t_end - t0
            t_first = t0 + stats.ttft_s
            if outcome.pieces and stats.generated_tokens > 1 and t_end > t_first:
                stats.tokens_per_s = (stats.generated_tokens - 1) / (t_end - t_first)
            self._gen_lock.release()

    def _stream(
        self,
        text: str,
        request: ChatRequest | None,
        sampling: Sampling,
        cancel: threading.Event,
        n_prompt: int,
        grammar: str | None,
        outcome: StreamOutcome,
        stats: GenerationStats,
        t0: float,
    ) -> Generator[Piece, None, ChatDeltaMapper | RawReader]:
        """One request's pieces, raw or chat as the target says; returns the mapper (its tail is not yet out)."""
        mapper: ChatDeltaMapper | RawReader
        if self.target.raw:
            mapper = RawReader(outcome, self._kind)
            room = max(MIN_ROOM, self.n_ctx - n_prompt) if self.n_ctx else 4096
            body = raw_body(self.target.model, text, kind=self._kind, sampling=sampling, room=room)
            if grammar:
                # llama.cpp lets end-of-generation tokens end a complete grammar, never match it.
                body["grammar"] = split_grammar_stops(grammar, list(_STOPS))[0]
            client = self._root if self._kind.raw == "llama" and self._root is not None else self._client
            path = "/completion" if self._kind.raw == "llama" else "/completions"
        else:
            assert request is not None
            mapper = ChatDeltaMapper(outcome)
            body = self._chat_body(request, sampling)
            client, path = self._client, "/chat/completions"
        for chunk in client.stream_events(path, body, cancel=cancel):
            for piece in mapper.feed(chunk):
                if outcome.pieces == 0:
                    stats.ttft_s = time.perf_counter() - t0
                outcome.pieces += 1
                yield piece
            if cancel.is_set():
                break
        return mapper

    @staticmethod
    def _tail(mapper: ChatDeltaMapper | RawReader) -> Iterator[Piece]:
        yield from mapper.finish()

    def _chat_body(self, request: ChatRequest, sampling: Sampling) -> dict[str, object]:
        messages = chat_messages(request.messages, self._kind)
        continuing = False
        if request.resume is not None and (request.resume.content or request.resume.thinking):
            partial: dict[str, object] = {"role": "assistant", "content": request.resume.content}
            if request.resume.thinking:
                partial[self._kind.reasoning_field] = request.resume.thinking
            messages.append(partial)
            continuing = True
        return chat_body(
            self.target.model,
            messages,
            kind=self._kind,
            effort=request.effort,
            sampling=sampling,
            tools=wire_tools(request.tools, request.builtin_tools),
            continuing=continuing,
        )
