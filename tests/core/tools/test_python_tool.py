"""The python tool's sandboxed kernel: state, limits, and escape attempts that must all be contained."""

from __future__ import annotations

import base64
import re
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.core.tools.python_tool import PythonKernel, SandboxLayers, SandboxLimits, build_report, probe_sandbox

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="the sandbox tests use POSIX process control")

LIMITS = SandboxLimits(
    timeout_s=4.0, cpu_s=2.0, memory_bytes=1024**3, processes=32, file_bytes=1024**2, max_output_bytes=64 * 1024
)


@pytest.fixture(scope="module")
def kernel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PythonKernel]:
    k = PythonKernel(tmp_path_factory.mktemp("scratch"), LIMITS)
    k.start()
    yield k
    k.close()


def test_state_persists_and_last_expression_is_shown(kernel: PythonKernel) -> None:
    r = kernel.execute("x = 40\ny = x + 2\ny")
    assert (r.output, r.error, r.is_error) == ("42\n", None, False)
    assert kernel.execute("print(x + 1)").output == "41\n"
    assert kernel.execute("import math\nmath.sqrt(x + 9)").output == "7.0\n"
    assert kernel.execute("x = None\nx").model_text() == "(no output)"
    kernel.execute("x = 40")


def test_errors_are_tracebacks_of_the_cell(kernel: PythonKernel) -> None:
    r = kernel.execute("def f():\n    return 1 / 0\nf()")
    assert r.is_error and r.error is not None
    assert (
        'File "<cell' in r.error
        and "return 1 / 0" in r.error
        and r.error.rstrip().endswith("ZeroDivisionError: division by zero")
    )
    assert "sandbox_kernel" not in r.error  # the kernel's own frames are not shown
    r = kernel.execute("raise SystemExit(3)")
    assert "does not end the session" in (r.error or "")
    assert kernel.execute("x").output == "40\n"


def test_working_folder_is_the_scratch_folder(kernel: PythonKernel) -> None:
    r = kernel.execute("import os\nopen('notes.txt', 'w').write('hi')\nos.getcwd()")
    assert (kernel.scratch / "notes.txt").read_text() == "hi"
    report = kernel.report
    assert report is not None
    if report.layers.get("mnt_data"):
        assert r.output.strip() == "'/mnt/data'"  # the path the harmony python section tells the model about
        assert kernel.execute("open('/mnt/data/notes.txt').read()").output == "'hi'\n"


# --- escape attempts -------------------------------------------------------------------------------
def test_socket_is_refused(kernel: PythonKernel) -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    try:
        r = kernel.execute(
            f"import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=2)\nprint('CONNECTED')"
        )
        assert "CONNECTED" not in r.output and r.is_error
        assert "Network access is disabled" in (r.error or "") or "Errno" in (r.error or "")
        # a program the code starts is no better off (the namespace, not only the audit hook)
        report = kernel.report
        assert report is not None
        if report.holds("network"):
            r = kernel.execute(
                "import subprocess, sys\n"
                "p = subprocess.run([sys.executable, '-c', 'import socket; socket.create_connection((\"127.0.0.1\", "
                f'{port}), timeout=2); print("CONNECTED")\'], capture_output=True, text=True)\n'
                "print(p.returncode, p.stdout, p.stderr[-200:])"
            )
            assert "CONNECTED" not in r.output and ("Network is unreachable" in r.output or "Permission" in r.output), (
                r.output
            )
    finally:
        server.close()


def test_fork_bomb_is_contained(kernel: PythonKernel) -> None:
    t0 = time.monotonic()
    # Children that keep forking (bounded to 2**9 if nothing held), and a loop of sleepers.
    r = kernel.execute(
        "import os, time\n"
        "for _ in range(9):\n"
        "    try:\n"
        "        os.fork()\n"
        "    except OSError:\n"
        "        pass\n"
        "n = 0\n"
        "try:\n"
        "    while n < 400:\n"
        "        if os.fork() == 0:\n"
        "            time.sleep(30)\n"
        "            os._exit(0)\n"
        "        n += 1\n"
        "except OSError as e:\n"
        "    print('refused after', n, type(e).__name__)\n",
        timeout_s=20,
    )
    assert time.monotonic() - t0 < 20
    assert (
        "refused after" in r.output
        or "PermissionError" in (r.error or "")
        or "starting other programs" in (r.error or "").lower()
    )
    counts = [int(n) for n in re.findall(r"refused after (\d+)", r.output)]
    assert all(c < LIMITS.processes for c in counts)
    assert kernel.execute("x").output == "40\n"  # the kernel survived with its state


