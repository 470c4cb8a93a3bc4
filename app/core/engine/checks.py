"""Checks of a GGUF file before llama.cpp sees it: it exists, is complete, is gpt-oss, has sane settings."""

from __future__ import annotations

import os
import re
from pathlib import Path

from app.core.engine.errors import EngineError
from app.core.gguf_info import GgufError, PartHeader, read_part
from app.core.units import format_bytes

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
