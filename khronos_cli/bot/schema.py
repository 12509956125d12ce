"""The store's schema: its numbered migrations (recorded in SQLite's ``PRAGMA user_version``)
the statements that write rows, the rows the store hands out, and how an update's payload is
kept."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

import orjson

__all__ = [
    "INSERT_OUTBOX",
    "INSERT_UPDATE",
    "MIGRATIONS",
    "OUTBOX_COLUMNS",
    "SCHEMA_VERSION",
    "OutboxMessage",
    "PendingUpdate",
    "Turn",
    "encode_payload",
    "message_text",
]

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (  # v1: the journal, the outbox and the conversation turns
        """CREATE TABLE updates (
            update_id INTEGER PRIMARY KEY, chat_id INTEGER NOT NULL, payload TEXT NOT NULL,
            state TEXT NOT NULL CHECK (state IN ('journaled', 'answered', 'done')),
            journaled_at REAL NOT NULL, answered_at REAL, done_at REAL)""",
        "CREATE INDEX updates_by_state ON updates (state, update_id)",
        """CREATE TABLE outbox (
            id INTEGER PRIMARY KEY AUTOINCREMENT, chat_id INTEGER NOT NULL, text TEXT NOT NULL,
            reply_to_message_id INTEGER, update_id INTEGER UNIQUE, source TEXT NOT NULL,
            state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'sent', 'failed')),
            attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT, telegram_message_id INTEGER,
            created_at REAL NOT NULL, finished_at REAL)""",
        "CREATE INDEX outbox_by_state ON outbox (state, id)",
        """CREATE TABLE turns (
            id INTEGER PRIMARY KEY AUTOINCREMENT, chat_id INTEGER NOT NULL,
            role TEXT NOT NULL CHECK (role IN ('user', 'assistant')), text TEXT NOT NULL,
            update_id INTEGER, created_at REAL NOT NULL)""",
        "CREATE INDEX turns_by_chat ON turns (chat_id, id)",
    ),
    (  # v2: a reply may be several messages (parts); turns pruned by age
        """CREATE TABLE outbox_v2 (
            id INTEGER PRIMARY KEY AUTOINCREMENT, chat_id INTEGER NOT NULL, text TEXT NOT NULL,
            reply_to_message_id INTEGER, update_id INTEGER, part INTEGER NOT NULL DEFAULT 0,
            source TEXT NOT NULL,
            state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'sent', 'failed')),
            attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT, telegram_message_id INTEGER,
            created_at REAL NOT NULL, finished_at REAL, UNIQUE (update_id, part))""",
        """INSERT INTO outbox_v2 (id, chat_id, text, reply_to_message_id, update_id, source,
            state, attempts, last_error, telegram_message_id, created_at, finished_at)
            SELECT id, chat_id, text, reply_to_message_id, update_id, source, state, attempts,
            last_error, telegram_message_id, created_at, finished_at FROM outbox""",
        "DROP TABLE outbox",
        "ALTER TABLE outbox_v2 RENAME TO outbox",
        "CREATE INDEX outbox_by_state ON outbox (state, id)",
        "CREATE INDEX turns_by_time ON turns (created_at)",
    ),
    (  # v3: the journal's own id, which names this journal's claims among replicas
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        "INSERT INTO meta (key, value) VALUES ('journal_id', lower(hex(randomblob(16))))",
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)

_stdlib_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
INSERT_UPDATE = (
    "INSERT INTO updates (update_id, chat_id, payload, state, journaled_at)"
    " VALUES (?, ?, ?, 'journaled', ?) ON CONFLICT (update_id) DO NOTHING"
)
INSERT_OUTBOX = (
    "INSERT INTO outbox (chat_id, text, reply_to_message_id, update_id, part, source, created_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?)"
)
OUTBOX_COLUMNS = (
    "id, chat_id, text, reply_to_message_id, update_id, source, attempts, last_error, created_at,"
    " part"
)


@dataclass(frozen=True)
class PendingUpdate:
    """A journaled update that has no committed answer yet."""

    update_id: int
    chat_id: int
    payload: dict[str, Any]
    journaled_at: float


@dataclass(frozen=True)
class OutboxMessage:
    """A message waiting to be sent to Telegram (a reply, or one queued by ``POST /messages``)."""

    id: int
    chat_id: int
    text: str
    reply_to_message_id: int | None
    update_id: int | None
    source: str
    attempts: int
    last_error: str | None
    created_at: float
    part: int = 0  # a long reply's parts go out in order; only part 0 replies to the user


@dataclass(frozen=True)
class Turn:
    """One line of a conversation, for the LLM prompt."""

    role: Literal["user", "assistant"]
    text: str
    created_at: float


def message_text(payload: dict[str, Any]) -> str | None:
    """The text (or caption) of a Telegram update's message, or of a bare message payload."""
    for key in ("message", "edited_message", "channel_post", "business_message"):
        if isinstance(payload.get(key), dict):
            payload = payload[key]
            break
    for key in ("text", "caption"):
        if isinstance(payload.get(key), str) and payload[key]:
            return str(payload[key])
    return None


def encode_payload(payload: dict[str, Any]) -> str:
    """An update as compact JSON text: by orjson, or by the stdlib encoder for what orjson
    refuses (an integer beyond 64 bits), so whatever was journaled before still is."""
    try:
        return orjson.dumps(payload).decode()
    except orjson.JSONEncodeError:
        return _stdlib_encode(payload)
