"""The hardware panel: what this computer has, how the model will load there and why, with overrides."""

from __future__ import annotations

import html
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

from PySide6.QtCore import QRectF, QSize, Qt, QTimer, Signal
from PySide6.QtGui import QColor, QPainter, QPainterPath, QPaintEvent
from PySide6.QtWidgets import (
    QApplication,
    QCheckBox,
    QComboBox,
    QDialog,
    QFrame,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QMessageBox,
    QPushButton,
    QSizePolicy,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from app.core.engine import LoadSettings
from app.core.gguf_info import GgufInfo
from app.core.hardware import GiB, HardwareProfile, detect
from app.core.planner import (
    Plan,
    Wishes,
    backend_display_name,
    gpu_margin,
    plan,
    ram_margin,
    suggest_fix,
    usable_backend,
)
from app.ui import style
from app.ui.workers import GeneratorWorker, start_worker

MODE_LABELS = {
    "gpu": "All on the GPU",
    "gpu+cpu-experts": "GPU + experts in RAM",
    "layer-split": "Layer split",
    "cpu": "CPU only",
    "none": "Does not fit",
}
CONTEXT_CHOICES = (2048, 4096, 8192, 16384, 32768, 65536, 131072)
KV_CHOICES = ("f16", "q8_0", "q4_0")


def _gb(n: int | float) -> str:
    return f"{n / GiB:.1f} GB"


def detect_job(provider: Callable[[], HardwareProfile], *, cancel: threading.Event) -> Iterator[HardwareProfile]:
    """Run hardware detection off the UI thread (NVML and the llama.cpp import take a moment)."""
    yield provider()


# --- memory bar ------------------------------------------------------------------------------------


class MemoryBar(QWidget):
    """A stacked bar of where the bytes go, against the usable budget (a marker) and the total."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.segments: list[tuple[str, int, str]] = []
        self.budget = 0
        self.scale = 1
        self.setMinimumHeight(14)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)

    def sizeHint(self) -> QSize:
        return QSize(320, 14)

    def set_data(self, segments: list[tuple[str, int, str]], budget: int, total: int) -> None:
        self.segments = [(n, max(0, int(b)), c) for n, b, c in segments]
        self.budget = max(0, int(budget))
        self.scale = max(1, int(total), self.used, self.budget)
        self.update()

    @property
    def used(self) -> int:
        return sum(b for _, b, _ in self.segments)

    @property
    def over(self) -> bool:
        return self.used > self.budget

    def paintEvent(self, event: QPaintEvent) -> None:
        pal = style.current()
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        r = QRectF(self.rect()).adjusted(0.5, 1.5, -0.5, -1.5)
        radius = r.height() / 2
        clip = QPainterPath()
        clip.addRoundedRect(r, radius, radius)
        p.fillPath(clip, QColor(pal.hover))
        p.setClipPath(clip)
        x = r.left()
        w = r.width()
        for _, nbytes, color in self.segments:
            seg = w * nbytes / self.scale
            p.fillRect(QRectF(x, r.top(), seg, r.height()), QColor(color))
            x += seg
        if self.over:
            # The part beyond what may be used is hatched in red: this is what would not fit.
            bx = r.left() + w * self.budget / self.scale
            over = QRectF(bx, r.top(), x - bx, r.height())
            p.fillRect(over, QColor(_colors()["over"]))
            p.fillRect(over, QColor(255, 255, 255, 60) if not pal.dark else QColor(0, 0, 0, 60))
        p.setClipping(False)
        if 0 < self.budget < self.scale:
            bx = r.left() + w * self.budget / self.scale
            p.setPen(QColor(pal.text))
            p.drawLine(int(bx), int(r.top() - 1), int(bx), int(r.bottom() + 1))
        p.end()


def _colors() -> dict[str, str]:
    dark = style.current().dark
    return {
        "weights": style.current().accent,
        "kv": "#2fb5a8" if dark else "#1f9d91",
        "compute": "#d9a33a" if dark else "#d4951c",
        "runtime": "#7d8590" if dark else "#a3aab5",
        "gpu": "#8b93f5" if dark else "#7f89e8",
        "over": "#e5534b" if dark else "#d1242f",
    }


def _legend(segments: list[tuple[str, int, str]]) -> str:
    parts = [
        f"<span style='color:{c}'>&#9632;</span>&nbsp;{html.escape(name)} {n / GiB:.2f}"
        if n < 0.995 * GiB
        else f"<span style='color:{c}'>&#9632;</span>&nbsp;{html.escape(name)} {n / GiB:.1f}"
        for name, n, c in segments
        if n > 0
    ]
    return " &nbsp; ".join(parts)


# --- the dialog ------------------------------------------------------------------------------------


class _Card(QFrame):
    def __init__(self, title: str, parent: QWidget | None = None) -> None:
        super().__init__(parent, objectName="HwCard")
        self.lay = QVBoxLayout(self)
        self.lay.setContentsMargins(18, 14, 18, 16)
        self.lay.setSpacing(8)
        self.title = QLabel(title, objectName="HwCardTitle")
        self.lay.addWidget(self.title)


def _label(text: str = "", name: str = "", rich: bool = False, wrap: bool = True) -> QLabel:
    lab = QLabel(text, objectName=name or None)
    lab.setTextFormat(Qt.TextFormat.RichText if rich else Qt.TextFormat.PlainText)
    lab.setWordWrap(wrap)
    lab.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    return lab


def _panel_qss() -> str:
    pal = style.current()
    icons = style.resources_dir().as_posix() + "/icons"
    return f"""
    QDialog#HardwarePanel, QWidget#HwContent {{ background: {pal.window}; }}
    QScrollArea#HwScroll {{ border: none; background: {pal.window}; }}
    #HwCard {{ background: {pal.surface}; border: 1px solid {pal.border}; border-radius: 12px; }}
    #HwCardTitle {{ font-weight: 600; font-size: 11.5pt; color: {pal.text}; }}
    #HwTitle {{ font-weight: 700; font-size: 15pt; color: {pal.text}; }}
    #HwSubtitle, #HwMuted, #HwKey {{ color: {pal.muted}; }}
    #HwValue {{ color: {pal.text}; }}
    #HwNotes {{ color: {pal.muted}; font-size: 9pt; }}
    #HwModeChip {{ color: {pal.accent_text}; background: {pal.accent_soft}; border-radius: 10px; padding: 2px 10px; font-weight: 600; }}
    #HwModeChip[kind="bad"] {{ color: {pal.text}; background: {pal.error_bg}; border: 1px solid {pal.error_border}; }}
    #HwBackendChip {{ color: {pal.muted}; border: 1px solid {pal.border}; border-radius: 10px; padding: 2px 10px; }}
    #HwSummary {{ color: {pal.text}; }}
    #HwBarLabel {{ color: {pal.text}; font-weight: 600; }}
    #HwBarFigure {{ color: {pal.muted}; }}
    #HwBarFigure[over="true"] {{ color: {_colors()["over"]}; font-weight: 600; }}
    #HwLegend {{ color: {pal.muted}; font-size: 9pt; }}
    #HwWhyTitle {{ font-weight: 600; color: {pal.text}; }}
    #HwReasons {{ color: {pal.text}; }}
    #HwGuard {{ background: {pal.error_bg}; border: 1px solid {pal.error_border}; border-radius: 10px; }}
    #HwGuardTitle {{ font-weight: 600; color: {pal.text}; }}
    #HwGuardText {{ color: {pal.text}; }}
    QToolButton#HwAdvancedToggle {{ border: none; background: transparent; font-weight: 600; font-size: 11.5pt; color: {pal.text}; padding: 0; }}
    QToolButton#HwAdvancedToggle:hover {{ color: {pal.accent_text}; }}
    QSpinBox, QComboBox#HwCombo {{ background: {pal.surface}; border: 1px solid {pal.border}; border-radius: 6px; padding: 3px 8px; min-height: 22px; }}
    QSpinBox {{ padding: 3px 22px 3px 5px; }}
    QSpinBox:focus, QComboBox#HwCombo:focus {{ border-color: {pal.accent}; }}
    QSpinBox::up-button, QSpinBox::down-button {{ subcontrol-origin: border; width: 20px; border: none; background: transparent; }}
    QSpinBox::up-button {{ subcontrol-position: top right; }}
    QSpinBox::down-button {{ subcontrol-position: bottom right; }}
    QSpinBox::up-button:hover, QSpinBox::down-button:hover {{ background: {pal.hover}; }}
    QSpinBox::up-arrow {{ image: url({icons}/chevron-up.svg); width: 10px; height: 10px; }}
    QSpinBox::down-arrow {{ image: url({icons}/chevron-down.svg); width: 10px; height: 10px; }}
    QSpinBox::up-arrow:disabled, QSpinBox::up-arrow:off, QSpinBox::down-arrow:disabled, QSpinBox::down-arrow:off {{ image: none; }}
    QComboBox#HwCombo::drop-down {{ border: none; width: 18px; }}
    QComboBox#HwCombo::down-arrow {{ image: url({icons}/chevron-down.svg); width: 12px; height: 12px; }}
    QPushButton#PrimaryButton:disabled {{ background: {pal.disabled}; color: {pal.muted}; }}
    QPushButton#HwLinkButton {{ border: none; background: transparent; color: {pal.accent_text}; padding: 2px 0; text-align: left; }}
    QPushButton#HwLinkButton:hover {{ text-decoration: underline; }}
    """


class HardwarePanel(QDialog):
    """What was found, the plan for the chosen model with its reasons, and overrides with a guardrail.

    profile_provider runs on a worker thread (hardware.detect by default). Signals:
    load_requested(LoadSettings) when the user presses Load; settings_changed(Plan) whenever the
    shown plan changes (detection finished, a model was set, an override was edited);
    profile_ready(HardwareProfile) after each detection.
    """

    load_requested = Signal(object)
    settings_changed = Signal(object)
    profile_ready = Signal(object)

    def __init__(
        self,
        profile_provider: Callable[[], HardwareProfile] | None = None,
        model_info: GgufInfo | None = None,
        parent: QWidget | None = None,
        *,
        wishes: Wishes | None = None,
        load_label: str = "Load model",
    ) -> None:
        super().__init__(parent, objectName="HardwarePanel")
        self.setWindowTitle("Hardware and load settings")
        self.setStyleSheet(_panel_qss())
        self._provider = profile_provider or detect
        self._model = model_info
        self._base_wishes = wishes or Wishes()
        self._profile: HardwareProfile | None = None
        self._plan: Plan | None = None
        self._auto_plan: Plan | None = None
        self._fix: Plan | None = None
        self._worker: GeneratorWorker | None = None
        self._syncing = False
        self._load_label = load_label
        self._replan = QTimer(self, singleShot=True, interval=0)
        self._replan.timeout.connect(self._update_plan)
        self._build()
        self._apply_wishes(self._base_wishes)
        self.resize(780, 860)
        self.refresh()

    # -- public API ------------------------------------------------------------------------------

    @property
    def profile(self) -> HardwareProfile | None:
        return self._profile

    @property
    def plan(self) -> Plan | None:
        """The plan for the settings shown (automatic plus the user's overrides)."""
        return self._plan

    @property
    def auto_plan(self) -> Plan | None:
        """The planner's own choice, without the Advanced overrides."""
        return self._auto_plan

    @property
    def detecting(self) -> bool:
        return self._worker is not None

    def set_model(self, model_info: GgufInfo | None) -> None:
        self._model = model_info
        self._configure_ranges()
        self._schedule()

    def set_profile(self, profile: HardwareProfile) -> None:
        """Use a known profile (e.g. one the main window already detected) without detecting."""
        self._on_profile(profile)

    def refresh(self) -> None:
        """Detect the hardware again, off the UI thread (after closing apps, plugging in a GPU)."""
        if self._worker is not None:
            return
        self.recheck.setEnabled(False)
        self.hw_status.setText("Looking at this computer…")
        self.hw_status.show()
        w = GeneratorWorker(detect_job, self._provider)
        w.yielded.connect(self._on_profile)
        w.errored.connect(self._on_detect_error)
        w.finished.connect(self._on_detect_finished)
        self._worker = w
        start_worker(w)

    def wishes(self) -> Wishes:
        """The overrides as set in Advanced (None where the planner decides)."""
        w = Wishes(n_batch=self._base_wishes.n_batch, n_threads_batch=self._base_wishes.n_threads_batch)
        w.n_gpu_layers = None if self.gpu_layers.value() < 0 else self.gpu_layers.value()
        w.n_cpu_moe = None if self.cpu_moe.value() < 0 else self.cpu_moe.value()
        w.n_ctx = self.context.currentData()
        w.flash_attn = self.flash.currentData()
        w.kv_type = self.kv_type.currentData()
        w.n_threads = self.threads.value() or None
        w.use_mmap = self.mmap.currentData()
        w.use_mlock = True if self.mlock.isChecked() else None
        run_on = self.run_on.currentData()
        w.backend = "cpu" if run_on == "cpu" else None
        w.gpu_index = run_on if isinstance(run_on, int) else None
        return w

    def set_wishes(self, wishes: Wishes) -> None:
        """Show these overrides in Advanced (e.g. the user's saved settings); None = automatic."""
        self._base_wishes = replace(wishes)
        self._apply_wishes(wishes)
        self._schedule()

    def _apply_wishes(self, w: Wishes) -> None:
        def pick(combo: QComboBox, value: object) -> None:
            i = combo.findData(value) if value is not None else 0
            if i < 0 and combo is self.context and isinstance(value, int):
                combo.addItem(f"{value:,} tokens", value)  # a size not in the list: offer it as is
                i = combo.count() - 1
            combo.setCurrentIndex(max(0, i))

        self._syncing = True
        try:
            ngl = w.n_gpu_layers
            top = self.gpu_layers.maximum()
            self.gpu_layers.setValue(-1 if ngl is None else top if ngl < 0 else min(ngl, top))  # -1 wished = all
            self.cpu_moe.setValue(-1 if w.n_cpu_moe is None else min(max(0, w.n_cpu_moe), self.cpu_moe.maximum()))
            pick(self.context, w.n_ctx)
            pick(self.flash, w.flash_attn)
            pick(self.kv_type, w.kv_type)
            pick(self.mmap, w.use_mmap)
            self.threads.setValue(w.n_threads or 0)
            self.mlock.setChecked(bool(w.use_mlock))
            if (w.backend or "").lower() == "cpu":
                pick(self.run_on, "cpu")
            elif w.gpu_index is not None:
                pick(self.run_on, w.gpu_index)
            else:
                self.run_on.setCurrentIndex(0)
        finally:
            self._syncing = False

    def load_settings(self) -> LoadSettings | None:
        return self._plan.to_load_settings() if self._plan is not None else None

    def reset_overrides(self) -> None:
        self._syncing = True
        try:
            self.gpu_layers.setValue(-1)
            self.cpu_moe.setValue(-1)
            for combo in (self.context, self.flash, self.kv_type, self.mmap, self.run_on):
                combo.setCurrentIndex(0)
            self.threads.setValue(0)
            self.mlock.setChecked(False)
        finally:
            self._syncing = False
        self._schedule()

    def apply_fix(self) -> None:
        """Take the planner's suggestion for settings that do not fit."""
        fix = self._fix
        if fix is None:
            return
        self._syncing = True
        try:
            self.gpu_layers.setValue(-1)
            self.cpu_moe.setValue(-1)
            w = self.wishes()
            if w.n_ctx is not None and fix.n_ctx != w.n_ctx:
                self.context.setCurrentIndex(0)
            if w.kv_type is not None and fix.kv_type != w.kv_type:
                self.kv_type.setCurrentIndex(0)
            if w.flash_attn is not None and fix.flash_attn != w.flash_attn:
                self.flash.setCurrentIndex(0)
            if w.use_mmap is not None and fix.use_mmap != w.use_mmap:
                self.mmap.setCurrentIndex(0)
            if self.mlock.isChecked() and not fix.use_mlock:
                self.mlock.setChecked(False)
        finally:
            self._syncing = False
        self._update_plan()

    # -- building ------------------------------------------------------------------------------

    def _build(self) -> None:
        outer, scroll, content = style.scroll_page(self, "HwContent")
        scroll.setObjectName("HwScroll")
        lay = QVBoxLayout(content)
        lay.setContentsMargins(24, 20, 24, 12)
        lay.setSpacing(14)

        head = QHBoxLayout()
        titles = QVBoxLayout()
        titles.setSpacing(2)
        self.title = _label("Hardware and load settings", "HwTitle")
        self.subtitle = _label("", "HwSubtitle")
        titles.addWidget(self.title)
        titles.addWidget(self.subtitle)
        head.addLayout(titles, 1)
        self.recheck = QPushButton("Check again", objectName="SecondaryButton")
        self.recheck.setToolTip("Detect the hardware again, e.g. after closing other apps")
        self.recheck.clicked.connect(self.refresh)
        head.addWidget(self.recheck, 0, Qt.AlignmentFlag.AlignTop)
        lay.addLayout(head)

        # This computer
        self.hw_card = _Card("This computer")
        self.hw_status = _label("", "HwMuted")
        self.hw_card.lay.addWidget(self.hw_status)
        self.hw_grid = QGridLayout()
        self.hw_grid.setHorizontalSpacing(18)
        self.hw_grid.setVerticalSpacing(6)
        self.hw_grid.setColumnStretch(1, 1)
        self.hw_card.lay.addLayout(self.hw_grid)
        self.hw_notes = _label("", "HwNotes", rich=True)
        self.hw_notes.hide()
        self.hw_card.lay.addWidget(self.hw_notes)
        lay.addWidget(self.hw_card)

        # The plan
        self.plan_card = _Card("How the model will run")
        chips = QHBoxLayout()
        chips.setSpacing(8)
        self.mode_chip = _label("", "HwModeChip", wrap=False)
        self.backend_chip = _label("", "HwBackendChip", wrap=False)
        chips.addWidget(self.mode_chip)
        chips.addWidget(self.backend_chip)
        chips.addStretch(1)
        self.plan_card.lay.addLayout(chips)
        self.summary = _label("", "HwSummary")
        self.plan_card.lay.addWidget(self.summary)
        bars = QGridLayout()
        bars.setHorizontalSpacing(12)
        bars.setVerticalSpacing(3)
        bars.setColumnStretch(1, 1)
        self.vram_label, self.vram_bar, self.vram_figure, self.vram_legend = self._bar_row(bars, 0, "GPU memory")
        bars.setRowMinimumHeight(2, 6)  # air between the two bars
        self.ram_label, self.ram_bar, self.ram_figure, self.ram_legend = self._bar_row(bars, 3, "RAM")
        self.plan_card.lay.addSpacing(2)
        self.plan_card.lay.addLayout(bars)
        self.plan_card.lay.addSpacing(6)
        self.why_title = _label("Why these settings", "HwWhyTitle")
        self.plan_card.lay.addWidget(self.why_title)
        self.reasons = _label("", "HwReasons", rich=True)
        self.plan_card.lay.addWidget(self.reasons)
        lay.addWidget(self.plan_card)

        # Advanced
        self.adv_card = _Card("")
        self.adv_card.title.hide()
        self.adv_toggle = QToolButton(objectName="HwAdvancedToggle")
        self.adv_toggle.setText("Advanced")
        self.adv_toggle.setCheckable(True)
        self.adv_toggle.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.adv_toggle.setIcon(style.icon("chevron-right"))
        self.adv_toggle.toggled.connect(self._toggle_advanced)
        top = QHBoxLayout()
        top.addWidget(self.adv_toggle)
        top.addStretch(1)
        self.reset = QPushButton("Reset to automatic", objectName="HwLinkButton")
        self.reset.clicked.connect(self.reset_overrides)
        top.addWidget(self.reset)
        self.adv_card.lay.addLayout(top)
        self.adv_body = QWidget()
        form = QGridLayout(self.adv_body)
        form.setContentsMargins(0, 4, 0, 0)
        form.setHorizontalSpacing(14)
        form.setVerticalSpacing(8)
        self._build_controls(form)
        self.adv_card.lay.addWidget(self.adv_body)
        self.adv_body.hide()
        lay.addWidget(self.adv_card)
        lay.addStretch(1)

        # Guardrail and buttons, always visible below the scroll area.
        foot = QWidget(objectName="HwContent")
        fl = QVBoxLayout(foot)
        fl.setContentsMargins(24, 8, 24, 18)
        fl.setSpacing(10)
        self.guard = QFrame(objectName="HwGuard")
        gl = QHBoxLayout(self.guard)
        gl.setContentsMargins(14, 10, 14, 10)
        gtext = QVBoxLayout()
        gtext.setSpacing(2)
        self.guard_title = _label("", "HwGuardTitle")
        self.guard_text = _label("", "HwGuardText", rich=True)
        gtext.addWidget(self.guard_title)
        gtext.addWidget(self.guard_text)
        gl.addLayout(gtext, 1)
        self.fix_button = QPushButton("Use suggested settings", objectName="SecondaryButton")
        self.fix_button.clicked.connect(self.apply_fix)
        gl.addWidget(self.fix_button, 0, Qt.AlignmentFlag.AlignVCenter)
        self.guard.hide()
        fl.addWidget(self.guard)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        self.close_button = QPushButton("Close", objectName="SecondaryButton")
        self.close_button.clicked.connect(self.reject)
        self.load_button = QPushButton(self._load_label, objectName="PrimaryButton")
        self.load_button.setDefault(True)
        self.load_button.clicked.connect(self._on_load_clicked)
        buttons.addWidget(self.close_button)
        buttons.addWidget(self.load_button)
        fl.addLayout(buttons)
        outer.addWidget(foot)
        self._configure_ranges()
        self._render()

    def _bar_row(self, grid: QGridLayout, row: int, title: str) -> tuple[QLabel, MemoryBar, QLabel, QLabel]:
        label = _label(title, "HwBarLabel", wrap=False)
        bar = MemoryBar()
        figure = _label("", "HwBarFigure", wrap=False)
        legend = _label("", "HwLegend", rich=True)
        grid.addWidget(label, row, 0)
        grid.addWidget(bar, row, 1)
        grid.addWidget(figure, row, 2)
        grid.addWidget(legend, row + 1, 1, 1, 2)
        return label, bar, figure, legend

    def _combo(self, items: list[tuple[str, Any]], tip: str) -> QComboBox:
        c = QComboBox(objectName="HwCombo")
        for text, data in items:
            c.addItem(text, data)
        c.setToolTip(tip)
        c.currentIndexChanged.connect(self._schedule)
        return c

    def _spin(self, lo: int, hi: int, special: str, tip: str) -> QSpinBox:
        s = QSpinBox()
        s.setRange(lo, hi)
        s.setSpecialValueText(special)
        s.setValue(lo)
        s.setToolTip(tip)
        s.setAccelerated(True)
        s.valueChanged.connect(self._schedule)
        return s

    def _build_controls(self, form: QGridLayout) -> None:
        self.run_on = self._combo(
            [("Automatic", None), ("CPU only", "cpu")], "Where the model runs; CPU only hides the GPU from llama.cpp"
        )
        self.gpu_layers = self._spin(
            -1, 99, "Automatic", "llama.cpp's n_gpu_layers: the output layer plus the last n−1 blocks run on the GPU"
        )
        self.cpu_moe = self._spin(
            -1,
            99,
            "Automatic",
            "Blocks (from the first) whose expert weights stay in RAM, like llama.cpp's --n-cpu-moe",
        )
        self.context = self._combo(
            [("Automatic", None)] + [(f"{n:,} tokens", n) for n in CONTEXT_CHOICES],
            "How many tokens the model can see: the conversation, tool results and the answer",
        )
        self.flash = self._combo(
            [("Automatic", None), ("On", True), ("Off", False)],
            "Flash attention keeps work buffers small at long contexts",
        )
        self.kv_type = self._combo(
            [("Automatic", None)] + [(k, k) for k in KV_CHOICES],
            "Storage type of the KV cache; q8_0 halves it at a tiny cost in quality",
        )
        self.threads = self._spin(0, 256, "Automatic", "CPU threads for generating tokens")
        self.mmap = self._combo(
            [("Automatic", None), ("On", True), ("Off", False)], "Map the model file instead of reading it into memory"
        )
        self.mlock = QCheckBox("Lock the weights in RAM (mlock)")
        self.mlock.setToolTip("Keeps the OS from swapping the weights out; needs enough free RAM")
        self.mlock.toggled.connect(self._schedule)
        rows: list[tuple[str, QWidget]] = [
            ("Run on", self.run_on),
            ("GPU layers", self.gpu_layers),
            ("Experts in RAM (blocks)", self.cpu_moe),
            ("Context", self.context),
            ("Flash attention", self.flash),
            ("KV cache type", self.kv_type),
            ("Threads", self.threads),
            ("Memory-map the file", self.mmap),
        ]
        for i, (name, w) in enumerate(rows):
            r, c = divmod(i, 2)
            form.addWidget(_label(name, "HwKey", wrap=False), r, c * 2)
            w.setMinimumWidth(170)
            w.setFixedHeight(30)
            form.addWidget(w, r, c * 2 + 1)
        form.addWidget(self.mlock, (len(rows) + 1) // 2, 0, 1, 4)
        form.setColumnStretch(1, 1)
        form.setColumnStretch(3, 1)

    def _configure_ranges(self) -> None:
        n_layer = self._model.n_layer if self._model is not None else 24
        self._syncing = True
        try:
            self.gpu_layers.setMaximum(n_layer + 1)
            self.cpu_moe.setMaximum(n_layer)
            limit = (self._model.context_length if self._model is not None else 0) or max(CONTEXT_CHOICES)
            model = self.context.model()
            for i in range(1, self.context.count()):
                item = model.item(i)  # type: ignore[attr-defined]
                if item is not None:
                    item.setEnabled(self.context.itemData(i) <= limit)
            if self._profile is not None:
                self.threads.setMaximum(max(1, self._profile.cores_logical or 1) * 2)
                keep = self.run_on.currentData()
                while self.run_on.count() > 2:
                    self.run_on.removeItem(1)
                for i, g in enumerate(self._profile.gpus):
                    if usable_backend(g, self._profile.backends) is not None:
                        self.run_on.insertItem(
                            self.run_on.count() - 1, g.name if len(self._profile.gpus) == 1 else f"GPU {i}: {g.name}", i
                        )
                idx = self.run_on.findData(keep)
                self.run_on.setCurrentIndex(max(0, idx))
        finally:
            self._syncing = False

    def _toggle_advanced(self, on: bool) -> None:
        self.adv_body.setVisible(on)
        self.adv_toggle.setIcon(style.icon("chevron-down" if on else "chevron-right"))

    # -- detection -----------------------------------------------------------------------------

    def _on_profile(self, profile: object) -> None:
        if not isinstance(profile, HardwareProfile):
            return
        self._profile = profile
        self.hw_status.hide()
        first = self.run_on.count() <= 2
        self._configure_ranges()
        if first and self._base_wishes.gpu_index is not None:
            self._apply_wishes(self._base_wishes)  # the GPU choice needs the GPU list
        self._render_hardware()
        self.profile_ready.emit(profile)
        self._update_plan()

    def _on_detect_error(self, exc: BaseException) -> None:
        # detect() never raises; a custom provider might. Say so and keep the dialog usable.
        self.hw_status.setText(f"The hardware could not be checked: {exc}")
        self.hw_status.show()

    def _on_detect_finished(self) -> None:
        self._worker = None
        self.recheck.setEnabled(True)

    # -- planning ------------------------------------------------------------------------------

    def _schedule(self, *_: object) -> None:
        if not self._syncing:
            self._replan.start()

    def _update_plan(self) -> None:
        self._replan.stop()
        if self._profile is None or self._model is None:
            self._plan = self._auto_plan = self._fix = None
            self._render()
            return
        w = self.wishes()
        self._auto_plan = plan(self._profile, self._model, Wishes(n_batch=w.n_batch, n_threads_batch=w.n_threads_batch))
        self._plan = plan(self._profile, self._model, w)
        self._fix = suggest_fix(self._profile, self._model, w) if not self._plan.fits else None
        self._render()
        self.settings_changed.emit(self._plan)

    # -- showing -------------------------------------------------------------------------------

    def _render_hardware(self) -> None:
        prof = self._profile
        while self.hw_grid.count():
            item = self.hw_grid.takeAt(0)
            if item is not None and item.widget() is not None:
                item.widget().deleteLater()  # type: ignore[union-attr]
        if prof is None:
            return
        rows: list[tuple[str, str]] = []
        cores = (
            f"{prof.cores_physical} cores, {prof.cores_logical} threads" if prof.cores_logical else "core count unknown"
        )
        cpu = (prof.cpu_name or "CPU") + " · " + cores
        if prof.cpu_features:
            cpu += " · " + ", ".join(f.upper() for f in prof.cpu_features[:5])
        rows.append(("Processor", cpu))
        if prof.ram_total:
            rows.append(("Memory", f"{_gb(prof.ram_total)} · {_gb(prof.ram_available)} available"))
        else:
            rows.append(("Memory", "could not be read"))
        if prof.apple is not None:
            a = prof.apple
            rows.append(
                (
                    "Apple Silicon",
                    f"{a.chip} · {_gb(a.unified_memory)} unified memory · the GPU may use about {_gb(a.gpu_budget)} ({a.budget_source})",
                )
            )
        for i, g in enumerate(prof.gpus):
            if g.vendor == "apple":
                continue
            backend = usable_backend(g, prof.backends)
            bits = [g.name, f"{_gb(g.vram_total)} ({_gb(g.vram_free)} free)"]
            if g.driver:
                bits.append(f"driver {g.driver}")
            bits.append(
                f"via {backend}" + (f" ({g.device})" if g.device else "") if backend else "no llama.cpp backend for it"
            )
            rows.append((f"GPU {i}" if len(prof.gpus) > 1 else "GPU", " · ".join(bits)))
        if not prof.gpus:
            rows.append(("GPU", "none found"))
        if prof.backends is None:
            rows.append(("llama.cpp", "could not be asked which backends it has"))
        else:
            shown = [backend_display_name(b) for b in prof.backends]
            rows.append(("llama.cpp can use", ", ".join(shown) or "nothing"))
        for r, (key, value) in enumerate(rows):
            self.hw_grid.addWidget(_label(key, "HwKey", wrap=False), r, 0, Qt.AlignmentFlag.AlignTop)
            self.hw_grid.addWidget(_label(value, "HwValue"), r, 1)
        if prof.notes:
            items = "".join(f"<li>{html.escape(n)}</li>" for n in prof.notes)
            self.hw_notes.setText(
                f"<div style='margin-top:4px'>What the checks said:</div><ul style='margin:2px 0 0 -20px'>{items}</ul>"
            )
            self.hw_notes.show()
        else:
            self.hw_notes.hide()

    def _render(self) -> None:
        model_name = self._model.name if self._model is not None else ""
        self.subtitle.setText(
            f"{model_name} · {self._model.file_size / GiB:.1f} GB file"
            if self._model is not None
            else "Choose a model to see how it would run."
        )
        p = self._plan
        has = p is not None
        for w in (self.mode_chip, self.backend_chip, self.vram_bar, self.ram_bar, self.why_title, self.reasons):
            w.setVisible(has)
        if p is None:
            self.summary.setText(
                "Looking at this computer…" if self._profile is None else "Choose a model to see how it would run here."
            )
            for w in (
                self.vram_label,
                self.vram_figure,
                self.vram_legend,
                self.ram_label,
                self.ram_figure,
                self.ram_legend,
            ):
                w.hide()
            self.guard.hide()
            self.load_button.setEnabled(False)
            return
        assert self._profile is not None and self._model is not None
        self.mode_chip.setText(MODE_LABELS.get(p.mode, p.mode))
        self.mode_chip.setProperty("kind", "bad" if not p.fits else "")
        self.mode_chip.style().unpolish(self.mode_chip)
        self.mode_chip.style().polish(self.mode_chip)
        if p.use_gpu:
            where = f"Runs on {p.backend} · {p.gpu_name}" + (f" ({p.device})" if p.device else "")
        else:
            where = f"Runs on the CPU · {p.n_threads} threads"
        self.backend_chip.setText(where)
        self.backend_chip.setVisible(p.mode != "none")
        self.summary.setText(self._summary_text(p))
        self._render_bars(p)
        self.reasons.setText(self._reasons_html(p))
        self._render_guard(p)
        self._update_auto_labels()

    def _summary_text(self, p: Plan) -> str:
        m = self._model
        assert m is not None
        if p.mode == "gpu":
            s = f"All {m.n_layer} blocks and the output layer run on the GPU."
        elif p.mode == "gpu+cpu-experts":
            part = {1: "one", 2: "two"}.get(p.n_cpu_moe_partial)
            which = f"the first {p.n_cpu_moe}" if p.n_cpu_moe else ""
            if part:
                extra = f"{part} of the three expert tensors of block {p.n_cpu_moe + 1}"
                which = f"{which} blocks and {extra}" if which else extra
            s = f"All {m.n_layer} blocks run on the GPU; the expert weights of {which} stay in RAM and the CPU computes them."
        elif p.mode == "layer-split":
            s = f"{max(0, p.n_gpu_layers - 1)} of {m.n_layer} blocks and the output layer run on the GPU, the rest on the CPU."
        elif p.mode == "cpu":
            s = "The CPU runs the whole model."
        else:
            s = "The model does not fit in this computer's memory with any settings."
        if p.mode != "none":
            s += (
                f" Context {p.n_ctx:,} tokens, flash attention {'on' if p.flash_attn else 'off'}, {p.kv_type} KV cache."
            )
        return s

    def _render_bars(self, p: Plan) -> None:
        prof = self._profile
        assert prof is not None
        c = _colors()
        e = p.estimate
        gpu = prof.gpus[p.gpu_index] if p.gpu_index is not None and p.gpu_index < len(prof.gpus) else None
        show_vram = p.use_gpu and gpu is not None
        for w in (self.vram_label, self.vram_bar, self.vram_figure, self.vram_legend):
            w.setVisible(show_vram)
        if show_vram and gpu is not None:
            segs = [
                ("weights", e.gpu_weights, c["weights"]),
                ("KV cache", e.gpu_kv, c["kv"]),
                ("work buffers", e.gpu_compute, c["compute"]),
                ("driver", e.gpu_runtime, c["runtime"]),
            ]
            total = gpu.vram_free if gpu.unified_memory else gpu.vram_total
            self.vram_bar.set_data(segs, p.vram_budget, total)
            self.vram_label.setText("GPU share" if gpu.unified_memory else "GPU memory")
            self._figure(self.vram_figure, e.vram, p.vram_budget)
            kept = gpu_margin(gpu)
            self.vram_legend.setText(_legend(segs) + f" &nbsp;·&nbsp; {kept / GiB:.1f} GB kept free")
        unified = gpu is not None and gpu.unified_memory and p.use_gpu
        segs = [
            ("weights", e.host_weights, c["weights"]),
            ("KV cache", e.host_kv, c["kv"]),
            ("work buffers", e.host_compute, c["compute"]),
            ("runtime", e.host_runtime, c["runtime"]),
        ]
        if unified:
            segs.insert(0, ("GPU share", e.vram, c["gpu"]))
        self.ram_label.setText("Memory (shared)" if unified else "RAM")
        for w in (self.ram_label, self.ram_bar, self.ram_figure, self.ram_legend):
            w.show()
        if prof.ram_total > 0:
            self.ram_bar.set_data(segs, p.ram_budget, prof.ram_total)
            self._figure(self.ram_figure, p.est_ram_bytes, p.ram_budget)
            self.ram_legend.setText(
                _legend(segs)
                + f" &nbsp;·&nbsp; {(prof.ram_total - prof.ram_available + ram_margin(prof)) / GiB:.1f} GB used by others or kept free"
            )
        else:
            self.ram_bar.set_data(segs, 0, p.est_ram_bytes)
            self.ram_figure.setText(f"~{_gb(p.est_ram_bytes)} (RAM size unknown)")
            self.ram_figure.setProperty("over", False)
            self.ram_legend.setText(_legend(segs))

    def _figure(self, label: QLabel, need: int, budget: int) -> None:
        label.setText(f"{need / GiB:.1f} of {budget / GiB:.1f} GB usable")
        label.setProperty("over", need > budget)
        label.style().unpolish(label)
        label.style().polish(label)

    def _reasons_html(self, p: Plan) -> str:
        items = "".join(f"<li style='margin-bottom:4px'>{html.escape(r)}</li>" for r in p.reasons)
        out = f"<ul style='margin:0 0 0 -20px'>{items}</ul>"
        if p.suggestions:
            sug = "".join(f"<li style='margin-bottom:3px'>{html.escape(s)}</li>" for s in p.suggestions)
            out += (
                f"<div style='margin-top:6px'><b>What would help</b></div><ul style='margin:2px 0 0 -20px'>{sug}</ul>"
            )
        return out

    def _render_guard(self, p: Plan) -> None:
        if p.fits:
            self.guard.hide()
            self.load_button.setText(self._load_label)
            self.load_button.setEnabled(True)
            return
        shortfall = [r for r in p.reasons if r.startswith("Needs ~")]
        auto_fails = self._auto_plan is None or not self._auto_plan.fits
        if auto_fails and self._fix is None:
            self.guard_title.setText(
                f"{self._model.name if self._model else 'The model'} does not fit on this computer"
            )
            tips = p.suggestions[:2]
            self.guard_text.setText("<br>".join(html.escape(t) for t in shortfall + tips))
            self.fix_button.hide()
            self.load_button.setText(self._load_label)
            self.load_button.setEnabled(False)  # it would fail; nothing to offer but the tips
        else:
            self.guard_title.setText("These settings would not fit")
            text = (
                "<br>".join(html.escape(t) for t in shortfall) or "The estimate is above what this computer can hold."
            )
            if self._fix is not None:
                text += f"<br><span style='color:{style.current().muted}'>Suggested: {html.escape(self._fix.summary())}</span>"
            self.guard_text.setText(text)
            self.fix_button.setVisible(self._fix is not None)
            self.load_button.setText("Load anyway…")
            self.load_button.setEnabled(True)
        self.guard.show()

    def _update_auto_labels(self) -> None:
        """Show what "Automatic" means right now in each control, from the shown plan."""
        p = self._plan
        if p is None:
            return
        self._syncing = True
        try:
            self.gpu_layers.setSpecialValueText(f"Automatic ({p.n_gpu_layers})")
            self.cpu_moe.setSpecialValueText(f"Automatic ({p.n_cpu_moe})")
            self.threads.setSpecialValueText(f"Automatic ({p.n_threads})")
            self.context.setItemText(0, f"Automatic ({p.n_ctx:,})")
            self.flash.setItemText(0, f"Automatic ({'on' if p.flash_attn else 'off'})")
            self.kv_type.setItemText(0, f"Automatic ({p.kv_type})")
            self.mmap.setItemText(0, f"Automatic ({'on' if p.use_mmap else 'off'})")
            self.run_on.setItemText(0, f"Automatic ({'GPU' if p.use_gpu else 'CPU'})")
        finally:
            self._syncing = False

    # -- loading -------------------------------------------------------------------------------

    def _on_load_clicked(self) -> None:
        p = self._plan
        if p is None:
            return
        if not p.fits:
            choice = self._confirm_unfit(p)
            if choice == "fix":
                self.apply_fix()
                p = self._plan
                if p is None or not p.fits:
                    return
            elif choice != "load":
                return
        self.load_requested.emit(p.to_load_settings())
        self.accept()

    def _confirm_unfit(self, p: Plan) -> str:
        """Ask before a load the estimate says will not fit: "fix", "load" or "cancel"."""
        box = QMessageBox(self)
        box.setIcon(QMessageBox.Icon.Warning)
        box.setWindowTitle("These settings would not fit")
        need = [r for r in p.reasons if r.startswith("Needs ~")]
        box.setText("Loading with these settings will probably fail or make the computer swap.")
        box.setInformativeText(" ".join(need) + ("\n\nSuggested: " + self._fix.summary() if self._fix else ""))
        fix = box.addButton("Use suggested settings", QMessageBox.ButtonRole.AcceptRole) if self._fix else None
        anyway = box.addButton("Load anyway", QMessageBox.ButtonRole.DestructiveRole)
        box.addButton(QMessageBox.StandardButton.Cancel)
        cancel = box.button(QMessageBox.StandardButton.Cancel)
        default = fix if fix is not None else cancel
        if isinstance(default, QPushButton):
            box.setDefaultButton(default)
        box.exec()
        clicked = box.clickedButton()
        if fix is not None and clicked is fix:
            return "fix"
        if clicked is anyway:
            return "load"
        return "cancel"

    def closeEvent(self, event: Any) -> None:
        if self._worker is not None:
            self._worker.quit()
        super().closeEvent(event)


# --- a standalone look at the panel (screenshots, trying profiles) ---------------------------------


def _fake_profile(name: str) -> HardwareProfile:
    from app.core.hardware import (
        AppleSiliconInfo,
        GiB,
        GpuInfo,
        LlamaDevice,
        apple_gpu_budget,
    )

    if name.startswith("nvidia-"):
        vram = float(name.split("-")[1].rstrip("gb"))
        total = int(vram * GiB)
        return HardwareProfile(
            ram_total=32 * GiB,
            ram_available=int(25.3 * GiB),
            cores_physical=8,
            cores_logical=16,
            os="Linux",
            machine="x86_64",
            cpu_name="AMD Ryzen 7 5800X 8-Core Processor",
            cpu_features=["avx", "avx2", "fma", "f16c"],
            gpus=[
                GpuInfo(
                    "nvidia",
                    "NVIDIA GeForce RTX 3070" if vram == 8 else f"NVIDIA GPU ({vram:g} GB)",
                    total,
                    total - 420 * (1 << 20),
                    driver="550.120",
                    backend_hint="CUDA",
                    device="CUDA0",
                )
            ],
            backends=["CUDA", "CPU"],
            llama_devices=[
                LlamaDevice("CUDA0", "CUDA", "NVIDIA GeForce RTX 3070", "gpu"),
                LlamaDevice("CPU", "CPU", "AMD Ryzen 7 5800X", "cpu"),
            ],
            notes=["AMD: no AMD GPU in sysfs", "AMD: rocm-smi is not installed"],
        )
    if name.startswith("apple-"):
        ram = int(name.split("-")[1].rstrip("gb"))
        budget, source = apple_gpu_budget(ram * GiB)
        chip = "Apple M1" if ram <= 16 else "Apple M2 Max"
        return HardwareProfile(
            ram_total=ram * GiB,
            ram_available=int(ram * 0.8 * GiB),
            cores_physical=8,
            cores_logical=8,
            os="Darwin",
            machine="arm64",
            cpu_name=chip,
            cpu_features=["neon"],
            apple=AppleSiliconInfo(chip, ram * GiB, budget, 4, source),
            gpus=[
                GpuInfo(
                    "apple",
                    chip + " GPU",
                    budget,
                    budget,
                    driver="Metal",
                    backend_hint="Metal",
                    unified_memory=True,
                    device="MTL0",
                )
            ],
            backends=["MTL", "BLAS", "CPU"],
        )
    ram = int(name.split("-")[1].rstrip("gb")) if name.startswith("cpu-") else 16
    return HardwareProfile(
        ram_total=ram * GiB,
        ram_available=int(ram * 0.8 * GiB),
        cores_physical=4,
        cores_logical=8,
        os="Linux",
        machine="x86_64",
        cpu_name="Intel(R) Core(TM) i7-8550U CPU @ 1.80GHz",
        cpu_features=["avx", "avx2", "fma"],
        backends=["CPU"],
        notes=["NVIDIA: no driver found (NVML Shared Library Not Found)", "AMD: no AMD GPU in sysfs"],
    )


def main(argv: list[str] | None = None) -> int:
    """python -m app.ui.hardware_panel [--fake nvidia-8gb|apple-16gb|cpu-16gb] [--model PATH] [--advanced]"""
    import argparse

    from app.core.gguf_info import info_for_shape
    from app.core.planner import model_info_for_file

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("--fake", help="a made-up machine instead of detecting this one")
    ap.add_argument("--model", help="a GGUF file (default: the gpt-oss-20b shape)")
    ap.add_argument("--advanced", action="store_true", help="open the Advanced section")
    ap.add_argument("--dark", action="store_true")
    args = ap.parse_args(argv)
    app = QApplication.instance() or QApplication(sys.argv[:1])
    style.apply(app, dark=args.dark)  # type: ignore[arg-type]
    info = model_info_for_file(args.model) if args.model else info_for_shape("gpt-oss-20b")
    provider = (lambda: _fake_profile(args.fake)) if args.fake else detect
    panel = HardwarePanel(provider, info)
    panel.adv_toggle.setChecked(args.advanced)
    panel.load_requested.connect(lambda s: print("load:", s))
    panel.show()
    return app.exec()


if __name__ == "__main__":
    sys.exit(main())
