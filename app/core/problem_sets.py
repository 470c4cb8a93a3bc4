"""Problem sets with checkable answers: checkers, the built-in set, and JSONL import with line-level errors."""

from __future__ import annotations

import json
import math
import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.core.errors import HarmonicaError
from app.core.fsutil import FileTooLargeError, read_bounded
from app.core.paths import resources_dir
from app.core.units import format_bytes

CHECK_TYPES = ("number", "regex", "choice", "exact", "contains")
BUILTIN_FILE = "reasoning-basics.jsonl"
BUILTIN_NAME = "Reasoning basics"
# Imports are for question lists, not corpora; a larger file is almost surely the wrong file.
MAX_IMPORT_BYTES = 50 * 1024 * 1024
MAX_PROMPT_CHARS = 100_000


# --- reading answers out of free text -------------------------------------------------------------
_NUMBER_RE = re.compile(r"(?<![\w.])[-−]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?![\w])|(?<![\w.])[-−]?\.\d+(?![\w])")
_BOLD_RE = re.compile(r"\*\*(.+?)\*\*|__(.+?)__", re.S)
_ANSWER_RE = re.compile(r"\banswer\b\s*(?:is|:|=)?\s*", re.I)
_NUMBER_WORDS = {
    w: i
    for i, w in enumerate(
        [
            "zero",
            "one",
            "two",
            "three",
            "four",
            "five",
            "six",
            "seven",
            "eight",
            "nine",
            "ten",
            "eleven",
            "twelve",
            "thirteen",
            "fourteen",
            "fifteen",
            "sixteen",
            "seventeen",
            "eighteen",
            "nineteen",
            "twenty",
        ]
    )
}
_NUMBER_WORD_RE = re.compile(r"\b(" + "|".join(_NUMBER_WORDS) + r")\b", re.I)


def _to_float(text: str) -> float | None:
    t = text.replace(",", "").replace("−", "-").strip()
    try:
        v = float(t)
    except ValueError:
        return None
    return v if math.isfinite(v) else None


def _numbers(text: str) -> list[float]:
    out = [v for v in (_to_float(m.group(0)) for m in _NUMBER_RE.finditer(text)) if v is not None]
    # LaTeX and TeX-ish answers ("\boxed{42}") are covered: the braces are not word characters.
    return out


def extract_number(final: str) -> float | None:
    """The number a final answer gives, read the way a person would.

    In order: the last bold span that holds a number (`**42**`); the first number after the
    last "answer is"/"Answer:"; the only number in the text; the last number in the text; and
    failing all digits, a number word from zero to twenty ("three").
    """
    bold = [m.group(1) or m.group(2) for m in _BOLD_RE.finditer(final)]
    for span in reversed(bold):
        found = _numbers(span)
        if found:
            return found[-1]
    answer_at = [m.end() for m in _ANSWER_RE.finditer(final)]
    if answer_at:
        found = _numbers(final[answer_at[-1] :])
        if found:
            return found[0]
    found = _numbers(final)
    if found:
        return found[-1]
    words = _NUMBER_WORD_RE.findall(final)
    if words:
        return float(_NUMBER_WORDS[words[-1].lower()])
    return None


def normalise_text(text: str) -> str:
    """Lower-case text with markdown emphasis, quotes, surrounding punctuation and extra spaces removed."""
    t = unicodedata.normalize("NFKC", text)
    t = re.sub(r"[*_`]+", "", t)
    t = re.sub(r"\s+", " ", t).strip().lower()
    return t.strip(" .!;:,\"'“”‘’()[]")


def _word_pattern(phrase: str) -> re.Pattern[str]:
    body = r"\s+".join(re.escape(w) for w in normalise_text(phrase).split())
    return re.compile(r"(?<!\w)" + body + r"(?!\w)", re.I)


@dataclass(frozen=True)
class Grade:
    """The checker's verdict on one final answer; `extracted` is what it read as the answer."""

    correct: bool
    extracted: str | None


