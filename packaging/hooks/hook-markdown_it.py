"""PyInstaller hook: markdown-it-py with all its rules, presets and helpers (all pure Python, small)."""

from PyInstaller.utils.hooks import collect_submodules

# Presets and rule modules are imported by name from tables; collect them all so that a preset or
# plugin the app starts using later works frozen without editing the spec.
hiddenimports = collect_submodules("markdown_it", filter=lambda name: not name.startswith("markdown_it.cli"))
