"""Read a GGUF's metadata and tensor sizes (per block and kind) quickly, without touching the weights."""

from __future__ import annotations

import mmap
import os
import re
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.core.errors import HarmonicaError

GGUF_MAGIC = b"GGUF"
SUPPORTED_ARCHS = ("gpt-oss",)
DEFAULT_ALIGNMENT = 32

# gguf.GGUFReader builds Python objects for every token and merge of the 200k vocabulary and takes
# about 10 s on a small machine; this reader only walks the bytes, skipping arrays it does not need
# (~0.3 s for the real 20b header), and never reads the tensor data.

_SPLIT_RE = re.compile(r"^(?P<stem>.*)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$", re.IGNORECASE)

# Value types of the GGUF key/value section.
_T_UINT8, _T_INT8, _T_UINT16, _T_INT16, _T_UINT32, _T_INT32, _T_FLOAT32, _T_BOOL = range(8)
_T_STRING, _T_ARRAY, _T_UINT64, _T_INT64, _T_FLOAT64 = 8, 9, 10, 11, 12
_SCALAR_FORMATS: dict[int, str] = {
    _T_UINT8: "<B",
    _T_INT8: "<b",
    _T_UINT16: "<H",
    _T_INT16: "<h",
    _T_UINT32: "<I",
    _T_INT32: "<i",
    _T_FLOAT32: "<f",
    _T_BOOL: "<?",
    _T_UINT64: "<Q",
    _T_INT64: "<q",
    _T_FLOAT64: "<d",
}
# Arrays longer than this are skipped, not materialised (the vocabulary, merges, token types);
# only their length is kept.
_MAX_ARRAY_KEPT = 4096
# Values materialised from all short arrays of one header together: a header that holds more is
# built to exhaust memory (a real gpt-oss header keeps a few hundred).
_MAX_VALUES_KEPT = 1_000_000

# ggml type id -> (name, values per block, bytes per block), as in gguf-py's GGML_QUANT_SIZES
# (tests compare them). Not imported from gguf: that imports numpy, and numpy loaded before
# llama_cpp crashed the CUDA build at model load (design.md); the planner runs before any load.
GGML_TYPES: dict[int, tuple[str, int, int]] = {
    0: ("F32", 1, 4),
    1: ("F16", 1, 2),
    2: ("Q4_0", 32, 18),
    3: ("Q4_1", 32, 20),
    6: ("Q5_0", 32, 22),
    7: ("Q5_1", 32, 24),
    8: ("Q8_0", 32, 34),
    9: ("Q8_1", 32, 40),
    10: ("Q2_K", 256, 84),
    11: ("Q3_K", 256, 110),
    12: ("Q4_K", 256, 144),
    13: ("Q5_K", 256, 176),
    14: ("Q6_K", 256, 210),
    15: ("Q8_K", 256, 292),
    16: ("IQ2_XXS", 256, 66),
    17: ("IQ2_XS", 256, 74),
    18: ("IQ3_XXS", 256, 98),
    19: ("IQ1_S", 256, 50),
    20: ("IQ4_NL", 32, 18),
    21: ("IQ3_S", 256, 110),
    22: ("IQ2_S", 256, 82),
    23: ("IQ4_XS", 256, 136),
    24: ("I8", 1, 1),
    25: ("I16", 1, 2),
    26: ("I32", 1, 4),
    27: ("I64", 1, 8),
    28: ("F64", 1, 8),
    29: ("IQ1_M", 256, 56),
    30: ("BF16", 1, 2),
    34: ("TQ1_0", 256, 54),
    35: ("TQ2_0", 256, 66),
    39: ("MXFP4", 32, 17),
    40: ("NVFP4", 64, 36),
    41: ("Q1_0", 128, 18),
}
_TYPE_IDS: dict[str, int] = {name: tid for tid, (name, _, _) in GGML_TYPES.items()}

# llama.cpp moves tensors matching this to host memory for --n-cpu-moe; "experts" here means the
# same set, so the planner's numbers match what the engine's override moves.
EXPERT_TENSOR_RE = re.compile(r"\.ffn_(up|down|gate)_exps")


class GgufError(HarmonicaError, ValueError):
    """The file is not a readable GGUF; the message says why in plain words."""


@dataclass(frozen=True)
class TensorInfo:
    """One tensor's header entry."""

    name: str
    shape: tuple[int, ...]  # ggml order: shape[0] is the row length
    type_name: str
    offset: int  # relative to the part's data section
    nbytes: int
    part: int = 0  # index into GgufInfo.parts


