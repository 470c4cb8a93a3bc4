"""Tests for app/core/harmony/: prompt rendering (template and built-in) and the streaming parser."""

from __future__ import annotations

import copy
import datetime
import random
from pathlib import Path
from typing import Any

import pytest

from app.core.harmony import (
    CALL,
    CHANNEL,
    CONSTRAIN,
    END,
    MESSAGE,
    RETURN,
    SPECIAL_TOKEN_IDS,
    START,
    Completion,
    Done,
    FinalDelta,
    HarmonyError,
    PreambleDelta,
    ReasoningDelta,
    StreamParser,
    ToolCall,
    parse_completion,
    render_prompt,
)

TEMPLATE = (Path(__file__).parents[1] / "fixtures" / "chat_template_gpt_oss.jinja").read_text(encoding="utf-8")
DAY = datetime.date(2025, 8, 8)

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the weather for a place.",
        "parameters": {
            "type": "object",
            "properties": {
                "location": {"type": "string", "description": "City name"},
                "format": {"type": "string", "enum": ["celsius", "fahrenheit"], "default": "celsius"},
                "days": {"type": "integer", "default": 3},
            },
            "required": ["location"],
        },
    },
}
RICH = {
    "type": "function",
    "function": {
        "name": "rich",
        "description": "Every schema shape.",
        "parameters": {
            "type": "object",
            "properties": {
                "tags": {"type": "array", "items": {"type": "string"}},
                "ints": {"type": "array", "items": {"type": "integer"}, "nullable": True},
                "points": {"type": "array", "items": {"type": "object", "properties": {"x": {"type": "number"}}}},
                "blobs": {"type": "array", "items": {"type": "object"}},
                "anything": {"type": "array"},
                "grid": {"type": "array", "items": {"type": "array", "items": {"type": "number"}}},
                "where": {
                    "type": "object",
                    "properties": {"lat": {"type": "number"}, "lon": {"type": "number"}},
                    "required": ["lat"],
                },
                "meta": {"type": "object"},
                "either": {"oneOf": [{"type": "string", "description": "a name"}, {"type": "number", "default": 5}]},
                "shape": {"oneOf": [{"type": "object"}, {"type": "string"}], "default": "round"},
                "maybe": {"type": ["string", "null"]},
                "single": {"type": ["integer"]},
                "nullable_text": {"type": "string", "nullable": True},
                "flag": {"type": "boolean", "default": False},
                "untyped": {},
                "label": {"type": "string", "default": "ünï <&>"},
            },
            "required": ["tags"],
        },
    },
}
NOARGS = {"type": "function", "function": {"name": "now", "description": "The time."}}
EMPTY_PARAMS = {
    "type": "function",
    "function": {"name": "ping", "description": "", "parameters": {"type": "object", "properties": {}}},
}


def call(name: str, arguments: Any, **extra: Any) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, "arguments": arguments}, **extra}


# Conversations the official template accepts as they are (no normalisation needed).
VALID_CONVERSATIONS: list[list[dict[str, Any]]] = [
    [{"role": "user", "content": "Hi"}],
    [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "Hi"}],
    [{"role": "developer", "content": "Talk like a pirate."}, {"role": "user", "content": "Hi ünïcødé 🎉"}],
    [
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "4", "thinking": "easy"},
        {"role": "user", "content": "and 3+3?"},
    ],
    [  # a running tool loop: the analysis before each call is kept
        {"role": "system", "content": "Use tools."},
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "thinking": "Need weather.", "tool_calls": [call("get_weather", {"location": "Paris"})]},
        {"role": "tool", "content": "sunny, 21C"},
        {"role": "assistant", "thinking": "And the time.", "tool_calls": [call("now", {})]},
        {"role": "tool", "content": {"time": "12:00", "tz": "CET <&>"}},
    ],
    [  # finished tool loop: analysis dropped once a final answer follows
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "thinking": "Need weather.", "tool_calls": [call("get_weather", {"location": "Paris"})]},
        {"role": "tool", "content": "sunny"},
        {"role": "assistant", "content": "Sunny.", "thinking": "Answer now."},
        {"role": "user", "content": "Thanks! And Rome?"},
        {"role": "assistant", "content": "Checking Rome.", "tool_calls": [call("get_weather", {"location": "Rome"})]},
        {"role": "tool", "content": "rain"},
    ],
    [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": "a", "thinking": "t"},
        {"role": "system", "content": "a late system message is dropped"},
        {"role": "user", "content": "q2"},
    ],
    [{"role": "user", "content": "q"}, {"role": "assistant", "content": "final answer", "thinking": "my reasoning"}],
    [{"role": "user", "content": "q"}, {"role": "assistant", "content": "answer without thinking"}],
]
KWARGS: list[dict[str, Any]] = [
    {},
    {"reasoning_effort": "low"},
    {"reasoning_effort": "high", "model_identity": "You are Harmonica's helper."},
    {"tools": [WEATHER, NOARGS]},
    {"tools": [WEATHER, RICH, NOARGS, EMPTY_PARAMS], "builtin_tools": ["browser", "python"]},
    {"builtin_tools": ["python"]},
    {"builtin_tools": ["browser"], "add_generation_prompt": False},
    {"add_generation_prompt": False, "tools": [WEATHER, NOARGS]},
]


# =================================================================================================
# Rendering
# =================================================================================================
@pytest.mark.parametrize("kwargs", KWARGS, ids=lambda k: "-".join(sorted(k)) or "plain")
def test_fallback_renderer_equals_template(kwargs: dict[str, Any]) -> None:
    for conversation in VALID_CONVERSATIONS:
        with_template = render_prompt(conversation, chat_template=TEMPLATE, date=DAY, **kwargs)
        without = render_prompt(conversation, date=DAY, **kwargs)
        assert without == with_template, conversation


