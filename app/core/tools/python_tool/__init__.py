"""The builtin `python` tool: a stateful sandboxed interpreter per conversation, and what its sandbox guarantees.

One module per job: limits (what a kernel may use), report (the guarantees in plain words), results
(a cell's result), host (what of the host the kernel is given), output (its output pipe), kernel (the
process: start, run cells, stop) and self_check (escapes a throwaway kernel attempts). The kernel's
own code is app/core/tools/sandbox_kernel.py, one standalone file run by path.
"""

from app.core.tools.python_tool.kernel import KernelError, PythonKernel
from app.core.tools.python_tool.limits import PYTHON_DESCRIPTION, SandboxLayers, SandboxLimits
from app.core.tools.python_tool.report import Check, Guarantee, SandboxReport, build_report
from app.core.tools.python_tool.results import ExecResult
from app.core.tools.python_tool.self_check import SelfCheckTargets, probe_sandbox

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
