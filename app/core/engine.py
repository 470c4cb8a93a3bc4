"""Run gpt-oss GGUFs with llama-cpp-python: load with explicit settings, stream token pieces, cancel."""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

from app.core.errors import HarmonicaError
from app.core.gguf_info import GgufError, PartHeader, read_part
from app.core.units import format_bytes

log = logging.getLogger(__name__)


class EngineError(HarmonicaError):
    """A failure the user can act on; the message is written for people, not developers."""


# Which of a block's three expert tensors stay in host memory when only part of it does
# (LoadSettings.n_cpu_moe_partial). Down first: gate, up and their activation then stay together
# on the GPU, and the activations cross to the CPU and back once per token, as for a whole block.
PARTIAL_EXPERT_TENSORS: dict[int, tuple[str, ...]] = {1: ("down",), 2: ("gate", "up")}


@dataclass
class LoadSettings:
    """Everything that decides how a model is loaded (the planner fills this in)."""

    n_ctx: int = 8192
    n_gpu_layers: int = 0
    # Number of blocks (counted from the first) whose MoE expert tensors stay in host memory,
    # like llama.cpp's --n-cpu-moe. 0 = none.
    n_cpu_moe: int = 0
    # Of the next block (number n_cpu_moe), how many of its three expert tensors also stay in host
    # memory: 1 = down, 2 = gate and up (0-2; finer than whole blocks, as llama.cpp's --fit does).
    n_cpu_moe_partial: int = 0
    n_threads: int | None = None
    n_threads_batch: int | None = None
    n_batch: int = 512
    flash_attn: bool = True
    kv_type: str = "f16"
    use_mmap: bool = True
    use_mlock: bool = False
    # gpt-oss alternates sliding-window and full attention; False keeps the sliding layers' KV small.
    swa_full: bool = False
    # llama.cpp's extra CPU weight buffers (repacking for faster CPU matmuls, Intel AMX). Turn off
    # where they misbehave: in some VMs the CPU reports AMX but executing it raises SIGILL.
    cpu_extra_buffers: bool = True
    # ggml device names llama.cpp may use ("CUDA0", "Metal", ...). None: llama.cpp's default (every
    # GPU, layers spread over them); (): hide all GPUs (true CPU-only; with n_gpu_layers=0 alone a
    # visible GPU still takes compute buffers); one name: that GPU only.
    devices: tuple[str, ...] | None = None
    # Sample on the device that holds the output layer, inside each decode (llama.cpp's backend
    # sampling): only the token id comes back, no logits. None: when the output layer is on a GPU;
    # True: also on the CPU backend (tests); False: never. Grammars and the repeat penalty always
    # sample on the CPU.
    backend_sampling: bool | None = None
    # Share of the offloaded layers for each of `devices`, in order (llama.cpp's --tensor-split);
    # None: llama.cpp splits by free memory. Pooled plans (GPU workers) set it.
    tensor_split: tuple[float, ...] | None = None


@dataclass
class Sampling:
    """Sampler settings; defaults are gpt-oss's recommended temperature 1.0 and top_p 1.0."""

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    repeat_penalty: float = 1.0
    seed: int | None = None
    max_tokens: int | None = None
    # OpenAI's penalties (llama.cpp's penalties sampler, over the last 64 tokens) and logit_bias
    # (token id → bias added to its logit; -inf bans it). Used by the local API server.
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: dict[int, float] | None = None


@dataclass
class GenerationStats:
    """Figures for one generation."""

    prompt_tokens: int = 0
    cached_tokens: int = 0  # prompt tokens reused from the KV cache (not evaluated again)
    generated_tokens: int = 0
    ttft_s: float = 0.0  # time to first generated token
    total_s: float = 0.0
    prompt_tokens_per_s: float = 0.0
    tokens_per_s: float = 0.0  # generation speed, after the first token
    stop_reason: str = ""  # "return", "call", "eos", "length", "cancelled"


# Where a loaded model comes from: a GGUF file, a scripted replay (tests, demos), or, one day, a
# model served elsewhere. Code that needs a file on disk asks `info.source == "file"`.
ModelSource = Literal["file", "scripted", "remote"]


