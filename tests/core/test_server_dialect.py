"""The dialects clients speak: reasoning field names and switches, penalties and logit_bias, OpenAI's
error wording, paths without /v1, stored responses, raw completions, web_search served by the browser."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import pytest

openai = pytest.importorskip("openai")
try:  # openai ≥ 3 ships on httpx2; older releases on httpx (same API)
    import httpx2 as httpx
except ImportError:  # pragma: no cover
    import httpx  # type: ignore[no-redef]

from app.core.scripted_engine import ScriptedEngine  # noqa: E402
from app.core.server import ApiServer, ServerSettings, parse_chat_request  # noqa: E402
from app.core.server.responses import reasoning_summary  # noqa: E402
from tests.core.server_support import Hook, client, final_grammar, wait_for  # noqa: E402

Make = Callable[..., tuple[ApiServer, ScriptedEngine]]
REASONING = "First I think about it.\n\nThen I think some more, at length."
ANSWER = (
    f"<|channel|>analysis<|message|>{REASONING}<|end|><|start|>assistant<|channel|>final<|message|>Hi there.<|return|>"
)
USER = [{"role": "user", "content": "hi"}]


def test_reasoning_under_both_names_and_its_switches(scripted: Make) -> None:
    server, engine = scripted(ANSWER)
    c = client(server)
    msg = c.chat.completions.create(model="x", messages=USER).choices[0].message
    assert msg.model_extra["reasoning_content"] == msg.model_extra["reasoning"] == REASONING
    chunks = list(c.chat.completions.create(model="x", messages=USER, stream=True))
    deltas = [ch.choices[0].delta.model_extra or {} for ch in chunks if ch.choices]
    assert "".join(d.get("reasoning") or "" for d in deltas) == REASONING
    assert "".join(d.get("reasoning_content") or "" for d in deltas) == REASONING
    # reasoning: {"exclude": true} (OpenRouter): the answer only, streamed or not.
    msg = (
        c.chat.completions.create(model="x", messages=USER, extra_body={"reasoning": {"exclude": True}})
        .choices[0]
        .message
    )
    assert msg.content == "Hi there." and "reasoning" not in (msg.model_extra or {})
    chunks = list(
        c.chat.completions.create(model="x", messages=USER, stream=True, extra_body={"reasoning": {"exclude": True}})
    )
    assert not any((ch.choices[0].delta.model_extra or {}).get("reasoning") for ch in chunks if ch.choices)
    # Effort fallbacks other servers' clients send.
    c.chat.completions.create(
        model="x", messages=USER, extra_body={"chat_template_kwargs": {"reasoning_effort": "high"}}
    )
    assert "Reasoning: high" in engine.prompts[-1]
    c.chat.completions.create(model="x", messages=USER, extra_body={"chat_template_kwargs": {"enable_thinking": False}})
    assert "Reasoning: low" in engine.prompts[-1]
    c.chat.completions.create(model="x", messages=USER, extra_body={"reasoning": {"effort": "high"}})
    assert "Reasoning: high" in engine.prompts[-1]
    with pytest.raises(openai.BadRequestError) as e:
        c.chat.completions.create(
            model="x", messages=USER, extra_body={"chat_template_kwargs": {"reasoning_effort": "max"}}
        )
    assert e.value.body["param"] == "chat_template_kwargs.reasoning_effort"


def test_responses_reasoning_summary(scripted: Make) -> None:
    server, _ = scripted(ANSWER)
    c = client(server)
    r = c.responses.create(model="x", input="hi", reasoning={"effort": "low", "summary": "detailed"})
    item = r.output[0]
    assert item.type == "reasoning" and item.summary[0].text == REASONING and item.content[0].text == REASONING
    r = c.responses.create(model="x", input="hi", reasoning={"summary": "auto"})
    assert r.output[0].summary[0].text == "First I think about it." and r.reasoning.summary == "auto"
    assert c.responses.create(model="x", input="hi").output[0].summary == []
    events = list(c.responses.create(model="x", input="hi", reasoning={"summary": "auto"}, stream=True))
    types = [e.type for e in events]
    assert "response.reasoning_summary_text.delta" in types and "response.reasoning_summary_part.done" in types
    done = next(e for e in events if e.type == "response.reasoning_summary_text.done")
    assert done.text == "First I think about it."
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert reasoning_summary("x" * 1000, "concise") == "x" * 399 + "…"


def test_context_overflow_speaks_openais_words(scripted: Make) -> None:
    server, _ = scripted(ANSWER, n_ctx=256)
    with pytest.raises(openai.BadRequestError) as e:
        client(server).chat.completions.create(model="x", messages=[{"role": "user", "content": "word " * 400}])
    assert e.value.body["code"] == "context_length_exceeded"
    assert e.value.body["message"].startswith(
        "This model's maximum context length is 256 tokens. However, your messages resulted in"
    )
    lc = pytest.importorskip("langchain_openai")
    from langchain_core.exceptions import ContextOverflowError

    llm = lc.ChatOpenAI(model="x", base_url=server.base_url, api_key="unused", max_retries=0)
    with pytest.raises(ContextOverflowError):
        llm.invoke("word " * 400)


def test_paths_without_v1_stored_responses_and_model_created(scripted: Make) -> None:
    server, _ = scripted(ANSWER)
    bare = openai.OpenAI(base_url=f"http://127.0.0.1:{server.port}", api_key="x", max_retries=0)
    assert bare.chat.completions.create(model="x", messages=USER).choices[0].message.content == "Hi there."
    assert bare.models.list().data[0].created > 1_600_000_000
    c = client(server)
    r = c.responses.create(model="x", input="hi")
    again = c.responses.retrieve(r.id)
    assert again.id == r.id and again.output_text == "Hi there." and again.status == "completed"
    streamed = list(c.responses.create(model="x", input="hi", stream=True))
    assert c.responses.retrieve(streamed[-1].response.id).output_text == "Hi there."
    with pytest.raises(openai.NotFoundError):
        c.responses.retrieve("resp_missing")
    unstored = c.responses.create(model="x", input="hi", store=False)
    with pytest.raises(openai.NotFoundError):
        c.responses.retrieve(unstored.id)


def test_raw_completions_keep_harmony_text(scripted: Make) -> None:
    server, engine = scripted(ANSWER)
    prompt = "<|start|>user<|message|>hi<|end|><|start|>assistant"
    r = client(server).completions.create(model="x", prompt=prompt, max_tokens=200)
    assert engine.prompts[-1] == prompt  # special tokens kept, no chat template around it
    text = r.choices[0].text
    assert text == ANSWER  # the harmony text, stop token included
    assert r.usage.completion_tokens > 0 and r.choices[0].finish_reason == "stop"
    pieces = list(client(server).completions.create(model="x", prompt=prompt, stream=True))
    assert "".join(p.choices[0].text for p in pieces) == ANSWER
    cut = client(server).completions.create(model="x", prompt=prompt, stop=["<|end|>"])
    assert cut.choices[0].text == f"<|channel|>analysis<|message|>{REASONING}"
    with pytest.raises(openai.BadRequestError):
        client(server).completions.create(model="x", prompt="", max_tokens=5)


@dataclass
class FakeOutcome:
    content: str
    is_error: bool = False


class FakeBrowser:
    """Stands in for Harmonica's browser session (the real one is tested with the tools)."""

    calls: ClassVar[list[tuple[str, Any]]] = []
    closed: ClassVar[int] = 0

    def call(self, function: str, arguments: Any) -> FakeOutcome:
        FakeBrowser.calls.append((function, arguments))
        return FakeOutcome("[0] Paris weather (https://weather.example)\nL0: Sunny, 21 C")

    def close(self) -> None:
        FakeBrowser.closed += 1


