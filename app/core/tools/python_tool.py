"""The builtin `python` tool: a stateful sandboxed interpreter per conversation, and what its sandbox guarantees."""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import queue
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from app.core.child import get_until, python_command
from app.core.errors import HarmonicaError
from app.core.tools.safe_files import image_data_uri
from app.core.tools.sandbox_kernel import MAX_ERROR_CHARS, MAX_IMAGES

log = logging.getLogger(__name__)

KERNEL_SCRIPT = Path(__file__).with_name("sandbox_kernel.py")
NOBODY = (65534, 65534)
_EOF = object()
# The longest answer line the app reads from the kernel's supervisor (a result with its images in
# base64 is at most ~17 MiB); anything longer means the channel is broken and the kernel is killed.
MAX_ANSWER_BYTES = 24 * 1024 * 1024
# What the harmony python section (fixed text in the model's template) promises the model.
PYTHON_DESCRIPTION = (
    "Runs Python code in a stateful Jupyter-like session (variables persist between calls); "
    "times out after 120 seconds; files go to /mnt/data, the conversation's scratch folder; no internet."
)


@dataclass(frozen=True)
class SandboxLimits:
    """Resource limits of one kernel (per cell unless said otherwise)."""

    timeout_s: float = 120.0  # wall time of a cell; the harmony python section promises 120 s
    cpu_s: float = 120.0  # CPU time of a cell
    cpu_session_s: float = 3600.0  # CPU time of the whole session (the kernel is killed past it)
    memory_bytes: int = 2 * 1024**3  # address space of the kernel (and of each process it starts)
    processes: int = 64  # processes and threads in the sandbox's own user namespace
    file_bytes: int = 256 * 1024**2  # the largest file it may write
    open_files: int = 256
    max_output_bytes: int = 64 * 1024  # what a cell may print; the rest is dropped and counted


@dataclass(frozen=True)
class SandboxLayers:
    """Which isolation layers to try. Tests turn layers off to check the fallbacks; the app uses all."""

    namespaces: bool = True
    pid_namespace: bool = True
    mount_namespace: bool = True
    minimal_root: bool = True  # pivot_root into a minimal tree (else tmpfs over /tmp, /run, /dev/shm)
    landlock: bool = True
    restrict_reads: bool = True
    seccomp: bool = True
    split: bool = True  # a supervisor process keeps the results channel away from user code
    drop_root: bool = True


@dataclass(frozen=True)
class Guarantee:
    """One promise of the sandbox and whether it holds here: "yes", "partial" or "no"."""

    key: str
    title: str
    holds: str
    detail: str
    verified: bool = False  # True: escape attempts on this machine showed it (not only a layer's report)


@dataclass(frozen=True)
class Check:
    """One escape the live self-check attempted, and whether the sandbox blocked it."""

    kind: str  # "unix", "see", "read", "write", "tcp", "signal"
    label: str
    blocked: bool
    how: str


@dataclass(frozen=True)
class SandboxReport:
    """What the sandbox really guarantees on this machine: the layers the kernel reported at start
    and, from `probe_sandbox`, the escapes it was made to attempt (`checks`)."""

    platform: str
    guarantees: tuple[Guarantee, ...]
    layers: dict[str, Any] = field(default_factory=dict)
    checks: tuple[Check, ...] = ()
    checked_at: float | None = None  # time.time() of the self-check

    def get(self, key: str) -> Guarantee | None:
        return next((g for g in self.guarantees if g.key == key), None)

    def holds(self, key: str) -> bool:
        g = self.get(key)
        return g is not None and g.holds == "yes"

    def summary(self) -> str:
        marks = {"yes": "✓", "partial": "~", "no": "✗"}
        return "\n".join(f"{marks.get(g.holds, '?')} {g.title}: {g.detail}" for g in self.guarantees)


