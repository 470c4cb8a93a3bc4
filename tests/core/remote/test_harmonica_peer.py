"""A Runtime whose model is another Harmonica: its API server runs in a separate process on a real engine (tiny GGUF), over real HTTP."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app.core.chat import TurnFinished
from app.core.harmony import FinalDelta, ToolCall
from app.core.remote.connections import KeyStore
from app.core.remote.http import RemoteAuthError
from app.core.runtime import LoadDone, Runtime
from app.core.scripted_engine import ScriptedEngine
from app.core.store import Store

KEY = "sk-peer-secret-42"
ROOT = Path(__file__).resolve().parents[3]


class MemoryKeyring:
    """A keyring backend in memory (the test machine has none)."""

    name = "memory"

    def __init__(self) -> None:
        self.items: dict[tuple[str, str], str] = {}

    def set_password(self, service: str, user: str, password: str) -> None:
        self.items[(service, user)] = password

    def get_password(self, service: str, user: str) -> str | None:
        return self.items.get((service, user))

    def delete_password(self, service: str, user: str) -> None:
        self.items.pop((service, user), None)


@pytest.fixture(scope="module")
def peer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    pytest.importorskip("llama_cpp")
    folder = tmp_path_factory.mktemp("peer")
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.fixtures.harmonica_api_process", str(folder), KEY],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdin is not None
    line = proc.stdout.readline()
    assert line.startswith("PORT "), f"the peer did not start: {line!r}"
    yield f"http://127.0.0.1:{int(line.split()[1])}/v1"
    proc.stdin.close()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[Runtime]:
    rt = Runtime(store=Store.open(tmp_path / "c.sqlite3"), engine_factory=ScriptedEngine, offline=False)
    rt._connections = None
    from app.core.remote.connections import Connections

    rt._connections = Connections(rt.settings, KeyStore(MemoryKeyring()))
    yield rt
    rt.close()


def _connect(rt: Runtime, url: str, key: str = KEY) -> None:
    conn = rt.connections.save_server("peer-box", url, key=key)
    info = next(iter(rt.probe_job(conn.url, key, cancel=threading.Event())))
    assert info.kind == "harmonica" and info.models[0].n_ctx == 4096
    rt.prepare_connect(conn.id, info.models[0].id)
    events = list(rt.connect_job(conn, info.models[0].id, cancel=threading.Event()))
    assert isinstance(events[-1], LoadDone) and events[-1].info.source == "remote"


def test_chat_with_another_harmonica(peer: str, runtime: Runtime) -> None:
    _connect(runtime, peer)
    assert runtime.where_it_runs() == "runs on peer-box"
    assert runtime.remote is not None and not runtime.remote.raw  # Harmonica serves chat completions only
    session = runtime.new_session()
    session.add_user("hello friend")
    events = list(runtime.answer_job(session, cancel=threading.Event()))
    done = [e for e in events if isinstance(e, TurnFinished)][-1].message
    assert done.content == "answer hello friend"
    assert done.thinking and done.stop_reason == "return"
    rows = session.view()
    assert [r.role for r, _ in rows] == ["user", "assistant"] and rows[-1][0].status == "complete"


def test_function_tool_runs_locally_and_its_result_goes_back(peer: str, runtime: Runtime) -> None:
    from app.core.chat import Conversation, run_turn

    _connect(runtime, peer)
    tool = {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather",
            "parameters": {"type": "object", "properties": {}},
        },
    }
    conv = Conversation()
    conv.add_user("what is the weather in paris")
    engine = runtime.scheduler.client("chat")
    first = list(run_turn(engine, conv, tools=[tool]))
    calls = [e for e in first if isinstance(e, ToolCall)]
    assert [(c.recipient, json.loads(c.arguments)) for c in calls] == [("functions.get_weather", {"city": "Paris"})]
    conv.add_tool_result("functions.get_weather", "Sunny, 24 C")
    second = list(run_turn(engine, conv, tools=[tool]))
    assert [e for e in second if isinstance(e, TurnFinished)][-1].message.content == "It is sunny."


def test_stop_closes_the_stream_and_the_peer_stops(peer: str, runtime: Runtime) -> None:
    _connect(runtime, peer)
    session = runtime.new_session()
    session.add_user("endless please")
    cancel = threading.Event()
    got = 0
    for ev in runtime.answer_job(session, cancel=cancel):
        if isinstance(ev, FinalDelta):
            got += 1
            if got == 20:
                cancel.set()
    assert session.view()[-1][0].status == "interrupted"
    health = peer.removesuffix("/v1") + "/health"
    deadline = time.monotonic() + 10
    state: Any = None
    while time.monotonic() < deadline:
        req = urllib.request.Request(health, headers={"Authorization": f"Bearer {KEY}"})
        with urllib.request.urlopen(req, timeout=5) as resp:
            state = json.loads(resp.read())
        if state["queue"] == "idle":
            break
        time.sleep(0.1)
    assert state is not None and state["queue"] == "idle", f"the peer kept generating: {state}"


def test_wrong_key_is_a_clear_error(peer: str, runtime: Runtime) -> None:
    with pytest.raises(RemoteAuthError, match="refused the key") as err:
        list(runtime.probe_job(peer, "sk-wrong", cancel=threading.Event()))
    assert "sk-wrong" not in str(err.value)


def test_offline_mode_refuses_a_lan_server_unless_allowed(tmp_path: Path) -> None:
    from app.core.remote.netpolicy import NetworkPolicyError

    rt = Runtime(store=Store.open(tmp_path / "o.sqlite3"), engine_factory=ScriptedEngine, offline=True)
    try:
        conn = rt.connections.save_server("lan-box", "http://192.168.7.20:8000/v1")
        with pytest.raises(NetworkPolicyError, match="offline mode"):
            rt.prepare_connect(conn.id, "m")
        rt.connections.set_allowed_ranges("192.168.7.0/24")
        rt.prepare_connect(conn.id, "m")  # allowed now
        rt.check_network("http://127.0.0.1:9/v1")  # loopback always
        with pytest.raises(NetworkPolicyError):
            rt.check_network("http://8.8.8.8/v1")
    finally:
        rt.close()


def test_opening_a_local_model_closes_the_connection_and_is_remembered(peer: str, runtime: Runtime) -> None:
    from app.core.engine import LoadSettings

    _connect(runtime, peer)
    remote = runtime.engine
    assert runtime.last_remote() is not None
    runtime.load_settings = LoadSettings()  # a scripted model is no GGUF the planner could read
    list(runtime.load_job(runtime.prepare_load("scripted:gpt-oss-20b"), cancel=threading.Event()))
    assert runtime.remote is None and runtime.where_it_runs() is None
    assert remote is not None and not remote.loaded  # its connections were closed
    assert runtime.last_remote() is None  # the next start loads the local model again