@dataclass(frozen=True)
class Check:
    """How a final answer is marked.

    number: the number read from the answer (see extract_number) equals `answer` (1e-6 relative).
    regex: `pattern` (default: the answer) is found in the answer, case-insensitive.
    choice: the option the answer picks is `answer`: the only option mentioned, else the only
        one in bold, else the first one mentioned. Options are whole words or phrases.
    exact: the whole answer, normalised (case, emphasis, outer punctuation), equals `answer`.
    contains: `answer` appears in the answer as a whole word or phrase, case-insensitive.
    """

    type: str
    answer: str | None = None
    pattern: str | None = None
    choices: tuple[str, ...] = ()

    def grade(self, final: str) -> Grade:
        text = final or ""
        if self.type == "number":
            got = extract_number(text)
            want = _to_float(self.answer or "")
            if got is None or want is None:
                return Grade(False, None if got is None else _fmt_number(got))
            return Grade(math.isclose(got, want, rel_tol=1e-6, abs_tol=1e-9), _fmt_number(got))
        if self.type == "regex":
            m = re.search(self.pattern or self.answer or "", text, re.I | re.S)
            return Grade(m is not None, m.group(0) if m else None)
        if self.type == "choice":
            picked = self._pick(text)
            return Grade(picked is not None and normalise_text(picked) == normalise_text(self.answer or ""), picked)
        if self.type == "exact":
            said = normalise_text(text)
            return Grade(said == normalise_text(self.answer or ""), said[:200])
        if self.type == "contains":
            m = _word_pattern(self.answer or "").search(text)
            return Grade(m is not None, m.group(0) if m else None)
        return Grade(False, None)

    def _pick(self, text: str) -> str | None:
        pats = [(c, _word_pattern(c)) for c in self.choices]
        mentioned = [(m.start(), c) for c, p in pats for m in [p.search(text)] if m]
        if not mentioned:
            return None
        if len({c for _, c in mentioned}) == 1:
            return mentioned[0][1]
        bold = " ".join(m.group(1) or m.group(2) for m in _BOLD_RE.finditer(text))
        in_bold = {c for c, p in pats if p.search(bold)}
        if len(in_bold) == 1:
            return next(iter(in_bold))
        return min(mentioned)[1]

    def describe(self) -> str:
        """One line for people: what a right answer looks like."""
        if self.type == "number":
            return f"the number {self.answer}"
        if self.type == "regex":
            return f"matches /{self.pattern or self.answer}/"
        if self.type == "choice":
            return f"{self.answer} (of {', '.join(self.choices)})"
        if self.type == "exact":
            return f"exactly “{self.answer}”"
        return f"mentions “{self.answer}”"

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"type": self.type}
        if self.pattern is not None:
            d["pattern"] = self.pattern
        if self.choices:
            d["choices"] = list(self.choices)
        return d


def _fmt_number(v: float) -> str:
    return str(int(v)) if v == int(v) and abs(v) < 1e15 else repr(v)


@dataclass(frozen=True)
class Problem:
    """One question; `check` is None for an open question (no right answer, nothing marked)."""

    id: str
    prompt: str
    answer: str | None = None
    check: Check | None = None
    category: str = ""

    def grade(self, final: str) -> Grade | None:
        return None if self.check is None else self.check.grade(final)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"id": self.id, "prompt": self.prompt}
        if self.answer is not None:
            d["answer"] = self.answer
        if self.check is not None:
            d["check"] = self.check.to_dict()
        if self.category:
            d["category"] = self.category
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Problem:
        """From to_dict() output (trusted input: our own files). Raises ProblemError when invalid."""
        return _problem_from_obj(data, str(data.get("id") or "1"))


@dataclass
class ProblemSet:
    """A named list of problems; `source` is "builtin" or the file it was imported from."""

    name: str
    problems: list[Problem]
    source: str = ""

    def __len__(self) -> int:
        return len(self.problems)


@dataclass(frozen=True)
class ImportIssue:
    """A line of a JSONL file that was skipped (or accepted with a warning), and why."""

    line: int
    message: str
    skipped: bool = True

    def __str__(self) -> str:
        return f"Line {self.line}: {self.message}"


