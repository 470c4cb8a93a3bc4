"""Problem sets: the built-in set, the answer checkers, and JSONL import with line-level errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.core import problem_sets
from app.core.problem_sets import (
    CHECK_TYPES,
    Check,
    Problem,
    ProblemError,
    builtin_problem_set,
    extract_number,
    load_problem_set,
    parse_problem_lines,
)


def test_builtin_set_is_small_checked_and_its_answers_pass_their_own_checks() -> None:
    ps = builtin_problem_set()
    assert 20 <= len(ps) <= 30 and ps.source == "builtin"
    assert {p.category for p in ps.problems} == {"arithmetic", "letters", "logic"}
    assert len({p.id for p in ps.problems}) == len(ps)
    for p in ps.problems:
        assert p.check is not None and p.check.type in CHECK_TYPES and p.answer
        assert p.grade(p.answer).correct, p.id
        assert p.grade(f"The answer is **{p.answer}**.").correct, p.id
        assert not p.grade("I do not know.").correct, p.id


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("25", 25),
        ("**25**", 25),
        ("She has 25 muffins left.", 25),
        ("12 × 9 = 108, 108 − 83 = **25**", 25),
        ("Answer: 215 minutes (3 h 35 min)", 215),
        ("The answer is 18.75 dollars.", 18.75),
        ("It takes 1,250 steps", 1250),
        ("Between 3 and 4, so 4", 4),
        ("-7 degrees", -7),
        ("There are three.", 3),
        ("$\\boxed{42}$", 42),
        ("nothing here", None),
        ("version2 of x", None),
    ],
)
def test_extract_number_reads_the_answer_a_person_would(text: str, want: float | None) -> None:
    assert extract_number(text) == want


def test_checkers() -> None:
    number = Check("number", "18.75")
    assert number.grade("Ben pays **$18.75**.").correct and not number.grade("18.7").correct
    assert number.grade("Ben pays **$18.75**.").extracted == "18.75"
    choice = Check("choice", "Alice", choices=("Alice", "Bob", "Carol"))
    assert choice.grade("Alice").correct and choice.grade("alice.").correct
    assert choice.grade("Carol was second, Bob third, so **Alice** won.").correct  # only one in bold
    assert choice.grade("Alice won; Carol was second and Bob third.").correct  # first mentioned
    assert not choice.grade("Bob").correct and not choice.grade("Nobody").correct
    assert choice.grade("Nobody").extracted is None
    regex = Check("regex", "Friday", r"\bfriday\b")
    assert regex.grade("It will be **Friday**.").correct and not regex.grade("Fridays").correct
    exact = Check("exact", "New York")
    assert exact.grade("  **new york.** ").correct and not exact.grade("New York City").correct
    contains = Check("contains", "New York")
    assert contains.grade("It is New  York City.").correct and not contains.grade("Newark, York").correct


def test_import_reports_each_malformed_line_and_keeps_the_rest(tmp_path: Path) -> None:
    lines = [
        '{"prompt": "What is 2+2?", "answer": 4}',  # 1 ok (number)
        "",  # 2 blank: skipped silently
        "# a comment",  # 3 comment: skipped silently
        '{"prompt": "Capital of France?", "answer": "Paris"',  # 4 broken JSON
        '["prompt", "x"]',  # 5 not an object
        '{"question": "no prompt key"}',  # 6 missing prompt
        '{"prompt": "   "}',  # 7 empty prompt
        '{"prompt": 12}',  # 8 prompt not a string
        '{"prompt": "x", "answer": "4", "check": "fuzzy"}',  # 9 unknown check
        '{"prompt": "x", "check": {"type": "regex", "pattern": "(a"}}',  # 10 bad regex
        '{"prompt": "x", "answer": "red", "check": "choice"}',  # 11 choice without choices
        '{"prompt": "x", "answer": "pink", "check": {"type": "choice", "choices": ["red", "blue"]}}',  # 12 not a choice
        '{"prompt": "x", "answer": "lots", "check": "number"}',  # 13 non-numeric answer
        '{"prompt": "x", "answer": true}',  # 14 bad answer type
        '{"prompt": "Open question, no answer"}',  # 15 ok (not checked)
        '{"id": "q1", "prompt": "Colour of the sky?", "answer": "blue"}',  # 16 ok (contains)
        '{"id": "q1", "prompt": "Same id again", "answer": 3}',  # 17 ok, id renamed with a warning
        '{"prompt": "Pick", "answer": "B", "check": {"type": "choice", "choices": ["A", "B"]}}',  # 18 ok
    ]
    data = ("\n".join(lines) + "\n").encode() + b'{"prompt": "caf\xe9"}\n'  # 19: Latin-1, not UTF-8
    path = tmp_path / "mine.jsonl"
    path.write_bytes(data)
    result = load_problem_set(path)
    got = {i.line: i.message for i in result.issues}
    assert sorted(got) == [4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 17, 19]
    assert "not valid JSON" in got[4] and "column" in got[4]
    assert "JSON object, not a list" in got[5]
    assert got[6] == 'missing "prompt"' and got[7] == '"prompt" is empty' and "must be a string" in got[8]
    assert 'unknown check type "fuzzy"' in got[9] and "regular expression" in got[10]
    assert '"choices"' in got[11] and "not one of the choices (red, blue)" in got[12]
    assert "numeric" in got[13] and "true/false" in got[14] and "UTF-8" in got[19]
    assert "already used on line 16" in got[17] and not next(i for i in result.issues if i.line == 17).skipped
    assert str(result.issues[0]).startswith("Line 4: ")
    ps = result.problem_set
    assert [p.prompt for p in ps.problems] == [
        "What is 2+2?",
        "Open question, no answer",
        "Colour of the sky?",
        "Same id again",
        "Pick",
    ]
    assert [p.check.type if p.check else None for p in ps.problems] == ["number", None, "contains", "number", "choice"]
    assert [p.id for p in ps.problems] == ["1", "15", "q1", "q1#17", "18"]
    assert ps.name == "mine" and ps.source == str(path)
    assert result.summary() == "Imported 5 problems from mine. 12 lines were skipped."


def test_import_with_a_bom_and_crlf_line_endings() -> None:
    raw = b'\xef\xbb\xbf{"prompt": "a", "answer": 1}\r\n{"prompt": "b"}\r\n'
    result = parse_problem_lines(raw.splitlines(), "x")
    assert result.issues == [] and [p.prompt for p in result.problem_set.problems] == ["a", "b"]


def test_import_refuses_unreadable_or_huge_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ProblemError, match="cannot be read"):
        load_problem_set(tmp_path / "missing.jsonl")
    big = tmp_path / "big.jsonl"
    big.write_text('{"prompt": "x"}\n' * 10, encoding="utf-8")
    monkeypatch.setattr(problem_sets, "MAX_IMPORT_BYTES", 20)
    with pytest.raises(ProblemError, match="must be under"):
        load_problem_set(big)
    monkeypatch.undo()
    empty = tmp_path / "empty.jsonl"
    empty.write_text("not json\n", encoding="utf-8")
    r = load_problem_set(empty)
    assert len(r.problem_set) == 0 and r.issues[0].line == 1


def test_problem_round_trips_through_dict() -> None:
    for p in builtin_problem_set().problems + [Problem("x", "open")]:
        again = Problem.from_dict(json.loads(json.dumps(p.to_dict())))
        assert again == p
