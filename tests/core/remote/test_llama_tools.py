"""Against llama.cpp's own programs, built from the vendored sources (tests/fixtures/llama_tools.py): llama-server as a remote engine, rpc-server as a GPU worker.

The first test of a session builds the tools when they are not built yet (minutes on two cores;
.ci/run builds them before the tests), hence the long timeouts. They skip, saying why, only where
they cannot be built (no cmake or compiler, no sdist).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app.core import chat
from app.core.chat import Conversation, TurnFinished
from app.core.engine import Sampling
from app.core.harmony import FinalDelta
from app.core.remote.engine import RemoteEngine
from app.core.remote.probe import probe_server
from app.core.remote.rpc import probe_worker
from tests.fixtures import llama_tools
from tests.fixtures.gguf_factory import write_gpt_oss_gguf

ROOT = Path(__file__).resolve().parents[3]
BUILD_TIMEOUT = 3 * 3600


def final_grammar(answer: str) -> str:
    return (
        'root ::= <|channel|> "analysis" <|message|> [a-z ]{3,10} <|end|> <|start|> "assistant" '
        f'<|channel|> "final" <|message|> "{answer}" <|return|>'
    )


ENDLESS = 'root ::= <|channel|> "final" <|message|> more\nmore ::= [a-z ] more'


@pytest.fixture(scope="session")
def built() -> llama_tools.LlamaTools:
    result = llama_tools.tools()
    if isinstance(result, str):
        if result.startswith("building llama.cpp's tools failed"):
            pytest.fail(result)
        pytest.skip(f"llama.cpp's tools cannot be built here: {result}")
    return result


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"{url}: the process exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"{url} did not come up")


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_gpt_oss_gguf(tmp_path_factory.mktemp("tiny") / "tiny-gpt-oss.gguf", n_layer=4)


@pytest.fixture(scope="module")
def llama_server(built: llama_tools.LlamaTools, model: Path) -> Iterator[str]:
    port = _free_port()
    proc = subprocess.Popen(
        [
            str(built.server),
            "-m",
            str(model),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "-c",
            "2048",
            "-t",
            "1",
            "-np",
            "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_http(f"http://127.0.0.1:{port}/health", proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.mark.timeout(BUILD_TIMEOUT)
def test_llama_server_is_detected_and_answers_in_raw_harmony(llama_server: str) -> None:
    info = probe_server(llama_server, label="llama-box")
    assert info.kind == "llama-server" and info.models and info.models[0].n_ctx == 2048
    engine = RemoteEngine.connect("c", "llama-box", info, info.models[0].id)
    assert engine.target.raw  # the tiny model carries gpt-oss's chat template
    conv = Conversation()
    conv.add_user("Hi")
    events = list(chat.run_turn(engine, conv, grammar=final_grammar("hello there"), sampling=Sampling(seed=1)))
    msg = next(e for e in events if isinstance(e, TurnFinished)).message
    assert msg.content == "hello there" and msg.thinking
    assert msg.stats is not None and msg.stats.prompt_tokens > 20 and msg.stats.generated_tokens > 5


@pytest.mark.timeout(BUILD_TIMEOUT)
def test_stop_closes_the_stream_and_llama_server_stops(llama_server: str) -> None:
    info = probe_server(llama_server)
    engine = RemoteEngine.connect("c", "llama-box", info, info.models[0].id)
    conv = Conversation()
    conv.add_user("Go on forever")
    cancel = threading.Event()
    got = 0
    for ev in chat.run_turn(engine, conv, grammar=ENDLESS, cancel=cancel, sampling=Sampling(max_tokens=100000)):
        if isinstance(ev, FinalDelta):
            got += 1
            if got == 30:
                cancel.set()
    assert conv.messages[-1].stop_reason == "cancelled"
    # The server is free again at once: a short request is answered quickly.
    t0 = time.monotonic()
    conv2 = Conversation()
    conv2.add_user("Hi")
    list(chat.run_turn(engine, conv2, grammar=final_grammar("ok"), sampling=Sampling(seed=2)))
    assert conv2.messages[-1].content == "ok" and time.monotonic() - t0 < 30
    slots = _slots(llama_server)
    if slots is not None:
        assert not any(s.get("is_processing") for s in slots)


def _slots(url: str) -> list[dict[str, Any]] | None:
    try:
        with urllib.request.urlopen(url + "/slots", timeout=5) as r:
            data = json.loads(r.read())
    except OSError:
        return None  # /slots is off in this build
    return data if isinstance(data, list) else None


@pytest.fixture(scope="module")
def rpc_server(built: llama_tools.LlamaTools) -> Iterator[str]:
    port = _free_port()
    proc = subprocess.Popen(
        [str(built.rpc_server), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                probe_worker("127.0.0.1", port, timeout=1)
                break
            except Exception:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.mark.timeout(BUILD_TIMEOUT)
def test_rpc_worker_is_probed_without_llama_cpp(rpc_server: str) -> None:
    host, port = rpc_server.rsplit(":", 1)
    info = probe_worker(host, int(port))
    assert info.version[0] == 7 and len(info.devices) >= 1
    assert info.devices[0].memory_total > 0 and info.devices[0].endpoint == rpc_server


@pytest.mark.timeout(BUILD_TIMEOUT)
def test_a_model_split_across_the_cpu_and_an_rpc_worker_gives_the_same_tokens(
    built: llama_tools.LlamaTools, rpc_server: str, model: Path
) -> None:
    env = dict(os.environ, LLAMA_CPP_LIB_PATH=str(built.lib_dir), PYTHONPATH=str(ROOT))
    r = subprocess.run(
        [sys.executable, "-m", "tests.fixtures.rpc_split_process", str(model), rpc_server, "24"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["rpc_available"] is True
    assert len(out["single"]) == 24
    assert out["split"] == out["single"]
    assert any(k.startswith("RPC0[") for k in out["buffers"]), out["buffers"]  # weights really went to the worker
    assert out["worker_memory"][1] > 0
    # The app's own path: the planner counted the worker, placed the layers on it, and the tokens match.
    assert out["planned"] == out["single"]
    assert out["planned_devices"] == ["RPC0"]
    assert any(k.startswith("RPC0[") for k in out["planned_buffers"])
    assert any("not encrypted" in r for r in out["planned_reasons"])
