"""A model file's chat template that loops, recurses or explodes is stopped with a clear message.

Each template below is what a hostile GGUF could carry in `tokenizer.chat_template`. They go in the
way the app uses them: render_prompt(chat_template=...), as chat.build_prompt does for every turn.
Sizes stay small enough (hundreds of MB at most) that the code before the limits finished them
too, only slowly or with huge output, instead of taking the test machine down.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from app.core import harmony
from app.core.chat import ChatError, Conversation, build_prompt

MESSAGES = [{"role": "user", "content": "Hello"}]
OFFICIAL = (Path(__file__).parents[1] / "fixtures" / "chat_template_gpt_oss.jinja").read_text("utf-8")

LOOPS = {
    "nested-empty-loops": "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}",
    "nested-loops-output": "{% for a in range(100000) %}{% for b in range(100000) %}{{ '' }}{% endfor %}{% endfor %}",
    "loops-over-messages": (
        "{% for a in range(100000) %}{% for b in range(100000) %}{% for m in messages %}{% endfor %}"
        "{% endfor %}{% endfor %}"
    ),
    "loop-with-loop-variable": "{% for a in range(100000) %}{% for b in range(100000) %}{{ loop.index0 and '' }}"
    "{% endfor %}{% endfor %}",
    "macro-recursion": "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
    "mutual-recursion": "{% macro a(n) %}{{ b(n) }}{% endmacro %}{% macro b(n) %}{{ a(n) }}{% endmacro %}{{ a(0) }}",
    "recursive-loop": "{% for m in messages recursive %}{{ loop([m]) }}{% endfor %}",
    "filter-map-loop": "{% for a in range(100000) %}{{ range(100000)|map('string')|join('') and '' }}{% endfor %}",
}

EXPLOSIONS = {
    "string-times": "{{ 'x' * 100000000 }}",
    "string-times-chain": "{{ 'x' * 10000 * 10000 }}",
    "list-times": "{{ (range(100000)|list) * 200 }}",
    "huge-power": "{{ 10 ** 100000000 }}",  # Jinja's ** is left-associative: no 10 ** 10 ** 8
    "center-filter": "{{ 'x'|center(100000000) }}",
    "ljust-method": "{{ 'x'.ljust(100000000) }}",
    "zfill-method": "{{ '1'.zfill(100000000) }}",
    "expandtabs": "{{ ('\\t' * 1000).expandtabs(1000000) }}",
    "percent-width": "{{ '%0100000000d' % 1 }}",
    "percent-star-width": "{{ '%*d' % (100000000, 1) }}",
    "format-method-width": "{{ '{:>100000000}'.format(1) }}",
    "format-filter-width": "{{ '%100000000s'|format('x') }}",
    "replace-growth": "{{ ('x' * 100000)|replace('x', 'y' * 1000) }}",
    "replace-method-growth": "{{ ('x' * 100000).replace('x', 'y' * 1000) }}",
    "indent-width": "{{ ('a\\n' * 100000)|indent(1000) }}",
    "namespace-doubling": "{% set ns = namespace(s='x') %}{% for i in range(27) %}{% set ns.s = ns.s ~ ns.s %}"
    "{% endfor %}{{ ns.s|length }}",
    "set-doubling": "{% set s = 'x' %}" + "{% set s = s ~ s %}" * 27 + "{{ s|length }}",
    "block-set-doubling": "{% set s = 'x' %}" + "{% set s %}{{ s }}{{ s }}{% endset %}" * 27 + "{{ s|length }}",
    "plus-doubling": "{% set s = 'x' %}" + "{% set s = s + s %}" * 27 + "{{ s|length }}",
    "output-flood": "{% for i in range(100000) %}{{ 'x' * 1000 }}{% endfor %}",
    "lipsum": "{{ lipsum(100000) }}",
    "slice-filter": "{{ range(10)|slice(1000000)|list|length }}",
    "join-growth": "{{ ((range(20000)|map('string')|list) * 5)|join('y' * 200) }}",
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("template", list(LOOPS.values()), ids=list(LOOPS))
def test_templates_that_loop_forever_are_stopped(template: str) -> None:
    started = time.monotonic()
    with pytest.raises(harmony.HarmonyError) as info:
        harmony.render_prompt(MESSAGES, chat_template=template)
    message = str(info.value)
    assert "chat template" in message and "Harmonica stopped it" in message
    assert "Traceback" not in message
    assert time.monotonic() - started < 30  # the limits are 5 s and 5 M steps; a busy machine is slower


@pytest.mark.timeout(60)
@pytest.mark.parametrize("template", list(EXPLOSIONS.values()), ids=list(EXPLOSIONS))
def test_templates_that_explode_in_size_are_stopped(template: str) -> None:
    import tracemalloc

    harmony.render_prompt(MESSAGES, chat_template="{{ 1 }}")  # imports and caches outside the measurement
    tracemalloc.start()
    try:
        with pytest.raises(harmony.HarmonyError) as info:
            harmony.render_prompt(MESSAGES, chat_template=template)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    message = str(info.value)
    assert peak < 80e6, f"stopped only after {peak / 1e6:.0f} MB"  # before the huge text was built
    assert "Harmonica stopped it" in message, message
    assert "characters" in message or "steps" in message or " s (" in message


def test_a_deeply_nested_template_is_refused_when_compiled() -> None:
    template = "{% if true %}" * 3000 + "x" + "{% endif %}" * 3000
    with pytest.raises(harmony.HarmonyError, match=r"could not be compiled|failed"):
        harmony.render_prompt(MESSAGES, chat_template=template)


def test_the_chat_turn_reports_the_stopped_template_as_a_sentence() -> None:
    class Info:
        chat_template = LOOPS["nested-empty-loops"]

    conversation = Conversation()
    conversation.add_user("Hi")
    with pytest.raises(ChatError, match=r"Could not build the prompt.*Harmonica stopped it"):
        build_prompt(conversation, Info())


def test_the_official_template_still_renders_a_long_chat_within_the_limits() -> None:
    messages: list[dict[str, str]] = []
    for i in range(300):
        messages += [{"role": "user", "content": f"question {i} " * 40}, {"role": "assistant", "content": "a " * 400}]
    messages.append({"role": "user", "content": "last"})
    text = harmony.render_prompt(messages, chat_template=OFFICIAL, add_generation_prompt=True)
    assert text.endswith("<|start|>assistant") and "question 299" in text


def test_limits_do_not_leak_into_the_next_render_or_other_code() -> None:
    import sys

    with pytest.raises(harmony.HarmonyError):
        harmony.render_prompt(MESSAGES, chat_template=EXPLOSIONS["string-times"])
    assert sys.gettrace() is None or "coverage" in type(sys.gettrace()).__module__
    assert "x" * 100_000_000  # outside a render, Python itself is not limited
    assert harmony.render_prompt(MESSAGES, chat_template="{{ messages[0].content }}") == "Hello"
