"""Run gpt-oss GGUFs with llama-cpp-python: load with explicit settings, stream token pieces, cancel.

The package is split by job: ``errors`` (EngineError), ``types`` (load and sampler settings,
generation figures, model info), ``protocol`` (EngineLike and its kin, prompt-reading progress),
``checks`` (the GGUF file checked before llama.cpp sees it), and the Engine itself, built from
``base`` (its state), ``tokens``, ``kv_cache`` (prefix reuse, sliding-window checkpoints),
``sampling`` (device sampler chain or exact CPU sampling, grammars), ``generation`` (the decode
loop) and ``llama`` (loading and unloading, the Engine class). Import from ``app.core.engine``;
the modules are its inside.
"""

from __future__ import annotations

from app.core.engine.checks import SUPPORTED_ARCH, check_model_file, read_gguf_header
from app.core.engine.errors import EngineError
from app.core.engine.llama import Engine
from app.core.engine.protocol import (
    EngineLike,
    EngineWrapper,
    LoadableEngine,
    PromptProgressFn,
    ReportsPromptProgress,
    close_stream,
    stream_with_progress,
)
from app.core.engine.sampling import split_grammar_stops
from app.core.engine.types import (
    PARTIAL_EXPERT_TENSORS,
    GenerationStats,
    LoadSettings,
    ModelInfo,
    ModelSource,
    Sampling,
)

__all__ = [
    "PARTIAL_EXPERT_TENSORS",
    "SUPPORTED_ARCH",
    "Engine",
    "EngineError",
    "EngineLike",
    "EngineWrapper",
    "GenerationStats",
    "LoadSettings",
    "LoadableEngine",
    "ModelInfo",
    "ModelSource",
    "PromptProgressFn",
    "ReportsPromptProgress",
    "Sampling",
    "check_model_file",
    "close_stream",
    "read_gguf_header",
    "split_grammar_stops",
    "stream_with_progress",
]
