"""What the sandbox guarantees on this machine: plain statements from the kernel's layers and the self-check."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any

from app.core.tools.python_tool.limits import SandboxLimits


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
