"""The effort lab's setup column: what to ask (a prompt or a problem set), efforts, runs, sampling, and the buttons."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QButtonGroup,
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QFrame,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from app.core.chat import EFFORTS
from app.core.engine import Sampling
from app.core.lab import Experiment, LabError
from app.core.problem_sets import ImportResult, ProblemError, ProblemSet, builtin_problem_set, load_problem_set
from app.core.speed import experiment_seconds
from app.ui.lab_cards import format_duration
from app.ui.notice import NoticeBar


class LabSetupPanel(QFrame):
    """The form and buttons; the window decides what runs. Signals: changed() when the form changed
    (the window re-checks what can start), and one per button: start/cancel/resume/open/save
    requested, export_requested("csv" | "json"). Problem sets are kept and imported here."""

    changed = Signal()
    start_requested = Signal()
    cancel_requested = Signal()
    resume_requested = Signal()
    open_requested = Signal()
    save_requested = Signal()
    export_requested = Signal(str)

    _STACK_HEIGHTS = (104, 80)  # the prompt box; the set picker and its one-line description

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent, objectName="LabSetup")
        self._sets: list[ProblemSet] = []
        self.last_import: ImportResult | None = None
        self.setFixedWidth(344)
        lay = QVBoxLayout(self)
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
        self.prompt_edit.setAccessibleName("Prompt")
        self.prompt_edit.setPlaceholderText("A question to ask at every effort…")
        self.prompt_edit.setTabChangesFocus(True)
        self.prompt_edit.setMinimumHeight(96)
        self.prompt_edit.textChanged.connect(self.changed)
        pl.addWidget(self.prompt_edit)
        self.source_stack.addWidget(page_prompt)

        page_set = QWidget()
        sl = QVBoxLayout(page_set)
        sl.setContentsMargins(0, 0, 0, 0)
        sl.setSpacing(6)
        row = QHBoxLayout()
        self.set_picker = QComboBox(objectName="LabCombo")
        self.set_picker.setAccessibleName("Problem set")
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
        self.instructions_edit.setAccessibleName("Instructions")
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
            box.toggled.connect(self.changed)
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
        self.runs_spin.valueChanged.connect(self.changed)
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
        self.plan_label.setWordWrap(True)
        self.tokens_per_s: float | None = None  # this model's speed here (CompareWindow.set_expected_speed)
        lay.addWidget(self.plan_label)

        buttons = QHBoxLayout()
        buttons.setSpacing(8)
        self.start_button = QPushButton("Start", objectName="PrimaryButton")
        self.start_button.clicked.connect(self.start_requested)
        self.cancel_button = QPushButton("Cancel", objectName="SecondaryButton")
        self.cancel_button.clicked.connect(self.cancel_requested)
        self.resume_button = QPushButton("Resume", objectName="SecondaryButton")
        self.resume_button.clicked.connect(self.resume_requested)
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
        self.notice = NoticeBar(compact=True)
        lay.addWidget(self.notice)
        lay.addStretch(1)

        files = QGridLayout()
        files.setHorizontalSpacing(8)
        files.setVerticalSpacing(8)
        self.open_button = QPushButton("Open…", objectName="SecondaryButton")
        self.open_button.clicked.connect(self.open_requested)
        self.save_button = QPushButton("Save as…", objectName="SecondaryButton")
        self.save_button.clicked.connect(self.save_requested)
        self.csv_button = QPushButton("Export CSV…", objectName="SecondaryButton")
        self.csv_button.clicked.connect(lambda: self.export_requested.emit("csv"))
        self.json_button = QPushButton("Export JSON…", objectName="SecondaryButton")
        self.json_button.clicked.connect(lambda: self.export_requested.emit("json"))
        for i, b in enumerate((self.open_button, self.save_button, self.csv_button, self.json_button)):
            files.addWidget(b, i // 2, i % 2)
        lay.addLayout(files)
        self.model_label = QLabel("", objectName="MessageMeta")
        self.model_label.setWordWrap(True)
        lay.addWidget(self.model_label)
        self.load_builtin()

    # --- problem sets ---------------------------------------------------------------------------
    def load_builtin(self) -> None:
        try:
            self.add_set(builtin_problem_set())
        except (OSError, ProblemError) as e:
            self.notice.show_message(f"The built-in problem set could not be read: {e}", "error")

    def add_set(self, ps: ProblemSet) -> int:
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
        self.changed.emit()

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
        self.add_set(result.problem_set)
        self.mode_set.setChecked(True)
        self.notice.show_message(result.summary(), "warning" if result.skipped else "info", details=details)
        return result

    # --- experiment from the form ---------------------------------------------------------------
    def efforts(self) -> list[str]:
        return [e for e in EFFORTS if self.effort_boxes[e].isChecked()]

    def sampling(self) -> Sampling:
        n = self.max_tokens_spin.value()
        return Sampling(temperature=self.temp_spin.value(), max_tokens=n or None)

    def build_experiment(self) -> Experiment:
        """An experiment from the form (raises LabError with a message for the user)."""
        common: dict[str, Any] = dict(
            efforts=self.efforts(),
            runs=self.runs_spin.value(),
            instructions=self.instructions_edit.toPlainText(),
            seed=self.seed_spin.value(),
            sampling=self.sampling(),
        )
        if self.mode_set.isChecked():
            ps = self.current_set()
            if ps is None or not ps.problems:
                raise LabError("Choose a problem set with at least one problem.")
            return Experiment.create(ps.problems, problem_set=ps.name, **common)
        return Experiment.create(self.prompt_edit.toPlainText(), **common)

    def update_controls(self, running: bool, blocked: str, exp: Experiment | None) -> None:
        """Enable what can be done now: `blocked` says why nothing can start (empty: it can)."""
        form_ok = bool(self.efforts()) and (
            (self.mode_set.isChecked() and self.current_set() is not None)
            or (not self.mode_set.isChecked() and bool(self.prompt_edit.toPlainText().strip()))
        )
        self.start_button.setEnabled(not blocked and form_ok)
        self.start_button.setToolTip(
            blocked or ("" if form_ok else "Enter a prompt (or choose a problem set) and at least one effort")
        )
        self.cancel_button.setEnabled(running)
        can_resume = exp is not None and not running and not exp.complete and not blocked
        self.resume_button.setEnabled(can_resume)
        self.resume_button.setToolTip(
            f"Run the {len(exp.pending())} runs that are not finished yet" if can_resume and exp else blocked
        )
        has_results = exp is not None and bool(exp.results())
        self.save_button.setEnabled(exp is not None and not running)
        self.csv_button.setEnabled(has_results)
        self.json_button.setEnabled(exp is not None)
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
        total = n_q * len(self.efforts()) * self.runs_spin.value()
        estimate = ""
        if self.tokens_per_s and total:
            seconds = experiment_seconds(self.efforts(), n_q, self.runs_spin.value(), self.tokens_per_s)
            estimate = f" · about {format_duration(seconds)} at {self.tokens_per_s:.0f} tokens a second"
        self.plan_label.setText(
            f"{total} run{'s' if total != 1 else ''}: {n_q} question{'s' if n_q != 1 else ''} × "
            f"{len(self.efforts())} effort{'s' if len(self.efforts()) != 1 else ''} × {self.runs_spin.value()}"
            + estimate
        )
        self.plan_label.setToolTip(
            "Estimated from the model's speed on this computer and typical answer lengths at each effort"
            if estimate
            else ""
        )

    def _on_mode(self, button_id: int, checked: bool) -> None:
        if checked:
            self.source_stack.setCurrentIndex(button_id)
            self.source_stack.setFixedHeight(self._STACK_HEIGHTS[button_id])
            self.changed.emit()

    def fill_form(self, exp: Experiment) -> None:
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
                idx = self.add_set(ProblemSet(s.problem_set or "Opened experiment", list(s.problems), "experiment"))
            self.set_picker.setCurrentIndex(idx)
            self.mode_set.setChecked(True)
        self.instructions_edit.setPlainText(s.instructions)
        for e, box in self.effort_boxes.items():
            box.setChecked(e in s.efforts)
        self.runs_spin.setValue(min(self.runs_spin.maximum(), s.runs))
        self.seed_spin.setValue(min(self.seed_spin.maximum(), s.seed))
        self.temp_spin.setValue(s.sampling.temperature)
        self.max_tokens_spin.setValue(s.sampling.max_tokens or 0)

    # --- files --------------------------------------------------------------------------------------
    def _ask_import(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "Import problem set", "", "Problem sets (*.jsonl *.json *.txt);;All files (*)"
        )
        if path:
            self.import_problem_set(path)
