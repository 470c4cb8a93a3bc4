"""The Tools settings page: every tool with its switch and approval, broken tool files, the sandbox, the browser.

User function tools ask before each call unless the user ticks "Trusted" on their row; the trust
belongs to the file as it is, so a changed file says so and asks again. The sandbox section shows
only what the live self-check verified on this computer when the page opened: a fresh sandbox is
made to attempt each escape (see python_tool.probe_sandbox), never a fixed list of ticks.
"""

from __future__ import annotations

import html
import time
from typing import Any

from PySide6.QtCore import QRectF, QSize, Qt, QUrl, Signal
from PySide6.QtGui import QColor, QDesktopServices, QPainter, QPaintEvent
from PySide6.QtWidgets import (
    QAbstractButton,
    QCheckBox,
    QComboBox,
    QFrame,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSizePolicy,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from app.core.tools.base import Approval, ToolInfo, ToolKind
from app.core.tools.python_tool import SandboxLimits, SandboxReport, probe_sandbox
from app.core.tools.registry import ToolRegistry
from app.ui import style
from app.ui.workers import GeneratorWorker, start_worker


class Switch(QAbstractButton):
    """An on/off switch (a checkable button painted as a track and a knob)."""

    def __init__(self, parent: QWidget | None = None, *, checked: bool = False, accessible_name: str = "") -> None:
        super().__init__(parent)
        self.setCheckable(True)
        self.setChecked(checked)
        self.setCursor(Qt.CursorShape.PointingHandCursor)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        if accessible_name:
            self.setAccessibleName(accessible_name)
            self.setToolTip(accessible_name)

    def sizeHint(self) -> QSize:
        return QSize(38, 22)

    def paintEvent(self, e: QPaintEvent) -> None:
        pal = style.current()
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        r = QRectF(1, 2, 36, 18)
        on = self.isChecked()
        track = QColor(pal.accent if on else pal.disabled)
        if not self.isEnabled():
            track.setAlpha(110)
        p.setPen(Qt.PenStyle.NoPen)
        p.setBrush(track)
        p.drawRoundedRect(r, 9, 9)
        p.setBrush(QColor("#ffffff"))
        knob = QRectF(r.right() - 16 if on else r.left() + 2, r.top() + 2, 14, 14)
        p.drawEllipse(knob)
        if self.hasFocus():
            p.setBrush(Qt.BrushStyle.NoBrush)
            p.setPen(QColor(pal.accent_hover))
            p.drawRoundedRect(r.adjusted(-1, -1, 1, 1), 10, 10)


def _ts_type(schema: dict[str, Any]) -> str:
    if "enum" in schema:
        return " | ".join(repr(v) if isinstance(v, str) else str(v) for v in schema["enum"])
    kind = schema.get("type")
    if isinstance(kind, list):
        return " | ".join(kind)
    if kind == "array":
        inner = schema.get("items") or {}
        return f"{_ts_type(inner) if inner else 'any'}[]"
    return {"integer": "number"}.get(kind or "", kind or "any")


def parameters_text(info: ToolInfo) -> str:
    """The parameters as short lines: `name?: type = default — description`."""
    params = info.parameters
    required = set(params.get("required") or [])
    lines = []
    for name, spec in (params.get("properties") or {}).items():
        line = f"{name}{'' if name in required else '?'}: {_ts_type(spec)}"
        if "default" in spec:
            line += f" = {spec['default']!r}"
        if spec.get("description"):
            line += f" — {spec['description']}"
        lines.append(line)
    return "\n".join(lines) if lines else "No parameters."


class ToolRow(QFrame):
    """One tool: switch, name, origin, description, parameters (folded), approval choice, warnings."""

    enabled_changed = Signal(str, bool)
    approval_changed = Signal(str, str)

    def __init__(
        self,
        info: ToolInfo,
        enabled: bool,
        approval: Approval,
        parent: QWidget | None = None,
        *,
        trust_changed: bool = False,
    ) -> None:
        super().__init__(parent, objectName="ToolRow")
        self.info = info
        grid = QGridLayout(self)
        grid.setContentsMargins(12, 10, 12, 10)
        grid.setHorizontalSpacing(10)
        grid.setVerticalSpacing(4)
        self.switch = Switch(checked=enabled, accessible_name=f"Offer {info.name} to the model")
        self.switch.toggled.connect(lambda on: self.enabled_changed.emit(info.name, on))
        grid.addWidget(self.switch, 0, 0, Qt.AlignmentFlag.AlignTop)
        head = QHBoxLayout()
        head.setSpacing(8)
        self.name_label = QLabel(info.name, objectName="ToolName")
        head.addWidget(self.name_label)
        origin = "built-in" if info.origin == "builtin" else (info.source or "user").rsplit("/", 1)[-1]
        self.origin_label = QLabel(origin, objectName="ToolOrigin")
        if info.source:
            self.origin_label.setToolTip(info.source)
        head.addWidget(self.origin_label)
        head.addStretch(1)
        self.approval_box: QComboBox | None = None
        self.trusted_box: QCheckBox | None = None
        if approval is Approval.PICK_FILE:
            note = QLabel("Asks you to choose the file", objectName="ToolsHint")
            head.addWidget(note)
        elif info.origin == "user":
            # The user's own code, but the model decides when it runs and with what: it asks first
            # unless the user trusts this file.
            box = QCheckBox("Trusted: run without asking", objectName="TrustedBox")
            box.setChecked(approval is Approval.AUTO)
            box.setToolTip(
                "Run this tool whenever the model calls it, without asking. The trust is for the file as it "
                "is now: if the file changes, Harmonica asks again."
            )
            box.setAccessibleName(f"Trust {info.name}")
            box.toggled.connect(
                lambda on: self.approval_changed.emit(info.name, (Approval.AUTO if on else Approval.ASK).value)
            )
            head.addWidget(box)
            self.trusted_box = box
        else:
            box = QComboBox(objectName="ApprovalBox")
            box.addItem("Ask before each call", Approval.ASK.value)
            box.addItem("Run without asking", Approval.AUTO.value)
            box.setCurrentIndex(0 if approval is Approval.ASK else 1)
            box.setAccessibleName(f"Approval for {info.name}")
            box.currentIndexChanged.connect(lambda _i: self.approval_changed.emit(info.name, str(box.currentData())))
            head.addWidget(box)
            self.approval_box = box
        grid.addLayout(head, 0, 1)
        self.description = QLabel(info.description or "No description.", objectName="ToolDescription")
        self.description.setWordWrap(True)
        self.description.setTextFormat(Qt.TextFormat.PlainText)
        grid.addWidget(self.description, 1, 1)
        row = 2
        if info.kind is ToolKind.FUNCTION:
            self.params_toggle = QToolButton(objectName="ToolShowMore")
            self.params_toggle.setText("Show parameters")
            self.params_toggle.setCursor(Qt.CursorShape.PointingHandCursor)
            self.params_label = QLabel(parameters_text(info), objectName="ToolParams")
            self.params_label.setFont(style.mono_font(9))
            self.params_label.setWordWrap(True)
            self.params_label.setTextFormat(Qt.TextFormat.PlainText)
            self.params_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            self.params_label.hide()
            self.params_toggle.clicked.connect(self._toggle_params)
            grid.addWidget(self.params_toggle, row, 1, Qt.AlignmentFlag.AlignLeft)
            grid.addWidget(self.params_label, row + 1, 1)
            row += 2
        notes = list(info.warnings)
        if trust_changed:
            notes.insert(0, "Its file changed since you trusted it, so it asks before each call again.")
        for w in notes:
            warn = QLabel(w, objectName="ToolWarning")
            warn.setWordWrap(True)
            grid.addWidget(warn, row, 1)
            row += 1
        grid.setColumnStretch(1, 1)

    def _toggle_params(self) -> None:
        show = self.params_label.isHidden()
        self.params_label.setVisible(show)
        self.params_toggle.setText("Hide parameters" if show else "Show parameters")


class ToolsPage(QWidget):
    """Settings → Tools. Changes are saved at once through the registry; `settings_changed` follows.

    `set_offline(True)` hides the browser. The python sandbox is probed in the background the
    first time the page is shown (or set a report with `set_sandbox_report`).
    """

    settings_changed = Signal()

    def __init__(
        self, registry: ToolRegistry, parent: QWidget | None = None, *, offline: bool = False, probe: bool = True
    ) -> None:
        super().__init__(parent, objectName="ToolsPage")
        self.registry = registry
        self.offline = offline
        self._probe_wanted = probe
        self._probe_worker: GeneratorWorker | None = None
        self.report: SandboxReport | None = None
        self.rows: dict[str, ToolRow] = {}

        _outer, _scroll, content = style.scroll_page(self, "ToolsPageContent")
        self._lay = QVBoxLayout(content)
        self._lay.setContentsMargins(24, 20, 24, 24)
        self._lay.setSpacing(10)

        # Function tools
        head = QHBoxLayout()
        head.addWidget(QLabel("Function tools", objectName="ToolsSectionTitle"))
        head.addStretch(1)
        self.reload_button = QPushButton("Reload", objectName="SecondaryButton")
        self.reload_button.setToolTip("Load the tools folder again after adding or changing a file")
        self.reload_button.clicked.connect(self.reload)
        head.addWidget(self.reload_button)
        self.open_folder_button = QPushButton("Open tools folder", objectName="SecondaryButton")
        self.open_folder_button.clicked.connect(self.open_tools_folder)
        head.addWidget(self.open_folder_button)
        self._lay.addLayout(head)
        hint = QLabel(
            "Drop a .py file with typed, documented functions into the tools folder: each public function "
            "becomes a tool the model can call (its docstring and type hints tell the model how).",
            objectName="ToolsHint",
        )
        hint.setWordWrap(True)
        self._lay.addWidget(hint)
        self.functions_box = QVBoxLayout()
        self.functions_box.setSpacing(8)
        self._lay.addLayout(self.functions_box)
        self.errors_title = QLabel("Tool files that could not be loaded", objectName="ToolsSectionTitle")
        self._lay.addWidget(self.errors_title)
        self.errors_box = QVBoxLayout()
        self.errors_box.setSpacing(6)
        self._lay.addLayout(self.errors_box)
        self.error_labels: list[QLabel] = []

        # Python
        self._lay.addSpacing(8)
        self._lay.addWidget(QLabel("Python", objectName="ToolsSectionTitle"))
        self.python_box = QVBoxLayout()
        self._lay.addLayout(self.python_box)
        self.guarantees_title = QLabel("What the sandbox guarantees on this computer", objectName="ToolName")
        self._lay.addWidget(self.guarantees_title)
        self.guarantees_grid = QGridLayout()
        self.guarantees_grid.setHorizontalSpacing(10)
        self.guarantees_grid.setVerticalSpacing(4)
        self._lay.addLayout(self.guarantees_grid)
        self.guarantees_status = QLabel("Checking the sandbox…", objectName="ToolsHint")
        self.guarantees_status.setWordWrap(True)
        self._lay.addWidget(self.guarantees_status)
        self.checks_toggle = QToolButton(objectName="ToolShowMore")
        self.checks_toggle.setText("Show the escapes that were tried")
        self.checks_toggle.setCursor(Qt.CursorShape.PointingHandCursor)
        self.checks_toggle.clicked.connect(self._toggle_checks)
        self.checks_toggle.hide()
        self._lay.addWidget(self.checks_toggle, 0, Qt.AlignmentFlag.AlignLeft)
        self.checks_label = QLabel("", objectName="ToolParams")
        self.checks_label.setWordWrap(True)
        self.checks_label.setTextFormat(Qt.TextFormat.RichText)
        self.checks_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.checks_label.hide()
        self._lay.addWidget(self.checks_label)

        # Browser
        self._lay.addSpacing(8)
        self._lay.addWidget(QLabel("Browser", objectName="ToolsSectionTitle"))
        self.browser_offline_note = QLabel(
            "Hidden in offline mode: the browser needs the internet.", objectName="ToolsHint"
        )
        self._lay.addWidget(self.browser_offline_note)
        self.browser_panel = QWidget()
        bp = QVBoxLayout(self.browser_panel)
        bp.setContentsMargins(0, 0, 0, 0)
        bp.setSpacing(8)
        self.browser_box = QVBoxLayout()
        bp.addLayout(self.browser_box)
        ep = QHBoxLayout()
        ep.addWidget(QLabel("Search endpoint (SearXNG JSON API)"))
        self.endpoint_edit = QLineEdit(registry.settings.search_endpoint, objectName="EndpointEdit")
        self.endpoint_edit.setAccessibleName("Search endpoint")
        self.endpoint_edit.setPlaceholderText("http://127.0.0.1:8888/search")
        self.endpoint_edit.editingFinished.connect(self._endpoint_edited)
        ep.addWidget(self.endpoint_edit, 1)
        bp.addLayout(ep)
        self._lay.addWidget(self.browser_panel)

        # Loop
        self._lay.addSpacing(8)
        limit_row = QHBoxLayout()
        limit_row.addWidget(QLabel("Tool calls per answer, at most", objectName="ToolName"))
        self.round_limit = QSpinBox(objectName="RoundLimit")
        self.round_limit.setAccessibleName("Tool calls per answer")
        self.round_limit.setRange(1, 100)
        self.round_limit.setValue(registry.settings.round_limit)
        self.round_limit.valueChanged.connect(self._round_limit_changed)
        limit_row.addWidget(self.round_limit)
        limit_row.addStretch(1)
        self._lay.addLayout(limit_row)
        self._lay.addStretch(1)

        self.refresh()
        self.set_offline(offline)

    # --- building ------------------------------------------------------------------------------
    def refresh(self) -> None:
        """Rebuild the rows from the registry (after a reload)."""
        for box in (self.functions_box, self.python_box, self.browser_box, self.errors_box):
            style.clear_layout(box)
        self.rows = {}
        reg = self.registry
        for info in reg.tools():
            row = ToolRow(
                info, reg.is_enabled(info.name), reg.approval_for(info.name), trust_changed=reg.trust_changed(info.name)
            )
            row.enabled_changed.connect(self._enabled_changed)
            row.approval_changed.connect(self._approval_changed)
            self.rows[info.name] = row
            target = {ToolKind.PYTHON: self.python_box, ToolKind.BROWSER: self.browser_box}.get(
                info.kind, self.functions_box
            )
            target.addWidget(row)
        self.error_labels = []
        for err in reg.errors:
            label = QLabel(objectName="ToolLoadError")
            label.setTextFormat(Qt.TextFormat.RichText)
            label.setWordWrap(True)
            label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            name = err.file.rsplit("/", 1)[-1]
            label.setText(f"<b>{html.escape(name)}</b>: {html.escape(err.error)}")
            label.setToolTip(err.detail or err.file)
            label.setContentsMargins(10, 6, 10, 6)
            self.errors_box.addWidget(label)
            self.error_labels.append(label)
        self.errors_title.setVisible(bool(reg.errors))

    def set_offline(self, offline: bool) -> None:
        self.offline = offline
        self.browser_panel.setVisible(not offline)
        self.browser_offline_note.setVisible(offline)

    # --- sandbox report ------------------------------------------------------------------------
    def showEvent(self, e: Any) -> None:  # type: ignore[override]
        super().showEvent(e)
        if self._probe_wanted and self.report is None and self._probe_worker is None:
            self.probe_sandbox()

    def probe_sandbox(self) -> None:
        st = self.registry.settings
        limits = SandboxLimits(
            timeout_s=st.python_timeout_s, cpu_s=st.python_cpu_s, memory_bytes=st.python_memory_mb * 1024**2
        )

        def job(cancel: Any) -> Any:
            yield probe_sandbox(limits)  # a fresh sandbox attempts each escape now

        self.guarantees_status.setText("Checking the sandbox: a fresh one is trying to break out…")
        self.guarantees_status.show()
        worker = GeneratorWorker(job)
        worker.yielded.connect(self.set_sandbox_report)
        worker.errored.connect(lambda exc: self.guarantees_status.setText(f"The sandbox could not be checked: {exc}"))
        worker.finished.connect(lambda: setattr(self, "_probe_worker", None))
        self._probe_worker = start_worker(worker)

    def set_sandbox_report(self, report: SandboxReport) -> None:
        self.report = report
        style.clear_layout(self.guarantees_grid)
        marks = {"yes": ("✓", "GuaranteeYes"), "partial": ("~", "GuaranteePartial"), "no": ("✗", "GuaranteeNo")}
        for i, g in enumerate(report.guarantees):
            mark, name = marks.get(g.holds, ("?", "GuaranteeNo"))
            m = QLabel(mark, objectName=name)
            m.setToolTip({"yes": "holds", "partial": "holds in part", "no": "does not hold"}.get(g.holds, ""))
            self.guarantees_grid.addWidget(m, i, 0, Qt.AlignmentFlag.AlignTop)
            t = QLabel(f"<b>{html.escape(g.title)}</b> — {html.escape(g.detail)}")
            t.setWordWrap(True)
            t.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
            self.guarantees_grid.addWidget(t, i, 1)
        self.guarantees_grid.setColumnStretch(1, 1)
        if report.checks and report.checked_at is not None:
            blocked = sum(c.blocked for c in report.checks)
            when = time.strftime("%H:%M:%S", time.localtime(report.checked_at))
            self.guarantees_status.setText(
                f"Verified on this computer at {when}: a fresh sandbox attempted {len(report.checks)} escapes "
                f"and {blocked} were blocked. Other lines are what the sandbox's layers reported at start."
            )
            rows = []
            for c in report.checks:
                mark = "✓ blocked" if c.blocked else "✗ got through"
                rows.append(f"{mark} — {html.escape(c.label)} <i>({html.escape(c.how)})</i>")
            self.checks_label.setText("<br>".join(rows))
            self.checks_toggle.show()
        else:
            self.guarantees_status.setText(
                "Reported by the sandbox's layers at start; no escape attempts were made (they run when this "
                "page opens)."
            )
            self.checks_toggle.hide()
            self.checks_label.hide()
        self.guarantees_status.show()

    def _toggle_checks(self) -> None:
        show = self.checks_label.isHidden()
        self.checks_label.setVisible(show)
        self.checks_toggle.setText("Hide the escapes that were tried" if show else "Show the escapes that were tried")

    # --- user actions --------------------------------------------------------------------------
    def reload(self) -> None:
        self.registry.reload()
        self.refresh()
        self.settings_changed.emit()

    def open_tools_folder(self) -> bool:
        self.registry.tools_dir.mkdir(parents=True, exist_ok=True)
        return bool(QDesktopServices.openUrl(QUrl.fromLocalFile(str(self.registry.tools_dir))))

    def _enabled_changed(self, name: str, on: bool) -> None:
        self.registry.set_enabled(name, on)
        self.settings_changed.emit()

    def _approval_changed(self, name: str, value: str) -> None:
        self.registry.set_approval(name, Approval(value))
        self.settings_changed.emit()

    def _endpoint_edited(self) -> None:
        value = self.endpoint_edit.text().strip()
        if value != self.registry.settings.search_endpoint:
            self.registry.settings.search_endpoint = value
            self.registry.save()
            self.settings_changed.emit()

    def _round_limit_changed(self, value: int) -> None:
        self.registry.settings.round_limit = value
        self.registry.save()
        self.settings_changed.emit()


__all__ = ["Switch", "ToolRow", "ToolsPage", "parameters_text"]
