"""Fixtures of the API server tests (tests/core/test_server*.py): a server on a tiny real GGUF, scripted servers."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from app.core.engine import LoadSettings
from app.core.scheduler import EngineScheduler
from app.core.scripted_engine import ScriptedEngine
from app.core.server import ApiServer, ServerSettings, ServerTesting
from tests.core.server_support import Hook, final_grammar


@pytest.fixture(scope="module")
def real() -> Iterator[tuple[ApiServer, Any, Hook]]:
    pytest.importorskip("llama_cpp")
    import tempfile

    from app.core.engine import Engine
    from tests.fixtures.gguf_factory import write_gpt_oss_gguf

    tmp = Path(tempfile.mkdtemp(prefix="harmonica-server-"))
    engine = Engine()
    engine.load(write_gpt_oss_gguf(tmp / "tiny-gpt-oss.gguf"), LoadSettings(n_ctx=4096, n_threads=1))
    hook = Hook()
    server = ApiServer(EngineScheduler(engine), ServerSettings(port=0), testing=ServerTesting(grammar=hook))
    server.start()
    yield server, engine, hook
    server.stop()
    engine.unload()


@pytest.fixture
def srv(real: tuple[ApiServer, Any, Hook]) -> Iterator[tuple[ApiServer, Any, Hook]]:
    server, engine, hook = real
    hook.fn = lambda body: final_grammar("hello there")
    assert server.testing is not None
    server.testing.prompts.clear()
    yield server, engine, hook
    assert server.scheduler.state.running is None


@pytest.fixture
def scripted() -> Iterator[Callable[..., tuple[ApiServer, ScriptedEngine]]]:
    made: list[ApiServer] = []

    def make(*scripts: Any, settings: ServerSettings | None = None, **kw: Any) -> tuple[ApiServer, ScriptedEngine]:
        e = ScriptedEngine(list(scripts), **kw)
        e.load("scripted:gpt-oss-20b")
        s = ApiServer(EngineScheduler(e), settings or ServerSettings(port=0), testing=ServerTesting(lazy_grammar=False))
        s.start()
        made.append(s)
        return s, e

    yield make
    for s in made:
        s.stop()
