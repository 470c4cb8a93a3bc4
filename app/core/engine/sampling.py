"""How the engine draws each token: llama.cpp's sampler chain on the device, or exact CPU sampling from the
logits with grammars and penalties; and the grammar rewrite that lets a GBNF name its stop token."""

from __future__ import annotations

import ctypes
import functools
import logging
from collections.abc import Callable, Sequence

from app.core.engine.base import _STOP_TEXTS, EngineBase, _log_tail, _nothing
from app.core.engine.errors import EngineError
from app.core.engine.types import Sampling

log = logging.getLogger(__name__)


class SamplingMixin(EngineBase):
    """The samplers of one generation, built from Sampling and an optional grammar."""

    @property
    def _stop_texts(self) -> list[str]:
        return list(_STOP_TEXTS)

    def _grammar_sampler(self, grammar: str) -> ctypes.c_void_p:
        import llama_cpp

        from app.core import llama_ext

        with llama_ext.capture_llama_log() as lines:
            g: ctypes.c_void_p = llama_cpp.llama_sampler_init_grammar(self._vocab, grammar.encode("utf-8"), b"root")
        if not g:
            raise EngineError(f"The grammar is invalid{_log_tail(lines)}")
        return g

    @staticmethod
    def _free_sampler(s: ctypes.c_void_p | None) -> None:
        import llama_cpp

        if s:
            llama_cpp.llama_sampler_free(s)

    def _sampler(
        self, s: Sampling, grammar: str | None, tokens: list[int]
    ) -> tuple[Callable[[], int], Callable[[], None]]:
        """The draw of one token for this generation, and what frees its resources afterwards.

        Without a grammar or repeat penalty, and with the output layer on a GPU, llama.cpp samples
        on the GPU inside each decode and only the token id comes back (no logits copy, no CPU
        pass over the vocabulary). Otherwise the logits are read where llama.cpp left them and
        LogitSampler draws from them exactly; a grammar first masks them through llama.cpp's
        grammar sampler. Both follow llama.cpp's chain: top-k, top-p, min-p, temperature, draw.
        """
        import llama_cpp

        from app.core import llama_ext
        from app.core.sampler import LogitSampler, SamplerSettings, SamplingError, logits_view

        # Penalties and logit bias change the logits from the generated history: the CPU path does them.
        penalised = (
            (bool(s.repeat_penalty) and s.repeat_penalty != 1.0)
            or bool(s.presence_penalty)
            or bool(s.frequency_penalty)
            or bool(s.logit_bias)
        )
        if grammar is None and not penalised and self._backend_sampling:
            chain = self._attach_backend_chain(s)
            if chain is not None:
                return functools.partial(llama_cpp.llama_sampler_sample, chain, self._ctx, -1), _nothing
        self._detach_backend_chain()
        settings = SamplerSettings(
            temperature=float(s.temperature),
            top_p=float(s.top_p),
            top_k=int(s.top_k or 0),
            min_p=float(s.min_p or 0.0),
            repeat_penalty=float(s.repeat_penalty or 1.0),
            presence_penalty=float(s.presence_penalty or 0.0),
            frequency_penalty=float(s.frequency_penalty or 0.0),
            logit_bias=tuple((int(t), float(b)) for t, b in (s.logit_bias or {}).items()),
            seed=s.seed,
        )
        gsmpl: ctypes.c_void_p | None = None
        banned: list[int] = []
        mask = None
        if grammar is not None:
            body, named = split_grammar_stops(grammar, self._stop_texts)
            if named:
                banned = [tid for tid, text in self._stop_texts_by_id.items() if text not in named]
            gsmpl = self._grammar_sampler(body)
            mask = functools.partial(llama_ext.sampler_apply, gsmpl)
        try:
            sampler = LogitSampler(
                self._n_vocab, settings, history=tokens, unpenalised=self._control_ids, banned=banned, mask=mask
            )
        except BaseException:
            self._free_sampler(gsmpl)
            raise
        ctx, n_vocab = self._ctx, self._n_vocab
        logits_at, accept = llama_ext.logits_address, llama_cpp.llama_sampler_accept
        view: list[object] = [0, None]  # the logits buffer's address and a numpy view of it

        def draw() -> int:
            addr = logits_at(ctx, -1)
            if not addr:
                raise EngineError("llama.cpp returned no logits to sample from.")
            if addr != view[0]:
                view[0], view[1] = addr, logits_view(addr, n_vocab)
            try:
                tok = sampler.sample(view[1])  # type: ignore[arg-type]
            except SamplingError as e:
                raise EngineError(f"No token can be sampled: {e}.") from None
            sampler.accept(tok)
            if gsmpl is not None:
                accept(gsmpl, tok)
            return tok

        return draw, functools.partial(self._free_sampler, gsmpl)

    def _attach_backend_chain(self, s: Sampling) -> ctypes.c_void_p | None:
        """The sampler chain llama.cpp runs inside each decode (reused, and reset, while unchanged)."""
        import llama_cpp

        from app.core import llama_ext

        key: tuple[object, ...] = (s.temperature, s.top_k, s.top_p, s.min_p, s.seed)
        if self._bchain is not None and self._bchain_key == key:
            llama_cpp.llama_sampler_reset(self._bchain)  # same seed: same draws again
            return self._bchain
        self._detach_backend_chain()
        chain: ctypes.c_void_p = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
        add = llama_cpp.llama_sampler_chain_add
        if s.temperature <= 0:
            add(chain, llama_cpp.llama_sampler_init_greedy())
        else:
            if s.top_k and 0 < s.top_k < self._n_vocab:
                add(chain, llama_cpp.llama_sampler_init_top_k(int(s.top_k)))
            if s.top_p < 1.0:
                add(chain, llama_cpp.llama_sampler_init_top_p(float(s.top_p), 1))
            if s.min_p and s.min_p > 0.0:
                add(chain, llama_cpp.llama_sampler_init_min_p(float(s.min_p), 1))
            if s.temperature != 1.0:
                add(chain, llama_cpp.llama_sampler_init_temp(float(s.temperature)))
            seed = llama_cpp.LLAMA_DEFAULT_SEED if s.seed is None else int(s.seed) & 0xFFFFFFFF
            add(chain, llama_cpp.llama_sampler_init_dist(seed))
        with llama_ext.capture_llama_log() as lines:
            ok = llama_cpp.llama_set_sampler(self._ctx, 0, chain)
        # Each sampler now names itself "+name" when it runs on the device and "-name" when the
        # device lacks an operation it needs; then llama.cpp would finish on the CPU with its slow
        # full-vocabulary pass, and the engine's own CPU sampler is the better choice.
        names = [
            (llama_cpp.llama_sampler_name(llama_cpp.llama_sampler_chain_get(chain, i)) or b"").decode()
            for i in range(llama_cpp.llama_sampler_chain_n(chain))
        ]
        if not ok or not all(n.startswith("+") for n in names):
            if ok:
                llama_cpp.llama_set_sampler(self._ctx, 0, None)
            llama_cpp.llama_sampler_free(chain)
            self._backend_sampling = False  # do not try again with this context
            log.warning(
                "backend sampling is not available (%s), sampling on the CPU%s", " ".join(names), _log_tail(lines)
            )
            return None
        self._bchain, self._bchain_key = chain, key
        return chain

    def _detach_backend_chain(self) -> None:
        import llama_cpp

        if self._bchain is None:
            return
        llama_cpp.llama_set_sampler(self._ctx, 0, None)
        llama_cpp.llama_sampler_free(self._bchain)
        self._bchain = self._bchain_key = None


