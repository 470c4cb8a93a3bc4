"""Attacks on the local API server: hostile web pages, oversized and malformed bodies, floods, bad numbers.

Each test sends what an attacker (or a broken client) would and asserts the clear outcome: a 4xx
in OpenAI's error shape naming the problem, refused before any real work, never a 500.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

openai = pytest.importorskip("openai")
try:  # openai ≥ 3 ships on httpx2; older releases on httpx (same API)
    import httpx2 as httpx
except ImportError:  # pragma: no cover
    import httpx  # type: ignore[no-redef]

from app.core.scripted_engine import ScriptedEngine  # noqa: E402
from app.core.server import ApiServer, RequestRecord, ServerSettings  # noqa: E402
from tests.core.server_support import WEATHER_TOOL, client, wait_for  # noqa: E402

Make = Callable[..., tuple[ApiServer, ScriptedEngine]]
ANSWER = "<|channel|>analysis<|message|>thinking<|end|><|start|>assistant<|channel|>final<|message|>fine<|return|>"
USER = [{"role": "user", "content": "hi"}]


def post_raw(server: ApiServer, body: bytes, headers: dict[str, str] | None = None) -> Any:
    with httpx.Client(base_url=server.base_url, timeout=30) as h:
        return h.post(
            "/chat/completions", content=body, headers={"content-type": "application/json", **(headers or {})}
        )


def root(server: ApiServer) -> str:
    return f"http://127.0.0.1:{server.port}"


def records_of(server: ApiServer, n: int) -> list[RequestRecord]:
    wait_for(lambda: len(server.request_log()) >= n)
    return server.request_log()


# --- hostile web pages -------------------------------------------------------------------------


def test_null_and_foreign_origins_are_refused_without_a_key(scripted: Make) -> None:
    server, engine = scripted(ANSWER)
    body = json.dumps({"model": "x", "messages": USER}).encode()
    with httpx.Client(base_url=root(server), timeout=10) as h:
        for origin in ("null", "https://evil.example", "http://localhost.evil.example", "http://127.0.0.1.nip.io"):
            for method, path in (("GET", "/v1/models"), ("POST", "/v1/chat/completions"), ("GET", "/health")):
                r = h.request(method, path, content=body if method == "POST" else None, headers={"origin": origin})
                assert r.status_code == 403, (origin, path, r.status_code)
                assert r.json()["error"]["code"] == "forbidden_origin"
                assert "access-control-allow-origin" not in r.headers
        # A sandboxed frame's preflight gets nothing either.
        pre = h.options("/chat/completions", headers={"origin": "null", "access-control-request-method": "POST"})
        assert pre.status_code == 403 and "access-control-allow-origin" not in pre.headers
        # Pages served from this computer may use it, preflight included.
        pre = h.options(
            "/chat/completions",
            headers={
                "origin": "http://localhost:5173",
                "access-control-request-method": "POST",
                "access-control-request-headers": "content-type, authorization",
            },
        )
        assert pre.status_code == 204
        assert pre.headers["access-control-allow-origin"] == "http://localhost:5173"
        assert "POST" in pre.headers["access-control-allow-methods"]
        assert pre.headers["access-control-allow-headers"] == "content-type, authorization"
        r = h.post("/chat/completions", content=body, headers={"origin": "http://127.0.0.1:8080"})
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "http://127.0.0.1:8080"
    assert len(engine.prompts) == 1  # only the allowed page's request reached the model


def test_with_a_key_nothing_is_revealed_without_it(scripted: Make) -> None:
    server, engine = scripted(ANSWER, settings=ServerSettings(port=0, api_key="sk-secret-key-123"))
    with httpx.Client(base_url=root(server), timeout=10) as h:
        for path in ("/health", "/v1/models", "/models", "/v1/models/gpt-oss-20b", "/v1/responses/resp_x"):
            r = h.get(path)
            assert r.status_code == 401, path
            text = r.text.lower()
            assert "gpt-oss" not in text and "idle" not in text and "queue" not in text
        ok = h.get("/health", headers={"authorization": "Bearer sk-secret-key-123"})
        assert ok.status_code == 200 and ok.json()["model"]
        # A page from another site may try with the key (it cannot know it), and fails without.
        r = h.post("/v1/chat/completions", json={"messages": USER}, headers={"origin": "null"})
        assert r.status_code == 401
    assert engine.prompts == []


def test_lan_access_checks_host_names_and_hides_details_from_other_devices(scripted: Make) -> None:
    server, _ = scripted(ANSWER, settings=ServerSettings(port=0, allow_network=True))
    assert server.exposed
    with httpx.Client(base_url=root(server), timeout=10) as h:
        # DNS rebinding: a foreign name pointed at this machine reads nothing, by GET or POST.
        for host in ("evil.example", "evil.example:8321", "localhost.evil.example", "attacker.test."):
            assert h.get("/v1/models", headers={"host": host}).status_code == 403, host
            assert h.get("/health", headers={"host": host}).status_code == 403, host
            assert h.post("/v1/chat/completions", json={"messages": USER}, headers={"host": host}).status_code == 403
        # Addresses (how other devices reach it) and localhost are fine.
        for host in ("192.168.1.20:8321", "[fe80::1]:8321", "localhost:8321", "127.0.0.1"):
            assert h.get("/v1/models", headers={"host": host}).status_code == 200, host

    # Another device (no real LAN traffic: the app is called in-process with that client address).
    async def from_lan() -> Any:
        transport = httpx.ASGITransport(app=server.app, client=("192.168.1.20", 50000))
        async with httpx.AsyncClient(transport=transport, base_url="http://192.168.1.5:8321") as lan:
            return await lan.get("/health")

    r = asyncio.run(from_lan())
    assert r.status_code == 200 and r.json() == {"status": "ok"}
    with httpx.Client(base_url=root(server), timeout=10) as h:
        assert h.get("/health").json()["model"]  # this computer still sees the details


# --- oversized bodies and floods ------------------------------------------------------------------


def _read_status(sock: socket.socket) -> int:
    data = b""
    while b"\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/") else 0


def test_oversized_bodies_are_refused_before_they_are_read(scripted: Make) -> None:
    server, engine = scripted(ANSWER)
    # 1. A declared 100 MB body: 413 at once, after a few KB, without waiting for the rest.
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        t0 = time.monotonic()
        s.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: 104857600\r\n\r\n" + b'{"messages": [{"role": "user", "content": "' + b"a" * 4096
        )
        assert _read_status(s) == 413 and time.monotonic() - t0 < 2
    # 2. A chunked upload with no length: refused as it crosses the limit, not after 100 MB.
    done: list[float] = []

    def chunked() -> None:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
            s.sendall(
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n"
            )
            piece = b"a" * (1024 * 1024)
            frame = f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
            try:
                for _ in range(100):
                    s.sendall(frame)
            except OSError:
                pass  # the server answered and closed: exactly what should happen
            done.append(time.monotonic())

    t0 = time.monotonic()
    th = threading.Thread(target=chunked)
    th.start()
    th.join(30)
    assert done and done[0] - t0 < 10
    recs = records_of(server, 2)
    assert [r.status for r in recs[:2]] == [413, 413] and "larger than" in recs[1].note
    # 3. The official client gets a 413 in OpenAI's shape; the limit is a setting.
    small, _ = scripted(ANSWER, settings=ServerSettings(port=0, max_body_bytes=2048))
    with pytest.raises(openai.APIStatusError) as e:
        client(small).chat.completions.create(model="x", messages=[{"role": "user", "content": "x" * 5000}])
    assert e.value.status_code == 413 and e.value.body["code"] == "request_too_large"
    assert engine.prompts == []  # nothing was parsed, rendered or tokenized


def test_too_many_requests_at_once_get_429_with_retry_after(scripted: Make) -> None:
    server, _ = scripted(ANSWER, settings=ServerSettings(port=0, max_in_flight=2))
    turn = server.scheduler.acquire("chat")  # the chat window generates: API requests queue
    results: list[str] = []

    def ask() -> None:
        r = client(server).chat.completions.create(model="x", messages=USER)
        results.append(r.choices[0].message.content or "")

    threads = [threading.Thread(target=ask) for _ in range(2)]
    try:
        for th in threads:
            th.start()
        wait_for(lambda: server.scheduler.state.waiting.get("api", 0) == 2)
        with httpx.Client(base_url=server.base_url, timeout=10) as h:
            r = h.post("/chat/completions", json={"messages": USER})
        assert r.status_code == 429 and r.headers["retry-after"].isdigit()
        assert r.json()["error"]["type"] == "rate_limit_error"
    finally:
        server.scheduler.release(turn)
        for th in threads:
            th.join(30)
    assert results == ["fine", "fine"]
    # Once they are done, requests are welcome again.
    assert client(server).chat.completions.create(model="x", messages=USER).choices[0].message.content == "fine"


@pytest.mark.parametrize("holder", ["chat turn", "model swap"])
def test_a_request_whose_client_left_while_queued_never_runs(scripted: Make, holder: str) -> None:
    """Waiting behind the chat's turn, or behind a model being swapped (exclusive turn), a request
    whose client hangs up leaves without generating a token."""
    server, engine = scripted(ANSWER)
    release = threading.Event()
    held = threading.Event()

    def hold() -> None:
        if holder == "chat turn":
            turn = server.scheduler.acquire("chat")
            held.set()
            release.wait(20)
            server.scheduler.release(turn)
        else:
            with server.scheduler.exclusive("models"):
                held.set()
                release.wait(20)

    th = threading.Thread(target=hold)
    th.start()
    socks = []
    try:
        assert held.wait(5)
        for stream in (False, True):
            payload = json.dumps({"model": "x", "messages": USER, "stream": stream}).encode()
            s = socket.create_connection(("127.0.0.1", server.port))
            s.sendall(
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {len(payload)}\r\n\r\n".encode()
                + payload
            )
            socks.append(s)
        wait_for(lambda: server.active_requests == 2)
        time.sleep(0.2)
        for s in socks:
            s.close()
        time.sleep(0.3)
    finally:
        release.set()
        th.join(20)
    recs = records_of(server, 2)
    assert [r.note for r in recs] == ["client disconnected", "client disconnected"]
    assert all(r.completion_tokens == 0 for r in recs)
    assert engine.last_stats.generated_tokens == 0 and server.active_requests == 0


# --- malformed input: 400 naming the problem, never 500 -------------------------------------------


@pytest.mark.parametrize(
    ("literal", "param"),
    [
        ('"temperature": NaN', "temperature"),
        ('"temperature": Infinity', "temperature"),
        ('"top_p": NaN', "top_p"),
        ('"min_p": -Infinity', "min_p"),
        ('"repeat_penalty": NaN', "repeat_penalty"),
        ('"repeat_penalty": 1e999', "repeat_penalty"),
        ('"presence_penalty": NaN', "presence_penalty"),
        ('"top_k": 100000000000000000000', "top_k"),
        ('"seed": 1208925819614629174706176', "seed"),
        ('"max_tokens": 100000000000000000000', "max_tokens"),
        ('"logit_bias": {"12": NaN}', "logit_bias.12"),
        ('"logit_bias": {"-5": 1}', "logit_bias"),
    ],
)
def test_sampling_values_out_of_range_are_400_naming_the_parameter(scripted: Make, literal: str, param: str) -> None:
    server, engine = scripted(ANSWER)
    r = post_raw(server, ('{"model": "x", "messages": [{"role": "user", "content": "hi"}], ' + literal + "}").encode())
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param
    assert engine.prompts == []


def test_lone_surrogates_and_deep_nesting_are_400_not_500(scripted: Make) -> None:
    server, engine = scripted(ANSWER)
    # A lone UTF-16 surrogate cannot be encoded for the tokenizer.
    for text in ("\\ud800", "ok \\udfff then", "\\ud83d"):
        r = post_raw(server, ('{"messages": [{"role": "user", "content": "' + text + '"}]}').encode())
        assert r.status_code == 400 and r.json()["error"]["param"] == "messages[0].content", r.text
    # A proper pair is an emoji, and fine.
    r = post_raw(server, b'{"messages": [{"role": "user", "content": "\\ud83d\\ude00"}]}')
    assert r.status_code == 200
    # 100,000 levels of nesting.
    deep = b'{"messages": [{"role": "user", "content": "hi"}], "metadata": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    r = post_raw(server, deep)
    assert r.status_code == 400 and "nested" in r.json()["error"]["message"]
    # A tool schema nested 5,000 deep, and one just past the limit.
    for depth in (5000, 80):
        schema = '{"type": "object", "properties": {"a": ' * depth + '{"type": "string"}' + "}}" * depth
        tool = '{"type": "function", "function": {"name": "f", "parameters": ' + schema + "}}"
        body = '{"messages": [{"role": "user", "content": "hi"}], "tools": [' + tool + "]}"
        r = post_raw(server, body.encode())
        assert r.status_code == 400 and "nested" in r.json()["error"]["message"], (depth, r.text[:200])
    assert len(engine.prompts) == 1  # only the emoji request was generated
    assert all(rec.status < 500 for rec in server.request_log())


def test_logit_bias_outside_the_vocabulary_is_refused(srv: Any) -> None:
    server, _, _ = srv
    with pytest.raises(openai.BadRequestError) as e:
        client(server).chat.completions.create(model="x", messages=USER, max_tokens=20, logit_bias={"999999": 5})
    assert "outside the vocabulary" in e.value.body["message"]


def test_unusable_tools_are_left_out_not_refused(scripted: Make) -> None:
    server, engine = scripted(ANSWER)
    records: list[RequestRecord] = []
    server.add_log_listener(records.append)
    tools = [WEATHER_TOOL, {"type": "web_search"}, {"type": "code_interpreter", "container": {"type": "auto"}}]
    r = client(server).chat.completions.create(model="x", messages=USER, tools=tools)  # type: ignore[arg-type]
    assert r.choices[0].message.content == "fine"
    assert "type get_weather" in engine.prompts[-1] and "## browser" not in engine.prompts[-1]
