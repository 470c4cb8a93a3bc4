"""The QPainter bar chart: tick maths, what it draws, PNG export."""

from __future__ import annotations

from pathlib import Path

import pytest
from PySide6.QtGui import QImage

from app.ui.charts import Bar, BarChart, nice_ticks


@pytest.mark.parametrize(
    ("top", "want"),
    [
        (1.0, [0, 0.25, 0.5, 0.75, 1.0]),
        (867, [0, 250, 500, 750, 1000]),
        (3.4, [0, 1, 2, 3, 4]),
        (12_500, [0, 5000, 10000, 15000]),
        (0, [0, 1]),
    ],
)
def test_nice_ticks(top: float, want: list[float]) -> None:
    assert nice_ticks(top) == pytest.approx(want)


def test_chart_draws_its_bars_and_exports_a_png(qtbot, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    c = BarChart("Reasoning tokens")
    qtbot.addWidget(c)
    c.resize(320, 240)
    c.show()
    c.grab()  # empty state paints
    bars = [
        Bar("Low", 120.0, "#aaaaff", error=10.0, low=100, high=140, text="120", note="n = 3"),
        Bar("High", 900.0, "#2222aa", error=None, low=900, high=900, text="900", note="n = 1"),
        Bar("Zero", 0.0, "#888888"),
    ]
    c.set_bars(bars)
    assert c.bars() == bars
    pix = c.grab()
    assert not pix.isNull()
    out = tmp_path / "chart.png"
    assert c.save_png(out, scale=2.0)
    img = QImage(str(out))
    assert (img.width(), img.height()) == (640, 480)
    # the tallest bar reaches the top tick area: some pixels of its colour near the top of the plot
    colours = {img.pixelColor(x, y).name() for x in range(0, 640, 4) for y in range(0, 480, 4)}
    assert "#2222aa" in colours and "#aaaaff" in colours
