"""The Engine: one gpt-oss GGUF loaded through llama.cpp's C API with explicit settings, and unloaded.

Its generation, tokens, samplers and KV cache come from the mixins in this package.
"""

from __future__ import annotations

import ctypes
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from app.core.engine.base import _STOP_TEXTS, _log_tail
from app.core.engine.checks import _SPLIT_RE, SUPPORTED_ARCH, _split_parts, check_model_file
from app.core.engine.errors import EngineError
from app.core.engine.generation import GenerationMixin
from app.core.engine.types import LoadSettings, ModelInfo

log = logging.getLogger(__name__)

_KV_TYPES = {"f32": 0, "f16": 1, "q4_0": 2, "q4_1": 3, "q5_0": 6, "q5_1": 7, "q8_0": 8, "bf16": 30}
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


class Engine(GenerationMixin):
    """One loaded gpt-oss model and its context; one generation at a time.

    The decode loop calls llama.cpp's C API directly (a reused one-token batch, a C sampler chain,
    no logits copied into Python), which keeps Python's share of each token to a few microseconds.
    """

    reports_prompt_progress = True  # stream(progress=…): see ReportsPromptProgress

    # -- loading ------------------------------------------------------------------------------------

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


def _physical_cores() -> int:
    """llama.cpp runs best with one thread per physical core (hyper-threads only add contention)."""
    try:
        import psutil

        n = psutil.cpu_count(logical=False)
    except Exception:  # noqa: BLE001 - psutil missing or unable to tell
        n = None
    return max(1, n or os.cpu_count() or 1)


def _int(v: object) -> int:
    return int(v) if isinstance(v, (int, float)) else 0