def test_byte_identical_to_transformers() -> None:
    try:
        from transformers.utils.chat_template_utils import render_jinja_template
    except ImportError:
        pytest.skip("transformers is not installed: cannot compare with its chat-template renderer")
    today = datetime.date.today()
    for conversation in VALID_CONVERSATIONS:
        for kwargs in KWARGS:
            ours = render_prompt(conversation, chat_template=TEMPLATE, date=today, **kwargs)
            theirs_kwargs = dict(kwargs)
            theirs_kwargs.setdefault("reasoning_effort", "medium")
            theirs_kwargs.setdefault("add_generation_prompt", True)
            theirs = render_jinja_template([copy.deepcopy(conversation)], chat_template=TEMPLATE, **theirs_kwargs)[0][0]
            assert ours == theirs, (conversation, kwargs)


def test_environment_matches_transformers_for_other_templates() -> None:
    """tojson options, namespace(), dict(), loop controls and {% generation %} behave like transformers'."""
    try:
        from transformers.utils.chat_template_utils import render_jinja_template
    except ImportError:
        pytest.skip("transformers is not installed: cannot compare with its chat-template renderer")
    source = (
        "{%- set ns = namespace(n=0) -%}"
        "{%- for m in messages -%}{%- if m.role == 'system' %}{% continue %}{% endif -%}"
        "{%- set ns.n = ns.n + 1 -%}"
        "{% generation %}<{{ m.role }}>{{ m.content }}{% endgeneration %}\n"
        "{%- endfor -%}"
        "{{ tools|tojson }}|{{ tools|tojson(indent=2, sort_keys=True) }}|{{ dict(a=1)|tojson(separators=(',', ':')) }}"
        "|{{ ns.n }}|{{ strftime_now('%Y') }}{% if add_generation_prompt %}<gen>{% endif %}"
    )
    conversation = [{"role": "system", "content": "s"}, {"role": "user", "content": "ü <b>&"}]
    tools = [{"type": "function", "function": {"name": "f", "description": "<d>", "z": 1, "a": "é"}}]
    ours = render_prompt(conversation, chat_template=source, tools=tools, date=datetime.date.today())
    theirs = render_jinja_template(
        [conversation], chat_template=source, tools=tools, add_generation_prompt=True, reasoning_effort="medium"
    )[0][0]
    assert ours == theirs
    assert '"description": "<d>"' in ours and "\n  " in ours  # no HTML escaping; indent honoured


def test_system_message_exact() -> None:
    text = render_prompt([{"role": "user", "content": "Hi"}], date=DAY, reasoning_effort="high")
    assert text == (
        "<|start|>system<|message|>You are ChatGPT, a large language model trained by OpenAI.\n"
        "Knowledge cutoff: 2024-06\nCurrent date: 2025-08-08\n\nReasoning: high\n\n"
        "# Valid channels: analysis, commentary, final. Channel must be included for every message.<|end|>"
        "<|start|>user<|message|>Hi<|end|><|start|>assistant"
    )


@pytest.mark.parametrize("effort", ["low", "medium", "high"])
def test_reasoning_effort_and_identity(effort: str) -> None:
    for source in (TEMPLATE, None):
        text = render_prompt(
            [{"role": "user", "content": "x"}],
            chat_template=source,
            reasoning_effort=effort,
            model_identity="You are Pip.",
            date=DAY,
        )
        assert text.startswith("<|start|>system<|message|>You are Pip.\nKnowledge cutoff: 2024-06\n")
        assert f"\n\nReasoning: {effort}\n\n" in text


def test_default_effort_is_medium_and_none_uses_template_default() -> None:
    a = render_prompt([{"role": "user", "content": "x"}], chat_template=TEMPLATE, date=DAY)
    b = render_prompt([{"role": "user", "content": "x"}], chat_template=TEMPLATE, date=DAY, reasoning_effort=None)
    assert "Reasoning: medium" in a and a == b


def test_date_pinning_and_default_today() -> None:
    for source in (TEMPLATE, None):
        pinned = render_prompt([{"role": "user", "content": "x"}], chat_template=source, date=datetime.date(2031, 2, 3))
        assert "Current date: 2031-02-03\n" in pinned
        unpinned = render_prompt([{"role": "user", "content": "x"}], chat_template=source)
        assert f"Current date: {datetime.date.today():%Y-%m-%d}\n" in unpinned


def test_builtin_tool_sections() -> None:
    both = render_prompt([{"role": "user", "content": "x"}], builtin_tools=["browser", "python"], date=DAY)
    assert "# Tools\n\n## browser\n\n// Tool for browsing.\n" in both
    assert "`【{cursor}†L{line_start}(-L{line_end})?】`" in both
    assert "} // namespace browser\n\n## python\n\n" in both
    assert "Internet access for this session is UNKNOWN. Depends on the cluster.\n\n# Valid channels" in both
    python_only = render_prompt([{"role": "user", "content": "x"}], builtin_tools=["python"], date=DAY)
    assert "## python" in python_only and "## browser" not in python_only
    assert "Calls to these tools" not in python_only  # that line is for function tools only
    with pytest.raises(HarmonyError, match="unknown builtin tool"):
        render_prompt([{"role": "user", "content": "x"}], builtin_tools=["container"])


