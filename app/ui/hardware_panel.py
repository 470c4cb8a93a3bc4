"""The hardware panel: what this computer has, how the model will load there and why, with overrides.

Just over 700 lines: its drawing parts are already in hardware_widgets.py and its demo in
hardware_demo.py; what is left is one form whose parts read each other's state.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QFrame,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from app.core.engine import LoadSettings
from app.core.gguf_info import GgufInfo
from app.core.hardware import GiB, HardwareProfile, detect
from app.core.plain_errors import describe_error
from app.core.planner import (
    Plan,
    Wishes,
    gpu_margin,
    plan,
    ram_margin,
    suggest_fix,
    usable_backend,
)
from app.ui import style
from app.ui.hardware_widgets import (
    CONTEXT_CHOICES,
    KV_CHOICES,
    MODE_LABELS,
    Card,
    MemoryBar,
    colors,
    combo,
    confirm_unfit,
    detect_job,
    gb,
    legend,
    machine_rows,
    notes_html,
    panel_qss,
    reasons_html,
    spin,
    summary_text,
    text_label,
)
from app.ui.workers import GeneratorWorker, start_worker


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
        self.setStyleSheet(panel_qss())
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
        self.workers: list[Any] = []  # GPU workers' devices (app/core/remote/rpc.py): the plan spans them too
        self._replan = QTimer(self, singleShot=True, interval=0)
        self._replan.timeout.connect(self._update_plan)
        self._build()
        self._apply_wishes(self._base_wishes)
        self.resize(780, 860)
        self.refresh()

    # -- public API ------------------------------------------------------------------------------

    def set_workers(self, workers: list[Any]) -> None:
        """GPU workers' devices (probed off the UI thread): the plan places layers on them too."""
        self.workers = list(workers)
        self._replan.start()

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
        self.title = text_label("Hardware and load settings", "HwTitle")
        self.subtitle = text_label("", "HwSubtitle")
        titles.addWidget(self.title)
        titles.addWidget(self.subtitle)
        head.addLayout(titles, 1)
        self.recheck = QPushButton("Check again", objectName="SecondaryButton")
        self.recheck.setToolTip("Detect the hardware again, e.g. after closing other apps")
        self.recheck.clicked.connect(self.refresh)
        head.addWidget(self.recheck, 0, Qt.AlignmentFlag.AlignTop)
        lay.addLayout(head)

        # This computer
        self.hw_card = Card("This computer")
        self.hw_status = text_label("", "HwMuted")
        self.hw_card.lay.addWidget(self.hw_status)
        self.hw_grid = QGridLayout()
        self.hw_grid.setHorizontalSpacing(18)
        self.hw_grid.setVerticalSpacing(6)
        self.hw_grid.setColumnStretch(1, 1)
        self.hw_card.lay.addLayout(self.hw_grid)
        self.hw_notes = text_label("", "HwNotes", rich=True)
        self.hw_notes.hide()
        self.hw_card.lay.addWidget(self.hw_notes)
        lay.addWidget(self.hw_card)

        # The plan
        self.plan_card = Card("How the model will run")
        chips = QHBoxLayout()
        chips.setSpacing(8)
        self.mode_chip = text_label("", "HwModeChip", wrap=False)
        self.backend_chip = text_label("", "HwBackendChip", wrap=False)
        chips.addWidget(self.mode_chip)
        chips.addWidget(self.backend_chip)
        chips.addStretch(1)
        self.plan_card.lay.addLayout(chips)
        self.summary = text_label("", "HwSummary")
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
        self.why_title = text_label("Why these settings", "HwWhyTitle")
        self.plan_card.lay.addWidget(self.why_title)
        self.reasons = text_label("", "HwReasons", rich=True)
        self.plan_card.lay.addWidget(self.reasons)
        lay.addWidget(self.plan_card)

        # Advanced
        self.adv_card = Card("")
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
        self.guard_title = text_label("", "HwGuardTitle")
        self.guard_text = text_label("", "HwGuardText", rich=True)
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
        label = text_label(title, "HwBarLabel", wrap=False)
        bar = MemoryBar()
        figure = text_label("", "HwBarFigure", wrap=False)
        legend = text_label("", "HwLegend", rich=True)
        grid.addWidget(label, row, 0)
        grid.addWidget(bar, row, 1)
        grid.addWidget(figure, row, 2)
        grid.addWidget(legend, row + 1, 1, 1, 2)
        return label, bar, figure, legend

    def _build_controls(self, form: QGridLayout) -> None:
        on = self._schedule
        self.run_on = combo(
            [("Automatic", None), ("CPU only", "cpu")],
            "Where the model runs; CPU only hides the GPU from llama.cpp",
            on,
        )
        self.gpu_layers = spin(
            -1,
            99,
            "Automatic",
            "llama.cpp's n_gpu_layers: the output layer plus the last n−1 blocks run on the GPU",
            on,
        )
        self.cpu_moe = spin(
            -1,
            99,
            "Automatic",
            "Blocks (from the first) whose expert weights stay in RAM, like llama.cpp's --n-cpu-moe",
            on,
        )
        self.context = combo(
            [("Automatic", None)] + [(f"{n:,} tokens", n) for n in CONTEXT_CHOICES],
            "How many tokens the model can see: the conversation, tool results and the answer",
            on,
        )
        self.flash = combo(
            [("Automatic", None), ("On", True), ("Off", False)],
            "Flash attention keeps work buffers small at long contexts",
            on,
        )
        self.kv_type = combo(
            [("Automatic", None)] + [(k, k) for k in KV_CHOICES],
            "Storage type of the KV cache; q8_0 halves it at a tiny cost in quality",
            on,
        )
        self.threads = spin(0, 256, "Automatic", "CPU threads for generating tokens", on)
        self.mmap = combo(
            [("Automatic", None), ("On", True), ("Off", False)],
            "Map the model file instead of reading it into memory",
            on,
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
            key = text_label(name, "HwKey", wrap=False)
            key.setBuddy(w)
            w.setAccessibleName(name)
            form.addWidget(key, r, c * 2)
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
        self.hw_status.setText(f"The hardware could not be checked: {describe_error(exc)}")
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
        if self.workers:
            from app.core.remote.pool import plan_with_workers

            self._auto_plan = plan_with_workers(self._auto_plan, self._model, self.workers)
            self._plan = plan_with_workers(self._plan, self._model, self.workers)
        self._fix = suggest_fix(self._profile, self._model, w) if not self._plan.fits else None
        self._render()
        self.settings_changed.emit(self._plan)

    # -- showing -------------------------------------------------------------------------------

    def _render_hardware(self) -> None:
        prof = self._profile
        style.clear_layout(self.hw_grid)
        if prof is None:
            return
        for r, (key, value) in enumerate(machine_rows(prof)):
            self.hw_grid.addWidget(text_label(key, "HwKey", wrap=False), r, 0, Qt.AlignmentFlag.AlignTop)
            self.hw_grid.addWidget(text_label(value, "HwValue"), r, 1)
        self.hw_notes.setText(notes_html(prof.notes))
        self.hw_notes.setVisible(bool(prof.notes))

    def _render(self) -> None:
        model_name = self._model.name if self._model is not None else ""
        self.subtitle.setText(
            f"{model_name} · {self._model.file_size / GiB:.1f} GiB file"
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
        self.summary.setText(summary_text(p, self._model))
        self._render_bars(p)
        self.reasons.setText(reasons_html(p))
        self._render_guard(p)
        self._update_auto_labels()

    def _render_bars(self, p: Plan) -> None:
        prof = self._profile
        assert prof is not None
        c = colors()
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
            self.vram_legend.setText(legend(segs) + f" &nbsp;·&nbsp; {kept / GiB:.1f} GiB kept free")
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
                legend(segs)
                + f" &nbsp;·&nbsp; {(prof.ram_total - prof.ram_available + ram_margin(prof)) / GiB:.1f} GiB used by others or kept free"
            )
        else:
            self.ram_bar.set_data(segs, 0, p.est_ram_bytes)
            self.ram_figure.setText(f"~{gb(p.est_ram_bytes)} (RAM size unknown)")
            self.ram_figure.setProperty("over", False)
            self.ram_legend.setText(legend(segs))

    def _figure(self, label: QLabel, need: int, budget: int) -> None:
        label.setText(f"{need / GiB:.1f} of {budget / GiB:.1f} GiB usable")
        label.setProperty("over", need > budget)
        label.style().unpolish(label)
        label.style().polish(label)

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
            choice = confirm_unfit(self, p, self._fix)
            if choice == "fix":
                self.apply_fix()
                p = self._plan
                if p is None or not p.fits:
                    return
            elif choice != "load":
                return
        self.load_requested.emit(p.to_load_settings())
        self.accept()

    def theme_changed(self, _palette: object) -> None:
        """View → Theme (style.apply): this panel's own style sheet and coloured figures follow."""
        self.setStyleSheet(panel_qss())
        self._render()

    def closeEvent(self, event: Any) -> None:
        if self._worker is not None:
            self._worker.quit()
        super().closeEvent(event)


if __name__ == "__main__":  # python -m app.ui.hardware_panel: the standalone look (ui/hardware_demo.py)
    from app.ui.hardware_demo import main

    raise SystemExit(main())
