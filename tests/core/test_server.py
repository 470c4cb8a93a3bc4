"""The OpenAI-compatible server, driven by the official openai client against real and scripted engines."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import pytest

openai = pytest.importorskip("openai")
try:  # openai ≥ 3 ships on httpx2; older releases on httpx (same API)
    import httpx2 as httpx
except ImportError:  # pragma: no cover
    import httpx  # type: ignore[no-redef]

from app.core.scheduler import EngineScheduler  # noqa: E402
from app.core.scripted_engine import ScriptedEngine  # noqa: E402
from app.core.server import (  # noqa: E402
    ApiServer,
    RequestRecord,
    ServerError,
    ServerSettings,
    ServerTesting,
    example_code,
    generate_api_key,
    parse_chat_request,
    parse_responses_request,
)
from app.core.server.generation import StopMatcher  # noqa: E402
from tests.core.server_support import (  # noqa: E402
    CALL_GRAMMAR,
    ENDLESS,
    RESPONSES_WEATHER_TOOL,
    WEATHER_TOOL,
    Hook,
    client,
    final_grammar,
    last_user_text,
    wait_for,
)

# --- the real engine through the openai client ------------------------------------------------


def test_models_endpoint(srv: tuple[ApiServer, Any, Hook]) -> None:
    server, _, _ = srv
    models = client(server).models.list()
    assert [m.id for m in models.data] == ["tiny-gpt-oss"]
    assert client(server).models.retrieve("tiny-gpt-oss").id == "tiny-gpt-oss"
    with pytest.raises(openai.NotFoundError):
        client(server).models.retrieve("gpt-5")


def test_chat_completion_with_reasoning_and_usage(srv: tuple[ApiServer, Any, Hook]) -> None:
    server, engine, _ = srv
    r = client(server).chat.completions.create(
        model="tiny-gpt-oss",
        messages=[{"role": "user", "content": "hello world"}],
        max_tokens=80,
        seed=3,
    )
    msg = r.choices[0].message
    assert msg.content == "hello there" and r.choices[0].finish_reason == "stop"
    reasoning = msg.model_extra["reasoning_content"]
    assert 3 <= len(reasoning) <= 10
    u = r.usage
    assert (
        u.prompt_tokens == engine.last_stats.prompt_tokens and u.completion_tokens == engine.last_stats.generated_tokens
    )
    assert 0 < u.completion_tokens_details.reasoning_tokens < u.completion_tokens
    assert u.total_tokens == u.prompt_tokens + u.completion_tokens
    assert "Reasoning: medium" in server.testing.prompts[-1]  # type: ignore[union-attr]
    assert server.testing.prompts[-1].endswith("<|start|>user<|message|>hello world<|end|><|start|>assistant")  # type: ignore[union-attr]


def test_chat_completion_streaming(srv: tuple[ApiServer, Any, Hook]) -> None:
    server, _, _ = srv
    chunks = list(
        client(server).chat.completions.create(
            model="x",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            stream_options={"include_usage": True},
            max_completion_tokens=80,
            reasoning_effort="high",
        )
    )
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    reasoning = "".join(
        (c.choices[0].delta.model_extra or {}).get("reasoning_content") or "" for c in chunks if c.choices
    )
    assert content == "hello there" and 3 <= len(reasoning) <= 10
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0
    # Reasoning streams before the answer.
    kinds = [
        "r" if (c.choices[0].delta.model_extra or {}).get("reasoning_content") else "c"
        for c in chunks
        if c.choices
        and ((c.choices[0].delta.content) or (c.choices[0].delta.model_extra or {}).get("reasoning_content"))
    ]
    assert kinds == sorted(kinds, reverse=True)
    assert "Reasoning: high" in server.testing.prompts[-1]  # type: ignore[union-attr]


def test_responses_api_both_ways(srv: tuple[ApiServer, Any, Hook]) -> None:
    server, _, _ = srv
    c = client(server)
    r = c.responses.create(
        model="x",
        input="hello world",
        reasoning={"effort": "low"},
        max_output_tokens=80,
        instructions="Answer briefly.",
    )
    assert r.status == "completed" and r.output_text == "hello there"
    assert [o.type for o in r.output] == ["reasoning", "message"]
    assert 3 <= len(r.output[0].content[0].text) <= 10
    assert r.usage.output_tokens_details.reasoning_tokens > 0 and r.usage.input_tokens > 0
    prompt = server.testing.prompts[-1]  # type: ignore[union-attr]
    assert "Reasoning: low" in prompt and "<|start|>developer<|message|># Instructions\n\nAnswer briefly." in prompt

    events = list(c.responses.create(model="x", input="hello world", stream=True, max_output_tokens=80))
    types = [e.type for e in events]
    assert types[:2] == ["response.created", "response.in_progress"] and types[-1] == "response.completed"
    assert "response.reasoning_text.delta" in types and "response.output_text.delta" in types
    assert types.index("response.reasoning_text.done") < types.index("response.output_text.delta")
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == "hello there" == events[-1].response.output_text
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert "Reasoning: medium" in server.testing.prompts[-1]  # type: ignore[union-attr]


def test_tool_call_round_trip_chat(srv: tuple[ApiServer, Any, Hook]) -> None:
    server, _, hook = srv
    hook.fn = lambda body: (
        CALL_GRAMMAR if body["messages"][-1]["role"] == "user" else final_grammar("It is sunny in Paris.")
    )
    c = client(server)
    messages: list[Any] = [{"role": "user", "content": "What is the weather in Paris?"}]
    r = c.chat.completions.create(model="x", messages=messages, tools=[WEATHER_TOOL], max_tokens=120)
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert (
        call.type == "function"
        and call.function.name == "get_weather"
        and json.loads(call.function.arguments) == {"city": "Paris"}
    )
    reasoning = choice.message.model_extra["reasoning_content"]
    assert "# Tools" in server.testing.prompts[-1] and "type get_weather" in server.testing.prompts[-1]  # type: ignore[union-attr]

    # Like most clients, send back only the call (no reasoning): the server restores the analysis.
    messages.append({"role": "assistant", "content": None, "tool_calls": [call.model_dump()]})
    messages.append({"role": "tool", "tool_call_id": call.id, "content": "sunny, 21 C"})
    r2 = c.chat.completions.create(model="x", messages=messages, tools=[WEATHER_TOOL], max_tokens=120)
    assert r2.choices[0].message.content == "It is sunny in Paris." and r2.choices[0].finish_reason == "stop"
    prompt = server.testing.prompts[-1]  # type: ignore[union-attr]
    assert (
        f"<|start|>assistant<|channel|>analysis<|message|>{reasoning}<|end|>"
        '<|start|>assistant to=functions.get_weather<|channel|>commentary json<|message|>{"city": "Paris"}<|call|>'
        '<|start|>functions.get_weather to=assistant<|channel|>commentary<|message|>"sunny, 21 C"<|end|><|start|>assistant'
    ) in prompt


def test_tool_call_round_trip_streaming_and_responses(srv: tuple[ApiServer, Any, Hook]) -> None:
    server, _, hook = srv

    def pick(body: Mapping[str, Any]) -> str:
        items = body.get("messages") or body.get("input")
        last = items[-1] if isinstance(items, list) else {"role": "user"}
        return CALL_GRAMMAR if last.get("role") == "user" else final_grammar("Sunny.")

    hook.fn = pick
    c = client(server)
    chunks = list(
        c.chat.completions.create(
            model="x",
            messages=[{"role": "user", "content": "weather?"}],
            tools=[WEATHER_TOOL],
            stream=True,
            max_tokens=120,
        )
    )
    calls = [tc for ch in chunks if ch.choices for tc in (ch.choices[0].delta.tool_calls or [])]
    # The call's head (id, name), then its arguments in pieces, all at index 0.
    assert calls[0].function.name == "get_weather" and calls[0].id.startswith("call_")
    assert {c.index for c in calls} == {0} and all(c.id is None for c in calls[1:])
    assert json.loads("".join(c.function.arguments or "" for c in calls)) == {"city": "Paris"}
    assert [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason] == [
        "tool_calls"
    ]

    # Responses: the client feeds the output items (reasoning included) back with the tool's answer.
    r = c.responses.create(
        model="x",
        input=[{"role": "user", "content": "weather?"}],
        tools=[RESPONSES_WEATHER_TOOL],
        max_output_tokens=120,
    )
    kinds = [o.type for o in r.output]
    assert kinds == ["reasoning", "function_call"]
    fc = r.output[1]
    assert fc.name == "get_weather" and json.loads(fc.arguments) == {"city": "Paris"}
    reasoning = r.output[0].content[0].text
    follow = [
        {"role": "user", "content": "weather?"},
        *[o.model_dump(exclude_none=True) for o in r.output],
        {"type": "function_call_output", "call_id": fc.call_id, "output": "sunny"},
    ]
    r2 = c.responses.create(model="x", input=follow, tools=[RESPONSES_WEATHER_TOOL], max_output_tokens=120)
    assert r2.output_text == "Sunny."
    prompt = server.testing.prompts[-1]  # type: ignore[union-attr]
    assert f"<|channel|>analysis<|message|>{reasoning}<|end|><|start|>assistant to=functions.get_weather" in prompt
    assert '<|start|>functions.get_weather to=assistant<|channel|>commentary<|message|>"sunny"<|end|>' in prompt

    # The same loop with previous_response_id instead of resending the items.
    r3 = c.responses.create(model="x", input="weather?", tools=[RESPONSES_WEATHER_TOOL], max_output_tokens=120)
    call = next(o for o in r3.output if o.type == "function_call")
    r4 = c.responses.create(
        model="x",
        previous_response_id=r3.id,
        tools=[RESPONSES_WEATHER_TOOL],
        max_output_tokens=120,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "rain"}],
    )
    assert r4.output_text == "Sunny."
    assert (
        '<|start|>functions.get_weather to=assistant<|channel|>commentary<|message|>"rain"<|end|>'
        in server.testing.prompts[-1]
    )  # type: ignore[union-attr]

    events = list(
        c.responses.create(
            model="x", input="weather?", tools=[RESPONSES_WEATHER_TOOL], stream=True, max_output_tokens=120
        )
    )
    types = [e.type for e in events]
    assert "response.function_call_arguments.done" in types
    done = next(e for e in events if e.type == "response.output_item.done" and e.item.type == "function_call")
    assert done.item.name == "get_weather" and json.loads(done.item.arguments) == {"city": "Paris"}


def test_invalid_requests_get_openai_errors(srv: tuple[ApiServer, Any, Hook]) -> None:
    server, _, _ = srv
    c = client(server)
    with pytest.raises(openai.BadRequestError) as e1:
        c.chat.completions.create(model="x", messages=[])
    assert (
        e1.value.status_code == 400
        and e1.value.body["param"] == "messages"
        and e1.value.body["type"] == "invalid_request_error"
    )
    with pytest.raises(openai.BadRequestError) as e2:
        c.chat.completions.create(model="x", messages=[{"role": "user", "content": "hi"}], temperature=7)
    assert e2.value.body["param"] == "temperature"
    with pytest.raises(openai.BadRequestError) as e3:
        c.chat.completions.create(model="x", messages=[{"role": "wizard", "content": "hi"}])
    assert e3.value.body["param"] == "messages[0].role"
    with pytest.raises(openai.BadRequestError) as e4:
        c.responses.create(model="x", input="hi", reasoning={"effort": "maximal"})
    assert e4.value.body["param"] == "reasoning.effort"
    with pytest.raises(openai.BadRequestError) as e5:
        c.chat.completions.create(model="x", messages=[{"role": "user", "content": "hi " * 5000}])
    assert e5.value.body["code"] == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError):
        c.chat.completions.create(
            model="x", messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]
        )
    with pytest.raises(openai.BadRequestError):
        c.chat.completions.create(model="x", messages=[{"role": "user", "content": "hi"}], stream=True, n=2)
    # Raw HTTP: bad JSON, unknown path, wrong method: all in OpenAI's error shape.
    with httpx.Client(base_url=server.base_url) as h:
        r = h.post("/chat/completions", content=b"{not json", headers={"content-type": "application/json"})
        assert r.status_code == 400 and set(r.json()["error"]) == {"message", "type", "param", "code"}
        r = h.get("/nothing-here")
        assert r.status_code == 404 and r.json()["error"]["type"] == "not_found_error"
        r = h.get("/chat/completions")
        assert r.status_code == 405 and "error" in r.json()
    wait_for(lambda: any(rec.status == 405 for rec in server.request_log()))
    log = server.request_log()
    assert any(rec.status == 400 and rec.path == "/v1/chat/completions" for rec in log)


def test_concurrent_requests_are_queued_and_not_mixed(srv: tuple[ApiServer, Any, Hook]) -> None:
    server, _, hook = srv
    words = ["alpha", "bravo", "charlie", "delta", "echo"]
    hook.fn = lambda body: final_grammar(f"answer {last_user_text(body)}")
    results: dict[str, str] = {}
    errors: list[BaseException] = []
    # The chat window is generating: every API request must wait behind it.
    chat_turn = server.scheduler.acquire("chat")

    def ask(word: str, stream: bool) -> None:
        try:
            c = client(server)
            if stream:
                chunks = c.chat.completions.create(
                    model="x", messages=[{"role": "user", "content": word}], stream=True, max_tokens=80
                )
                results[word] = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
            else:
                r = c.chat.completions.create(model="x", messages=[{"role": "user", "content": word}], max_tokens=80)
                results[word] = r.choices[0].message.content
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=ask, args=(w, i % 2 == 0)) for i, w in enumerate(words)]
    for th in threads:
        th.start()
    deadline = time.monotonic() + 20
    while server.scheduler.state.waiting.get("api", 0) < len(words):
        assert time.monotonic() < deadline, server.scheduler.state
        time.sleep(0.01)
    assert server.scheduler.state.running == "chat" and not results
    server.scheduler.release(chat_turn)
    for th in threads:
        th.join(60)
    assert not errors, errors
    assert results == {w: f"answer {w}" for w in words}


def test_client_disconnect_stops_generation_and_frees_the_engine(srv: tuple[ApiServer, Any, Hook]) -> None:
    server, engine, hook = srv
    hook.fn = lambda body: ENDLESS
    records: list[RequestRecord] = []
    remove = server.add_log_listener(records.append)
    try:
        body = {
            "model": "x",
            "messages": [{"role": "user", "content": "go on forever"}],
            "stream": True,
            "max_tokens": 3500,
        }
        t0 = time.monotonic()
        with (
            httpx.Client(base_url=server.base_url, timeout=30) as h,
            h.stream("POST", "/chat/completions", json=body) as r,
        ):
            assert r.status_code == 200
            got = 0
            for line in r.iter_lines():
                if line.startswith("data: ") and '"content"' in line:
                    got += 1
                    if got >= 5:
                        break
        # The server notices the closed connection and stops generating within a token or so.
        # This request's record (an earlier test's can still arrive after the listener was added).
        deadline = time.monotonic() + 10
        while not any(r.note == "client disconnected" for r in records):
            assert time.monotonic() < deadline, [r.note for r in records]
            time.sleep(0.01)
        rec = next(r for r in records if r.note == "client disconnected")
        assert rec.stream
        assert engine.last_stats.stop_reason == "cancelled"
        # At ~1,600 tok/s the 3,500 tokens would take over 2 s: it stopped long before.
        assert rec.completion_tokens < 1500, rec
        assert server.scheduler.state.running is None and server.active_requests == 0
        # The engine is free for the next request at once.
        hook.fn = lambda body: final_grammar("next")
        t1 = time.monotonic()
        r2 = client(server).chat.completions.create(
            model="x", messages=[{"role": "user", "content": "hi"}], max_tokens=60
        )
        assert r2.choices[0].message.content == "next" and time.monotonic() - t1 < 5
        assert time.monotonic() - t0 < 20
    finally:
        remove()


def test_non_streamed_client_disconnect_cancels_too(srv: tuple[ApiServer, Any, Hook]) -> None:
    server, engine, hook = srv
    hook.fn = lambda body: ENDLESS
    records: list[RequestRecord] = []
    remove = server.add_log_listener(records.append)
    try:
        body = json.dumps(
            {"model": "x", "messages": [{"role": "user", "content": "long"}], "max_tokens": 3500}
        ).encode()
        with socket.create_connection(("127.0.0.1", server.port)) as s:
            s.sendall(
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            deadline = time.monotonic() + 10
            while server.scheduler.state.running != "api":
                assert time.monotonic() < deadline
                time.sleep(0.005)
            time.sleep(0.05)
        # Wait for this request's record: an earlier test's request can still be logged after the
        # listener was added (the log is written once a response has gone out).
        deadline = time.monotonic() + 10
        while not any(r.note == "client disconnected" for r in records):
            assert time.monotonic() < deadline, [r.note for r in records]
            time.sleep(0.01)
        mine = next(r for r in records if r.note == "client disconnected")
        assert mine.completion_tokens < 1500
        assert engine.last_stats.stop_reason == "cancelled"
    finally:
        remove()


def test_api_key_and_browser_guards(real: tuple[ApiServer, Any, Hook]) -> None:
    _, engine, _ = real
    key = generate_api_key()
    assert key.startswith("sk-") and len(key) > 30 and key != generate_api_key()
    server = ApiServer(
        EngineScheduler(engine),
        ServerSettings(port=0, api_key=key),
        testing=ServerTesting(grammar=lambda b: final_grammar("ok")),
    )
    server.start()
    try:
        with pytest.raises(openai.AuthenticationError) as e:
            client(server, "sk-wrong").models.list()
        assert e.value.status_code == 401 and e.value.body["code"] == "invalid_api_key"
        with pytest.raises(openai.AuthenticationError):
            client(server, "sk-wrong").chat.completions.create(model="x", messages=[{"role": "user", "content": "hi"}])
        r = client(server, key).chat.completions.create(
            model="x", messages=[{"role": "user", "content": "hi"}], max_tokens=60
        )
        assert r.choices[0].message.content == "ok"
        with httpx.Client(base_url=server.base_url) as h:
            auth = {"authorization": f"Bearer {key}"}
            assert h.get("/models", headers=auth).status_code == 200
            # DNS rebinding (foreign Host) and cross-site pages (foreign Origin) are refused.
            assert h.get("/models", headers={**auth, "host": "evil.example"}).status_code == 403
            # With a key set, a page from any site may try, but only with the key.
            assert h.get("/models", headers={**auth, "origin": "https://app.example"}).status_code == 200
            assert h.get("/models", headers={"origin": "https://evil.example"}).status_code == 401
            assert h.get("/models", headers={**auth, "origin": "http://localhost:3000"}).status_code == 200
        wait_for(lambda: len(server.request_log()) >= 7)
        assert [r.status for r in server.request_log()][:2] == [401, 401]
    finally:
        server.stop()
    assert not server.running and server.port == 0 and server.base_url == ""


def test_port_in_use_is_a_clear_error_and_restart_works(real: tuple[ApiServer, Any, Hook]) -> None:
    server, engine, _ = real
    other = ApiServer(EngineScheduler(engine), ServerSettings(port=server.port))
    with pytest.raises(ServerError, match=f"Port {server.port} is already in use"):
        other.start()
    assert not other.running
    other.settings.port = 0
    other.start()
    try:
        assert other.running and other.port not in (0, server.port) and not other.exposed
        assert other.base_url == f"http://127.0.0.1:{other.port}/v1"
        other.stop()
        assert not other.running
        other.start()  # the same object starts again
        assert client(other).models.list().data
    finally:
        other.stop()
    with pytest.raises(ServerError, match="not a valid port"):
        ApiServer(EngineScheduler(engine), ServerSettings(port=70000)).start()


# --- scripted engine: exact shapes ----------------------------------------------------------------


def test_preamble_and_stop_sequences(scripted: Callable[..., tuple[ApiServer, ScriptedEngine]]) -> None:
    server, _ = scripted(
        "<|channel|>commentary<|message|>Let me check.<|end|><|start|>assistant<|channel|>final<|message|>one two three END four<|return|>"
    )
    c = client(server)
    r = c.chat.completions.create(model="x", messages=[{"role": "user", "content": "q"}], stop=["END"])
    assert r.choices[0].message.content == "Let me check.\n\none two three " and r.choices[0].finish_reason == "stop"
    chunks = list(
        c.chat.completions.create(model="x", messages=[{"role": "user", "content": "q"}], stop="EN", stream=True)
    )
    assert (
        "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices) == "Let me check.\n\none two three "
    )
    resp = c.responses.create(model="x", input="q")
    assert [(o.type, getattr(o, "phase", None)) for o in resp.output] == [
        ("message", "commentary"),
        ("message", "final_answer"),
    ]
    assert resp.output[0].content[0].text == "Let me check."
    assert resp.output[1].content[0].text == "one two three END four"


def test_length_limit_and_unsolicited_builtin_calls(scripted: Callable[..., tuple[ApiServer, ScriptedEngine]]) -> None:
    server, _ = scripted(
        "<|channel|>final<|message|>" + " word" * 50 + "<|return|>",
        "<|channel|>analysis<|message|>search it<|end|><|start|>assistant<|channel|>analysis to=browser.search <|constrain|>json<|message|>{}<|call|>",
    )
    c = client(server)
    r = c.chat.completions.create(model="x", messages=[{"role": "user", "content": "q"}], max_tokens=10)
    assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 10
    resp = c.responses.create(model="x", input="q", max_output_tokens=5)
    assert resp.status == "incomplete" and resp.incomplete_details.reason == "max_output_tokens"
    r = c.chat.completions.create(model="x", messages=[{"role": "user", "content": "q"}])
    # A builtin tool the client never declared: no tool_calls, no garbage in the content.
    assert (
        r.choices[0].message.tool_calls is None
        and r.choices[0].finish_reason == "stop"
        and not r.choices[0].message.content
    )


def test_no_model_loaded_is_503(scripted: Callable[..., tuple[ApiServer, ScriptedEngine]]) -> None:
    server, engine = scripted("<|channel|>final<|message|>x<|return|>")
    engine.unload()
    with pytest.raises(openai.InternalServerError) as e:
        client(server).chat.completions.create(model="x", messages=[{"role": "user", "content": "q"}])
    assert e.value.status_code == 503 and e.value.body["code"] == "model_not_loaded"
    assert client(server).models.list().data == []


def test_parallel_calls_in_history_are_rendered_one_per_message(
    scripted: Callable[..., tuple[ApiServer, ScriptedEngine]],
) -> None:
    server, engine = scripted("<|channel|>final<|message|>done<|return|>")
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "weather in A and B? <|end|>"},
        {
            "role": "assistant",
            "content": None,
            "reasoning_content": "two calls",
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "A"}'}},
                {"id": "c2", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "B"}'}},
            ],
        },
        {"role": "tool", "tool_call_id": "c2", "content": "rain"},
        {"role": "tool", "tool_call_id": "c1", "content": "sun"},
    ]
    r = client(server).chat.completions.create(model="x", messages=messages, tools=[WEATHER_TOOL])
    assert r.choices[0].message.content == "done"
    prompt = engine.prompts[-1]
    a = prompt.index('{"city": "A"}')
    assert (
        prompt.index('"sun"') > a
        and prompt.index('{"city": "B"}') > prompt.index('"sun"')
        and prompt.index('"rain"') > prompt.index('{"city": "B"}')
    )
    assert "<|channel|>analysis<|message|>two calls<|end|>" in prompt
    assert "# Instructions\n\nBe brief." in prompt
    assert (
        "<|end|>" not in prompt.split("<|start|>user<|message|>")[1].split("<|end|>")[0] + "x"
    )  # the typed token stays text
    assert "weather in A and B? <\u200b|end|>" in prompt


def test_exposed_setting_and_example_code(scripted: Callable[..., tuple[ApiServer, ScriptedEngine]]) -> None:
    settings = ServerSettings(port=0, allow_network=True)
    assert settings.host == "0.0.0.0" and ServerSettings().host == "127.0.0.1"
    server, _ = scripted("<|channel|>final<|message|>x<|return|>", settings=settings)
    assert server.exposed and server.running
    assert all(u.endswith(f":{server.port}/v1") for u in server.network_urls())
    code = example_code(server.base_url, "sk-abc", "gpt-oss-20b")
    assert f'base_url="{server.base_url}"' in code and 'api_key="sk-abc"' in code and "reasoning_effort" in code
    compile(code, "example", "exec")
    assert 'api_key="not-needed"' in example_code("http://127.0.0.1:1/v1")


def test_queued_request_log_records_and_listener(scripted: Callable[..., tuple[ApiServer, ScriptedEngine]]) -> None:
    server, _ = scripted("<|channel|>final<|message|>x<|return|>")
    seen: list[RequestRecord] = []
    server.add_log_listener(seen.append)
    client(server).chat.completions.create(model="x", messages=[{"role": "user", "content": "q"}])
    wait_for(lambda: len(seen) == 1)  # the record is written just after the response is sent
    client(server).models.list()
    wait_for(lambda: len(seen) == 2)
    assert [(r.method, r.path, r.status) for r in seen] == [
        ("POST", "/v1/chat/completions", 200),
        ("GET", "/v1/models", 200),
    ]
    rec = seen[0]
    assert (
        rec.client == "127.0.0.1" and rec.prompt_tokens > 0 and rec.completion_tokens == 4 and rec.note == "stop"
    )  # <|channel|> final <|message|> x
    assert rec.duration_s > 0 and abs(rec.time - time.time()) < 60
    assert server.request_log() == seen


# --- pure parsing ---------------------------------------------------------------------------------


def test_stop_matcher_holds_back_partial_matches() -> None:
    m = StopMatcher(["STOP", "xy"])
    assert m.feed("abc ST") == ("abc ", False)
    assert m.feed("O") == ("", False)
    assert m.feed("P more") == ("", True)
    m = StopMatcher(["STOP"])
    assert m.feed("abc ST") == ("abc ", False)
    assert m.feed("ART") == ("START", False)
    assert m.flush() == ""
    m = StopMatcher([])
    assert m.feed("anything") == ("anything", False)


def test_parse_requests_map_parameters() -> None:
    job = parse_chat_request(
        {
            "messages": [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}],
            "temperature": 0.2,
            "top_p": 0.9,
            "max_tokens": 10,
            "max_completion_tokens": 20,
            "seed": 5,
            "reasoning_effort": "minimal",
            "tool_choice": "none",
            "tools": [WEATHER_TOOL],
        }
    )
    assert job.messages == [{"role": "user", "content": "ab"}] and job.effort == "low" and job.tools is None
    s = job.sampling
    assert (s.temperature, s.top_p, s.max_tokens, s.seed) == (0.2, 0.9, 20, 5)
    job = parse_responses_request(
        {"input": "hi", "reasoning": {"effort": "high"}, "max_output_tokens": 7, "tools": [RESPONSES_WEATHER_TOOL]}
    )
    assert job.effort == "high" and job.sampling.max_tokens == 7 and job.tools[0]["function"]["name"] == "get_weather"  # type: ignore[index]
    for bad, param in [
        ({"messages": "hi"}, "messages"),
        ({"messages": [{"role": "user", "content": "x"}], "max_tokens": 0}, "max_tokens"),
        ({"messages": [{"role": "user", "content": "x"}], "top_p": 0}, "top_p"),
        ({"messages": [{"role": "user", "content": "x"}], "seed": "1"}, "seed"),
        ({"messages": [{"role": "user", "content": "x"}], "stream": "yes"}, "stream"),
        (
            {
                "messages": [{"role": "user", "content": "x"}],
                "tools": [{"type": "function", "function": {"name": "bad name"}}],
            },
            "tools[0].function.name",
        ),
        ({"messages": [{"role": "user", "content": "x"}], "frequency_penalty": 2.5}, "frequency_penalty"),
        (
            {"messages": [{"role": "user", "content": "x"}], "response_format": {"type": "xml"}},
            "response_format.type",
        ),
        ({"messages": [{"role": "user", "content": "x"}], "stop": [1]}, "stop"),
        ({"messages": [{"role": "user", "content": "x"}], "model": 3}, "model"),
    ]:
        with pytest.raises(Exception) as e:
            parse_chat_request(bad)
        assert getattr(e.value, "param", None) == param, (bad, e.value)
    for bad, param in [
        ({"input": []}, "input"),
        ({"input": [{"type": "function_call", "name": "f"}]}, "input[0].call_id"),
        ({"input": [{"type": "telepathy"}]}, "input[0].type"),
        ({"input": "x", "text": {"format": {"type": "json_schema", "name": "bad name"}}}, "text.format.name"),
    ]:
        with pytest.raises(Exception) as e:
            parse_responses_request(bad)
        assert getattr(e.value, "param", None) == param, (bad, e.value)


def test_field_table_names_real_sampling_settings_and_refuses_what_it_cannot_honour() -> None:
    from dataclasses import fields

    from app.core.engine import Sampling
    from app.core.server.types import SAMPLING_FIELDS, UNSUPPORTED_FIELDS

    assert set(SAMPLING_FIELDS) <= {f.name for f in fields(Sampling)}
    job = parse_chat_request(
        {"messages": [{"role": "user", "content": "x"}], "top_k": 40, "min_p": 0.05, "repeat_penalty": 1.1}
    )
    assert (job.sampling.top_k, job.sampling.min_p, job.sampling.repeat_penalty) == (40, 0.05, 1.1)
    harmless = {"n": 1, "logprobs": False, "top_logprobs": 0}
    parse_chat_request({"messages": [{"role": "user", "content": "x"}], **harmless})
    for u in UNSUPPORTED_FIELDS:
        with pytest.raises(Exception) as e:
            parse_chat_request({"messages": [{"role": "user", "content": "x"}], u.key: 3})
        assert getattr(e.value, "param", None) == (u.param or u.key) and getattr(e.value, "status", None) == 400
