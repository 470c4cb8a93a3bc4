"""gpt-oss harmony format: render prompts from the model's chat template, parse streamed output.

The package is split by job: ``constants`` (special tokens, ids and the exact system-message
texts), ``events`` (what the parser emits), ``errors``, ``normalise`` (caller input repaired into
the template's shape), ``template`` (the model's own Jinja template, sandboxed), ``official_template``
(the built-in renderer), ``render`` (``render_prompt``) and ``parser`` (``StreamParser``).
Import from ``app.core.harmony``; the modules are its inside.
"""

from __future__ import annotations

from app.core.harmony.constants import (
    BROWSER_SECTION,
    BUILTIN_RECIPIENTS,
    BUILTIN_TOOLS,
    CALL,
    CHANNEL,
    CONSTRAIN,
    DEFAULT_IDENTITY,
    END,
    ENDOFPROMPT,
    ENDOFTEXT,
    MESSAGE,
    PYTHON_SECTION,
    RETURN,
    SPECIAL_TOKEN_IDS,
    START,
    STARTOFTEXT,
)
from app.core.harmony.errors import HarmonyError
from app.core.harmony.events import Completion, Done, Event, FinalDelta, PreambleDelta, ReasoningDelta, ToolCall
from app.core.harmony.parser import StreamParser, parse_completion
from app.core.harmony.render import render_prompt

__all__ = [
    "BROWSER_SECTION",
    "BUILTIN_RECIPIENTS",
    "BUILTIN_TOOLS",
    "CALL",
    "CHANNEL",
    "CONSTRAIN",
    "DEFAULT_IDENTITY",
    "END",
    "ENDOFPROMPT",
    "ENDOFTEXT",
    "MESSAGE",
    "PYTHON_SECTION",
    "RETURN",
    "SPECIAL_TOKEN_IDS",
    "START",
    "STARTOFTEXT",
    "Completion",
    "Done",
    "Event",
    "FinalDelta",
    "HarmonyError",
    "PreambleDelta",
    "ReasoningDelta",
    "StreamParser",
    "ToolCall",
    "parse_completion",
    "render_prompt",
]