@dataclass
class ModelInfo:
    """What a loaded model is, read from its file and from llama.cpp."""

    path: Path
    name: str
    arch: str
    n_ctx_train: int
    n_ctx: int
    n_params: int
    size_bytes: int  # on disk, all parts of a split model together
    chat_template: str | None
    n_layer: int
    n_expert: int
    n_swa: int = 0  # sliding-window size of the SWA layers (0: none)
    description: str = ""  # llama.cpp's one-line description, e.g. "gpt-oss 20B MXFP4 MoE"
    expert_overrides: list[str] = field(default_factory=list)  # tensor patterns kept on the CPU
    # What llama.cpp reported allocating: "BUFFER kind" -> bytes, e.g. "CUDA0 model", "CPU KV".
    buffers: dict[str, int] = field(default_factory=dict)
    offloaded_layers: tuple[int, int] | None = None  # (offloaded, offloadable) as llama.cpp logged it
    source: ModelSource = "file"
    loaded_at: float = 0.0  # time.time() when the load finished


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


# --- GGUF checks before llama.cpp sees the file -----------------------------------------------------

SUPPORTED_ARCH = "gpt-oss"
_SPLIT_RE = re.compile(r"^(?P<prefix>.*)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$")


def read_gguf_header(path: Path) -> PartHeader:
    """The header of one GGUF file, read by gguf_info (numpy-free, so it may run before llama_cpp
    is imported: the CUDA build crashed at load when numpy came first; design.md)."""
    try:
        return read_part(path)
    except GgufError as e:
        text = str(e)  # starts with the file name: never change its case
        raise EngineError(text + ("" if text.endswith(".") else ".")) from None


def _split_parts(path: Path) -> list[Path]:
    m = _SPLIT_RE.match(path.name)
    if not m:
        return [path]
    count = int(m.group("count"))
    return [path.with_name(f"{m.group('prefix')}-{i:05d}-of-{count:05d}.gguf") for i in range(1, count + 1)]


def check_model_file(path: str | os.PathLike[str]) -> PartHeader:
    """Everything that can be checked without llama.cpp; returns the (first part's) header."""
    p = Path(path)
    if not p.exists():
        raise EngineError(f"The model file {p} does not exist.")
    if not p.is_file():
        raise EngineError(f"{p} is not a file.")
    head = read_gguf_header(p)
    if head.arch != SUPPORTED_ARCH:
        what = head.arch or "unknown"
        raise EngineError(f"{p.name} is a '{what}' model. Harmonica runs gpt-oss models (architecture 'gpt-oss') only.")
    _check_hparams(p, head.metadata)
    parts = [p]
    n_split = head.metadata.get("split.count")
    if isinstance(n_split, int) and n_split > 1:
        parts = _split_parts(p)
        if len(parts) != n_split or parts[0] != p:
            raise EngineError(
                f"{p.name} is part of a split model; open the first part (…-00001-of-{n_split:05d}.gguf)."
            )
    for part in parts:
        h = head if part == p else _check_part(part)
        if h.data_end > h.size:
            have, need = h.size, h.data_end
            raise EngineError(
                f"{part.name} is incomplete: it is {format_bytes(have, decimals=2)} but its tensors need {format_bytes(need, decimals=2)}. "
                "The download may have been interrupted; download it again."
            )
    return head


def _check_hparams(p: Path, md: dict[str, object]) -> None:
    """Values llama.cpp asserts on (aborting the whole process) rather than reporting."""
    a = SUPPORTED_ARCH

    def num(key: str) -> int | None:
        v = md.get(f"{a}.{key}")
        return int(v) if isinstance(v, int) and not isinstance(v, bool) else None

    problems: list[str] = []
    n_layer, n_expert, n_used = num("block_count"), num("expert_count"), num("expert_used_count")
    if n_layer is None or not 0 < n_layer <= 512:
        problems.append(f"block count {n_layer}")
    if n_expert is None or not 0 < n_expert <= 1024:
        problems.append(f"expert count {n_expert}")
    elif n_used is None or not 0 < n_used <= n_expert:
        problems.append(f"{n_used} experts used of {n_expert}")
    for key in ("embedding_length", "context_length", "attention.head_count"):
        v = num(key)
        if v is None or v <= 0:
            problems.append(f"{key} {v}")
    scaling = md.get(f"{a}.rope.scaling.type", "none")
    if scaling not in ("none", "linear", "yarn", "longrope"):
        problems.append(f"rope scaling '{scaling}'")
    if problems:
        raise EngineError(
            f"{p.name} has invalid model settings ({', '.join(problems)}); the file is damaged or not a real gpt-oss model."
        )


