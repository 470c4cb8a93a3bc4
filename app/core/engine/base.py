"""What a loaded Engine holds, shared by its parts (tokens, KV cache, sampling, generation, loading)."""

from __future__ import annotations

import ctypes
import logging
import threading
from typing import TYPE_CHECKING, Any

from app.core.engine.protocol import PromptProgressFn
from app.core.engine.types import GenerationStats, ModelInfo

if TYPE_CHECKING:
    from app.core.engine.kv_cache import _Checkpoint

_STOP_TEXTS = {"<|return|>": "return", "<|call|>": "call", "<|endoftext|>": "eos"}


class EngineBase:
    """The state of one Engine: model, context, vocabulary tables, KV cache bookkeeping, samplers."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._gen_lock = threading.Lock()
        self._model: ctypes.c_void_p | None = None
        self._ctx: ctypes.c_void_p | None = None
        self._vocab: ctypes.c_void_p | None = None
        self._info: ModelInfo | None = None
        self._overrides: object | None = None
        self._cache_tokens: list[int] = []
        self._checkpoints: list[_Checkpoint] = []
        self._pieces: dict[int, bytes] = {}
        self._piece_buf = ctypes.create_string_buffer(256)
        self._plain_pieces: dict[int, bytes] = {}  # tokens that do not end generation → text
        self._stop_ids: dict[int, str] = {}
        self._stop_texts_by_id: dict[int, str] = {}
        self._end_id: int = -1
        self._n_vocab = 0
        self._n_batch = 512
        self._n_swa = 0
        self._swa_full = False
        self._unloading = False
        self._abort_flag = False
        self._abort_cb: object | None = None
        self._abort_event: threading.Event | None = None
        self._tok1: ctypes.Array[ctypes.c_int32] | None = None
        self._batch1: object | None = None
        self._control_ids: set[int] = set()  # harmony control tokens: never repeat-penalised
        self._backend_sampling = False  # sample inside the decode (see LoadSettings.backend_sampling)
        self._bchain: ctypes.c_void_p | None = None  # the sampler chain attached to the context
        self._bchain_key: tuple[object, ...] | None = None
        self._threadpools: list[Any] = []  # llama_ext.CpuThreadpool, freed after the context
        self.last_stats: GenerationStats | None = None
        self._prompt_progress: PromptProgressFn | None = None  # set while a reporting stream runs

    @property
    def loaded(self) -> bool:
        return self._ctx is not None

    @property
    def info(self) -> ModelInfo | None:
        return self._info

    @property
    def n_ctx(self) -> int:
        return self._info.n_ctx if self._info else 0


def _nothing() -> None:
    pass


def _log_tail(lines: list[tuple[int, str]], n: int = 3) -> str:
    """The last errors (or, failing that, warnings) from llama.cpp, to say *why* something failed."""
    for level in (logging.ERROR, logging.WARNING):
        bad = [t.strip() for lvl, t in lines if lvl >= level and t.strip() and "setting token" not in t]
        if bad:
            return ": " + " / ".join(bad[-n:])
    return "."
