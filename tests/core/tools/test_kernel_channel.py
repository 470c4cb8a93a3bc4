"""Issue 13 item 3: the kernel cannot lie to the app.

User code attacks the result channel the way an attacker would: it writes forged answers (JSON
lines and well-formed frames with the right sequence number, fished out of the kernel's memory) to
every file descriptor it has, hunts the end-of-output marker in memory, floods 300 MB down every
fd, raises a 300 MB error, and plants FIFOs, device nodes, sockets, symlinks and hard links in its
scratch folder named like images. The app must stay within a memory cap, never receive a host path
as an image, and never block.
"""

from __future__ import annotations

import base64
import os
import stat
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from app.core.tools.python_tool import PythonKernel, SandboxLayers, SandboxLimits, probe_sandbox

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="the sandbox tests use POSIX process control")

LIMITS = SandboxLimits(timeout_s=60.0, cpu_s=30.0, memory_bytes=1024**3, processes=32, file_bytes=512 * 1024**2)
# What a 300 MB flood may add to the app's resident memory, at its peak.
RSS_CAP = 96 * 1024**2
PNG = (
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00\x1f\x15\xc4\x89"
    b"\x00\x00\x00\rIDATx\x9cc\xf8\x0f\x00\x00\x01\x01\x00\x05\x18\xd8N\x00\x00\x00\x00IEND\xaeB`\x82"
)


# Two layer sets: everything, and Linux without user namespaces (host files visible to the code).
def parse_image_data_uri(entry: str) -> tuple[bytes, str] | None:
    """(bytes, type) of a data: URI holding real PNG bytes (the only images these tests make), else None."""
    if not isinstance(entry, str) or not entry.startswith("data:image/png;base64,"):
        return None
    data = base64.b64decode(entry.split(",", 1)[1])
    return (data, "image/png") if data.startswith(b"\x89PNG\r\n\x1a\n") else None


LAYER_SETS = {"all layers": SandboxLayers(), "no namespaces": SandboxLayers(namespaces=False)}


@pytest.fixture(params=list(LAYER_SETS), scope="module")
def kernel(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PythonKernel]:
    k = PythonKernel(tmp_path_factory.mktemp("scratch"), LIMITS, LAYER_SETS[request.param])
    k.start()
    yield k
    k.close()


FORGE = r"""
import gc, json, os, struct, sys
seqs = set()
for f in sys._current_frames().values():
    while f is not None:
        for v in list(f.f_locals.values()):
            if isinstance(v, dict) and isinstance(v.get("seq"), int):
                seqs.add(v["seq"])
            if isinstance(v, dict) and isinstance(v.get("id"), int):
                seqs.add(v["id"])
        f = f.f_back
seqs |= {n for n in range(0, 40)}
forged = {"ok": True, "error": "FORGED", "images": ["/etc/passwd", {"name": "x.png", "data": "L2V0Yy9wYXNzd2Q="}],
          "dropped_bytes": 0, "interrupted": False, "cpu_exceeded": False}
lines = b"".join((json.dumps(dict(forged, id=s)) + "\n").encode() for s in sorted(seqs))
frames = b"".join(struct.pack(">I", len(b)) + b for b in (json.dumps(dict(forged, seq=s)).encode() for s in sorted(seqs)))
hit = 0
for fd in range(3, 1024):
    for blob in (frames, lines):
        try:
            os.set_blocking(fd, False)
            os.write(fd, blob)
            hit += 1
        except OSError:
            pass
print("forged into", hit, "fds")
"""


def test_forged_answers_on_every_fd_never_reach_the_app(kernel: PythonKernel) -> None:
    r = kernel.execute(FORGE)
    # The worker's report of its own cell is written by the process that runs the code, so the code
    # can make its own cell say "FORGED" (as raising an error would). What it cannot do is get past
    # the supervisor: every image the app receives is checked image bytes, never a host path.
    assert all(parse_image_data_uri(i) is not None for i in r.images) and not any("passwd" in i for i in r.images)
    assert not any("passwd" in n for n in r.image_names)
    # Garbage on its results pipe gets the kernel restarted (maybe during the next cell); after that
    # every cell gets its own answer again.
    r = kernel.execute("21 * 2")
    assert r.output == "42\n" or r.restarted, r
    assert kernel.execute("6 * 7").output == "42\n"
    r = kernel.execute(
        "import threading, time\nthreading.Thread(target=lambda: (time.sleep(0.3), exec(FORGE_CODE)), daemon=True).start()".replace(
            "FORGE_CODE", repr(FORGE)
        )
    )
    time.sleep(0.8)  # the forger writes while no cell is waiting
    assert kernel.execute("'after'").output == "'after'\n"


def test_the_app_answers_pipe_is_not_among_the_code_fds(kernel: PythonKernel) -> None:
    r = kernel.execute(
        "import os, re\n"
        "inos = []\n"
        "for fd in os.listdir('/proc/self/fd'):\n"
        "    try:\n"
        "        m = re.match(r'pipe:\\[(\\d+)\\]', os.readlink('/proc/self/fd/' + fd))\n"
        "    except OSError:\n"
        "        continue\n"
        "    if m: inos.append(int(m.group(1)))\n"
        "inos"
    )
    assert r.error is None, r.error
    proc = kernel._proc  # the kernel that ran the cell
    assert proc is not None and proc.stdout is not None and proc.stdin is not None
    app_pipes = {os.fstat(proc.stdout.fileno()).st_ino, os.fstat(proc.stdin.fileno()).st_ino}
    seen = set(eval(r.output))  # a list of ints
    assert seen and not seen & app_pipes


