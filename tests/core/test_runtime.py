"""The runtime without a window: one engine owner, loading (checked, planned, remembered), settings, sessions, tools."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.core.chat import TurnFinished
from app.core.engine import EngineError, LoadSettings
from app.core.hardware import HardwareProfile
from app.core.runtime import (
    EngineStartError,
    LoadDone,
    LoadPlanned,
    LoadProgress,
    ModelPathError,
    Runtime,
    is_model_file,
)
from app.core.scripted_engine import ScriptedEngine
from app.core.store import Store

ANSWER = "<|channel|>analysis<|message|>Hm.<|end|><|start|>assistant<|channel|>final<|message|>Hello!<|return|>"


def _cpu() -> HardwareProfile:
    return HardwareProfile(
        ram_total=16 * 2**30,
        ram_available=12 * 2**30,
        cores_physical=2,
        cores_logical=2,
        os="Linux",
        machine="x86_64",
        cpu_name="test CPU",
        backends=["CPU"],
    )


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[Runtime]:
    engine = ScriptedEngine([ANSWER])
    rt = Runtime(store=Store.open(tmp_path / "c.sqlite3"), engine_factory=lambda: engine, offline=True)
    yield rt
    rt.close()
    rt.store.close()


def _run(rt: Runtime, path: str | Path, **kw: object) -> list[object]:
    request = rt.prepare_load(path, **kw)  # type: ignore[arg-type]
    return list(rt.load_job(request, cancel=threading.Event()))


def test_bad_paths_and_a_broken_engine_are_refused_at_once(tmp_path: Path) -> None:
    def broken() -> ScriptedEngine:
        raise ImportError("No module named 'llama_cpp'")

    rt = Runtime(store=Store.open(tmp_path / "c.sqlite3"), engine_factory=broken)
    txt = tmp_path / "notes.txt"
    txt.write_text("x")
    with pytest.raises(ModelPathError, match="not a GGUF"):
        rt.prepare_load(txt)
    with pytest.raises(ModelPathError, match="does not exist"):
        rt.prepare_load(tmp_path / "missing.gguf")
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF")
    with pytest.raises(EngineStartError, match="llama_cpp"):
        rt.prepare_load(model)
    assert rt.engine is None


def test_a_load_hands_the_engine_to_the_scheduler_and_remembers_the_file(runtime: Runtime, tmp_path: Path) -> None:
    model = tmp_path / "my-model.gguf"
    model.write_bytes(b"GGUF")
    runtime.load_settings = LoadSettings(n_ctx=4096)
    assert runtime.engine is None and not runtime.model_loaded
    events = _run(runtime, model, context_size=2048)
    assert isinstance(events[-1], LoadDone) and any(isinstance(e, LoadProgress) for e in events)
    assert runtime.engine is runtime.scheduler.engine and runtime.model_loaded
    assert runtime.model_name == "my-model" and runtime.n_ctx == 2048  # the chat's context size wins
    assert runtime.settings.load.last_model == str(model) and runtime.model_file() == str(model)
    again = Runtime(store=runtime.store)  # the next start
    assert again.settings.load.last_model == str(model)
    assert runtime.active_plan is None  # explicit settings: no plan


def test_a_scripted_model_is_not_remembered(runtime: Runtime) -> None:
    runtime.load_settings = LoadSettings()
    _run(runtime, "scripted:gpt-oss-20b")
    assert runtime.model_loaded and runtime.settings.load.last_model is None
    assert not is_model_file("scripted:x") and is_model_file("/m/x.gguf")


def test_the_planner_decides_and_refuses_what_cannot_fit(runtime: Runtime, tiny_model_path: Path) -> None:
    runtime.profile = _cpu()
    events = _run(runtime, tiny_model_path)
    planned = [e for e in events if isinstance(e, LoadPlanned)]
    assert planned and runtime.plan is planned[0].plan and runtime.active_plan is runtime.plan
    assert runtime.plan.fits and runtime.plan.mode == "cpu"
    runtime.profile = HardwareProfile(
        ram_total=64 * 2**20,
        ram_available=8 * 2**20,
        cores_physical=1,
        cores_logical=1,
        os="Linux",
        machine="x86_64",
        cpu_name="tiny",
        backends=["CPU"],
    )
    with pytest.raises(EngineError, match="What would help"):
        _run(runtime, tiny_model_path)


def test_load_overrides_are_kept_and_read_back(runtime: Runtime) -> None:
    from app.core.planner import Wishes

    assert not runtime.save_wishes(Wishes(n_ctx=8192))  # only a context size: the planner still decides
    assert runtime.save_wishes(Wishes(n_gpu_layers=4, flash_attn=False))
    w = runtime.wishes(16384)
    assert (w.n_gpu_layers, w.flash_attn, w.n_ctx) == (4, False, 16384)
    runtime.settings.load.overrides = {"n_gpu_layers": 2, "from_the_future": 1}
    assert runtime.wishes().n_gpu_layers == 2  # the unknown key is left out, with a note in the log


def test_the_effort_has_one_source_of_truth(runtime: Runtime) -> None:
    session = runtime.new_session()
    assert session.settings.reasoning_effort == "medium"
    runtime.set_effort(session, "high")  # the composer's slider
    assert session.settings.reasoning_effort == "high" and runtime.settings.chat.reasoning_effort == "high"
    assert runtime.new_session().settings.reasoning_effort == "high"  # new chats start with it
    cid = session.ensure()
    assert runtime.new_session(cid).settings.reasoning_effort == "high"  # stored with the chat
    assert Runtime(store=runtime.store).settings.chat.reasoning_effort == "high"


def test_answers_go_through_the_scheduler_without_tools_when_off(runtime: Runtime) -> None:
    runtime.load_settings = LoadSettings()
    _run(runtime, "scripted:gpt-oss-20b")
    runtime.settings.tools.enabled = False
    session = runtime.new_session()
    session.add_user("hi")
    events = list(runtime.answer_job(session, cancel=threading.Event()))
    assert isinstance([e for e in events if isinstance(e, TurnFinished)][-1], TurnFinished)
    assert session.view()[-1][0].content == "Hello!"
    assert not runtime.tools_built  # no tool registry was needed
    assert runtime.lab_client() is not None and runtime.lab_client().name == "lab"  # type: ignore[union-attr]


def test_server_settings_round_trip(runtime: Runtime) -> None:
    from app.core.server import ServerSettings

    assert runtime.server_settings() == ServerSettings()
    runtime.save_server_settings(ServerSettings(port=0, api_key="sk-x", allow_network=True))
    runtime.set_server_enabled(True)
    back = Runtime(store=runtime.store)
    assert back.server_settings() == ServerSettings(port=0, api_key="sk-x", allow_network=True)
    assert back.settings.server.enabled


def test_an_unusable_store_gives_a_temporary_one_and_a_note(monkeypatch: pytest.MonkeyPatch) -> None:
    from app.core.store import StoreError

    def refuse(*_a: object, **_k: object) -> object:
        raise StoreError("The conversation database cannot be opened.")

    monkeypatch.setattr(Store, "open_or_recover", refuse)
    rt = Runtime()
    try:
        problem = rt.store.problem  # the window shows it as a lasting notice with Try again
        assert problem is not None and rt.store.temporary
        assert "kept only until Harmonica closes" in problem.message
        assert rt.store.create_conversation().id  # usable
    finally:
        rt.close()


def test_tool_files_survive_a_start_without_the_real_database() -> None:
    """A temporary store (the database path is unusable) lists none of the user's chats: their
    python-tool folders are not a deleted chat's leftovers and must not be swept away."""
    from app.core import paths
    from app.core.store import default_store_path

    real = Store.open()
    try:
        uid = real.create_conversation("has tool files").uid
    finally:
        real.close()
    folder = paths.scratch_root() / uid
    folder.mkdir(parents=True)
    (folder / "results.csv").write_text("a,b\n1,2\n")
    db = default_store_path()
    moved = db.with_name(db.name + ".away")
    db.rename(moved)
    db.mkdir()  # a folder where the database should be: the app starts on a temporary store
    try:
        rt = Runtime()
        assert rt.store.temporary
        rt.close()
        assert (folder / "results.csv").exists()
    finally:
        db.rmdir()
        moved.rename(db)
    rt = Runtime()  # the real database again: the chat is live, its files stay
    rt.close()
    assert (folder / "results.csv").exists()


