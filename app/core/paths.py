"""Where Harmonica keeps its data, config and cache, and where the Hugging Face cache lives."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

APP_NAME = "Harmonica"

# Everything is resolved at call time, never at import: tests (and the user) may change the
# environment after the module is imported, and HARMONICA_HOME must isolate all app data.


def resources_dir() -> Path:
    """The resources/ folder (icons, style sheet, problem sets): next to the package in a checkout,
    inside the package folder in a bundle."""
    here = Path(__file__).resolve()
    for candidate in (here.parents[2] / "resources", here.parents[1] / "resources"):
        if candidate.is_dir():
            return candidate
    return here.parents[2] / "resources"


def app_home() -> Path | None:
    """The single folder that holds all app data when HARMONICA_HOME is set, else None."""
    value = os.environ.get("HARMONICA_HOME", "").strip()
    return Path(value).expanduser() if value else None


def _resolve(kind: str, ensure: bool) -> Path:
    home = app_home()
    if home is not None:
        path = home / kind
    elif kind == "data":
        path = Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))
    elif kind == "config":
        path = Path(platformdirs.user_config_dir(APP_NAME, appauthor=False))
    else:
        path = Path(platformdirs.user_cache_dir(APP_NAME, appauthor=False))
    if ensure:
        path.mkdir(parents=True, exist_ok=True)
    return path


def data_dir(ensure: bool = True) -> Path:
    """Per-user data folder (model registry, download state, conversations)."""
    return _resolve("data", ensure)


def config_dir(ensure: bool = True) -> Path:
    """Per-user configuration folder."""
    return _resolve("config", ensure)


def cache_dir(ensure: bool = True) -> Path:
    """Per-user cache folder (things that can be rebuilt)."""
    return _resolve("cache", ensure)


def hf_hub_cache_dir() -> Path:
    """The standard huggingface_hub cache folder, resolved the same way huggingface_hub does.

    huggingface_hub computes this once at import time; resolving it again here honours
    HF_HUB_CACHE / HF_HOME changes made after import (tests, or the user's settings).
    """
    explicit = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if explicit:
        return Path(os.path.expandvars(explicit)).expanduser()
    hf_home = os.environ.get("HF_HOME")
    if hf_home:
        return Path(os.path.expandvars(hf_home)).expanduser() / "hub"
    xdg_cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg_cache).expanduser() / "huggingface" / "hub"


def llama_cpp_cache_dir() -> Path:
    """llama.cpp's download cache (`-hf` flag): LLAMA_CACHE, else the platform's cache folder."""
    explicit = os.environ.get("LLAMA_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    return Path(platformdirs.user_cache_dir("llama.cpp", appauthor=False))


def tools_dir(ensure: bool = True) -> Path:
    """The folder where the user drops `.py` files of function tools (in the config folder, next to
    the settings: tools are configuration the user writes, not data the app produces)."""
    path = config_dir(ensure=ensure) / "tools"
    if ensure:
        path.mkdir(parents=True, exist_ok=True)
    return path


def scratch_root(ensure: bool = True) -> Path:
    """Parent of the per-conversation scratch folders of the python tool (files it writes, figures)."""
    path = data_dir(ensure=ensure) / "scratch"
    if ensure:
        path.mkdir(parents=True, exist_ok=True)
    return path
