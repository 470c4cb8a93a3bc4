"""The python tool's kernel: a stateful interpreter that locks itself down, then runs cells (JSON lines).

Run by app/core/tools/python_tool.py as `python -I -X utf8 sandbox_kernel.py`. It uses only the
standard library and never imports the app. Channels: the app's commands arrive on stdin, answers
go to stdout, and everything the user's code prints (Python or C level) goes to the output pipe on
stderr; the kernel moves the first two out of the way and points fds 0/1 at /dev/null and the
output pipe before any user code runs.

The first command is the setup (limits and wanted layers); the kernel answers with the layers that
really hold, so the app reports facts, not intentions. Layers, strongest first (Linux):
  user+network namespace (no network at all), mount namespace (/mnt/data is the scratch folder),
  PID namespace (the kernel is PID 1: killing it ends every process it started), Landlock (writes
  only in scratch, reads only system and Python folders, no TCP, no signals to outside processes),
  resource limits (CPU, address space, processes, file size), and last a Python audit hook that
  refuses sockets (and, when no kernel-level layer holds, starting processes).
"""

from __future__ import annotations

import ast
import builtins
import ctypes
import ctypes.util
import io
import json
import linecache
import os
import signal
import sys
import traceback
from typing import Any

IS_LINUX = sys.platform.startswith("linux")
try:
    import resource
except ImportError:  # Windows
    resource = None  # type: ignore[assignment]

_CTL: Any = None  # commands from the app
_RESP: Any = None  # answers to the app
_KERNEL_PID = 0
_WORKDIR = ""
_SCRATCH = ""
_OUT_FD = 2
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".svg", ".gif", ".webp")


def _send(obj: dict[str, Any]) -> None:
    _RESP.write(json.dumps(obj, ensure_ascii=False) + "\n")
    _RESP.flush()


# =================================================================================================
# Linux: namespaces, mounts, Landlock (ctypes; no root needed)
# =================================================================================================
CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x00020000, 0x10000000, 0x20000000, 0x40000000
MS_BIND, MS_REC, MS_PRIVATE, MS_NOSUID, MS_NODEV = 4096, 16384, 1 << 18, 2, 4
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_SET_NO_NEW_PRIVS = 1, 4, 38
SYS_LANDLOCK_CREATE_RULESET, SYS_LANDLOCK_ADD_RULE, SYS_LANDLOCK_RESTRICT_SELF = 444, 445, 446
LANDLOCK_CREATE_RULESET_VERSION = 1
LANDLOCK_RULE_PATH_BENEATH = 1
FS_EXECUTE, FS_WRITE_FILE, FS_READ_FILE, FS_READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
FS_REMOVE_DIR, FS_REMOVE_FILE, FS_MAKE_CHAR, FS_MAKE_DIR = 1 << 4, 1 << 5, 1 << 6, 1 << 7
FS_MAKE_REG, FS_MAKE_SOCK, FS_MAKE_FIFO, FS_MAKE_BLOCK, FS_MAKE_SYM = 1 << 8, 1 << 9, 1 << 10, 1 << 11, 1 << 12
FS_REFER, FS_TRUNCATE = 1 << 13, 1 << 14
NET_BIND_TCP, NET_CONNECT_TCP = 1 << 0, 1 << 1
SCOPE_ABSTRACT_UNIX_SOCKET, SCOPE_SIGNAL = 1 << 0, 1 << 1
FILE_RIGHTS = FS_EXECUTE | FS_WRITE_FILE | FS_READ_FILE | FS_TRUNCATE


class _RulesetAttr(ctypes.Structure):
    _fields_ = [
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    ]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


_libc: Any = None


def _c() -> Any:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        _libc.syscall.restype = ctypes.c_long
    return _libc


def _err() -> str:
    return os.strerror(ctypes.get_errno())


