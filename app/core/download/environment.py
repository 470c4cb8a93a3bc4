"""What this computer and its settings allow a download: offline mode, Xet, free disk space; sizes in words."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from app.core.units import format_bytes

# Keep this much free beyond the download itself: a full disk breaks more than the download.
DISK_MARGIN_BYTES = 300_000_000


def human_bytes(n: float) -> str:
    """12_109_566_560 → '11.3 GiB': the app's one convention for sizes (app/core/units.py)."""
    return format_bytes(n)


def is_offline() -> bool:
    """HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) as set now, or as huggingface_hub read it at import."""
    from huggingface_hub import constants

    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(name, "").strip().upper() in {"1", "ON", "YES", "TRUE"}:
            return True
    return bool(constants.HF_HUB_OFFLINE)


def xet_available() -> bool:
    """hf_xet installed and not disabled (HF_HUB_DISABLE_XET read now, not only at import)."""
    from huggingface_hub import constants

    if os.environ.get("HF_HUB_DISABLE_XET", "").strip().upper() in {"1", "ON", "YES", "TRUE"}:
        return False
    if constants.HF_HUB_DISABLE_XET:
        return False
    try:
        import hf_xet  # noqa: F401
    except ImportError:
        return False
    return True


def _default_disk_free(path: Path) -> int:
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return shutil.disk_usage(probe).free
