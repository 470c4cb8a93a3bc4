"""Structured output and tool_choice through the API server, driven by the openai client and real frameworks.

Scripted engines give exact wire shapes; the tiny real GGUF shows that the grammar the server
builds from each schema makes even random weights answer in valid structure.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any, Literal

import pytest

openai = pytest.importorskip("openai")
pydantic = pytest.importorskip("pydantic")

from pydantic import BaseModel  # noqa: E402

from app.core.scripted_engine import ScriptedEngine  # noqa: E402
from app.core.server import ApiServer, parse_chat_request  # noqa: E402
from app.core.server.structured import (  # noqa: E402
    ToolPlan,
    build_grammar,
    read_output_format,
    repair_arguments,
    with_response_format,
)
from tests.core.server_support import WEATHER_TOOL, Hook, client, wait_for  # noqa: E402

Make = Callable[..., tuple[ApiServer, ScriptedEngine]]


class Weather(BaseModel):
    sky: Literal["sunny", "rainy", "cloudy"]
    temp: int
    windy: bool


class Forecast(BaseModel):
    """Nested models: pydantic writes $defs and $ref."""

    today: Weather
    next_days: list[Weather] = pydantic.Field(max_length=2)


WEATHER_SCHEMA = {
    "type": "object",
    "properties": {
        "sky": {"type": "string", "enum": ["sunny", "rainy", "cloudy"]},
        "temp": {"type": "integer"},
        "windy": {"type": "boolean"},
    },
    "required": ["sky", "temp", "windy"],
    "additionalProperties": False,
}
THINK = "<|channel|>analysis<|message|>The user wants JSON.<|end|><|start|>assistant"
JSON_ANSWER = (
    THINK + '<|channel|>final <|constrain|>json<|message|>{"sky": "sunny", "temp": 21, "windy": false}<|return|>'
)
USER = [{"role": "user", "content": "Weather in Paris as JSON?"}]


def call_script(name: str, args: str) -> str:
    return THINK + f"<|channel|>commentary to=functions.{name} <|constrain|>json<|message|>{args}<|call|>"


def rf(strict: bool = True, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "type": "json_schema",
        "json_schema": {"name": "weather", "strict": strict, "schema": schema or WEATHER_SCHEMA},
    }


# --- scripted engine: exact shapes -----------------------------------------------------------------


def test_response_format_with_the_openai_client(scripted: Make) -> None:
    server, engine = scripted(JSON_ANSWER)
    c = client(server)
    r = c.chat.completions.create(model="x", messages=USER, response_format=rf())  # type: ignore[arg-type]
    assert json.loads(r.choices[0].message.content) == {"sky": "sunny", "temp": 21, "windy": False}
    # The schema is shown to the model in the developer message's Response Formats section, and the
    # grammar constrains the final channel only (the reasoning rule is free text).
    prompt = engine.prompts[-1]
    assert '<|start|>developer<|message|># Response Formats\n\n## weather\n\n{"type":"object"' in prompt
    grammar = engine.grammars[-1]
    assert grammar is not None and "h-final-json" in grammar and "free-char" in grammar
    # .parse() with a pydantic model (strict schema), chat and responses.
    parsed = c.chat.completions.parse(model="x", messages=USER, response_format=Weather)
    assert parsed.choices[0].message.parsed == Weather(sky="sunny", temp=21, windy=False)
    resp = c.responses.parse(model="x", input="Weather in Paris?", text_format=Weather)
    assert resp.output_parsed == Weather(sky="sunny", temp=21, windy=False)
    assert resp.text.format.type == "json_schema"
    # json_object: any JSON object, shown as such.
    r = c.chat.completions.create(model="x", messages=USER, response_format={"type": "json_object"})
    assert json.loads(r.choices[0].message.content)["sky"] == "sunny"
    # Streaming gives the same JSON in pieces.
    chunks = list(c.chat.completions.create(model="x", messages=USER, response_format=rf(), stream=True))  # type: ignore[arg-type]
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert json.loads(text)["temp"] == 21


def test_nested_models_and_patterns(scripted: Make) -> None:
    """Nested models ($defs, $ref) work; a pattern the grammar cannot take is fine when not strict."""
    server, _ = scripted(
        THINK
        + '<|channel|>final<|message|>{"today": {"sky": "rainy", "temp": 3, "windy": true}, "next_days": []}<|return|>',
        THINK + '<|channel|>final<|message|>{"code": "ABC"}<|return|>',
    )
    c = client(server)
    forecast = c.chat.completions.parse(model="x", messages=USER, response_format=Forecast)
    assert forecast.choices[0].message.parsed.today.sky == "rainy"
    loose = {"type": "object", "properties": {"code": {"type": "string", "pattern": "[A-Z]+"}}}
    r = c.chat.completions.create(model="x", messages=USER, response_format=rf(False, loose))  # type: ignore[arg-type]
    assert json.loads(r.choices[0].message.content) == {"code": "ABC"}
    with pytest.raises(openai.BadRequestError) as e:
        c.chat.completions.create(model="x", messages=USER, response_format=rf(True, loose))  # type: ignore[arg-type]
    assert "cannot be turned into a grammar" in e.value.body["message"]


def test_an_answer_that_breaks_the_schema_is_never_returned(scripted: Make) -> None:
    bad = THINK + '<|channel|>final<|message|>{"sky": "purple", "temp": 21, "windy": false}<|return|>'
    server, _ = scripted(bad)
    c = client(server)
    with pytest.raises(openai.InternalServerError) as e:
        c.chat.completions.create(model="x", messages=USER, response_format=rf())  # type: ignore[arg-type]
    assert e.value.body["code"] == "invalid_model_output" and "purple" in e.value.body["message"]
    with pytest.raises(openai.APIError, match="purple"):  # the stream ends in an error event, not "stop"
        list(c.chat.completions.create(model="x", messages=USER, response_format=rf(), stream=True))  # type: ignore[arg-type]
    # Not JSON at all.
    server2, _ = scripted(THINK + "<|channel|>final<|message|>It is sunny.<|return|>")
    with pytest.raises(openai.InternalServerError):
        client(server2).chat.completions.create(model="x", messages=USER, response_format={"type": "json_object"})


def test_strict_schemas_the_grammar_cannot_enforce_are_refused_up_front(scripted: Make) -> None:
    server, engine = scripted(JSON_ANSWER)
    c = client(server)
    schema = {
        **WEATHER_SCHEMA,
        "properties": {**WEATHER_SCHEMA["properties"], "temp": {"type": "integer", "minimum": -90}},
    }
    with pytest.raises(openai.BadRequestError) as e:
        c.chat.completions.create(model="x", messages=USER, response_format=rf(True, schema))  # type: ignore[arg-type]
    assert e.value.body["param"] == "response_format.json_schema.schema" and "minimum" in e.value.body["message"]
    # Not strict: generated, then checked against the whole schema.
    r = c.chat.completions.create(model="x", messages=USER, response_format=rf(False, schema))  # type: ignore[arg-type]
    assert json.loads(r.choices[0].message.content)["temp"] == 21
    # A schema that is not a schema.
    with pytest.raises(openai.BadRequestError):
        c.chat.completions.create(
            model="x",
            messages=USER,
            response_format=rf(True, {"type": "object", "properties": {"a": {"type": "nonsense"}}}),  # type: ignore[arg-type]
        )
    assert len(engine.prompts) == 1


def test_tool_choice_required_named_and_strict_are_grammars(scripted: Make) -> None:
    server, engine = scripted(call_script("get_weather", '{"city": "Paris"}'))
    c = client(server)
    for choice in ("required", {"type": "function", "function": {"name": "get_weather"}}):
        r = c.chat.completions.create(model="x", messages=USER, tools=[WEATHER_TOOL], tool_choice=choice)  # type: ignore[arg-type]
        assert r.choices[0].finish_reason == "tool_calls"
        grammar = engine.grammars[-1]
        assert grammar is not None and "h-final-text" not in grammar  # a plain answer is impossible
        assert '" to=functions." "get_weather"' in grammar
    # auto without strict tools: no grammar at all (the model is free).
    c.chat.completions.create(model="x", messages=USER, tools=[WEATHER_TOOL])  # type: ignore[arg-type]
    assert engine.grammars[-1] is None
    # A strict tool under auto: its arguments follow the schema, a plain answer stays possible.
    strict_tool = {"type": "function", "function": {**WEATHER_TOOL["function"], "strict": True}}
    c.chat.completions.create(model="x", messages=USER, tools=[strict_tool])  # type: ignore[list-item]
    grammar = engine.grammars[-1]
    assert grammar is not None and "h-final-text" in grammar and "h-call-0-get-weather" in grammar


def test_tool_choice_through_responses_and_allowed_tools(scripted: Make) -> None:
    server, engine = scripted(*[call_script("get_weather", '{"city": "Paris"}')] * 4)
    c = client(server)
    fn = WEATHER_TOOL["function"]
    flat = {"type": "function", "name": fn["name"], "description": fn["description"], "parameters": fn["parameters"]}
    other = {"type": "function", "name": "get_time", "parameters": {"type": "object", "properties": {}}}
    # Responses: tool_choice "required" and the flat named form are grammars like in chat completions.
    for choice in ("required", {"type": "function", "name": "get_weather"}):
        r = c.responses.create(model="x", input="Weather in Paris?", tools=[flat, other], tool_choice=choice)  # type: ignore[arg-type]
        assert [o.name for o in r.output if o.type == "function_call"] == ["get_weather"]
        grammar = engine.grammars[-1]
        assert grammar is not None and "h-final-text" not in grammar
        assert '" to=functions." "get_weather"' in grammar
        if choice != "required":
            assert '"get_time"' not in grammar  # a named choice allows only that function
    # allowed_tools narrows what may be called without taking the other tools out of the prompt.
    allowed = {"type": "allowed_tools", "mode": "required", "tools": [{"type": "function", "name": "get_weather"}]}
    c.responses.create(model="x", input="Weather in Paris?", tools=[flat, other], tool_choice=allowed)  # type: ignore[arg-type]
    grammar = engine.grammars[-1]
    assert grammar is not None and '"get_weather"' in grammar and '"get_time"' not in grammar
    assert "h-final-text" not in grammar
    # Chat completions nests mode and tools under "allowed_tools".
    nested = {
        "type": "allowed_tools",
        "allowed_tools": {"mode": "required", "tools": [{"type": "function", "function": {"name": "get_weather"}}]},
    }
    time_tool = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}
    r2 = c.chat.completions.create(model="x", messages=USER, tools=[WEATHER_TOOL, time_tool], tool_choice=nested)  # type: ignore[arg-type]
    assert r2.choices[0].finish_reason == "tool_calls"
    grammar = engine.grammars[-1]
    assert grammar is not None and '"get_weather"' in grammar and '"get_time"' not in grammar
    with pytest.raises(Exception, match=r"tool_choice\.mode"):
        c.responses.create(model="x", input="hi", tools=[flat], tool_choice={**allowed, "mode": "sometimes"})  # type: ignore[arg-type]


def test_undeclared_calls_and_broken_arguments_go_back_to_the_model(scripted: Make) -> None:
    server, engine = scripted(
        call_script("delete_everything", "{}"),  # never declared
        call_script("get_weather", '{"city": "Paris"'),  # cut short: repaired
        THINK + "<|channel|>final<|message|>Done.<|return|>",
    )
    c = client(server)
    r = c.chat.completions.create(model="x", messages=USER, tools=[WEATHER_TOOL])  # type: ignore[list-item]
    # The unknown function never reaches the client; the model saw an error result and called again.
    calls = r.choices[0].message.tool_calls
    assert [t.function.name for t in calls] == ["get_weather"]
    assert json.loads(calls[0].function.arguments) == {"city": "Paris"}
    assert "There is no function delete_everything" in engine.prompts[-1]
    assert "Functions you can call: get_weather" in engine.prompts[-1]
    assert repair_arguments('{"a": [1, 2') == '{"a": [1, 2]}'
    assert repair_arguments('{"a": 1} trailing') == '{"a": 1}'
    assert repair_arguments("not json") is None and repair_arguments("[1]") is None


def test_namespace_tools_are_flattened_and_calls_name_their_namespace(scripted: Make) -> None:
    server, engine = scripted(call_script("lookup", '{"id": 7}'))
    tools = [
        {
            "type": "namespace",
            "name": "crm",
            "description": "Customer records",
            "tools": [
                {
                    "type": "function",
                    "name": "lookup",
                    "parameters": {"type": "object", "properties": {"id": {"type": "integer"}}},
                }
            ],
        },
        {"type": "web_search"},
        {"type": "custom", "name": "apply_patch", "description": "patch"},
    ]
    r = client(server).responses.create(model="x", input="find customer 7", tools=tools)  # type: ignore[arg-type]
    call = next(o for o in r.output if o.type == "function_call")
    assert call.name == "lookup" and call.namespace == "crm" and json.loads(call.arguments) == {"id": 7}
    assert "type lookup" in engine.prompts[-1]
    # The log is written once the response has gone out: wait for it rather than race it.
    wait_for(lambda: bool(server.request_log()))
    assert server.request_log()[-1].status == 200


# --- frameworks ---------------------------------------------------------------------------------------


def _langchain(server: ApiServer) -> Any:
    lc = pytest.importorskip("langchain_openai")
    return lc.ChatOpenAI(model="gpt-oss", base_url=server.base_url, api_key="unused", max_retries=0, timeout=60)


def _pydantic_ai_model(server: ApiServer) -> Any:
    pytest.importorskip("pydantic_ai")
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai import OpenAIProvider

    return OpenAIChatModel("gpt-oss", provider=OpenAIProvider(base_url=server.base_url, api_key="unused"))


def _agents_model(server: ApiServer, responses: bool = False) -> Any:
    agents = pytest.importorskip("agents")
    agents.set_tracing_disabled(True)  # nothing leaves this computer
    aclient = openai.AsyncOpenAI(base_url=server.base_url, api_key="unused", max_retries=0)
    if responses:
        return agents.OpenAIResponsesModel("gpt-oss", openai_client=aclient)
    return agents.OpenAIChatCompletionsModel("gpt-oss", openai_client=aclient)


def test_langchain_structured_output_and_tools(scripted: Make) -> None:
    server, engine = scripted(JSON_ANSWER, JSON_ANSWER, call_script("get_weather", '{"city": "Paris"}'))
    llm = _langchain(server)
    for method in ("json_schema", "json_mode"):
        out = llm.with_structured_output(Weather, method=method).invoke("Weather in Paris?")
        assert out == Weather(sky="sunny", temp=21, windy=False), method
    from langchain_core.tools import tool

    @tool
    def get_weather(city: str) -> str:
        """Current weather in a city."""
        return "sunny"

    msg = llm.bind_tools([get_weather], tool_choice="get_weather").invoke("Weather in Paris?")
    assert msg.tool_calls[0]["name"] == "get_weather" and msg.tool_calls[0]["args"] == {"city": "Paris"}
    assert engine.grammars[-1] is not None  # the named tool_choice was enforced


def test_structured_output_and_tools_over_raw_http(scripted: Make) -> None:
    """What curl or a hand-written client sends: plain JSON bodies, answers read as plain JSON."""
    import httpx

    server, engine = scripted(JSON_ANSWER, call_script("get_weather", '{"city": "Paris"}'))
    with httpx.Client(base_url=server.base_url, timeout=30) as h:
        r = h.post("/chat/completions", json={"model": "x", "messages": USER, "response_format": rf()})
        assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
        answer = r.json()["choices"][0]["message"]
        assert json.loads(answer["content"]) == {"sky": "sunny", "temp": 21, "windy": False}
        assert answer["reasoning_content"] == answer["reasoning"] == "The user wants JSON."
        r = h.post(
            "/chat/completions",
            json={"model": "x", "messages": USER, "tools": [WEATHER_TOOL], "tool_choice": "required"},
        )
        assert r.status_code == 200
        choice = r.json()["choices"][0]
        assert choice["finish_reason"] == "tool_calls"
        call = choice["message"]["tool_calls"][0]
        assert call["type"] == "function" and call["function"]["name"] == "get_weather"
        assert json.loads(call["function"]["arguments"]) == {"city": "Paris"} and call["id"]
        assert engine.grammars[-1] is not None  # "required" was enforced, not only asked for
        # A schema the grammar cannot enforce under strict is a 400 that says why, not a 500.
        bad = rf(schema={"type": "object", "properties": {"x": {"type": "string"}}, "patternProperties": {"a": {}}})
        r = h.post("/chat/completions", json={"model": "x", "messages": USER, "response_format": bad})
        assert r.status_code == 400 and r.json()["error"]["message"]


def test_langchain_streams_the_answer_without_the_reasoning(scripted: Make) -> None:
    server, _ = scripted(THINK + "<|channel|>final<|message|>Hello from a stream.<|return|>")
    chunks = list(_langchain(server).stream("Hi"))
    assert len(chunks) > 1  # it arrived in pieces, not as one block
    assert "".join(str(c.content) for c in chunks) == "Hello from a stream."  # the reasoning is not in the text


def test_pydantic_ai_output_tool_and_native_output(scripted: Make) -> None:
    pytest.importorskip("pydantic_ai")
    from pydantic_ai import Agent, NativeOutput

    server, engine = scripted(
        call_script("final_result", '{"sky": "rainy", "temp": 9, "windy": true}'),
    )
    model = _pydantic_ai_model(server)
    result = Agent(model, output_type=Weather).run_sync("Weather in Paris?")
    assert result.output == Weather(sky="rainy", temp=9, windy=True)
    assert engine.grammars[-1] is not None and "final_result" in engine.grammars[-1]
    engine.queue(JSON_ANSWER)
    native = Agent(model, output_type=NativeOutput(Weather)).run_sync("Weather in Paris?")
    assert native.output == Weather(sky="sunny", temp=21, windy=False)
    assert "# Response Formats" in engine.prompts[-1]


def test_openai_agents_tool_loop_and_output_type(scripted: Make) -> None:
    agents = pytest.importorskip("agents")
    server, engine = scripted(
        call_script("get_weather", '{"city": "Paris"}'),
        JSON_ANSWER,
    )
    seen: list[str] = []

    @agents.function_tool
    def get_weather(city: str) -> str:
        """Current weather in a city."""
        seen.append(city)
        return "sunny, 21 C"

    for responses in (False, True):
        engine.queue(call_script("get_weather", '{"city": "Paris"}'), JSON_ANSWER)
        agent = agents.Agent(
            name="weather", model=_agents_model(server, responses), tools=[get_weather], output_type=Weather
        )
        result = asyncio.run(agents.Runner.run(agent, "Weather in Paris?"))
        assert result.final_output == Weather(sky="sunny", temp=21, windy=False)
    assert seen == ["Paris", "Paris"]
    assert '"sunny, 21 C"' in engine.prompts[-1]  # the tool's result went back to the model


# --- the real engine: grammars make random weights produce valid structure -------------------------


@pytest.fixture
def free(srv: Any) -> Any:
    server, engine, hook = srv
    hook.fn = lambda body: None  # the server's own grammars, not a test's
    assert server.testing is not None
    server.testing.free_text = "[a-z ]{3,10}"  # short reasoning, so random weights finish
    yield server, engine, hook
    server.testing.free_text = None


def test_real_engine_structured_output_validates(free: tuple[ApiServer, Any, Hook]) -> None:
    server, _, _ = free
    c = client(server)
    for seed in range(3):
        r = c.chat.completions.parse(model="x", messages=USER, response_format=Weather, seed=seed, max_tokens=400)
        assert isinstance(r.choices[0].message.parsed, Weather), r.choices[0].message.content
    resp = c.responses.parse(model="x", input="Weather?", text_format=Weather, max_output_tokens=400)
    assert isinstance(resp.output_parsed, Weather)
    nested = c.chat.completions.parse(model="x", messages=USER, response_format=Forecast, seed=2, max_tokens=600)
    assert isinstance(nested.choices[0].message.parsed, Forecast)
    r = c.chat.completions.create(
        model="x", messages=USER, response_format={"type": "json_object"}, seed=1, max_tokens=400
    )
    assert isinstance(json.loads(r.choices[0].message.content), dict)


def test_real_engine_tool_choice_required_and_frameworks(free: tuple[ApiServer, Any, Hook]) -> None:
    server, _, _ = free
    c = client(server)
    tool = {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather",
            "strict": True,
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string", "enum": ["Paris", "Rome"]}, "days": {"type": "integer"}},
                "required": ["city", "days"],
                "additionalProperties": False,
            },
        },
    }
    for seed in range(3):
        r = c.chat.completions.create(
            model="x",
            messages=USER,
            tools=[tool],
            tool_choice="required",
            seed=seed,
            max_tokens=400,  # type: ignore[list-item]
        )
        args = json.loads(r.choices[0].message.tool_calls[0].function.arguments)
        assert args["city"] in ("Paris", "Rome") and isinstance(args["days"], int)
    # Frameworks on the real engine: LangChain's json_schema path, pydantic-ai's output tool (required).
    out = _langchain(server).with_structured_output(Weather, method="json_schema").invoke("Weather?")
    assert isinstance(out, Weather)
    from pydantic_ai import Agent

    result = Agent(_pydantic_ai_model(server), output_type=Weather).run_sync("Weather?")
    assert isinstance(result.output, Weather)


# --- pure pieces --------------------------------------------------------------------------------------


def test_grammar_and_prompt_pieces() -> None:
    fmt = read_output_format(rf(), "response_format", nested=True)
    assert fmt is not None and fmt.strict and fmt.name == "weather"
    grammar = build_grammar(fmt=fmt, tools=None, plan=ToolPlan())
    assert grammar is not None and grammar.startswith("root ::= ( h-analysis )* ( h-final-json )")
    # JSON strings can neither hold raw control characters nor spell a control token.
    assert 'json-safe-no-bar ::= [^"\\\\<|' in build_grammar(
        fmt=read_output_format({"type": "json_object"}, "response_format", nested=True), tools=None, plan=ToolPlan()
    )
    # Nothing to constrain: no grammar.
    assert build_grammar(fmt=None, tools=[WEATHER_TOOL], plan=ToolPlan()) is None
    prompt = "<|start|>system<|message|>sys<|end|><|start|>developer<|message|># Instructions\n\nBe brief.\n\n<|end|><|start|>user"
    assert with_response_format(prompt, "# Response Formats\n\n## x\n\n{}") == (
        "<|start|>system<|message|>sys<|end|><|start|>developer<|message|># Instructions\n\nBe brief.\n\n"
        "# Response Formats\n\n## x\n\n{}<|end|><|start|>user"
    )
    bare = "<|start|>system<|message|>sys<|end|><|start|>user<|message|>hi<|end|><|start|>assistant"
    assert "<|end|><|start|>developer<|message|># Response Formats" in with_response_format(bare, "# Response Formats")
    job = parse_chat_request(
        {"messages": USER, "response_format": rf(), "tools": [WEATHER_TOOL], "tool_choice": "required"}
    )
    assert job.output_format is not None and job.tool_plan.mode == "required"


# --- lazy grammars: reasoning runs free, only the answer or call is constrained ----------------------


def test_lazy_grammar_constrains_only_the_answer(scripted: Make) -> None:
    phase_one = (
        "<|channel|>analysis<|message|>Let me think.<|end|><|start|>assistant<|channel|>final<|message|>"
        "unconstrained text the gate never lets through<|return|>"
    )
    phase_two = (
        'assistant<|channel|>final <|constrain|>json<|message|>{"sky": "cloudy", "temp": 12, "windy": true}<|return|>'
    )
    server, engine = scripted(phase_one, phase_two)
    assert server.testing is not None
    server.testing.lazy_grammar = True
    r = client(server).chat.completions.create(model="x", messages=USER, response_format=rf())  # type: ignore[arg-type]
    msg = r.choices[0].message
    assert json.loads(msg.content) == {"sky": "cloudy", "temp": 12, "windy": True}
    assert msg.model_extra["reasoning_content"] == "Let me think." and r.choices[0].finish_reason == "stop"
    # Phase one ran with no grammar; phase two continued from the reasoning with the answer's grammar only.
    assert engine.grammars[0] is None
    tail = engine.grammars[1]
    assert tail is not None and tail.startswith('root ::= "assistant" ( h-final-json )') and "h-analysis" not in tail
    assert engine.prompts[1] == engine.prompts[0] + "<|channel|>analysis<|message|>Let me think.<|end|><|start|>"


def test_header_gate_holds_back_only_constrained_headers() -> None:
    from app.core.server.generation import HeaderGate
    from app.core.server.structured import opens_constrained

    class Inner:
        def __init__(self, pieces: list[str]) -> None:
            self.pieces = pieces
            self.tokens = 0
            self.closed = False

        def tokenize(self, text: str, special: bool = True) -> list[int]:
            return [1]

        def stream(self, prompt: Any, sampling: Any, *, cancel: Any = None, grammar: Any = None) -> Any:
            def run() -> Any:
                try:
                    for i, p in enumerate(self.pieces):
                        yield i, p.encode()
                finally:
                    self.closed = True

            return run()

    def gate(pieces: list[str], answer: bool = True, calls: bool = True) -> tuple[str, HeaderGate, Inner]:
        inner = Inner(pieces)
        g = HeaderGate(inner, lambda h: opens_constrained(h, answer=answer, calls=calls))  # type: ignore[arg-type]
        out = b"".join(p for _, p in g.stream([0], None)).decode()  # type: ignore[arg-type]
        return out, g, inner

    a = ["<|channel|>", "analysis", "<|message|>", "hm", "<|end|>", "<|start|>", "assistant"]
    out, g, inner = gate([*a, "<|channel|>", "final", "<|message|>", "{"])
    assert out == "<|channel|>analysis<|message|>hm<|end|><|start|>" and g.triggered and g.after_start and inner.closed
    out, g, _ = gate(["<|channel|>", "final", "<|message|>", "{"])
    assert out == "" and g.triggered and not g.after_start
    # A preamble is free; a call in the role header is constrained.
    out, g, _ = gate(
        [
            "<|channel|>",
            "commentary",
            "<|message|>",
            "ok",
            "<|end|>",
            "<|start|>",
            "assistant",
            " to",
            "=functions.f",
            "<|channel|>",
            "commentary",
            "<|message|>",
            "{",
        ]
    )
    assert out == "<|channel|>commentary<|message|>ok<|end|><|start|>" and g.triggered
    # A <|channel|> inside a body (no <|end|><|start|>) opens a header too.
    out, g, _ = gate(["<|channel|>", "analysis", "<|message|>", "x", "<|channel|>", "final", "<|message|>", "y"])
    assert out == "<|channel|>analysis<|message|>x" and g.triggered
    # Nothing to constrain (answers free when only calls are): everything passes.
    pieces = ["<|channel|>", "final", "<|message|>", "plain answer"]
    out, g, _ = gate(pieces, answer=False)
    assert out == "".join(pieces) and not g.triggered