def split_grammar_stops(grammar: str, stop_texts: Sequence[str]) -> tuple[str, set[str]]:
    """Remove references to stop tokens (e.g. `<|return|>`) from a GBNF grammar.

    llama.cpp's grammar sampler never lets an end-of-generation token match a grammar element:
    such tokens are only allowed once the grammar is complete. So a grammar names its stop token
    last (`... text <|return|>`); the engine removes the reference and, once the grammar is
    complete, allows only the stop tokens the grammar named. Strings, character classes and
    comments are left alone.
    """
    out: list[str] = []
    found: set[str] = set()
    i, n = 0, len(grammar)
    while i < n:
        c = grammar[i]
        if c in '"[':
            close = '"' if c == '"' else "]"
            j = i + 1
            while j < n and grammar[j] != close:
                j += 2 if grammar[j] == "\\" else 1
            out.append(grammar[i : j + 1])
            i = j + 1
            continue
        if c == "#":
            j = grammar.find("\n", i)
            j = n if j < 0 else j
            out.append(grammar[i:j])
            i = j
            continue
        hit = next((t for t in stop_texts if grammar.startswith(t, i)), None)
        if hit is not None:
            found.add(hit)
            out.append(" ")
            i += len(hit)
            continue
        out.append(c)
        i += 1
    return "".join(out), found
