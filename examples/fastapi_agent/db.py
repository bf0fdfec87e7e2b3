"""The app's own database: conversations and their messages, in SQLite (the standard library's).

Small synchronous calls; the routes run them in a thread (``asyncio.to_thread``).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS conversations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    owner TEXT NOT NULL,
    title TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    conversation_id INTEGER NOT NULL REFERENCES conversations(id),
    role TEXT NOT NULL,               -- user | assistant
    content TEXT NOT NULL,
    generation_id TEXT UNIQUE,        -- the assistant's answer: saved once per generation
    state TEXT,                       -- done | error | cancelled
    tool_calls TEXT,                  -- JSON [{id, name, input}]
    usage TEXT,                       -- JSON {input_tokens, output_tokens}
    created_at REAL NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class StoredMessage:
    role: str
    content: str
    generation_id: str | None
    state: str | None
    tool_calls: list[dict[str, Any]]
    usage: dict[str, Any] | None

    def to_json(self) -> dict[str, Any]:
        return {
            "role": self.role,
            "content": self.content,
            "generation_id": self.generation_id,
            "state": self.state,
            "tool_calls": self.tool_calls,
            "usage": self.usage,
        }


class Database:
    def __init__(self, path: str) -> None:
        # One connection shared by the worker threads, one at a time.
        self._connection = sqlite3.connect(path, check_same_thread=False)
        self._lock = threading.Lock()
        with self._lock, self._connection:
            self._connection.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._connection.close()

    def create_conversation(self, owner: str, title: str) -> int:
        with self._lock, self._connection:
            cursor = self._connection.execute(
                "INSERT INTO conversations (owner, title, created_at) VALUES (?, ?, ?)",
                (owner, title, time.time()),
            )
            return int(cursor.lastrowid or 0)

    def owner_of(self, conversation_id: int) -> str | None:
        with self._lock:
            row = self._connection.execute(
                "SELECT owner FROM conversations WHERE id = ?", (conversation_id,)
            ).fetchone()
        return str(row[0]) if row else None

    def add_user_message(self, conversation_id: int, content: str) -> None:
        with self._lock, self._connection:
            self._connection.execute(
                "INSERT INTO messages (conversation_id, role, content, created_at) VALUES (?, 'user', ?, ?)",
                (conversation_id, content, time.time()),
            )

    def save_answer(
        self,
        conversation_id: int,
        generation_id: str,
        text: str,
        state: str,
        tool_calls: list[dict[str, Any]],
        usage: dict[str, Any] | None,
    ) -> bool:
        """Store an assistant answer; False if that generation's answer is stored already."""
        with self._lock, self._connection:
            cursor = self._connection.execute(
                "INSERT OR IGNORE INTO messages (conversation_id, role, content, generation_id, state, "
                "tool_calls, usage, created_at) VALUES (?, 'assistant', ?, ?, ?, ?, ?, ?)",
                (
                    conversation_id,
                    text,
                    generation_id,
                    state,
                    json.dumps(tool_calls),
                    json.dumps(usage) if usage is not None else None,
                    time.time(),
                ),
            )
            return cursor.rowcount == 1

    def messages(self, conversation_id: int) -> list[StoredMessage]:
        with self._lock:
            rows = self._connection.execute(
                "SELECT role, content, generation_id, state, tool_calls, usage FROM messages "
                "WHERE conversation_id = ? ORDER BY id",
                (conversation_id,),
            ).fetchall()
        return [
            StoredMessage(
                role=row[0],
                content=row[1],
                generation_id=row[2],
                state=row[3],
                tool_calls=json.loads(row[4]) if row[4] else [],
                usage=json.loads(row[5]) if row[5] else None,
            )
            for row in rows
        ]