def test_allocating_10_gb_fails_cleanly(kernel: PythonKernel) -> None:
    r = kernel.execute("b = bytearray(10 * 1024**3)")
    assert r.error is not None and "MemoryError" in r.error and not r.restarted
    assert kernel.execute("x").output == "40\n"


def test_infinite_loop_hits_the_cpu_limit_and_keeps_state(kernel: PythonKernel) -> None:
    t0 = time.monotonic()
    r = kernel.execute("while True:\n    pass")
    assert time.monotonic() - t0 < LIMITS.timeout_s + 4
    assert r.cpu_exceeded or r.timed_out
    assert not r.restarted and kernel.execute("x").output == "40\n"


def test_sleeping_cell_times_out_and_keeps_state(kernel: PythonKernel) -> None:
    r = kernel.execute("import time\ntime.sleep(60)", timeout_s=1.0)
    assert r.timed_out and not r.restarted and "timed out after 1 seconds" in r.model_text()
    assert kernel.execute("x").output == "40\n"


def test_cell_that_ignores_interrupts_is_killed(tmp_path: Path) -> None:
    k = PythonKernel(tmp_path / "s", LIMITS)
    try:
        k.execute("y = 1")
        t0 = time.monotonic()
        r = k.execute(
            "import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True:\n    time.sleep(0.01)",
            timeout_s=1.0,
        )
        assert r.timed_out and r.restarted and "all variables were lost" in r.model_text()
        assert time.monotonic() - t0 < 10
        r = k.execute("'y' in globals()")
        assert r.output == "False\n"  # a fresh interpreter
    finally:
        k.close()


def test_cancel_interrupts(kernel: PythonKernel) -> None:
    cancel = threading.Event()
    threading.Timer(0.5, cancel.set).start()
    r = kernel.execute("import time\ntime.sleep(60)", cancel=cancel)
    assert "stopped by the user" in r.model_text() and not r.restarted


def test_writing_outside_scratch_is_refused(kernel: PythonKernel, tmp_path: Path) -> None:
    report = kernel.report
    assert report is not None
    if not report.holds("write"):
        pytest.skip("Landlock is not available here: writes outside scratch cannot be contained")
    target = tmp_path / "escape.txt"
    existing = tmp_path / "existing.txt"
    existing.write_text("keep me")
    r = kernel.execute(
        "import os\nresults = []\n"
        f"for action in (lambda: open({str(target)!r}, 'w').write('x'), lambda: open({str(existing)!r}, 'a').write('x'),\n"
        f"               lambda: os.remove({str(existing)!r}), lambda: os.mkdir({str(tmp_path / 'd')!r}),\n"
        f"               lambda: os.symlink('/etc/passwd', {str(tmp_path / 'l')!r}),\n"
        f"               lambda: os.rename('notes.txt', {str(tmp_path / 'moved.txt')!r})):\n"
        "    try:\n        action(); results.append('ALLOWED')\n    except OSError as e:\n        results.append(type(e).__name__)\n"
        "results"
    )
    assert "ALLOWED" not in r.output, r.output
    assert not target.exists() and existing.read_text() == "keep me" and not (tmp_path / "d").exists()
    assert not (tmp_path / "moved.txt").exists()


def test_other_processes_are_invisible(kernel: PythonKernel) -> None:
    report = kernel.report
    assert report is not None
    if not report.layers.get("own_proc"):
        pytest.skip("no PID namespace with its own /proc here")
    import os

    r = kernel.execute(f"import os\nos.path.exists('/proc/{os.getpid()}'), os.getpid()")
    assert r.output == "(False, 1)\n"
    assert report.holds("isolation") and "invisible" in report.get("isolation").detail  # type: ignore[union-attr]


