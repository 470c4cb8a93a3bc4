"""The hardware panel's pieces: the memory bar, its colours and legend, cards and labels, the panel's style, and
the machine and plan described in words."""

from __future__ import annotations

import html
import threading
from collections.abc import Callable, Iterator
from typing import Any

from PySide6.QtCore import QRectF, QSize, Qt
from PySide6.QtGui import QColor, QPainter, QPainterPath, QPaintEvent
from PySide6.QtWidgets import (
    QComboBox,
    QFrame,
    QLabel,
    QMessageBox,
    QPushButton,
    QSizePolicy,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from app.core.gguf_info import GgufInfo
from app.core.hardware import GiB, HardwareProfile
from app.core.paths import resources_dir
from app.core.planner import Plan, backend_display_name, usable_backend
from app.ui import style

MODE_LABELS = {
    "gpu": "All on the GPU",
    "gpu+cpu-experts": "GPU + experts in RAM",
    "layer-split": "Layer split",
    "cpu": "CPU only",
    "none": "Does not fit",
}
CONTEXT_CHOICES = (2048, 4096, 8192, 16384, 32768, 65536, 131072)
KV_CHOICES = ("f16", "q8_0", "q4_0")


def detect_job(provider: Callable[[], HardwareProfile], *, cancel: threading.Event) -> Iterator[HardwareProfile]:
    """Run hardware detection off the UI thread (NVML and the llama.cpp import take a moment)."""
    yield provider()


def gb(n: int | float) -> str:
    return f"{n / GiB:.1f} GiB"


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
            p.fillRect(over, QColor(colors()["over"]))
            p.fillRect(over, QColor(255, 255, 255, 60) if not pal.dark else QColor(0, 0, 0, 60))
        p.setClipping(False)
        if 0 < self.budget < self.scale:
            bx = r.left() + w * self.budget / self.scale
            p.setPen(QColor(pal.text))
            p.drawLine(int(bx), int(r.top() - 1), int(bx), int(r.bottom() + 1))
        p.end()


def colors() -> dict[str, str]:
    dark = style.current().dark
    return {
        "weights": style.current().accent,
        "kv": "#2fb5a8" if dark else "#1f9d91",
        "compute": "#d9a33a" if dark else "#d4951c",
        "runtime": "#7d8590" if dark else "#a3aab5",
        "gpu": "#8b93f5" if dark else "#7f89e8",
        "over": "#e5534b" if dark else "#d1242f",
    }


def legend(segments: list[tuple[str, int, str]]) -> str:
    parts = [
        f"<span style='color:{c}'>&#9632;</span>&nbsp;{html.escape(name)} {n / GiB:.2f}"
        if n < 0.995 * GiB
        else f"<span style='color:{c}'>&#9632;</span>&nbsp;{html.escape(name)} {n / GiB:.1f}"
        for name, n, c in segments
        if n > 0
    ]
    return " &nbsp; ".join(parts)


class Card(QFrame):
    def __init__(self, title: str, parent: QWidget | None = None) -> None:
        super().__init__(parent, objectName="HwCard")
        self.lay = QVBoxLayout(self)
        self.lay.setContentsMargins(18, 14, 18, 16)
        self.lay.setSpacing(8)
        self.title = QLabel(title, objectName="HwCardTitle")
        self.lay.addWidget(self.title)


def text_label(text: str = "", name: str = "", rich: bool = False, wrap: bool = True) -> QLabel:
    lab = QLabel(text, objectName=name or None)
    lab.setTextFormat(Qt.TextFormat.RichText if rich else Qt.TextFormat.PlainText)
    lab.setWordWrap(wrap)
    lab.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    return lab


def panel_qss() -> str:
    pal = style.current()
    icons = resources_dir().as_posix() + "/icons"
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
    #HwBarFigure[over="true"] {{ color: {colors()["over"]}; font-weight: 600; }}
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


def machine_rows(prof: HardwareProfile) -> list[tuple[str, str]]:
    """(label, value) rows for "This computer": processor, memory, GPUs and llama.cpp's backends."""
    rows: list[tuple[str, str]] = []
    cores = f"{prof.cores_physical} cores, {prof.cores_logical} threads" if prof.cores_logical else "core count unknown"
    cpu = (prof.cpu_name or "CPU") + " · " + cores
    if prof.cpu_features:
        cpu += " · " + ", ".join(f.upper() for f in prof.cpu_features[:5])
    rows.append(("Processor", cpu))
    if prof.ram_total:
        rows.append(("Memory", f"{gb(prof.ram_total)} · {gb(prof.ram_available)} available"))
    else:
        rows.append(("Memory", "could not be read"))
    if prof.apple is not None:
        a = prof.apple
        rows.append(
            (
                "Apple Silicon",
                f"{a.chip} · {gb(a.unified_memory)} unified memory · the GPU may use about {gb(a.gpu_budget)} ({a.budget_source})",
            )
        )
    for i, g in enumerate(prof.gpus):
        if g.vendor == "apple":
            continue
        backend = usable_backend(g, prof.backends)
        bits = [g.name, f"{gb(g.vram_total)} ({gb(g.vram_free)} free)"]
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
    return rows


def notes_html(notes: list[str]) -> str:
    """What the hardware checks said, as a small list (empty when they said nothing)."""
    if not notes:
        return ""
    items = "".join(f"<li>{html.escape(n)}</li>" for n in notes)
    return f"<div style='margin-top:4px'>What the checks said:</div><ul style='margin:2px 0 0 -20px'>{items}</ul>"


def summary_text(p: Plan, m: GgufInfo) -> str:
    """How the model runs under plan `p`, in one or two sentences."""
    if p.mode == "gpu":
        s = f"All {m.n_layer} blocks and the output layer run on the GPU."
    elif p.mode == "gpu+cpu-experts":
        part = {1: "one", 2: "two"}.get(p.n_cpu_moe_partial)
        which = f"the first {p.n_cpu_moe} blocks" if p.n_cpu_moe else ""
        if part:
            extra = f"{part} of the three expert tensors of block {p.n_cpu_moe + 1}"
            which = f"{which} and {extra}" if which else extra
        s = f"All {m.n_layer} blocks run on the GPU; the expert weights of {which} stay in RAM and the CPU computes them."
    elif p.mode == "layer-split":
        s = f"{max(0, p.n_gpu_layers - 1)} of {m.n_layer} blocks and the output layer run on the GPU, the rest on the CPU."
    elif p.mode == "cpu":
        s = "The CPU runs the whole model."
    else:
        s = "The model does not fit in this computer's memory with any settings."
    if p.mode != "none":
        s += f" Context {p.n_ctx:,} tokens, flash attention {'on' if p.flash_attn else 'off'}, {p.kv_type} KV cache."
    return s


def reasons_html(p: Plan) -> str:
    """The planner's reasons, and what would help when nothing fits."""
    items = "".join(f"<li style='margin-bottom:4px'>{html.escape(r)}</li>" for r in p.reasons)
    out = f"<ul style='margin:0 0 0 -20px'>{items}</ul>"
    if p.suggestions:
        sug = "".join(f"<li style='margin-bottom:3px'>{html.escape(s)}</li>" for s in p.suggestions)
        out += f"<div style='margin-top:6px'><b>What would help</b></div><ul style='margin:2px 0 0 -20px'>{sug}</ul>"
    return out


def combo(items: list[tuple[str, Any]], tip: str, on_change: Callable[..., None]) -> QComboBox:
    """A combo box of the Advanced section: (text, value) items; `on_change` on every choice."""
    c = QComboBox(objectName="HwCombo")
    for text, data in items:
        c.addItem(text, data)
    c.setToolTip(tip)
    c.currentIndexChanged.connect(on_change)
    return c


def spin(lo: int, hi: int, special: str, tip: str, on_change: Callable[..., None]) -> QSpinBox:
    """A spin box of the Advanced section whose lowest value means `special` ("Automatic")."""
    s = QSpinBox()
    s.setRange(lo, hi)
    s.setSpecialValueText(special)
    s.setValue(lo)
    s.setToolTip(tip)
    s.setAccelerated(True)
    s.valueChanged.connect(on_change)
    return s


def confirm_unfit(parent: QWidget, p: Plan, fix_plan: Plan | None) -> str:
    """Ask before a load the estimate says will not fit: "fix", "load" or "cancel"."""
    box = QMessageBox(parent)
    box.setIcon(QMessageBox.Icon.Warning)
    box.setWindowTitle("These settings would not fit")
    need = [r for r in p.reasons if r.startswith("Needs ~")]
    box.setText("Loading with these settings will probably fail or make the computer swap.")
    box.setInformativeText(" ".join(need) + ("\n\nSuggested: " + fix_plan.summary() if fix_plan else ""))
    fix = box.addButton("Use suggested settings", QMessageBox.ButtonRole.AcceptRole) if fix_plan else None
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
