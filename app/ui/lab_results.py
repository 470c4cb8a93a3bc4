"""The effort lab's results: the experiment's charts, each effort's runs side by side for one problem, and the table."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QFrame,
    QGridLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QScrollArea,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from app.core import lab
from app.core.lab import EffortSummary, Experiment, RunDelta, RunResult
from app.ui import style
from app.ui.charts import Bar, BarChart
from app.ui.lab_cards import MARKS_ROLE, EffortColumn, MarksDelegate, RunCard, decimals_for, effort_color, fmt_tokens


class LabResultsView(QWidget):
    """Shows `experiment` and the run in progress. Signals: export_charts_requested() for its button."""

    export_charts_requested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent, objectName="LabResults")
        self.experiment: Experiment | None = None
        self.cards: dict[lab.RunKey, RunCard] = {}
        self.columns: dict[str, EffortColumn] = {}
        self.live_key: lab.RunKey | None = None
        self._live_text: tuple[list[str], list[str]] = ([], [])  # so a rebuilt grid can replay the live run
        self.follow_live = True
        lay = QVBoxLayout(self)
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
        self.chart_export.clicked.connect(self.export_charts_requested)
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
        self.problem_picker.setAccessibleName("Problem shown")
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
        self.table.setAccessibleName("Results by effort")
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

    def set_experiment(self, exp: Experiment) -> None:
        self.experiment = exp
        problems = exp.spec.problems
        self.problem_picker.clear()
        for i, p in enumerate(problems):
            self.problem_picker.addItem(f"{i + 1}. {' '.join(p.prompt.split())}", p.id)
        multi = len(problems) > 1
        self.problem_picker.setVisible(multi)
        self.expected_label.setVisible(multi or problems[0].answer is not None)
        self.tabs.setTabVisible(1, multi or exp.spec.checked)
        self.charts["accuracy"].setVisible(exp.spec.checked)
        self.show_problem(problems[0].id)
        self.refresh()

    def shown_problem(self) -> str | None:
        return self.problem_picker.currentData()

    def show_problem(self, problem_id: str) -> None:
        idx = self.problem_picker.findData(problem_id)
        if idx >= 0:
            self.problem_picker.setCurrentIndex(idx)
        self.rebuild_grid()

    def _on_problem_picked(self, _index: int) -> None:
        self.follow_live = False  # the user chose what to look at
        self.rebuild_grid()

    def rebuild_grid(self) -> None:
        exp = self.experiment
        style.clear_layout(self.grid)
        self.cards.clear()
        self.columns.clear()
        if exp is None:
            hint = QLabel(
                "Each effort gets a column here: every run's reasoning, answer and figures, side by side.",
                objectName="EmptyHint",
            )
            hint.setWordWrap(True)
            hint.setAlignment(Qt.AlignmentFlag.AlignCenter)
            self.grid.addWidget(hint, 0, 0)
            return
        pid = self.shown_problem() or exp.spec.problems[0].id
        problem = exp.spec.problem(pid)
        self.prompt_label.setText(problem.prompt)
        self.expected_label.setText(f"Expected: {problem.check.describe()}" if problem.check else "")
        summary = exp.summary()
        for col, effort in enumerate(exp.spec.efforts):
            head = EffortColumn(effort)
            head.set_summary(summary.get(effort))
            self.columns[effort] = head
            self.grid.addWidget(head, 0, col, Qt.AlignmentFlag.AlignTop)
            self.grid.setColumnStretch(col, 1)
            for rep in range(exp.spec.runs):
                key = (pid, effort, rep)
                card = RunCard(key, exp.spec.seed_for(rep), problem.check is not None)
                res = exp.result(key)
                if res is not None:
                    card.show_result(res)
                elif key == self.live_key:
                    card.start_live()
                    card.append(RunDelta(key, "".join(self._live_text[0]), "".join(self._live_text[1])))
                else:
                    card.show_waiting()
                self.cards[key] = card
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

    def refresh(self) -> None:
        """Rebuild the figures, charts and table from the experiment (the window throttles this while running)."""
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
        for effort, head in self.columns.items():
            head.set_summary(summary.get(effort))
        self.charts["accuracy"].set_bars(self.chart_bars("accuracy", summary))
        self.charts["reasoning"].set_bars(self.chart_bars("reasoning", summary))
        self.charts["time"].set_bars(self.chart_bars("time", summary))
        self._fill_table(exp, summary)

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
            fmt = fmt_tokens if kind == "reasoning" else (lambda v: f"{v:.{decimals_for(v)}f}")
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
        self.follow_live = False
        self.show_problem(exp.spec.problems[row].id)
        self.tabs.setCurrentIndex(0)

    # --- the run in progress ----------------------------------------------------------------------
    def run_started(self, key: lab.RunKey) -> None:
        """A run begins: follow it to its problem (unless the user chose one) and show it streaming."""
        exp = self.experiment
        self.live_key = key
        self._live_text = ([], [])
        if exp is not None and self.follow_live and len(exp.spec.problems) > 1 and key[0] != self.shown_problem():
            self.show_problem(key[0])
        card = self.cards.get(key)
        if card is not None:
            card.start_live()
            self._scroll_to(card)

    def run_delta(self, ev: RunDelta) -> None:
        self._live_text[0].append(ev.reasoning)
        self._live_text[1].append(ev.final)
        card = self.cards.get(ev.key)
        if card is not None:
            card.append(ev)

    def run_finished(self, result: RunResult) -> None:
        card = self.cards.get(result.key)
        if card is not None:
            card.show_result(result, live=result.key == self.live_key)
        self.live_key = None

    def runner_stopped(self) -> None:
        """The runner ended: a run cut off in the middle was not recorded, so its partial text goes."""
        exp, live = self.experiment, self.live_key
        self.live_key = None
        if exp is not None and live is not None and exp.result(live) is None:
            self.rebuild_grid()

    def export_charts(self, folder: str | Path) -> list[Path]:
        """Save each visible chart as a PNG (2× resolution) in `folder`; returns the files."""
        out: list[Path] = []
        base = Path(folder)
        title = self.experiment.spec.title if self.experiment else "chart"
        stem = "".join(c if c.isalnum() or c in "-_" else "-" for c in title)[:40].strip("-") or "chart"
        for name, chart in self.charts.items():
            if chart.isHidden() or not chart.bars():
                continue
            p = base / f"{stem}-{name}.png"
            if chart.save_png(p):
                out.append(p)
        return out