def test_function_tools_typescript() -> None:
    text = render_prompt([{"role": "user", "content": "x"}], tools=[WEATHER, RICH, NOARGS, EMPTY_PARAMS], date=DAY)
    assert text.count("Calls to these tools must go to the commentary channel: 'functions'.") == 1
    expected = (
        "<|start|>developer<|message|># Tools\n\n## functions\n\nnamespace functions {\n\n"
        "// Get the weather for a place.\ntype get_weather = (_: {\n"
        "// City name\nlocation: string,\n"
        'format?: "celsius" | "fahrenheit", // default: celsius,\n'
        "days?: number, // default: 3,\n"
        "}) => any;\n\n"
        "// Every schema shape.\ntype rich = (_: {\n"
        "tags: string[],\n"
        "ints?: number[] | null,\n"
        "points?: {\nx?: \n                number}[],\n"
        "blobs?: object[],\n"
        "anything?: any[],\n"
        "grid?: number[][],\n"
        "where?: {\nlat: \n                number, lon?: \n                number},\n"
        "meta?: object,\n"
        "either?: string// a name | \nnumber                    // default: 5,\n"
        "shape?: object | \nstring// default: round,\n"
        "maybe?: string | null,\n"
        "single?: integer,\n"
        "nullable_text?: string | null,\n"
        "flag?: boolean, // default: false,\n"
        "untyped?: any,\n"
        'label?: string, // default: "ünï <&>",\n'
        "}) => any;\n\n"
        "// The time.\ntype now = () => any;\n\n"
        "// \ntype ping = () => any;\n\n"
        "} // namespace functions<|end|>"
    )
    assert expected in text
    assert text == render_prompt(
        [{"role": "user", "content": "x"}],
        chat_template=TEMPLATE,
        tools=[WEATHER, RICH, NOARGS, EMPTY_PARAMS],
        date=DAY,
    )


def test_instructions_block() -> None:
    text = render_prompt([{"role": "developer", "content": "Be kind."}, {"role": "user", "content": "x"}], date=DAY)
    assert "<|start|>developer<|message|># Instructions\n\nBe kind.\n\n<|end|><|start|>user" in text
    with_tools = render_prompt(
        [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "x"}], tools=[NOARGS], date=DAY
    )
    assert "# Instructions\n\nBe kind.\n\n# Tools\n\n## functions" in with_tools
    none = render_prompt([{"role": "user", "content": "x"}], date=DAY)
    assert "developer" not in none


def test_reasoning_kept_in_tool_loop_and_dropped_after_final() -> None:
    loop = VALID_CONVERSATIONS[4]
    text = render_prompt(loop, tools=[WEATHER, NOARGS], date=DAY)
    assert (
        "<|start|>assistant<|channel|>analysis<|message|>Need weather.<|end|>"
        "<|start|>assistant to=functions.get_weather<|channel|>commentary json<|message|>"
        '{"location": "Paris"}<|call|>'
        '<|start|>functions.get_weather to=assistant<|channel|>commentary<|message|>"sunny, 21C"<|end|>'
        "<|start|>assistant<|channel|>analysis<|message|>And the time.<|end|>"
        "<|start|>assistant to=functions.now<|channel|>commentary json<|message|>{}<|call|>"
        '<|start|>functions.now to=assistant<|channel|>commentary<|message|>{"time": "12:00", "tz": "CET <&>"}<|end|>'
        "<|start|>assistant"
    ) in text
    done = render_prompt(VALID_CONVERSATIONS[5], tools=[WEATHER], date=DAY)
    assert "Need weather." not in done and "Answer now." not in done
    assert "<|start|>assistant<|channel|>final<|message|>Sunny.<|end|>" in done
    # the second loop is still running: its analysis (from content) is kept
    assert "<|start|>assistant<|channel|>analysis<|message|>Checking Rome.<|end|>" in done


def test_last_assistant_without_generation_prompt_keeps_reasoning_and_returns() -> None:
    text = render_prompt(VALID_CONVERSATIONS[7], add_generation_prompt=False, date=DAY)
    assert text.endswith(
        "<|start|>assistant<|channel|>analysis<|message|>my reasoning<|end|>"
        "<|start|>assistant<|channel|>final<|message|>final answer<|return|>"
    )
    with_prompt = render_prompt(VALID_CONVERSATIONS[7], date=DAY)
    assert "my reasoning" not in with_prompt
    assert with_prompt.endswith("final answer<|end|><|start|>assistant")


def test_tool_results_are_json_encoded() -> None:
    text = render_prompt(
        [
            {"role": "user", "content": "x"},
            {"role": "assistant", "tool_calls": [call("now", {})]},
            {"role": "tool", "content": 'New "York": 51F'},
        ],
        date=DAY,
    )
    assert '<|message|>"New \\"York\\": 51F"<|end|><|start|>assistant' in text


# ---- normalisation ------------------------------------------------------------------------------
def both(messages: list[dict[str, Any]], **kwargs: Any) -> str:
    """Render with the template and without; they must agree."""
    a = render_prompt(copy.deepcopy(messages), chat_template=TEMPLATE, date=DAY, **kwargs)
    b = render_prompt(copy.deepcopy(messages), date=DAY, **kwargs)
    assert a == b
    return a


def test_openai_style_tool_call_message() -> None:
    openai_style = [
        {"role": "user", "content": "Weather?"},
        {
            "role": "assistant",
            "content": None,
            "reasoning_content": "Look it up.",
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"location":"Oslo"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "cold"},
    ]
    canonical = [
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "thinking": "Look it up.", "tool_calls": [call("get_weather", {"location": "Oslo"})]},
        {"role": "tool", "content": "cold"},
    ]
    assert both(openai_style, tools=[WEATHER]) == both(canonical, tools=[WEATHER])
    assert '{"location": "Oslo"}<|call|>' in both(openai_style, tools=[WEATHER])  # not double-encoded


