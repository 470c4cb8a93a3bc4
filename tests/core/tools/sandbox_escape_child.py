"""Run as an ordinary desktop user by test_sandbox_escapes.py: attack the user's session from the sandbox.

Reads a JSON plan on stdin: the session's real targets (listening UNIX sockets in /run/user/UID,
/tmp, /var/run and the home folder, abstract sockets, marker files), and the sandbox layer sets to
try. First it checks that this user, outside the sandbox, does reach every target (so a refusal
inside proves something). Then, per layer set, it starts the python tool's kernel the way the app
does, runs the attacker's cell (plain Python, raw libc calls through ctypes, other socket types,
a child process, /proc/PID/root paths, io_uring) and the live self-check the Tools page shows, and
prints everything as one JSON object on stdout.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path

ATTACK = r"""
import ctypes, json, os, socket, struct, subprocess, sys
T = json.loads(__PLAN__)
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long

def raw(addr_bytes, typ):
    fd = libc.socket(1, typ, 0)
    if fd < 0:
        return "refused: socket(): " + os.strerror(ctypes.get_errno())
    addr = struct.pack("=H", 1) + addr_bytes
    buf = ctypes.create_string_buffer(addr, len(addr))
    r = libc.connect(fd, buf, len(addr))
    e = ctypes.get_errno()
    libc.close(fd)
    return "CONNECTED" if r == 0 else "refused: connect(): " + os.strerror(e)

def py(addr, typ=socket.SOCK_STREAM):
    try:
        s = socket.socket(socket.AF_UNIX, typ)
        s.settimeout(2)
        s.connect(addr)
        s.close()
        return "CONNECTED"
    except BaseException as e:
        return "refused: %s: %s" % (type(e).__name__, e)

CHILD = (
    "import socket, sys\n"
    "s = socket.socket(socket.AF_UNIX)\n"
    "try:\n"
    "    s.connect(sys.argv[1]); print('CONNECTED')\n"
    "except BaseException as e:\n"
    "    print('refused: %s' % e)\n"
)

def child(addr):
    try:
        p = subprocess.run([sys.executable, "-c", CHILD, addr], capture_output=True, text=True, timeout=30)
        return (p.stdout.strip() or p.stderr.strip()[-300:] or "refused: no output")
    except BaseException as e:
        return "refused: %s: %s" % (type(e).__name__, e)

res = {"unix": {}, "abstract": {}, "see": {}, "io_uring": None, "tmp_listing": None}
pids = [p for p in os.listdir("/proc") if p.isdigit() and p != str(os.getpid())] if os.path.isdir("/proc") else []
for label, path in T["unix"]:
    res["unix"][label] = {
        "python": py(path),
        "raw stream": raw(path.encode() + b"\0", 1),
        "raw datagram": raw(path.encode() + b"\0", 2),
        "raw seqpacket": raw(path.encode() + b"\0", 5),
        "a program it starts": child(path),
        "via /proc/PID/root": next((r for r in (raw(("/proc/%s/root%s" % (p, path)).encode() + b"\0", 1) for p in pids[:200]) if r == "CONNECTED"), "refused: no /proc/PID/root path worked"),
    }
for label, name in T["abstract"]:
    res["abstract"][label] = {
        "python": py("\0" + name),
        "raw stream": raw(b"\0" + name.encode(), 1),
        "raw datagram": raw(b"\0" + name.encode(), 2),
        "a program it starts": child("\0" + name),
    }
for label, path in T["see"]:
    res["see"][label] = os.path.lexists(path)
try:
    res["tmp_listing"] = sorted(os.listdir("/tmp"))
except OSError as e:
    res["tmp_listing"] = "refused: %s" % e
# io_uring can create sockets without socket(): a seccomp filter must close it too.
nr = {"x86_64": 425, "aarch64": 425}.get(os.uname().machine)
if nr:
    params = ctypes.create_string_buffer(120)
    fd = libc.syscall(nr, 4, params)
    res["io_uring"] = "AVAILABLE" if fd >= 0 else "refused: " + os.strerror(ctypes.get_errno())
    if fd >= 0:
        os.close(fd)
print("RESULT" + json.dumps(res))
"""


def main() -> None:
    plan = json.loads(sys.stdin.read())
    from app.core.tools.python_tool import PythonKernel, SandboxLayers, SandboxLimits, probe_sandbox

    out: dict[str, object] = {"uid": os.getuid(), "control": {}, "configs": {}}
    # 1. Outside the sandbox this user reaches every target: the attacks below are meaningful.
    control: dict[str, object] = {}
    for label, path in plan["targets"]["unix"]:
        s = socket.socket(socket.AF_UNIX)
        try:
            s.connect(path)
            control[label] = "CONNECTED"
        except OSError as exc:
            control[label] = f"refused: {exc}"
        finally:
            s.close()
    for label, name in plan["targets"]["abstract"]:
        s = socket.socket(socket.AF_UNIX)
        try:
            s.connect("\0" + name)
            control[label] = "CONNECTED"
        except OSError as exc:
            control[label] = f"refused: {exc}"
        finally:
            s.close()
    for label, path in plan["targets"]["see"]:
        control[label] = "VISIBLE" if os.path.lexists(path) else "missing"
    out["control"] = control
    limits = SandboxLimits(timeout_s=60.0, cpu_s=30.0, memory_bytes=1024**3, processes=32)
    home = Path(plan["home"])
    code = ATTACK.replace("__PLAN__", repr(json.dumps(plan["targets"])))
    known = set(SandboxLayers.__dataclass_fields__)
    for name, layer_kwargs in plan["configs"].items():
        # (An older kernel without some layer just runs without choosing it.)
        layers = SandboxLayers(**{k: v for k, v in layer_kwargs.items() if k in known})
        scratch = home / f"scratch-{name}"
        k = PythonKernel(scratch, limits, layers)
        entry: dict[str, object] = {}
        try:
            report = k.start()
            r = k.execute(code)
            text = r.output
            entry["result"] = json.loads(text.split("RESULT", 1)[1]) if "RESULT" in text else None
            entry["error"] = r.error
            entry["layers"] = {
                key: report.layers.get(key) for key in ("user_namespace", "network_namespace", "mounts", "seccomp")
            }
            entry["landlock"] = report.layers.get("landlock")
            entry["errors"] = report.layers.get("errors")
        finally:
            k.close()
        try:
            live = probe_sandbox(limits, layers, home / f"probe-{name}", fresh=True, private_dir=home)
        except TypeError:  # an older app without the live self-check
            live = probe_sandbox(limits, layers, home / f"probe-{name}")
        entry["report"] = {g.key: g.holds for g in live.guarantees}
        entry["checks"] = [[c.kind, c.label, c.blocked, c.how] for c in getattr(live, "checks", ())]
        out["configs"][name] = entry  # type: ignore[index]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
