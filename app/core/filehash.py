"""SHA-256 of model files, computed once in the background and cached by path, size and mtime."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from app.core import paths
from app.core.fsutil import Sha256Reader, atomic_write

CHUNK = 8 * 1024 * 1024
CACHE_FILE = "file-sha256.json"
_lock = threading.Lock()


@dataclass(frozen=True)
class HashProgress:
    """Bytes hashed so far of `total`."""

    done: int
    total: int

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 1.0


@dataclass(frozen=True)
class HashDone:
    """The finished digest (hex)."""

    path: str
    sha256: str


def _key(path: str | Path) -> str | None:
    """path|size|mtime_ns: a file replaced or modified in place gets a new key."""
    try:
        p = Path(path).resolve()
        st = p.stat()
    except OSError:
        return None
    return f"{p}|{st.st_size}|{st.st_mtime_ns}"


def _wait_while_paused(pause: threading.Event | None, cancel: threading.Event | None) -> bool:
    """Wait while `pause` is set; False when `cancel` says to stop instead."""
    if cancel is not None and cancel.is_set():
        return False
    while pause is not None and pause.is_set():
        if cancel is not None and cancel.wait(0.1):
            return False
        if cancel is None:
            time.sleep(0.1)
    return True


def _cache_path() -> Path:
    return paths.cache_dir() / CACHE_FILE


def _read_cache() -> dict[str, str]:
    try:
        data = json.loads(_cache_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return (
        {k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, str)} if isinstance(data, dict) else {}
    )


def cached_sha256(path: str | Path) -> str | None:
    """The digest of `path` if it was computed before for this exact size and mtime."""
    key = _key(path)
    if key is None:
        return None
    with _lock:
        return _read_cache().get(key)


def _store(path: str | Path, digest: str) -> None:
    key = _key(path)
    if key is None:
        return
    with _lock:
        cache = _read_cache()
        # Drop entries for files that are gone or changed, so the cache never grows without bound.
        cache = {k: v for k, v in cache.items() if _key(k.rsplit("|", 2)[0]) == k}
        cache[key] = digest
        try:
            atomic_write(_cache_path(), json.dumps(cache, indent=1))
        except OSError:
            pass  # a read-only cache only costs a recomputation


def hash_events(
    path: str | Path,
    *,
    cancel: threading.Event | None = None,
    pause: threading.Event | None = None,
    progress_every_s: float = 0.25,
) -> Iterator[HashProgress | HashDone]:
    """Hash `path`, yielding HashProgress now and then and HashDone at the end (cached for next time).

    A cached digest is returned at once. While `pause` is set the work waits (an experiment is
    measuring speed and must not share the disk and CPU); `cancel` stops it without a result.
    """
    p = Path(path)
    hit = cached_sha256(p)
    if hit is not None:
        yield HashDone(str(p), hit)
        return
    key_before = _key(p)
    total = p.stat().st_size
    done = 0
    last = 0.0
    if not _wait_while_paused(pause, cancel):
        return
    reader = Sha256Reader(p, CHUNK)
    for n in reader:
        done += n
        now = time.monotonic()
        if now - last >= progress_every_s:
            last = now
            yield HashProgress(done, total)
        if not _wait_while_paused(pause, cancel):
            return
    digest = reader.hexdigest
    if _key(p) == key_before:  # the file did not change while it was read
        _store(p, digest)
    yield HashProgress(total, total)
    yield HashDone(str(p), digest)