def test_unparseable_string_arguments_are_kept() -> None:
    text = both([{"role": "user", "content": "x"}, {"role": "assistant", "tool_calls": [call("now", "{oops")]}])
    assert '<|message|>"{oops"<|call|>' in text
    empty = both([{"role": "user", "content": "x"}, {"role": "assistant", "tool_calls": [call("now", "")]}])
    assert "<|message|>{}<|call|>" in empty


def test_tool_without_description_and_flat_tool() -> None:
    flat = {"name": "flat", "parameters": {"type": "object", "properties": {"a": {"type": "string"}}}}
    no_desc = {"type": "function", "function": {"name": "nodesc", "description": None}}
    text = both([{"role": "user", "content": "x"}], tools=[flat, no_desc])
    assert "// \ntype flat = (_: {\na?: string,\n}) => any;\n\n// \ntype nodesc = () => any;" in text


def test_raw_harmony_text_in_history_is_parsed() -> None:
    raw = "<|channel|>analysis<|message|>Think.<|end|><|start|>assistant<|channel|>final<|message|>Answer.<|return|>"
    text = both(
        [{"role": "user", "content": "x"}, {"role": "assistant", "content": raw}, {"role": "user", "content": "y"}]
    )
    assert "<|start|>assistant<|channel|>final<|message|>Answer.<|end|><|start|>user<|message|>y" in text
    assert "Think." not in text
    raw_call = '<|channel|>analysis<|message|>Need it.<|end|><|start|>assistant<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{"location":"Rome"}'
    text = both(
        [
            {"role": "user", "content": "x"},
            {"role": "assistant", "content": raw_call},
            {"role": "tool", "content": "hot"},
        ]
    )
    assert (
        "<|start|>assistant<|channel|>analysis<|message|>Need it.<|end|>"
        '<|start|>assistant to=functions.get_weather<|channel|>commentary json<|message|>{"location": "Rome"}<|call|>'
        '<|start|>functions.get_weather to=assistant<|channel|>commentary<|message|>"hot"<|end|>'
    ) in text
    in_thinking = both(
        [{"role": "user", "content": "x"}, {"role": "assistant", "thinking": raw, "content": ""}],
        add_generation_prompt=False,
    )
    assert in_thinking.endswith(
        "analysis<|message|>Think.<|end|><|start|>assistant<|channel|>final<|message|>Answer.<|return|>"
    )


def test_content_and_thinking_on_a_call_keeps_thinking() -> None:
    text = both(
        [
            {"role": "user", "content": "x"},
            {"role": "assistant", "content": "I'll check.", "thinking": "Need now().", "tool_calls": [call("now", {})]},
        ]
    )
    assert "analysis<|message|>Need now().<|end|>" in text and "I'll check." not in text


def test_empty_tool_calls_and_empty_messages() -> None:
    text = both(
        [
            {"role": "user", "content": "x"},
            {"role": "assistant", "content": "plain", "tool_calls": []},
            {"role": "assistant", "content": None},
            {"role": "user", "content": None},
        ]
    )
    assert (
        "<|start|>assistant<|channel|>final<|message|>plain<|end|><|start|>user<|message|><|end|><|start|>assistant"
        in text
    )
    assert text.count("<|start|>assistant") == 2


def test_orphan_tool_message_becomes_user_note() -> None:
    text = both(
        [
            {"role": "user", "content": "x"},
            {"role": "tool", "name": "lookup", "content": "42"},
            {"role": "assistant", "content": "ok"},
            {"role": "tool", "content": [{"type": "text", "text": "late"}]},
        ]
    )
    assert "<|start|>user<|message|>[Tool result from lookup]\n42<|end|>" in text
    assert "<|start|>user<|message|>[Tool result]\nlate<|end|>" in text


def test_parallel_calls_are_split_and_results_matched_by_id() -> None:
    text = both(
        [
            {"role": "user", "content": "Paris and Rome?"},
            {
                "role": "assistant",
                "thinking": "Two lookups.",
                "tool_calls": [
                    {"id": "a", **call("get_weather", {"location": "Paris"})},
                    {"id": "b", **call("get_weather", {"location": "Rome"})},
                ],
            },
            {"role": "tool", "tool_call_id": "b", "content": "rain"},
            {"role": "tool", "tool_call_id": "a", "content": "sun"},
        ],
        tools=[WEATHER],
    )
    assert (
        "<|start|>assistant<|channel|>analysis<|message|>Two lookups.<|end|>"
        '<|start|>assistant to=functions.get_weather<|channel|>commentary json<|message|>{"location": "Paris"}<|call|>'
        '<|start|>functions.get_weather to=assistant<|channel|>commentary<|message|>"sun"<|end|>'
        '<|start|>assistant to=functions.get_weather<|channel|>commentary json<|message|>{"location": "Rome"}<|call|>'
        '<|start|>functions.get_weather to=assistant<|channel|>commentary<|message|>"rain"<|end|><|start|>assistant'
    ) in text


def test_leading_system_and_developer_merge_and_content_parts() -> None:
    text = both(
        [
            {"role": "system", "content": "Rule one."},
            {"role": "developer", "content": [{"type": "text", "text": "Rule "}, {"type": "text", "text": "two."}]},
            {"role": "user", "content": [{"type": "text", "text": "hello"}]},
        ]
    )
    assert "# Instructions\n\nRule one.\n\nRule two.\n\n<|end|><|start|>user<|message|>hello<|end|>" in text


def test_tool_call_objects_and_prefixed_names() -> None:
    text = both(
        [
            {"role": "user", "content": "x"},
            {"role": "assistant", "tool_calls": [ToolCall("functions.get_weather", '{"location": "Oslo"}')]},
            {"role": "tool", "content": "cold"},
        ],
        tools=[WEATHER],
    )
    assert 'to=functions.get_weather<|channel|>commentary json<|message|>{"location": "Oslo"}<|call|>' in text


