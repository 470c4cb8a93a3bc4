"""PyInstaller hook: every mdit-py-plugins plugin (small, pure Python), so any plugin the app enables works frozen."""

from PyInstaller.utils.hooks import collect_data_files, collect_submodules

hiddenimports = collect_submodules("mdit_py_plugins")
datas = collect_data_files("mdit_py_plugins")
