"""render_prompt: a conversation repaired, then rendered with the model's template or the built-in renderer."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date as _date_type
from datetime import datetime
from typing import Any

from app.core.harmony.errors import HarmonyError
from app.core.harmony.normalise import _normalise_builtin, _normalise_messages, _normalise_tools
from app.core.harmony.official_template import _render_in_python
from app.core.harmony.template import _render_with_template


def render_prompt(
    messages: Sequence[Mapping[str, Any]],
    *,
    chat_template: str | None = None,
    tools: Sequence[Mapping[str, Any]] | None = None,
    builtin_tools: Sequence[str] | None = None,
    reasoning_effort: str | None = "medium",
    model_identity: str | None = None,
    add_generation_prompt: bool = True,
    date: _date_type | None = None,
) -> str:
    """Render a conversation to a gpt-oss prompt.

    With `chat_template` (the model file's own template) the text is byte-identical to HF
    transformers' `apply_chat_template(tokenize=False)` for the same template and kwargs; without
    one, a built-in renderer gives exactly what the official 2025-08-08 template gives.

    Inputs that make the official template fail are repaired first, the same way for both paths:
    `None` values are dropped; `reasoning_content`/`reasoning` become `thinking`; content-part lists
    become text; raw harmony text (`<|channel|>...`) in an assistant message is parsed into
    thinking/content/tool calls; tool-call arguments given as a JSON string become a JSON value
    (unparseable text is kept); an assistant message with several tool calls is split into one
    message per call, each followed by its result (matched on `tool_call_id`, else by order);
    `tool_calls: []` is dropped; a call with both content and thinking keeps the thinking (the
    content is dropped, as llama.cpp does); a tool result with no call before it becomes a user
    turn `[Tool result from NAME]\\n...` so nothing is lost; tools with no description get "";
    leading system/developer messages are merged into the instructions (later ones are dropped,
    as the template does); empty assistant messages are dropped.

    Builtin tool turns (an assistant call to `python` or `browser.search|open|find` that is not a
    declared function tool) are written in harmony form: `<|start|>assistant to=python<|channel|>
    analysis code<|message|>CODE<|call|>` and results `<|start|>python to=assistant<|channel|>
    analysis<|message|>TEXT<|end|>`. With a template, placeholder function turns are rendered and
    then replaced, so the template still decides everything else.

    Raises HarmonyError with a readable message for input or template errors.
    """
    if not isinstance(add_generation_prompt, bool):
        add_generation_prompt = bool(add_generation_prompt)
    norm_tools = _normalise_tools(tools)
    declared = frozenset(t["function"]["name"] for t in norm_tools or [])
    msgs = _normalise_messages(messages, declared)
    if not msgs:
        raise HarmonyError("there are no messages to render")
    builtin = _normalise_builtin(builtin_tools)
    effort = None if reasoning_effort is None else str(reasoning_effort)
    identity = None if model_identity is None else str(model_identity)
    if date is not None and not isinstance(date, _date_type):
        raise HarmonyError(f"date must be a datetime.date, got {type(date).__name__}")
    if chat_template is not None:
        if not isinstance(chat_template, str) or not chat_template.strip():
            raise HarmonyError("the chat template must be a non-empty string")
        return _render_with_template(
            chat_template, msgs, norm_tools, builtin, effort, identity, add_generation_prompt, date, declared
        )
    today = (date if date is not None else datetime.now()).strftime("%Y-%m-%d")
    try:
        return _render_in_python(msgs, norm_tools, builtin, effort, identity, add_generation_prompt, today, declared)
    except HarmonyError:
        raise
    except Exception as exc:  # odd values deep in a tool schema, for example
        raise HarmonyError(f"the conversation could not be rendered: {exc}") from exc