def _write_file(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def drop_root(uid: int, gid: int) -> None:
    """Run as an unprivileged user when the app itself runs as root (resource limits bind then)."""
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    _c().prctl(PR_SET_DUMPABLE, 1, 0, 0, 0)  # /proc/self/*_map must stay writable by us


def join_pids_cgroup(limit: int, errors: list[str]) -> str | None:
    """As root, RLIMIT_NPROC binds nothing: put the kernel in its own cgroup with pids.max instead."""
    try:
        with open("/proc/self/cgroup") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    bases: list[str] = []
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        if "pids" in parts[1].split(","):
            bases.append("/sys/fs/cgroup/pids" + parts[2])
        elif parts[0] == "0" and os.path.exists("/sys/fs/cgroup/cgroup.controllers"):
            bases.append("/sys/fs/cgroup" + parts[2])
    for base in bases:
        path = os.path.join(base, f"harmonica-python-{os.getpid()}")
        try:
            os.mkdir(path)
        except OSError as exc:
            errors.append(f"cgroup {base}: {exc.strerror}")
            continue
        try:
            _write_file(os.path.join(path, "pids.max"), str(limit))
            _write_file(os.path.join(path, "cgroup.procs"), str(os.getpid()))
            return path
        except OSError as exc:
            errors.append(f"cgroup {path}: {exc.strerror}")
            try:
                os.rmdir(path)
            except OSError:
                pass
    return None


def enter_namespaces(want_pid: bool, want_mount: bool, errors: list[str]) -> int:
    """unshare() the strongest set of namespaces this system allows; returns the flags that held."""
    combos = [
        CLONE_NEWUSER | CLONE_NEWNET | CLONE_NEWNS | CLONE_NEWPID,
        CLONE_NEWUSER | CLONE_NEWNET | CLONE_NEWNS,
        CLONE_NEWUSER | CLONE_NEWNET,
    ]
    if not want_pid:
        combos = [c for c in combos if not c & CLONE_NEWPID]
    if not want_mount:
        combos = [c & ~CLONE_NEWNS for c in combos if not c & CLONE_NEWPID] or [CLONE_NEWUSER | CLONE_NEWNET]
    uid, gid = os.geteuid(), os.getegid()
    for flags in dict.fromkeys(combos):
        if _c().unshare(flags) == 0:
            try:
                _write_file("/proc/self/setgroups", "deny")
                _write_file("/proc/self/uid_map", f"{uid} {uid} 1")
                _write_file("/proc/self/gid_map", f"{gid} {gid} 1")
            except OSError as exc:
                # In a namespace without a mapping files cannot be created: the app must start
                # the kernel again without namespaces.
                errors.append(f"user namespace without an id mapping ({exc}); namespaces are unusable here")
                return -1
            return flags
        errors.append(f"unshare({flags:#x}) failed: {_err()}")
    return 0


def mount_data(scratch: str, errors: list[str]) -> bool:
    """Make /mnt/data the scratch folder (the harmony python section tells the model to use it)."""
    c = _c()
    if c.mount(None, b"/", None, MS_REC | MS_PRIVATE, None) != 0:
        errors.append(f"making mounts private failed: {_err()}")
        return False
    if not os.path.isdir("/mnt"):
        errors.append("/mnt does not exist; /mnt/data is not available")
        return False
    if c.mount(b"tmpfs", b"/mnt", b"tmpfs", MS_NOSUID | MS_NODEV, b"mode=0755,size=64k") != 0:
        errors.append(f"mounting a tmpfs on /mnt failed: {_err()}")
        return False
    try:
        os.mkdir("/mnt/data")
    except OSError as exc:
        errors.append(f"creating /mnt/data failed: {exc}")
        return False
    if c.mount(scratch.encode(), b"/mnt/data", None, MS_BIND | MS_REC, None) != 0:
        errors.append(f"binding the scratch folder to /mnt/data failed: {_err()}")
        return False
    return True


def landlock_abi() -> int:
    if not IS_LINUX:
        return 0
    abi = _c().syscall(
        SYS_LANDLOCK_CREATE_RULESET, None, ctypes.c_size_t(0), ctypes.c_uint32(LANDLOCK_CREATE_RULESET_VERSION)
    )
    return int(abi) if abi > 0 else 0


def apply_landlock(
    abi: int,
    write_dirs: list[str],
    write_files: list[str],
    read_paths: list[str] | None,
    block_tcp: bool,
    errors: list[str],
) -> dict[str, bool]:
    """Restrict this process and its children: writes only under `write_dirs` (+ `write_files`),
    reads only under `read_paths` (None: anywhere), no TCP (ABI ≥ 4), no signals or abstract Unix
    sockets reaching outside (ABI ≥ 6). Returns what was enforced."""
    got = {"fs_write": False, "fs_read": False, "net": False, "scope": False}
    if abi <= 0:
        return got
    write = (
        FS_WRITE_FILE
        | FS_REMOVE_DIR
        | FS_REMOVE_FILE
        | FS_MAKE_CHAR
        | FS_MAKE_DIR
        | FS_MAKE_REG
        | FS_MAKE_SOCK
        | FS_MAKE_FIFO
        | FS_MAKE_BLOCK
        | FS_MAKE_SYM
    )
    if abi >= 2:
        write |= FS_REFER
    if abi >= 3:
        write |= FS_TRUNCATE
    read = FS_EXECUTE | FS_READ_FILE | FS_READ_DIR
    handled = write | (read if read_paths is not None else 0)
    attr = _RulesetAttr(handled, 0, 0)
    size = 8
    if abi >= 4 and block_tcp:
        attr.handled_access_net = NET_BIND_TCP | NET_CONNECT_TCP
        size = 16
    if abi >= 6:
        attr.scoped = SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL
        size = 24
    c = _c()
    fd = c.syscall(SYS_LANDLOCK_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(size), ctypes.c_uint32(0))
    if fd < 0:
        errors.append(f"landlock_create_ruleset failed: {_err()}")
        return got

    def allow(path: str, access: int) -> None:
        try:
            pfd = os.open(path, os.O_PATH | os.O_CLOEXEC)
        except OSError:
            return  # a folder this system does not have
        try:
            if not os.path.isdir(path):
                access &= FILE_RIGHTS
            rule = _PathBeneathAttr(access & handled, pfd)
            if (
                c.syscall(
                    SYS_LANDLOCK_ADD_RULE,
                    ctypes.c_int(fd),
                    ctypes.c_int(LANDLOCK_RULE_PATH_BENEATH),
                    ctypes.byref(rule),
                    ctypes.c_uint32(0),
                )
                != 0
            ):
                errors.append(f"landlock rule for {path} failed: {_err()}")
        finally:
            os.close(pfd)

    try:
        for p in read_paths or ():
            allow(p, read)
        for p in write_dirs:
            allow(p, read | write)
        for p in write_files:
            allow(p, read | FS_WRITE_FILE | (FS_TRUNCATE if abi >= 3 else 0))
        if c.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            errors.append(f"no_new_privs failed: {_err()}")
            return got
        if c.syscall(SYS_LANDLOCK_RESTRICT_SELF, ctypes.c_int(fd), ctypes.c_uint32(0)) != 0:
            errors.append(f"landlock_restrict_self failed: {_err()}")
            return got
    finally:
        os.close(fd)
    got["fs_write"] = True
    got["fs_read"] = read_paths is not None
    got["net"] = bool(attr.handled_access_net)
    got["scope"] = bool(attr.scoped)
    return got


def fork_into_pid_namespace() -> None:
    """After unshare(CLONE_NEWPID) only children enter the namespace: fork, and let the parent wait.

    The child (PID 1 of the namespace) continues as the kernel and dies with its parent; when it
    ends, the Linux kernel kills every process left in the namespace, fork bombs included.
    """
    pid = os.fork()
    if pid == 0:
        _c().prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        return
    _send({"event": "kernel_pid", "pid": pid})
    for fd in (0, 1, 2):
        try:
            os.close(fd)
        except OSError:
            pass
    _CTL.close()
    _RESP.close()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the app interrupts the kernel (the child), not us
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            break
        except ChildProcessError:
            status = 0
            break
        except InterruptedError:
            continue
    os._exit(os.waitstatus_to_exitcode(status) & 0xFF if hasattr(os, "waitstatus_to_exitcode") else 0)


# =================================================================================================
# Limits and the audit hook
# =================================================================================================
class CpuLimitExceeded(Exception):
    """The cell used more CPU time than allowed."""


def _on_sigxcpu(signum: int, frame: Any) -> None:
    raise CpuLimitExceeded("CPU time limit reached")


def set_limits(limits: dict[str, Any], own_userns: bool, errors: list[str]) -> dict[str, Any]:
    got: dict[str, Any] = {}
    if resource is None:
        return got

    def setlim(name: str, which: int, soft: int, hard: int | None = None) -> None:
        try:
            resource.setrlimit(which, (soft, soft if hard is None else hard))
            got[name] = soft
        except (ValueError, OSError) as exc:
            errors.append(f"RLIMIT_{name.upper()} failed: {exc}")

    if limits.get("memory_bytes"):
        setlim("as", resource.RLIMIT_AS, int(limits["memory_bytes"]))
    if limits.get("file_bytes"):
        setlim("fsize", resource.RLIMIT_FSIZE, int(limits["file_bytes"]))
    setlim("core", resource.RLIMIT_CORE, 0)
    if limits.get("open_files"):
        setlim("nofile", resource.RLIMIT_NOFILE, int(limits["open_files"]))
    if limits.get("cpu_s"):
        # The soft limit is raised before each cell; the hard limit bounds the whole session.
        hard = int(max(limits.get("cpu_session_s") or 0, limits["cpu_s"] * 10))
        setlim("cpu", resource.RLIMIT_CPU, int(limits["cpu_s"]) + 1, hard)
    # Outside a user namespace RLIMIT_NPROC counts every process of this user (the desktop's
    # too), so a small number would break nothing but the user's session: only set it when
    # the count is our namespace's own.
    if limits.get("processes") and hasattr(resource, "RLIMIT_NPROC") and own_userns:
        setlim("nproc", resource.RLIMIT_NPROC, int(limits["processes"]))
    return got


_NET_BLOCKED = "Network access is disabled in this sandbox (no internet, no local network)."
_SPAWN_BLOCKED = "Starting other programs is disabled in this sandbox on this system."


def install_audit_hook(block_spawn: bool) -> None:
    """Refuse sockets other than AF_UNIX (and, if asked, process creation) at the Python level."""
    import socket as _socket

    allowed_families = {getattr(_socket, "AF_UNIX", -1)}
    spawn_events = {
        "os.system",
        "os.exec",
        "os.posix_spawn",
        "os.spawn",
        "os.fork",
        "os.forkpty",
        "subprocess.Popen",
        "pty.spawn",
        "os.startfile",
    }

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if event == "socket.__new__":
            family = args[1] if len(args) > 1 else None
            if family not in allowed_families:
                raise PermissionError(_NET_BLOCKED)
        elif event in ("socket.getaddrinfo", "socket.gethostbyname", "socket.gethostbyaddr", "socket.gethostbyname_ex"):
            raise PermissionError(_NET_BLOCKED)
        elif block_spawn and event in spawn_events:
            raise PermissionError(_SPAWN_BLOCKED)

    sys.addaudithook(hook)


# =================================================================================================
# Output, figures and running cells
# =================================================================================================
class CappedStream(io.TextIOBase):
    """sys.stdout/stderr for user code: writes go straight to the output pipe until the cell's cap."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.remaining = 0
        self.dropped = 0

    def writable(self) -> bool:
        return True

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        return self.fd

    def write(self, s: str) -> int:
        if not isinstance(s, str):
            raise TypeError(f"write() argument must be str, not {type(s).__name__}")
        if self.remaining <= 0:
            self.dropped += len(s)
            return len(s)
        if len(s) > self.remaining:  # never encode a huge string only to throw most of it away
            self.dropped += len(s) - self.remaining
            data = s[: self.remaining].encode("utf-8", "replace")
        else:
            data = s.encode("utf-8", "replace")
        if len(data) > self.remaining:
            self.dropped += len(data) - self.remaining
            data = data[: self.remaining]
        self.remaining -= len(data)
        view = memoryview(data)
        while view:
            try:
                n = os.write(self.fd, view)
            except InterruptedError:
                continue
            view = view[n:]
        return len(s)

    def flush(self) -> None:
        pass


_STDOUT = CappedStream(1)
_FIGURE_COUNT = [0]


def _save_figures() -> None:
    plt = sys.modules.get("matplotlib.pyplot")
    if plt is None:
        return
    for num in list(plt.get_fignums()):
        fig = plt.figure(num)
        _FIGURE_COUNT[0] += 1
        path = os.path.join(_WORKDIR, f"figure-{_FIGURE_COUNT[0]}.png")
        try:
            fig.savefig(path, dpi=100, bbox_inches="tight")
        except Exception as exc:  # noqa: BLE001 - a broken figure is the cell's error, reported as text
            print(f"[could not save figure {num}: {exc}]")
        plt.close(fig)


class _InlineBackend:
    """`MPLBACKEND=module://harmonica_inline`: Agg rendering, and show() saves figures to the scratch folder."""

    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        if name != "harmonica_inline":
            return None
        import importlib.util

        return importlib.util.spec_from_loader(name, self)  # type: ignore[arg-type]  # a meta-path loader

    def create_module(self, spec: Any) -> Any:
        return None

    def exec_module(self, module: Any) -> None:
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        module.FigureCanvas = FigureCanvasAgg
        module.show = lambda *args, **kwargs: _save_figures()


def _images_snapshot() -> dict[str, tuple[float, int]]:
    seen: dict[str, tuple[float, int]] = {}
    for root, dirs, files in os.walk(_SCRATCH):
        dirs[:] = [d for d in dirs if not d.startswith(".")][:50]
        for name in files:
            if name.lower().endswith(IMAGE_EXTS):
                p = os.path.join(root, name)
                try:
                    st = os.stat(p)
                except OSError:
                    continue
                seen[p] = (st.st_mtime, st.st_size)
        if len(seen) > 2000:
            break
    return seen


def _user_frames(tb: Any) -> Any:
    """Skip the kernel's own frames so the traceback starts in the user's cell."""
    while tb is not None and tb.tb_frame.f_code.co_filename == __file__:
        tb = tb.tb_next
    return tb


def _format_exception(exc: BaseException) -> str:
    tb = _user_frames(exc.__traceback__)
    return "".join(traceback.format_exception(type(exc), exc, tb))


def run_cell(ns: dict[str, Any], msg: dict[str, Any], counter: int) -> dict[str, Any]:
    code = str(msg.get("code", ""))
    _STDOUT.remaining = int(msg.get("max_output", 65536))
    _STDOUT.dropped = 0
    if resource is not None and msg.get("cpu_s"):
        used = resource.getrusage(resource.RUSAGE_SELF)
        soft = int(used.ru_utime + used.ru_stime + float(msg["cpu_s"])) + 1
        try:
            hard = resource.getrlimit(resource.RLIMIT_CPU)[1]
            resource.setrlimit(resource.RLIMIT_CPU, (min(soft, hard) if hard != resource.RLIM_INFINITY else soft, hard))
        except (ValueError, OSError):
            pass
    before = _images_snapshot()
    filename = f"<cell {counter}>"
    linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
    result: dict[str, Any] = {"ok": True, "error": None, "interrupted": False, "cpu_exceeded": False}
    try:
        tree = ast.parse(code, filename, "exec")
        last = None
        if tree.body and isinstance(tree.body[-1], ast.Expr):
            last = ast.Expression(tree.body.pop().value)  # type: ignore[attr-defined]  # an ast.Expr, checked above
        exec(compile(tree, filename, "exec"), ns)
        if last is not None:
            value = eval(compile(last, filename, "eval"), ns)
            if value is not None:
                ns["_"] = value
                print(repr(value))
    except KeyboardInterrupt:
        result.update(ok=False, interrupted=True, error="KeyboardInterrupt: execution was interrupted")
    except CpuLimitExceeded:
        result.update(ok=False, cpu_exceeded=True, error="CPU time limit reached: execution was stopped")
    except SystemExit as exc:
        result.update(ok=False, error=f"SystemExit({exc.code!r}): exit() does not end the session; its state is kept")
    except BaseException as exc:  # noqa: BLE001 - every error of the cell is its output
        result.update(ok=False, error=_format_exception(exc))
    finally:
        if os.getpid() != _KERNEL_PID:
            os._exit(0)  # a process the cell forked must not run the kernel loop
    try:
        _save_figures()
    except Exception as exc:  # noqa: BLE001
        result["error"] = (result["error"] or "") + f"\n[figures could not be saved: {exc}]"
    after = _images_snapshot()
    result["images"] = sorted(p for p, st in after.items() if before.get(p) != st)
    result["dropped_bytes"] = _STDOUT.dropped
    if _KERNEL_PID == 1 and msg.get("kill_leftovers", True):
        # PID 1 of its namespace: end every process the cell left behind (fork bombs, stray
        # background jobs) so nothing keeps running or printing into the next cell.
        try:
            os.kill(-1, signal.SIGKILL)
        except OSError:
            pass
    try:  # reap the children the cell left behind (PID 1 inherits orphans too)
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass
    except (ChildProcessError, OSError, AttributeError):
        pass
    return result


# =================================================================================================
# Start-up
# =================================================================================================
def setup(init: dict[str, Any]) -> dict[str, Any]:
    global _WORKDIR, _SCRATCH
    errors: list[str] = []
    layers: dict[str, Any] = {"platform": sys.platform, "errors": errors}
    want = init.get("layers", {})
    limits = init.get("limits", {})
    scratch = os.path.realpath(init["scratch"])
    _SCRATCH = _WORKDIR = scratch
    os.chdir(scratch)
    flags = 0
    if IS_LINUX:
        drop = init.get("drop_to")
        if drop and os.geteuid() == 0:
            try:
                drop_root(int(drop[0]), int(drop[1]))
                layers["dropped_to_uid"] = int(drop[0])
            except OSError as exc:
                errors.append(f"dropping root failed: {exc}")
        if os.geteuid() == 0 and limits.get("processes"):
            layers["pids_cgroup"] = join_pids_cgroup(int(limits["processes"]), errors)
        if want.get("namespaces", True):
            flags = enter_namespaces(want.get("pid_namespace", True), want.get("mount_namespace", True), errors)
            if flags < 0:
                layers["fatal"] = "namespaces"
                return layers
    layers["user_namespace"] = bool(flags & CLONE_NEWUSER)
    layers["network_namespace"] = bool(flags & CLONE_NEWNET)
    layers["pid_namespace"] = bool(flags & CLONE_NEWPID)
    layers["mount_namespace"] = bool(flags & CLONE_NEWNS)
    layers["mnt_data"] = False
    if flags & CLONE_NEWNS:
        layers["mnt_data"] = mount_data(scratch, errors)
    if flags & CLONE_NEWPID:
        fork_into_pid_namespace()
        layers["own_proc"] = False
        if flags & CLONE_NEWNS:
            # A /proc of the new PID namespace: the host's processes (and their command lines) vanish.
            if _c().mount(b"proc", b"/proc", b"proc", MS_NOSUID | MS_NODEV | 8, None) == 0:  # 8: MS_NOEXEC
                layers["own_proc"] = True
            else:
                errors.append(f"mounting /proc failed: {_err()}")
    if layers["mnt_data"]:
        _WORKDIR = "/mnt/data"
        os.chdir(_WORKDIR)
    abi = landlock_abi() if want.get("landlock", True) else 0
    layers["landlock_abi"] = abi
    if abi:
        read_paths = init.get("read_paths") if want.get("restrict_reads", True) else None
        got = apply_landlock(abi, [scratch], ["/dev/null"], read_paths, True, errors)
    else:
        got = {"fs_write": False, "fs_read": False, "net": False, "scope": False}
    layers["landlock"] = got
    layers["limits"] = set_limits(limits, bool(flags & CLONE_NEWUSER), errors)
    if resource is not None and hasattr(signal, "SIGXFSZ"):
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a too-big write fails with EFBIG instead of killing us
    if hasattr(signal, "SIGXCPU"):
        signal.signal(signal.SIGXCPU, _on_sigxcpu)
    # Without a namespace or Landlock, a child process would escape the audit hook's network block
    # (and nothing would count processes), so the hook refuses to start processes then.
    kernel_level = layers["network_namespace"] or got["net"]
    counted = "nproc" in layers["limits"] or bool(layers.get("pids_cgroup"))
    block_spawn = not (kernel_level and counted)
    install_audit_hook(block_spawn)
    layers["audit_hook"] = True
    layers["spawn_blocked"] = block_spawn
    layers["workdir"] = _WORKDIR
    return layers


def main() -> None:
    global _CTL, _RESP, _KERNEL_PID, _OUT_FD
    # Take the command and answer channels off fds 0/1, so user code that writes to fd 1 or reads
    # fd 0 reaches the output pipe and /dev/null, never the protocol.
    _CTL = os.fdopen(os.dup(0), "r", encoding="utf-8")
    _RESP = os.fdopen(os.dup(1), "w", encoding="utf-8")
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(2, 1)
    os.close(devnull)
    for fd in (_CTL.fileno(), _RESP.fileno()):
        os.set_inheritable(fd, False)
    init = json.loads(_CTL.readline() or "{}")
    for entry in init.get("sys_path", []):
        if entry not in sys.path:
            sys.path.append(entry)
    layers = setup(init)
    _KERNEL_PID = os.getpid()
    sys.stdin = open(os.devnull, encoding="utf-8")  # noqa: SIM115 -- lives as long as the kernel
    sys.stdout = sys.stderr = _STDOUT
    sys.meta_path.append(_InlineBackend())
    _send({"event": "ready", "layers": layers, "pid": os.getpid()})
    if layers.get("fatal"):
        return
    ns: dict[str, Any] = {"__name__": "__main__", "__builtins__": builtins}
    counter = 0
    while True:
        try:
            line = _CTL.readline()
        except KeyboardInterrupt:  # an interrupt that came between cells
            continue
        if not line:
            break
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if msg.get("op") == "exec":
            counter += 1
            try:
                result = run_cell(ns, msg, counter)
            except KeyboardInterrupt:
                result = {
                    "ok": False,
                    "interrupted": True,
                    "error": "KeyboardInterrupt",
                    "images": [],
                    "dropped_bytes": 0,
                }
            marker = str(msg.get("marker", ""))
            if marker:
                try:
                    os.write(1, marker.encode())
                except OSError:
                    pass
            result["id"] = msg.get("id")
            _send(result)
        elif msg.get("op") == "ping":
            _send({"event": "pong", "id": msg.get("id")})
        elif msg.get("op") == "quit":
            break


if __name__ == "__main__":
    main()
