"""PyInstaller hook: huggingface_hub's lazily imported submodules, without its CLI and ML-framework glue."""

# huggingface_hub's __init__ resolves most public names (scan_cache_dir, hf_hub_download, ...) on
# first attribute access through importlib, which static analysis cannot follow: collect the
# submodules explicitly. The CLI, the framework mixins (torch, tensorflow, fastai, keras) and the
# webhooks server (gradio, fastapi) are never used by the app and would drag in huge optional
# dependencies if present in the build environment.

from PyInstaller.utils.hooks import collect_data_files, collect_submodules

_SKIP = (
    "huggingface_hub.cli",
    "huggingface_hub.commands",
    "huggingface_hub.serialization._torch",
    "huggingface_hub.serialization._tensorflow",
    "huggingface_hub.fastai_utils",
    "huggingface_hub.keras_mixin",
    "huggingface_hub._webhooks_server",
    "huggingface_hub._tensorboard_logger",
    "huggingface_hub._hot_reload",
    "huggingface_hub.inference._mcp",
)

hiddenimports = collect_submodules("huggingface_hub", filter=lambda name: not name.startswith(_SKIP))
hiddenimports += ["hf_xet"]  # Xet transfers for real Hub repos (imported by huggingface_hub on demand)
# Model-card templates (repocard.py reads them with importlib.resources).
datas = collect_data_files("huggingface_hub", includes=["templates/*"])
excludedimports = ["torch", "tensorflow", "keras", "fastai", "gradio", "fastapi", "safetensors", "mcp", "InquirerPy"]
