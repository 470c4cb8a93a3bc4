"""Exact token sampling from CPU-side logits in O(vocabulary) vectorised passes, no full sort.

llama.cpp's CPU sampler chain builds a 201,088-entry candidate array and soft-maxes it element by
element for every token (about 2 ms a token on a fast CPU, 40% of decode time on a fast GPU).
This sampler reads the same logits as a numpy view and draws from the same distribution with a
handful of vectorised passes (max, exp, block sums, one block's cumulative sum).

The semantics are llama.cpp's chain, in its order: penalties (repeat, frequency, presence) →
logit bias → banned tokens → grammar → top-k → top-p → min-p → temperature → draw; temperature
<= 0 is greedy. Differences, on purpose:
- The penalties look at the last `PENALTY_LAST_N` tokens of the whole context (prompt
  included, as llama-server does) and never penalise the harmony control tokens
  (`<|start|>`, `<|channel|>`, ...): the format needs them again and again. The repeat penalty
  divides positive logits and multiplies negative ones; then each seen token loses
  `frequency_penalty × count + presence_penalty` (OpenAI's and llama.cpp's definition).
- Tokens tied at the top-k boundary are all kept (llama.cpp keeps an arbitrary k of them).
"""

from __future__ import annotations

import ctypes
import math
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from app.core.errors import HarmonicaError

PENALTY_LAST_N = 64
_BLOCK = 1024  # block size of the two-level cumulative search


@dataclass(frozen=True)
class SamplerSettings:
    """What the sampler needs from `Sampling` (kept separate so this module has no engine import)."""

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    repeat_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: tuple[tuple[int, float], ...] = ()  # (token id, added to its logit)
    seed: int | None = None


class SamplingError(HarmonicaError, ValueError):
    """No token can be drawn (every candidate was excluded)."""


# llama_token_data {int32 id; float logit; float p}: the layout llama.cpp's grammar sampler edits.
TOKEN_DATA = np.dtype([("id", "<i4"), ("logit", "<f4"), ("p", "<f4")])


class _TokenDataArray(ctypes.Structure):
    _fields_ = [
        ("data", ctypes.c_void_p),
        ("size", ctypes.c_size_t),
        ("selected", ctypes.c_int64),
        ("sorted", ctypes.c_bool),
    ]