@dataclass(frozen=True)
class BlockBytes:
    """Bytes of one transformer block, by kind."""

    attention: int = 0  # attn_* (q/k/v/output, biases, sinks, norm)
    experts: int = 0  # ffn_{up,down,gate}_exps weights and biases: what --n-cpu-moe moves
    other: int = 0  # router (ffn_gate_inp), post-attention norm and anything else per block

    @property
    def total(self) -> int:
        return self.attention + self.experts + self.other

    @property
    def non_expert(self) -> int:
        return self.attention + self.other


@dataclass
class GgufInfo:
    """What the planner and the UI need to know about a model file."""

    path: Path
    parts: list[Path]
    file_size: int  # all parts together
    arch: str
    name: str
    n_layer: int
    n_embd: int
    n_head: int
    n_head_kv: int
    head_dim: int  # key length per head
    head_dim_v: int
    n_expert: int
    n_expert_used: int
    n_ff_exp: int
    n_vocab: int
    context_length: int
    sliding_window: int  # 0 = no sliding-window attention
    swa_layers: tuple[bool, ...]  # True where the layer uses the sliding window
    file_type: int | None
    has_chat_template: bool
    blocks: list[BlockBytes]
    embedding_bytes: int  # token_embd: llama.cpp always keeps it in host memory
    output_bytes: int  # output.weight + output_norm: on the GPU whenever n_gpu_layers >= 1
    extra_bytes: int  # any other non-block tensor
    tensor_types: dict[str, int] = field(default_factory=dict)  # type name -> bytes
    tensors: list[TensorInfo] = field(default_factory=list, repr=False)
    metadata: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def tensor_bytes(self) -> int:
        return sum(b.total for b in self.blocks) + self.embedding_bytes + self.output_bytes + self.extra_bytes

    @property
    def expert_bytes(self) -> int:
        return sum(b.experts for b in self.blocks)

    @property
    def full_attention_layers(self) -> list[int]:
        return [i for i, swa in enumerate(self.swa_layers) if not swa]

    @property
    def n_full_attention_layers(self) -> int:
        return len(self.full_attention_layers)


def split_parts(path: str | os.PathLike[str]) -> list[Path]:
    """All parts of a split model, given any part (a plain file gives itself).

    Raises GgufError if a part is missing.
    """
    p = Path(path)
    m = _SPLIT_RE.match(p.name)
    if not m:
        return [p]
    count = int(m.group("count"))
    width = len(m.group("no"))
    if count < 1:
        raise GgufError(f"{p.name}: the part count in the name is zero")
    parts = [p.with_name(f"{m.group('stem')}-{i:0{width}d}-of-{m.group('count')}.gguf") for i in range(1, count + 1)]
    missing = [q.name for q in parts if not q.is_file()]
    if missing:
        raise GgufError(
            f"{p.name} is part of a {count}-part model, but {', '.join(missing)} {'is' if len(missing) == 1 else 'are'} missing"
        )
    return parts


class _Cursor:
    """Sequential little-endian reads over a buffer, with clear errors at the end of the file."""

    def __init__(self, buf: Any, name: str) -> None:
        self.buf = buf
        self.pos = 0
        self.size = len(buf)
        self.name = name
        self.kept = 0  # array values materialised so far (see _MAX_VALUES_KEPT)

    def _need(self, n: int) -> None:
        if n < 0 or self.pos + n > self.size:
            raise GgufError(f"{self.name} is truncated or damaged (header ends early at byte {self.pos:,})")

    def unpack(self, fmt: str) -> Any:
        n = struct.calcsize(fmt)
        self._need(n)
        (value,) = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += n
        return value

    def u32(self) -> int:
        return int(self.unpack("<I"))

    def u64(self) -> int:
        return int(self.unpack("<Q"))

    def string(self) -> str:
        n = self.u64()
        self._need(n)
        raw = bytes(self.buf[self.pos : self.pos + n])
        self.pos += n
        return raw.decode("utf-8", errors="replace")

    def skip_strings(self, count: int) -> None:
        buf, pos, size = self.buf, self.pos, self.size
        unpack_from = struct.unpack_from
        for _ in range(count):
            if pos + 8 > size:
                self.pos = pos
                self._need(8)
            (n,) = unpack_from("<Q", buf, pos)
            pos += 8 + n
        if pos > size:
            self.pos = size
            self._need(1)
        self.pos = pos

    def value(self, vtype: int) -> Any:
        if vtype in _SCALAR_FORMATS:
            return self.unpack(_SCALAR_FORMATS[vtype])
        if vtype == _T_STRING:
            return self.string()
        if vtype == _T_ARRAY:
            etype = self.u32()
            count = self.u64()
            if etype == _T_ARRAY:
                # llama.cpp refuses arrays of arrays, and reading them recursively is how a crafted
                # header 50,000 levels deep would end in a RecursionError: the file is damaged.
                raise GgufError(
                    f"{self.name} is damaged: its metadata holds an array of arrays, which no GGUF model uses"
                )
            if count > _MAX_ARRAY_KEPT or self.kept + count > _MAX_VALUES_KEPT:
                if etype in _SCALAR_FORMATS:
                    n = struct.calcsize(_SCALAR_FORMATS[etype]) * count
                    self._need(n)
                    self.pos += n
                elif etype == _T_STRING:
                    self.skip_strings(count)
                else:
                    raise GgufError(f"{self.name} is damaged: unknown metadata array type {etype}")
                return _SkippedArray(count)
            self.kept += count
            return [self.value(etype) for _ in range(count)]
        raise GgufError(f"{self.name} is damaged: unknown metadata value type {vtype}")


