"""Bar charts with error bars, painted with QPainter (PySide6-Essentials has no QtCharts), exportable as PNG."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import QPointF, QRectF, QSize, Qt
from PySide6.QtGui import QColor, QFont, QFontMetricsF, QImage, QPainter, QPainterPath, QPaintEvent, QPen
from PySide6.QtWidgets import QSizePolicy, QWidget

from app.ui import style


@dataclass(frozen=True)
class Bar:
    """One bar: `value` is the mean; `error` the ±1 s.d. whisker; `low`/`high` the min and max."""

    label: str
    value: float
    color: str
    error: float | None = None
    low: float | None = None
    high: float | None = None
    text: str = ""  # the value as shown above the bar
    note: str = ""  # small text under the label, e.g. "n = 3"


def nice_ticks(top: float, count: int = 4) -> list[float]:
    """Round tick values from 0 to at least `top` (steps of 1, 2 or 5 × 10ⁿ)."""
    if top <= 0 or not math.isfinite(top):
        return [0.0, 1.0]
    raw = top / count
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    n = math.ceil(top / step - 1e-9)
    return [i * step for i in range(n + 1)]


def _tick_text(v: float, percent: bool) -> str:
    if percent:
        return f"{v:.0f}%"
    if v >= 10_000:
        return f"{v / 1000:.0f}k"
    if v >= 1000:
        return f"{v / 1000:.1f}k".replace(".0k", "k")
    if v == int(v):
        return f"{int(v)}"
    return f"{v:.1f}"


class BarChart(QWidget):
    """A titled bar chart: mean bars, ±1 s.d. error bars with caps, min/max ticks, value labels.

    `bars()` returns exactly what is drawn, so tests can compare it with the statistics;
    `image()` renders the same picture off-screen at any scale for PNG export.
    """

    def __init__(self, title: str, *, unit: str = "", percent: bool = False, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("BarChart")
        self.title = title
        self.unit = unit
        self.percent = percent
        self._bars: list[Bar] = []
        self.empty_text = "No finished runs yet"
        self.legend = "" if percent else "mean · whisker ±1 s.d. · ticks min/max"
        self.setMinimumSize(220, 200)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)

    def sizeHint(self) -> QSize:
        return QSize(300, 230)

    def set_bars(self, bars: list[Bar]) -> None:
        self._bars = list(bars)
        self.update()

    def bars(self) -> list[Bar]:
        return list(self._bars)

    # --- painting -------------------------------------------------------------------------------
    def paintEvent(self, e: QPaintEvent) -> None:
        p = QPainter(self)
        self.paint(p, QRectF(self.rect()))
        p.end()

    def image(self, scale: float = 2.0) -> QImage:
        """The chart as an image of `scale` × its size (crisp in documents and slides)."""
        w, h = max(self.width(), 300), max(self.height(), 230)
        img = QImage(int(w * scale), int(h * scale), QImage.Format.Format_ARGB32_Premultiplied)
        img.setDevicePixelRatio(scale)
        img.fill(QColor(style.current().surface))
        p = QPainter(img)
        self.paint(p, QRectF(0, 0, w, h))
        p.end()
        return img

    def save_png(self, path: str | Path, scale: float = 2.0) -> bool:
        return bool(self.image(scale).save(str(path), "PNG"))

    def paint(self, p: QPainter, rect: QRectF) -> None:
        pal = style.current()
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        text_c, muted_c, grid_c = QColor(pal.text), QColor(pal.muted), QColor(pal.border)
        card = QPainterPath()
        card.addRoundedRect(rect.adjusted(0.5, 0.5, -0.5, -0.5), 10, 10)
        p.fillPath(card, QColor(pal.surface))
        p.setPen(QPen(grid_c, 1))
        p.drawPath(card)

        base = QFont(self.font())
        title_f = QFont(base)
        title_f.setWeight(QFont.Weight.DemiBold)
        small = QFont(base)
        small.setPointSizeF(max(7.0, base.pointSizeF() - 1.5))
        fm_small = QFontMetricsF(small)
        fm_title = QFontMetricsF(title_f)

        pad = 14.0
        p.setFont(title_f)
        p.setPen(text_c)
        title = self.title + (f" ({self.unit})" if self.unit else "")
        p.drawText(
            QRectF(rect.left() + pad, rect.top() + 10, rect.width() - 2 * pad, fm_title.height()),
            Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter,
            fm_title.elidedText(title, Qt.TextElideMode.ElideRight, rect.width() - 2 * pad),
        )
        top = rect.top() + 14 + fm_title.height() + 10
        legend_h = fm_small.height() + 8 if self.legend and self._bars else 0.0
        bottom = rect.bottom() - 10 - legend_h - 2 * fm_small.height() - 10  # room for labels and notes
        if self.legend and self._bars:
            p.setFont(small)
            p.setPen(muted_c)
            p.drawText(
                QRectF(
                    rect.left() + pad, rect.bottom() - 8 - fm_small.height(), rect.width() - 2 * pad, fm_small.height()
                ),
                Qt.AlignmentFlag.AlignLeft,
                fm_small.elidedText(self.legend, Qt.TextElideMode.ElideRight, rect.width() - 2 * pad),
            )
        if not self._bars:
            p.setFont(base)
            p.setPen(muted_c)
            p.drawText(
                QRectF(rect.left(), top, rect.width(), bottom - top), Qt.AlignmentFlag.AlignCenter, self.empty_text
            )
            return

        top_value = max(max(b.value + (b.error or 0), b.high if b.high is not None else b.value) for b in self._bars)
        ticks = (
            [0.0, 25.0, 50.0, 75.0, 100.0] if self.percent else nice_ticks(top_value * 1.08 if top_value > 0 else 1.0)
        )
        vmax = ticks[-1] or 1.0
        p.setFont(small)
        axis_w = max(fm_small.horizontalAdvance(_tick_text(t, self.percent)) for t in ticks) + 8
        plot = QRectF(rect.left() + pad + axis_w, top + fm_small.height() + 4, rect.width() - 2 * pad - axis_w, 0)
        plot.setBottom(bottom)
        if plot.height() < 30 or plot.width() < 40:
            return

        def y_of(v: float) -> float:
            return plot.bottom() - (max(0.0, v) / vmax) * plot.height()

        for t in ticks:
            y = y_of(t)
            p.setPen(QPen(grid_c, 1, Qt.PenStyle.SolidLine if t == 0 else Qt.PenStyle.DashLine))
            p.drawLine(QPointF(plot.left(), y), QPointF(plot.right(), y))
            p.setPen(muted_c)
            p.drawText(
                QRectF(rect.left() + pad, y - fm_small.height() / 2, axis_w - 6, fm_small.height()),
                Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter,
                _tick_text(t, self.percent),
            )

        slot = plot.width() / len(self._bars)
        bw = min(52.0, slot * 0.46)
        label_f = QFont(base)
        fm_label = QFontMetricsF(label_f)
        for i, b in enumerate(self._bars):
            cx = plot.left() + slot * (i + 0.5)
            y_top = y_of(b.value)
            bar = QRectF(cx - bw / 2, y_top, bw, plot.bottom() - y_top)
            path = QPainterPath()
            r = min(4.0, bar.height() / 2, bw / 2)
            path.addRoundedRect(bar, r, r)
            p.fillPath(path, QColor(b.color))
            p.fillRect(QRectF(bar.left(), bar.bottom() - r, bar.width(), r), QColor(b.color))  # square base
            whisker_top = y_top
            if b.low is not None and b.high is not None and b.high > b.low:
                p.setPen(QPen(muted_c, 1.2))
                p.drawLine(QPointF(cx, y_of(b.low)), QPointF(cx, y_of(b.high)))
                for v in (b.low, b.high):
                    p.drawLine(QPointF(cx - 3, y_of(v)), QPointF(cx + 3, y_of(v)))
                whisker_top = min(whisker_top, y_of(b.high))
            if b.error:
                lo, hi = y_of(b.value - b.error), y_of(b.value + b.error)
                p.setPen(QPen(text_c, 1.6))
                p.drawLine(QPointF(cx, lo), QPointF(cx, hi))
                cap = min(9.0, bw / 3)
                p.drawLine(QPointF(cx - cap, hi), QPointF(cx + cap, hi))
                p.drawLine(QPointF(cx - cap, lo), QPointF(cx + cap, lo))
                whisker_top = min(whisker_top, hi)
            if b.text:
                p.setFont(small)
                p.setPen(text_c)
                tw = slot - 4
                p.drawText(
                    QRectF(cx - tw / 2, whisker_top - fm_small.height() - 3, tw, fm_small.height()),
                    Qt.AlignmentFlag.AlignHCenter | Qt.AlignmentFlag.AlignBottom,
                    fm_small.elidedText(b.text, Qt.TextElideMode.ElideRight, tw),
                )
            p.setFont(label_f)
            p.setPen(text_c)
            p.drawText(
                QRectF(cx - slot / 2, plot.bottom() + 4, slot, fm_label.height()),
                Qt.AlignmentFlag.AlignHCenter,
                b.label,
            )
            if b.note:
                p.setFont(small)
                p.setPen(muted_c)
                p.drawText(
                    QRectF(cx - slot / 2, plot.bottom() + 4 + fm_label.height(), slot, fm_small.height()),
                    Qt.AlignmentFlag.AlignHCenter,
                    b.note,
                )