def test_builtin_tool_history() -> None:
    conversation = [
        {"role": "user", "content": "What is 2**10? Then search it."},
        {"role": "assistant", "thinking": "Compute.", "tool_calls": [call("python", "print(2**10)")]},
        {"role": "tool", "content": "1024"},
        {
            "role": "assistant",
            "thinking": "Search.",
            "tool_calls": [call("browser.search", {"query": "1024", "topn": 3})],
        },
        {"role": "tool", "name": "browser.search", "content": "[0] 1024 - Wikipedia"},
        {"role": "assistant", "tool_calls": [call("python", {"code": "x = 1"})]},
        {"role": "tool", "content": ""},
    ]
    text = both(conversation, builtin_tools=["browser", "python"])
    assert (
        "<|start|>assistant<|channel|>analysis<|message|>Compute.<|end|>"
        "<|start|>assistant to=python<|channel|>analysis code<|message|>print(2**10)<|call|>"
        "<|start|>python to=assistant<|channel|>analysis<|message|>1024<|end|>"
        "<|start|>assistant<|channel|>analysis<|message|>Search.<|end|>"
        '<|start|>assistant to=browser.search<|channel|>analysis json<|message|>{"query": "1024", "topn": 3}<|call|>'
        "<|start|>browser.search to=assistant<|channel|>analysis<|message|>[0] 1024 - Wikipedia<|end|>"
        "<|start|>assistant to=python<|channel|>analysis code<|message|>x = 1<|call|>"
        "<|start|>python to=assistant<|channel|>analysis<|message|><|end|><|start|>assistant"
    ) in text
    assert "harmonica_" not in text
    # after a final answer the builtin loop's analysis is dropped like any other
    finished = both(conversation + [{"role": "assistant", "content": "1024."}, {"role": "user", "content": "ok"}])
    assert "Compute." not in finished and "to=python<|channel|>analysis code" in finished


def test_declared_function_named_python_stays_a_function() -> None:
    python_fn = {"type": "function", "function": {"name": "python", "description": "Run code"}}
    text = both(
        [{"role": "user", "content": "x"}, {"role": "assistant", "tool_calls": [call("python", '{"a": 1}')]}],
        tools=[python_fn],
    )
    assert 'to=functions.python<|channel|>commentary json<|message|>{"a": 1}<|call|>' in text


def test_errors_are_harmony_errors() -> None:
    user = [{"role": "user", "content": "x"}]
    with pytest.raises(HarmonyError, match="no messages"):
        render_prompt([])
    with pytest.raises(HarmonyError, match="must be a dict"):
        render_prompt(["hello"])  # type: ignore[list-item]
    with pytest.raises(HarmonyError, match="no role"):
        render_prompt([{"content": "x"}])
    with pytest.raises(HarmonyError, match="has no name"):
        render_prompt(user, tools=[{"type": "function", "function": {"description": "d"}}])
    with pytest.raises(HarmonyError, match="no function name"):
        render_prompt([{"role": "assistant", "tool_calls": [{"function": {"arguments": {}}}]}])
    with pytest.raises(HarmonyError, match="could not be compiled"):
        render_prompt(user, chat_template="{% if %}")
    with pytest.raises(HarmonyError, match="template failed: custom failure"):
        render_prompt(user, chat_template="{{ raise_exception('custom failure') }}")
    with pytest.raises(HarmonyError, match="template failed"):
        render_prompt(user, chat_template="{{ messages[0].content + 1 }}")
    with pytest.raises(HarmonyError, match="builtin tool"):
        render_prompt(
            [{"role": "user", "content": "x"}, {"role": "assistant", "tool_calls": [call("python", "1")]}],
            chat_template="{% for m in messages %}{{ m.role }}{% endfor %}",
        )
    with pytest.raises(HarmonyError, match="date"):
        render_prompt(user, date="2025-01-01")  # type: ignore[arg-type]


def test_odd_values_are_repaired_or_reported() -> None:
    text = both(
        [
            {"role": "user", "content": "x"},
            {"role": "assistant", "tool_calls": [call("now", {})]},
            {"role": "function", "content": {1, 2}},  # the old role name; a set is not JSON
        ]
    )
    assert '<|start|>functions.now to=assistant<|channel|>commentary<|message|>"{1, 2}"<|end|>' in text
    bad_schema = {
        "type": "function",
        "function": {"name": "f", "parameters": {"type": "object", "properties": {"a": {}}, "required": 5}},
    }
    with pytest.raises(HarmonyError):
        render_prompt([{"role": "user", "content": "x"}], tools=[bad_schema])
    with pytest.raises(HarmonyError):
        render_prompt([{"role": "user", "content": "x"}], tools=[bad_schema], chat_template=TEMPLATE)


def test_compiled_templates_are_cached() -> None:
    from app.core.harmony.template import _compile_template

    source = TEMPLATE + "{#- cache probe -#}"
    render_prompt([{"role": "user", "content": "x"}], chat_template=source)
    hits = _compile_template.cache_info().hits
    render_prompt([{"role": "user", "content": "y"}], chat_template=source)
    assert _compile_template.cache_info().hits == hits + 1


def test_caller_messages_are_not_modified() -> None:
    conversation = [
        {"role": "user", "content": "x"},
        {"role": "assistant", "content": None, "reasoning_content": "r", "tool_calls": [call("now", "{}")]},
        {"role": "tool", "content": "t"},
    ]
    before = copy.deepcopy(conversation)
    both(conversation)
    assert conversation == before