@dataclass(frozen=True)
class _SkippedArray:
    """A long metadata array we did not read; only its length is known."""

    length: int

    def __len__(self) -> int:
        return self.length


@dataclass
class PartHeader:
    """The header of one GGUF file (one part of a split model): metadata and the tensor table."""

    metadata: dict[str, Any]
    tensors: list[TensorInfo]
    data_start: int
    data_end: int  # end of the furthest tensor's data: a complete file is at least this long
    size: int  # the file's size on disk

    @property
    def arch(self) -> str:
        value = self.metadata.get("general.architecture")
        return value if isinstance(value, str) else ""


def _tensor_nbytes(name: str, shape: tuple[int, ...], qtype: int, where: str) -> tuple[str, int]:
    known = GGML_TYPES.get(qtype)
    if known is None:
        raise GgufError(f"{where}: tensor {name} has an unknown type {qtype}")
    type_name, block, size = known
    n = 1
    for d in shape:
        n *= d
    if shape and shape[0] % block:
        raise GgufError(
            f"{where}: tensor {name} has rows of {shape[0]} values, not a multiple of {block} for {type_name}"
        )
    return type_name, n // block * size


def read_part(path: Path, index: int = 0) -> PartHeader:
    """Read one GGUF file's header (no weights); raises GgufError with a reason for people."""
    try:
        size = path.stat().st_size
        f = open(path, "rb")  # noqa: SIM115 -- closed by the reader that takes it over
    except OSError as e:
        raise GgufError(f"cannot open {path.name}: {e.strerror or e}") from None
    with f:
        if size < 24:
            raise GgufError(f"{path.name} is too small to be a GGUF model ({size} bytes)")
        try:
            buf: Any = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError) as e:
            raise GgufError(f"cannot read {path.name}: {e}") from None
        try:
            return _parse(buf, path.name, size, index)
        finally:
            buf.close()


def _parse(buf: Any, where: str, size: int, index: int) -> PartHeader:
    if bytes(buf[:4]) != GGUF_MAGIC:
        raise GgufError(f"{where} is not a GGUF model file (it does not start with 'GGUF')")
    c = _Cursor(buf, where)
    c.pos = 4
    version = c.u32()
    if version in (1,):
        raise GgufError(f"{where} uses GGUF version 1, which is too old; download a current file")
    if version not in (2, 3):
        if version & 0xFFFF == 0 and version >> 16 in (2, 3):
            raise GgufError(f"{where} is a big-endian GGUF, which this app cannot run")
        raise GgufError(f"{where} has an unknown GGUF version {version}")
    n_tensors = c.u64()
    n_kv = c.u64()
    # Each entry takes at least a few bytes; absurd counts mean garbage, not a huge model.
    if n_tensors > 1_000_000 or n_kv > 1_000_000:
        raise GgufError(f"{where} is damaged (its header claims {n_tensors:,} tensors and {n_kv:,} metadata entries)")
    metadata: dict[str, Any] = {}
    for _ in range(n_kv):
        key = c.string()
        vtype = c.u32()
        metadata[key] = c.value(vtype)
    tensors: list[TensorInfo] = []
    for _ in range(n_tensors):
        name = c.string()
        n_dims = c.u32()
        if n_dims > 8:
            raise GgufError(f"{where}: tensor {name} claims {n_dims} dimensions; the file is damaged")
        shape = tuple(c.u64() for _ in range(n_dims))
        qtype = c.u32()
        offset = c.u64()
        type_name, nbytes = _tensor_nbytes(name, shape, qtype, where)
        tensors.append(TensorInfo(name, shape, type_name, offset, nbytes, index))
    align = metadata.get("general.alignment", DEFAULT_ALIGNMENT)
    if not isinstance(align, int) or align <= 0:
        align = DEFAULT_ALIGNMENT
    data_start = c.pos + (-c.pos % align)
    data_end = data_start + max((t.offset + t.nbytes for t in tensors), default=0)
    return PartHeader(metadata, tensors, data_start, data_end, size)


