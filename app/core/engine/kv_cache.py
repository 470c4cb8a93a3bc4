"""The engine's KV cache across calls: reuse the common prefix, and sliding-window checkpoints to resume from."""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

from app.core.engine.base import EngineBase

_MAX_CHECKPOINTS = 3


@dataclass
class _Checkpoint:
    """Sliding-window KV state saved at a position, so a shorter prefix can be resumed later."""

    pos: int
    data: ctypes.Array[ctypes.c_ubyte]


class KvCacheMixin(EngineBase):
    """Keeps the cache's tokens in step with llama.cpp's memory, so a new prompt evaluates only what changed."""

    def _reset_cache(self) -> None:
        import llama_cpp

        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(self._ctx), True)
        self._cache_tokens = []
        self._checkpoints = []

    def _reuse_prefix(self, tokens: list[int]) -> int:
        """Keep the KV cache's common prefix with `tokens`; returns how many tokens are reused."""
        import llama_cpp

        cache = self._cache_tokens
        n = 0
        limit = min(len(cache), len(tokens) - 1)  # the last prompt token is always evaluated (logits)
        while n < limit and cache[n] == tokens[n]:
            n += 1
        mem = llama_cpp.llama_get_memory(self._ctx)
        if n == 0:
            if cache:
                self._reset_cache()
            return 0
        if n < len(cache):
            if not llama_cpp.llama_memory_seq_rm(mem, 0, n, -1):
                self._reset_cache()
                return 0
            del cache[n:]
            self._checkpoints = [c for c in self._checkpoints if c.pos <= n]
        if self._n_swa > 0 and not self._swa_full and not self._swa_covers(n):
            # The sliding-window layers have already dropped keys the next token needs; resume from
            # the latest saved window at or before n, or start over.
            for cp in reversed(self._checkpoints):
                if cp.pos > n:
                    continue
                got = llama_cpp.llama_state_seq_set_data_ext(self._ctx, cp.data, len(cp.data), 0, 1)
                if got and llama_cpp.llama_memory_seq_rm(mem, 0, cp.pos, -1) and self._swa_covers(cp.pos):
                    del cache[cp.pos :]
                    self._checkpoints = [c for c in self._checkpoints if c.pos <= cp.pos]
                    return cp.pos
                break
            self._reset_cache()
            return 0
        return n

    def _swa_covers(self, n: int) -> bool:
        import llama_cpp

        pos_min: int = llama_cpp.llama_memory_seq_pos_min(llama_cpp.llama_get_memory(self._ctx), 0)
        return 0 <= pos_min <= max(0, n - self._n_swa)

    def _save_checkpoint(self) -> None:
        import llama_cpp

        if self._n_swa <= 0 or self._swa_full:
            return
        pos = len(self._cache_tokens)
        if any(c.pos == pos for c in self._checkpoints):
            return
        size = llama_cpp.llama_state_seq_get_size_ext(self._ctx, 0, 1)
        if not size:
            return
        buf = (ctypes.c_ubyte * size)()
        if llama_cpp.llama_state_seq_get_data_ext(self._ctx, buf, size, 0, 1) != size:
            return
        self._checkpoints.append(_Checkpoint(pos, buf))
        del self._checkpoints[:-_MAX_CHECKPOINTS]