# =================================================================================================
# Parser
# =================================================================================================
def run(pieces: list[Any], stop: str | None = None) -> tuple[list[Any], Completion]:
    parser = StreamParser()
    events: list[Any] = []
    for piece in pieces:
        if isinstance(piece, tuple):
            events += parser.feed(*piece)
        else:
            events += parser.feed(piece)
    events += parser.finish(stop)
    return events, parser.completion


def merged(events: list[Any]) -> tuple[str, str, list[str], list[ToolCall], list[str]]:
    """Merge events the way a UI would (a preamble ends when any other event arrives)."""
    reasoning, final, preambles, calls, dones = [], [], [], [], []
    last_was_preamble = False
    for e in events:
        if isinstance(e, PreambleDelta):
            if last_was_preamble:
                preambles[-1] += e.text
            else:
                preambles.append(e.text)
        elif isinstance(e, ReasoningDelta):
            reasoning.append(e.text)
        elif isinstance(e, FinalDelta):
            final.append(e.text)
        elif isinstance(e, ToolCall):
            calls.append(e)
        elif isinstance(e, Done):
            dones.append(e.stop_reason)
        last_was_preamble = isinstance(e, PreambleDelta)
    return "".join(reasoning), "".join(final), preambles, calls, dones


def test_reasoning_then_final() -> None:
    events, done = run(
        [
            "<|channel|>analysis<|message|>Let me think.<|end|><|start|>assistant<|channel|>final<|message|>Four.<|return|>"
        ]
    )
    assert done == Completion(reasoning="Let me think.", final="Four.", stop_reason="return")
    assert events[-1] == Done("return")
    assert [type(e) for e in events] == [ReasoningDelta, FinalDelta, Done]


def test_tool_call_channel_form_without_terminator() -> None:
    raw = '<|channel|>analysis<|message|>Need weather.<|end|><|start|>assistant<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{"location":"Paris"}'
    events, done = run([raw], stop="call")
    assert done.tool_calls == [ToolCall("functions.get_weather", '{"location":"Paris"}', "commentary", "json")]
    assert done.reasoning == "Need weather." and done.final == ""
    assert isinstance(events[-2], ToolCall) and events[-1] == Done("call")


def test_tool_call_role_form_and_variants() -> None:
    cases = {
        ' to=functions.f<|channel|>commentary json<|message|>{"a": 1}<|call|>': ("functions.f", "commentary", "json"),
        " to=functions.f<|channel|>commentary<|constrain|>json<|message|>{}": ("functions.f", "commentary", "json"),
        "<|channel|>commentary to=functions.f<|constrain|>json<|message|>{}": ("functions.f", "commentary", "json"),
        "<|channel|>commentary to=functions.f <|constrain|>json<|message|>{}": ("functions.f", "commentary", "json"),
        "<|channel|>analysis to=functions.f json<|message|>{}": ("functions.f", "analysis", "json"),
        "<|channel|>commentary to=functions.f<|message|>{}": ("functions.f", "commentary", None),
        "<|channel|>analysis to=python code<|message|>print(1)": ("python", "analysis", "code"),
        " to=browser.search<|channel|>analysis json<|message|>{}": ("browser.search", "analysis", "json"),
        " to=container.exec<|channel|>analysis<|message|>{}": ("container.exec", "analysis", None),
        "<|channel|>commentary? to=functions.f json<|message|>{}": ("functions.f", "commentary", "json"),
        " to=functions.manage_cart<|channel|>commentary<|channel|>commentary<|constrain|>json<|message|>{}": (
            "functions.manage_cart",
            "commentary",
            "json",
        ),
    }
    for raw, (recipient, channel, ctype) in cases.items():
        _, done = run([raw], stop="call")
        assert len(done.tool_calls) == 1, raw
        got = done.tool_calls[0]
        assert (got.recipient, got.channel, got.content_type) == (recipient, channel, ctype), raw
        assert done.reasoning == "" and done.final == "", raw


def test_call_closed_by_end_or_next_message_and_builtin_on_analysis_is_not_reasoning() -> None:
    raw = (
        "<|channel|>analysis to=python code<|message|>x = 1<|end|>"
        "<|start|>assistant<|channel|>commentary to=functions.g json<|message|>{}"
        "<|start|>assistant<|channel|>final<|message|>done"
    )
    events, done = run([raw], stop="return")
    assert [c.recipient for c in done.tool_calls] == ["python", "functions.g"]
    assert done.reasoning == "" and done.final == "done"
    assert not any(isinstance(e, ReasoningDelta) for e in events)


def test_preambles_are_separate_messages() -> None:
    raw = (
        "<|channel|>commentary<|message|>First I'll look.<|end|>"
        "<|start|>assistant<|channel|>commentary<|message|>Then compute.<|end|>"
        "<|start|>assistant<|channel|>commentary to=functions.f json<|message|>{}<|call|>"
    )
    events, done = run([raw])
    assert done.preambles == ["First I'll look.", "Then compute."]
    assert done.stop_reason == "call" and len(done.tool_calls) == 1
    assert any(isinstance(e, PreambleDelta) for e in events)


def test_structured_final_output_is_final_text() -> None:
    _, done = run(['<|channel|>final <|constrain|>json<|message|>{"ok": true}'], stop="return")
    assert done.final == '{"ok": true}' and not done.tool_calls


def test_truncated_call_is_not_emitted() -> None:
    parser = StreamParser()
    parser.feed('<|channel|>commentary to=functions.f json<|message|>{"a": ')
    events = parser.finish("length")
    assert events == [Done("length")]
    assert parser.completion.tool_calls == []
    assert parser.truncated_call == ToolCall("functions.f", '{"a": ', "commentary", "json")


