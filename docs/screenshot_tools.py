"""Render a conversation with a function tool card and a python tool card (a real figure) to docs/screenshot-tools.png.

Run under a display (e.g. `Xvfb :102 & DISPLAY=:102 python -m docs.screenshot_tools`). The python
card's figure comes from the real sandboxed kernel, so matplotlib must be installed.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from PySide6.QtWidgets import QApplication, QFrame, QScrollArea, QVBoxLayout, QWidget

from app.core.chat import Message, ToolCallRecord
from app.core.engine import GenerationStats
from app.core.tools.browser import link_citations
from app.core.tools.loop import ToolRun
from app.core.tools.python_tool import PythonKernel
from app.ui import style
from app.ui.message_widget import AssistantMessageWidget, UserMessageWidget

CODE = """import numpy as np
import matplotlib.pyplot as plt

t = np.arange(0, 24)
temps = 14 + 6 * np.sin((t - 9) / 24 * 2 * np.pi)
plt.figure(figsize=(6, 2.6))
plt.plot(t, temps, marker="o", color="#4f5bd5")
plt.title("Paris, forecast for today")
plt.xlabel("hour"); plt.ylabel("°C"); plt.grid(alpha=0.3)
plt.show()
print(f"max {temps.max():.1f} °C at {t[temps.argmax()]}:00")"""


def main(out: Path) -> None:
    app = QApplication.instance() or QApplication(sys.argv)
    style.apply(app, dark=False)
    scratch = Path(tempfile.mkdtemp(prefix="harmonica-shot-"))
    kernel = PythonKernel(scratch)
    result = kernel.execute(CODE)
    kernel.close()

    weather = ToolRun(
        "functions.get_current_weather",
        '{"location": "Paris, France", "format": "celsius"}',
        tool="get_current_weather",
        status="done",
        duration_s=0.184,
        output="Paris, France: 17 °C, light rain until 14:00, wind 12 km/h SW",
        result="Paris, France: 17 °C, light rain until 14:00, wind 12 km/h SW",
    )
    plot = ToolRun(
        "python",
        CODE,
        kind="python",
        tool="python",
        status="done",
        duration_s=result.duration_s,
        output=result.output,
        result=result.model_text(),
        images=result.images,
        is_error=result.is_error,
    )

    root = QWidget(objectName="ChatContent")
    root.resize(900, 1180)
    lay = QVBoxLayout(root)
    lay.setContentsMargins(40, 20, 40, 20)
    lay.addWidget(
        UserMessageWidget(Message(role="user", content="Will it rain in Paris today? Plot the temperature by hour."))
    )
    stats = GenerationStats(
        generated_tokens=182, tokens_per_s=41.7, prompt_tokens=2210, cached_tokens=2048, ttft_s=0.21, total_s=4.6
    )
    calls = Message(
        role="assistant",
        thinking="The user wants the weather in Paris and a plot. Call the weather "
        "function first, then plot an hourly curve with python.",
        thinking_s=3.0,
        model="gpt-oss-20b",
        effort="medium",
        tool_calls=[
            ToolCallRecord(weather.recipient, weather.arguments),
            ToolCallRecord("python", CODE, "code", "analysis"),
        ],
        stop_reason="call",
        stats=stats,
    )
    answer = Message(
        role="assistant",
        model="gpt-oss-20b",
        effort="medium",
        stop_reason="return",
        stats=stats,
        content=link_citations(
            "Yes — **light rain until about 14:00**, then dry. It stays mild: around **17 °C** now, "
            f"peaking near **{result.output.split()[1] if result.output else '20'} °C** in the afternoon "
            "(see the plot above).\n\n- Take an umbrella this morning.\n- The wind is light, from the south-west.",
            {},
        ),
    )
    w = AssistantMessageWidget.from_message(calls)
    w.add_tool_run(weather)
    card = w.add_tool_run(plot)
    w.tool_cards[0].set_expanded(True)
    card.set_expanded(True)
    lay.addWidget(w)
    w2 = AssistantMessageWidget.from_message(answer)
    lay.addWidget(w2)
    lay.addStretch(1)

    scroll = QScrollArea(objectName="ChatScroll")
    scroll.setFrameShape(QFrame.Shape.NoFrame)
    scroll.setWidgetResizable(True)
    scroll.setWidget(root)
    scroll.resize(900, 1180)
    scroll.show()
    end = time.monotonic() + 1.0
    while time.monotonic() < end:
        app.processEvents()
        time.sleep(0.02)
    out.parent.mkdir(parents=True, exist_ok=True)
    scroll.grab().save(str(out))
    print(f"saved {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).with_name("screenshot-tools.png"))
