"""Test-wide setup: headless Qt, no user data touched, shared fixtures."""

from __future__ import annotations

import os

# Qt must never need a display in tests; set before any Qt import.
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
# Tests never reach the real Hugging Face; download tests start their own loopback server.
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_DISABLE_XET", "1")

import pytest


@pytest.fixture(autouse=True)
def _isolated_user_dirs(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Point every platform data/config/cache dir at a temp folder so tests never touch the user's."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HARMONICA_HOME", str(home))
    monkeypatch.setenv("XDG_DATA_HOME", str(home / "data"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / "config"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / "cache"))
    monkeypatch.setenv("HF_HOME", str(home / "hf"))


# --- Tiny gpt-oss models (tests/fixtures/gguf_factory.py) ------------------------------------------
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random-weight gpt-oss GGUF with the chat template, written once per test session."""
    from tests.fixtures.gguf_factory import write_gpt_oss_gguf

    return write_gpt_oss_gguf(tmp_path_factory.mktemp("models") / "tiny-gpt-oss.gguf")


@pytest.fixture
def tiny_model_factory(tmp_path: Path) -> Callable[..., Path]:
    """Write variants: `tiny_model_factory(name="x.gguf", n_layer=3, ...)` → Path in tmp_path."""
    from tests.fixtures.gguf_factory import write_gpt_oss_gguf

    def make(name: str = "variant.gguf", **shape: object) -> Path:
        return write_gpt_oss_gguf(tmp_path / name, **shape)  # type: ignore[arg-type]

    return make