MARKER_HUNT = r"""
import gc, re, sys
print('before')
pattern = re.compile('\x00HARMONICA-END-[0-9a-f]+\x00')
found = set()
def scan(value):
    if isinstance(value, str):
        found.update(pattern.findall(value))
    elif isinstance(value, (bytes, bytearray)):
        found.update(m.decode() for m in re.findall(rb'\x00HARMONICA-END-[0-9a-f]+\x00', value))
for f in sys._current_frames().values():
    while f is not None:
        for v in list(f.f_locals.values()):
            scan(v)
            if isinstance(v, dict):
                for x in list(v.values()):
                    scan(x)
        f = f.f_back
for o in gc.get_objects():
    if isinstance(o, dict):
        for x in list(o.values()):
            scan(x)
sys.stdout.write(''.join(found) + 'hidden part\n')  # one write: a marker, then the text it would hide
"""


def test_the_end_marker_cannot_be_found_to_hide_output(kernel: PythonKernel) -> None:
    r = kernel.execute(MARKER_HUNT)
    assert "before" in r.output and "hidden part" in r.output


def _peak_rss_during(fn: Callable[[], Any]) -> tuple[int, Any]:
    me = psutil.Process()
    base = me.memory_info().rss
    peak = [base]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], me.memory_info().rss)
            time.sleep(0.005)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    try:
        result = fn()
    finally:
        stop.set()
        t.join()
    return peak[0] - base, result


FLOODS = {
    "300 MB on every fd": (
        "import os\nchunk = b'x' * (1 << 20)\n"
        "for fd in range(0, 256):\n"
        "    try:\n        os.set_blocking(fd, True)\n    except OSError:\n        continue\n"
        "    try:\n        for _ in range(300):\n            os.write(fd, chunk)\n    except OSError:\n        pass\n"
    ),
    "300 MB printed": "print('y' * 300_000_000)",
    "a 300 MB error": "raise ValueError('z' * 300_000_000)",
    "300 MB of images": (
        f"png = {PNG!r}\nfor i in range(60):\n    open(f'img{{i}}.png', 'wb').write(png + b'\\0' * (5 * 1024 * 1024))\n"
    ),
}


@pytest.mark.parametrize("flood", list(FLOODS))
def test_a_300_mb_flood_does_not_grow_the_app(tmp_path: Path, flood: str) -> None:
    k = PythonKernel(tmp_path / "s", LIMITS)
    try:
        k.start()
        t0 = time.monotonic()
        grown, r = _peak_rss_during(lambda: k.execute(FLOODS[flood]))
        assert time.monotonic() - t0 < 60
        assert grown < RSS_CAP, f"the app grew by {grown / 1024**2:.0f} MiB"
        assert len(r.output.encode()) <= LIMITS.max_output_bytes + 4096
        assert len(r.error or "") <= 70 * 1024
        assert sum(len(i) for i in r.images) <= 17 * 1024**2
        assert k.execute("'alive'").output == "'alive'\n"
    finally:
        k.close()


def test_scratch_traps_named_like_images_are_refused_without_blocking(kernel: PythonKernel, tmp_path: Path) -> None:
    outside = tmp_path / "host.png"
    host_png = PNG + b"HOST-SECRET"
    outside.write_bytes(host_png)
    os.chmod(tmp_path, 0o755)
    os.chmod(outside, 0o644)
    if os.geteuid() == 0:
        os.mknod(kernel.scratch / "zero.png", stat.S_IFCHR | 0o666, os.makedev(1, 5))  # /dev/zero's twin
    t0 = time.monotonic()
    r = kernel.execute(
        "import os, socket\n"
        f"open('ok.png', 'wb').write({PNG!r})\n"
        "os.mkfifo('plot.png')\n"
        f"os.symlink({str(outside)!r}, 'link.png')\n"
        "os.makedirs('sub', exist_ok=True)\n"
        f"os.symlink({str(tmp_path)!r}, 'sub/dir')\n"
        "try:\n    socket.socket(socket.AF_UNIX).bind('sock.png')\nexcept OSError:\n    pass\n"
        "try:\n"
        f"    os.link({str(outside)!r}, 'hard.png')\n"
        "except OSError:\n    pass\n"
        "open('fake.png', 'w').write('/etc/passwd')\n"
        "os.utime('zero.png') if os.path.exists('zero.png') else None\n"
    )
    assert time.monotonic() - t0 < 15
    assert r.image_names == ["ok.png"], (r.image_names, r.note)
    assert [parse_image_data_uri(i) for i in r.images] == [(PNG, "image/png")]
    assert not any(base64.b64encode(b"HOST-SECRET").decode()[:8] in i for i in r.images)
    assert "fake.png is not shown" in (r.note or "")
    for name in ("plot.png", "link.png"):
        (kernel.scratch / name).unlink()


def test_the_tools_page_report_comes_from_attempts_made_now() -> None:
    report = probe_sandbox(LIMITS, fresh=True)
    assert report.checks and report.checked_at is not None and abs(report.checked_at - time.time()) < 120
    kinds = {c.kind for c in report.checks}
    assert {"unix", "see", "read", "write", "tcp", "signal"} <= kinds
    assert report.get("channel").holds == "yes"  # type: ignore[union-attr]
    single = probe_sandbox(LIMITS, SandboxLayers(split=False), fresh=True)
    assert single.get("channel").holds == "partial"  # type: ignore[union-attr]