def _check_part(part: Path) -> PartHeader:
    if not part.is_file():
        raise EngineError(f"A part of this split model is missing: {part.name}.")
    return read_gguf_header(part)


# --- the engine -------------------------------------------------------------------------------------

_KV_TYPES = {"f32": 0, "f16": 1, "q4_0": 2, "q4_1": 3, "q5_0": 6, "q5_1": 7, "q8_0": 8, "bf16": 30}
_STOP_TEXTS = {"<|return|>": "return", "<|call|>": "call", "<|endoftext|>": "eos"}
_HARMONY_CONTROL = (
    "<|start|>",
    "<|end|>",
    "<|message|>",
    "<|channel|>",
    "<|constrain|>",
    "<|return|>",
    "<|call|>",
    "<|endoftext|>",
    "<|startoftext|>",
    "<|endofprompt|>",
)
_MAX_CHECKPOINTS = 3


@dataclass
class _Checkpoint:
    """Sliding-window KV state saved at a position, so a shorter prefix can be resumed later."""

    pos: int
    data: ctypes.Array[ctypes.c_ubyte]


class Engine:
    """One loaded gpt-oss model and its context; one generation at a time.

    The decode loop calls llama.cpp's C API directly (a reused one-token batch, a C sampler chain,
    no logits copied into Python), which keeps Python's share of each token to a few microseconds.
    """

    reports_prompt_progress = True  # stream(progress=…): see ReportsPromptProgress

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

    # -- loading ------------------------------------------------------------------------------------

    @property
    def loaded(self) -> bool:
        return self._ctx is not None

    @property
    def info(self) -> ModelInfo | None:
        return self._info

    @property
    def n_ctx(self) -> int:
        return self._info.n_ctx if self._info else 0

    def load(
        self,
        path: str | os.PathLike[str],
        settings: LoadSettings | None = None,
        progress: Callable[[float], bool] | None = None,
    ) -> ModelInfo:
        """Load a gpt-oss GGUF. `progress(fraction)` returning False cancels the load."""
        settings = settings or LoadSettings()
        p = Path(path)
        head = check_model_file(p)
        if settings.n_ctx < 16:
            raise EngineError(f"A context of {settings.n_ctx} tokens is too small.")
        import llama_cpp

        from app.core import llama_ext

        llama_ext.install_log_router()
        llama_ext.load_dynamic_backends()  # a GGML_BACKEND_DL build registers none until asked
        with self._lock:
            self.unload()
            n_layer = _int(head.metadata.get(f"{SUPPORTED_ARCH}.block_count"))
            mp, keep_alive, overrides = _model_params(settings, n_layer)
            cancelled = False

            @llama_cpp.llama_progress_callback
            def on_progress(fraction: float, _ud: ctypes.c_void_p) -> bool:
                nonlocal cancelled
                if progress is None:
                    return True
                try:
                    keep_going = progress(float(fraction)) is not False
                except Exception:
                    log.exception("progress callback failed")
                    keep_going = True
                cancelled = cancelled or not keep_going
                return keep_going

            mp.progress_callback = on_progress
            t0 = time.perf_counter()
            with llama_ext.capture_llama_log() as lines:
                model = llama_cpp.llama_model_load_from_file(os.fsencode(p), mp)
                if not model:
                    if cancelled:
                        raise EngineError("Loading was cancelled.")
                    raise EngineError(f"llama.cpp could not load {p.name}{_log_tail(lines)}")
                try:
                    ctx = self._new_context(model, settings)
                except EngineError:
                    llama_cpp.llama_model_free(model)
                    raise
                if not ctx:
                    llama_cpp.llama_model_free(model)
                    raise EngineError(
                        f"llama.cpp could not create a context of {settings.n_ctx} tokens for {p.name}{_log_tail(lines)}"
                    )
            self._model, self._ctx, self._overrides = model, ctx, keep_alive
            report = llama_ext.parse_buffer_report(text for _, text in lines)
            self._vocab = llama_cpp.llama_model_get_vocab(model)
            self._n_vocab = llama_cpp.llama_vocab_n_tokens(self._vocab)
            self._n_batch = max(1, int(llama_cpp.llama_n_batch(ctx)))
            self._n_swa = int(llama_cpp.llama_model_n_swa(model))
            self._swa_full = bool(settings.swa_full)
            self._tok1 = (llama_cpp.llama_token * 1)()
            self._batch1 = llama_cpp.llama_batch_get_one(self._tok1, 1)
            self._pieces = {}
            self._plain_pieces = {}
            self._cache_tokens = []
            self._checkpoints = []
            self._stop_ids = {}
            self._stop_texts_by_id = {}
            for text, reason in _STOP_TEXTS.items():
                tid = self._special_id(text)
                if tid is not None:
                    self._stop_ids[tid] = reason
                    self._stop_texts_by_id[tid] = text
            end = self._special_id("<|end|>")
            self._end_id = -1 if end is None else end
            self._control_ids = {t for t in map(self._special_id, _HARMONY_CONTROL) if t is not None}
            gpu_output = (
                settings.n_gpu_layers >= 1 and settings.devices != () and report.total(kind="model", where="device") > 0
            )
            self._backend_sampling = gpu_output if settings.backend_sampling is None else settings.backend_sampling
            desc = ctypes.create_string_buffer(256)
            llama_cpp.llama_model_desc(model, desc, 256)
            template = head.metadata.get("tokenizer.chat_template")
            self._info = ModelInfo(
                path=p,
                name=str(head.metadata.get("general.name") or p.stem),
                arch=head.arch,
                n_ctx_train=int(llama_cpp.llama_model_n_ctx_train(model)),
                n_ctx=int(llama_cpp.llama_n_ctx(ctx)),
                n_params=int(llama_cpp.llama_model_n_params(model)),
                size_bytes=sum(q.stat().st_size for q in _split_parts(p)) if _SPLIT_RE.match(p.name) else head.size,
                chat_template=template if isinstance(template, str) else None,
                n_layer=int(llama_cpp.llama_model_n_layer(model)),
                n_expert=_int(head.metadata.get(f"{SUPPORTED_ARCH}.expert_count")),
                n_swa=self._n_swa,
                description=desc.value.decode("utf-8", "replace"),
                expert_overrides=list(overrides.patterns) if overrides is not None else [],
                buffers=report.flat(),
                offloaded_layers=report.offloaded_layers,
                loaded_at=time.time(),
            )
            log.info("loaded %s in %.2f s (%s)", p.name, time.perf_counter() - t0, self._info.description)
            return self._info

    def _new_context(self, model: ctypes.c_void_p, s: LoadSettings) -> ctypes.c_void_p | None:
        import llama_cpp

        kv = _KV_TYPES.get(s.kv_type.lower())
        if kv is None:
            raise EngineError(f"Unknown KV cache type '{s.kv_type}'; use one of {', '.join(_KV_TYPES)}.")
        cp = llama_cpp.llama_context_default_params()
        cp.n_ctx = int(s.n_ctx)
        cp.n_batch = int(s.n_batch)
        cp.n_ubatch = int(s.n_batch)
        cp.n_seq_max = 1
        # The engine reads one token's logits per batch (the last). Telling llama.cpp so sizes the
        # compute buffer for one output row instead of n_ubatch rows of the 201k vocabulary:
        # ~400 MB less per 512-token micro-batch, on the GPU where that buffer lives.
        cp.n_outputs_max = 1
        threads = s.n_threads or _physical_cores()
        cp.n_threads = int(threads)
        cp.n_threads_batch = int(s.n_threads_batch or threads)
        cp.flash_attn_type = -1 if s.flash_attn else 0  # AUTO: on where the backend supports it
        cp.type_k = kv
        cp.type_v = kv
        cp.swa_full = bool(s.swa_full)
        cp.no_perf = True
        ctx: ctypes.c_void_p | None = llama_cpp.llama_init_from_model(model, cp)
        if ctx:
            self._abort_cb = llama_cpp.ggml_abort_callback(self._should_abort)
            self._attach_threadpools(ctx, cp.n_threads, cp.n_threads_batch)
        return ctx

    def _attach_threadpools(self, ctx: ctypes.c_void_p, n_threads: int, n_threads_batch: int) -> None:
        """Persistent CPU threads for the context (else ggml starts n threads for every token)."""
        from app.core import llama_ext

        self._free_threadpools()
        try:
            gen = llama_ext.CpuThreadpool(n_threads)
            batch = gen if n_threads_batch == n_threads else llama_ext.CpuThreadpool(n_threads_batch)
            llama_ext.attach_threadpools(ctx, gen, batch)
        except llama_ext.LlamaExtError as e:
            log.warning("no persistent CPU thread pool (%s); generation may be slower", e)
            return
        self._threadpools = [gen] if batch is gen else [gen, batch]

    def _free_threadpools(self) -> None:
        for pool in self._threadpools:
            pool.free()
        self._threadpools = []

    def _should_abort(self, _data: ctypes.c_void_p) -> bool:
        # Called by ggml between graph nodes while a prompt chunk is computed (CPU backend).
        ev = self._abort_event
        return self._abort_flag or (ev is not None and ev.is_set())

    def unload(self) -> None:
        """Free the model and context; a running generation stops first (as cancelled)."""
        import llama_cpp

        self._unloading = True
        self._abort_flag = True
        try:
            if not self._gen_lock.acquire(timeout=10):
                raise EngineError("A generation is still running; cancel it before unloading the model.")
            try:
                with self._lock:
                    if self._ctx:
                        llama_cpp.llama_free(self._ctx)
                    if self._bchain:
                        llama_cpp.llama_sampler_free(self._bchain)  # after the context that used it
                    self._bchain = self._bchain_key = None
                    self._free_threadpools()
                    if self._model:
                        llama_cpp.llama_model_free(self._model)
                    self._ctx = self._model = self._vocab = None
                    self._info = None
                    self._overrides = None
                    self._cache_tokens = []
                    self._checkpoints = []
                    self._pieces = {}
                    self._plain_pieces = {}
                    self._batch1 = self._tok1 = None
            finally:
                self._gen_lock.release()
        finally:
            self._unloading = False
            self._abort_flag = False

    def __del__(self) -> None:
        try:
            self.unload()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    # -- tokens -------------------------------------------------------------------------------------

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

    # -- generation ---------------------------------------------------------------------------------

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