def _from_checks(checks: list[Check], kinds: tuple[str, ...]) -> tuple[str, str] | None:
    """("yes"/"partial"/"no", what was tried) from the attempts of these kinds, or None if none ran."""
    mine = [c for c in checks if c.kind in kinds]
    if not mine:
        return None
    held = [c for c in mine if c.blocked]
    got = [c for c in mine if not c.blocked]
    if not got:
        return "yes", f"verified: {len(held)} of {len(mine)} attempts were refused"
    through = "; ".join(f"{c.label} worked" for c in got[:3])
    return ("partial" if held else "no"), f"verified: {through}"


def build_report(
    layers: dict[str, Any], limits: SandboxLimits, checks: list[Check] | None = None, checked_at: float | None = None
) -> SandboxReport:
    """Plain statements from what the kernel reported and, when given, what the escape attempts showed.

    An attempt that got through always wins over a layer that says it holds.
    """
    plat = str(layers.get("platform", sys.platform))
    linux = plat.startswith("linux")
    ll = layers.get("landlock") or {}
    lim = layers.get("limits") or {}
    sc = layers.get("seccomp") or {}
    abi = layers.get("landlock_abi", 0)
    mounts = layers.get("mounts") or ""
    tried = list(checks or [])
    g: list[Guarantee] = []

    def add(key: str, title: str, holds: str, detail: str, kinds: tuple[str, ...] = ()) -> None:
        seen = _from_checks(tried, kinds) if kinds else None
        if seen is None:
            g.append(Guarantee(key, title, holds, detail))
            return
        verdict, how = seen
        if verdict == "yes" and holds == "no":
            holds = "partial"  # blocked here, but by nothing the sandbox can vouch for
        elif verdict != "yes":
            holds = "no" if verdict == "no" else "partial"
        g.append(Guarantee(key, title, holds, f"{detail} ({how})", verified=True))

    # --- network
    if layers.get("network_namespace"):
        add(
            "network",
            "No network",
            "yes",
            "a Linux network namespace with no interfaces: no internet or local network for the code "
            "or any program it starts" + ("; Landlock also refuses TCP" if ll.get("net") else ""),
            ("tcp",),
        )
    elif sc.get("all_sockets_blocked"):
        add(
            "network",
            "No network",
            "yes",
            "a seccomp filter refuses every network socket, for the code and any program it starts",
            ("tcp",),
        )
    elif ll.get("net"):
        add(
            "network",
            "No network",
            "partial",
            f"Landlock (ABI {abi}) refuses TCP connections; UDP is not covered; Python sockets are refused too",
            ("tcp",),
        )
    else:
        add(
            "network",
            "No network",
            "partial",
            "a Python audit hook refuses sockets and starting programs; code that reaches the C library "
            "directly (ctypes, some extensions) could get past it",
            ("tcp",),
        )
    # --- the user's session: UNIX sockets (ssh-agent, D-Bus, X11/Wayland, PulseAudio, docker)
    how: list[str] = []
    if sc.get("unix_blocked"):
        how.append("a seccomp filter refuses UNIX sockets (socketpair pipes still work)")
    if mounts == "pivot":
        how.append("the code sees a minimal file system without your /tmp, /run/user or home")
    elif mounts:
        how.append("fresh, empty /tmp, /run and /dev/shm hide the sockets there")
    if layers.get("network_namespace"):
        how.append("abstract sockets (X11's @/tmp/.X11-unix) belong to the host's network namespace")
    elif ll.get("scope"):
        how.append(f"Landlock (ABI {abi}) scoping blocks abstract sockets")
    if sc.get("unix_blocked"):
        add("sockets", "Your session's programs are out of reach", "yes", "; ".join(how), ("unix",))
    elif how:
        add(
            "sockets",
            "Your session's programs are out of reach",
            "partial",
            "; ".join(how) + "; a socket elsewhere in a folder the code can reach is not blocked",
            ("unix",),
        )
    else:
        add(
            "sockets",
            "Your session's programs are out of reach",
            "no",
            "the code could connect to your ssh-agent, D-Bus, display or sound server (only a Python audit "
            "hook stands in the way)",
            ("unix",),
        )
    # --- what of the session it can see
    if mounts == "pivot":
        add(
            "session_files",
            "Your /tmp, /run/user and /dev/shm are hidden",
            "yes",
            "the code's root is a minimal tree with its own empty /tmp, /run and /dev/shm",
            ("see",),
        )
    elif mounts:
        add(
            "session_files",
            "Your /tmp, /run/user and /dev/shm are hidden",
            "yes" if mounts == "overlay" else "partial",
            "fresh, empty /tmp, /run and /dev/shm cover the host's",
            ("see",),
        )
    elif ll.get("fs_read"):
        add(
            "session_files",
            "Your /tmp, /run/user and /dev/shm are hidden",
            "partial",
            "Landlock keeps the code from listing or reading them, but it can tell whether a name exists",
            ("see",),
        )
    else:
        add(
            "session_files",
            "Your /tmp, /run/user and /dev/shm are hidden",
            "no",
            "the code sees the same /tmp, /run/user and /dev/shm as your other programs",
            ("see",),
        )
    # --- files
    if ll.get("fs_write"):
        add(
            "write",
            "Writes only in the scratch folder",
            "yes",
            f"Landlock (ABI {abi}) blocks creating, changing or deleting files anywhere else",
            ("write",),
        )
    elif mounts == "pivot":
        add(
            "write",
            "Writes only in the scratch folder",
            "partial",
            "the rest of the code's file system is read-only or private memory, but Landlock is missing",
            ("write",),
        )
    else:
        add(
            "write",
            "Writes only in the scratch folder",
            "no",
            "the working folder is the scratch folder, but nothing stops code writing elsewhere "
            "with your user's permissions" + (" (Landlock needs Linux 5.13 or later)" if linux else ""),
            ("write",),
        )
    if ll.get("fs_read") or mounts == "pivot":
        add(
            "read",
            "Your files stay private",
            "yes",
            "only system folders, the Python installation and the scratch folder can be read",
            ("read",),
        )
    else:
        add("read", "Your files stay private", "no", "code can read any file your user can read", ("read",))
    # --- limits (read back inside the sandbox)
    if "as" in lim:
        add(
            "memory",
            "Memory limit",
            "yes" if linux else "partial",
            f"{lim['as'] / 1024**3:.1f} GiB of address space" + ("" if linux else " (macOS does not enforce it)"),
        )
    else:
        add("memory", "Memory limit", "no", "no memory limit on this system")
    if "cpu" in lim:
        add("cpu", "CPU time limit", "yes", f"{limits.cpu_s:g} s of CPU per run")
    else:
        add("cpu", "CPU time limit", "no", "no CPU time limit on this system (the wall-time limit still applies)")
    add(
        "time",
        "Time limit",
        "yes",
        f"a run is interrupted after {limits.timeout_s:g} s, and the interpreter is restarted if it does not stop",
    )
    if "nproc" in lim or layers.get("pids_cgroup"):
        text = (
            f"at most {lim['nproc']} processes"
            if "nproc" in lim
            else f"a cgroup allows at most {limits.processes} processes"
        )
        add(
            "processes",
            "Process limit",
            "yes",
            text + (", all killed with the interpreter" if layers.get("pid_namespace") else ""),
        )
    elif layers.get("spawn_blocked"):
        add("processes", "Process limit", "partial", "the audit hook refuses to start processes")
    else:
        add("processes", "Process limit", "no", "no limit on the number of processes")
    if "fsize" in lim:
        add("files", "File size limit", "yes", f"files up to {lim['fsize'] / 1024**2:.0f} MiB")
    else:
        add("files", "File size limit", "no", "no file size limit on this system")
    # --- other programs
    if layers.get("pid_namespace") or ll.get("scope"):
        if layers.get("pid_namespace"):
            text = (
                "its own PID namespace and /proc: your other programs are invisible to it"
                if layers.get("own_proc")
                else "a PID namespace keeps it from signalling your other programs"
            )
        else:
            text = "Landlock scoping blocks signals to your other programs"
        add("isolation", "Other programs are out of reach", "yes", text, ("signal",))
    else:
        add(
            "isolation",
            "Other programs are out of reach",
            "no",
            "the code runs as your user and could signal your other programs",
            ("signal",),
        )
    # --- what the app believes
    if layers.get("channel") == "separate":
        add(
            "channel",
            "Results cannot be forged",
            "yes",
            "results reach the app through a separate process that user code cannot write to; "
            "sizes are capped and figures arrive as checked image bytes",
        )
    else:
        add(
            "channel",
            "Results cannot be forged",
            "partial",
            "the code runs in the process that answers the app (no fork on this system): it could forge "
            "its own results, though sizes are still capped and figures checked",
        )
    add("output", "Output limit", "yes", f"output beyond {limits.max_output_bytes // 1024} KB is cut, with a note")
    return SandboxReport(plat, tuple(g), dict(layers), tuple(tried), checked_at)