def _int(meta: dict[str, Any], key: str, default: int = 0) -> int:
    value = meta.get(key, default)
    if isinstance(value, list):  # per-layer arrays (e.g. head counts): the planner uses the maximum
        value = max((v for v in value if isinstance(v, (int, float))), default=default)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return default
    return int(value)


def _swa_layers(meta: dict[str, Any], arch: str, n_layer: int, window: int) -> tuple[bool, ...]:
    """Which layers use the sliding window, by llama.cpp's rule for gpt-oss.

    llama.cpp (llama_model_openai_moe::load_arch_hparams) sets a pattern of period 2, or the
    file's `{arch}.attention.sliding_window_pattern`, with dense_first=false: layer il slides
    when il % period < period - 1. With period 2 that is every even layer (0, 2, ...), so the
    odd layers hold full attention. An array-valued pattern lists each layer explicitly.
    """
    if window <= 0:
        return tuple(False for _ in range(n_layer))
    pattern = meta.get(f"{arch}.attention.sliding_window_pattern", 2)
    if isinstance(pattern, list) and len(pattern) == n_layer:
        return tuple(bool(v) for v in pattern)
    period = pattern if isinstance(pattern, int) and not isinstance(pattern, bool) else 2
    if period <= 0:
        return tuple(True for _ in range(n_layer))
    return tuple((il % period) < (period - 1) for il in range(n_layer))


_BLOCK_RE = re.compile(r"^blk\.(\d+)\.(.+)$")


def summarize_tensors(
    tensors: Iterable[TensorInfo], n_layer: int
) -> tuple[list[BlockBytes], int, int, int, dict[str, int]]:
    """Group tensor bytes by block and kind: (blocks, embedding, output, extra, bytes by type)."""
    attn = [0] * n_layer
    exps = [0] * n_layer
    other = [0] * n_layer
    embedding = output = extra = 0
    by_type: dict[str, int] = {}
    for t in tensors:
        by_type[t.type_name] = by_type.get(t.type_name, 0) + t.nbytes
        m = _BLOCK_RE.match(t.name)
        if m and int(m.group(1)) < n_layer:
            i, rest = int(m.group(1)), m.group(2)
            if EXPERT_TENSOR_RE.search(t.name):
                exps[i] += t.nbytes
            elif rest.startswith("attn_"):
                attn[i] += t.nbytes
            else:
                other[i] += t.nbytes
        elif t.name.startswith("token_embd"):
            embedding += t.nbytes
        elif t.name.startswith("output"):
            output += t.nbytes
        else:
            extra += t.nbytes
    blocks = [BlockBytes(attn[i], exps[i], other[i]) for i in range(n_layer)]
    return blocks, embedding, output, extra, by_type