def test_reading_private_files_is_refused(kernel: PythonKernel, tmp_path: Path) -> None:
    report = kernel.report
    assert report is not None
    if not report.holds("read"):
        pytest.skip("Landlock is not available here")
    secret = tmp_path / "secret.txt"
    secret.write_text("password")
    r = kernel.execute(f"open({str(secret)!r}).read()")
    # Refused by Landlock, or not even there (the minimal root has no host /tmp).
    assert "password" not in r.output and ("PermissionError" in (r.error or "") or "FileNotFound" in (r.error or ""))
    assert kernel.execute("import json, email, decimal\n'ok'").output == "'ok'\n"  # the standard library still loads


def test_file_size_limit(kernel: PythonKernel) -> None:
    r = kernel.execute("open('big.bin', 'wb').write(b'x' * (2 * 1024**2))")
    assert r.error is not None and ("File too large" in r.error or "EFBIG" in r.error or "OSError" in r.error)
    assert kernel.execute("x").output == "40\n"


def test_printing_100_mb_is_truncated(kernel: PythonKernel) -> None:
    t0 = time.monotonic()
    r = kernel.execute("print('x' * 100_000_000)")
    assert time.monotonic() - t0 < 10
    assert len(r.output.encode()) <= LIMITS.max_output_bytes
    assert r.truncated_bytes >= 100_000_000 - LIMITS.max_output_bytes
    assert "output truncated" in r.model_text()
    # C-level writes to fd 1 are capped by the app too
    r = kernel.execute("import os\nfor _ in range(100):\n    os.write(1, b'y' * 100_000)")
    assert len(r.output) <= LIMITS.max_output_bytes and r.truncated_bytes >= 10_000_000 - LIMITS.max_output_bytes
    assert kernel.execute("print('after')").output == "after\n"  # no leftovers in the next cell


def test_saved_images_and_matplotlib_figures(kernel: PythonKernel) -> None:
    png = (
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00\x1f\x15\xc4\x89"
        b"\x00\x00\x00\rIDATx\x9cc\xf8\x0f\x00\x00\x01\x01\x00\x05\x18\xd8N\x00\x00\x00\x00IEND\xaeB`\x82"
    )
    r = kernel.execute(f"open('dot.png', 'wb').write({png!r})")
    # Figures come back as checked bytes (data: URIs), never as paths the app would open.
    assert r.images == ["data:image/png;base64," + base64.b64encode(png).decode()] and r.image_names == ["dot.png"]
    assert "[image saved: dot.png" in r.model_text()
    assert kernel.execute("1 + 1").images == []
    pytest.importorskip("matplotlib")
    r = kernel.execute("import matplotlib.pyplot as plt\nplt.plot([1, 3, 2])\nplt.title('t')\nplt.show()", timeout_s=60)
    assert r.error is None, r.error
    assert len(r.images) == 1 and base64.b64decode(r.images[0].split(",", 1)[1]).startswith(b"\x89PNG")
    r = kernel.execute("fig = plt.figure()\n_ = plt.bar([1, 2], [3, 4])", timeout_s=30)  # no show(): saved at the end
    assert len(r.images) == 1 and r.image_names[0].endswith(".png")


def test_restart_clears_state(tmp_path: Path) -> None:
    k = PythonKernel(tmp_path / "s", LIMITS)
    try:
        k.execute("z = 5")
        k.restart()
        assert k.execute("'z' in globals()").output == "False\n"
        assert k.starts == 2
    finally:
        k.close()


def test_fallback_without_namespaces_blocks_sockets_and_processes(tmp_path: Path) -> None:
    # Only the Python audit hook: no namespaces, Landlock or seccomp (a bare, old Linux or macOS).
    k = PythonKernel(tmp_path / "s", LIMITS, SandboxLayers(namespaces=False, landlock=False, seccomp=False))
    try:
        report = k.start()
        assert report.get("network").holds == "partial" and "audit hook" in report.get("network").detail  # type: ignore[union-attr]
        assert not report.holds("write")
        r = k.execute("import socket\nsocket.socket(socket.AF_INET).connect(('127.0.0.1', 9))")
        assert "Network access is disabled" in (r.error or "")
        r = k.execute("import subprocess\nsubprocess.run(['true'])")
        assert "Starting other programs is disabled" in (r.error or "")
        r = k.execute("import os\nos.fork()")
        assert "Starting other programs is disabled" in (r.error or "")
        assert k.execute("import socket\ns = socket.socketpair()\nlen(s)").output == "2\n"  # local pipes still work
    finally:
        k.close()


