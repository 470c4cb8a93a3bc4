"""The Compare view (effort lab): run prompts or a problem set at each effort, side by side, charted, exported."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtCore import QModelIndex, QPersistentModelIndex, QRectF, QSize, Qt, QTimer, Signal
from PySide6.QtGui import QCloseEvent, QColor, QFont, QFontMetricsF, QPainter, QShowEvent
from PySide6.QtWidgets import (
    QAbstractItemView,
    QApplication,
    QButtonGroup,
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QFrame,
    QGridLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QSpinBox,
    QStackedWidget,
    QStyle,
    QStyledItemDelegate,
    QStyleOptionViewItem,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from app.core import lab
from app.core.chat import EFFORTS, Message
from app.core.engine import GenerationStats, Sampling
from app.core.filehash import HashDone, HashProgress, cached_sha256, sha256_file
from app.core.lab import (
    EffortSummary,
    Experiment,
    ExperimentStarted,
    ExperimentStopped,
    LabError,
    ModelRef,
    Progress,
    RunDelta,
    RunFinished,
    RunResult,
    RunStarted,
    Spread,
)
from app.core.problem_sets import ImportResult, ProblemError, ProblemSet, builtin_problem_set, load_problem_set
from app.ui import style
from app.ui.charts import Bar, BarChart
from app.ui.markdown_view import Throttle
from app.ui.message_widget import AssistantMessageWidget
from app.ui.notice import NoticeBar
from app.ui.workers import GeneratorWorker, start_worker

EngineProvider = Callable[[], Any]
REFRESH_MS = 150  # figures, charts and the table are rebuilt at most this often while running

_EFFORT_COLORS = {
    False: {"low": "#a5acf2", "medium": "#5b66dc", "high": "#2e358f"},
    True: {"low": "#414a9c", "medium": "#6d78f0", "high": "#b3baff"},
}


def effort_color(effort: str) -> str:
    return _EFFORT_COLORS[style.current().dark].get(effort, style.current().accent)


def format_duration(s: float | None) -> str:
    """12 s, 1 min 20 s, 2 h 5 min; "—" when unknown."""
    if s is None:
        return "—"
    s = max(0.0, s)
    if s < 1:
        return "<1 s"
    if s < 60:
        return f"{s:.0f} s"
    if s < 3600:
        m, sec = divmod(round(s), 60)
        return f"{m} min {sec} s" if sec else f"{m} min"
    h, rest = divmod(round(s), 3600)
    return f"{h} h {rest // 60} min"


def _secs(v: float | None) -> str:
    if v is None:
        return "—"
    return f"{v:.2f} s" if v < 10 else f"{v:.1f} s"


def _pm(s: Spread | None, fmt: Callable[[float], str]) -> str:
    if s is None:
        return "—"
    return fmt(s.mean) + (f" ± {fmt(s.stdev)}" if s.n > 1 else "")


def _tok(v: float) -> str:
    return f"{v:,.0f}"


def _decimals(v: float) -> int:
    return 2 if abs(v) < 1 else 1 if abs(v) < 100 else 0


def _pm_secs(s: Spread | None) -> str:
    """Mean ± s.d. of seconds, both at the precision the mean needs ("0.06 ± 0.01", "12.3 ± 2.0")."""
    if s is None:
        return "—"
    d = _decimals(s.mean)
    return f"{s.mean:.{d}f}" + (f" ± {s.stdev:.{d}f}" if s.n > 1 else "")


# =================================================================================================
# Small widgets
# =================================================================================================
FIGURES = ("reasoning", "final", "TTFT", "total", "tok/s")
FIGURES_TIP = (
    "reasoning: tokens on the analysis channel · final: tokens of the answer\n"
    "TTFT: time to the first token of the final answer (prompt and reasoning included)\n"
    "total: time of the whole run · tok/s: generation speed after the first token"
)


def _strip_header(w: AssistantMessageWidget) -> AssistantMessageWidget:
    # The card shows the run's own header; the message's model name, chip and meta would repeat it,
    # and the chat's actions (regenerate, delete, branches) mean nothing for a recorded run.
    for part in (w.model_label, w.effort_chip, w.meta, getattr(w, "actions", None)):
        if part is not None:
            part.hide()
    lay = w.layout()
    if lay is not None:
        lay.setContentsMargins(0, 0, 0, 0)
    return w


class RunCard(QFrame):
    """One run: its figures, then the reasoning (collapsible) and the answer, live or finished.

    Kept light because a problem set shows runs × efforts of them at a time: the figures are one
    rich-text label, and the message widget is built only when there is something to show.
    """

    def __init__(self, key: lab.RunKey, seed: int, checked: bool, parent: QWidget | None = None) -> None:
        super().__init__(parent, objectName="RunCard")
        # Columns share the width equally whatever their content asks for: never a sideways scroll.
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.setMinimumWidth(220)
        self.key = key
        self.result: RunResult | None = None
        self.message: AssistantMessageWidget | None = None
        self._figures: dict[str, str] = dict.fromkeys(FIGURES, "—")
        lay = QVBoxLayout(self)
        lay.setContentsMargins(12, 10, 12, 8)
        lay.setSpacing(6)
        head = QHBoxLayout()
        head.setSpacing(8)
        self.title = QLabel(f"Run {key[2] + 1}", objectName="RunTitle")
        head.addWidget(self.title)
        self.seed = QLabel(f"seed {seed}", objectName="MessageMeta")
        head.addWidget(self.seed)
        head.addStretch(1)
        self.mark = QLabel("", objectName="RunMark")
        self.mark.setVisible(False)
        self._checked = checked
        head.addWidget(self.mark)
        lay.addLayout(head)
        self.figures_label = QLabel(objectName="RunFigures")
        self.figures_label.setTextFormat(Qt.TextFormat.RichText)
        self.figures_label.setToolTip(FIGURES_TIP)
        lay.addWidget(self.figures_label)
        self._render_figures()
        self.note = QLabel("", objectName="StopNote")
        self.note.setWordWrap(True)
        self.note.hide()
        lay.addWidget(self.note)
        lay.addStretch(1)  # a row is as tall as its longest answer: the others keep to the top

    def figures(self) -> dict[str, str]:
        """The figures as shown (tests read these)."""
        return dict(self._figures)

    def _render_figures(self) -> None:
        pal = style.current()
        cells = "".join(f"<td style='padding-right:8px'><b>{self._figures[k]}</b></td>" for k in FIGURES)
        caps = "".join(f"<td style='padding-right:8px; color:{pal.muted}; font-size:small'>{k}</td>" for k in FIGURES)
        self.figures_label.setText(f"<table cellspacing='0' cellpadding='0'><tr>{cells}</tr><tr>{caps}</tr></table>")

    def _insert_message(self, w: AssistantMessageWidget) -> None:
        lay = self.layout()
        assert isinstance(lay, QVBoxLayout)
        if self.message is not None:
            lay.replaceWidget(self.message, w)
            self.message.deleteLater()
        else:
            lay.insertWidget(lay.indexOf(self.note), w)
        self.message = _strip_header(w)

    # --- live ---------------------------------------------------------------------------------
    def start_live(self) -> None:
        self._figures["reasoning"] = "…"
        self._render_figures()
        self.title.setText(f"Run {self.key[2] + 1} · running")
        if self.message is None:
            self._insert_message(AssistantMessageWidget(model=None, effort=None))

    def append(self, delta: RunDelta) -> None:
        if self.message is None:
            self.start_live()
        assert self.message is not None
        if delta.reasoning:
            self.message.append_reasoning(delta.reasoning)
        if delta.final:
            self.message.append_answer(delta.final)

    # --- finished -----------------------------------------------------------------------------
    def show_result(self, r: RunResult, live: bool = False) -> None:
        self.result = r
        self.title.setText(f"Run {r.repeat + 1}")
        v = r.tokens_per_s
        self._figures.update(
            {
                "reasoning": f"{r.reasoning_tokens:,}",
                "final": f"{r.final_tokens:,}",
                "TTFT": _secs(r.first_final_s),
                "total": _secs(r.total_s),
                "tok/s": "—" if not v else f"{v:,.0f}" if v >= 100 else f"{v:.1f}",
            }
        )
        self._render_figures()
        if r.correct is not None and self._checked:
            self.mark.setText(("✓ " if r.correct else "✗ ") + (r.extracted or "no answer"))
            self.mark.setProperty("ok", bool(r.correct))
            self.mark.style().unpolish(self.mark)
            self.mark.style().polish(self.mark)
            self.mark.setToolTip(
                f"The checker read “{r.extracted}” as the answer" if r.extracted else "The checker found no answer"
            )
            self.mark.show()
        thinking_s = None
        if r.first_final_s is not None and r.first_token_s is not None:
            thinking_s = max(0.0, r.first_final_s - r.first_token_s)
        msg = Message(
            role="assistant",
            content=r.final,
            thinking=r.reasoning,
            preamble=r.preamble,
            effort=r.effort,
            stop_reason=r.stop_reason or ("error" if r.error else ""),
            thinking_s=thinking_s,
            stats=GenerationStats(
                prompt_tokens=r.prompt_tokens,
                cached_tokens=r.cached_tokens,
                generated_tokens=r.generated_tokens,
                ttft_s=r.first_token_s or 0.0,
                total_s=r.total_s,
                tokens_per_s=r.tokens_per_s,
                stop_reason=r.stop_reason,
            ),
        )
        if live and self.message is not None:
            self.message.finish(msg)
            _strip_header(self.message)  # finish() shows the chat's actions again
        else:
            self._insert_message(AssistantMessageWidget.from_message(msg))
        note = r.error or ""
        if not note and r.wait_s >= 0.5:
            note = f"Waited {r.wait_s:.1f} s for the model (another request was generating); not counted in the times."
        self.note.setText(note)
        self.note.setVisible(bool(note))

    def show_waiting(self) -> None:
        self.title.setText(f"Run {self.key[2] + 1} · waiting")


MARKS_ROLE = Qt.ItemDataRole.UserRole + 1


class MarksDelegate(QStyledItemDelegate):
    """Paints a cell's marks (✓ right, ✗ wrong, · not run) each in its own colour, centred."""

    def paint(
        self, painter: QPainter, option: QStyleOptionViewItem, index: QModelIndex | QPersistentModelIndex
    ) -> None:
        marks = index.data(MARKS_ROLE)
        if marks is None:
            super().paint(painter, option, index)
            return
        self.initStyleOption(option, index)
        option.text = ""
        widget = option.widget
        (widget.style() if widget else QApplication.style()).drawControl(
            QStyle.ControlElement.CE_ItemViewItem, option, painter, widget
        )
        pal = style.current()
        f = QFont(option.font)
        f.setWeight(QFont.Weight.DemiBold)
        fm = QFontMetricsF(f)
        glyphs = [("✓", pal.good) if m else ("✗", pal.bad) if m is False else ("·", pal.muted) for m in marks]
        gap = fm.horizontalAdvance(" ")
        width = sum(fm.horizontalAdvance(g) for g, _ in glyphs) + gap * max(0, len(glyphs) - 1)
        r = QRectF(option.rect)
        x = r.center().x() - width / 2
        painter.save()
        painter.setFont(f)
        for g, color in glyphs:
            w = fm.horizontalAdvance(g)
            painter.setPen(QColor(color))
            painter.drawText(
                QRectF(x, r.top(), w + 1, r.height()), Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignLeft, g
            )
            x += w + gap
        painter.restore()


