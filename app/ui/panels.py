"""The window's panels and dialogs, built on first use and kept: models, first run, hardware, tools, API server, effort lab."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtWidgets import QDialog, QVBoxLayout, QWidget

from app.core.runtime import Runtime
from app.ui import style
from app.ui.window_state import GeometryKeeper

if TYPE_CHECKING:
    from app.core.server import ApiServer, ServerSettings
    from app.ui.compare import CompareWindow
    from app.ui.connections_dialog import ConnectionsDialog, RemoteModelsBox, ServerDialog, WorkerDialog
    from app.ui.downloads import DownloadController
    from app.ui.first_run import FirstRunPage
    from app.ui.hardware_panel import HardwarePanel
    from app.ui.model_manager import ModelManagerDialog
    from app.ui.server_panel import ServerPanel
    from app.ui.tools_page import ToolsPage


class Panels(QObject):
    """Opens each panel; the window passes intent back through signals:
    open_requested(path) to load a model, tools_changed() when tool settings changed (the header
    says whether browsing is on), server_running(bool) when the API server starts or stops."""

    open_requested = Signal(str)
    connect_requested = Signal(str, str)  # connection id, model: use a model served elsewhere
    tools_changed = Signal()
    server_running = Signal(bool)

    def __init__(self, runtime: Runtime, window: QWidget, keeper: GeometryKeeper | None = None) -> None:
        super().__init__(window)
        self.runtime = runtime
        self.window = window
        self.keeper = keeper if keeper is not None else GeometryKeeper(runtime.settings, self)
        self.closing = False
        self._downloads: DownloadController | None = None
        self.models_dialog: ModelManagerDialog | None = None
        self.first_run: FirstRunPage | None = None
        self.hardware_panel: HardwarePanel | None = None
        self.hardware_dialog: QDialog | None = None
        self.tools_page: ToolsPage | None = None
        self.tools_dialog: QDialog | None = None
        self.server_panel: ServerPanel | None = None
        self.server_dialog: QDialog | None = None
        self.lab: CompareWindow | None = None
        self.connections_dialog: ConnectionsDialog | None = None
        self.remote_models: RemoteModelsBox | None = None

    def _dialog(self, panel: QWidget, title: str, name: str, size: tuple[int, int]) -> QDialog:
        """A modeless window around one of the app's panels (kept and shown again, not rebuilt)."""
        dlg = QDialog(self.window, objectName=name)
        dlg.setWindowTitle(title)
        # Scrolls when the screen is smaller than the panel (a laptop at 2× scale), instead of
        # the window growing off the screen.
        _outer, scroll, content = style.scroll_page(dlg, f"{name}Content")
        inner = QVBoxLayout(content)
        inner.setContentsMargins(0, 0, 0, 0)
        inner.addWidget(panel)
        scroll.setObjectName(f"{name}Scroll")
        self.keeper.track(dlg, name, size)  # where the user left it, fitted to the screen
        return dlg

    @staticmethod
    def _raise(w: QWidget) -> None:
        w.show()
        w.raise_()

    # --- getting models -------------------------------------------------------------------------
    @property
    def downloads(self) -> DownloadController:
        """The app's download controller, shared by the model manager and the first-run page."""
        if self._downloads is None:
            from app.ui.downloads import DownloadController

            self._downloads = DownloadController(parent=self)
        return self._downloads

    def show_models(self) -> ModelManagerDialog:
        """Download gpt-oss, manage the model files on this computer, choose one to load."""
        from app.ui.model_manager import ModelManagerDialog

        current = self.runtime.model_file()
        if self.models_dialog is None:
            dlg = ModelManagerDialog(self.downloads, parent=self.window, current_model=current)
            dlg.model_chosen.connect(self.open_requested)
            self.keeper.track(dlg, "ModelsDialog", (860, 780))
            self.models_dialog = dlg
            self._add_remote_models(dlg)
        else:
            self.models_dialog.set_current_model(current)
            self.models_dialog.refresh_models()
            if self.remote_models is not None:
                self.remote_models.refresh()
        self._raise(self.models_dialog)
        return self.models_dialog

    def ensure_first_run(self) -> FirstRunPage:
        """The page that helps a new user get a model (the window puts it in its stack)."""
        if self.first_run is None:
            from app.ui.first_run import FirstRunPage

            page = FirstRunPage(self.downloads, hardware=self.runtime.profile)
            page.model_ready.connect(self.open_requested)
            page.manage_requested.connect(self.show_models)
            self.first_run = page
        return self.first_run

    # --- connections: models on other computers and GPU workers --------------------------------------
    def _add_remote_models(self, dlg: ModelManagerDialog) -> None:
        """The Models dialog lists the models on your connections too (the model picker shows both)."""
        from app.ui.connections_dialog import RemoteModelsBox

        box = RemoteModelsBox(self.runtime)
        box.use_requested.connect(self._use_remote)
        box.add_requested.connect(self.add_server)
        dlg.extra_box.addWidget(box)
        self.remote_models = box

    def _use_remote(self, connection_id: str, model: str) -> None:
        for dlg in (self.models_dialog, self.connections_dialog):
            if dlg is not None:
                dlg.hide()
        self.connect_requested.emit(connection_id, model)

    def _connections_changed(self) -> None:
        for part in (self.connections_dialog, self.remote_models):
            if part is not None:
                part.refresh()

    def add_server(self) -> ServerDialog:
        """Connections → Add server…: a vLLM, llama-server, Ollama, LM Studio or Harmonica server."""
        from app.ui.connections_dialog import ServerDialog

        dlg = ServerDialog(self.runtime, self.window)
        dlg.use_requested.connect(self._use_remote)
        dlg.saved.connect(lambda _id: self._connections_changed())
        dlg.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        self._raise(dlg)
        return dlg

    def add_worker(self) -> WorkerDialog:
        """Connections → Add GPU worker…: a llama.cpp rpc-server on the LAN."""
        from app.ui.connections_dialog import WorkerDialog

        dlg = WorkerDialog(self.runtime, self.window)
        dlg.saved.connect(lambda _id: self._connections_changed())
        dlg.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        self._raise(dlg)
        return dlg

    def manage_connections(self) -> ConnectionsDialog:
        """Connections → Manage…: servers, GPU workers, offline mode's allowed ranges."""
        from app.ui.connections_dialog import ConnectionsDialog

        if self.connections_dialog is None:
            dlg = ConnectionsDialog(self.runtime, self.window)
            dlg.use_requested.connect(self._use_remote)
            dlg.add_server_requested.connect(self.add_server)
            dlg.add_worker_requested.connect(self.add_worker)
            self.connections_dialog = dlg
        self.connections_dialog.refresh()
        self._raise(self.connections_dialog)
        return self.connections_dialog

    # --- hardware -------------------------------------------------------------------------------
    def show_hardware(self, context_size: int | None = None) -> HardwarePanel:
        """What this computer has, how the model will run and why; Advanced overrides."""
        from app.core.planner import model_info_for_file
        from app.ui.hardware_panel import HardwarePanel

        path = self.runtime.model_file()
        info = None
        if path is not None:
            try:
                info = model_info_for_file(path)
            except Exception:  # noqa: BLE001 - the panel shows "no model chosen"
                info = None
        if self.hardware_panel is None or self.hardware_dialog is None:
            # The panel is a dialog itself: wrapped in a second one, its Close and Esc hid only the
            # panel and left an empty window that stayed empty.
            panel = HardwarePanel(
                self.runtime.hardware_profile,
                info,
                self.window,
                wishes=self.runtime.wishes(context_size),
                load_label="Reload with these settings",
            )
            panel.load_requested.connect(self._load_with)
            panel.profile_ready.connect(lambda p: setattr(self.runtime, "profile", p))
            self.keeper.track(panel, "HardwareDialog", (860, 760))
            self.hardware_panel = panel
            self.hardware_dialog = panel
        else:
            self.hardware_panel.set_model(info)
        self._probe_workers(self.hardware_panel)
        where = self.runtime.where_it_runs()  # a remote model: this panel plans the local file, say so
        self.hardware_dialog.setWindowTitle(
            f"Hardware and load settings — the current model {where}, not here"
            if where
            else "Hardware and load settings"
        )
        self._raise(self.hardware_dialog)
        return self.hardware_panel

    def _probe_workers(self, panel: HardwarePanel) -> None:
        """GPU workers are asked for their devices off the UI thread; the plan then spans them."""
        if not self.runtime.connections.workers(enabled_only=True):
            panel.set_workers([])
            return
        from app.ui.workers import GeneratorWorker, start_worker

        def job(*, cancel: Any) -> Any:
            yield self.runtime.worker_devices()

        w = GeneratorWorker(job)
        w.yielded.connect(panel.set_workers)
        start_worker(w)

    def _load_with(self, settings: Any) -> None:
        """The hardware panel's Load: keep its overrides (or none) and reload the current model."""
        panel = self.hardware_panel
        overridden = self.runtime.save_wishes(panel.wishes() if panel is not None else None)
        self.runtime.load_settings = settings if overridden else None
        if self.hardware_dialog is not None:
            self.hardware_dialog.hide()
        path = self.runtime.model_file()
        if path is not None:
            self.open_requested.emit(path)

    # --- tools, the lab and the API server ------------------------------------------------------
    def show_tools(self) -> ToolsPage:
        """Settings for tools: on/off, approvals, user tool files, sandbox guarantees, browser."""
        from app.ui.tools_page import ToolsPage

        if self.tools_page is None or self.tools_dialog is None:
            page = ToolsPage(self.runtime.tool_registry, offline=self.runtime.offline)
            page.settings_changed.connect(self.tools_changed)
            self.tools_page = page
            self.tools_dialog = self._dialog(page, "Tools", "ToolsDialog", (760, 720))
        self._raise(self.tools_dialog)
        return self.tools_page

    def show_lab(self) -> CompareWindow:
        """The effort lab: one prompt or a problem set at low/medium/high, measured and charted."""
        if self.lab is None:
            from app.ui.compare import CompareWindow

            self.lab = CompareWindow(self.runtime.lab_client)
            self.keeper.track(self.lab, "LabWindow", (1280, 860))
        self.lab.refresh_model()
        self.lab.set_expected_speed(self.runtime.generation_speed())
        self._raise(self.lab)
        return self.lab

    def server(self, *, start: bool = False) -> ServerPanel:
        """Show the API server panel (built on first use); `start` switches the server on instead."""
        if self.server_panel is None or self.server_dialog is None:
            from app.ui.server_panel import ServerPanel

            panel = ServerPanel(
                self.runtime.scheduler, settings=self.runtime.server_settings(), server_factory=self._make_server
            )
            panel.settings_changed.connect(self.runtime.save_server_settings)
            panel.running_changed.connect(self._on_server_running)
            self.server_panel = panel
            self.server_dialog = self._dialog(panel, "Local API server", "ServerDialog", (720, 680))
        if start:
            self.server_panel.start()
        else:
            self._raise(self.server_dialog)
        return self.server_panel

    def _make_server(self, settings: ServerSettings) -> ApiServer:
        from app.core.server import ApiServer

        server = ApiServer(self.runtime.scheduler, settings)
        # web_search tools go to the browser only while the user allows it (panel) and browsing is on.
        server.browser_provider = self.runtime.api_browser_factory
        return server

    def _on_server_running(self, running: bool) -> None:
        if not self.closing:  # quitting stops the server but must not forget that it was on
            self.runtime.set_server_enabled(running)
        self.server_running.emit(running)

    def server_address(self, running: bool) -> tuple[str | None, bool]:
        """The API server's address while it runs (None when off), and whether the network reaches it."""
        panel = self.server_panel
        if not running or panel is None:
            return None, False
        return panel.base_url, bool(getattr(panel.server, "exposed", False))

    def model_changed(self) -> None:
        """A model was loaded: the lab shows it."""
        if self.lab is not None:
            self.lab.refresh_model()
            self.lab.set_expected_speed(self.runtime.generation_speed())

    def shutdown(self) -> None:
        """Stop the lab, downloads and the server (the window is closing)."""
        self.closing = True
        if self.lab is not None:
            self.lab.shutdown()
            self.lab.close()
        if self._downloads is not None:
            self._downloads.shutdown()
        if self.server_panel is not None:
            self.server_panel.shutdown()
