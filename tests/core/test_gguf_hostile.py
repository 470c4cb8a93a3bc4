"""Crafted GGUF headers (as an attacker would write them) give a clear "damaged" message, never a crash."""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path

import pytest

from app.core.engine import EngineError, read_gguf_header
from app.core.gguf_info import GgufError, read_gguf_info, read_part, validate_gguf
from app.core.models import ModelLibrary, validate_model_file

_ARRAY, _UINT8, _STRING, _UINT32 = 9, 0, 8, 4


def _string(text: str) -> bytes:
    raw = text.encode()
    return struct.pack("<Q", len(raw)) + raw


def _header(kv: bytes, n_kv: int = 1) -> bytes:
    return b"GGUF" + struct.pack("<IQQ", 3, 0, n_kv) + kv


def nested_arrays(depth: int) -> bytes:
    """One key whose value is an array of an array of … (depth levels) of one uint8."""
    levels = struct.pack("<IQ", _ARRAY, 1) * (depth - 1) + struct.pack("<IQ", _UINT8, 1) + b"\x07"
    return _header(_string("general.evil") + struct.pack("<I", _ARRAY) + levels)


def wide_nested(width: int) -> bytes:
    """An array of `width` arrays of `width` uint8: nested, but shallow."""
    inner = struct.pack("<IQ", _UINT8, width) + b"\x01" * width
    return _header(_string("general.evil") + struct.pack("<IIQ", _ARRAY, _ARRAY, width) + inner * width)


def many_short_arrays(n_kv: int, length: int) -> bytes:
    """Many keys each holding a short uint32 array: millions of values to materialise in all."""
    body = b"".join(
        _string(f"k{i}") + struct.pack("<IIQ", _ARRAY, _UINT32, length) + b"\x00" * (4 * length) for i in range(n_kv)
    )
    return _header(body, n_kv)


HOSTILE: dict[str, Callable[[], bytes]] = {
    "nested-50000-deep": lambda: nested_arrays(50_000),
    "nested-2-deep": lambda: nested_arrays(2),
    "nested-wide": lambda: wide_nested(64),
}


@pytest.mark.parametrize("make", list(HOSTILE.values()), ids=list(HOSTILE))
def test_nested_arrays_are_a_damaged_file_for_every_reader(tmp_path: Path, make: Callable[[], bytes]) -> None:
    path = tmp_path / "evil.gguf"
    path.write_bytes(make())
    with pytest.raises(GgufError, match=r"evil\.gguf is damaged"):
        read_part(path)
    with pytest.raises(GgufError, match="damaged"):
        read_gguf_info(path)
    ok, reason = validate_gguf(path)
    assert not ok and "damaged" in reason and "recursion" not in reason.lower()
    ok, reason = validate_model_file(path)
    assert not ok and "damaged" in reason and "recursion" not in reason.lower()
    with pytest.raises(EngineError, match="damaged"):
        read_gguf_header(path)  # the engine's own file check before llama.cpp sees the file


def test_damaged_file_in_a_model_folder_is_listed_as_refused(tmp_path: Path) -> None:
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "evil.gguf").write_bytes(nested_arrays(50_000))
    from app.core.models import Source

    library = ModelLibrary(
        tmp_path / "registry.json", hf_cache_dir=tmp_path / "hf", search_dirs=[(Source.LLAMA_CPP, folder)]
    )
    found = library.discover()
    assert not found.models
    assert [r.path.name for r in found.refused] == ["evil.gguf"] and "damaged" in found.refused[0].reason


def test_millions_of_short_array_values_are_not_materialised(tmp_path: Path) -> None:
    path = tmp_path / "wide.gguf"
    path.write_bytes(many_short_arrays(400, 4096))  # 1.6 M values, 6.5 MB
    header = read_part(path)
    kept = sum(len(v) for v in header.metadata.values() if isinstance(v, list))
    assert kept <= 1_000_000  # the rest is skipped (length known), not built as Python ints
    assert all(len(v) == 4096 for v in header.metadata.values())