def read_gguf_info(path: str | os.PathLike[str]) -> GgufInfo:
    """Read metadata and tensor sizes of a GGUF (all parts of a split model). Raises GgufError."""
    first = Path(path)
    if not first.exists():
        raise GgufError(f"{first} does not exist")
    if first.is_dir():
        raise GgufError(f"{first} is a folder, not a model file")
    parts = split_parts(first)
    read = [read_part(p, i) for i, p in enumerate(parts)]
    meta = dict(read[0].metadata)
    arch = meta.get("general.architecture")
    if not isinstance(arch, str):
        raise GgufError(f"{first.name} does not say which model architecture it holds")
    tensors = [t for part in read for t in part.tensors]
    n_layer = _int(meta, f"{arch}.block_count")
    n_head = _int(meta, f"{arch}.attention.head_count")
    n_embd = _int(meta, f"{arch}.embedding_length")
    head_dim = _int(meta, f"{arch}.attention.key_length", n_embd // n_head if n_head else 0)
    window = _int(meta, f"{arch}.attention.sliding_window")
    tokens = meta.get("tokenizer.ggml.tokens")
    n_vocab = len(tokens) if tokens is not None else 0
    if not n_vocab:
        emb = next((t for t in tensors if t.name == "token_embd.weight"), None)
        n_vocab = emb.shape[1] if emb and len(emb.shape) > 1 else 0
    blocks, embedding, output, extra, by_type = summarize_tensors(tensors, n_layer)
    ftype = meta.get("general.file_type")
    return GgufInfo(
        path=first,
        parts=parts,
        file_size=sum(p.size for p in read),
        arch=arch,
        name=str(meta.get("general.name") or first.stem),
        n_layer=n_layer,
        n_embd=n_embd,
        n_head=n_head,
        n_head_kv=_int(meta, f"{arch}.attention.head_count_kv", n_head),
        head_dim=head_dim,
        head_dim_v=_int(meta, f"{arch}.attention.value_length", head_dim),
        n_expert=_int(meta, f"{arch}.expert_count"),
        n_expert_used=_int(meta, f"{arch}.expert_used_count"),
        n_ff_exp=_int(meta, f"{arch}.expert_feed_forward_length", _int(meta, f"{arch}.feed_forward_length")),
        n_vocab=n_vocab,
        context_length=_int(meta, f"{arch}.context_length"),
        sliding_window=window,
        swa_layers=_swa_layers(meta, arch, n_layer, window),
        file_type=ftype if isinstance(ftype, int) else None,
        has_chat_template=isinstance(meta.get("tokenizer.chat_template"), str),
        blocks=blocks,
        embedding_bytes=embedding,
        output_bytes=output,
        extra_bytes=extra,
        tensor_types=by_type,
        tensors=tensors,
        metadata={k: v for k, v in meta.items() if not isinstance(v, _SkippedArray)},
    )


def validate_gguf(path: str | os.PathLike[str], *, archs: tuple[str, ...] = SUPPORTED_ARCHS) -> tuple[bool, str]:
    """Check a model file before loading: GGUF magic, a supported architecture, nothing cut off.

    Returns (ok, reason); the reason is written for people.
    """
    p = Path(path)
    try:
        parts = split_parts(p)
        read = [read_part(q, i) for i, q in enumerate(parts)]
    except GgufError as e:
        return False, str(e)
    arch = read[0].metadata.get("general.architecture")
    if arch not in archs:
        shown = f"'{arch}'" if isinstance(arch, str) else "an unknown architecture"
        return False, f"{p.name} holds {shown}, not {' or '.join(archs)}"
    for q, part in zip(parts, read, strict=False):
        if part.data_end > part.size:
            missing = part.data_end - part.size
            return False, (
                f"{q.name} is incomplete: {missing:,} bytes of weights are missing "
                f"({part.size:,} of {part.data_end:,} bytes); download it again"
            )
        if not part.tensors:
            return False, f"{q.name} holds no weights"
    n_split = read[0].metadata.get("split.count")
    if isinstance(n_split, int) and n_split != len(parts):
        return False, f"{p.name} says the model has {n_split} parts, but its file name says {len(parts)}"
    return True, "ok"


def _type_bytes(type_name: str, shape: tuple[int, ...]) -> int:
    return _tensor_nbytes("t", shape, _TYPE_IDS[type_name], "shape")[1]


def gpt_oss_tensors(
    *,
    n_layer: int,
    n_embd: int,
    n_head: int,
    n_head_kv: int,
    head_dim: int,
    n_expert: int,
    n_ff_exp: int,
    n_vocab: int,
    expert_type: str = "MXFP4",
    dense_type: str = "Q8_0",
) -> list[TensorInfo]:
    """The tensor list of a gpt-oss GGUF of the given shape (names, shapes and sizes, no data).

    Matches the published ggml-org MXFP4 files: experts MXFP4, the other matrices Q8_0, norms,
    biases, sinks and the router F32 (the 20b comes to 12.10 GB, the published size; F16 matrices
    would give 13.8 GB).
    """
    q_dim, kv_dim = n_head * head_dim, n_head_kv * head_dim
    spec: list[tuple[str, tuple[int, ...], str]] = [
        ("token_embd.weight", (n_embd, n_vocab), dense_type),
        ("output_norm.weight", (n_embd,), "F32"),
        ("output.weight", (n_embd, n_vocab), dense_type),
    ]
    for i in range(n_layer):
        b = f"blk.{i}."
        spec += [
            (b + "attn_norm.weight", (n_embd,), "F32"),
            (b + "post_attention_norm.weight", (n_embd,), "F32"),
            (b + "attn_q.weight", (n_embd, q_dim), dense_type),
            (b + "attn_q.bias", (q_dim,), "F32"),
            (b + "attn_k.weight", (n_embd, kv_dim), dense_type),
            (b + "attn_k.bias", (kv_dim,), "F32"),
            (b + "attn_v.weight", (n_embd, kv_dim), dense_type),
            (b + "attn_v.bias", (kv_dim,), "F32"),
            (b + "attn_output.weight", (q_dim, n_embd), dense_type),
            (b + "attn_output.bias", (n_embd,), "F32"),
            (b + "attn_sinks.weight", (n_head,), "F32"),
            (b + "ffn_gate_inp.weight", (n_embd, n_expert), "F32"),
            (b + "ffn_gate_inp.bias", (n_expert,), "F32"),
            (b + "ffn_gate_exps.weight", (n_embd, n_ff_exp, n_expert), expert_type),
            (b + "ffn_gate_exps.bias", (n_ff_exp, n_expert), "F32"),
            (b + "ffn_up_exps.weight", (n_embd, n_ff_exp, n_expert), expert_type),
            (b + "ffn_up_exps.bias", (n_ff_exp, n_expert), "F32"),
            (b + "ffn_down_exps.weight", (n_ff_exp, n_embd, n_expert), expert_type),
            (b + "ffn_down_exps.bias", (n_embd, n_expert), "F32"),
        ]
    out: list[TensorInfo] = []
    offset = 0
    for name, shape, tname in spec:
        nbytes = _type_bytes(tname, shape)
        out.append(TensorInfo(name, shape, tname, offset, nbytes))
        offset += nbytes + (-nbytes % DEFAULT_ALIGNMENT)
    return out


# Shapes of the published models (config.json of openai/gpt-oss-20b and -120b).
GPT_OSS_20B_SHAPE: dict[str, int] = dict(
    n_layer=24,
    n_embd=2880,
    n_head=64,
    n_head_kv=8,
    head_dim=64,
    n_expert=32,
    n_expert_used=4,
    n_ff_exp=2880,
    n_vocab=201088,
    context_length=131072,
    sliding_window=128,
)
GPT_OSS_120B_SHAPE: dict[str, int] = dict(GPT_OSS_20B_SHAPE, n_layer=36, n_expert=128)


def info_for_shape(
    name: str, shape: dict[str, int] | None = None, *, expert_type: str = "MXFP4", dense_type: str = "Q8_0"
) -> GgufInfo:
    """A GgufInfo computed from a model's shape, for planning before the file is on disk."""
    sh = dict(GPT_OSS_20B_SHAPE if shape is None else shape)
    n_layer = sh["n_layer"]
    tensors = gpt_oss_tensors(
        n_layer=n_layer,
        n_embd=sh["n_embd"],
        n_head=sh["n_head"],
        n_head_kv=sh["n_head_kv"],
        head_dim=sh["head_dim"],
        n_expert=sh["n_expert"],
        n_ff_exp=sh["n_ff_exp"],
        n_vocab=sh["n_vocab"],
        expert_type=expert_type,
        dense_type=dense_type,
    )
    blocks, embedding, output, extra, by_type = summarize_tensors(tensors, n_layer)
    window = sh.get("sliding_window", 128)
    total = sum(t.nbytes for t in tensors)
    return GgufInfo(
        path=Path(name),
        parts=[],
        file_size=total + 12 * 1024 * 1024,  # + tokenizer and metadata
        arch="gpt-oss",
        name=name,
        n_layer=n_layer,
        n_embd=sh["n_embd"],
        n_head=sh["n_head"],
        n_head_kv=sh["n_head_kv"],
        head_dim=sh["head_dim"],
        head_dim_v=sh["head_dim"],
        n_expert=sh["n_expert"],
        n_expert_used=sh["n_expert_used"],
        n_ff_exp=sh["n_ff_exp"],
        n_vocab=sh["n_vocab"],
        context_length=sh.get("context_length", 131072),
        sliding_window=window,
        swa_layers=_swa_layers({}, "gpt-oss", n_layer, window),
        file_type=None,
        has_chat_template=True,
        blocks=blocks,
        embedding_bytes=embedding,
        output_bytes=output,
        extra_bytes=extra,
        tensor_types=by_type,
        tensors=tensors,
    )