def test_api_clients_get_the_browser_only_when_the_user_allows_it_and_browsing_is_on() -> None:
    rt = Runtime(offline=False)
    try:
        rt.tool_registry.set_enabled("browser", True)
        assert rt.api_browser_factory() is None  # the panel's switch is off by default
        rt.settings.server.web_search = True
        factory = rt.api_browser_factory()
        assert factory is not None
        session = factory()
        try:
            assert type(session).__name__ == "BrowserSession"
        finally:
            session.close()
        rt.tool_registry.set_enabled("browser", False)
        assert rt.api_browser_factory() is None  # web browsing off
        rt.tool_registry.set_enabled("browser", True)
        rt.settings.tools.enabled = False
        assert rt.api_browser_factory() is None  # tools off
    finally:
        rt.close()
    offline = Runtime(offline=True)
    try:
        offline.settings.server.web_search = True
        offline.tool_registry.set_enabled("browser", True)
        assert offline.api_browser_factory() is None  # offline mode: never
    finally:
        offline.close()


def test_a_chat_remembers_where_it_ran_and_presets_and_imports_do_not_carry_it(
    runtime: Runtime, tmp_path: Path
) -> None:
    import json

    from app.core.export import export_json, import_json
    from app.core.runtime import RanOn

    model = tmp_path / "first.gguf"
    model.write_bytes(b"GGUF")
    runtime.load_settings = LoadSettings()
    _run(runtime, model)
    ref = runtime.engine_ref()
    assert ref == f"file:{model}"
    session = runtime.new_session()
    session.add_user("hi")
    list(runtime.answer_job(session, cancel=threading.Event()))
    cid = session.conversation_id
    assert cid is not None and runtime.store.conversation_settings(cid).runs_on == ref
    assert runtime.resolve_ref(ref) == RanOn("first.gguf", path=str(model))
    # A preset is about sampling, not about where a chat ran: it neither keeps nor overwrites it.
    runtime.store.save_preset("p", runtime.store.conversation_settings(cid))
    preset = runtime.store.get_preset("p")
    assert preset is not None and preset.settings.runs_on == ""
    assert runtime.store.apply_preset(cid, "p").runs_on == ref
    assert runtime.store.conversation_settings(cid).runs_on == ref
    # An imported chat names another computer's files and connections: it is not kept.
    document = export_json(runtime.store, [cid])
    assert document["conversations"][0]["settings"]["runs_on"] == ref  # a backup keeps it…
    imported = import_json(runtime.store, document)
    assert imported and all(runtime.store.conversation_settings(i).runs_on == "" for i in imported)  # …an import not
    # A connection's model, while the connection exists.
    conn = runtime.connections.save_server("studio-pc", "http://127.0.0.1:9/v1", model="m")
    remote = "remote:" + json.dumps([conn.id, "gpt-oss-120b"])
    assert runtime.resolve_ref(remote) == RanOn(
        "gpt-oss-120b on studio-pc", connection_id=conn.id, model="gpt-oss-120b"
    )
    runtime.connections.remove_server(conn.id)
    assert runtime.resolve_ref(remote) is None
    model.unlink()
    assert runtime.resolve_ref(ref) is None  # the file is gone
    junk = ["", "file:", "file:/etc/passwd", "remote:not json", "remote:[1]", "remote:{}", "other:x", "remote"]
    assert [runtime.resolve_ref(j) for j in junk] == [None] * len(junk)
