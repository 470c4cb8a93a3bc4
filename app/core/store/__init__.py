"""SQLite (WAL) persistence of conversations, branching messages, settings and presets, with search and crash recovery.

Durability: the database runs in WAL mode with ``synchronous=NORMAL``. Every commit is appended
to the write-ahead log before the call returns, so anything committed survives the app being
killed (SIGKILL, crash, force quit). Only an operating-system crash or power loss can lose the
last few commits, because NORMAL skips the fsync on each commit (the WAL is fsynced at
checkpoints); the database itself is never corrupted by that. This trade keeps a commit at tens
of microseconds, which is what lets the streaming tail be saved every half second.

Threads: one ``Store`` holds one connection opened with ``check_same_thread=False`` and guards
every public method with a re-entrant lock, so the UI thread and generation workers can share
one instance; calls are serialised (they are all short). One app instance per database file:
opening the store marks rows left "streaming" as "interrupted", which assumes no other live
process is streaming into the same file.

How the UI uses it: the sidebar pages through ``list_conversations`` (newest first) and shows
``search`` hits (``snippet_to_html`` bolds the matches); rename/delete/``restore_conversation``
(undo). The chat view shows ``active_path_with_branches`` (each message with its ‹ i/n ›) and
moves with ``navigate_sibling``. Edit-and-resend is ``edit_user_message`` then a new answer;
regenerate is ``begin_stream(parent_id=regenerate_parent(id))``; Continue is ``resume_stream``
on a row from ``interrupted_messages``. A generation is ``begin_stream`` → ``StreamSaver.feed``
per token → ``finish_stream``. ``render_messages`` turns a path into prompt messages.

Branches: messages form a tree through ``parent_id``. Each conversation remembers its active
leaf; the visible conversation is the path from the root to that leaf. Editing a user message
or regenerating an answer adds a sibling (same parent) and makes it active. Each leaf records
when it was last active (``visited``), so switching back to a branch returns to where the user
left it.

When the disk cannot be written (full, an I/O error, read-only, another Harmonica holds the file):
a failed write makes the store read-only (``problem`` says why, in words naming the place and what
to do); reading and searching go on, writes are refused at once with ``StoreUnavailableError``,
settings and the branch shown are kept in memory, and what a caller defers (``defer``: an answer
that could not be saved) is written, in order, by ``retry`` once the disk takes writes again. The app
opens its file with ``open_app``, which never fails for the disk or the path: it falls back to a
read-only view or a temporary store and says why (``health``, ``instance`` for the lock).

The package is split by job: ``rows`` (vocabulary, errors, settings, row types), ``schema``
(migrations, row decoding, checks on open), ``base`` (connection, lock, transactions),
``conversations``, ``messages`` (the tree), ``branches``, ``streaming``, ``search`` (FTS and
snippets), ``prefs`` (app settings and presets), ``convert`` (chat objects ↔ rows), ``recovery``
(salvage of a damaged file), ``health`` (what cannot be written, and why), ``instance`` (one
Harmonica per file) and ``database`` (the ``Store`` that puts them together, and how the app opens it).
Import from ``app.core.store``; the modules are its inside.
"""

from __future__ import annotations

from app.core.store.convert import (
    auto_title,
    clean_generated_title,
    message_fields,
    message_from_row,
    render_messages,
    row_to_chat_dict,
    stats_to_dict,
    tool_call_to_dict,
)
from app.core.store.database import (
    DEFAULT_PURGE_AFTER_S,
    Store,
    default_store_path,
    recover_corrupt,
)
from app.core.store.health import (
    RowRef,
    StoreProblem,
    StoreUnavailableError,
)
from app.core.store.rows import (
    ACTIVE,
    DB_FILENAME,
    DEFAULT_TITLE,
    EFFORTS,
    ROLES,
    STATUSES,
    TITLE_MAX_CHARS,
    TITLE_SOURCES,
    BranchInfo,
    ConversationRow,
    ConversationSettings,
    MessageRow,
    Preset,
    RecoveryReport,
    SearchHit,
    StoreCorruptError,
    StoreError,
)
from app.core.store.schema import (
    MIGRATIONS,
    SCHEMA_VERSION,
)
from app.core.store.search import (
    HIGHLIGHT_END,
    HIGHLIGHT_START,
    RANKED_SEARCH_MAX_MATCHES,
    SNIPPET_ELLIPSIS,
    build_fts_query,
    highlight_text,
    make_snippet,
    query_terms,
    snippet_parts,
    snippet_to_html,
    snippet_to_markdown,
)
from app.core.store.streaming import (
    StreamSaver,
)

__all__ = [
    "ACTIVE",
    "DB_FILENAME",
    "DEFAULT_PURGE_AFTER_S",
    "DEFAULT_TITLE",
    "EFFORTS",
    "HIGHLIGHT_END",
    "HIGHLIGHT_START",
    "MIGRATIONS",
    "RANKED_SEARCH_MAX_MATCHES",
    "ROLES",
    "SCHEMA_VERSION",
    "SNIPPET_ELLIPSIS",
    "STATUSES",
    "TITLE_MAX_CHARS",
    "TITLE_SOURCES",
    "BranchInfo",
    "ConversationRow",
    "ConversationSettings",
    "MessageRow",
    "Preset",
    "RecoveryReport",
    "RowRef",
    "SearchHit",
    "Store",
    "StoreCorruptError",
    "StoreError",
    "StoreProblem",
    "StoreUnavailableError",
    "StreamSaver",
    "auto_title",
    "build_fts_query",
    "clean_generated_title",
    "default_store_path",
    "highlight_text",
    "make_snippet",
    "message_fields",
    "message_from_row",
    "query_terms",
    "recover_corrupt",
    "render_messages",
    "row_to_chat_dict",
    "snippet_parts",
    "snippet_to_html",
    "snippet_to_markdown",
    "stats_to_dict",
    "tool_call_to_dict",
]
