"""The python tool's kernel: a supervisor that talks to the app, and a locked-down worker that runs cells.

Run by app/core/tools/python_tool/kernel.py as `python -I -X utf8 sandbox_kernel.py`. It uses only the
standard library and never imports the app. It stays one file although it is long: it runs by path under
`python -I`, so it cannot import sibling modules, and it is audited as one unit (all of the sandbox's
own code is here). Design notes (also in docs/architecture.md, "Sandbox"):

Two processes. The process the app starts is the **supervisor**: it reads the app's commands (JSON
lines on stdin) and writes answers (JSON lines on stdout). It never runs user code. It sets up the
namespaces, then forks the **worker**, which locks itself down and runs cells. The worker has no
copy of the app's channels: it gets the supervisor's commands on one pipe and returns results on
another, as length-prefixed JSON frames. Everything the worker says is treated as written by user
code (it is the same process): the supervisor caps sizes, checks types and image bytes, answers
only the cell it is waiting for, and itself writes the end-of-output marker (a per-cell secret the
worker never sees) into the output pipe. So the worker cannot forge an answer, desynchronise the
protocol, make the app read a host file, or grow the app's memory. User code's stdout/stderr (Python
and C level) go straight to the output pipe, which the app reads with a cap.

Layers of the worker, strongest first (Linux), each reported as it really held:
  user + network namespace (no network; abstract UNIX sockets are per network namespace);
  mount namespace with a minimal root (pivot_root into a tmpfs holding read-only binds of the system
  and Python folders, the scratch folder at /mnt/data, and fresh /tmp, /dev/shm, /run: the host's
  /tmp, /run/user, /dev/shm, /var/run and home are not there), or, where pivot_root is unavailable,
  fresh tmpfs mounts over those folders;
  PID namespace (the worker is PID 1 with its own /proc);
  Landlock (writes only in scratch, reads only system and Python folders, no TCP, ABI ≥ 6: no
  signals or abstract UNIX sockets reaching outside);
  all capabilities dropped; a seccomp filter (no AF_UNIX sockets except socketpair, no sockets at
  all without a network namespace, no io_uring, ptrace, keyrings, mounts, namespaces);
  resource limits; and last a Python audit hook (sockets, UNIX addresses outside scratch, and where
  no kernel-level layer holds, starting processes).
Where os.fork does not exist (Windows) the kernel runs as one process and says the results channel
is shared with user code.
"""

from __future__ import annotations

import ast
import base64
import binascii
import builtins
import ctypes
import ctypes.util
import errno
import io
import json
import linecache
import os
import platform
import select
import signal
import stat
import struct
import sys
import traceback
from typing import Any

IS_LINUX = sys.platform.startswith("linux")
try:
    import resource
except ImportError:  # Windows
    resource = None  # type: ignore[assignment]

# What one cell may hand back (the supervisor enforces these; the app checks again).
MAX_ERROR_CHARS = 64 * 1024
MAX_IMAGES = 8
MAX_IMAGE_BYTES = 4 * 1024 * 1024
MAX_IMAGES_BYTES = 12 * 1024 * 1024
MAX_NOTE_CHARS = 2000
MAX_FRAME_BYTES = 20 * 1024 * 1024  # one worker frame: the images in base64 and the rest
MAX_APP_LINE_BYTES = 64 * 1024 * 1024
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".gif", ".webp")

_KERNEL_PID = 0
_WORKDIR = ""
_SCRATCH = ""


