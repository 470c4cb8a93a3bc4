"""What of the host a kernel is given: the import paths and folders it may read, and who it runs as."""

from __future__ import annotations

import os
import sys
from pathlib import Path

NOBODY = (65534, 65534)


def _site_paths() -> list[str]:
    """Import-path entries the kernel may need (packages), never the app's or the user's folders."""
    prefixes = {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}
    out: list[str] = []
    for entry in sys.path:
        if not entry:
            continue
        real = os.path.realpath(entry)
        if not os.path.exists(real):
            continue
        site_like = "site-packages" in real or "dist-packages" in real or real.endswith(".zip")
        under_prefix = any(real == p or real.startswith(p + os.sep) for p in prefixes)
        if (site_like or under_prefix) and real not in out:
            out.append(real)
    return out


def _read_paths() -> list[str]:
    """Where sandboxed code may read when Landlock holds: system folders and the Python installation."""
    roots = [
        "/usr",
        "/lib",
        "/lib32",
        "/lib64",
        "/libx32",
        "/bin",
        "/sbin",
        "/etc",
        "/opt",
        "/proc",
        "/sys",
        "/dev",
        "/nix",
        "/gnu",
        "/snap",
        "/var/cache/fontconfig",
    ]
    for p in (sys.prefix, sys.base_prefix, sys.exec_prefix, os.path.dirname(os.path.realpath(sys.executable))):
        roots.append(os.path.realpath(p))
    roots.append(os.path.dirname(os.path.abspath(sys.executable)))  # a venv's bin/ (sys.executable in the kernel)
    roots += _site_paths()
    return [r for r in dict.fromkeys(roots) if os.path.exists(r)]


def _world_readable(path: str | Path) -> bool:
    """Whether any user can reach and read `path` (every parent searchable, the path readable)."""
    p = Path(os.path.realpath(path))
    try:
        if not os.stat(p).st_mode & 0o004:
            return False
        return all(os.stat(parent).st_mode & 0o001 for parent in p.parents)
    except OSError:
        return False