# --- results ---------------------------------------------------------------------------------------
@dataclass
class ExecResult:
    """One run of a cell. `images` are data: URIs of checked image bytes (never host paths)."""

    output: str = ""
    error: str | None = None
    images: list[str] = field(default_factory=list)
    image_names: list[str] = field(default_factory=list)
    truncated_bytes: int = 0
    timed_out: bool = False
    interrupted: bool = False  # stopped by KeyboardInterrupt: the state is kept
    restarted: bool = False  # the interpreter had to be killed: the state is lost
    cpu_exceeded: bool = False
    duration_s: float = 0.0
    note: str | None = None

    @property
    def is_error(self) -> bool:
        return self.error is not None or self.timed_out or self.restarted or self.cpu_exceeded

    def model_text(self) -> str:
        """What the model reads back (the python tool message)."""
        parts: list[str] = []
        if self.output:
            parts.append(self.output.rstrip("\n"))
        if self.truncated_bytes:
            parts.append(f"[… output truncated: {self.truncated_bytes:,} more bytes were not shown]")
        if self.error:
            parts.append(self.error.rstrip("\n"))
        if self.note:
            parts.append(self.note)
        for name in self.image_names:
            parts.append(f"[image saved: {name} (shown to the user)]")
        return "\n".join(parts) if parts else "(no output)"


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


