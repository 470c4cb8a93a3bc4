"""PyInstaller hook: llama-cpp-python's shared libraries, under llama_cpp/lib with their exact names."""

# llama_cpp opens lib/libllama.so (llama.dll, libllama.dylib) by path; libllama then finds ggml by
# its soname through RUNPATH $ORIGIN, and a GGML_BACKEND_DL build finds its backend plugins
# (libggml-cpu-haswell.so, libggml-vulkan.so, ggml-cuda.dll, ...) by listing that folder. So every
# file must keep its name and folder. The Linux wheel also holds byte-identical copies under other
# names (libggml.so, libggml.so.0, libggml.so.0.25.3): only the names something really opens are
# collected, because a second copy loaded under another name would be a second ggml with its own
# backend registry (see app/core/llama_ext.py).

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

from PyInstaller.depend.bindepend import get_imports
from PyInstaller.utils.hooks import get_package_paths

_, _pkg_dir = get_package_paths("llama_cpp")
LIB = Path(_pkg_dir) / "lib"
DEST = os.path.join("llama_cpp", "lib")

# Multimodal (mtmd/llava) is not used by Harmonica.
_UNUSED = re.compile(r"^(lib)?(mtmd|llava)\b")

if sys.platform == "win32":
    _ROOT = "llama.dll"
    _PLUGIN = re.compile(r"^ggml-[\w.-]+\.dll$", re.I)  # on Windows every ggml DLL is one file
elif sys.platform == "darwin":
    _ROOT = "libllama.dylib"
    _PLUGIN = re.compile(r"^libggml-[\w.-]+\.so$")  # CMake MODULE libraries end in .so on macOS
else:
    _ROOT = "libllama.so"
    _PLUGIN = re.compile(r"^libggml-[\w.-]+\.so$")


def _is_plugin(path: Path) -> bool:
    """A dynamically loaded ggml backend (not an unversioned copy of a linked library)."""
    if _UNUSED.match(path.name) or not _PLUGIN.match(path.name):
        return False
    if sys.platform.startswith("linux"):
        # libggml-cpu.so next to libggml-cpu.so.0 is a copy of a linked library (non-DL build);
        # a real plugin (CMake MODULE) has no versioned sibling.
        return not (path.parent / (path.name + ".0")).exists()
    return True


def _closure(roots: list[Path]) -> list[Path]:
    """The roots plus every library in LIB they need, found through their import tables."""
    seen: dict[str, Path] = {}
    todo = list(roots)
    while todo:
        p = todo.pop()
        if p.name in seen:
            continue
        seen[p.name] = p
        for name, full in get_imports(str(p), search_paths=[str(LIB)]):
            cand = LIB / os.path.basename(name)
            if cand.exists() and not _UNUSED.match(cand.name):
                todo.append(cand)
            elif full and Path(full).resolve().parent == LIB.resolve():
                todo.append(Path(full))
    return sorted(seen.values())


if not (LIB / _ROOT).exists():
    raise SystemExit(f"hook-llama_cpp: {LIB / _ROOT} is missing; is llama-cpp-python installed?")

_roots = [LIB / _ROOT] + [p for p in sorted(LIB.iterdir()) if p.is_file() and _is_plugin(p)]
binaries = [(str(p), DEST) for p in _closure(_roots)]

# Not used by the app, and they pull in optional dependencies (fastapi, uvicorn, PIL, ...).
excludedimports = ["llama_cpp.server", "llama_cpp.mtmd_cpp", "llama_cpp.llava_cpp"]
