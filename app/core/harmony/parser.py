"""StreamParser: the pieces of one gpt-oss generation turned into events, leniently and in O(n)."""

from __future__ import annotations

import codecs
import logging
import re
from dataclasses import dataclass

from app.core.harmony.constants import (
    CALL,
    CHANNEL,
    CONSTRAIN,
    END,
    ENDOFPROMPT,
    ENDOFTEXT,
    MESSAGE,
    RETURN,
    SPECIAL_TOKEN_IDS,
    START,
    STARTOFTEXT,
)
from app.core.harmony.events import Completion, Done, Event, FinalDelta, PreambleDelta, ReasoningDelta, ToolCall

log = logging.getLogger(__name__)

_MARKERS = (START, END, MESSAGE, CHANNEL, CONSTRAIN, RETURN, CALL, ENDOFTEXT, STARTOFTEXT, ENDOFPROMPT)
_MARKER_SET = frozenset(_MARKERS)
_MARKER_PREFIXES = frozenset(m[:n] for m in _MARKERS for n in range(1, len(m)))
_MAX_MARKER = max(len(m) for m in _MARKERS)
_ID_TO_MARKER = {v: k for k, v in SPECIAL_TOKEN_IDS.items()}
_utf8_decode = codecs.utf_8_decode
_TERMINATORS = {END: None, RETURN: "return", CALL: "call"}
# A header longer than this without <|message|> is free text (harmony.md §5.3), not a header.
_HEADER_LIMIT = 256
_HEADER_SPLIT = re.compile(r"(<\|channel\|>|<\|constrain\|>)")
_RECIPIENT = re.compile(r"[^\s<>\"'`,;?()\[\]{}]+")
_CTYPE_WORD = re.compile(r"[A-Za-z][\w.+/-]*")
_NOT_RECIPIENTS = frozenset({"assistant", "user", "system", "developer", "all"})
_DROP_CALL_STOPS = frozenset({"length", "cancelled", "error"})

_REASONING, _PREAMBLE, _FINAL, _CALL, _IGNORE = range(5)


def _channel_name(word: str) -> str:
    cleaned = re.sub(r"[^a-z]", "", word.lower())
    for name in ("analysis", "commentary", "final"):
        if cleaned.startswith(name):
            return name
    return cleaned


@dataclass
class _Header:
    role: str = "assistant"
    channel: str | None = None
    recipient: str | None = None
    content_type: str | None = None


def _parse_header(text: str, implicit: bool) -> _Header:
    """Read a header leniently: recipient in the role or channel part, constrain with or without
    its marker, stray `to=assistant`, punctuation after the channel, leaked markers in names."""
    sections = _HEADER_SPLIT.split(text)
    head = _Header()
    recipients: list[str] = []
    extras: list[str] = []
    role_words = sections[0].split()
    if role_words and not role_words[0].startswith("to="):
        # With an implicit start only "assistant" (or a cut-off piece of it) can stand here.
        if not (implicit and "assistant".startswith(role_words[0])):
            head.role = role_words[0]
        role_words = role_words[1:]
    for n in range(1, len(sections), 2):
        marker, words = sections[n], sections[n + 1].split()
        if marker == CHANNEL:
            if words and not words[0].startswith("to="):
                head.channel = _channel_name(words[0])
                words = words[1:]
        elif words:
            head.content_type = words[0]
            words = words[1:]
        for word in words:
            (recipients if word.startswith("to=") else extras).append(word)
    for word in role_words:
        (recipients if word.startswith("to=") else extras).append(word)
    for word in recipients:
        found = _RECIPIENT.match(word[3:].lstrip("\"'`"))
        name = found.group(0).rstrip(".:") if found else ""
        if name and name.lower() not in _NOT_RECIPIENTS:
            head.recipient = name
            break
    if head.content_type is None and len(extras) == 1 and _CTYPE_WORD.fullmatch(extras[0]):
        head.content_type = extras[0]
    return head