class KernelError(HarmonicaError):
    """The kernel could not be started; the message is for people."""


class PythonKernel:
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

    # --- output pipe ---------------------------------------------------------------------------
    def _pump_output(self, fd: int, gen: int) -> None:
        while True:
            try:
                data = os.read(fd, 1 << 16)
            except OSError:
                break
            if not data:
                break
            self._feed(data, gen)
        try:
            os.close(fd)
        except OSError:
            pass

    def _feed(self, data: bytes, gen: int | None = None) -> None:
        with self._out_lock:
            if gen is not None and gen != self._out_gen:
                return  # a dead kernel's leftovers never reach a newer kernel's cells
            pending = self._hold + data
            marker = self._marker
            if marker:
                i = pending.find(marker)
                if i >= 0:
                    self._append(pending[:i])
                    self._hold = b""
                    self._marker = None
                    self._marker_seen.set()
                    return  # what follows the marker is background output after the cell: dropped
                keep = min(len(marker) - 1, len(pending))
                self._append(pending[: len(pending) - keep])
                self._hold = pending[len(pending) - keep :]
            else:
                self._hold = b""
                self._append(pending)

    def _append(self, data: bytes) -> None:
        room = self._cap - len(self._buf)
        if room > 0:
            self._buf += data[:room]
        self._dropped += max(0, len(data) - max(room, 0))

    def _begin_cell(self, marker: bytes) -> None:
        with self._out_lock:
            self._buf = bytearray()
            self._hold = b""
            self._dropped = 0
            self._marker = marker
            self._marker_seen.clear()

    def _end_cell(self, wait_s: float) -> tuple[str, int]:
        self._marker_seen.wait(wait_s)
        with self._out_lock:
            if self._marker is not None:  # never came (the kernel died): keep what was held back
                self._append(self._hold)
            self._marker = None
            self._hold = b""
            text = bytes(self._buf).decode("utf-8", "replace")
            return text, self._dropped

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
            self._take_result(result, msg)
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

    @staticmethod
    def _take_result(result: ExecResult, msg: dict[str, Any]) -> None:
        """Copy a result into `result`, checking every field again (the supervisor already did)."""
        error = msg.get("error")
        result.error = error[:MAX_ERROR_CHARS] if isinstance(error, str) else None
        dropped = msg.get("dropped_bytes")
        if isinstance(dropped, int) and not isinstance(dropped, bool) and dropped > 0:
            result.truncated_bytes += dropped
        result.interrupted = msg.get("interrupted") is True
        result.cpu_exceeded = msg.get("cpu_exceeded") is True
        images = msg.get("images")
        for img in images[:MAX_IMAGES] if isinstance(images, list) else []:
            if not isinstance(img, dict) or not isinstance(img.get("data"), str):
                continue
            try:
                data = base64.b64decode(img["data"], validate=True)
            except (binascii.Error, ValueError):
                continue
            uri = image_data_uri(data)
            if uri is None:
                continue
            name = img.get("name")
            result.images.append(uri)
            result.image_names.append(os.path.basename(name) if isinstance(name, str) and name else "image")
        notes = [n for n in msg.get("notes") or [] if isinstance(n, str)] if isinstance(msg.get("notes"), list) else []
        if notes:
            extra = "\n".join(n[:500] for n in notes[:10])
            result.note = f"{result.note}\n{extra}" if result.note else extra

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


