"""Tests for app.core.gguf_info: metadata, per-block tensor sizes, split files, validation."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from gguf import GGMLQuantizationType, GGUFWriter

from app.core.gguf_info import (
    GPT_OSS_120B_SHAPE,
    GgufError,
    gpt_oss_tensors,
    info_for_shape,
    read_gguf_info,
    split_parts,
    validate_gguf,
)
from tests.fixtures.gguf_factory import build_vocab, write_gpt_oss_gguf, write_llama_gguf

SHAPE = dict(n_layer=4, n_embd=64, n_head=4, n_head_kv=2, head_dim=16, n_expert=4, n_expert_used=2, n_ff_exp=64)


@pytest.fixture(scope="module")
def model4(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_gpt_oss_gguf(
        tmp_path_factory.mktemp("g") / "m4.gguf", **SHAPE, n_ctx_train=8192, sliding_window=128, name="four"
    )


def test_reads_hyperparameters(model4: Path) -> None:
    info = read_gguf_info(model4)
    assert info.arch == "gpt-oss"
    assert info.name == "four"
    assert (info.n_layer, info.n_embd, info.n_head, info.n_head_kv, info.head_dim, info.head_dim_v) == (
        4,
        64,
        4,
        2,
        16,
        16,
    )
    assert (info.n_expert, info.n_expert_used, info.n_ff_exp) == (4, 2, 64)
    assert info.context_length == 8192
    assert info.sliding_window == 128
    assert info.has_chat_template
    assert info.file_size == model4.stat().st_size
    assert info.parts == [model4]
    assert info.n_vocab > 256


def test_sliding_window_layers_follow_llama_cpp(model4: Path) -> None:
    # llama.cpp: period 2, dense_first=false -> even layers slide, odd layers hold full attention.
    info = read_gguf_info(model4)
    assert info.swa_layers == (True, False, True, False)
    assert info.full_attention_layers == [1, 3]
    assert info.n_full_attention_layers == 2


def test_tensor_bytes_by_block_and_kind(model4: Path) -> None:
    info = read_gguf_info(model4)
    e, f, x, h, hk, d = 64, 64, 4, 4, 2, 16
    f32 = 4
    experts = 3 * (e * f * x) * f32 + (f * x + f * x + e * x) * f32  # weights + biases
    attention = (e * h * d + 2 * e * hk * d + h * d * e) * f32 + (h * d + 2 * hk * d + e + h + e) * f32
    other = (e + e * x + x) * f32  # post-attention norm + router weight and bias
    assert len(info.blocks) == 4
    for b in info.blocks:
        assert b.experts == experts
        assert b.attention == attention
        assert b.other == other
    assert info.embedding_bytes == e * info.n_vocab * f32
    assert info.output_bytes == e * info.n_vocab * f32 + e * f32
    assert info.extra_bytes == 0
    assert info.tensor_bytes == sum(t.nbytes for t in info.tensors)
    # The data section is everything but the header: sizes must add up to within the padding.
    assert 0 < info.file_size - info.tensor_bytes < 200_000
    assert info.tensor_types == {"F32": info.tensor_bytes}


def test_mxfp4_and_q8_sizes(tiny_model_factory: Callable[..., Path]) -> None:
    path = tiny_model_factory("mx.gguf", n_layer=2, n_embd=64, n_ff_exp=64, expert_type="MXFP4", dense_type="Q8_0")
    info = read_gguf_info(path)
    # MXFP4: 17 bytes per 32 values (4.25 bits); Q8_0: 34 bytes per 32 values.
    assert info.tensor_types["MXFP4"] == 2 * 3 * 64 * 64 * 4 * 17 // 32
    assert info.embedding_bytes == 64 * info.n_vocab * 34 // 32


def test_synthetic_info_matches_a_written_file(tiny_model_factory: Callable[..., Path]) -> None:
    shape = dict(n_layer=3, n_embd=64, n_head=4, n_head_kv=2, head_dim=16, n_expert=4, n_expert_used=2, n_ff_exp=64)
    path = tiny_model_factory("syn.gguf", **shape, expert_type="MXFP4", dense_type="Q8_0")
    real = read_gguf_info(path)
    syn = info_for_shape("syn", dict(shape, n_vocab=real.n_vocab, context_length=4096, sliding_window=128))
    assert syn.blocks == real.blocks
    assert (syn.embedding_bytes, syn.output_bytes, syn.extra_bytes) == (
        real.embedding_bytes,
        real.output_bytes,
        real.extra_bytes,
    )
    assert syn.swa_layers == real.swa_layers


def test_real_20b_and_120b_shapes() -> None:
    info = info_for_shape("gpt-oss-20b")
    # Published file: 12.11 GB (11.27 GiB); experts ~10.2 GB, about 0.42 GB per block.
    assert info.tensor_bytes == pytest.approx(12.10e9, rel=0.005)
    assert info.expert_bytes == pytest.approx(10.18e9, rel=0.005)
    assert info.blocks[0].experts == pytest.approx(0.424e9, rel=0.01)
    assert info.n_full_attention_layers == 12
    big = info_for_shape("gpt-oss-120b", GPT_OSS_120B_SHAPE)
    assert big.tensor_bytes / 2**30 == pytest.approx(59.0, rel=0.01)  # "≈ 59 GiB"


def _write_full_20b_header(path: Path) -> int:
    """A GGUF with the real 20b header (201,088 tokens, 446,189 merges, every tensor entry) whose
    data section is a sparse hole of the real size; returns the full file size."""
    w = GGUFWriter(path, "gpt-oss")
    w.add_block_count(24)
    w.add_embedding_length(2880)
    w.add_head_count(64)
    w.add_head_count_kv(8)
    w.add_key_length(64)
    w.add_value_length(64)
    w.add_expert_count(32)
    w.add_expert_used_count(4)
    w.add_context_length(131072)
    w.add_sliding_window(128)
    vocab = build_vocab(201088)
    w.add_tokenizer_model("gpt2")
    w.add_token_list(vocab.tokens)
    w.add_token_types(vocab.types)
    w.add_token_merges([f"a{i} b{i}" for i in range(446189)])
    tensors = gpt_oss_tensors(
        n_layer=24, n_embd=2880, n_head=64, n_head_kv=8, head_dim=64, n_expert=32, n_ff_exp=2880, n_vocab=201088
    )
    for t in tensors:
        w.add_tensor_info(
            t.name,
            tuple(reversed(t.shape)),
            np.dtype(np.float32),
            t.nbytes,
            raw_dtype=GGMLQuantizationType[t.type_name],
        )
    w.write_header_to_file(path)
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    w.close()
    header = path.stat().st_size
    return header + (-header % 32) + sum(t.nbytes + (-t.nbytes % 32) for t in tensors)


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="needs sparse files")
def test_full_size_20b_header(tmp_path: Path) -> None:
    # gguf.GGUFReader needs ~10 s for a 201,088-token vocabulary here; this reader skips the
    # vocabulary (its speed is measured in bench/core_speed.py).
    path = tmp_path / "gpt-oss-20b-mxfp4.gguf"
    size = _write_full_20b_header(path)
    os.truncate(path, size)
    assert size == pytest.approx(12.11e9, rel=0.001)  # the published file's size
    info = read_gguf_info(path)
    assert info.n_vocab == 201088
    assert info.file_size == size
    assert info.blocks == info_for_shape("x").blocks
    assert validate_gguf(path) == (True, "ok")
    os.truncate(path, size - 4096)
    ok, reason = validate_gguf(path)
    assert not ok and "4,096 bytes of weights are missing" in reason
    path.unlink()  # a 12 GB sparse file confuses disk-usage tools if left behind


def test_split_parts_are_found_and_summed(tmp_path: Path) -> None:
    a = write_gpt_oss_gguf(tmp_path / "m-00001-of-00002.gguf", n_layer=2)
    b = write_gpt_oss_gguf(tmp_path / "m-00002-of-00002.gguf", n_layer=2, seed=1)
    assert split_parts(b) == [a, b]
    info = read_gguf_info(a)
    assert info.parts == [a, b]
    assert info.file_size == a.stat().st_size + b.stat().st_size
    assert {t.part for t in info.tensors} == {0, 1}
    one = read_gguf_info(write_gpt_oss_gguf(tmp_path / "single.gguf", n_layer=2))
    assert info.tensor_bytes == 2 * one.tensor_bytes
    assert validate_gguf(a) == (True, "ok")


def test_missing_split_part_is_reported(tmp_path: Path) -> None:
    a = write_gpt_oss_gguf(tmp_path / "m-00001-of-00003.gguf", n_layer=1)
    with pytest.raises(GgufError, match=r"m-00002-of-00003\.gguf, m-00003-of-00003\.gguf are missing"):
        read_gguf_info(a)
    ok, reason = validate_gguf(a)
    assert not ok and "3-part model" in reason


def test_validate_rejects_truncated_file(model4: Path, tmp_path: Path) -> None:
    cut = tmp_path / "cut.gguf"
    data = model4.read_bytes()
    cut.write_bytes(data[:-1000])
    ok, reason = validate_gguf(cut)
    assert not ok
    assert "incomplete" in reason and "bytes of weights are missing" in reason
    assert "download it again" in reason


def test_header_cut_short_raises_clear_error(model4: Path, tmp_path: Path) -> None:
    cut = tmp_path / "head.gguf"
    cut.write_bytes(model4.read_bytes()[:300])
    with pytest.raises(GgufError, match="truncated or damaged"):
        read_gguf_info(cut)
    assert validate_gguf(cut)[0] is False


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"not a model at all, just some text that is long enough", "not a GGUF"),
        (b"GGUF" + (1).to_bytes(4, "little") + bytes(40), "version 1"),
        (b"GGUF" + (7).to_bytes(4, "little") + bytes(40), "unknown GGUF version"),
        (b"GGUF" + (3 << 16).to_bytes(4, "little") + bytes(40), "big-endian"),
        (b"GGUF" + (3).to_bytes(4, "little") + (10**12).to_bytes(8, "little") + bytes(40), "damaged"),
        (b"GGUF", "too small"),
    ],
)
def test_bad_files(tmp_path: Path, content: bytes, message: str) -> None:
    p = tmp_path / "bad.gguf"
    p.write_bytes(content)
    with pytest.raises(GgufError, match=message):
        read_gguf_info(p)
    ok, reason = validate_gguf(p)
    assert not ok and message in reason


def test_missing_and_folder(tmp_path: Path) -> None:
    with pytest.raises(GgufError, match="does not exist"):
        read_gguf_info(tmp_path / "nope.gguf")
    with pytest.raises(GgufError, match="folder"):
        read_gguf_info(tmp_path)
    assert validate_gguf(tmp_path / "nope.gguf")[0] is False


def test_validate_rejects_other_architectures(tmp_path: Path) -> None:
    p = write_llama_gguf(tmp_path / "llama.gguf")
    ok, reason = validate_gguf(p)
    assert not ok
    assert "'llama'" in reason and "gpt-oss" in reason
    assert read_gguf_info(p).arch == "llama"  # readable, just not supported


def test_validate_accepts_good_file(model4: Path) -> None:
    assert validate_gguf(model4) == (True, "ok")


def _write_custom(path: Path, pattern: object) -> Path:
    w = GGUFWriter(path, "gpt-oss")
    w.add_block_count(4)
    w.add_embedding_length(32)
    w.add_head_count(2)
    w.add_sliding_window(64)
    if isinstance(pattern, list):
        w.add_array("gpt-oss.attention.sliding_window_pattern", pattern)
    else:
        w.add_uint32("gpt-oss.attention.sliding_window_pattern", int(pattern))  # type: ignore[call-overload]
    w.add_tensor("blk.0.attn_q.weight", np.zeros((32, 32), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_sliding_window_pattern_key_is_honoured(tmp_path: Path) -> None:
    assert read_gguf_info(_write_custom(tmp_path / "p3.gguf", 3)).swa_layers == (True, True, False, True)
    explicit = read_gguf_info(_write_custom(tmp_path / "pa.gguf", [False, True, True, False]))
    assert explicit.swa_layers == (False, True, True, False)
    # Missing head_count_kv defaults to head_count; missing key_length to n_embd / n_head.
    assert (explicit.n_head_kv, explicit.head_dim) == (2, 16)


def test_no_sliding_window_means_all_full(tmp_path: Path) -> None:
    p = write_llama_gguf(tmp_path / "l.gguf", n_layer=3)
    info = read_gguf_info(p)
    assert info.sliding_window == 0
    assert info.swa_layers == (False, False, False)


def test_copy_is_read_identically(model4: Path, tmp_path: Path) -> None:
    # The reader only depends on bytes, not on the name.
    other = tmp_path / "renamed.bin"
    shutil.copy(model4, other)
    assert read_gguf_info(other).blocks == read_gguf_info(model4).blocks