class LogitSampler:
    """Draw one token at a time from logits, exactly, with optional penalties, filters and a grammar mask.

    `mask` is called with a llama_token_data_array address (every token, logits filled in) and
    must set the logits of forbidden tokens to -inf; llama.cpp's grammar sampler does exactly
    that. Call `accept(token)` after each token that becomes part of the context.
    """

    def __init__(
        self,
        n_vocab: int,
        settings: SamplerSettings,
        *,
        history: Sequence[int] = (),
        unpenalised: Iterable[int] = (),
        banned: Iterable[int] = (),
        mask: Callable[[int], None] | None = None,
    ) -> None:
        if n_vocab <= 0:
            raise ValueError("the vocabulary is empty")
        self.n_vocab = n_vocab
        self.s = settings
        self._rng = np.random.default_rng(None if settings.seed is None else settings.seed & 0xFFFFFFFF)
        n_pad = -(-n_vocab // _BLOCK) * _BLOCK
        # Work buffer with a zero tail, so block sums need no special case for the last block.
        self._buf: npt.NDArray[np.float32] = np.zeros(n_pad, dtype=np.float32)
        self._work = self._buf[:n_vocab]
        self._blocks = self._buf.reshape(-1, _BLOCK)
        self._banned = np.array(sorted({int(t) for t in banned if 0 <= t < n_vocab}), dtype=np.int64)
        self._penalty = (
            float(settings.repeat_penalty) if settings.repeat_penalty and settings.repeat_penalty != 1.0 else 1.0
        )
        self._freq = float(settings.frequency_penalty or 0.0)
        self._presence = float(settings.presence_penalty or 0.0)
        self._penalised = self._penalty != 1.0 or self._freq != 0.0 or self._presence != 0.0
        bias = {int(t): float(b) for t, b in settings.logit_bias if 0 <= int(t) < n_vocab}
        self._bias_ids = np.fromiter(bias.keys(), dtype=np.int64, count=len(bias))
        self._bias = np.fromiter(bias.values(), dtype=np.float32, count=len(bias))
        self._unpenalised = frozenset(int(t) for t in unpenalised)
        self._recent: deque[int] = deque(maxlen=PENALTY_LAST_N)
        if self._penalised:
            for t in history[-PENALTY_LAST_N:]:
                self.accept(t)
        self._mask = mask
        self._cands: npt.NDArray[np.void] | None = None
        self._cands_c: _TokenDataArray | None = None
        if mask is not None:
            self._cands = np.zeros(n_vocab, dtype=TOKEN_DATA)
            self._cands["id"] = np.arange(n_vocab, dtype=np.int32)
            self._cands_c = _TokenDataArray(self._cands.ctypes.data, n_vocab, -1, False)
        self._plain = (
            not self._penalised
            and not len(self._bias_ids)
            and mask is None
            and not len(self._banned)
            and settings.temperature > 0
            and not (0 < settings.top_k < n_vocab)
            and settings.top_p >= 1.0
            and settings.min_p <= 0.0
        )

    # -- state -------------------------------------------------------------------------------------

    def accept(self, token: int) -> None:
        """Record a token that entered the context (for the penalties)."""
        if self._penalised and token not in self._unpenalised:
            self._recent.append(int(token))

    # -- drawing -----------------------------------------------------------------------------------

    def sample(self, logits: npt.NDArray[np.float32]) -> int:
        """One token from `logits` (length n_vocab; not modified)."""
        s = self.s
        work = self._work
        if self._plain:
            m = float(logits.max())
            if not math.isfinite(m):
                raise SamplingError("the model produced no finite logit")
            np.subtract(logits, m, out=work)
            if s.temperature != 1.0:
                np.multiply(work, 1.0 / s.temperature, out=work)
            np.exp(work, out=work)
            return self._draw_blocks()
        np.copyto(work, logits)
        self._apply_penalty(work)
        if len(self._bias_ids):
            work[self._bias_ids] += self._bias
        if len(self._banned):
            work[self._banned] = -np.inf
        if self._mask is not None:
            self._apply_mask(work)
        m = float(work.max())
        if not m > -np.inf:
            raise SamplingError("no token is allowed here")
        if s.temperature <= 0:
            return int(np.argmax(work))
        # Thresholds on logits: top-k (k-th largest) and min-p (p_i >= min_p * p_max).
        thr = -np.inf
        if 0 < s.top_k < self.n_vocab:
            thr = float(np.partition(work, self.n_vocab - s.top_k)[self.n_vocab - s.top_k])
        np.subtract(work, m, out=work)
        if s.top_p < 1.0:
            if thr > -np.inf:
                work[work < thr - m] = -np.inf
            return self._draw_top_p(work, s.top_p, s.min_p, s.temperature)
        if s.min_p > 0.0:
            thr = max(thr, m + math.log(s.min_p))
        if thr > -np.inf:
            work[work < thr - m] = -np.inf
        if s.temperature != 1.0:
            np.multiply(work, 1.0 / s.temperature, out=work)
        np.exp(work, out=work)
        return self._draw_blocks()

    def _apply_penalty(self, work: npt.NDArray[np.float32]) -> None:
        if not self._penalised or not self._recent:
            return
        ids, counts = np.unique(np.fromiter(self._recent, dtype=np.int64), return_counts=True)
        v = work[ids]
        if self._penalty != 1.0:
            v = np.where(v > 0, v / self._penalty, v * self._penalty)
        work[ids] = v - (counts * self._freq + self._presence).astype(np.float32)

    def _apply_mask(self, work: npt.NDArray[np.float32]) -> None:
        cands, c = self._cands, self._cands_c
        assert cands is not None and c is not None and self._mask is not None
        cands["logit"] = work
        c.size, c.selected, c.sorted = self.n_vocab, -1, False
        self._mask(ctypes.addressof(c))
        if c.size != self.n_vocab or c.data != cands.ctypes.data:
            raise SamplingError("the grammar sampler changed the candidate list")
        np.copyto(work, cands["logit"])

    def _draw_blocks(self) -> int:
        """Token index from the unnormalised weights in the work buffer (zero tail included)."""
        sums = self._blocks.sum(axis=1, dtype=np.float64)
        cum = np.cumsum(sums)
        total = float(cum[-1])
        if not total > 0 or not math.isfinite(total):
            raise SamplingError("no token has a non-zero probability")
        u = self._rng.random() * total
        b = min(int(np.searchsorted(cum, u, side="right")), len(cum) - 1)
        while sums[b] <= 0:  # rounding put u on an empty block's edge: step back to a real one
            b -= 1
        inner = u - (float(cum[b - 1]) if b else 0.0)
        row = self._blocks[b]
        c = np.cumsum(row, dtype=np.float64)
        i = min(int(np.searchsorted(c, inner, side="right")), _BLOCK - 1)
        while row[i] <= 0:  # never land on a zero-weight token
            i -= 1
        return b * _BLOCK + i

    def _draw_top_p(self, shifted: npt.NDArray[np.float32], top_p: float, min_p: float, temperature: float) -> int:
        """Top-p over `shifted` (logits minus their max; excluded tokens -inf), then min-p, then draw."""
        e = np.exp(shifted)
        total = float(e.sum(dtype=np.float64))
        target = top_p * total
        # Only tokens above some weight can be in the nucleus: find a threshold whose tokens already
        # hold the target mass and sort just those (all others come later in the sorted order).
        idx = None
        for shift in (4, 8, 12, 16, 20, 26, 34, 48, 64):
            cand = np.flatnonzero(e >= 2.0**-shift)
            if float(e[cand].sum(dtype=np.float64)) >= target:
                idx = cand
                break
        if idx is None:
            idx = np.flatnonzero(e > 0)
        w = e[idx].astype(np.float64)
        order = np.argsort(-w, kind="stable")
        cum = np.cumsum(w[order])
        keep = min(int(np.searchsorted(cum, target, side="left")) + 1, len(order))
        kept = idx[order[:keep]]
        logit = shifted[kept].astype(np.float64)
        if min_p > 0.0:
            kept, logit = kept[logit >= math.log(min_p)], logit[logit >= math.log(min_p)]
        p = np.exp(logit / temperature)
        cp = np.cumsum(p)
        u = self._rng.random() * float(cp[-1])
        return int(kept[min(int(np.searchsorted(cp, u, side="right")), len(kept) - 1)])


def logits_view(address: int, n_vocab: int) -> npt.NDArray[np.float32]:
    """A numpy view (no copy) of n_vocab float32 logits at a C address."""
    buf = (ctypes.c_float * n_vocab).from_address(address)
    return np.frombuffer(memoryview(buf).cast("B"), dtype=np.float32, count=n_vocab)