def test_report_on_this_machine() -> None:
    report = probe_sandbox(LIMITS)
    keys = [g.key for g in report.guarantees]
    assert keys == [
        "network",
        "sockets",
        "session_files",
        "write",
        "read",
        "memory",
        "cpu",
        "time",
        "processes",
        "files",
        "isolation",
        "channel",
        "output",
    ]
    assert report.holds("time") and report.holds("output")
    if sys.platform.startswith("linux"):
        assert report.holds("memory") and report.holds("cpu") and report.holds("files")
    assert "No network" in report.summary()


def test_report_wording_for_a_bare_platform() -> None:
    report = build_report({"platform": "darwin", "landlock": {}, "limits": {"as": 2**31, "cpu": 120}}, LIMITS)
    assert report.get("memory").holds == "partial" and "macOS does not enforce" in report.get("memory").detail  # type: ignore[union-attr]
    assert report.get("write").holds == "no" and report.get("network").holds == "partial"  # type: ignore[union-attr]
    assert not report.holds("processes") and not report.holds("isolation")


_UNDER_TMP_DRIVER = """
import json, sys
from pathlib import Path
from app.core.tools.python_tool import PythonKernel, SandboxLimits
k = PythonKernel(Path(sys.argv[1]), SandboxLimits(timeout_s=20.0, cpu_s=10.0, memory_bytes=1024**3))
k.start()
try:
    own = k.execute("import harmonica_under_tmp_probe\\nharmonica_under_tmp_probe.VALUE")
    child = k.execute("import subprocess, sys\\nsubprocess.run([sys.executable, '-c', 'print(6 * 7)'],"
                      " capture_output=True, text=True).stdout")
    tmp = k.execute("import os\\nsorted(os.listdir('/tmp')), sorted(os.listdir(sys.argv[2]))".replace("sys.argv[2]", repr(sys.argv[2])))
    print(json.dumps({"own": [own.output, own.error], "child": [child.output, child.error],
                      "tmp": [tmp.output, tmp.error], "mounts": k.report.layers.get("mounts") if k.report else None}))
finally:
    k.close()
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the minimal root is Linux only")
def test_a_python_environment_under_tmp_is_not_hidden_by_the_fresh_tmp(tmp_path: Path) -> None:
    """CI machines and throwaway setups put their virtualenv in /tmp; the sandbox's fresh /tmp must
    not hide it (packages only in that environment, and a child process of its Python, still work),
    while the rest of the host's /tmp stays out of sight."""
    import json
    import os
    import shutil
    import subprocess
    import sysconfig
    import tempfile
    import venv

    where = Path(tempfile.mkdtemp(prefix="harmonica-venv-", dir="/tmp"))
    try:
        where.chmod(0o755)  # the kernel may run as nobody: the environment must be readable by all
        env_dir = where / "env"
        venv.EnvBuilder(system_site_packages=True, with_pip=False, symlinks=True).create(env_dir)
        python = env_dir / "bin" / "python"
        purelib = subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        assert purelib.startswith(str(where)) and purelib != sysconfig.get_paths()["purelib"]
        Path(purelib).mkdir(parents=True, exist_ok=True)
        Path(purelib, "harmonica_under_tmp_probe.py").write_text("VALUE = 'from the venv'\n")
        (where / "host-secret.txt").write_text("not for the sandbox")
        scratch = Path(tempfile.mkdtemp(prefix="harmonica-scratch-"))
        scratch.chmod(0o777)
        repo = Path(__file__).resolve().parents[3]
        done = subprocess.run(
            [str(python), "-c", _UNDER_TMP_DRIVER, str(scratch), str(where)],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=repo,
            env={**os.environ, "PYTHONPATH": str(repo)},
        )
        assert done.returncode == 0, done.stderr[-2000:]
        got = json.loads(done.stdout.strip().splitlines()[-1])
        if got["mounts"] != "pivot":
            pytest.skip(f"no minimal root on this machine (mounts: {got['mounts']})")
        assert got["own"] == ["'from the venv'\n", None], got
        assert got["child"] == ["'42\\n'\n", None], got
        # Only the way to the environment is there: not the rest of the host's /tmp, nor what lies beside it.
        assert got["tmp"] == [f"([{where.name!r}], ['env'])\n", None], got
    finally:
        shutil.rmtree(where, ignore_errors=True)
