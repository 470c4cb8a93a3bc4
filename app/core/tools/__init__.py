"""Tools the model can call: function tools, the sandboxed python tool, the browser, and the tool loop.

The lead wires these into the window: a ToolRegistry (one per app), a ToolSession per conversation,
and run_tool_loop on a worker thread instead of chat.run_turn.
"""

from app.core.tools.base import Approval, Decision, LoadError, Reply, ToolInfo, ToolKind, ToolOutcome
from app.core.tools.browser import BrowserSession, cursor_urls_from_results, link_citations
from app.core.tools.loop import (
    ApprovalRequest,
    FileRequest,
    LoopFinished,
    RoundLimitReached,
    ToolCallStarted,
    ToolFinished,
    ToolRun,
    ToolRunning,
    run_tool_loop,
)
from app.core.tools.python_tool import PythonKernel, SandboxLayers, SandboxLimits, SandboxReport, probe_sandbox
from app.core.tools.registry import ToolRegistry, ToolSession
from app.core.tools.schema import describe_function, valid_tool_name
from app.core.tools.settings import ToolSettings, load_settings, save_settings

__all__ = [
    "Approval", "ApprovalRequest", "BrowserSession", "Decision", "FileRequest", "LoadError", "LoopFinished",
    "PythonKernel", "Reply", "RoundLimitReached", "SandboxLayers", "SandboxLimits", "SandboxReport", "ToolCallStarted",
    "ToolFinished", "ToolInfo", "ToolKind", "ToolOutcome", "ToolRegistry", "ToolRun", "ToolRunning", "ToolSession",
    "ToolSettings", "cursor_urls_from_results", "describe_function", "link_citations", "load_settings",
    "probe_sandbox", "run_tool_loop", "save_settings", "valid_tool_name",
]
