"""The tool registry (every tool, its on/off state and approval) and the per-conversation tool session."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.core import paths
from app.core.tools.base import Approval, LoadError, ToolInfo, ToolKind, ToolOutcome
from app.core.tools.local import ToolError, builtin_function_tools
from app.core.tools.python_tool import PYTHON_DESCRIPTION, PythonKernel, SandboxLayers, SandboxLimits
from app.core.tools.schema import ArgumentError, bind_arguments, describe_function, normalize_tool_name
from app.core.tools.settings import ToolSettings, load_settings, save_settings
from app.core.tools.usertools import UserToolHost

if TYPE_CHECKING:
    from app.core.tools.browser import BrowserSession

PYTHON_INFO = ToolInfo(
    name="python",
    kind=ToolKind.PYTHON,
    origin="builtin",
    description=PYTHON_DESCRIPTION,
    default_enabled=True,
    default_approval=Approval.ASK,
    timeout_s=120.0,
)
BROWSER_INFO = ToolInfo(
    name="browser",
    kind=ToolKind.BROWSER,
    origin="builtin",
    description="Searches the web through your search endpoint, opens pages and finds text in them; "
    "answers cite the pages they used. Needs the internet.",
    default_enabled=False,
    default_approval=Approval.ASK,
    timeout_s=20.0,
)


class ToolRegistry:
    """Every tool the app knows, with the user's settings. Thread-safe for reading while a loop runs."""

    def __init__(
        self,
        settings: ToolSettings | None = None,
        *,
        tools_dir: Path | None = None,
        settings_file: Path | None = None,
        load_user_tools: bool = True,
    ) -> None:
        self.settings_file = settings_file
        self.settings = settings if settings is not None else load_settings(settings_file)
        self.tools_dir = Path(tools_dir) if tools_dir is not None else paths.tools_dir()
        self._builtin = builtin_function_tools()
        self._user: list[ToolInfo] = []
        self.errors: list[LoadError] = []
        self._lock = threading.RLock()
        reserved = [t.name for t in self._builtin]
        self._host = UserToolHost(self.tools_dir, reserved) if load_user_tools else None
        if self._host is not None:
            self.reload()

    # --- listing -------------------------------------------------------------------------------
    def reload(self) -> list[LoadError]:
        """Load the tools folder again (after the user added or changed a file)."""
        if self._host is None:
            return []
        self.tools_dir.mkdir(parents=True, exist_ok=True)
        tools, errors = self._host.load()
        with self._lock:
            self._user, self.errors = tools, errors
        return errors

    def tools(self) -> list[ToolInfo]:
        """Builtin function tools, then the user's, then python and browser."""
        with self._lock:
            return [*self._builtin, *self._user, PYTHON_INFO, BROWSER_INFO]

    def function_tools(self) -> list[ToolInfo]:
        with self._lock:
            return [*self._builtin, *self._user]

    def info(self, name: str) -> ToolInfo | None:
        return next((t for t in self.tools() if t.name == name), None)

    def add_function(self, fn: Any, *, approval: Approval = Approval.AUTO, timeout_s: float = 30.0) -> ToolInfo:
        """Offer an in-app Python function as a tool (tests, and features of the app itself)."""
        spec = describe_function(fn)
        info = ToolInfo(
            spec.name,
            ToolKind.FUNCTION,
            "builtin",
            spec.description,
            spec.definition(),
            warnings=spec.warnings,
            default_approval=approval,
            timeout_s=timeout_s,
            func=fn,
        )
        with self._lock:
            self._builtin = [t for t in self._builtin if t.name != spec.name] + [info]
        return info

    # --- settings ------------------------------------------------------------------------------
    def is_enabled(self, name: str) -> bool:
        info = self.info(name)
        return info is not None and self.settings.is_enabled(name, info.default_enabled)

    def set_enabled(self, name: str, on: bool) -> None:
        self.settings.set_enabled(name, on)
        self.save()

    def approval_for(self, name: str) -> Approval:
        info = self.info(name)
        if info is None:
            return Approval.ASK
        if info.default_approval is Approval.PICK_FILE:
            return Approval.PICK_FILE  # picking the file is the approval; it cannot be switched off
        if info.origin == "user":
            return Approval.AUTO if self.is_trusted(name) else Approval.ASK
        chosen = self.settings.approval.get(name)
        return Approval(chosen) if chosen in ("ask", "auto") else info.default_approval

    def set_approval(self, name: str, approval: Approval) -> None:
        info = self.info(name)
        if info is not None and info.origin == "user":
            self.set_trusted(name, approval is Approval.AUTO)
            return
        self.settings.approval[name] = approval.value
        self.save()

    # --- trust in user tools ----------------------------------------------------------------------
    def is_trusted(self, name: str) -> bool:
        """Whether the user marked this user tool trusted, and its file is still what they trusted."""
        info = self.info(name)
        if info is None or info.origin != "user" or not info.fingerprint:
            return False
        return self.settings.trusted.get(name) == info.fingerprint

    def trust_changed(self, name: str) -> bool:
        """The tool was trusted, but its file changed since (so it asks again)."""
        info = self.info(name)
        marked = self.settings.trusted.get(name)
        return info is not None and info.origin == "user" and marked is not None and marked != info.fingerprint

    def set_trusted(self, name: str, on: bool) -> None:
        """Run this user tool without asking (bound to the file as it is now), or ask again."""
        info = self.info(name)
        if on and (info is None or info.origin != "user" or not info.fingerprint):
            return
        if on and info is not None and info.fingerprint:
            self.settings.trusted[name] = info.fingerprint
        else:
            self.settings.trusted.pop(name, None)
        self.save()

    def save(self) -> None:
        save_settings(self.settings, self.settings_file)

    def browser_available(self, offline: bool) -> bool:
        """The browser is hidden in offline mode, whatever its switch says."""
        return not offline

    def function_definitions(self) -> list[dict[str, Any]]:
        """Definitions of the enabled function tools, for render_prompt's `tools`."""
        return [t.definition for t in self.function_tools() if t.definition and self.is_enabled(t.name)]

    def builtin_tools(self, offline: bool = False) -> list[str]:
        """render_prompt's `builtin_tools`: the enabled builtins (never the browser when offline)."""
        out: list[str] = []
        if self.is_enabled("browser") and self.browser_available(offline):
            out.append("browser")
        if self.is_enabled("python"):
            out.append("python")
        return out

    # --- running function tools ----------------------------------------------------------------
    def resolve_function(self, raw_name: str) -> ToolInfo | None:
        """The function tool a call means: exact name first, then the normalised one (pitfall 11)."""
        tools = {t.name: t for t in self.function_tools()}
        if raw_name in tools:
            return tools[raw_name]
        return tools.get(normalize_tool_name(raw_name))

    def call_function(
        self, info: ToolInfo, arguments: Any, *, timeout_s: float | None = None, cancel: threading.Event | None = None
    ) -> ToolOutcome:
        """Run a function tool; its exceptions and bad arguments become error outcomes."""
        limit = timeout_s if timeout_s is not None else min(info.timeout_s, self.settings.tool_timeout_s)
        if info.origin == "user":
            if self._host is None:
                return ToolOutcome("Error: user tools are not loaded.", is_error=True)
            return self._host.call(info.name, arguments, timeout_s=limit, cancel=cancel)
        if info.func is None:
            return ToolOutcome(f"Error: {info.name} cannot run here.", is_error=True)
        spec = describe_function(info.func, info.name)
        try:
            args, kwargs = bind_arguments(spec, arguments)
        except ArgumentError as exc:
            return ToolOutcome(f"Error: {exc}", is_error=True)
        box: dict[str, Any] = {}

        def target() -> None:
            try:
                box["value"] = info.func(*args, **kwargs)  # type: ignore[misc]
            except BaseException as exc:  # noqa: BLE001 - the tool's failure is its result
                box["error"] = exc

        worker = threading.Thread(target=target, name=f"tool-{info.name}", daemon=True)
        worker.start()
        worker.join(limit)
        if worker.is_alive():
            return ToolOutcome(f"Error: {info.name} did not finish within {limit:g} s.", is_error=True)
        if "error" in box:
            err = box["error"]
            text = str(err) if isinstance(err, ToolError) else f"{type(err).__name__}: {err}"
            return ToolOutcome(f"Error: {text}", is_error=True)
        from app.core.tools.userhost import result_text

        return ToolOutcome(result_text(box.get("value")))

    def close(self) -> None:
        if self._host is not None:
            self._host.close()


