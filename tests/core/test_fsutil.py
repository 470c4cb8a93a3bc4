"""fsutil: atomic writes (old or new content, never half; fsync'ed), bounded reads, sha256 of a file."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from app.core import fsutil
from app.core.errors import HarmonicaError
from app.core.fsutil import FileTooLargeError, FileWriteError, Sha256Reader, atomic_write, read_bounded, sha256_file


def test_atomic_write_replaces_the_file_and_syncs_file_and_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[str] = []
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}") if Path("/proc/self/fd").is_dir() else str(fd))
        real_fsync(fd)

    monkeypatch.setattr(fsutil.os, "fsync", spy)
    target = tmp_path / "deep" / "settings.json"
    assert atomic_write(target, "first\n") == target
    atomic_write(target, b"second\r\n")
    assert target.read_bytes() == b"second\r\n"
    assert atomic_write(target, "Zürich\n").read_bytes() == "Zürich\n".encode()  # "\n" stays "\n"
    assert [p.name for p in target.parent.iterdir()] == ["settings.json"]  # no temporary file left
    if Path("/proc/self/fd").is_dir():
        assert str(target.parent) in synced  # the folder, so the rename survives a power cut
        assert any(Path(s).name.startswith(".settings.json.") for s in synced)  # the data before the rename


def test_a_failed_write_keeps_the_old_file_and_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "registry.json"
    atomic_write(target, "old")

    def disk_full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(fsutil.os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space"):
        atomic_write(target, "new")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["registry.json"]


def test_read_bounded_refuses_or_truncates_without_reading_everything(tmp_path: Path) -> None:
    f = tmp_path / "big.txt"
    f.write_bytes(b"x" * 1000)
    got = read_bounded(f, 1000)
    assert got.data == b"x" * 1000 and got.size == 1000 and not got.truncated
    with pytest.raises(FileTooLargeError) as e:
        read_bounded(f, 999)
    assert (e.value.size, e.value.limit) == (1000, 999) and isinstance(e.value, HarmonicaError)
    cut = read_bounded(f, 10, truncate=True)
    assert cut.data == b"x" * 10 and cut.size == 1000 and cut.truncated
    with pytest.raises(IsADirectoryError) as d:
        read_bounded(tmp_path, 10)
    assert d.value.strerror  # callers put it into words
    with pytest.raises(FileNotFoundError):
        read_bounded(tmp_path / "missing", 10)


def test_sha256_of_a_file_plain_and_block_by_block(tmp_path: Path) -> None:
    f = tmp_path / "model.gguf"
    data = os.urandom(300_000)
    f.write_bytes(data)
    want = hashlib.sha256(data).hexdigest()
    seen: list[int] = []
    assert sha256_file(f, on_bytes=seen.append, block=65536) == want
    assert sum(seen) == len(data) and len(seen) == 5
    assert sha256_file(f, should_stop=lambda: True, block=65536) is None
    reader = Sha256Reader(f, block=100_000)
    assert list(reader) == [100_000, 100_000, 100_000] and reader.hexdigest == want
    unread = Sha256Reader(f)
    with pytest.raises(RuntimeError):
        _ = unread.hexdigest


# --- writes that fail: a sentence naming the file and what to do; the old file is kept -------------


def test_a_full_disk_names_the_file_and_keeps_the_old_content(tmp_path: Path) -> None:
    from tests.fixtures.small_disk import small_disk

    with small_disk(tmp_path / "disk", "256k") as disk:
        target = disk.path / "tools.json"
        atomic_write(target, "old")
        disk.fill()
        with pytest.raises(FileWriteError) as e:
            atomic_write(target, "x" * 100_000)
        assert isinstance(e.value, OSError) and e.value.errno == 28  # callers catching OSError still do
        assert str(target) in str(e.value) and "is full: free up space" in str(e.value)
        assert "keeps what it had before" in str(e.value)
        assert target.read_text() == "old" and sorted(p.name for p in disk.path.iterdir()) == [
            "filler.bin",
            "tools.json",
        ]
        disk.free_up()
        atomic_write(target, "new")
        assert target.read_text() == "new"


def test_a_read_only_disk_names_the_folder(tmp_path: Path) -> None:
    from tests.fixtures.small_disk import small_disk

    with small_disk(tmp_path / "disk", "256k") as disk:
        target = disk.path / "models.json"
        atomic_write(target, "old")
        disk.remount("ro")
        with pytest.raises(FileWriteError, match="is read-only: make it writable") as e:
            atomic_write(target, "new")
        assert str(target) in str(e.value) and target.read_text() == "old"


def test_a_folder_in_the_way_is_said_so(tmp_path: Path) -> None:
    target = tmp_path / "settings.json"
    target.mkdir()
    with pytest.raises(FileWriteError, match="is a folder: move or rename it"):
        atomic_write(target, "{}")
    blocked = tmp_path / "file" / "settings.json"
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(FileWriteError, match="not a folder is in the way"):
        atomic_write(blocked, "{}")


def test_no_permission_as_an_unprivileged_user() -> None:
    from tests.fixtures.unprivileged import as_nobody, shared_folder

    target = shared_folder(owner=0, mode=0o755) / "tools.json"
    atomic_write(target, "old")

    def attempt() -> str:
        try:
            atomic_write(target, "new")
        except FileWriteError as exc:
            return str(exc)
        return "written"

    message = as_nobody(attempt)
    assert str(target) in message and "write permission on" in message and target.read_text() == "old"