def test_stop_reason_inference_and_done_once() -> None:
    parser = StreamParser()
    parser.feed("<|channel|>final<|message|>hi")
    assert parser.finish() == [Done("eos")]  # the text was already delivered by feed()
    assert parser.finish("return") == []
    assert parser.feed("more") == []
    assert run(["<|channel|>final<|message|>x<|return|>"])[1].stop_reason == "return"
    assert run(["<|channel|>final<|message|>x<|return|>"], stop="length")[1].stop_reason == "length"


def test_token_ids_for_zero_byte_control_tokens() -> None:
    pieces: list[Any] = [
        ("<|channel|>", SPECIAL_TOKEN_IDS[CHANNEL]),
        ("commentary to=functions.f", 1),
        (" ", 2),
        (b"", SPECIAL_TOKEN_IDS[CONSTRAIN]),
        ("json", 3),
        ("<|message|>", SPECIAL_TOKEN_IDS[MESSAGE]),
        ('{"q":', 4),
        (b' "\xc3', 5),
        (b'\xa9"}', 6),
        (b"", SPECIAL_TOKEN_IDS[CALL]),
    ]
    _events, done = run(pieces)
    assert done.tool_calls == [ToolCall("functions.f", '{"q": "é"}', "commentary", "json")]
    assert done.stop_reason == "call"
    # a special id wins over its (empty or odd) text, and a held "<|" before it stays text
    _, done = run(["<|channel|>final<|message|>a <|", (b"", SPECIAL_TOKEN_IDS[RETURN])])
    assert done.final == "a <|" and done.stop_reason == "return"


LENIENT_CASES: dict[str, dict[str, Any]] = {
    # bare final with no channel markup / text before any header
    "The answer is 4.": {"final": "The answer is 4."},
    "  \n Hello": {"final": "Hello"},
    "tomorrow": {"final": "tomorrow"},
    "to": {"final": "to"},
    "<|message|>plain": {"final": "plain"},
    # stray commentary to=assistant before the real channel
    "<|channel|>commentary to=assistant<|channel|>analysis<|message|>think<|end|><|start|>assistant<|channel|>final<|message|>ok": {
        "reasoning": "think",
        "final": "ok",
    },
    "<|channel|>commentary to=assistant<|message|>note": {"preambles": ["note"]},
    # punctuation after the channel
    "<|channel|>analysis:<|message|>a<|end|><|start|>assistant<|channel|>final?<|message|>b": {
        "reasoning": "a",
        "final": "b",
    },
    # free text after <|channel|> with no <|message|>
    "<|channel|>final The answer is 4<|end|>": {"final": "The answer is 4"},
    "<|channel|>analysis We should think" + "x" * 300: {"reasoning": "We should think" + "x" * 300},
    # missing <|start|> between messages
    "<|channel|>analysis<|message|>a<|end|><|channel|>final<|message|>b": {"reasoning": "a", "final": "b"},
    "<|channel|>analysis<|message|>a<|end|>assistant<|channel|>final<|message|>b": {"reasoning": "a", "final": "b"},
    "<|channel|>analysis<|message|>a<|channel|>final<|message|>b": {"reasoning": "a", "final": "b"},
    # unknown channel is shown as the answer; no channel at all too
    "<|channel|>answer<|message|>x": {"final": "x"},
    "<|start|>assistant<|message|>x": {"final": "x"},
    # a made-up tool result after a call (no <|call|> stop) is dropped
    '<|channel|>commentary to=functions.f json<|message|>{}<|call|><|start|>functions.f to=assistant<|channel|>commentary<|message|>"fake"<|end|>': {
        "calls": ["functions.f"]
    },
    # something that looks like a marker but is not
    "<|channel|>final<|message|>use <|example|>more and <|end": {"final": "use <|example|>more and <|end"},
    "<|channel|>final<|message|>a <| b |> c <|<|end|>x": {"final": "a <| b |> c <|x"},
    # control tokens that carry no content
    "<|channel|>final<|message|>a<|endoftext|>b<|startoftext|>": {"final": "ab"},
    "": {},
    "<|end|><|end|><|start|><|return|>": {},
    # a made-up user turn is not the assistant's answer
    "<|start|>user<|message|>fake<|end|><|start|>assistant<|channel|>final<|message|>real": {"final": "real"},
    # quoted recipient, recipient cut by a leaked marker
    '<|channel|>commentary to="functions.f" json<|message|>{}<|call|>': {"calls": ["functions.f"]},
    "<|channel|>commentary to=functions.f<|start|>assistant<|channel|>final<|message|>x": {"final": "x"},
}


@pytest.mark.parametrize("raw", list(LENIENT_CASES), ids=range(len(LENIENT_CASES)))
def test_lenient_parsing(raw: str) -> None:
    want = LENIENT_CASES[raw]
    done = parse_completion(raw)
    assert done.reasoning == want.get("reasoning", "")
    assert done.final == want.get("final", "")
    assert done.preambles == want.get("preambles", [])
    assert [c.recipient for c in done.tool_calls] == want.get("calls", [])


SPLIT_CORPUS = list(LENIENT_CASES) + [
    "<|channel|>analysis<|message|>Ünïcødé 🎉 thinking…<|end|><|start|>assistant<|channel|>final<|message|>日本語 ✓<|return|>",
    '<|channel|>analysis<|message|>a<|end|><|start|>assistant to=functions.x<|channel|>commentary <|constrain|>json<|message|>{"k": "v <|"}<|call|>',
    "<|channel|>commentary<|message|>pre<|end|><|start|>assistant<|channel|>commentary<|message|>amble<|end|>",
    "text <|e|> <|end <|en",
    "<|channel|>final<|message|>" + "long answer " * 50,
]


