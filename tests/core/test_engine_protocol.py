"""Every engine and engine wrapper satisfies engine.EngineLike, checked by mypy and at run time; ModelInfo.source."""

from __future__ import annotations

import textwrap
import threading
from pathlib import Path

import pytest

from app.core.engine import Engine, EngineLike, LoadableEngine, Sampling
from app.core.lab.recorder import _Recorder
from app.core.scheduler import EngineScheduler
from app.core.scripted_engine import ScriptedEngine, is_scripted_path
from app.core.server.generation import CountingEngine

REPO = Path(__file__).resolve().parents[2]

# The static half: mypy must accept each engine where the protocol is expected. `Broken` lacks
# detokenize; its ignore comment is "unused" (an error under --warn-unused-ignores) unless mypy
# really refuses it, so the check cannot pass by checking nothing.
STATIC_CHECK = """
from __future__ import annotations

from collections.abc import Iterator, Sequence
import threading

from app.core.engine import Engine, EngineLike, GenerationStats, LoadableEngine, ModelInfo, Sampling
from app.core.lab.recorder import _Recorder
from app.core.scheduler import SchedulerClient
from app.core.scripted_engine import ScriptedEngine
from app.core.server.generation import CountingEngine


class Broken:
    info: ModelInfo | None = None
    n_ctx = 0
    loaded = False
    last_stats: GenerationStats | None = None

    def tokenize(self, text: str, *, special: bool = True) -> list[int]:
        return []

    def stream(
        self,
        prompt: str | Sequence[int],
        sampling: Sampling | None = None,
        *,
        cancel: threading.Event | None = None,
        grammar: str | None = None,
    ) -> Iterator[tuple[int, bytes]]:
        return iter([])


def check(
    e: Engine, s: ScriptedEngine, c: SchedulerClient, w: CountingEngine, r: _Recorder, b: Broken
) -> list[EngineLike]:
    owned: list[LoadableEngine] = [e, s]
    return [*owned, c, w, r, b]  # type: ignore[list-item]
"""


@pytest.mark.slow
def test_every_engine_satisfies_the_protocol_under_mypy(tmp_path: Path) -> None:
    api = pytest.importorskip("mypy.api")
    snippet = tmp_path / "engine_protocol_check.py"
    snippet.write_text(textwrap.dedent(STATIC_CHECK))
    out, err, status = api.run(
        [
            str(snippet),
            "--strict",
            "--follow-imports=silent",
            "--no-error-summary",
            "--cache-dir",
            str(REPO / ".mypy_cache"),
            "--config-file",
            str(REPO / "pyproject.toml"),
        ]
    )
    assert status == 0, out + err


def test_every_engine_satisfies_the_protocol_at_run_time() -> None:
    scripted = ScriptedEngine("<|channel|>final<|message|>hi<|return|>")
    real = Engine()
    try:
        for engine in (scripted, real):
            assert isinstance(engine, LoadableEngine) and isinstance(engine, EngineLike)
        scheduler = EngineScheduler(scripted)
        client = scheduler.client("test")
        wrappers: list[object] = [client, CountingEngine(client, None), _Recorder(client, lambda: 0.0)]
        for wrapper in wrappers:
            assert isinstance(wrapper, EngineLike)
            assert not isinstance(wrapper, LoadableEngine)  # only the scheduler's owner loads models
        assert not isinstance(object(), EngineLike)
    finally:
        real.unload()


def test_wrappers_pass_the_engine_through() -> None:
    scripted = ScriptedEngine("<|channel|>final<|message|>hello there<|return|>")
    info = scripted.load("scripted:gpt-oss-20b")
    client = EngineScheduler(scripted).client("test")
    counting = CountingEngine(client, prompts := [])
    for engine in (client, counting, _Recorder(counting, lambda: 0.0)):
        assert engine.loaded and engine.info is info and engine.n_ctx == info.n_ctx
        ids = engine.tokenize("<|start|>user<|message|>hi<|end|>")
        assert engine.detokenize(ids) == b"<|start|>user<|message|>hi<|end|>"
    pieces = b"".join(p for _, p in counting.stream(ids, Sampling(), cancel=threading.Event()))
    assert b"hello there" in pieces and counting.tokens > 0 and prompts
    assert counting.last_stats is not None and counting.last_stats.stop_reason == "return"


def test_model_info_says_where_the_model_comes_from(tmp_path: Path) -> None:
    scripted = ScriptedEngine("x")
    info = scripted.load("scripted:gpt-oss-20b")
    assert info.source == "scripted" and is_scripted_path(info.path) and info.loaded_at > 0
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF")
    info = scripted.load(gguf)
    assert info.source == "file" and info.path == gguf and not is_scripted_path(gguf)
