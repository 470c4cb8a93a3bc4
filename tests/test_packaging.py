"""Packaging inputs: the app icons per OS, the desktop entry, and the installer recipes' references."""

from __future__ import annotations

import ast
import configparser
import re
import struct
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ICONS = ROOT / "resources" / "icons" / "app"


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", path
    return struct.unpack(">II", data[16:24])


@pytest.mark.parametrize("size", [16, 24, 32, 48, 64, 128, 256, 512])
def test_png_icon_sizes(size: int) -> None:
    assert _png_size(ICONS / f"harmonica-{size}.png") == (size, size)


def test_windows_icon_has_the_shell_sizes() -> None:
    data = (ICONS / "harmonica.ico").read_bytes()
    reserved, kind, count = struct.unpack("<HHH", data[:6])
    assert (reserved, kind) == (0, 1)
    sizes = {(data[6 + 16 * i] or 256) for i in range(count)}  # 0 means 256
    assert {16, 24, 32, 48, 256} <= sizes


def test_macos_icon_has_retina_sizes() -> None:
    data = (ICONS / "harmonica.icns").read_bytes()
    assert data[:4] == b"icns" and struct.unpack(">I", data[4:8])[0] == len(data)
    kinds, off = set(), 8
    while off < len(data):
        kind, length = data[off : off + 4], struct.unpack(">I", data[off + 4 : off + 8])[0]
        kinds.add(kind.decode("ascii"))
        off += length
    assert {"ic10", "ic09", "ic08"} <= kinds  # 1024 (512@2x), 512, 256


def test_desktop_entry() -> None:
    entry = configparser.ConfigParser(interpolation=None)
    entry.optionxform = str  # type: ignore[assignment,method-assign]
    entry.read(ROOT / "resources" / "harmonica.desktop", encoding="utf-8")
    d = entry["Desktop Entry"]
    assert d["Type"] == "Application" and d["Name"] == "Harmonica" and d["Terminal"] == "false"
    assert d["Exec"].split()[0] == "harmonica"  # /usr/bin/harmonica from the .deb
    assert d["Icon"] == "harmonica" and d["StartupWMClass"] == "harmonica"  # matches setDesktopFileName


def test_recipes_point_at_files_that_exist() -> None:
    spec = (ROOT / "packaging" / "harmonica.spec").read_text()
    assert 'collect_submodules("app")' in spec  # the app is collected wholesale, never by module name
    nsi = (ROOT / "packaging" / "windows" / "harmonica.nsi").read_text()
    for rel in re.findall(r'"(\.\.\\\.\.\\[^"]+)"', nsi):
        assert (ROOT / "packaging" / "windows" / Path(*rel.split("\\"))).resolve().exists(), rel
    for hook in ("llama_cpp", "huggingface_hub", "gguf", "markdown_it", "mdit_py_plugins"):
        assert (ROOT / "packaging" / "hooks" / f"hook-{hook}.py").exists()
    assert (ROOT / "packaging" / "macos" / "entitlements.plist").exists()


def _spec_excludes() -> set[str]:
    spec = (ROOT / "packaging" / "harmonica.spec").read_text()
    block = spec.split("excludes = [", 1)[1].split("\n]", 1)[0]
    return set(re.findall(r'"([\w.]+)"', block))


def _imported_modules() -> set[str]:
    found: set[str] = set()
    for path in (ROOT / "app").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                found.add(node.module)
    return found


def test_the_bundle_excludes_nothing_the_app_imports() -> None:
    """An excluded package the app imports (even lazily, e.g. the API server's uvicorn) is a feature
    that works from source and breaks only in the installed app."""
    excluded = _spec_excludes()
    # The sandbox kernel runs in its own interpreter and imports matplotlib only when user code
    # does; the bundle's python tool then says it has no matplotlib.
    allowed = {"matplotlib"}

    def is_excluded(module: str) -> bool:
        parts = module.split(".")
        return any(".".join(parts[:n]) in excluded for n in range(1, len(parts) + 1))

    assert sorted(m for m in _imported_modules() if is_excluded(m) and m.split(".")[0] not in allowed) == []