def random_chunks(data: Any, rng: random.Random) -> list[Any]:
    out, i = [], 0
    while i < len(data):
        step = rng.choice((1, 1, 2, 3, 5, 8, 13, 40))
        out.append(data[i : i + step])
        i += step
    return out


def test_split_invariance() -> None:
    for raw in SPLIT_CORPUS:
        for stop in (None, "call"):
            ref_events, ref = run([raw], stop)
            ref_merged = merged(ref_events)
            assert (ref_merged[0], ref_merged[1], ref_merged[3]) == (ref.reasoning, ref.final, ref.tool_calls)
            splits = [list(raw), [c.encode() for c in raw], list(raw.encode())]
            rng = random.Random(hash(raw) & 0xFFFF)
            for _ in range(12):
                splits.append(random_chunks(raw, rng))
                splits.append(random_chunks(raw.encode(), rng))
            for pieces in splits:
                pieces = [bytes([p]) if isinstance(p, int) else p for p in pieces]
                events, done = run(pieces, stop)
                assert done == ref, (raw, pieces)
                assert merged(events) == ref_merged, (raw, pieces)


def test_utf8_split_and_invalid_bytes() -> None:
    data = "é🎉中".encode()
    for cut in range(1, len(data)):
        events, done = run([b"<|channel|>final<|message|>", data[:cut], data[cut:]])
        assert done.final == "é🎉中"
        assert all("\ufffd" not in e.text for e in events if isinstance(e, FinalDelta))
    # deltas only at code-point boundaries: the first half of 🎉 yields nothing yet
    parser = StreamParser()
    parser.feed(b"<|channel|>final<|message|>")
    assert parser.feed("🎉".encode()[:2]) == []
    assert parser.feed("🎉".encode()[2:]) == [FinalDelta("🎉")]
    # invalid bytes and a sequence cut off at the end become U+FFFD
    _, done = run([b"<|channel|>final<|message|>a\xffb\xe2\x82"])
    assert done.final == "a\ufffdb\ufffd"
    # a text piece after dangling bytes
    _, done = run([b"<|channel|>final<|message|>\xe2\x82", "z"])
    assert done.final == "\ufffdz"


def test_partial_markers_are_held_until_resolved() -> None:
    parser = StreamParser()
    assert parser.feed("<|channel|>final<|message|>Hi <|") == [FinalDelta("Hi ")]
    assert parser.feed("exa") == [FinalDelta("<|"), FinalDelta("exa")]
    assert parser.feed("mple|>more <") == [FinalDelta("mple|>more ")]
    assert parser.feed("|en") == []
    assert parser.feed("d|>") == []
    assert parser.completion.final == "Hi <|example|>more "


def test_fuzz_never_raises() -> None:
    rng = random.Random(1234)
    alphabet = [
        START,
        END,
        MESSAGE,
        CHANNEL,
        CONSTRAIN,
        RETURN,
        CALL,
        "<|",
        "|>",
        "<",
        " to=",
        "functions.f",
        "assistant",
        "analysis",
        "commentary",
        "final",
        " json",
        "python",
        "é",
        "🎉",
        "{",
        "}",
        " ",
        "\n",
        "x",
    ]
    ids = list(SPECIAL_TOKEN_IDS.values()) + [None, None, None, 5, 200013]
    for _ in range(250):
        parts: list[Any] = []
        for _ in range(rng.randint(0, 40)):
            r = rng.random()
            if r < 0.5:
                parts.append(rng.choice(alphabet))
            elif r < 0.8:
                parts.append(bytes(rng.randrange(256) for _ in range(rng.randint(0, 6))))
            else:
                parts.append((rng.choice(alphabet + [b"", b"\xf0\x9f"]), rng.choice(ids)))
        events, done = run(parts, rng.choice([None, "call", "return", "length", "eos"]))
        assert isinstance(events[-1], Done) and sum(isinstance(e, Done) for e in events) == 1
        assert all(isinstance(c.arguments, str) for c in done.tool_calls)
    # non-text pieces are tolerated too
    parser = StreamParser()
    parser.feed(None)  # type: ignore[arg-type]
    parser.feed(123)  # type: ignore[arg-type]
    assert parser.finish()[-1] == Done("eos")


def test_long_stream_parses_whole() -> None:
    # Its speed is measured in bench/core_speed.py.
    pieces = (
        ["<|channel|>", "analysis", "<|message|>"]
        + ["think "] * 5000
        + ["<|end|>", "<|start|>", "assistant", "<|channel|>", "final", "<|message|>"]
        + ["word "] * 4990
    )
    parser = StreamParser()
    for piece in pieces:
        parser.feed(piece.encode(), None)
    parser.finish("return")
    assert parser.completion.final == "word " * 4990
    assert parser.completion.reasoning == "think " * 5000


def test_parse_completion_round_trips_with_render() -> None:
    """A parsed tool-call turn, put back into history, renders like the canonical message."""
    raw = "<|channel|>analysis<|message|>Check.<|end|><|start|>assistant<|channel|>commentary to=functions.now <|constrain|>json<|message|>{}"
    done = parse_completion(raw, "call")
    history = [
        {"role": "user", "content": "time?"},
        {"role": "assistant", "thinking": done.reasoning, "tool_calls": done.tool_calls},
        {"role": "tool", "content": "noon"},
    ]
    text = render_prompt(history, tools=[NOARGS], date=DAY)
    assert (
        "<|start|>assistant<|channel|>analysis<|message|>Check.<|end|>"
        "<|start|>assistant to=functions.now<|channel|>commentary json<|message|>{}<|call|>"
        '<|start|>functions.now to=assistant<|channel|>commentary<|message|>"noon"<|end|><|start|>assistant'
    ) in text
    assert RETURN not in text  # history is stored with <|end|>, never <|return|>
