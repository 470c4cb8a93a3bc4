"""Checks on every name a server or a state file gives: repo ids, file names, revisions, ETags, commits, URLs."""

from __future__ import annotations

import os
import re
from pathlib import Path

from app.core.download.errors import DownloadError, ErrorKind

_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
# What the Hub sends, and so the only forms that may become names in the cache: an ETag is the
# file's sha256 (LFS) or its git blob sha1; a commit is a sha1.
_ETAG_RE = re.compile(r"^(?:[0-9a-fA-F]{40}|[0-9a-fA-F]{64})$")
_COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
_REPO_PART_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
# Names Windows gives to devices in every folder ("nul.txt" too), whatever the extension.
_WINDOWS_DEVICES = frozenset(
    {"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"}
    | {f"{port}{n}" for port in ("COM", "LPT") for n in [*"123456789", "\u00b9", "\u00b2", "\u00b3"]}
)


def _unsafe_part(part: str) -> str | None:
    """Why `part` may not be one component of a path in the cache, or None if it may."""
    if not part or part in (".", ".."):
        return "an empty, '.' or '..' component"
    if any(ord(ch) < 32 or ch in '\\/:*?"<>|' for ch in part):
        return "a separator, drive letter, control or wildcard character"
    if part != part.rstrip(". "):
        return "a trailing dot or space (Windows drops them)"
    if part.split(".", 1)[0].rstrip(" ").upper() in _WINDOWS_DEVICES:
        return "a Windows device name"
    if len(part.encode("utf-8", "surrogatepass")) > 255:
        return "a component longer than 255 bytes"
    return None


def check_relative_name(name: str, what: str) -> str:
    """`name` (a repo file name or a revision) as a relative path of safe components, else ValueError.

    Slashes separate folders (a repo may keep files in folders, a revision may be `refs/pr/1`);
    everything that could leave the folder it is joined to, or name a device, is refused on every OS.
    """
    if not isinstance(name, str) or not name or len(name) > 1000 or name.startswith("/"):
        raise ValueError(f"{what} {name!r} is not a relative name")
    for part in name.split("/"):
        problem = _unsafe_part(part)
        if problem is not None:
            raise ValueError(f"{what} {name!r} contains {problem}")
    return name


def check_repo_id(repo_id: str) -> str:
    """`owner/name` as the Hub spells repository ids, else ValueError."""
    parts = repo_id.split("/") if isinstance(repo_id, str) else []
    if len(parts) != 2 or not all(_REPO_PART_RE.match(p) and ".." not in p for p in parts):
        raise ValueError(f"{repo_id!r} is not a Hugging Face repository id (owner/name)")
    for part in parts:
        check_relative_name(part, "The repository id")
    return repo_id


def _inside(path: Path, root: Path, what: str) -> Path:
    """`path` if it stays inside `root` (compared without following links, as huggingface_hub does)."""
    real_root = Path(os.path.abspath(root))
    if real_root not in Path(os.path.abspath(path)).parents:
        raise DownloadError(
            ErrorKind.SERVER,
            f"Refused to write {what} outside the Hugging Face cache folder {root}; nothing was written there.",
        )
    return path


def _checked_etag(etag: object) -> str:
    if not isinstance(etag, str) or not _ETAG_RE.match(etag):
        raise DownloadError(
            ErrorKind.SERVER,
            f"The server gave the file an invalid ETag ({str(etag)[:80]!r}); a Hugging Face ETag is a "
            "sha256 or sha1 in hex. Nothing was written. If you use a mirror (HF_ENDPOINT), it is "
            "broken or hostile.",
        )
    return etag


def _checked_commit(commit: object) -> str:
    if not isinstance(commit, str) or not _COMMIT_RE.match(commit):
        raise DownloadError(
            ErrorKind.SERVER,
            f"The server gave an invalid commit id ({str(commit)[:80]!r}); a Hugging Face commit is a "
            "40-character sha1 in hex. Nothing was written. If you use a mirror (HF_ENDPOINT), it is "
            "broken or hostile.",
        )
    return commit


def _checked_location(url: object, filename: str) -> str:
    """The download URL the server redirects to: http(s) with a host and no credentials."""
    from urllib.parse import urlsplit

    parts = urlsplit(url) if isinstance(url, str) else None
    if (
        parts is None
        or parts.scheme not in ("http", "https")
        or not parts.hostname
        or parts.username is not None
        or any(ord(ch) < 33 for ch in str(url))
    ):
        raise DownloadError(
            ErrorKind.SERVER,
            f"The server sent {filename} to an invalid location ({str(url)[:120]!r}); only http and https "
            "addresses are followed. Nothing was downloaded.",
        )
    return str(url)


def _same_or_hub_host(url: str, target: str) -> bool:
    """Whether `target` is on the Hub (so the token may go there), as huggingface_hub decides it."""
    try:
        from huggingface_hub.utils._http import _is_same_or_hub_host

        return bool(_is_same_or_hub_host(url, target))
    except (ImportError, AttributeError):
        from urllib.parse import urlsplit

        return urlsplit(url).netloc == urlsplit(target).netloc