class ToolSession:
    """The tools of one conversation: its python kernel and scratch folder, its browser pages, and
    the tools the user allowed for the rest of the chat ("Always for this chat")."""

    def __init__(
        self,
        registry: ToolRegistry,
        conversation_id: str,
        *,
        offline: bool = False,
        scratch: Path | None = None,
        sandbox_limits: SandboxLimits | None = None,
        sandbox_layers: SandboxLayers | None = None,
        browser_client: Any = None,
        browser_policy: Any = None,  # netguard.NetworkPolicy; only tests pass one (loopback exemptions)
    ) -> None:
        self.registry = registry
        self.conversation_id = conversation_id
        self.offline = offline
        self.scratch = Path(scratch) if scratch is not None else paths.scratch_root() / conversation_id
        self.always_allowed: set[str] = set()
        self._limits = sandbox_limits
        self._layers = sandbox_layers
        self._browser_client = browser_client
        self._browser_policy = browser_policy
        self._kernel: PythonKernel | None = None
        self._browser: BrowserSession | None = None
        self._lock = threading.Lock()

    @property
    def kernel(self) -> PythonKernel:
        with self._lock:
            if self._kernel is None:
                s = self.registry.settings
                limits = self._limits or SandboxLimits(
                    timeout_s=s.python_timeout_s, cpu_s=s.python_cpu_s, memory_bytes=s.python_memory_mb * 1024**2
                )
                self._kernel = PythonKernel(self.scratch, limits, self._layers)
            return self._kernel

    @property
    def has_kernel(self) -> bool:
        return self._kernel is not None

    @property
    def browser(self) -> BrowserSession:
        with self._lock:
            if self._browser is None:
                s = self.registry.settings
                from app.core.tools.browser import BrowserSession  # httpx and lxml: only when browsing

                self._browser = BrowserSession(
                    s.search_endpoint,
                    client=self._browser_client,
                    timeout_s=s.browser_timeout_s,
                    policy=self._browser_policy,
                )
            return self._browser

    def restart_kernel(self) -> None:
        """Restart Python (variables are lost; scratch files stay). Safe to call from the UI thread."""
        k = self._kernel
        if k is not None:
            threading.Thread(target=k.restart, name="restart-kernel", daemon=True).start()

    def prompt_tools(self) -> tuple[list[dict[str, Any]], list[str]]:
        """(function definitions, builtin tool names) for this chat's next prompt."""
        return self.registry.function_definitions(), self.registry.builtin_tools(self.offline)

    def close(self) -> None:
        with self._lock:
            if self._kernel is not None:
                self._kernel.close()
            if self._browser is not None:
                self._browser.close()
            self._kernel = self._browser = None


__all__ = ["BROWSER_INFO", "PYTHON_INFO", "ToolRegistry", "ToolSession"]
