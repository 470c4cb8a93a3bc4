"""What goes into and comes out of an engine: load settings, sampler settings, generation figures, model info."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

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
