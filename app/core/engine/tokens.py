"""The engine's vocabulary: text to token ids and back, token pieces, and which tokens end a generation."""

from __future__ import annotations

import ctypes
from collections.abc import Sequence

from app.core.engine.base import EngineBase
from app.core.engine.errors import EngineError


class TokensMixin(EngineBase):
    """Tokenizing and detokenizing with the loaded model's vocabulary."""

    def _require(self) -> None:
        if self._ctx is None:
            raise EngineError("No model is loaded.")

    def _special_id(self, text: str) -> int | None:
        ids = self.tokenize(text, special=True)
        if len(ids) == 1 and self.detokenize(ids) == text.encode():
            return ids[0]
        return None

    def tokenize(self, text: str, *, special: bool = True) -> list[int]:
        """Text → token ids; with special=True, "<|start|>" etc. become their special tokens."""
        import llama_cpp

        self._require()
        data = text.encode("utf-8")
        cap = len(data) + 8
        buf = (llama_cpp.llama_token * cap)()
        n = llama_cpp.llama_tokenize(self._vocab, data, len(data), buf, cap, False, special)
        if n < 0:
            cap = -n
            buf = (llama_cpp.llama_token * cap)()
            n = llama_cpp.llama_tokenize(self._vocab, data, len(data), buf, cap, False, special)
            if n < 0:
                raise EngineError("The text could not be tokenized.")
        return list(buf[:n])

    def _piece(self, tok: int) -> bytes:
        """The text of one token (special tokens as their text), cached per token id."""
        piece = self._pieces.get(tok)
        if piece is None:
            import llama_cpp

            buf = self._piece_buf
            n = llama_cpp.llama_token_to_piece(self._vocab, tok, buf, len(buf), 0, True)
            if n < 0:
                buf = ctypes.create_string_buffer(-n)
                n = llama_cpp.llama_token_to_piece(self._vocab, tok, buf, len(buf), 0, True)
            piece = ctypes.string_at(buf, max(n, 0))
            self._pieces[tok] = piece
        return piece

    def _classify(self, tok: int) -> str | None:
        """Stop reason for a token that ends generation; otherwise remember it as plain text."""
        import llama_cpp

        stop = self._stop_ids.get(tok)
        if stop is not None:
            return stop
        if tok != self._end_id and llama_cpp.llama_vocab_is_eog(self._vocab, tok):
            return "eos"
        self._plain_pieces[tok] = self._piece(tok)
        return None

    def detokenize(self, ids: Sequence[int]) -> bytes:
        """Token ids → bytes, special tokens kept as their text."""
        self._require()
        for t in ids:
            if not 0 <= t < self._n_vocab:
                raise EngineError(f"Token id {t} is outside the vocabulary (0–{self._n_vocab - 1}).")
        return b"".join(self._piece(t) for t in ids)

    @property
    def cached_tokens(self) -> list[int]:
        """The tokens whose keys/values are in the KV cache right now."""
        return list(self._cache_tokens)
