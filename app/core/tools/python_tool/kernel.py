"""The python tool's kernel process as the app sees it: starting it, talking to it, running cells, stopping it."""

from __future__ import annotations

import json
import logging
import os
import queue
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from app.core.child import get_until, python_command
from app.core.errors import HarmonicaError
from app.core.tools.python_tool.host import NOBODY, _read_paths, _site_paths, _world_readable
from app.core.tools.python_tool.limits import SandboxLayers, SandboxLimits
from app.core.tools.python_tool.output import OutputCapture
from app.core.tools.python_tool.report import Check, SandboxReport, build_report
from app.core.tools.python_tool.results import ExecResult, take_result

log = logging.getLogger(__name__)

# The kernel stays one file beside this package (app/core/tools/sandbox_kernel.py): it runs by path.
KERNEL_SCRIPT = Path(__file__).parent.with_name("sandbox_kernel.py")
_EOF = object()
# The longest answer line the app reads from the kernel's supervisor (a result with its images in
# base64 is at most ~17 MiB); anything longer means the channel is broken and the kernel is killed.
MAX_ANSWER_BYTES = 24 * 1024 * 1024


class KernelError(HarmonicaError):
    """The kernel could not be started; the message is for people."""


class PythonKernel(OutputCapture):
    """A sandboxed, stateful Python interpreter in its own process (one per conversation).

    Thread-safe: one cell runs at a time. `execute` never raises for anything the code does; it
    returns an ExecResult. The process starts on first use and again after a crash or a kill.
    """

    def __init__(self, scratch: Path, limits: SandboxLimits | None = None, layers: SandboxLayers | None = None) -> None:
        self.scratch = Path(scratch)
        self.limits = limits or SandboxLimits()
        self.layers = layers or SandboxLayers()
        self._proc: subprocess.Popen[bytes] | None = None
        self._kernel_pid: int | None = None
        self._lock = threading.RLock()
        self._answers: queue.Queue[Any] = queue.Queue()
        self._out_r: int | None = None
        self._out_gen = 0  # which kernel's output pipe is read into the cells
        self._out_lock = threading.Lock()
        self._buf = bytearray()
        self._hold = b""
        self._dropped = 0
        self._cap = self.limits.max_output_bytes
        self._marker: bytes | None = None
        self._marker_seen = threading.Event()
        self._report: SandboxReport | None = None
        self._count = 0
        self._started = False  # the supervisor took the current cell (it said "started")
        self.starts = 0

    # --- lifecycle -----------------------------------------------------------------------------
    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def report(self) -> SandboxReport | None:
        """The guarantees of the running (or last) kernel; None before the first start."""
        return self._report

    def _env(self) -> dict[str, str]:
        s = str(self.scratch)
        base = {
            k: v
            for k, v in os.environ.items()
            if k.upper() in ("PATH", "SYSTEMROOT", "COMSPEC", "WINDIR", "PATHEXT", "TZ")
        }
        base.update(
            {
                "HOME": s,
                "USERPROFILE": s,
                "TMPDIR": os.path.join(s, ".tmp"),
                "TEMP": os.path.join(s, ".tmp"),
                "TMP": os.path.join(s, ".tmp"),
                "LANG": "C.UTF-8",
                "LC_ALL": "C.UTF-8",
                "PYTHONUTF8": "1",
                "MPLBACKEND": "module://harmonica_inline",
                "MPLCONFIGDIR": os.path.join(s, ".matplotlib"),
                "XDG_CACHE_HOME": os.path.join(s, ".cache"),
                "OPENBLAS_NUM_THREADS": "1",
                "OMP_NUM_THREADS": "1",
                "MKL_NUM_THREADS": "1",
                "NUMEXPR_NUM_THREADS": "1",
            }
        )
        base.setdefault("PATH", os.defpath)
        return base

    def _prepare_scratch(self) -> tuple[int, int] | None:
        self.scratch.mkdir(parents=True, exist_ok=True)
        for sub in (".tmp", ".matplotlib", ".cache"):
            (self.scratch / sub).mkdir(exist_ok=True)
        if not (
            self.layers.drop_root and hasattr(os, "geteuid") and os.geteuid() == 0 and sys.platform.startswith("linux")
        ):
            return None
        # Running as root: the kernel drops to "nobody", unless nobody could not even import the
        # standard library (Python installed under /root). The scratch folder must belong to
        # whoever the kernel runs as (namespaced root cannot override the owner of other users' files).
        needed: list[str | Path] = [KERNEL_SCRIPT.parent, *_site_paths(), sys.base_prefix]
        drop = all(_world_readable(p) for p in needed)
        owner = NOBODY if drop else (0, 0)
        try:
            for root, _dirs, files in os.walk(self.scratch):
                # Never follow a link the previous kernel left: chown would act on its target.
                if os.lstat(root).st_uid != owner[0]:
                    os.chown(root, *owner, follow_symlinks=False)
                for name in files:
                    os.chown(os.path.join(root, name), *owner, follow_symlinks=False)
        except OSError as exc:
            log.warning("cannot hand the scratch folder to uid %s (%s); the kernel keeps root", owner[0], exc)
            return None
        return NOBODY if drop else None

    def start(self) -> SandboxReport:
        """Start the kernel (if it is not running) and return its guarantees."""
        with self._lock:
            if self.alive and self._report is not None:
                return self._report
            layers = self.layers
            for _ in range(2):
                report = self._spawn(layers)
                if report is not None:
                    return report
                layers = replace(layers, namespaces=False)  # namespaces exist but are unusable: go without
            raise KernelError("The Python sandbox could not be started on this system.")

    def _spawn(self, layers: SandboxLayers) -> SandboxReport | None:
        self._kill()
        drop = self._prepare_scratch()
        out_r, out_w = os.pipe()
        kwargs: dict[str, Any] = {}
        if os.name == "posix":
            kwargs["start_new_session"] = True
        try:
            proc = subprocess.Popen(
                python_command(
                    script=KERNEL_SCRIPT, module="app.core.tools.sandbox_kernel", flags=("-I", "-B", "-X", "utf8")
                ),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=out_w,
                cwd=str(self.scratch),
                env=self._env(),
                **kwargs,
            )
        except OSError as exc:
            os.close(out_r)
            os.close(out_w)
            raise KernelError(f"The Python sandbox could not be started: {exc}") from exc
        os.close(out_w)
        self._proc, self._out_r = proc, out_r
        self._answers = queue.Queue()
        self._kernel_pid = None
        self.starts += 1
        answers = self._answers

        def read_answers() -> None:
            assert proc.stdout is not None
            while True:
                line = proc.stdout.readline(MAX_ANSWER_BYTES + 1)
                if not line:
                    break
                if len(line) > MAX_ANSWER_BYTES or not line.endswith(b"\n"):
                    log.warning("the python kernel sent an answer over %d bytes; it is stopped", MAX_ANSWER_BYTES)
                    break  # execute() sees the end, kills the kernel and reports a restart
                try:
                    msg = json.loads(line)
                except ValueError:
                    continue
                if isinstance(msg, dict):
                    answers.put(msg)
            answers.put(_EOF)

        threading.Thread(target=read_answers, name="py-kernel-answers", daemon=True).start()
        with self._out_lock:
            self._out_gen += 1
            self._buf = bytearray()
        threading.Thread(
            target=self._pump_output, args=(out_r, self._out_gen), name="py-kernel-output", daemon=True
        ).start()
        init = {
            "scratch": str(self.scratch),
            "sys_path": _site_paths(),
            "read_paths": _read_paths(),
            "drop_to": list(drop) if drop else None,
            "layers": {
                "namespaces": layers.namespaces,
                "pid_namespace": layers.pid_namespace,
                "mount_namespace": layers.mount_namespace,
                "minimal_root": layers.minimal_root,
                "landlock": layers.landlock,
                "restrict_reads": layers.restrict_reads,
                "seccomp": layers.seccomp,
                "split": layers.split,
            },
            "limits": {
                "memory_bytes": self.limits.memory_bytes,
                "file_bytes": self.limits.file_bytes,
                "cpu_s": self.limits.cpu_s,
                "cpu_session_s": self.limits.cpu_session_s,
                "processes": self.limits.processes,
                "open_files": self.limits.open_files,
                "tmp_bytes": 64 * 1024**2,  # the private /tmp and /dev/shm
            },
        }
        self._send(init)
        deadline = time.monotonic() + 30.0
        ready: dict[str, Any] | None = None
        while ready is None or (ready.get("layers", {}).get("pid_namespace") and self._kernel_pid is None):
            msg = self._next_answer(deadline)
            if msg is None or msg is _EOF:
                self._kill()
                raise KernelError(
                    "The Python sandbox did not start: " + ("it timed out" if msg is None else "it exited")
                )
            if msg.get("event") == "kernel_pid":
                self._kernel_pid = int(msg["pid"])
            elif msg.get("event") == "ready":
                ready = msg
        layers_got = dict(ready.get("layers", {}))
        if layers_got.get("fatal"):
            self._kill()
            return None
        if self._kernel_pid is None:
            self._kernel_pid = proc.pid
        self._report = build_report(layers_got, self.limits)
        return self._report

    def _send(self, msg: dict[str, Any]) -> bool:
        proc = self._proc
        if proc is None or proc.stdin is None:
            return False
        try:
            proc.stdin.write((json.dumps(msg, ensure_ascii=False) + "\n").encode())
            proc.stdin.flush()
            return True
        except (OSError, ValueError):
            return False

    def _next_answer(self, deadline: float, cancel: threading.Event | None = None) -> Any:
        return get_until(self._answers, deadline, cancel)

    # --- running code --------------------------------------------------------------------------
    def execute(
        self, code: str, *, timeout_s: float | None = None, cancel: threading.Event | None = None
    ) -> ExecResult:
        """Run `code` in the session; never raises for what the code does."""
        with self._lock:
            t0 = time.monotonic()
            result, ran = self._execute_once(code, timeout_s, cancel)
            if not ran:
                # The kernel had died after the previous run (its supervisor never took this cell):
                # the code did not run, so run it once in a fresh kernel.
                result, _ = self._execute_once(code, timeout_s, cancel)
                lost = "The Python process had stopped after the previous run; it was restarted, so all variables were lost."
                result.note = f"{lost}\n{result.note}" if result.note else lost
            result.duration_s = time.monotonic() - t0
            return result

    def _await_answer(self, cell: int, deadline: float, cancel: threading.Event | None = None) -> Any:
        """The answer to `cell` (a dict), _EOF, or None on timeout/cancel; notes "started" on the way."""
        while True:
            msg = self._next_answer(deadline, cancel)
            if msg is None or msg is _EOF:
                return msg
            if msg.get("event") == "started":
                if msg.get("id") == cell:
                    self._started = True
                continue
            if msg.get("event") is None and msg.get("id") == cell:
                return msg

    def _execute_once(
        self, code: str, timeout_s: float | None, cancel: threading.Event | None
    ) -> tuple[ExecResult, bool]:
        """One attempt; the flag is False when the kernel was found dead before it took the cell."""
        try:
            self.start()
        except KernelError as exc:
            return ExecResult(error=str(exc), restarted=True), True
        separate = self._report is not None and self._report.layers.get("channel") == "separate"
        self._count += 1
        cell = self._count
        self._started = False
        marker = f"\x00HARMONICA-END-{secrets.token_hex(16)}\x00".encode()
        self._begin_cell(marker)
        limit = self.limits.timeout_s if timeout_s is None else timeout_s
        sent = self._send(
            {
                "op": "exec",
                "id": cell,
                "code": code,
                "marker": marker.decode(),
                "cpu_s": self.limits.cpu_s,
                "max_output": self.limits.max_output_bytes,
            }
        )
        result = ExecResult()
        msg = self._await_answer(cell, time.monotonic() + limit, cancel) if sent else _EOF
        if msg is _EOF and separate and not self._started:
            self._end_cell(0.0)
            self._kill()
            return result, False
        cancelled = cancel is not None and cancel.is_set()
        if msg is None:  # timed out or cancelled: interrupt, then kill if it does not stop
            result.timed_out = not cancelled
            self.interrupt()
            msg = self._await_answer(cell, time.monotonic() + 3.0)
            if msg is None or msg is _EOF:
                self._kill()
                result.restarted = True
                msg = None
        elif msg is _EOF:
            result.restarted = True
            result.note = self._death_note()
            self._kill()
            msg = None
        output, dropped = self._end_cell(2.0 if msg is not None else 0.5)
        result.output = output
        result.truncated_bytes = dropped
        if isinstance(msg, dict):
            take_result(result, msg)
        if result.timed_out:
            how = (
                "the interpreter was restarted, so all variables were lost"
                if result.restarted
                else "it was interrupted; variables are kept"
            )
            result.note = f"Execution timed out after {limit:g} seconds: {how}."
            if result.error and result.error.startswith("KeyboardInterrupt"):
                result.error = None
        elif cancelled:
            result.note = "Execution was stopped by the user" + (
                "; the interpreter was restarted, so all variables were lost." if result.restarted else "."
            )
            if result.error and result.error.startswith("KeyboardInterrupt"):
                result.error = None
        elif result.restarted and not result.note:
            result.note = "The Python process ended unexpectedly; it was restarted and all variables were lost."
        return result, True

    def self_check(self, targets: dict[str, Any], timeout_s: float = 20.0) -> list[Check]:
        """Make a fresh kernel attempt the escapes in `targets` (see SelfCheckTargets); what happened."""
        with self._lock:
            if self._count:
                raise KernelError("The self-check needs a fresh Python sandbox (no code may have run in it).")
            self.start()
            self._count += 1
            if not self._send({"op": "selfcheck", "id": self._count, "targets": targets}):
                raise KernelError("The Python sandbox stopped before its self-check.")
            deadline = time.monotonic() + timeout_s
            while True:
                msg = self._next_answer(deadline)
                if msg is None or msg is _EOF:
                    self._kill()
                    raise KernelError("The Python sandbox did not finish its self-check.")
                if msg.get("event") == "selfcheck":
                    break
            out: list[Check] = []
            for c in msg.get("checks") or []:
                if isinstance(c, dict):
                    out.append(
                        Check(
                            str(c.get("kind", "")),
                            str(c.get("label", "")),
                            c.get("blocked") is True,
                            str(c.get("how", "")),
                        )
                    )
            return out

    def _death_note(self) -> str:
        proc = self._proc
        code = None
        if proc is not None:
            try:
                code = proc.wait(2)
            except subprocess.TimeoutExpired:
                code = None
        if code is not None and code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = str(-code)
            if name in ("SIGXCPU", "SIGKILL"):
                return (
                    f"The Python process was killed ({name}), most likely by the CPU-time limit of the session; "
                    "it was restarted and all variables were lost."
                )
            return f"The Python process crashed ({name}); it was restarted and all variables were lost."
        return f"The Python process exited (code {code}); it was restarted and all variables were lost."

    def interrupt(self) -> None:
        """Raise KeyboardInterrupt in the running cell (the session is kept)."""
        pid = self._kernel_pid
        if pid is None or not self.alive:
            return
        try:
            if os.name == "posix":
                os.kill(pid, signal.SIGINT)
            else:  # pragma: no cover - Windows has no SIGINT for another console-less process
                self._kill()
        except OSError:
            pass

    def restart(self) -> SandboxReport:
        """A fresh interpreter (all variables are lost; files in the scratch folder stay)."""
        with self._lock:
            self._kill()
            return self.start()

    def _kill(self) -> None:
        proc, self._proc = self._proc, None
        self._kernel_pid = None
        if proc is None:
            return
        try:
            if os.name == "posix":
                try:
                    os.killpg(proc.pid, signal.SIGKILL)  # the session: kernel, bootstrap, what they started
                except OSError:
                    proc.kill()
            else:  # pragma: no cover
                proc.kill()
            proc.wait(5)
        except (OSError, subprocess.TimeoutExpired):
            pass
        for stream in (proc.stdin, proc.stdout):
            try:
                if stream is not None:
                    stream.close()
            except OSError:
                pass
        cgroup = self._report.layers.get("pids_cgroup") if self._report is not None else None
        if cgroup:
            for _ in range(50):  # the cgroup can be removed once its last process is gone
                try:
                    os.rmdir(cgroup)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.02)

    def close(self) -> None:
        with self._lock:
            if self.alive:
                self._send({"op": "quit"})
            self._kill()

    def clear_scratch(self) -> None:
        """Delete the scratch folder's files (the conversation was deleted)."""
        self.close()
        shutil.rmtree(self.scratch, ignore_errors=True)