def test_web_search_is_served_by_the_browser_when_browsing_is_on(scripted: Make) -> None:
    search = (
        "<|channel|>analysis<|message|>Search it.<|end|><|start|>assistant<|channel|>analysis to=browser.search "
        '<|constrain|>json<|message|>{"query": "Paris weather"}<|call|>'
    )
    final = "<|channel|>final<|message|>Sunny, 21 C.<|return|>"
    server, engine = scripted(search, final, final)
    server.browser = FakeBrowser
    FakeBrowser.calls = []
    r = client(server).responses.create(model="x", input="Weather in Paris?", tools=[{"type": "web_search"}])
    assert r.output_text == "Sunny, 21 C."
    assert FakeBrowser.calls == [("search", {"query": "Paris weather"})] and FakeBrowser.closed == 1
    assert "## browser" in engine.prompts[0] and "Sunny, 21 C" in engine.prompts[-1]
    # Browsing off: the tool is left out (and noted), the request still answered.
    server.browser = None
    r = client(server).responses.create(model="x", input="Weather?", tools=[{"type": "web_search_preview"}])
    assert r.output_text == "Sunny, 21 C." and "## browser" not in engine.prompts[-1]


def test_the_browser_provider_is_asked_at_each_request(scripted: Make) -> None:
    """The user's choice (the panel's web-search switch, browsing on or off) applies to the next
    request without restarting the server."""
    final = "<|channel|>final<|message|>Done.<|return|>"
    server, engine = scripted(final, final)
    allowed = {"on": False}
    server.browser_provider = lambda: FakeBrowser if allowed["on"] else None
    c = client(server)
    c.responses.create(model="x", input="Weather?", tools=[{"type": "web_search"}])
    assert "## browser" not in engine.prompts[-1]
    allowed["on"] = True
    c.responses.create(model="x", input="Weather?", tools=[{"type": "web_search"}])
    assert "## browser" in engine.prompts[-1]