def image_kind(data: bytes) -> str | None:
    """The MIME type of raster image bytes by their signature, or None (SVG is refused: it can load files)."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if len(data) >= 12 and data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        return "image/webp"
    return None


# =================================================================================================
# Linux: namespaces, mounts, capabilities, Landlock, seccomp (ctypes; no root needed)
# =================================================================================================
CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x00020000, 0x10000000, 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT = 1, 2, 4, 8, 32
MS_NOATIME, MS_NODIRATIME, MS_BIND, MS_REC, MS_PRIVATE, MS_RELATIME = 1024, 2048, 4096, 16384, 1 << 18, 1 << 21
MNT_DETACH = 2
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_SET_SECCOMP, PR_CAPBSET_DROP = 1, 4, 22, 24
PR_SET_NO_NEW_PRIVS, PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 38, 47, 4
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
AF_UNIX, AF_INET, SOCK_STREAM = 1, 2, 1

# Syscalls added since Linux 5.1 have one number on every architecture (like Landlock's above).
_DENY_NEW = {
    "io_uring_setup": 425,
    "io_uring_enter": 426,
    "io_uring_register": 427,
    "open_tree": 428,
    "move_mount": 429,
    "fsopen": 430,
    "fsconfig": 431,
    "fsmount": 432,
    "fspick": 433,
    "pidfd_getfd": 438,
    "mount_setattr": 442,
}
# Syscall numbers the seccomp filter and pivot_root need, per architecture (audit arch, numbers).
_ARCH: dict[str, dict[str, Any]] = {
    "x86_64": {
        "audit": 0xC000003E,
        "x32_bit": 0x40000000,
        "socket": 41,
        "pivot_root": 155,
        "deny": {
            "ptrace": 101,
            "mount": 165,
            "umount2": 166,
            "pivot_root": 155,
            "add_key": 248,
            "request_key": 249,
            "keyctl": 250,
            "unshare": 272,
            "setns": 308,
            "process_vm_readv": 310,
            "process_vm_writev": 311,
            **_DENY_NEW,
        },
    },
    "aarch64": {
        "audit": 0xC00000B7,
        "x32_bit": None,
        "socket": 198,
        "pivot_root": 41,
        "deny": {
            "ptrace": 117,
            "mount": 40,
            "umount2": 39,
            "pivot_root": 41,
            "add_key": 217,
            "request_key": 218,
            "keyctl": 219,
            "unshare": 97,
            "setns": 268,
            "process_vm_readv": 270,
            "process_vm_writev": 271,
            **_DENY_NEW,
        },
    },
}
_MACHINE = {"amd64": "x86_64", "arm64": "aarch64"}.get(platform.machine().lower(), platform.machine().lower())


class _RulesetAttr(ctypes.Structure):
    _fields_ = [
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    ]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


class _SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_uint16), ("filter", ctypes.POINTER(_SockFilter))]


class _SockaddrIn(ctypes.Structure):
    _fields_ = [
        ("family", ctypes.c_uint16),
        ("port", ctypes.c_uint16),
        ("addr", ctypes.c_uint32),
        ("zero", ctypes.c_char * 8),
    ]


_libc: Any = None


def _c() -> Any:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        _libc.syscall.restype = ctypes.c_long
        if IS_LINUX:
            _libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_void_p]
            _libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
            _libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    return _libc


def _prctl(op: int, a: int = 0, b: int = 0, c: int = 0, d: int = 0) -> int:
    return int(_c().prctl(op, a, b, c, d))


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
    _prctl(PR_SET_DUMPABLE, 1)  # /proc/self/*_map must stay writable by us


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


def _mount(src: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> bool:
    got: int = _c().mount(
        src.encode() if src is not None else None,
        target.encode(),
        fstype.encode() if fstype is not None else None,
        flags,
        data.encode() if data is not None else None,
    )
    return got == 0


def _mount_flags_of(path: str) -> int:
    """The MS_* flags a bind remount must keep (a user namespace may not clear locked ones)."""
    try:
        f = os.statvfs(path).f_flag
    except OSError:
        return 0
    out = 0
    for st_flag, ms_flag in (
        (getattr(os, "ST_NOSUID", 2), MS_NOSUID),
        (getattr(os, "ST_NODEV", 4), MS_NODEV),
        (getattr(os, "ST_NOEXEC", 8), MS_NOEXEC),
        (getattr(os, "ST_NOATIME", 1024), MS_NOATIME),
        (getattr(os, "ST_NODIRATIME", 2048), MS_NODIRATIME),
        (getattr(os, "ST_RELATIME", 4096), MS_RELATIME),
    ):
        if f & st_flag:
            out |= ms_flag
    return out


def _remount(target: str, extra: int, errors: list[str]) -> None:
    keep = _mount_flags_of(target)
    if _mount(None, target, None, MS_REMOUNT | MS_BIND | keep | extra):
        return
    if not _mount(None, target, None, MS_REMOUNT | MS_BIND | keep | extra | MS_NOSUID | MS_NODEV):
        errors.append(f"remounting {target} failed: {_err()}")


def _covered(path: str, done: list[str]) -> bool:
    return any(path == d or path.startswith(d.rstrip("/") + "/") for d in done)


def _mkdirs(path: str) -> None:
    os.makedirs(path, mode=0o755, exist_ok=True)


def build_minimal_root(
    scratch: str, read_paths: list[str], own_proc: bool, tmp_bytes: int, errors: list[str]
) -> tuple[str, bool]:
    """pivot_root into a tmpfs holding only what Python needs: ("pivot", own /proc), or ("", False).

    Sources are opened before anything is mounted, since the scratch folder or Python may live
    under a folder that the new root's tmpfs covers; binds go through /proc/self/fd.
    """
    arch = _ARCH.get(_MACHINE)
    if arch is None:
        errors.append(f"pivot_root: no syscall number for {_MACHINE}")
        return "", False
    if not _mount(None, "/", None, MS_REC | MS_PRIVATE):
        errors.append(f"making mounts private failed: {_err()}")
        return "", False
    links: dict[str, str] = {}
    binds: dict[str, int] = {}
    try:
        scratch_fd = os.open(scratch, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        errors.append(f"opening the scratch folder failed: {exc}")
        return "", False
    wanted = [p for p in read_paths if p not in ("/proc", "/dev", "/tmp", "/run")]
    for p in sorted(dict.fromkeys(wanted), key=len):
        if not os.path.isabs(p) or not os.path.exists(p):
            continue
        real = os.path.realpath(p)
        if os.path.islink(p) and os.path.realpath(os.path.dirname(p)) == os.path.dirname(p):
            links[p] = os.readlink(p)  # /bin -> usr/bin stays a link in the new root
        if _covered(real, list(binds)):
            continue
        try:
            binds[real] = os.open(real, os.O_PATH | os.O_CLOEXEC)
        except OSError:
            continue
    devs = {}
    for name in ("null", "zero", "full", "random", "urandom"):
        try:
            devs[name] = os.open(f"/dev/{name}", os.O_PATH | os.O_CLOEXEC)
        except OSError:
            pass
    host_proc = None if own_proc else os.open("/proc", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    root = "/tmp"
    try:
        if not _mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=1m"):
            errors.append(f"mounting the new root failed: {_err()}")
            return "", False
        # Fresh /tmp and /run first, then the binds: a Python or virtualenv that lives under /tmp
        # (CI, throwaway environments) is then bound on top of the fresh /tmp instead of hidden by it.
        for path, opts in (("/tmp", f"mode=1777,size={tmp_bytes}"), ("/run", "mode=0755,size=64k")):
            _mkdirs(root + path)
            if not _mount("tmpfs", root + path, "tmpfs", MS_NOSUID | MS_NODEV, opts):
                errors.append(f"mounting {path} failed: {_err()}")
        for path, fd in binds.items():
            target = root + path
            if os.path.isdir(f"/proc/self/fd/{fd}"):
                _mkdirs(target)
            else:
                _mkdirs(os.path.dirname(target))
                open(target, "a").close()
            if not _mount(f"/proc/self/fd/{fd}", target, None, MS_BIND | MS_REC):
                errors.append(f"binding {path} failed: {_err()}")
                continue
            _remount(target, MS_RDONLY | MS_NOSUID | MS_NODEV, errors)
        for path, dest in links.items():
            if not os.path.lexists(root + path):
                _mkdirs(os.path.dirname(root + path))
                os.symlink(dest, root + path)
        _mkdirs(root + "/mnt/data")
        if not _mount(f"/proc/self/fd/{scratch_fd}", root + "/mnt/data", None, MS_BIND | MS_REC):
            errors.append(f"binding the scratch folder failed: {_err()}")
            return "", False
        _remount(root + "/mnt/data", MS_NOSUID | MS_NODEV, errors)
        _mkdirs(root + "/dev")
        if _mount("tmpfs", root + "/dev", "tmpfs", MS_NOSUID | MS_NOEXEC, "mode=0755,size=64k"):
            for name, fd in devs.items():
                open(f"{root}/dev/{name}", "a").close()
                if not _mount(f"/proc/self/fd/{fd}", f"{root}/dev/{name}", None, MS_BIND):
                    errors.append(f"binding /dev/{name} failed: {_err()}")
            for name, dest in (
                ("fd", "/proc/self/fd"),
                ("stdin", "/proc/self/fd/0"),
                ("stdout", "/proc/self/fd/1"),
                ("stderr", "/proc/self/fd/2"),
            ):
                os.symlink(dest, f"{root}/dev/{name}")
            _mkdirs(root + "/dev/shm")
            _mount("tmpfs", root + "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, f"mode=1777,size={tmp_bytes}")
        else:
            errors.append(f"mounting /dev failed: {_err()}")
        _mkdirs(root + "/var")
        for name, dest in (("run", "../run"), ("tmp", "../tmp")):
            if not os.path.lexists(f"{root}/var/{name}"):
                os.symlink(dest, f"{root}/var/{name}")
        _mkdirs(root + "/proc")
        got_proc = False
        if own_proc:
            # A /proc of the new PID namespace (mounted while the host's /proc is still visible,
            # which the kernel requires): the host's processes and their command lines vanish.
            got_proc = _mount("proc", root + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
            if not got_proc:
                errors.append(f"mounting /proc failed: {_err()}")
        if not got_proc and host_proc is not None:
            _mount(f"/proc/self/fd/{host_proc}", root + "/proc", None, MS_BIND | MS_REC)
        os.mkdir(root + "/.old")
        c = _c()
        if hasattr(c, "pivot_root"):
            c.pivot_root.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
            ok = c.pivot_root(root.encode(), (root + "/.old").encode()) == 0
        else:
            ok = c.syscall(ctypes.c_long(arch["pivot_root"]), root.encode(), (root + "/.old").encode()) == 0
        if not ok:
            errors.append(f"pivot_root failed: {_err()}")
            return "", False
        os.chdir("/")
        if c.umount2(b"/.old", MNT_DETACH) != 0:
            errors.append(f"detaching the old root failed: {_err()}")
            return "", False
        os.rmdir("/.old")
        _remount("/", MS_RDONLY | MS_NOSUID | MS_NODEV, errors)
        return "pivot", got_proc
    finally:
        for fd in [scratch_fd, *binds.values(), *devs.values(), *([host_proc] if host_proc is not None else [])]:
            try:
                os.close(fd)
            except OSError:
                pass


def cover_host_folders(scratch: str, own_proc: bool, tmp_bytes: int, errors: list[str]) -> tuple[str, bool]:
    """Without pivot_root: /mnt/data is the scratch folder, and fresh tmpfs mounts hide /tmp, /run, /dev/shm."""
    if not _mount(None, "/", None, MS_REC | MS_PRIVATE):
        errors.append(f"making mounts private failed: {_err()}")
        return "", False
    try:
        scratch_fd = os.open(scratch, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        errors.append(f"opening the scratch folder failed: {exc}")
        return "", False
    try:
        if not os.path.isdir("/mnt") or not _mount(
            "tmpfs", "/mnt", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=64k"
        ):
            errors.append(f"mounting a tmpfs on /mnt failed: {_err()}")
            return "", False
        os.mkdir("/mnt/data")
        if not _mount(f"/proc/self/fd/{scratch_fd}", "/mnt/data", None, MS_BIND | MS_REC):
            errors.append(f"binding the scratch folder to /mnt/data failed: {_err()}")
            return "", False
    finally:
        os.close(scratch_fd)
    covered = True
    for path, opts in (
        ("/tmp", f"mode=1777,size={tmp_bytes}"),
        ("/var/tmp", "mode=1777,size=1m"),
        ("/dev/shm", f"mode=1777,size={tmp_bytes}"),
        ("/run", "mode=0755,size=64k"),
    ):
        if os.path.islink(path) or not os.path.isdir(path):
            continue
        if not _mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV, opts):
            errors.append(f"covering {path} failed: {_err()}")
            covered = False
    got_proc = False
    if own_proc:
        got_proc = _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
        if not got_proc:
            errors.append(f"mounting /proc failed: {_err()}")
    return ("overlay" if covered else "partial"), got_proc


def drop_capabilities(errors: list[str]) -> bool:
    """Give up every capability (the user namespace granted them all): no mounts, no unmounting the
    tmpfs that hides the host's folders, nothing that needs privileges inside the namespace."""
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            last = int(f.read().strip())
    except (OSError, ValueError):
        last = 63
    for cap in range(last + 1):
        _prctl(PR_CAPBSET_DROP, cap)
    _prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)
    header = (ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this thread
    data = (ctypes.c_uint32 * 6)()
    if _c().capset(ctypes.byref(header), ctypes.byref(data)) != 0:
        errors.append(f"dropping capabilities failed: {_err()}")
        return False
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return int(line.split()[1], 16) == 0
    except OSError:
        pass
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
        if _prctl(PR_SET_NO_NEW_PRIVS, 1) != 0:
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


def seccomp_program(block_all_sockets: bool) -> list[tuple[int, int, int, int]] | None:
    """A classic-BPF seccomp filter for this architecture, or None where the numbers are unknown.

    socket(AF_UNIX, …) fails with EPERM (socketpair() stays allowed, for pipes between threads and
    processes); with `block_all_sockets` (no network namespace) every socket() does. io_uring
    (which creates sockets without socket()), ptrace and process_vm_*, pidfd_getfd (stealing
    another process's fds), keyrings (the session's secrets), mounts and namespaces fail with
    EPERM. System calls of another ABI (i386, x32) fail with ENOSYS.
    """
    arch = _ARCH.get(_MACHINE)
    if arch is None:
        return None
    ld, jeq, jge, ret = 0x20, 0x15, 0x35, 0x06
    allow, eperm, enosys = 0x7FFF0000, 0x00050000 | errno.EPERM, 0x00050000 | errno.ENOSYS
    deny_nrs = sorted(set(arch["deny"].values()))
    prog: list[tuple[int, int, int, int]] = []
    # Instruction indexes are laid out first; jumps are relative (target - index - 1).
    n_head = 4 + (1 if arch["x32_bit"] else 0)  # ld arch, jeq, ret, ld nr, (jge x32)
    i_socket_jeq = n_head
    i_first_deny = i_socket_jeq + 1
    i_allow = i_first_deny + len(deny_nrs)
    i_deny = i_allow + 1
    i_enosys = i_deny + 1
    i_socket = i_enosys + 1
    prog.append((ld, 0, 0, 4))  # seccomp_data.arch
    prog.append((jeq, 1, 0, arch["audit"]))
    prog.append((ret, 0, 0, enosys))
    prog.append((ld, 0, 0, 0))  # seccomp_data.nr
    if arch["x32_bit"]:
        prog.append((jge, i_enosys - len(prog) - 1, 0, arch["x32_bit"]))
    prog.append((jeq, i_socket - len(prog) - 1, 0, arch["socket"]))
    for nr in deny_nrs:
        prog.append((jeq, i_deny - len(prog) - 1, 0, nr))
    prog.append((ret, 0, 0, allow))
    prog.append((ret, 0, 0, eperm))
    prog.append((ret, 0, 0, enosys))
    if block_all_sockets:
        prog.append((ret, 0, 0, eperm))
    else:
        prog.append((ld, 0, 0, 16))  # args[0] (the family), low 32 bits on little-endian machines
        prog.append((jeq, 0, 1, AF_UNIX))
        prog.append((ret, 0, 0, eperm))
        prog.append((ret, 0, 0, allow))
    assert len(prog) - 1 >= i_socket and all(0 <= jt < 256 and 0 <= jf < 256 for _c, jt, jf, _k in prog)
    return prog


def apply_seccomp(block_all_sockets: bool, errors: list[str]) -> dict[str, Any]:
    got: dict[str, Any] = {"active": False, "arch": _MACHINE, "unix_blocked": False, "all_sockets_blocked": False}
    if not IS_LINUX:
        return got
    if sys.byteorder != "little":
        errors.append("seccomp: the filter reads socket families as little-endian words")
        return got
    prog = seccomp_program(block_all_sockets)
    if prog is None:
        errors.append(f"seccomp: no filter for the {_MACHINE} architecture")
        return got
    filters = (_SockFilter * len(prog))(*[_SockFilter(*ins) for ins in prog])
    fprog = _SockFprog(len(prog), ctypes.cast(filters, ctypes.POINTER(_SockFilter)))
    if _prctl(PR_SET_NO_NEW_PRIVS, 1) != 0:
        errors.append(f"no_new_privs failed: {_err()}")
        return got
    if _prctl(PR_SET_SECCOMP, 2, ctypes.addressof(fprog)) != 0:  # SECCOMP_MODE_FILTER
        errors.append(f"seccomp filter failed: {_err()}")
        return got
    got.update(active=True, unix_blocked=True, all_sockets_blocked=block_all_sockets)
    return got


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
_UNIX_BLOCKED = "Connecting to programs outside the sandbox (UNIX sockets) is disabled in this sandbox."
_SPAWN_BLOCKED = "Starting other programs is disabled in this sandbox on this system."


def _inside(path: str, folder: str) -> bool:
    real = os.path.realpath(path)
    return real == folder or real.startswith(folder.rstrip("/") + "/")


def install_audit_hook(block_spawn: bool, workdirs: list[str]) -> None:
    """Refuse network sockets, UNIX addresses outside the scratch folder and (if asked) process
    creation at the Python level. The last layer: ctypes can get past it, the kernel layers cannot."""
    import socket as _socket

    unix = getattr(_socket, "AF_UNIX", -1)
    folders = [os.path.realpath(w) for w in workdirs if w]
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
            if family != unix:
                raise PermissionError(_NET_BLOCKED)
        elif event in ("socket.connect", "socket.sendto", "socket.bind") and len(args) > 1:
            sock, address = args[0], args[1]
            if getattr(sock, "family", None) == unix and isinstance(address, (str, bytes)):
                path = os.fsdecode(address)
                if not path or path.startswith("\0") or not any(_inside(path, f) for f in folders):
                    raise PermissionError(_UNIX_BLOCKED)
        elif event in ("socket.getaddrinfo", "socket.gethostbyname", "socket.gethostbyaddr", "socket.gethostbyname_ex"):
            raise PermissionError(_NET_BLOCKED)
        elif block_spawn and event in spawn_events:
            raise PermissionError(_SPAWN_BLOCKED)

    sys.addaudithook(hook)


# =================================================================================================
# The live self-check: real escape attempts, at the system-call level (past the audit hook)
# =================================================================================================
def _raw_connect_unix(path: str) -> str | None:
    """None when connect() succeeded (the escape worked), else why it failed."""
    c = _c()
    fd = c.socket(AF_UNIX, SOCK_STREAM, 0)
    if fd < 0:
        return f"socket(): {_err()}"
    try:
        raw = path.encode() if not path.startswith("@") else b"\0" + path[1:].encode()
        raw = raw[:107] if raw.startswith(b"\0") else raw[:107] + b"\0"
        addr = struct.pack("=H", AF_UNIX) + raw  # an abstract name starts with NUL: no c_char array
        buf = ctypes.create_string_buffer(addr, len(addr))
        if c.connect(fd, buf, len(addr)) != 0:
            return f"connect(): {_err()}"
        return None
    finally:
        c.close(fd)


def _raw_connect_tcp(host: str, port: int) -> str | None:
    c = _c()
    fd = c.socket(AF_INET, SOCK_STREAM, 0)
    if fd < 0:
        return f"socket(): {_err()}"
    try:
        a, b, d, e = (int(x) for x in host.split("."))
        addr = _SockaddrIn(AF_INET, ((port & 0xFF) << 8) | (port >> 8), a | b << 8 | d << 16 | e << 24, b"")
        if c.connect(fd, ctypes.byref(addr), ctypes.sizeof(addr)) != 0:
            return f"connect(): {_err()}"
        return None
    finally:
        c.close(fd)


def run_selfcheck(targets: dict[str, Any]) -> list[dict[str, Any]]:
    """Try each escape the app set up; `blocked` is what really happened."""
    out: list[dict[str, Any]] = []

    def record(kind: str, label: str, failure: str | None) -> None:
        out.append({"kind": kind, "label": label, "blocked": failure is not None, "how": failure or "succeeded"})

    for label, path in targets.get("unix", []):
        record("unix", label, _raw_connect_unix(str(path)))
    for label, path in targets.get("see", []):
        try:
            os.lstat(str(path))
            failure = None
        except OSError as exc:
            failure = exc.strerror or str(exc)
        record("see", label, failure)
    for label, path in targets.get("read", []):
        try:
            with open(str(path), "rb") as f:
                f.read(16)
            failure = None
        except OSError as exc:
            failure = exc.strerror or str(exc)
        record("read", label, failure)
    for label, folder in targets.get("write", []):
        probe = os.path.join(str(folder), f"harmonica-selfcheck-{os.getpid()}")
        try:
            fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            os.close(fd)
            os.unlink(probe)
            failure = None
        except OSError as exc:
            failure = exc.strerror or str(exc)
        record("write", label, failure)
    for label, host, port in targets.get("tcp", []):
        record("tcp", label, _raw_connect_tcp(str(host), int(port)))
    for label, pid in targets.get("signal", []):
        try:
            os.kill(int(pid), 0)
            failure = None
        except OSError as exc:
            failure = exc.strerror or str(exc)
        record("signal", label, failure)
    return out


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


def _images_snapshot() -> dict[str, tuple[float, int, int]]:
    """Regular image files in the working folder (symlinks, FIFOs and devices are never listed)."""
    seen: dict[str, tuple[float, int, int]] = {}
    for root, dirs, files in os.walk(_WORKDIR):
        dirs[:] = [d for d in dirs if not d.startswith(".")][:50]
        for name in files:
            if name.lower().endswith(IMAGE_EXTS):
                p = os.path.join(root, name)
                try:
                    st = os.lstat(p)
                except OSError:
                    continue
                if stat.S_ISREG(st.st_mode):
                    seen[p] = (st.st_mtime, st.st_size, st.st_ino)
        if len(seen) > 2000:
            break
    return seen


def read_regular_file(path: str, limit: int) -> bytes:
    """A regular file's bytes, never blocking: FIFOs, devices, sockets, symlinks and hard links are refused."""
    st = os.lstat(path)
    if not stat.S_ISREG(st.st_mode):
        raise OSError(errno.EINVAL, "not a regular file")
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        if st.st_nlink != 1:
            raise OSError(errno.EMLINK, "a hard link to another file")
        if st.st_size > limit:
            raise OSError(errno.EFBIG, f"larger than {limit // 1024**2} MiB")
        data = os.read(fd, limit + 1)
        if len(data) > limit:
            raise OSError(errno.EFBIG, f"larger than {limit // 1024**2} MiB")
        return data
    finally:
        os.close(fd)


def _collect_images(before: dict[str, tuple[float, int, int]]) -> tuple[list[dict[str, str]], list[str]]:
    """The image files the cell made or changed, as bytes (never paths: the app never opens scratch files)."""
    after = _images_snapshot()
    images: list[dict[str, str]] = []
    notes: list[str] = []
    total = 0
    for path in sorted(p for p, st in after.items() if before.get(p) != st):
        name = os.path.relpath(path, _WORKDIR)
        if len(images) >= MAX_IMAGES:
            notes.append(f"[more than {MAX_IMAGES} images: {name} and later ones are not shown]")
            break
        try:
            data = read_regular_file(path, MAX_IMAGE_BYTES)
        except OSError as exc:
            notes.append(f"[image {name} is not shown: {exc.strerror or exc}]")
            continue
        if image_kind(data) is None:
            notes.append(f"[image {name} is not shown: it is not a PNG, JPEG, GIF or WebP image]")
            continue
        if total + len(data) > MAX_IMAGES_BYTES:
            notes.append(f"[image {name} is not shown: the images of one run are limited to 12 MiB]")
            continue
        total += len(data)
        images.append({"name": name, "data": base64.b64encode(data).decode("ascii")})
    return images, notes


def _user_frames(tb: Any) -> Any:
    """Skip the kernel's own frames so the traceback starts in the user's cell."""
    while tb is not None and tb.tb_frame.f_code.co_filename == __file__:
        tb = tb.tb_next
    return tb


def _format_exception(exc: BaseException) -> str:
    tb = _user_frames(exc.__traceback__)
    try:
        text = "".join(traceback.format_exception(type(exc), exc, tb))
    except BaseException as inner:  # noqa: BLE001 - a hostile __str__ must not end the kernel
        text = f"{type(exc).__name__} (its message could not be shown: {type(inner).__name__})"
    if len(text) > MAX_ERROR_CHARS:
        text = text[: MAX_ERROR_CHARS // 2] + "\n[… error message truncated …]\n" + text[-MAX_ERROR_CHARS // 4 :]
    return text


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
    result["images"], result["notes"] = _collect_images(before)
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
# Channels between the supervisor and the worker
# =================================================================================================
class ProtocolError(Exception):
    """The worker broke the frame protocol (user code wrote to the results pipe)."""


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except InterruptedError:
            continue
        view = view[n:]


def encode_frame(obj: dict[str, Any]) -> bytes:
    data = json.dumps(obj, ensure_ascii=False).encode("utf-8")
    return struct.pack(">I", len(data)) + data


class FrameReader:
    """Length-prefixed JSON frames, each at most `limit` bytes; anything else is a ProtocolError."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.buf = bytearray()

    def feed(self, data: bytes) -> list[Any]:
        self.buf += data
        out: list[Any] = []
        while len(self.buf) >= 4:
            (size,) = struct.unpack(">I", self.buf[:4])
            if size > self.limit:
                raise ProtocolError(f"a frame of {size:,} bytes (the limit is {self.limit:,})")
            if len(self.buf) < 4 + size:
                break
            body = bytes(self.buf[4 : 4 + size])
            del self.buf[: 4 + size]
            try:
                obj = json.loads(body)
            except ValueError as exc:
                raise ProtocolError(f"a frame that is not JSON ({exc})") from None
            if not isinstance(obj, dict):
                raise ProtocolError("a frame that is not a JSON object")
            out.append(obj)
        return out


class WorkerChannel:
    """The worker's side: commands from the supervisor (trusted), results to it."""

    def __init__(self, rfd: int, wfd: int) -> None:
        self.rfd, self.wfd = rfd, wfd
        self.reader = FrameReader(MAX_APP_LINE_BYTES)
        self.pending: list[Any] = []

    def recv(self) -> dict[str, Any] | None:
        while not self.pending:
            data = os.read(self.rfd, 1 << 16)
            if not data:
                return None
            self.pending += self.reader.feed(data)
        msg: dict[str, Any] = self.pending.pop(0)
        return msg

    def send(self, obj: dict[str, Any]) -> None:
        _write_all(self.wfd, encode_frame(obj))


class LineChannel:
    """Single-process mode (no fork): JSON lines to and from the app; the worker writes the marker."""

    def __init__(self, ctl: Any, resp_fd: int, out_fd: int) -> None:
        self.ctl, self.resp_fd, self.out_fd = ctl, resp_fd, out_fd

    def recv(self) -> dict[str, Any] | None:
        while True:
            line = self.ctl.readline()
            if not line:
                return None
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            if isinstance(msg, dict):
                if msg.get("op") == "exec":
                    msg["seq"] = msg.get("id")
                return msg

    def send(self, obj: dict[str, Any]) -> None:
        if "seq" in obj and "marker" in obj:
            _write_all(self.out_fd, str(obj.pop("marker")).encode())
        if "seq" in obj:
            obj["id"] = obj.pop("seq")
        if "checks" in obj:
            obj["event"] = "selfcheck"
        _write_all(self.resp_fd, (json.dumps(obj, ensure_ascii=False) + "\n").encode())


# =================================================================================================
# The worker
# =================================================================================================
def setup_worker(init: dict[str, Any], flags: int, layers: dict[str, Any], errors: list[str]) -> None:
    """Lock this process down (it runs the cells); record in `layers` what really held."""
    global _WORKDIR, _SCRATCH
    want = init.get("layers", {})
    limits = init.get("limits", {})
    scratch = os.path.realpath(init["scratch"])
    read_paths = [str(p) for p in init.get("read_paths") or []]
    tmp_bytes = int(limits.get("tmp_bytes") or 64 * 1024 * 1024)
    own_pid_ns = bool(flags & CLONE_NEWPID)
    layers["mounts"] = ""
    layers["own_proc"] = False
    if flags & CLONE_NEWNS:
        how, got_proc = "", False
        if want.get("minimal_root", True):
            how, got_proc = build_minimal_root(scratch, read_paths, own_pid_ns, tmp_bytes, errors)
        if not how:
            how, got_proc = cover_host_folders(scratch, own_pid_ns, tmp_bytes, errors)
        layers["mounts"] = how
        layers["own_proc"] = got_proc
    layers["mnt_data"] = bool(layers["mounts"])
    _SCRATCH = _WORKDIR = scratch
    if layers["mnt_data"]:
        _WORKDIR = "/mnt/data"
        for key, sub in (
            ("HOME", ""),
            ("USERPROFILE", ""),
            ("TMPDIR", ".tmp"),
            ("TEMP", ".tmp"),
            ("TMP", ".tmp"),
            ("MPLCONFIGDIR", ".matplotlib"),
            ("XDG_CACHE_HOME", ".cache"),
        ):
            os.environ[key] = os.path.join(_WORKDIR, sub) if sub else _WORKDIR
    os.chdir(_WORKDIR)
    pivoted = layers["mounts"] == "pivot"
    abi = landlock_abi() if want.get("landlock", True) else 0
    layers["landlock_abi"] = abi
    if abi:
        reads = read_paths if want.get("restrict_reads", True) else None
        if pivoted or layers["mounts"] == "overlay":  # /tmp and /dev/shm are the sandbox's own tmpfs
            writable = [scratch, _WORKDIR, "/tmp", "/dev/shm"] if not pivoted else [_WORKDIR, "/tmp", "/dev/shm"]
        elif layers["mnt_data"]:
            writable = [scratch, _WORKDIR]
        else:
            writable = [scratch]
        got = apply_landlock(abi, writable, ["/dev/null"], reads, True, errors)
    else:
        got = {"fs_write": False, "fs_read": False, "net": False, "scope": False}
    layers["landlock"] = got
    layers["limits"] = set_limits(limits, bool(flags & CLONE_NEWUSER), errors)
    if resource is not None and hasattr(signal, "SIGXFSZ"):
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a too-big write fails with EFBIG instead of killing us
    if hasattr(signal, "SIGXCPU"):
        signal.signal(signal.SIGXCPU, _on_sigxcpu)
    layers["caps_dropped"] = drop_capabilities(errors) if flags & CLONE_NEWUSER else False
    if want.get("seccomp", True):
        layers["seccomp"] = apply_seccomp(not (flags & CLONE_NEWNET), errors)
    else:
        layers["seccomp"] = {"active": False, "arch": _MACHINE, "unix_blocked": False, "all_sockets_blocked": False}
    # Without a namespace, Landlock or seccomp, a child process would escape the audit hook's
    # network block (and nothing would count processes), so the hook refuses to start processes then.
    kernel_level = layers["network_namespace"] or got["net"] or layers["seccomp"]["all_sockets_blocked"]
    counted = "nproc" in layers["limits"] or bool(layers.get("pids_cgroup"))
    block_spawn = not (kernel_level and counted)
    install_audit_hook(block_spawn, [_WORKDIR, scratch])
    layers["audit_hook"] = True
    layers["spawn_blocked"] = block_spawn
    layers["workdir"] = _WORKDIR


def worker_loop(chan: Any, ready: dict[str, Any]) -> None:
    global _KERNEL_PID
    _KERNEL_PID = os.getpid()
    sys.stdin = open(os.devnull, encoding="utf-8")  # noqa: SIM115 -- lives as long as the kernel
    sys.stdout = sys.stderr = _STDOUT
    sys.meta_path.append(_InlineBackend())
    chan.send(ready)
    ns: dict[str, Any] = {"__name__": "__main__", "__builtins__": builtins}
    counter = 0
    while True:
        try:
            msg = chan.recv()
        except KeyboardInterrupt:  # an interrupt that came between cells
            continue
        if msg is None:
            break
        op = msg.get("op")
        if op == "exec":
            counter += 1
            try:
                result = run_cell(ns, msg, counter)
            except KeyboardInterrupt:
                result = {"ok": False, "interrupted": True, "error": "KeyboardInterrupt", "images": []}
            result["seq"] = msg.get("seq")
            if "marker" in msg:  # single-process mode only: the supervisor writes it otherwise
                result["marker"] = msg["marker"]
            chan.send(result)
        elif op == "selfcheck":
            try:
                checks = run_selfcheck(msg.get("targets") or {})
            except Exception as exc:  # noqa: BLE001 - reported, never fatal
                checks = [{"kind": "error", "label": "self-check", "blocked": False, "how": str(exc)}]
            chan.send({"seq": msg.get("seq"), "checks": checks})
        elif op == "ping":
            chan.send({"event": "pong", "seq": msg.get("seq")})
        elif op == "quit":
            break


# =================================================================================================
# The supervisor
# =================================================================================================
def _cap_text(value: Any, limit: int) -> str | None:
    if value is None:
        return None
    text = value if isinstance(value, str) else str(value)
    return text if len(text) <= limit else text[:limit] + "\n[… truncated …]"


def clean_result(m: dict[str, Any]) -> dict[str, Any]:
    """A worker's cell result reduced to known fields, types and sizes (it may be forged by user code)."""
    dropped = m.get("dropped_bytes")
    out: dict[str, Any] = {
        "ok": m.get("ok") is True,
        "error": _cap_text(m.get("error"), MAX_ERROR_CHARS),
        "interrupted": m.get("interrupted") is True,
        "cpu_exceeded": m.get("cpu_exceeded") is True,
        "dropped_bytes": dropped if isinstance(dropped, int) and not isinstance(dropped, bool) and dropped > 0 else 0,
        "images": [],
        "notes": [],
    }
    notes = m.get("notes")
    if isinstance(notes, list):
        out["notes"] = [t for t in (_cap_text(n, MAX_NOTE_CHARS) for n in notes[:20]) if t]
    total = 0
    images = m.get("images")
    for img in images[:MAX_IMAGES] if isinstance(images, list) else []:
        if not isinstance(img, dict) or not isinstance(img.get("data"), str):
            continue
        name = img.get("name")
        name = "".join(ch for ch in name if ch.isprintable())[-120:] if isinstance(name, str) else "image"
        encoded = img["data"]
        if len(encoded) > (MAX_IMAGE_BYTES * 4) // 3 + 8:
            continue
        try:
            data = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            continue
        if len(data) > MAX_IMAGE_BYTES or total + len(data) > MAX_IMAGES_BYTES or image_kind(data) is None:
            continue
        total += len(data)
        out["images"].append({"name": os.path.basename(name) or "image", "data": encoded})
    return out


def clean_checks(m: dict[str, Any]) -> list[dict[str, Any]]:
    checks = m.get("checks")
    out: list[dict[str, Any]] = []
    for c in checks[:200] if isinstance(checks, list) else []:
        if isinstance(c, dict):
            out.append(
                {
                    "kind": _cap_text(c.get("kind"), 40) or "",
                    "label": _cap_text(c.get("label"), 300) or "",
                    "blocked": c.get("blocked") is True,
                    "how": _cap_text(c.get("how"), 300) or "",
                }
            )
    return out


class Supervisor:
    """Relays the app's commands to the worker and the worker's checked results back."""

    def __init__(self, ctl_fd: int, resp_fd: int, out_fd: int, cmd_w: int, res_r: int, pid: int) -> None:
        self.ctl_fd, self.resp_fd, self.out_fd = ctl_fd, resp_fd, out_fd
        self.cmd_w, self.res_r, self.pid = cmd_w, res_r, pid
        self.frames = FrameReader(MAX_FRAME_BYTES)
        self.line_buf = bytearray()
        self.outgoing = bytearray()
        self.pending: dict[str, Any] | None = None
        self.seq = 0
        self.ready = False
        self.executed = False
        self.sup_layers: dict[str, Any] = {}
        os.set_blocking(cmd_w, False)

    def to_app(self, obj: dict[str, Any]) -> None:
        _write_all(self.resp_fd, (json.dumps(obj, ensure_ascii=False) + "\n").encode("utf-8"))

    def to_worker(self, obj: dict[str, Any]) -> None:
        self.outgoing += encode_frame(obj)

    def from_worker(self, m: dict[str, Any]) -> None:
        if not self.ready:
            # The first frame comes before any user code runs: its report of the layers is trusted.
            if m.get("event") == "ready":
                self.ready = True
                layers = dict(self.sup_layers)
                worker_layers = m.get("layers")
                if isinstance(worker_layers, dict):
                    layers.update(worker_layers)
                layers["channel"] = "separate"
                self.to_app({"event": "ready", "layers": layers, "pid": self.pid})
            return
        p = self.pending
        if p is None or m.get("seq") != p["seq"]:
            return  # not the answer being waited for: a stray or forged frame
        self.pending = None
        if p["op"] == "exec":
            result = clean_result(m)
            if p["marker"]:
                _write_all(self.out_fd, p["marker"].encode("utf-8"))
            result["id"] = p["id"]
            self.to_app(result)
        elif p["op"] == "selfcheck":
            self.to_app({"event": "selfcheck", "id": p["id"], "checks": clean_checks(m)})

    def from_app(self, msg: dict[str, Any]) -> bool:
        op = msg.get("op")
        if op == "exec":
            self.seq += 1
            self.executed = True
            self.pending = {"op": "exec", "seq": self.seq, "id": msg.get("id"), "marker": str(msg.get("marker") or "")}
            self.to_worker(
                {
                    "op": "exec",
                    "seq": self.seq,
                    "code": msg.get("code", ""),
                    "cpu_s": msg.get("cpu_s"),
                    "max_output": msg.get("max_output"),
                }
            )
            self.to_app({"event": "started", "id": msg.get("id")})
        elif op == "selfcheck":
            if self.executed:  # after user code ran, the worker's answer would prove nothing
                self.to_app({"event": "selfcheck", "id": msg.get("id"), "checks": [], "error": "not a fresh kernel"})
            else:
                self.seq += 1
                self.pending = {"op": "selfcheck", "seq": self.seq, "id": msg.get("id"), "marker": ""}
                self.to_worker({"op": "selfcheck", "seq": self.seq, "targets": msg.get("targets") or {}})
        elif op == "ping":
            self.to_app({"event": "pong", "id": msg.get("id")})
        elif op == "quit":
            self.to_worker({"op": "quit"})
            return False
        return True

    def run(self) -> None:
        ctl_open = True
        while True:
            rlist = [self.res_r] + ([self.ctl_fd] if ctl_open else [])
            wlist = [self.cmd_w] if self.outgoing else []
            try:
                readable, writable, _ = select.select(rlist, wlist, [])
            except InterruptedError:
                continue
            if self.cmd_w in writable:
                try:
                    n = os.write(self.cmd_w, self.outgoing[: 1 << 16])
                    del self.outgoing[:n]
                except BlockingIOError:
                    pass
                except OSError:
                    return
                if not ctl_open and not self.outgoing:
                    return  # quit was delivered
            if self.res_r in readable:
                data = os.read(self.res_r, 1 << 16)
                if not data:
                    return  # the worker is gone
                try:
                    for m in self.frames.feed(data):
                        self.from_worker(m)
                except ProtocolError as exc:
                    _write_all(
                        self.out_fd,
                        f"\n[the Python process broke its results channel ({exc}); it was stopped]\n".encode(),
                    )
                    return
            if ctl_open and self.ctl_fd in readable:
                data = os.read(self.ctl_fd, 1 << 16)
                if not data:
                    return  # the app is gone
                self.line_buf += data
                if len(self.line_buf) > MAX_APP_LINE_BYTES:
                    return
                while b"\n" in self.line_buf:
                    line, _, rest = bytes(self.line_buf).partition(b"\n")
                    self.line_buf = bytearray(rest)
                    try:
                        msg = json.loads(line)
                    except ValueError:
                        continue
                    if isinstance(msg, dict) and not self.from_app(msg):
                        ctl_open = False
                        if not self.outgoing:
                            return


def _exit_like(status: int) -> None:
    """End the supervisor the way the worker ended, so the app can tell a crash from a kill."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            signal.signal(sig, signal.SIG_DFL)
            os.kill(os.getpid(), sig)
        except (OSError, ValueError):
            pass
        os._exit(128 + sig)
    os._exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else 1)


def supervisor_setup(init: dict[str, Any], errors: list[str]) -> tuple[int, dict[str, Any]]:
    """What must happen before the fork: drop root, join a pids cgroup, unshare the namespaces."""
    layers: dict[str, Any] = {"platform": sys.platform, "errors": errors}
    want = init.get("layers", {})
    limits = init.get("limits", {})
    os.chdir(os.path.realpath(init["scratch"]))
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
                return 0, layers
    layers["user_namespace"] = bool(flags & CLONE_NEWUSER)
    layers["network_namespace"] = bool(flags & CLONE_NEWNET)
    layers["pid_namespace"] = bool(flags & CLONE_NEWPID)
    layers["mount_namespace"] = bool(flags & CLONE_NEWNS)
    return flags, layers


def main() -> None:
    # Take the command and answer channels off fds 0/1, so that nothing that inherits fds 0/1 can
    # reach the protocol; fd 1 and 2 become the output pipe (the app gave it to us as fd 2).
    ctl_fd, resp_fd = os.dup(0), os.dup(1)
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(2, 1)
    os.close(devnull)
    for fd in (ctl_fd, resp_fd):
        os.set_inheritable(fd, False)
    first = bytearray()
    while not first.endswith(b"\n"):
        chunk = os.read(ctl_fd, 1)
        if not chunk:
            return
        first += chunk
    init = json.loads(first or b"{}")
    for entry in init.get("sys_path", []):
        if entry not in sys.path:
            sys.path.append(entry)
    single = not hasattr(os, "fork") or not init.get("layers", {}).get("split", True)
    if single:  # without a fork there is no PID 1 to be: a PID namespace would only break fork()
        init.setdefault("layers", {})["pid_namespace"] = False
    errors: list[str] = []
    flags, layers = supervisor_setup(init, errors)
    if layers.get("fatal"):
        _write_all(resp_fd, (json.dumps({"event": "ready", "layers": layers}) + "\n").encode())
        return
    if single:
        # One process: user code could write to the answers fd; the app is told so.
        ctl = os.fdopen(ctl_fd, "r", encoding="utf-8")
        setup_worker(init, flags, layers, errors)
        layers["channel"] = "shared"
        worker_loop(LineChannel(ctl, resp_fd, 1), {"event": "ready", "layers": layers, "pid": os.getpid()})
        return
    cmd_r, cmd_w = os.pipe()
    res_r, res_w = os.pipe()
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:  # the worker: keeps cmd_r, res_w and the output pipe on fds 1/2, nothing else
        if IS_LINUX:  # elsewhere the app ends the whole process group
            _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
            if os.getppid() != parent and not flags & CLONE_NEWPID:
                os._exit(1)
        for fd in (ctl_fd, resp_fd, cmd_w, res_r):
            os.close(fd)
        for fd in (cmd_r, res_w):
            os.set_inheritable(fd, False)
        try:
            setup_worker(init, flags, layers, errors)
            worker_loop(WorkerChannel(cmd_r, res_w), {"event": "ready", "layers": layers})
        except BaseException:  # noqa: BLE001 - the supervisor reports the exit; the traceback goes to the output
            traceback.print_exc(file=sys.__stderr__)
            os._exit(1)
        os._exit(0)
    os.close(cmd_r)
    os.close(res_w)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the app interrupts the worker, not us
    if IS_LINUX:
        _prctl(PR_SET_DUMPABLE, 0)  # the worker (same user) cannot ptrace us or open our fds in /proc
    sup = Supervisor(ctl_fd, resp_fd, 1, cmd_w, res_r, pid)
    sup.sup_layers = layers
    sup.to_app({"event": "kernel_pid", "pid": pid})
    try:
        sup.run()
    finally:
        deadline = 50
        status = 0
        while True:
            try:
                got, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                break
            if got:
                break
            deadline -= 1
            if deadline <= 0:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
                _, status = os.waitpid(pid, 0)
                break
            select.select([], [], [], 0.02)
        _exit_like(status)


if __name__ == "__main__":
    main()
