"""Ask a server what it is: which kind (vLLM, llama-server, Ollama, LM Studio, Harmonica), which models, their context windows."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from app.core.remote.dialects import DEFAULT_KIND, KINDS, kind_of
from app.core.remote.http import (
    HttpClient,
    RemoteError,
    RemoteProtocolError,
    RemoteUnreachable,
    normalise_base_url,
)

log = logging.getLogger(__name__)

_OWNED_BY = {"vllm": "vllm", "llamacpp": "llama-server", "harmonica": "harmonica"}
_GPT_OSS_RE = re.compile(r"gpt[-_ ]?oss", re.IGNORECASE)
MAX_MODELS = 500  # a model list longer than this is cut (a hostile server could send millions)


@dataclass(frozen=True)
class RemoteModel:
    """One model a server offers."""

    id: str
    n_ctx: int = 0  # the context window the server runs it with; 0: not known
    note: str = ""  # something the user should know (e.g. Ollama's small default context)

    @property
    def gpt_oss(self) -> bool:
        return bool(_GPT_OSS_RE.search(self.id))


@dataclass
class ServerInfo:
    """What a probe found."""

    api_url: str  # the OpenAI base ("…/v1")
    root_url: str  # the server's root (llama-server's /completion, Ollama's /api live here)
    kind: str
    models: list[RemoteModel] = field(default_factory=list)
    version: str = ""
    chat_template: str | None = None  # llama-server's, when it has one

    @property
    def kind_label(self) -> str:
        return kind_of(self.kind).label

    def model(self, model_id: str) -> RemoteModel | None:
        return next((m for m in self.models if m.id == model_id), None)


def _candidates(base: str) -> list[tuple[str, str]]:
    """(api_url, root_url) pairs to try for what the user typed."""
    if base.endswith("/v1"):
        return [(base, base[: -len("/v1")])]
    return [(base + "/v1", base), (base, base)]


def probe_server(url: str, api_key: str = "", *, kind: str | None = None, label: str = "") -> ServerInfo:
    """Check that `url` answers as an OpenAI-compatible server and read its models.

    `kind` None detects it. Raises RemoteError subclasses with a sentence for the user:
    unreachable, key refused, not an OpenAI-compatible server, no models.
    """
    base = normalise_base_url(url)
    last: RemoteError | None = None
    for api, root in _candidates(base):
        client = HttpClient(api, api_key, label=label)
        try:
            reply = client.get_json("/models")
        except RemoteUnreachable:
            raise
        except RemoteError as exc:
            last = exc
            continue
        finally:
            client.close()
        if reply.status in (401, 403):
            raise client.status_error(reply.status, _message(reply.data))
        if reply.status >= 400 or not isinstance(reply.data, Mapping) or not isinstance(reply.data.get("data"), list):
            last = RemoteProtocolError(
                f"{client.label} answered at {api}/models, but not with a list of models; is this an "
                "OpenAI-compatible server (vLLM, llama-server, Ollama, LM Studio, Harmonica)?"
            )
            continue
        cards = [c for c in reply.data["data"][:MAX_MODELS] if isinstance(c, Mapping) and isinstance(c.get("id"), str)]
        info = ServerInfo(api, root, kind if kind in KINDS else DEFAULT_KIND)
        if kind not in KINDS:
            info.kind = _detect_kind(cards, root, api_key, label)
        info.models = [RemoteModel(str(c["id"])[:200], _ctx_of(c)) for c in cards]
        _enrich(info, api_key, label)
        if not info.models:
            raise RemoteError(f"{client.label} serves no model right now. Load one on the server, then try again.")
        return info
    assert last is not None
    raise last


def _message(data: Any) -> str:
    if isinstance(data, Mapping):
        err = data.get("error", data)
        if isinstance(err, Mapping):
            return str(err.get("message") or "")
        return str(err)
    return str(data or "")


def _ctx_of(card: Mapping[str, Any]) -> int:
    for key in ("max_model_len", "context_window", "context_length", "loaded_context_length", "max_context_length"):
        v = card.get(key)
        if isinstance(v, int) and not isinstance(v, bool) and v > 0:
            return v
    meta = card.get("meta")
    if isinstance(meta, Mapping) and isinstance(meta.get("n_ctx_train"), int):
        return int(meta["n_ctx_train"])
    return 0


def _get(root: str, path: str, api_key: str, label: str) -> Any:
    """A JSON object from `root + path`, or None (probing: any failure only means "not this kind")."""
    client = HttpClient(root, api_key, label=label)
    try:
        reply = client.get_json(path, timeout=5.0)
    except RemoteError:
        return None
    finally:
        client.close()
    return reply.data if reply.status == 200 and isinstance(reply.data, Mapping) else None


def _detect_kind(cards: list[Mapping[str, Any]], root: str, api_key: str, label: str) -> str:
    owners = {str(c.get("owned_by", "")).lower() for c in cards}
    for owner, kind in _OWNED_BY.items():
        if owner in owners:
            return kind
    props = _get(root, "/props", api_key, label)
    if props is not None and ("default_generation_settings" in props or "chat_template" in props):
        return "llama-server"
    if _get(root, "/api/version", api_key, label) is not None:
        return "ollama"
    if _get(root, "/api/v0/models", api_key, label) is not None:
        return "lmstudio"
    version = _get(root, "/version", api_key, label)
    if version is not None and isinstance(version.get("version"), str):
        return "vllm"
    return DEFAULT_KIND


def _enrich(info: ServerInfo, api_key: str, label: str) -> None:
    """Context windows and templates from each kind's own endpoints (all optional)."""
    if info.kind == "llama-server":
        props = _get(info.root_url, "/props", api_key, label)
        if props is not None:
            tpl = props.get("chat_template")
            info.chat_template = tpl if isinstance(tpl, str) and tpl.strip() else None
            dgs = props.get("default_generation_settings")
            n_ctx = dgs.get("n_ctx") if isinstance(dgs, Mapping) else props.get("n_ctx")
            if isinstance(n_ctx, int) and n_ctx > 0:
                info.models = [RemoteModel(m.id, n_ctx, m.note) for m in info.models]
            build = props.get("build_info")
            info.version = str(build)[:80] if build else ""
    elif info.kind == "lmstudio":
        listing = _get(info.root_url, "/api/v0/models", api_key, label)
        rows = listing.get("data") if listing is not None else None
        if isinstance(rows, list):
            ctx = {r.get("id"): _ctx_of(r) for r in rows if isinstance(r, Mapping)}
            info.models = [RemoteModel(m.id, ctx.get(m.id) or m.n_ctx, m.note) for m in info.models]
    elif info.kind == "ollama":
        version = _get(info.root_url, "/api/version", api_key, label)
        info.version = str(version.get("version", ""))[:40] if version else ""
        info.models = [
            RemoteModel(
                m.id,
                m.n_ctx,
                "Ollama runs models with a small context window unless its OLLAMA_CONTEXT_LENGTH (or the model's "
                "num_ctx) is raised; long chats are cut without an error.",
            )
            for m in info.models
        ]
    elif info.kind == "vllm":
        version = _get(info.root_url, "/version", api_key, label)
        info.version = str(version.get("version", ""))[:40] if version else ""


def uses_raw_harmony(info: ServerInfo, model: RemoteModel) -> bool:
    """Whether answers come as raw harmony text (llama-server, vLLM with a gpt-oss model), parsed by the app itself."""
    raw = kind_of(info.kind).raw
    if raw == "llama":
        tpl = info.chat_template or ""
        return "<|channel|>" in tpl or (not tpl and model.gpt_oss)
    if raw == "openai":
        return model.gpt_oss
    return False
