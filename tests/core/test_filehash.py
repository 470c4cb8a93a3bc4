"""Model-file SHA-256: correct, cached by path+size+mtime, pausable and cancellable."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from pathlib import Path

from app.core import filehash
from app.core.filehash import HashDone, HashProgress, cached_sha256, hash_events


def _file(tmp_path: Path, size: int = 3 * 1024 * 1024 + 17) -> Path:
    p = tmp_path / "model.gguf"
    p.write_bytes(os.urandom(size))
    return p


def test_digest_is_right_and_cached_for_the_same_file(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(filehash, "CHUNK", 1024 * 1024)
    p = _file(tmp_path)
    want = hashlib.sha256(p.read_bytes()).hexdigest()
    assert cached_sha256(p) is None
    events = list(hash_events(p, progress_every_s=0))
    assert events[-1] == HashDone(str(p), want)
    steps = [e for e in events if isinstance(e, HashProgress)]
    assert [e.done for e in steps] == sorted(e.done for e in steps) and steps[-1].fraction == 1.0 and len(steps) >= 4
    assert cached_sha256(p) == want
    assert list(hash_events(p)) == [HashDone(str(p), want)]  # answered from the cache, nothing read


def test_a_changed_file_is_hashed_again(tmp_path: Path) -> None:
    p = _file(tmp_path, 1000)
    first = list(hash_events(p))[-1]
    p.write_bytes(os.urandom(1000))  # same size, new content and mtime
    os.utime(p, ns=(time.time_ns(), time.time_ns() + 5_000_000_000))
    assert cached_sha256(p) is None
    second = list(hash_events(p))[-1]
    assert isinstance(first, HashDone) and isinstance(second, HashDone) and first.sha256 != second.sha256
    assert second.sha256 == hashlib.sha256(p.read_bytes()).hexdigest()


def test_cancel_gives_no_result_and_pause_holds_the_work(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(filehash, "CHUNK", 64 * 1024)
    p = _file(tmp_path, 2 * 1024 * 1024)
    cancel = threading.Event()
    cancel.set()
    assert list(hash_events(p, cancel=cancel)) == [] and cached_sha256(p) is None

    pause = threading.Event()
    pause.set()
    out: list[object] = []
    t = threading.Thread(target=lambda: out.extend(hash_events(p, pause=pause, cancel=threading.Event())))
    t.start()
    time.sleep(0.3)
    assert out == [] and t.is_alive()  # paused before the first chunk
    pause.clear()
    t.join(10)
    assert isinstance(out[-1], HashDone) and out[-1].sha256 == hashlib.sha256(p.read_bytes()).hexdigest()
