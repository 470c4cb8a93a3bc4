"""Tests for app.core.paths: app folders honour HARMONICA_HOME; the HF cache is resolved like huggingface_hub does."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.core import paths


def test_harmonica_home_holds_all_app_folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HARMONICA_HOME", str(tmp_path / "h"))
    assert paths.data_dir() == tmp_path / "h" / "data" and paths.data_dir().is_dir()
    assert paths.config_dir() == tmp_path / "h" / "config"
    assert paths.cache_dir(ensure=False) == tmp_path / "h" / "cache"
    assert not (tmp_path / "h" / "cache").exists()


def test_without_harmonica_home_platform_dirs_are_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HARMONICA_HOME", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    assert paths.app_home() is None
    assert paths.data_dir(ensure=False) == tmp_path / "xdg-data" / "Harmonica"


def test_hf_cache_follows_environment_at_call_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    assert paths.hf_hub_cache_dir() == tmp_path / "hf" / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "explicit"))
    assert paths.hf_hub_cache_dir() == tmp_path / "explicit"
    monkeypatch.delenv("HF_HUB_CACHE")
    monkeypatch.delenv("HF_HOME")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert paths.hf_hub_cache_dir() == tmp_path / "xdg" / "huggingface" / "hub"


def test_llama_cpp_cache_honours_llama_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLAMA_CACHE", str(tmp_path / "lc"))
    assert paths.llama_cpp_cache_dir() == tmp_path / "lc"
    monkeypatch.delenv("LLAMA_CACHE")
    assert paths.llama_cpp_cache_dir().name == "llama.cpp"


def test_tools_and_scratch_folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HARMONICA_HOME", str(tmp_path / "h"))
    assert paths.tools_dir(ensure=False) == tmp_path / "h" / "config" / "tools"
    assert not (tmp_path / "h" / "config" / "tools").exists()
    assert paths.tools_dir().is_dir()
    assert paths.scratch_root() == tmp_path / "h" / "data" / "scratch" and paths.scratch_root().is_dir()