def _model_params(settings: LoadSettings, n_layer: int) -> tuple[Any, list[object], Any]:
    """llama.cpp's model parameters for `settings`: (params, what must outlive the load, the
    experts-on-CPU overrides or None). The params point into the objects kept alive."""
    import llama_cpp

    from app.core import llama_ext

    mp = llama_cpp.llama_model_default_params()
    mp.n_gpu_layers = int(settings.n_gpu_layers)
    mp.use_extra_bufts = bool(settings.cpu_extra_buffers)
    if settings.use_mmap:
        mp.load_mode = 3 if settings.use_mlock else 1  # MMAP_MLOCK / MMAP
    else:
        mp.load_mode = 2 if settings.use_mlock else 0  # MLOCK / NONE
    keep_alive: list[object] = []
    if settings.devices is not None:
        try:
            devices = llama_ext.DeviceList(settings.devices)
        except llama_ext.LlamaExtError as e:
            raise EngineError(f"Cannot use the chosen GPU: {e}.") from None
        mp.devices = devices.address
        keep_alive.append(devices)
    if settings.tensor_split:
        split = (ctypes.c_float * max(int(llama_cpp.llama_max_devices()), len(settings.tensor_split)))(
            *settings.tensor_split
        )
        mp.tensor_split = split
        keep_alive.append(split)
    overrides = None
    if settings.n_cpu_moe > 0 or settings.n_cpu_moe_partial > 0:
        overrides = llama_ext.TensorBuftOverrides.experts_on_cpu(
            settings.n_cpu_moe, n_layer, partial=settings.n_cpu_moe_partial
        )
        if overrides is not None:
            mp.tensor_buft_overrides = overrides.address
            keep_alive.append(overrides)
    return mp, keep_alive, overrides


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


def _physical_cores() -> int:
    """llama.cpp runs best with one thread per physical core (hyper-threads only add contention)."""
    try:
        import psutil

        n = psutil.cpu_count(logical=False)
    except Exception:  # noqa: BLE001 - psutil missing or unable to tell
        n = None
    return max(1, n or os.cpu_count() or 1)


def _never() -> bool:
    return False


def _nothing() -> None:
    pass


def _int(v: object) -> int:
    return int(v) if isinstance(v, (int, float)) else 0


def _log_tail(lines: list[tuple[int, str]], n: int = 3) -> str:
    """The last errors (or, failing that, warnings) from llama.cpp, to say *why* something failed."""
    for level in (logging.ERROR, logging.WARNING):
        bad = [t.strip() for lvl, t in lines if lvl >= level and t.strip() and "setting token" not in t]
        if bad:
            return ": " + " / ".join(bad[-n:])
    return "."
