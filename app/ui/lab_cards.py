"""The effort lab's small pieces: figures formatting, a run's card, an effort's column header, the marks painter."""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import QModelIndex, QPersistentModelIndex, QRectF, Qt
from PySide6.QtGui import QColor, QFont, QFontMetricsF, QPainter
from PySide6.QtWidgets import (
    QApplication,
    QFrame,
    QHBoxLayout,
    QLabel,
    QSizePolicy,
    QStyle,
    QStyledItemDelegate,
    QStyleOptionViewItem,
    QVBoxLayout,
    QWidget,
)

from app.core import lab
from app.core.chat import Message
from app.core.engine import GenerationStats
from app.core.lab import EffortSummary, RunDelta, RunResult, Spread
from app.ui import style
from app.ui.message_widget import AssistantMessageWidget

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


def fmt_tokens(v: float) -> str:
    return f"{v:,.0f}"


def decimals_for(v: float) -> int:
    return 2 if abs(v) < 1 else 1 if abs(v) < 100 else 0


def _pm_secs(s: Spread | None) -> str:
    """Mean ± s.d. of seconds, both at the precision the mean needs ("0.06 ± 0.01", "12.3 ± 2.0")."""
    if s is None:
        return "—"
    d = decimals_for(s.mean)
    return f"{s.mean:.{d}f}" + (f" ± {s.stdev:.{d}f}" if s.n > 1 else "")


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
        parts = [f"{_pm(s.reasoning_tokens, fmt_tokens)} tokens", f"{_pm_secs(s.total_s)} s"]
        self.figures.setText(" · ".join(parts))
        rt, tt = s.reasoning_tokens, s.total_s
        if rt is not None and tt is not None:
            self.figures.setToolTip(
                f"{s.finished} finished run{'s' if s.finished != 1 else ''}\n"
                f"Reasoning tokens: mean {rt.mean:,.1f}, s.d. {rt.stdev:,.1f}, min {rt.min:,.0f}, max {rt.max:,.0f}\n"
                f"Total time: mean {tt.mean:.2f} s, s.d. {tt.stdev:.2f} s, min {tt.min:.2f} s, max {tt.max:.2f} s"
            )
        self.accuracy.setText(f"{s.correct}/{s.checked} ✓" if s.checked else "")