class EffortColumn(QWidget):
    """The header of one effort's column: name, colour and the effort's figures."""

    def __init__(self, effort: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.setMinimumWidth(220)
        self.effort = effort
        lay = QVBoxLayout(self)
        lay.setContentsMargins(2, 0, 2, 4)
        lay.setSpacing(2)
        top = QHBoxLayout()
        top.setSpacing(8)
        dot = QLabel()
        dot.setFixedSize(10, 10)
        dot.setStyleSheet(f"background: {effort_color(effort)}; border-radius: 5px;")
        top.addWidget(dot)
        self.name = QLabel(f"{effort.capitalize()} effort", objectName="ColumnTitle")
        top.addWidget(self.name)
        top.addStretch(1)
        self.accuracy = QLabel("", objectName="ColumnAccuracy")
        top.addWidget(self.accuracy)
        lay.addLayout(top)
        self.figures = QLabel("", objectName="MessageMeta")
        self.figures.setWordWrap(True)
        self.figures.setToolTip("Reasoning tokens and total time per run: mean ± standard deviation")
        lay.addWidget(self.figures)

    def set_summary(self, s: EffortSummary | None) -> None:
        if s is None or not s.finished:
            self.figures.setText("No finished runs yet")
            self.accuracy.setText("")
            return
        parts = [f"{_pm(s.reasoning_tokens, _tok)} tokens", f"{_pm_secs(s.total_s)} s"]
        self.figures.setText(" · ".join(parts))
        rt, tt = s.reasoning_tokens, s.total_s
        if rt is not None and tt is not None:
            self.figures.setToolTip(
                f"{s.finished} finished run{'s' if s.finished != 1 else ''}\n"
                f"Reasoning tokens: mean {rt.mean:,.1f}, s.d. {rt.stdev:,.1f}, min {rt.min:,.0f}, max {rt.max:,.0f}\n"
                f"Total time: mean {tt.mean:.2f} s, s.d. {tt.stdev:.2f} s, min {tt.min:.2f} s, max {tt.max:.2f} s"
            )
        self.accuracy.setText(f"{s.correct}/{s.checked} ✓" if s.checked else "")


# =================================================================================================
# The window
# =================================================================================================
class CompareWindow(QWidget):
    """The effort lab. `engine_provider()` returns the loaded engine (EngineLike) or None.

    Signals: busy_changed(bool) while an experiment uses the engine (the chat must not generate
    meanwhile), run_finished(RunResult), experiment_finished(Experiment) when a runner stops.
    The main window calls refresh_model() after loading a model and set_engine_busy() while chat
    generates.
    """

    busy_changed = Signal(bool)
    run_finished = Signal(object)
    experiment_finished = Signal(object)

    def __init__(self, engine_provider: EngineProvider, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowFlag(Qt.WindowType.Window, True)
        self.setObjectName("CompareWindow")
        self.setWindowTitle("Effort lab — Harmonica")
        self.resize(1280, 860)
        self._engine_provider = engine_provider
        self.experiment: Experiment | None = None
        self._worker: GeneratorWorker | None = None
        self._hash_worker: GeneratorWorker | None = None
        self._hash_path: str | None = None
        self._hash_fraction: float | None = None
        self._hash_pause = threading.Event()
        self._model_sha: tuple[str, str] | None = None
        self._engine_busy_reason = ""
        self._sets: list[ProblemSet] = []
        self.last_import: ImportResult | None = None
        self._cards: dict[lab.RunKey, RunCard] = {}
        self._columns: dict[str, EffortColumn] = {}
        self._live_key: lab.RunKey | None = None
        self._live_text: tuple[list[str], list[str]] = ([], [])  # so a rebuilt grid can replay the live run
        self._follow_live = True
        self._last_progress: Progress | None = None
        self._last_progress_t = 0.0
        self._stop_reason = ""
        self._refresh = Throttle(self.refresh_results, REFRESH_MS, self)

        outer = QHBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.setSpacing(0)
        outer.addWidget(self._build_setup())
        sep = QFrame(objectName="LabSeparator")
        sep.setFixedWidth(1)
        outer.addWidget(sep)
        outer.addWidget(self._build_results(), 1)

        self._eta_timer = QTimer(self)
        self._eta_timer.setInterval(1000)
        self._eta_timer.timeout.connect(self._tick_eta)
        self._load_builtin()
        self._update_controls()
        self.refresh_results()
        self._rebuild_grid()

    # --- building -------------------------------------------------------------------------------
    def _build_setup(self) -> QWidget:
        panel = QFrame(objectName="LabSetup")
        panel.setFixedWidth(344)
        lay = QVBoxLayout(panel)
        lay.setContentsMargins(20, 18, 20, 14)
        lay.setSpacing(8)
        title = QLabel("Effort lab", objectName="LabTitle")
        f = title.font()
        f.setPointSizeF(f.pointSizeF() + 4)
        f.setWeight(f.Weight.DemiBold)
        title.setFont(f)
        lay.addWidget(title)
        sub = QLabel(
            "The same questions at low, medium and high reasoning effort: measured side by side.",
            objectName="EmptyHint",
        )
        sub.setWordWrap(True)
        lay.addWidget(sub)
        lay.addSpacing(6)

        seg = QHBoxLayout()
        seg.setSpacing(0)
        self.mode_group = QButtonGroup(self)
        self.mode_prompt = QPushButton("Prompt", objectName="Segment")
        self.mode_set = QPushButton("Problem set", objectName="Segment")
        for i, b in enumerate((self.mode_prompt, self.mode_set)):
            b.setCheckable(True)
            b.setProperty("pos", "first" if i == 0 else "last")
            b.setCursor(Qt.CursorShape.PointingHandCursor)
            self.mode_group.addButton(b, i)
            seg.addWidget(b, 1)
        self.mode_prompt.setChecked(True)
        self.mode_group.idToggled.connect(self._on_mode)
        lay.addLayout(seg)

        self.source_stack = QStackedWidget()
        page_prompt = QWidget()
        pl = QVBoxLayout(page_prompt)
        pl.setContentsMargins(0, 0, 0, 0)
        pl.setSpacing(4)
        self.prompt_edit = QPlainTextEdit(objectName="LabEdit")
        self.prompt_edit.setPlaceholderText("A question to ask at every effort…")
        self.prompt_edit.setTabChangesFocus(True)
        self.prompt_edit.setMinimumHeight(96)
        self.prompt_edit.textChanged.connect(self._update_controls)
        pl.addWidget(self.prompt_edit)
        self.source_stack.addWidget(page_prompt)

        page_set = QWidget()
        sl = QVBoxLayout(page_set)
        sl.setContentsMargins(0, 0, 0, 0)
        sl.setSpacing(6)
        row = QHBoxLayout()
        self.set_picker = QComboBox(objectName="LabCombo")
        self.set_picker.currentIndexChanged.connect(self._on_set_changed)
        row.addWidget(self.set_picker, 1)
        self.import_button = QPushButton("Import…", objectName="SecondaryButton")
        self.import_button.setToolTip(
            'Import your own problems: a JSONL file with one {"prompt": …, "answer": …, "check": …} per line'
        )
        self.import_button.clicked.connect(self._ask_import)
        row.addWidget(self.import_button)
        sl.addLayout(row)
        self.set_info = QLabel("", objectName="MessageMeta")
        self.set_info.setWordWrap(True)
        sl.addWidget(self.set_info)
        sl.addStretch(1)
        self.source_stack.addWidget(page_set)
        self.source_stack.setFixedHeight(self._STACK_HEIGHTS[0])
        lay.addWidget(self.source_stack)

        lay.addSpacing(4)
        lay.addWidget(QLabel("Instructions (optional)", objectName="FieldLabel"))
        self.instructions_edit = QPlainTextEdit(objectName="LabEdit")
        self.instructions_edit.setPlaceholderText("A developer message for every run, e.g. “Answer in one sentence.”")
        self.instructions_edit.setTabChangesFocus(True)
        self.instructions_edit.setFixedHeight(58)
        lay.addWidget(self.instructions_edit)

        lay.addSpacing(4)
        lay.addWidget(QLabel("Efforts", objectName="FieldLabel"))
        eff = QHBoxLayout()
        eff.setSpacing(14)
        self.effort_boxes: dict[str, QCheckBox] = {}
        for e in EFFORTS:
            box = QCheckBox(e.capitalize())
            box.setChecked(True)
            box.toggled.connect(self._update_controls)
            self.effort_boxes[e] = box
            eff.addWidget(box)
        eff.addStretch(1)
        lay.addLayout(eff)

        form = QFormLayout()
        form.setHorizontalSpacing(12)
        form.setVerticalSpacing(6)
        form.setLabelAlignment(Qt.AlignmentFlag.AlignLeft)
        self.runs_spin = QSpinBox(objectName="LabSpin")
        self.runs_spin.setRange(1, 100)
        self.runs_spin.setValue(3)
        self.runs_spin.setToolTip("How many times each question runs at each effort, each run with its own seed")
        self.runs_spin.valueChanged.connect(self._update_controls)
        form.addRow("Runs per effort", self.runs_spin)
        self.seed_spin = QSpinBox(objectName="LabSpin")
        self.seed_spin.setRange(0, 2_000_000_000)
        self.seed_spin.setValue(1)
        self.seed_spin.setToolTip("Run i uses seed + i at every effort, so efforts are compared on the same seeds")
        form.addRow("First seed", self.seed_spin)
        self.temp_spin = QDoubleSpinBox(objectName="LabSpin")
        self.temp_spin.setRange(0.0, 2.0)
        self.temp_spin.setSingleStep(0.1)
        self.temp_spin.setDecimals(2)
        self.temp_spin.setValue(1.0)
        self.temp_spin.setToolTip("Sampling temperature (gpt-oss recommends 1.0, with top-p 1.0)")
        form.addRow("Temperature", self.temp_spin)
        self.max_tokens_spin = QSpinBox(objectName="LabSpin")
        self.max_tokens_spin.setRange(0, 131072)
        self.max_tokens_spin.setSingleStep(256)
        self.max_tokens_spin.setSpecialValueText("No limit")
        self.max_tokens_spin.setValue(0)
        self.max_tokens_spin.setToolTip(
            "Stop a run after this many tokens (reasoning included); No limit = the context window"
        )
        form.addRow("Max tokens", self.max_tokens_spin)
        lay.addLayout(form)
        self.plan_label = QLabel("", objectName="MessageMeta")
        lay.addWidget(self.plan_label)

        buttons = QHBoxLayout()
        buttons.setSpacing(8)
        self.start_button = QPushButton("Start", objectName="PrimaryButton")
        self.start_button.clicked.connect(lambda: self.start())
        self.cancel_button = QPushButton("Cancel", objectName="SecondaryButton")
        self.cancel_button.clicked.connect(self.cancel)
        self.resume_button = QPushButton("Resume", objectName="SecondaryButton")
        self.resume_button.clicked.connect(lambda: self.resume())
        for b in (self.start_button, self.cancel_button, self.resume_button):
            b.setCursor(Qt.CursorShape.PointingHandCursor)
            buttons.addWidget(b, 1)
        lay.addSpacing(4)
        lay.addLayout(buttons)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.progress.setTextVisible(False)
        lay.addWidget(self.progress)
        self.progress_label = QLabel("", objectName="MessageMeta")
        self.progress_label.setWordWrap(True)
        lay.addWidget(self.progress_label)
        self.notice = NoticeBar()
        lay.addWidget(self.notice)
        lay.addStretch(1)

        files = QGridLayout()
        files.setHorizontalSpacing(8)
        files.setVerticalSpacing(8)
        self.open_button = QPushButton("Open…", objectName="SecondaryButton")
        self.open_button.clicked.connect(self._ask_open)
        self.save_button = QPushButton("Save as…", objectName="SecondaryButton")
        self.save_button.clicked.connect(self._ask_save)
        self.csv_button = QPushButton("Export CSV…", objectName="SecondaryButton")
        self.csv_button.clicked.connect(lambda: self._ask_export("csv"))
        self.json_button = QPushButton("Export JSON…", objectName="SecondaryButton")
        self.json_button.clicked.connect(lambda: self._ask_export("json"))
        for i, b in enumerate((self.open_button, self.save_button, self.csv_button, self.json_button)):
            files.addWidget(b, i // 2, i % 2)
        lay.addLayout(files)
        self.model_label = QLabel("", objectName="MessageMeta")
        self.model_label.setWordWrap(True)
        lay.addWidget(self.model_label)
        return panel

    def _build_results(self) -> QWidget:
        area = QWidget(objectName="LabResults")
        lay = QVBoxLayout(area)
        lay.setContentsMargins(22, 18, 22, 12)
        lay.setSpacing(10)
        head = QHBoxLayout()
        titles = QVBoxLayout()
        titles.setSpacing(2)
        self.exp_title = QLabel("No experiment yet", objectName="ExperimentTitle")
        f = self.exp_title.font()
        f.setPointSizeF(f.pointSizeF() + 2)
        f.setWeight(f.Weight.DemiBold)
        self.exp_title.setFont(f)
        titles.addWidget(self.exp_title)
        self.exp_meta = QLabel(
            "Enter a prompt or choose a problem set, pick efforts, and press Start.", objectName="MessageMeta"
        )
        self.exp_meta.setWordWrap(True)
        titles.addWidget(self.exp_meta)
        head.addLayout(titles, 1)
        self.chart_export = QPushButton("Save charts as PNG…", objectName="SecondaryButton")
        self.chart_export.clicked.connect(self._ask_export_charts)
        head.addWidget(self.chart_export, 0, Qt.AlignmentFlag.AlignTop)
        lay.addLayout(head)

        charts = QHBoxLayout()
        charts.setSpacing(12)
        self.charts: dict[str, BarChart] = {
            "accuracy": BarChart("Accuracy", percent=True),
            "reasoning": BarChart("Reasoning tokens"),
            "time": BarChart("Total time", unit="s"),
        }
        self.charts["accuracy"].empty_text = "No checked answers yet"
        for c in self.charts.values():
            c.setFixedHeight(236)
            charts.addWidget(c, 1)
        lay.addLayout(charts)

        self.tabs = QTabWidget(objectName="LabTabs")
        self.tabs.setDocumentMode(True)
        self.tabs.tabBar().setDrawBase(False)
        runs_page = QWidget()
        rl = QVBoxLayout(runs_page)
        rl.setContentsMargins(0, 8, 0, 0)
        rl.setSpacing(8)
        pick = QHBoxLayout()
        self.problem_picker = QComboBox(objectName="LabCombo")
        self.problem_picker.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.problem_picker.setMinimumContentsLength(40)
        self.problem_picker.activated.connect(self._on_problem_picked)
        pick.addWidget(self.problem_picker, 1)
        self.expected_label = QLabel("", objectName="MessageMeta")
        pick.addWidget(self.expected_label)
        rl.addLayout(pick)
        self.prompt_label = QLabel("", objectName="PromptText")
        self.prompt_label.setWordWrap(True)
        self.prompt_label.setTextFormat(Qt.TextFormat.PlainText)
        self.prompt_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        rl.addWidget(self.prompt_label)
        self.runs_scroll = QScrollArea(objectName="LabScroll")
        self.runs_scroll.setWidgetResizable(True)
        self.runs_scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.runs_scroll.setFrameShape(QFrame.Shape.NoFrame)
        self.grid_host = QWidget(objectName="LabGrid")
        self.grid = QGridLayout(self.grid_host)
        self.grid.setContentsMargins(0, 0, 6, 0)
        self.grid.setHorizontalSpacing(12)
        self.grid.setVerticalSpacing(10)
        self.grid.setAlignment(Qt.AlignmentFlag.AlignTop)
        self.runs_scroll.setWidget(self.grid_host)
        rl.addWidget(self.runs_scroll, 1)
        self.tabs.addTab(runs_page, "Runs")

        self.table = QTableWidget(objectName="LabTable")
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.verticalHeader().hide()
        self.table.setShowGrid(False)
        self.table.setAlternatingRowColors(True)
        self.table.setWordWrap(False)
        self.table.cellDoubleClicked.connect(self._on_table_double_click)
        self._marks_delegate = MarksDelegate(self.table)
        self.tabs.addTab(self.table, "Problems")
        lay.addWidget(self.tabs, 1)
        return area

    # --- problem sets ---------------------------------------------------------------------------
    def _load_builtin(self) -> None:
        try:
            self._add_set(builtin_problem_set())
        except (OSError, ProblemError) as e:
            self.notice.show_message(f"The built-in problem set could not be read: {e}", "error")

    def _add_set(self, ps: ProblemSet) -> int:
        self._sets.append(ps)
        self.set_picker.addItem(ps.name)
        self.set_picker.setItemData(self.set_picker.count() - 1, ps.source or ps.name, Qt.ItemDataRole.ToolTipRole)
        idx = self.set_picker.count() - 1
        self.set_picker.setCurrentIndex(idx)
        return idx

    def problem_sets(self) -> list[ProblemSet]:
        return list(self._sets)

    def current_set(self) -> ProblemSet | None:
        i = self.set_picker.currentIndex()
        return self._sets[i] if 0 <= i < len(self._sets) else None

    def _on_set_changed(self, _i: int) -> None:
        ps = self.current_set()
        if ps is None:
            self.set_info.setText("")
        else:
            cats = sorted({p.category for p in ps.problems if p.category})
            checked = sum(1 for p in ps.problems if p.check is not None)
            where = (
                "Built-in"
                if ps.source == "builtin"
                else "From an experiment"
                if ps.source == "experiment"
                else "Imported"
            )
            marked = "all checked" if checked == len(ps) else f"{checked} checked"
            text = (
                f"{where} · {len(ps)} problem{'s' if len(ps) != 1 else ''}"
                + (f" · {', '.join(cats)}" if cats else "")
                + f" · {marked}"
            )
            self.set_info.setText(text)
        self._update_controls()

    def import_problem_set(self, path: str | Path) -> ImportResult | None:
        """Import a JSONL set; skipped lines are reported (line and problem). None if unreadable."""
        try:
            result = load_problem_set(path)
        except ProblemError as e:
            self.notice.show_message(str(e), "error")
            return None
        self.last_import = result
        details = [str(i) for i in result.issues]
        if not result.problem_set.problems:
            self.notice.show_message(f"{Path(path).name} holds no usable problems.", "error", details=details)
            return result
        self._add_set(result.problem_set)
        self.mode_set.setChecked(True)
        self.notice.show_message(result.summary(), "warning" if result.skipped else "info", details=details)
        return result

    # --- engine and model -----------------------------------------------------------------------
    def engine(self) -> Any:
        try:
            e = self._engine_provider()
        except Exception:  # noqa: BLE001 - a provider that fails means no engine
            return None
        return e if e is not None and getattr(e, "info", None) is not None else None

    def set_engine_busy(self, busy: bool, reason: str = "The chat is generating an answer.") -> None:
        """The main window says the engine is in use elsewhere; Start waits until it is free."""
        self._engine_busy_reason = reason if busy else ""
        self._update_controls()

    @property
    def running(self) -> bool:
        return self._worker is not None

    def refresh_model(self) -> None:
        """Show the loaded model and compute its SHA-256 in the background (cached per file)."""
        e = self.engine()
        info = e.info if e is not None else None
        if info is None:
            self.model_label.setText("No model loaded")
            self._update_controls()
            return
        ref = ModelRef.from_info(info)
        self._update_controls()
        if ref.is_file:
            digest = cached_sha256(ref.path)
            if digest is not None:
                self._on_hash(HashDone(ref.path, digest))
            elif self._hash_path != ref.path:
                self._start_hash(ref.path)
        self._show_model()

    def _start_hash(self, path: str) -> None:
        if self._hash_worker is not None:
            self._hash_worker.quit()
        self._hash_path = path
        self._hash_fraction = 0.0
        w = GeneratorWorker(sha256_file, path, pause=self._hash_pause)
        w.yielded.connect(self._on_hash)
        w.errored.connect(lambda exc: self._hash_failed(path, exc))
        w.finished.connect(lambda w=w: self._hash_done(w))
        self._hash_worker = start_worker(w)

    def _hash_done(self, w: GeneratorWorker) -> None:
        if self._hash_worker is w:
            self._hash_worker = None
            if self._hash_fraction is not None and self._hash_fraction < 1.0:
                self._hash_path = None  # cancelled: a later refresh_model() starts again
            self._hash_fraction = None
            self._show_model()

    def _hash_failed(self, path: str, exc: BaseException) -> None:
        self._hash_fraction = None
        self.model_label.setText(f"{Path(path).name}: the SHA-256 could not be computed ({exc}).")

    def _on_hash(self, ev: object) -> None:
        if isinstance(ev, HashProgress):
            self._hash_fraction = ev.fraction
        elif isinstance(ev, HashDone):
            self._hash_fraction = 1.0
            self._model_sha = (ev.path, ev.sha256)
            if self.experiment is not None:
                self.experiment.set_model_sha256(ev.path, ev.sha256)
        self._show_model()

    def model_sha256(self, path: str) -> str | None:
        """The digest of `path` if this window computed (or found cached) it."""
        got = self._model_sha
        return got[1] if got and path and Path(got[0]) == Path(path) else None

    def _apply_known_sha(self, exp: Experiment) -> None:
        m = exp.spec.model
        sha = self.model_sha256(m.path) if m is not None else None
        if m is not None and sha:
            exp.set_model_sha256(m.path, sha)

    def _show_model(self) -> None:
        e = self.engine()
        if e is None:
            self.model_label.setText("No model loaded")
            return
        ref = ModelRef.from_info(e.info)
        text = f"Model: {ref.name or ref.file}"
        if ref.is_file:
            sha = self.model_sha256(ref.path)
            if sha:
                text += f" · SHA-256 {sha[:12]}…"
                self.model_label.setToolTip(f"{ref.path}\nSHA-256 {sha}")
            elif self._hash_fraction is not None:
                state = "paused while runs are measured" if self._hash_pause.is_set() else f"{self._hash_fraction:.0%}"
                text += f" · computing SHA-256 ({state})"
        self.model_label.setText(text)

    # --- experiment from the form ---------------------------------------------------------------
    def _efforts(self) -> list[str]:
        return [e for e in EFFORTS if self.effort_boxes[e].isChecked()]

    def _sampling(self) -> Sampling:
        n = self.max_tokens_spin.value()
        return Sampling(temperature=self.temp_spin.value(), max_tokens=n or None)

    def build_experiment(self) -> Experiment:
        """An experiment from the form (raises LabError with a message for the user)."""
        common: dict[str, Any] = dict(
            efforts=self._efforts(),
            runs=self.runs_spin.value(),
            instructions=self.instructions_edit.toPlainText(),
            seed=self.seed_spin.value(),
            sampling=self._sampling(),
        )
        if self.mode_set.isChecked():
            ps = self.current_set()
            if ps is None or not ps.problems:
                raise LabError("Choose a problem set with at least one problem.")
            return Experiment.create(ps.problems, problem_set=ps.name, **common)
        return Experiment.create(self.prompt_edit.toPlainText(), **common)

    def _why_not_start(self) -> str:
        if self.running:
            return "An experiment is running."
        if self.engine() is None:
            return "Load a model first (File → Open model… in the main window)."
        if self._engine_busy_reason:
            return self._engine_busy_reason
        return ""

    def _update_controls(self) -> None:
        running = self.running
        blocked = self._why_not_start()
        form_ok = bool(self._efforts()) and (
            (self.mode_set.isChecked() and self.current_set() is not None)
            or (not self.mode_set.isChecked() and bool(self.prompt_edit.toPlainText().strip()))
        )
        self.start_button.setEnabled(not blocked and form_ok)
        self.start_button.setToolTip(
            blocked or ("" if form_ok else "Enter a prompt (or choose a problem set) and at least one effort")
        )
        self.cancel_button.setEnabled(running)
        exp = self.experiment
        can_resume = exp is not None and not running and not exp.complete and not blocked
        self.resume_button.setEnabled(can_resume)
        self.resume_button.setToolTip(
            f"Run the {len(exp.pending())} runs that are not finished yet" if can_resume and exp else blocked
        )
        has_results = exp is not None and bool(exp.results())
        self.save_button.setEnabled(exp is not None and not running)
        self.csv_button.setEnabled(has_results)
        self.json_button.setEnabled(exp is not None)
        self.chart_export.setEnabled(has_results)
        for w in (
            self.mode_prompt,
            self.mode_set,
            self.source_stack,
            self.instructions_edit,
            self.runs_spin,
            self.seed_spin,
            self.temp_spin,
            self.max_tokens_spin,
            self.open_button,
            *self.effort_boxes.values(),
        ):
            w.setEnabled(not running)
        chosen = self.current_set()
        n_q = (len(chosen.problems) if chosen is not None else 0) if self.mode_set.isChecked() else 1
        total = n_q * len(self._efforts()) * self.runs_spin.value()
        self.plan_label.setText(
            f"{total} run{'s' if total != 1 else ''}: {n_q} question{'s' if n_q != 1 else ''} × "
            f"{len(self._efforts())} effort{'s' if len(self._efforts()) != 1 else ''} × {self.runs_spin.value()}"
        )

    _STACK_HEIGHTS = (104, 80)  # the prompt box; the set picker and its one-line description

    def _on_mode(self, button_id: int, checked: bool) -> None:
        if checked:
            self.source_stack.setCurrentIndex(button_id)
            self.source_stack.setFixedHeight(self._STACK_HEIGHTS[button_id])
            self._update_controls()

    # --- running --------------------------------------------------------------------------------
    def start(self, experiment: Experiment | None = None) -> bool:
        """Start a new experiment (from the form unless given); False with a notice if it cannot."""
        blocked = self._why_not_start()
        if blocked:
            self.notice.show_message(blocked, "error")
            return False
        try:
            exp = experiment or self.build_experiment()
        except LabError as e:
            self.notice.show_message(str(e), "error")
            return False
        if exp.path is None:
            exp.path = lab.default_experiment_path(exp.spec)
        if experiment is not None:
            self._fill_form(exp)  # the form shows what runs
        self._set_experiment(exp)
        return self._run()

    def resume(self) -> bool:
        """Continue the current experiment: finished runs are skipped."""
        blocked = self._why_not_start()
        if blocked or self.experiment is None:
            self.notice.show_message(blocked or "There is no experiment to resume.", "error")
            return False
        if self.experiment.complete:
            self.notice.show_message("Every run of this experiment is finished.", "info")
            return False
        if self.experiment.path is None:
            self.experiment.path = lab.default_experiment_path(self.experiment.spec)
        return self._run()

    def _run(self) -> bool:
        exp = self.experiment
        engine = self.engine()
        assert exp is not None
        problem = exp.check_model(engine.info if engine is not None else None)
        if problem:
            self.notice.show_message(problem, "error")
            return False
        self.notice.hide()
        self._hash_pause.set()  # hashing would share the CPU and disk with the runs being timed
        self._stop_reason = ""
        self._follow_live = True
        w = GeneratorWorker(lab.run_experiment, engine, exp)
        w.yielded.connect(self._on_event)
        w.errored.connect(self._on_error)
        w.finished.connect(lambda w=w: self._on_worker_finished(w))
        self._worker = w
        self.progress.setValue(int(1000 * exp.done / max(1, exp.total)))
        self.progress_label.setText("Starting…")
        self._update_controls()
        self.busy_changed.emit(True)
        start_worker(w)
        self._eta_timer.start()
        return True

    def cancel(self) -> None:
        """Stop within a token; finished runs stay recorded and Resume continues."""
        if self._worker is not None:
            self._worker.quit()
            self.progress_label.setText("Cancelling…")

    def _on_event(self, ev: object) -> None:
        exp = self.experiment
        if exp is None:
            return
        if isinstance(ev, RunDelta):
            self._live_text[0].append(ev.reasoning)
            self._live_text[1].append(ev.final)
            card = self._cards.get(ev.key)
            if card is not None:
                card.append(ev)
        elif isinstance(ev, RunStarted):
            self._live_key = ev.key
            self._live_text = ([], [])
            if self._follow_live and len(exp.spec.problems) > 1 and ev.key[0] != self._shown_problem():
                self._show_problem(ev.key[0])
            card = self._cards.get(ev.key)
            if card is not None:
                card.start_live()
                self._scroll_to(card)
        elif isinstance(ev, RunFinished):
            card = self._cards.get(ev.result.key)
            if card is not None:
                card.show_result(ev.result, live=ev.result.key == self._live_key)
            self._live_key = None
            self.run_finished.emit(ev.result)
            self._refresh()
        elif isinstance(ev, Progress):
            self._last_progress = ev
            self._last_progress_t = time.monotonic()
            self.progress.setValue(int(1000 * ev.fraction))
            self._tick_eta()
        elif isinstance(ev, ExperimentStarted):
            self.progress.setValue(int(1000 * ev.done / max(1, ev.total)))
            self._apply_known_sha(exp)  # the runner has recorded the model by now
        elif isinstance(ev, ExperimentStopped):
            self._stop_reason = ev.reason
            if ev.reason == "error":
                self.notice.show_message(f"The experiment stopped: {ev.message}", "error")

    def _tick_eta(self) -> None:
        p = self._last_progress
        if p is None or not self.running:
            return
        live = self._live_key
        where = f"Run {min(p.done + 1, p.total)} of {p.total}"
        if live is not None:
            where += f" · {live[1]}"
        if p.eta_s is None:
            eta = "estimating time left…"
        else:
            left = max(0.0, p.eta_s - (time.monotonic() - self._last_progress_t))
            eta = f"about {format_duration(left)} left" if left >= 1 else "almost done"
        self.progress_label.setText(f"{where} · {eta}")

    def _on_error(self, exc: BaseException) -> None:
        self._stop_reason = "error"
        self.notice.show_message(
            str(exc) if isinstance(exc, LabError) else f"The experiment failed: {exc}", "error", exc=exc
        )

    def _on_worker_finished(self, w: GeneratorWorker) -> None:
        if self._worker is not w:
            return
        self._worker = None
        self._eta_timer.stop()
        self._hash_pause.clear()
        exp = self.experiment
        self._refresh.flush()
        if exp is not None:
            self.progress.setValue(int(1000 * exp.done / max(1, exp.total)))
            if exp.complete:
                self.progress_label.setText(f"Finished: {exp.total} runs.")
            elif self._stop_reason == "cancelled" or w.cancel.is_set():
                self.progress_label.setText(f"Cancelled after {exp.done} of {exp.total} runs. Resume continues.")
            else:
                self.progress_label.setText(f"Stopped after {exp.done} of {exp.total} runs.")
        live = self._live_key
        self._live_key = None
        if exp is not None and live is not None and exp.result(live) is None:
            self._rebuild_grid()  # the cancelled run's partial text goes: it was not recorded
        self._update_controls()
        self._show_model()
        self.busy_changed.emit(False)
        if exp is not None:
            self.experiment_finished.emit(exp)

    def wait(self, timeout_s: float = 30.0) -> bool:
        """Block until the runner ends (tests and shutdown)."""
        w = self._worker
        return True if w is None else w.wait(timeout_s)

    def shutdown(self) -> None:
        for w in (self._worker, self._hash_worker):
            if w is not None:
                w.quit()
        for w in (self._worker, self._hash_worker):
            if w is not None:
                w.wait(10)

    def closeEvent(self, e: QCloseEvent) -> None:
        # Finished runs are already on disk; cancelling loses only the run in progress.
        self.cancel()
        super().closeEvent(e)

    def showEvent(self, e: QShowEvent) -> None:
        super().showEvent(e)
        self.refresh_model()

    # --- results --------------------------------------------------------------------------------
    def _set_experiment(self, exp: Experiment) -> None:
        self.experiment = exp
        self._last_progress = None
        problems = exp.spec.problems
        self.problem_picker.clear()
        for i, p in enumerate(problems):
            self.problem_picker.addItem(f"{i + 1}. {' '.join(p.prompt.split())}", p.id)
        multi = len(problems) > 1
        self.problem_picker.setVisible(multi)
        self.expected_label.setVisible(multi or problems[0].answer is not None)
        self.tabs.setTabVisible(1, multi or exp.spec.checked)
        self.charts["accuracy"].setVisible(exp.spec.checked)
        self._apply_known_sha(exp)
        self._show_problem(problems[0].id)
        self.refresh_results()
        self._update_controls()

    def _shown_problem(self) -> str | None:
        return self.problem_picker.currentData()

    def _show_problem(self, problem_id: str) -> None:
        idx = self.problem_picker.findData(problem_id)
        if idx >= 0:
            self.problem_picker.setCurrentIndex(idx)
        self._rebuild_grid()

    def _on_problem_picked(self, _index: int) -> None:
        self._follow_live = False  # the user chose what to look at
        self._rebuild_grid()

    def _rebuild_grid(self) -> None:
        exp = self.experiment
        while self.grid.count():
            item = self.grid.takeAt(0)
            old = item.widget() if item is not None else None
            if old is not None:
                old.deleteLater()
        self._cards.clear()
        self._columns.clear()
        if exp is None:
            hint = QLabel(
                "Each effort gets a column here: every run's reasoning, answer and figures, side by side.",
                objectName="EmptyHint",
            )
            hint.setWordWrap(True)
            hint.setAlignment(Qt.AlignmentFlag.AlignCenter)
            self.grid.addWidget(hint, 0, 0)
            return
        pid = self._shown_problem() or exp.spec.problems[0].id
        problem = exp.spec.problem(pid)
        self.prompt_label.setText(problem.prompt)
        self.expected_label.setText(f"Expected: {problem.check.describe()}" if problem.check else "")
        summary = exp.summary()
        for col, effort in enumerate(exp.spec.efforts):
            head = EffortColumn(effort)
            head.set_summary(summary.get(effort))
            self._columns[effort] = head
            self.grid.addWidget(head, 0, col, Qt.AlignmentFlag.AlignTop)
            self.grid.setColumnStretch(col, 1)
            for rep in range(exp.spec.runs):
                key = (pid, effort, rep)
                card = RunCard(key, exp.spec.seed_for(rep), problem.check is not None)
                res = exp.result(key)
                if res is not None:
                    card.show_result(res)
                elif key == self._live_key:
                    card.start_live()
                    card.append(RunDelta(key, "".join(self._live_text[0]), "".join(self._live_text[1])))
                else:
                    card.show_waiting()
                self._cards[key] = card
                self.grid.addWidget(card, rep + 1, col)
        for row in range(self.grid.rowCount()):
            self.grid.setRowStretch(row, 0)
        self.grid.setRowStretch(exp.spec.runs + 1, 1)  # spare height below the last row, not inside the cards

    def _scroll_to(self, card: RunCard) -> None:
        def go() -> None:
            if card.parent() is None or card.isHidden():
                return
            bar = self.runs_scroll.verticalScrollBar()
            y = card.mapTo(self.grid_host, card.rect().topLeft()).y()
            view = self.runs_scroll.viewport().height()
            if not bar.value() <= y <= bar.value() + view - 80:
                bar.setValue(max(0, y - 40))  # vertical only: the columns always fit the width

        QTimer.singleShot(0, go)

    def refresh_results(self) -> None:
        """Rebuild the figures, charts and table from the experiment (throttled while running)."""
        exp = self.experiment
        if exp is None:
            for c in self.charts.values():
                c.set_bars([])
            self.table.setRowCount(0)
            self.tabs.setTabVisible(1, False)
            self.problem_picker.hide()
            self.expected_label.hide()
            return
        spec = exp.spec
        summary = exp.summary()
        self.exp_title.setText(spec.title or "Experiment")
        model = spec.model.name or spec.model.file if spec.model else "no model yet"
        n_q = len(spec.problems)
        meta = [
            f"{n_q} question{'s' if n_q != 1 else ''} × {len(spec.efforts)} effort{'s' if len(spec.efforts) != 1 else ''} × {spec.runs} run{'s' if spec.runs != 1 else ''}",
            f"{exp.done}/{exp.total} done",
            f"seeds {spec.seed}–{spec.seed + spec.runs - 1}" if spec.runs > 1 else f"seed {spec.seed}",
            f"temperature {spec.sampling.temperature:g}",
            model,
        ]
        self.exp_meta.setText(" · ".join(meta))
        for effort, head in self._columns.items():
            head.set_summary(summary.get(effort))
        self.charts["accuracy"].set_bars(self.chart_bars("accuracy", summary))
        self.charts["reasoning"].set_bars(self.chart_bars("reasoning", summary))
        self.charts["time"].set_bars(self.chart_bars("time", summary))
        self._fill_table(exp, summary)
        self._update_controls()

    @staticmethod
    def chart_bars(kind: str, summary: dict[str, EffortSummary]) -> list[Bar]:
        """The bars a chart shows for `summary` (the chart draws exactly these)."""
        bars: list[Bar] = []
        for effort, s in summary.items():
            label = effort.capitalize()
            color = effort_color(effort)
            if kind == "accuracy":
                if s.accuracy is None:
                    continue
                bars.append(
                    Bar(label, 100.0 * s.accuracy, color, text=f"{s.accuracy:.0%}", note=f"{s.correct}/{s.checked}")
                )
                continue
            sp = s.reasoning_tokens if kind == "reasoning" else s.total_s
            if sp is None:
                continue
            fmt = _tok if kind == "reasoning" else (lambda v: f"{v:.{_decimals(v)}f}")
            bars.append(
                Bar(
                    label,
                    sp.mean,
                    color,
                    error=sp.stdev if sp.n > 1 else None,
                    low=sp.min,
                    high=sp.max,
                    text=fmt(sp.mean),
                    note=f"n = {sp.n}",
                )
            )
        return bars

    def _fill_table(self, exp: Experiment, summary: dict[str, EffortSummary]) -> None:
        spec = exp.spec
        efforts = spec.efforts
        headers = ["#", "Question", "Expected"] + [
            f"{e.capitalize()}" + (f"  {summary[e].accuracy:.0%}" if summary[e].accuracy is not None else "")
            for e in efforts
        ]
        self.table.setColumnCount(len(headers))
        self.table.setHorizontalHeaderLabels(headers)
        self.table.setRowCount(len(spec.problems))
        for row, p in enumerate(spec.problems):
            self._set_cell(row, 0, str(row + 1), align=Qt.AlignmentFlag.AlignRight)
            q = self._set_cell(row, 1, " ".join(p.prompt.split()))
            q.setToolTip(p.prompt)
            self._set_cell(row, 2, p.answer if p.answer is not None else "—")
            for col, e in enumerate(efforts, start=3):
                marks = exp.marks(p.id, e)
                text = " ".join("✓" if m else "✗" if m is False else "·" for m in marks)
                item = self._set_cell(row, col, text, align=Qt.AlignmentFlag.AlignCenter)
                item.setData(MARKS_ROLE, marks)
                done = [m for m in marks if m is not None]
                ok = sum(1 for m in done if m)
                item.setToolTip(f"{ok} of {len(done)} runs right" if done else "Not run yet")
        hh = self.table.horizontalHeader()
        hh.setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        hh.setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        hh.setSectionResizeMode(2, QHeaderView.ResizeMode.ResizeToContents)
        for col in range(3, len(headers)):
            self.table.setItemDelegateForColumn(col, self._marks_delegate)
            hh.setSectionResizeMode(col, QHeaderView.ResizeMode.ResizeToContents)

    def _set_cell(
        self, row: int, col: int, text: str, align: Qt.AlignmentFlag = Qt.AlignmentFlag.AlignLeft
    ) -> QTableWidgetItem:
        item = self.table.item(row, col)
        if item is None:
            item = QTableWidgetItem()
            self.table.setItem(row, col, item)
        item.setText(text)
        item.setTextAlignment(align | Qt.AlignmentFlag.AlignVCenter)
        return item

    def _on_table_double_click(self, row: int, _col: int) -> None:
        exp = self.experiment
        if exp is None or not 0 <= row < len(exp.spec.problems):
            return
        self._follow_live = False
        self._show_problem(exp.spec.problems[row].id)
        self.tabs.setCurrentIndex(0)

    # --- files ----------------------------------------------------------------------------------
    def _dialog_dir(self) -> str:
        from app.core import paths

        return str(paths.data_dir() / "lab")

    def _ask_import(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "Import problem set", "", "Problem sets (*.jsonl *.json *.txt);;All files (*)"
        )
        if path:
            self.import_problem_set(path)

    def _ask_open(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "Open experiment", self._dialog_dir(), "Experiments (*.jsonl *.json);;All files (*)"
        )
        if path:
            self.open_experiment(path)

    def _ask_save(self) -> None:
        if self.experiment is None:
            return
        name = (self.experiment.spec.title or "experiment")[:40].strip().replace("/", "-") or "experiment"
        path, _ = QFileDialog.getSaveFileName(
            self, "Save experiment", str(Path(self._dialog_dir()) / f"{name}.jsonl"), "Experiments (*.jsonl)"
        )
        if path:
            self.save_experiment(path)

    def _ask_export(self, kind: str) -> None:
        if self.experiment is None:
            return
        name = (self.experiment.spec.title or "experiment")[:40].strip().replace("/", "-") or "experiment"
        path, _ = QFileDialog.getSaveFileName(
            self, f"Export {kind.upper()}", str(Path.home() / f"{name}.{kind}"), f"{kind.upper()} (*.{kind})"
        )
        if path:
            (self.export_csv if kind == "csv" else self.export_json)(path)

    def _ask_export_charts(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Save charts as PNG into", str(Path.home()))
        if folder:
            self.export_charts(folder)

    def open_experiment(self, path: str | Path) -> bool:
        if self.running:
            self.notice.show_message("Cancel the running experiment before opening another.", "error")
            return False
        try:
            exp = lab.open_experiment(path)
        except LabError as e:
            self.notice.show_message(str(e), "error")
            return False
        self._fill_form(exp)
        self._set_experiment(exp)
        msg = f"Opened {Path(path).name}: {exp.done} of {exp.total} runs finished."
        if not exp.complete:
            msg += " Resume runs the rest."
        self.notice.show_message(msg, "warning" if exp.warnings else "info", details=exp.warnings)
        return True

    def _fill_form(self, exp: Experiment) -> None:
        s = exp.spec
        if s.problem_set is None and len(s.problems) == 1:
            self.mode_prompt.setChecked(True)
            self.prompt_edit.setPlainText(s.problems[0].prompt)
        else:
            idx = next(
                (
                    i
                    for i, ps in enumerate(self._sets)
                    if ps.name == s.problem_set
                    and [p.to_dict() for p in ps.problems] == [p.to_dict() for p in s.problems]
                ),
                -1,
            )
            if idx < 0:
                idx = self._add_set(ProblemSet(s.problem_set or "Opened experiment", list(s.problems), "experiment"))
            self.set_picker.setCurrentIndex(idx)
            self.mode_set.setChecked(True)
        self.instructions_edit.setPlainText(s.instructions)
        for e, box in self.effort_boxes.items():
            box.setChecked(e in s.efforts)
        self.runs_spin.setValue(min(self.runs_spin.maximum(), s.runs))
        self.seed_spin.setValue(min(self.seed_spin.maximum(), s.seed))
        self.temp_spin.setValue(s.sampling.temperature)
        self.max_tokens_spin.setValue(s.sampling.max_tokens or 0)

    def save_experiment(self, path: str | Path) -> bool:
        if self.experiment is None or self.running:
            return False
        try:
            p = self.experiment.save(path)
        except LabError as e:
            self.notice.show_message(str(e), "error")
            return False
        self.notice.show_message(f"Saved to {p}. Later runs are recorded there.", "info")
        return True

    def _export_note(self) -> str:
        m = self.experiment.spec.model if self.experiment else None
        if m is not None and m.is_file and not m.sha256:
            return " The model's SHA-256 is still being computed; export again once it is shown to include it."
        return ""

    def export_csv(self, path: str | Path) -> bool:
        exp = self.experiment
        if exp is None:
            return False
        return self._export(lambda: exp.export_csv(path), f"Exported {len(exp.results())} runs to {{}}.")

    def export_json(self, path: str | Path) -> bool:
        exp = self.experiment
        if exp is None:
            return False
        return self._export(lambda: exp.export_json(path), "Exported the experiment to {}.")

    def _export(self, write: Callable[[], Path], done: str) -> bool:
        """Write an export and say where it went (or why it could not)."""
        try:
            p = write()
        except LabError as e:
            self.notice.show_message(str(e), "error")
            return False
        self.notice.show_message(done.format(p) + self._export_note(), "info")
        return True

    def export_charts(self, folder: str | Path) -> list[Path]:
        """Save each visible chart as a PNG (2× resolution) in `folder`; returns the files."""
        out: list[Path] = []
        base = Path(folder)
        stem = (
            "".join(
                c if c.isalnum() or c in "-_" else "-"
                for c in (self.experiment.spec.title if self.experiment else "chart")
            )[:40].strip("-")
            or "chart"
        )
        for name, chart in self.charts.items():
            if chart.isHidden() or not chart.bars():
                continue
            p = base / f"{stem}-{name}.png"
            if chart.save_png(p):
                out.append(p)
        if out:
            self.notice.show_message(f"Saved {len(out)} chart{'s' if len(out) != 1 else ''} to {base}.", "info")
        else:
            self.notice.show_message(f"The charts could not be saved to {base}.", "error")
        return out

    def sizeHint(self) -> QSize:
        return QSize(1280, 860)