def test_penalties_and_logit_bias_reach_the_sampler(srv: tuple[ApiServer, Any, Hook]) -> None:
    server, engine, hook = srv
    hook.fn = lambda body: final_grammar("", reasoning="[a-z]{3}").replace('"" <|return|>', "[a-z]{12} <|return|>")
    q = engine.tokenize("q", special=False)
    assert len(q) == 1
    c = client(server)
    r = c.chat.completions.create(model="x", messages=USER, max_tokens=60, seed=1, logit_bias={str(q[0]): 100})
    assert r.choices[0].message.content == "q" * 12  # +100 on "q": nothing else is drawn
    plain = c.chat.completions.create(model="x", messages=USER, max_tokens=60, temperature=0)
    again = c.chat.completions.create(model="x", messages=USER, max_tokens=60, temperature=0)
    assert plain.choices[0].message.content == again.choices[0].message.content  # greedy is repeatable
    penalised = c.chat.completions.create(
        model="x", messages=USER, max_tokens=60, temperature=0, frequency_penalty=2.0, presence_penalty=2.0
    )
    assert penalised.choices[0].message.content != plain.choices[0].message.content
    job = parse_chat_request(
        {"messages": USER, "presence_penalty": -1.5, "frequency_penalty": 0.5, "logit_bias": {"7": -100}}
    )
    assert (job.sampling.presence_penalty, job.sampling.frequency_penalty, job.sampling.logit_bias) == (
        -1.5,
        0.5,
        {7: -100.0},
    )


def test_request_log_notes_what_was_left_out(scripted: Make) -> None:
    server, _ = scripted(ANSWER, settings=ServerSettings(port=0))
    with httpx.Client(base_url=server.base_url, timeout=10) as h:
        r = h.post(
            "/responses",
            json={
                "input": [
                    {"role": "user", "content": "hi"},
                    {"type": "web_search_call", "id": "ws_1", "status": "completed"},
                ],
                "tools": [{"type": "file_search", "vector_store_ids": ["vs_1"]}],
            },
        )
    assert r.status_code == 200 and r.json()["tools"] == [{"type": "file_search", "vector_store_ids": ["vs_1"]}]
    assert r.json()["output"][-1]["content"][0]["text"] == "Hi there."
    wait_for(lambda: bool(server.request_log()))
    note = server.request_log()[-1].note
    assert note.startswith("stop") and "tools[0]" in note and "input[1] (web_search_call)" in note


def test_codex_style_stateless_loop_keeps_the_reasoning(scripted: Make) -> None:
    """store=false with include reasoning.encrypted_content: the client carries the reasoning back."""
    call = (
        "<|channel|>analysis<|message|>Need the weather tool.<|end|><|start|>assistant<|channel|>commentary "
        'to=functions.get_weather <|constrain|>json<|message|>{"city": "Paris"}<|call|>'
    )
    server, engine = scripted(call, "<|channel|>final<|message|>Sunny.<|return|>")
    tool = {"type": "function", "name": "get_weather", "parameters": {"type": "object", "properties": {}}}
    c = client(server)
    first = c.responses.create(
        model="x",
        input="weather?",
        tools=[tool],
        store=False,
        include=["reasoning.encrypted_content"],  # type: ignore[list-item]
    )
    items = [o.model_dump(exclude_none=True) for o in first.output]
    reasoning = next(i for i in items if i["type"] == "reasoning")
    assert reasoning["encrypted_content"] == "Need the weather tool."
    reasoning.pop("content", None)  # Codex sends back the opaque part only
    fc = next(i for i in items if i["type"] == "function_call")
    follow = [
        {"role": "user", "content": "weather?"},
        reasoning,
        fc,
        {"type": "function_call_output", "call_id": fc["call_id"], "output": "sun"},
    ]
    second = c.responses.create(model="x", input=follow, tools=[tool], store=False)  # type: ignore[arg-type, list-item]
    assert second.output_text == "Sunny."
    assert (
        "<|channel|>analysis<|message|>Need the weather tool.<|end|><|start|>assistant to=functions.get_weather"
        in engine.prompts[-1]
    )


def test_readme_api_examples_run(scripted: Make, capsys: pytest.CaptureFixture[str]) -> None:
    """The README's structured-output and tools examples, run as written against a scripted model."""
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    blocks = [b.split("```", 1)[0] for b in readme.split("```python\n")[1:]]
    parse_example = next(b for b in blocks if "completions.parse(" in b)
    tools_example = next(b for b in blocks if 'tool_choice="required"' in b)
    server, _ = scripted(
        '<|channel|>final <|constrain|>json<|message|>{"city": "Paris", "temperature_c": 21, "sunny": true}<|return|>',
        '<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{"city": "Paris"}<|call|>',
        "<|channel|>final<|message|>It is sunny in Paris.<|return|>",
    )
    for code in (parse_example, tools_example):
        assert 'base_url="http://127.0.0.1:8321/v1"' in code
        exec(compile(code.replace("http://127.0.0.1:8321/v1", server.base_url), "README", "exec"), {})
    out = capsys.readouterr().out
    assert "city='Paris' temperature_c=21 sunny=True" in out and "It is sunny in Paris." in out
