"""Issue 13 item 3: no file in scratch can block or fool the app, and an imported chat cannot point at host files.

Sandboxed code controls its scratch folder; an imported chat is a file from anyone. Every trap a
reader can fall into is tried: FIFOs (opening one blocks), device nodes, sockets, symlinks and hard
links to host files, a folder swapped for a symlink, `..`, oversize files, and image entries that are
host paths, file: URIs, SVG (which can load files) or bytes that are not the image they claim.
"""

from __future__ import annotations

import base64
import os
import socket
import stat
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from app.core import paths
from app.core.tools.local import ToolError, read_picked_file

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="FIFOs and device nodes are POSIX")

PNG = (
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00\x1f\x15\xc4\x89"
    b"\x00\x00\x00\rIDATx\x9cc\xf8\x0f\x00\x00\x01\x01\x00\x05\x18\xd8N\x00\x00\x00\x00IEND\xaeB`\x82"
)
PNG_URI = "data:image/png;base64," + base64.b64encode(PNG).decode()


def _within(seconds: float, fn: Callable[[], Any]) -> tuple[bool, Any]:
    """(finished in time, what fn returned or raised); a blocked fn is left behind as a daemon thread."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - the test looks at it
            box["value"] = exc

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(seconds)
    return not t.is_alive(), box.get("value")


def _unblock(fifo: Path) -> None:
    """Open the FIFO for writing so a reader stuck on it (the code before the fix) can go on."""
    try:
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        os.close(fd)
    except OSError:
        pass


@pytest.fixture
def scratch() -> Path:
    s = paths.scratch_root() / "0123456789abcdef0123456789abcdef"
    s.mkdir(parents=True)
    return s


@pytest.fixture
def host_secret(tmp_path: Path) -> Path:
    secret = tmp_path / "id_rsa"
    secret.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nsecret\n")
    return secret


def test_picking_a_fifo_is_refused_without_blocking(scratch: Path) -> None:
    fifo = scratch / "notes.txt"
    os.mkfifo(fifo)
    try:
        done, got = _within(5, lambda: read_picked_file(fifo))
        assert done, "reading a FIFO blocked the tool loop"
        assert isinstance(got, ToolError) and "FIFO" in str(got)
    finally:
        _unblock(fifo)


def test_picking_traps_in_scratch_is_refused(scratch: Path, host_secret: Path, tmp_path: Path) -> None:
    traps: dict[str, Path] = {}
    traps["symlink to a host file"] = scratch / "report.txt"
    traps["symlink to a host file"].symlink_to(host_secret)
    try:
        os.link(host_secret, scratch / "hard.txt")
        traps["hard link to a host file"] = scratch / "hard.txt"
    except OSError:
        pass
    (scratch / "sub").symlink_to(tmp_path)
    traps["a folder that is a symlink"] = scratch / "sub" / host_secret.name
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(scratch / "s.txt"))
    traps["a socket"] = scratch / "s.txt"
    if os.geteuid() == 0:
        os.mknod(scratch / "zero.txt", stat.S_IFCHR | 0o666, os.makedev(1, 5))
        traps["a device"] = scratch / "zero.txt"
    try:
        for what, trap in traps.items():
            done, got = _within(5, lambda t=trap: read_picked_file(t))  # type: ignore[misc]
            assert done, f"{what}: blocked"
            assert isinstance(got, ToolError), f"{what}: read as {str(got)[:60]!r}"
            assert "secret" not in str(got)
    finally:
        sock.close()


def test_a_users_own_symlink_outside_scratch_is_still_read(tmp_path: Path, host_secret: Path) -> None:
    link = tmp_path / "notes-link.txt"
    link.symlink_to(host_secret)
    assert "secret" in read_picked_file(link)  # the user picked it: only scratch is under suspicion


def test_the_safe_reader_refuses_every_trap(scratch: Path, host_secret: Path, tmp_path: Path) -> None:
    from app.core.tools.safe_files import UnsafeFileError, read_regular_file

    (scratch / "ok.png").write_bytes(PNG)
    assert read_regular_file(scratch / "ok.png", limit=1024, inside=scratch) == PNG
    assert read_regular_file("ok.png", limit=1024, inside=scratch) == PNG
    os.mkfifo(scratch / "fifo.png")
    (scratch / "link.png").symlink_to(host_secret)
    (scratch / "dir").symlink_to(tmp_path)
    (scratch / "big.png").write_bytes(PNG + b"\0" * 4096)
    cases = {
        "fifo": scratch / "fifo.png",
        "symlink": scratch / "link.png",
        "through a symlinked folder": scratch / "dir" / host_secret.name,
        "dot-dot": scratch / ".." / ".." / host_secret.name,
        "outside": host_secret,
        "too big": scratch / "big.png",
    }
    for what, p in cases.items():
        done, got = _within(5, lambda p=p: read_regular_file(p, limit=1024, inside=scratch))  # type: ignore[misc]
        assert done, what
        assert isinstance(got, (UnsafeFileError, OSError)), f"{what}: {got!r}"
    _unblock(scratch / "fifo.png")


def test_stored_images_are_bytes_or_files_in_scratch_only(scratch: Path, host_secret: Path) -> None:
    from app.core.tools.safe_files import load_image

    root = paths.scratch_root()
    (scratch / "fig.png").write_bytes(PNG)
    os.mkfifo(scratch / "hang.png")
    outside_png = host_secret.with_suffix(".png")
    outside_png.write_bytes(PNG)
    (scratch / "host.png").symlink_to(outside_png)
    assert load_image(PNG_URI, root) == (PNG, "image/png")
    assert load_image(str(scratch / "fig.png"), root) == (PNG, "image/png")  # a chat from an earlier version
    for entry in (
        str(outside_png),
        str(scratch / "host.png"),
        f"file://{outside_png}",
        "data:image/svg+xml;base64," + base64.b64encode(b"<svg><image href='file:///etc/passwd'/></svg>").decode(),
        "data:image/png;base64," + base64.b64encode(b"/etc/passwd").decode(),
        "data:image/jpeg;base64," + base64.b64encode(PNG).decode(),
    ):
        assert load_image(entry, root) is None, entry
    done, got = _within(5, lambda: load_image(str(scratch / "hang.png"), root))
    assert done and got is None
    _unblock(scratch / "hang.png")


def test_imported_chats_keep_only_embedded_images(tmp_path: Path, host_secret: Path) -> None:
    from app.core.export import EXPORT_FORMAT, import_json
    from app.core.store import Store

    hostile = [
        str(host_secret),
        "/etc/passwd",
        f"file://{host_secret}",
        "../../../../etc/hosts",
        "~/.ssh/id_rsa",
        "data:image/svg+xml;base64," + base64.b64encode(b"<svg/>").decode(),
        "data:image/png;base64," + base64.b64encode(b"not a png").decode(),
        "data:text/html;base64," + base64.b64encode(b"<script>").decode(),
        PNG_URI,
    ]
    run = {"recipient": "python", "arguments": "plot()", "kind": "python", "status": "done", "images": hostile}
    doc = {
        "format": EXPORT_FORMAT,
        "version": 1,
        "conversations": [
            {
                "title": "imported",
                "messages": [
                    {"id": 1, "parent": None, "role": "user", "content": "plot"},
                    {"id": 2, "parent": 1, "role": "assistant", "content": "", "tool_calls": [{"recipient": "python"}]},
                    {
                        "id": 3,
                        "parent": 2,
                        "role": "tool",
                        "content": "ok",
                        "tool_name": "python",
                        "extra": {"tool_run": run},
                    },
                ],
            }
        ],
    }
    store = Store.open(tmp_path / "chats.sqlite3")
    try:
        (cid,) = import_json(store, doc)
        rows = store.conversation_messages(cid)
        tool = next(r for r in rows if r.role == "tool")
        assert tool.extra["tool_run"]["images"] == [PNG_URI]
    finally:
        store.close()