def _free_text(text: str) -> str:
    """The message text in a header that never reached <|message|>: what follows the channel name
    (or the role), minus any recipient and content-type words."""
    sections = _HEADER_SPLIT.split(text)
    last = sections[-1]
    if len(sections) > 1:
        last = re.sub(r"^\s*\S+", "", last, count=1)  # the channel name / content type
    else:
        last = re.sub(r"^\s*assistant", "", last, count=1)
    while True:
        trimmed = re.sub(r"^\s*(to=\S+|json|code)(?=\s|$)", "", last, count=1)
        if trimmed == last:
            break
        last = trimmed
    return last.lstrip()


class StreamParser:
    """Turns the pieces of one gpt-oss generation into events, in O(n), never raising.

    The input starts right after the prompt's `<|start|>assistant`. Pieces may be text or bytes
    (UTF-8 split anywhere; invalid bytes become U+FFFD) and may carry the token id, which is
    trusted over the text for special tokens (llama.cpp renders `<|call|>`/`<|return|>` as 0 bytes).
    Splitting the same input differently never changes the merged result.

    Several analysis messages are joined with no separator (as llama.cpp does); each commentary
    message without a recipient is one preamble.

    Leniency choices: text before any header, or a message with no channel, is the final answer;
    an unknown channel name is final; `to=assistant` is not a recipient; any message with a
    recipient (either header position, any channel) is a tool call, emitted when the message ends
    (`<|call|>`, `<|end|>`, `<|return|>`, a new `<|start|>`/`<|channel|>`, or finish() unless the
    stop reason is "length"/"cancelled"/"error", which would make it a truncated call); a header
    over 256 characters, or one ended without `<|message|>`, is read as free text; messages whose
    role is not the assistant (made-up tool output or user turns) are dropped.
    """

    __slots__ = (
        "_args",
        "_bpend",
        "_call",
        "_calls",
        "_done",
        "_dropped_call",
        "_final",
        "_held",
        "_hlen",
        "_hparts",
        "_implicit",
        "_in_header",
        "_kind",
        "_last_stop",
        "_preamble_open",
        "_preambles",
        "_reasoning",
        "_stop_reason",
        "_undecided",
    )

    def __init__(self) -> None:
        self._bpend = b""  # the start of a UTF-8 sequence split across pieces
        self._held = ""  # a possible partial marker, e.g. "<|en"
        self._reasoning: list[str] = []
        self._final: list[str] = []
        self._preambles: list[list[str]] = []
        self._calls: list[ToolCall] = []
        self._last_stop: str | None = None
        self._done = False
        self._stop_reason: str | None = None
        self._dropped_call: ToolCall | None = None
        self._kind = _IGNORE
        self._call: _Header | None = None
        self._args: list[str] = []
        self._preamble_open = False
        self._begin_header(implicit=True)

    # ---- public API --------------------------------------------------------------------------
    def feed(self, piece: str | bytes, token_id: int | None = None) -> list[Event]:
        out: list[Event] = []
        if self._done:
            return out
        try:
            if token_id is not None and token_id in _ID_TO_MARKER:
                self._flush_partial(out)
                self._marker(_ID_TO_MARKER[token_id], out)
                return out
            cls = piece.__class__
            if cls is bytes and not self._bpend and piece.isascii():
                text = piece.decode("ascii")  # type: ignore[union-attr]
            elif cls is str:
                if self._bpend:
                    self._flush_partial(out)  # a text piece ends any dangling UTF-8 sequence
                text = piece
            elif isinstance(piece, (bytes, bytearray, memoryview)):
                data = self._bpend + bytes(piece)
                text, used = _utf8_decode(data, "replace", False)
                self._bpend = data[used:]
            else:
                text = "" if piece is None else str(piece)
            if text:
                if self._held or self._in_header or "<" in text:
                    self._scan(text, out)
                else:
                    self._body_text(text, out)  # the common case: plain text inside a message
        except Exception:  # pragma: no cover - a parser bug must not kill a generation
            log.exception("harmony parser failed on %r", piece, extra={"private": True})  # model text: see core/logs.py
        return out

    def finish(self, stop_reason: str | None = None) -> list[Event]:
        out: list[Event] = []
        if self._done:
            return out
        try:
            self._flush_partial(out)
            stop = stop_reason or self._last_stop or "eos"
            if self._in_header:
                self._end_header_without_message(out)
            if not self._in_header:
                if self._kind == _CALL and stop in _DROP_CALL_STOPS:
                    assert self._call is not None
                    self._dropped_call = ToolCall(
                        self._call.recipient or "",
                        "".join(self._args),
                        self._call_channel(),
                        self._call.content_type,
                    )
                    self._kind = _IGNORE
                self._close(out)
        except Exception:  # pragma: no cover
            log.exception("harmony parser failed while finishing")
            stop = stop_reason or "error"
        self._done = True
        self._stop_reason = stop
        out.append(Done(stop))
        return out

    @property
    def completion(self) -> Completion:
        """Everything parsed so far, merged."""
        return Completion(
            reasoning="".join(self._reasoning),
            final="".join(self._final),
            preambles=["".join(p) for p in self._preambles],
            tool_calls=list(self._calls),
            stop_reason=self._stop_reason,
        )

    @property
    def truncated_call(self) -> ToolCall | None:
        """A tool call cut off by finish("length"/"cancelled"/"error"); it was not emitted."""
        return self._dropped_call

    # ---- text scanning -----------------------------------------------------------------------
    def _flush_partial(self, out: list[Event]) -> None:
        rest = _utf8_decode(self._bpend, "replace", True)[0] if self._bpend else ""
        self._bpend = b""
        if rest:
            self._scan(rest, out)
        if self._held:
            held, self._held = self._held, ""
            self._text(held, out)  # it never became a marker: it is text

    def _scan(self, text: str, out: list[Event]) -> None:
        buf = self._held + text if self._held else text
        self._held = ""
        i, n = 0, len(buf)
        while i < n:
            j = buf.find("<|", i)
            if j < 0:
                if buf[-1] == "<":
                    if n - 1 > i:
                        self._text(buf[i : n - 1], out)
                    self._held = "<"
                else:
                    self._text(buf[i:] if i else buf, out)
                return
            if j > i:
                self._text(buf[i:j], out)
            k = buf.find("|>", j + 2, j + _MAX_MARKER)
            if k >= 0:
                candidate = buf[j : k + 2]
                if candidate in _MARKER_SET:
                    self._marker(candidate, out)
                    i = k + 2
                    continue
            elif n - j < _MAX_MARKER and buf[j:] in _MARKER_PREFIXES:
                self._held = buf[j:]
                return
            self._text("<|", out)  # not a special token, e.g. "<|example|>"
            i = j + 2

    def _text(self, text: str, out: list[Event]) -> None:
        if self._in_header:
            self._header_text(text, out)
        else:
            self._body_text(text, out)

    def _body_text(self, text: str, out: list[Event]) -> None:
        kind = self._kind
        if kind == _FINAL:
            self._final.append(text)
            out.append(FinalDelta(text))
        elif kind == _REASONING:
            self._reasoning.append(text)
            out.append(ReasoningDelta(text))
        elif kind == _CALL:
            self._args.append(text)
        elif kind == _PREAMBLE:
            if not self._preamble_open:
                self._preambles.append([])
                self._preamble_open = True
            self._preambles[-1].append(text)
            out.append(PreambleDelta(text))

    # ---- headers -----------------------------------------------------------------------------
    def _begin_header(self, implicit: bool) -> None:
        self._in_header = True
        self._implicit = implicit
        self._undecided = implicit  # implicit headers may turn out to be bare answer text
        self._hparts: list[str] = []
        self._hlen = 0

    def _header_text(self, text: str, out: list[Event]) -> None:
        if self._undecided:
            seen = "".join(self._hparts) + text if self._hparts else text.lstrip()
            if not seen:
                return
            if seen.startswith(("to=", "assistant")):
                self._undecided = False
                self._hparts, self._hlen = [], 0
                text = seen
            elif "to=".startswith(seen) or "assistant".startswith(seen):
                self._hparts, self._hlen = [seen], len(seen)
                return
            else:
                # No header at all: the model went straight to its answer.
                self._start_body(_Header(channel="final"))
                self._body_text(seen, out)
                return
        self._hparts.append(text)
        self._hlen += len(text)
        if self._hlen > _HEADER_LIMIT:
            self._overflow(out)

    def _header_marker(self, marker: str, out: list[Event]) -> None:
        if self._undecided:
            self._undecided = False  # a channel/constrain marker: this is a header
        self._hparts.append(marker)
        self._hlen += len(marker)
        if self._hlen > _HEADER_LIMIT:
            self._overflow(out)

    def _overflow(self, out: list[Event]) -> None:
        whole = "".join(self._hparts)
        head, tail = whole[:_HEADER_LIMIT], whole[_HEADER_LIMIT:]
        self._start_body(_parse_header(head, self._implicit))
        self._body_text(_free_text(head) + tail, out)

    def _end_header_without_message(self, out: list[Event]) -> None:
        """A terminator (or the end) came before <|message|>: read the header as free text."""
        whole = "".join(self._hparts)
        if not whole.strip():
            self._in_header = True
            return
        if self._undecided:
            self._start_body(_Header(channel="final"))
            self._body_text(whole, out)
            return
        head = _parse_header(whole, self._implicit)
        free = _free_text(whole)
        if head.recipient is not None and not free:
            return  # a call header that never got its arguments: nothing to run
        self._start_body(head)
        if free:
            self._body_text(free, out)

    def _start_body(self, head: _Header) -> None:
        self._in_header = False
        self._undecided = False
        self._hparts = []
        self._hlen = 0
        self._preamble_open = False
        if not head.role.lower().startswith("assistant"):
            self._kind = _IGNORE  # the model writing another author's message (e.g. made-up tool output)
        elif head.recipient is not None:
            self._kind = _CALL
            self._call = head
            self._args = []
        elif head.channel == "analysis":
            self._kind = _REASONING
        elif head.channel == "commentary":
            self._kind = _PREAMBLE
        else:
            self._kind = _FINAL

    def _call_channel(self) -> str:
        channel = self._call.channel if self._call is not None else None
        return channel if channel in ("analysis", "commentary", "final") else "commentary"

    def _close(self, out: list[Event]) -> None:
        """End the open message (if any)."""
        if self._in_header:
            return
        if self._kind == _CALL and self._call is not None:
            call = ToolCall(
                recipient=self._call.recipient or "",
                arguments="".join(self._args),
                channel=self._call_channel(),
                content_type=self._call.content_type,
            )
            self._calls.append(call)
            out.append(call)
        self._kind = _IGNORE
        self._call = None
        self._args = []
        self._preamble_open = False

    # ---- markers -----------------------------------------------------------------------------
    def _marker(self, marker: str, out: list[Event]) -> None:
        if marker in _TERMINATORS:
            if self._in_header:
                self._end_header_without_message(out)
            self._close(out)
            self._last_stop = _TERMINATORS[marker]
            self._begin_header(implicit=True)
        elif marker == START:
            if self._in_header:
                self._end_header_without_message(out)  # bare text or a header with free text
            self._close(out)
            self._begin_header(implicit=False)
        elif marker == MESSAGE:
            if self._in_header:
                # Undecided means only whitespace or a fragment like "to" came before: no header.
                head = _Header() if self._undecided else _parse_header("".join(self._hparts), self._implicit)
                self._start_body(head)
            # a stray <|message|> inside a message is dropped
        elif marker == CHANNEL:
            if not self._in_header:
                # <|channel|> inside a message: the model skipped <|end|><|start|>assistant.
                self._close(out)
                self._begin_header(implicit=True)
            self._header_marker(marker, out)
        elif marker == CONSTRAIN and self._in_header:
            self._header_marker(marker, out)
        # <|endoftext|>, <|startoftext|>, <|endofprompt|>: nothing to show


def parse_completion(raw: str, stop_reason: str | None = None) -> Completion:
    """Parse one whole generation (text after `<|start|>assistant`) into a Completion."""
    parser = StreamParser()
    parser.feed(raw if isinstance(raw, (str, bytes)) else str(raw))
    parser.finish(stop_reason)
    return parser.completion
