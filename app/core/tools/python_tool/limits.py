"""What one python kernel may use (limits), which isolation layers it tries, and what the model is told."""

from __future__ import annotations

from dataclasses import dataclass

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
