"""The engine's generation: check the input, evaluate the prompt in batches, then the per-token decode loop."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence

from app.core.engine.base import _nothing
from app.core.engine.errors import EngineError
from app.core.engine.kv_cache import KvCacheMixin
from app.core.engine.protocol import PromptProgressFn
from app.core.engine.sampling import SamplingMixin, split_grammar_stops
from app.core.engine.tokens import TokensMixin
from app.core.engine.types import GenerationStats, Sampling


class GenerationMixin(TokensMixin, SamplingMixin, KvCacheMixin):
    """stream(): one generation at a time, cancellable within a token."""

    def stream(
        self,
        prompt: str | Sequence[int],
        sampling: Sampling | None = None,
        *,
        cancel: threading.Event | None = None,
        grammar: str | None = None,
        progress: PromptProgressFn | None = None,
    ) -> Iterator[tuple[int, bytes]]:
        """Yield (token_id, piece) until a stop token, max_tokens, a full context or cancel.

        `progress(done, total)` is called after each batch of the prompt is evaluated (long prompts
        on a CPU take seconds before the first token).

        The stop token (<|return|>, <|call|>, <|endoftext|>) is not yielded; last_stats.stop_reason
        says which one ended the turn. Input problems raise EngineError here, before any work.
        The KV cache keeps the longest common prefix with the previous call's tokens.

        grammar: GBNF constraining the output; special tokens are written bare (`<|channel|>`).
        End it with the stop token it should produce (`... <|return|>`): llama.cpp cannot match
        end-of-generation tokens inside a grammar, so the engine allows only the named stop
        tokens once the rest of the grammar is complete (see split_grammar_stops).
        """
        self._require()
        sampling = sampling or Sampling()
        tokens = self.tokenize(prompt, special=True) if isinstance(prompt, str) else [int(t) for t in prompt]
        if not tokens:
            raise EngineError("The prompt is empty.")
        bad = next((t for t in tokens if not 0 <= t < self._n_vocab), None)
        if bad is not None:
            raise EngineError(f"Token id {bad} is outside the vocabulary (0–{self._n_vocab - 1}).")
        n_ctx = self.n_ctx
        if len(tokens) >= n_ctx:
            raise EngineError(
                f"The prompt is {len(tokens)} tokens but the context holds {n_ctx}, leaving no room for an answer. "
                "Start a new conversation, shorten it, or load the model with a larger context."
            )
        if sampling.max_tokens is not None and sampling.max_tokens < 0:
            raise EngineError("max_tokens cannot be negative.")
        bad = next((t for t in sampling.logit_bias or {} if not 0 <= t < self._n_vocab), None)
        if bad is not None:
            raise EngineError(f"logit_bias names token {bad}, outside the vocabulary (0–{self._n_vocab - 1}).")
        if grammar is not None:
            body, _ = split_grammar_stops(grammar, list(self._stop_texts))
            self._free_sampler(self._grammar_sampler(body))  # fail now, not mid-stream
        gen = self._generate(tokens, sampling, cancel, grammar)
        return gen if progress is None else self._reporting_prompt(gen, progress)

    def _reporting_prompt(
        self, gen: Iterator[tuple[int, bytes]], progress: PromptProgressFn
    ) -> Iterator[tuple[int, bytes]]:
        """Run `gen` with `progress` told about each evaluated prompt batch (_eval_prompt)."""
        self._prompt_progress = progress
        try:
            yield from gen
        finally:
            self._prompt_progress = None

    def _eval_prompt(self, tokens: list[int], start: int, cancel: threading.Event | None) -> bool:
        """Evaluate tokens[start:] in n_batch chunks; False if cancelled (cache stays consistent)."""
        import llama_cpp

        ctx = self._ctx
        self._abort_event = cancel
        llama_cpp.llama_set_abort_callback(ctx, self._abort_cb, None)
        try:
            i = start
            while i < len(tokens):
                if (cancel is not None and cancel.is_set()) or self._unloading:
                    return False
                chunk = tokens[i : i + self._n_batch]
                arr = (llama_cpp.llama_token * len(chunk))(*chunk)
                rc = llama_cpp.llama_decode(ctx, llama_cpp.llama_batch_get_one(arr, len(chunk)))
                if rc == 2:
                    # Aborted: llama.cpp dropped the unfinished micro-batch; keep what is really cached.
                    pos_max = llama_cpp.llama_memory_seq_pos_max(llama_cpp.llama_get_memory(ctx), 0)
                    self._cache_tokens = list(tokens[: max(0, pos_max + 1)])
                    return False
                if rc != 0:
                    self._reset_cache()
                    raise EngineError(f"llama.cpp failed while reading the prompt (code {rc}).")
                self._cache_tokens.extend(chunk)
                i += len(chunk)
                if self._prompt_progress is not None:
                    self._prompt_progress(i - start, len(tokens) - start)
            return True
        finally:
            self._abort_event = None
            llama_cpp.llama_set_abort_callback(ctx, llama_cpp.ggml_abort_callback(), None)

    def _generate(
        self, tokens: list[int], sampling: Sampling, cancel: threading.Event | None, grammar: str | None
    ) -> Iterator[tuple[int, bytes]]:
        import llama_cpp

        if not self._gen_lock.acquire(timeout=30):
            raise EngineError("Another answer is still being generated.")
        stats = GenerationStats(prompt_tokens=len(tokens))
        reason = "cancelled"
        release: Callable[[], None] = _nothing
        t0 = time.perf_counter()
        t_first = 0.0
        generated = 0
        try:
            if self._ctx is None:
                raise EngineError("No model is loaded.")
            draw, release = self._sampler(sampling, grammar, tokens)
            n_keep = self._reuse_prefix(tokens)
            stats.cached_tokens = n_keep
            if not self._eval_prompt(tokens, n_keep, cancel):
                return
            t_prompt = time.perf_counter()
            if len(tokens) > n_keep:
                stats.prompt_tokens_per_s = (len(tokens) - n_keep) / max(t_prompt - t0, 1e-9)
            self._save_checkpoint()

            # Hot loop: locals only; per token one C call to sample, one to decode, and a dict lookup
            # that both classifies the token (it does not end generation) and gives its text.
            ctx, decode = self._ctx, llama_cpp.llama_decode
            batch1, tok1 = self._batch1, self._tok1
            assert tok1 is not None
            plain, classify = self._plain_pieces, self._classify
            cache = self._cache_tokens
            n_ctx = self.n_ctx
            max_new = sampling.max_tokens if sampling.max_tokens is not None else n_ctx
            cancelled = cancel.is_set if cancel is not None else _never
            if cancelled() or self._unloading:
                return
            if max_new <= 0:
                reason = "length"
                return
            while True:
                tok = draw()
                piece = plain.get(tok)
                if piece is None:
                    stop = classify(tok)
                    if stop is not None:
                        reason = stop
                        break
                    piece = plain[tok]
                generated += 1
                if generated == 1:
                    t_first = time.perf_counter()
                    stats.ttft_s = t_first - t0
                yield tok, piece
                if cancelled() or self._unloading:
                    reason = "cancelled"
                    break
                if generated >= max_new:
                    # Done: skip evaluating the last token (the next turn's prefix reuse does it if needed).
                    reason = "length"
                    break
                if len(cache) >= n_ctx:
                    reason = "length"
                    break
                tok1[0] = tok
                rc = decode(ctx, batch1)
                if rc != 0:
                    if rc == 1:  # no room left in the KV cache
                        reason = "length"
                        break
                    self._reset_cache()
                    raise EngineError(f"llama.cpp failed while generating (code {rc}).")
                cache.append(tok)
        finally:
            t_end = time.perf_counter()
            stats.generated_tokens = generated
            stats.stop_reason = reason
            stats.total_s = t_end - t0
            if generated > 1:
                stats.tokens_per_s = (stats.generated_tokens - 1) / max(t_end - t_first, 1e-9)
            self.last_stats = stats
            release()
            self._gen_lock.release()


def _never() -> bool:
    return False