class SelfCheckTargets:
    """Real things for the live self-check to attack, made by the app, torn down afterwards.

    Listening UNIX sockets where a desktop session keeps them (/tmp like ssh-agent and X11,
    $XDG_RUNTIME_DIR like D-Bus, PulseAudio and Wayland, an abstract socket like X11's), marker files
    in /tmp, /dev/shm and $XDG_RUNTIME_DIR, a file in the app's own folder in your home, a folder
    anyone may write to, a TCP listener on 127.0.0.1, and this process to signal. Permissions are
    wide open, so only the sandbox (never file permissions) can be what blocks an attempt. The real
    session sockets named in the environment (SSH_AUTH_SOCK, DBUS_SESSION_BUS_ADDRESS, X11, Wayland,
    docker) are only looked at (lstat), never connected to.
    """

    def __init__(self, private_dir: Path | None = None) -> None:
        self.private_dir = private_dir  # where the "your files" probe goes (default: the app's cache folder)
        self.targets: dict[str, list[Any]] = {"unix": [], "see": [], "read": [], "write": [], "tcp": [], "signal": []}
        self._sockets: list[socket.socket] = []
        self._files: list[Path] = []
        self._dirs: list[Path] = []

    def __enter__(self) -> dict[str, list[Any]]:
        tag = secrets.token_hex(6)
        base = Path(tempfile.mkdtemp(prefix="harmonica-selfcheck-"))
        self._dirs.append(base)
        os.chmod(base, 0o755)
        t = self.targets
        if hasattr(socket, "AF_UNIX"):
            self._unix(base / "agent.sock", "a UNIX socket in /tmp (where ssh-agent and X11 keep theirs)")
            runtime = os.environ.get("XDG_RUNTIME_DIR", "")
            if runtime and os.path.isdir(runtime) and os.access(runtime, os.W_OK):
                self._unix(
                    Path(runtime) / f"harmonica-selfcheck-{tag}.sock",
                    "a UNIX socket in $XDG_RUNTIME_DIR (where D-Bus, PulseAudio and Wayland keep theirs)",
                )
                self._marker(Path(runtime) / f"harmonica-selfcheck-{tag}", "a file in your $XDG_RUNTIME_DIR")
            if sys.platform.startswith("linux"):
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.bind(f"\0harmonica-selfcheck-{tag}")
                s.listen(8)
                self._sockets.append(s)
                t["unix"].append(
                    ["an abstract UNIX socket (like X11's @/tmp/.X11-unix/X0)", f"@harmonica-selfcheck-{tag}"]
                )
        self._marker(base / "marker", "a file in your /tmp")
        if os.path.isdir("/dev/shm"):
            self._marker(Path(f"/dev/shm/harmonica-selfcheck-{tag}"), "a file in your /dev/shm")
        for label, path in self._session_paths():
            t["see"].append([label, path])
        if self.private_dir is None:
            from app.core import paths

            self.private_dir = paths.cache_dir()
        secret = self.private_dir / f"selfcheck-{tag}.txt"
        secret.write_text("harmonica self-check\n", encoding="utf-8")
        os.chmod(secret, 0o644)
        self._files.append(secret)
        t["read"].append(["a file in Harmonica's own folder in your home", str(secret)])
        writable = base / "writable"
        writable.mkdir()
        os.chmod(writable, 0o777)
        t["write"].append(["creating a file in a folder outside the scratch folder", str(writable)])
        server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        self._sockets.append(server)
        t["tcp"].append(["a TCP connection to a server on 127.0.0.1", "127.0.0.1", server.getsockname()[1]])
        t["signal"].append(["signalling Harmonica itself", os.getpid()])
        return t

    def _unix(self, path: Path, label: str) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(str(path))
        s.listen(8)
        os.chmod(path, 0o777)
        self._sockets.append(s)
        self._files.append(path)
        self.targets["unix"].append([label, str(path)])

    def _marker(self, path: Path, label: str) -> None:
        path.write_text("harmonica self-check\n", encoding="utf-8")
        os.chmod(path, 0o644)
        self._files.append(path)
        self.targets["see"].append([label, str(path)])

    @staticmethod
    def _session_paths() -> list[tuple[str, str]]:
        """The session's real sockets and folders that exist here (only looked at, never connected to)."""
        found: list[tuple[str, str]] = []
        bus = os.environ.get("DBUS_SESSION_BUS_ADDRESS", "")
        candidates = [
            ("your ssh-agent socket", os.environ.get("SSH_AUTH_SOCK", "")),
            ("your D-Bus session bus", bus.split("path=", 1)[1].split(",", 1)[0] if "path=" in bus else ""),
            ("your $XDG_RUNTIME_DIR", os.environ.get("XDG_RUNTIME_DIR", "")),
            ("the X11 sockets folder", "/tmp/.X11-unix"),
            ("the docker socket", "/var/run/docker.sock"),
        ]
        runtime, wayland = os.environ.get("XDG_RUNTIME_DIR", ""), os.environ.get("WAYLAND_DISPLAY", "")
        if runtime and wayland:
            candidates.append(("your Wayland socket", os.path.join(runtime, wayland)))
        for label, path in candidates:
            if path and os.path.isabs(path) and os.path.lexists(path):
                found.append((label, path))
        return found

    def __exit__(self, *exc: object) -> None:
        for s in self._sockets:
            s.close()
        for f in self._files:
            try:
                f.unlink()
            except OSError:
                pass
        for d in self._dirs:
            shutil.rmtree(d, ignore_errors=True)