@dataclass
class ImportResult:
    """What an import produced: the problems that were read and the lines that were not."""

    problem_set: ProblemSet
    issues: list[ImportIssue] = field(default_factory=list)

    @property
    def skipped(self) -> list[ImportIssue]:
        return [i for i in self.issues if i.skipped]

    def summary(self) -> str:
        n = len(self.problem_set)
        text = f"Imported {n} problem{'s' if n != 1 else ''} from {self.problem_set.name}."
        bad = len(self.skipped)
        if bad:
            text += f" {bad} line{'s were' if bad != 1 else ' was'} skipped."
        return text


class ProblemError(HarmonicaError, ValueError):
    """A problem definition is invalid; the message says what to fix."""


def _answer_text(value: Any) -> str:
    if isinstance(value, bool):
        raise ProblemError('"answer" must be a string or a number, not true/false')
    if isinstance(value, (int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            raise ProblemError('"answer" must be a finite number')
        return _fmt_number(float(value)) if isinstance(value, float) else str(value)
    if isinstance(value, str):
        if not value.strip():
            raise ProblemError('"answer" is empty')
        return value.strip()
    raise ProblemError(f'"answer" must be a string or a number, not {_json_type(value)}')


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, str):
        return "a string"
    return type(value).__name__


def _make_check(raw: Any, answer: str | None) -> Check | None:
    if raw is None:
        if answer is None:
            return None
        return Check("number" if _to_float(answer) is not None else "contains", answer)
    spec: dict[str, Any]
    if isinstance(raw, str):
        spec = {"type": raw}
    elif isinstance(raw, Mapping):
        spec = dict(raw)
    else:
        raise ProblemError(f'"check" must be one of {", ".join(CHECK_TYPES)} or an object, not {_json_type(raw)}')
    kind = spec.get("type")
    if not isinstance(kind, str) or kind.strip().lower() not in CHECK_TYPES:
        shown = kind if isinstance(kind, str) else _json_type(kind)
        raise ProblemError(f'unknown check type "{shown}"; use one of {", ".join(CHECK_TYPES)}')
    kind = kind.strip().lower()
    pattern = spec.get("pattern")
    if pattern is not None and not isinstance(pattern, str):
        raise ProblemError(f'"pattern" must be a string, not {_json_type(pattern)}')
    if kind == "regex":
        pattern = pattern if pattern is not None else answer
        if not pattern:
            raise ProblemError('a regex check needs a "pattern" (or an "answer" to use as the pattern)')
        try:
            re.compile(pattern)
        except re.error as e:
            raise ProblemError(f"the regular expression {pattern!r} is invalid: {e}") from None
        return Check("regex", answer, pattern)
    if answer is None:
        raise ProblemError(f'a {kind} check needs an "answer"')
    if kind == "number":
        if _to_float(answer) is None:
            raise ProblemError(f'a number check needs a numeric "answer", got "{answer}"')
        return Check("number", answer)
    if kind == "choice":
        choices = spec.get("choices")
        if (
            not isinstance(choices, list)
            or len(choices) < 2
            or not all(isinstance(c, str) and c.strip() for c in choices)
        ):
            raise ProblemError('a choice check needs "choices": a list of at least two non-empty strings')
        clean = tuple(c.strip() for c in choices)
        if normalise_text(answer) not in {normalise_text(c) for c in clean}:
            raise ProblemError(f'the answer "{answer}" is not one of the choices ({", ".join(clean)})')
        return Check("choice", answer, None, clean)
    return Check(kind, answer)


def _problem_from_obj(obj: Any, default_id: str) -> Problem:
    if not isinstance(obj, Mapping):
        raise ProblemError(f"each line must be a JSON object, not {_json_type(obj)}")
    if "prompt" not in obj:
        raise ProblemError('missing "prompt"')
    prompt = obj["prompt"]
    if not isinstance(prompt, str):
        raise ProblemError(f'"prompt" must be a string, not {_json_type(prompt)}')
    if not prompt.strip():
        raise ProblemError('"prompt" is empty')
    if len(prompt) > MAX_PROMPT_CHARS:
        raise ProblemError(f'"prompt" is {len(prompt):,} characters; the limit is {MAX_PROMPT_CHARS:,}')
    answer = None if obj.get("answer") is None else _answer_text(obj["answer"])
    check = _make_check(obj.get("check"), answer)
    pid = obj.get("id", default_id)
    if not isinstance(pid, (str, int)) or isinstance(pid, bool) or not str(pid).strip():
        raise ProblemError('"id" must be a non-empty string or a number')
    category = obj.get("category", "")
    if not isinstance(category, str):
        raise ProblemError(f'"category" must be a string, not {_json_type(category)}')
    return Problem(str(pid).strip(), prompt.strip(), answer, check, category.strip())


def parse_problem_lines(lines: Iterable[str | bytes], name: str, source: str = "") -> ImportResult:
    """Read JSONL problems; bad lines become ImportIssues (line number and problem), the rest is kept.

    Each line: {"prompt": str, "answer"?: str|number, "check"?: type|{type, pattern?, choices?},
    "id"?: str|number, "category"?: str}. Blank lines and lines starting with # or // are skipped.
    With an answer and no check, a numeric answer is checked as a number, any other as "contains".
    """
    problems: list[Problem] = []
    issues: list[ImportIssue] = []
    seen: dict[str, int] = {}
    for n, raw in enumerate(lines, start=1):
        if isinstance(raw, bytes):
            try:
                line = raw.decode("utf-8-sig" if n == 1 else "utf-8")
            except UnicodeDecodeError as e:
                issues.append(ImportIssue(n, f"not UTF-8 text (byte {e.start + 1} of the line)"))
                continue
        else:
            line = raw.lstrip("\ufeff") if n == 1 else raw
        text = line.strip()
        if not text or text.startswith(("#", "//")):
            continue
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            issues.append(ImportIssue(n, f"not valid JSON: {e.msg} at column {e.colno}"))
            continue
        except RecursionError:
            issues.append(ImportIssue(n, "not valid JSON: nested too deeply"))
            continue
        try:
            problem = _problem_from_obj(obj, str(n))
        except ProblemError as e:
            issues.append(ImportIssue(n, str(e)))
            continue
        if problem.id in seen:
            new_id = f"{problem.id}#{n}"
            issues.append(
                ImportIssue(
                    n,
                    f'the id "{problem.id}" was already used on line {seen[problem.id]}; '
                    f'this one is kept as "{new_id}"',
                    skipped=False,
                )
            )
            problem = Problem(new_id, problem.prompt, problem.answer, problem.check, problem.category)
        seen[problem.id] = n
        problems.append(problem)
    return ImportResult(ProblemSet(name, problems, source), issues)


def load_problem_set(path: str | Path, name: str | None = None) -> ImportResult:
    """Import a user's JSONL file (possibly with no usable problems: see the issues).

    Raises ProblemError only when the file itself cannot be read or is far too large.
    """
    p = Path(path)
    try:
        data = read_bounded(p, MAX_IMPORT_BYTES).data
    except FileTooLargeError as e:
        raise ProblemError(
            f"{p.name} is {format_bytes(e.size)}; a problem set must be under {format_bytes(MAX_IMPORT_BYTES)}."
        ) from None
    except OSError as e:
        raise ProblemError(f"{p.name} cannot be read: {e.strerror or e}.") from None
    return parse_problem_lines(data.splitlines(), name or p.stem, str(p))


def builtin_problem_set() -> ProblemSet:
    """Harmonica's own small set: arithmetic word problems, letter counting, short logic puzzles."""
    path = resources_dir() / "problem_sets" / BUILTIN_FILE
    result = parse_problem_lines(path.read_bytes().splitlines(), BUILTIN_NAME, "builtin")
    if result.skipped:  # our own file: a bad line is a bug, not user input
        raise ProblemError("; ".join(str(i) for i in result.skipped))
    return result.problem_set