_probe_lock = threading.Lock()
_probe_cache: dict[tuple[SandboxLimits, SandboxLayers], SandboxReport] = {}


def probe_sandbox(
    limits: SandboxLimits | None = None,
    layers: SandboxLayers | None = None,
    scratch: Path | None = None,
    *,
    fresh: bool = False,
    private_dir: Path | None = None,
) -> SandboxReport:
    """Start a throwaway kernel, make it attempt the escapes of SelfCheckTargets, and report what
    held (cached per process unless `fresh`)."""
    key = (limits or SandboxLimits(), layers or SandboxLayers())
    with _probe_lock:
        if key in _probe_cache and not fresh:
            return _probe_cache[key]
        folder = scratch or Path(tempfile.mkdtemp(prefix="harmonica-probe-"))
        k = PythonKernel(folder, *key)
        try:
            started = k.start()
            with SelfCheckTargets(private_dir) as targets:
                checks = k.self_check(targets)
            report = build_report(started.layers, key[0], checks, time.time())
        finally:
            k.close()
            if scratch is None:
                shutil.rmtree(folder, ignore_errors=True)
        _probe_cache[key] = report
        return report


__all__ = [
    "PYTHON_DESCRIPTION",
    "Check",
    "ExecResult",
    "Guarantee",
    "KernelError",
    "PythonKernel",
    "SandboxLayers",
    "SandboxLimits",
    "SandboxReport",
    "SelfCheckTargets",
    "build_report",
    "probe_sandbox",
]
