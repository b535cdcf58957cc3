"""The namespaced key-value memory on SQLite (claude-flow semantics: `ml-expert/metrics` is one key).

`MemoryStore` opens (and migrates) `<workspace>/.ml-expert/memory.db` in WAL mode with a busy
timeout, so several processes — server instances of a swarm, training workers, a person at the
CLI — can read and write the same file at once without losing a write.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field
from sqlite_utils import Database

from ml_expert.memory.migrations import migrations
from ml_expert.tools.errors import InvalidInputError, NotFoundError

DEFAULT_NAMESPACE = "default"
MAX_NAME_CHARS = 1024
DEFAULT_MAX_VALUE_BYTES = 1024 * 1024
BUSY_TIMEOUT_MS = 30_000
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class MemoryEntry(BaseModel):
    """One stored entry and its bookkeeping."""

    namespace: str
    key: str
    value: Any = Field(description="The stored JSON value, exactly as it was stored.")
    tags: list[str] = Field(default_factory=list)
    created_at: float
    updated_at: float
    accessed_at: float | None = None
    access_count: int = 0
    expires_at: float | None = Field(None, description="Unix time after which the entry is gone; null = never.")


class MemoryPage(BaseModel):
    """A page of entries with the total count that matched."""

    entries: list[MemoryEntry]
    total: int = Field(description="How many entries matched in all (before limit/offset).")
    limit: int
    offset: int


class SearchHit(BaseModel):
    entry: MemoryEntry
    score: float = Field(description="Relevance (higher is better; FTS5 bm25 negated).")


class MemoryStats(BaseModel):
    entries: int
    namespaces: dict[str, int] = Field(description="Entries per namespace.")
    value_bytes: int = Field(description="Total size of the stored JSON values.")
    file_bytes: int = Field(description="Size of the SQLite file (main file only).")
    path: str


def check_name(what: str, name: str) -> str:
    """Validate a key or namespace: non-empty, at most 1024 characters, no control characters."""
    if not isinstance(name, str) or not name:
        raise InvalidInputError(f"{what} must be a non-empty string; received {name!r}. Pass e.g. 'ml-expert/metrics'.")
    if len(name) > MAX_NAME_CHARS:
        raise InvalidInputError(
            f"{what} must be at most {MAX_NAME_CHARS} characters; received {len(name)}. Use a shorter {what}."
        )
    if _CONTROL.search(name):
        raise InvalidInputError(
            f"{what} must not contain control characters (newline, tab, NUL…); received {name!r}. Remove them."
        )
    return name


def fts_query(text: str) -> str:
    """Turn free text into a safe FTS5 query: every word quoted, all words required."""
    words = [w for w in re.split(r"\s+", text.strip()) if w]
    if not words:
        raise InvalidInputError("Search query must contain at least one word; received an empty query.")
    return " ".join('"' + w.replace('"', '""') + '"' for w in words)


class MemoryStore:
    """A namespaced JSON key-value store in one SQLite file, safe across processes."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.max_value_bytes = max_value_bytes
        self.clock = clock
        self._lock = threading.RLock()
        conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, check_same_thread=False, isolation_level=None)
        self.db = Database(conn)
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        self._migrate()
        conn.execute("PRAGMA synchronous = NORMAL")

    def _migrate(self) -> None:
        # Migrations from two processes at once would clash: serialise them with a file lock.
        with open(self.path.with_name(self.path.name + ".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                if self.db.conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                    self.db.conn.execute("PRAGMA journal_mode = WAL")
                if migrations.pending(self.db):
                    migrations.apply(self.db)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def close(self) -> None:
        with self._lock:
            self.db.conn.close()

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction that takes the write lock up front (BEGIN IMMEDIATE).

        Taking it at the start means SQLite's busy timeout applies, instead of the instant
        'database is locked' a deferred transaction gets when it upgrades from read to write.
        """
        with self._lock:
            conn = self.db.conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def query(self, sql: str, params: Iterable[Any] = ()) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.db.query(sql, list(params)))

    # -- entries ---------------------------------------------------------------------------

    def _row_to_entry(self, row: dict[str, Any]) -> MemoryEntry:
        return MemoryEntry(
            namespace=row["namespace"],
            key=row["key"],
            value=json.loads(row["value"]),
            tags=json.loads(row["tags"] or "[]"),
            created_at=row["created_at"],
            updated_at=row["updated_at"],
            accessed_at=row["accessed_at"],
            access_count=row["access_count"] or 0,
            expires_at=row["expires_at"],
        )

    def _alive(self, alias: str = "") -> tuple[str, float]:
        prefix = f"{alias}." if alias else ""
        return f"({prefix}expires_at IS NULL OR {prefix}expires_at > ?)", self.clock()

    def store(
        self,
        key: str,
        value: Any,
        *,
        namespace: str = DEFAULT_NAMESPACE,
        ttl: float | None = None,
        tags: list[str] | None = None,
    ) -> MemoryEntry:
        """Insert or replace the value under (namespace, key); keeps created_at of an existing entry."""
        check_name("key", key)
        check_name("namespace", namespace)
        if ttl is not None and ttl <= 0:
            raise InvalidInputError(
                f"ttl must be a positive number of seconds; received {ttl}. Omit it to keep forever."
            )
        try:
            text = json.dumps(value, ensure_ascii=False, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise InvalidInputError(
                f"value must be JSON (object, list, string, number, true/false, null); {exc}. Convert it first."
            ) from exc
        size = len(text.encode())
        if size > self.max_value_bytes:
            raise InvalidInputError(
                f"value is {size} bytes serialized; the limit is {self.max_value_bytes}. "
                "Store a summary or a file path instead of the data itself."
            )
        tag_list = [str(t) for t in (tags or [])]
        now = self.clock()
        expires = now + ttl if ttl is not None else None
        with self.write() as conn:
            conn.execute("DELETE FROM memory WHERE expires_at IS NOT NULL AND expires_at <= ?", (now,))
            conn.execute(
                """INSERT INTO memory (namespace, key, value, tags, created_at, updated_at, access_count, expires_at)
                   VALUES (?, ?, ?, ?, ?, ?, 0, ?)
                   ON CONFLICT(namespace, key) DO UPDATE SET value = excluded.value, tags = excluded.tags,
                     updated_at = excluded.updated_at, expires_at = excluded.expires_at""",
                (namespace, key, text, json.dumps(tag_list), now, now, expires),
            )
            row = conn.execute(
                "SELECT created_at, access_count, accessed_at FROM memory WHERE namespace = ? AND key = ?",
                (namespace, key),
            ).fetchone()
        return MemoryEntry(
            namespace=namespace,
            key=key,
            value=json.loads(text),
            tags=tag_list,
            created_at=row[0],
            updated_at=now,
            access_count=row[1] or 0,
            accessed_at=row[2],
            expires_at=expires,
        )

    def retrieve(self, key: str, *, namespace: str = DEFAULT_NAMESPACE) -> MemoryEntry:
        """Return the entry; raise NotFoundError when it is missing or expired."""
        check_name("key", key)
        check_name("namespace", namespace)
        alive, now = self._alive()
        with self.write() as conn:
            cur = conn.execute(
                f"""UPDATE memory SET access_count = access_count + 1, accessed_at = ?
                    WHERE namespace = ? AND key = ? AND {alive}
                    RETURNING namespace, key, value, tags, created_at, updated_at, accessed_at,
                              access_count, expires_at""",
                (now, namespace, key, now),
            )
            cols = [c[0] for c in cur.description]
            row = cur.fetchone()
        if row is None:
            raise NotFoundError(self._not_found_message(key, namespace))
        return self._row_to_entry(dict(zip(cols, row, strict=True)))

    def _not_found_message(self, key: str, namespace: str) -> str:
        alive, now = self._alive()
        near = self.query(
            f"SELECT key FROM memory WHERE namespace = ? AND {alive} AND key LIKE ? ORDER BY key LIMIT 5",
            (namespace, now, key.split("/")[0] + "%"),
        )
        hint = f" Keys with the same prefix: {[r['key'] for r in near]}." if near else ""
        return (
            f"No memory entry with key {key!r} in namespace {namespace!r} (missing or expired).{hint} "
            "Call memory_list to see the stored keys, or check the namespace."
        )

    def get_value(self, key: str, *, namespace: str = DEFAULT_NAMESPACE, default: Any = None) -> Any:
        """The value under key, or default when missing; does not count as an access."""
        alive, now = self._alive()
        rows = self.query(
            f"SELECT value FROM memory WHERE namespace = ? AND key = ? AND {alive}", (namespace, key, now)
        )
        return json.loads(rows[0]["value"]) if rows else default

    def list(
        self,
        *,
        namespace: str | None = DEFAULT_NAMESPACE,
        prefix: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> MemoryPage:
        """Entries ordered by namespace and key; namespace=None lists every namespace."""
        if limit < 1 or offset < 0:
            raise InvalidInputError(f"limit must be >= 1 and offset >= 0; received limit={limit}, offset={offset}.")
        alive, now = self._alive()
        where, params = [alive], [now]
        if namespace is not None:
            where.append("namespace = ?")
            params.append(check_name("namespace", namespace))
        if prefix:
            where.append("substr(key, 1, ?) = ?")
            params += [len(prefix), prefix]
        clause = " AND ".join(where)
        total = self.query(f"SELECT count(*) AS n FROM memory WHERE {clause}", params)[0]["n"]
        rows = self.query(
            f"SELECT * FROM memory WHERE {clause} ORDER BY namespace, key LIMIT ? OFFSET ?", [*params, limit, offset]
        )
        return MemoryPage(entries=[self._row_to_entry(r) for r in rows], total=total, limit=limit, offset=offset)

    def search(self, query: str, *, namespace: str | None = DEFAULT_NAMESPACE, limit: int = 10) -> list[SearchHit]:
        """Full-text search over keys, values and tags, best match first."""
        if limit < 1:
            raise InvalidInputError(f"limit must be >= 1; received {limit}.")
        alive, now = self._alive("m")
        where, params = ["memory_fts MATCH ?", alive], [fts_query(query), now]
        if namespace is not None:
            where.append("m.namespace = ?")
            params.append(check_name("namespace", namespace))
        rows = self.query(
            f"""SELECT m.*, bm25(memory_fts) AS rank FROM memory_fts JOIN memory m ON m.rowid = memory_fts.rowid
                WHERE {" AND ".join(where)} ORDER BY rank LIMIT ?""",
            [*params, limit],
        )
        return [SearchHit(entry=self._row_to_entry(r), score=-float(r["rank"])) for r in rows]

    def delete(self, key: str, *, namespace: str = DEFAULT_NAMESPACE) -> bool:
        """Delete the entry; True when something was deleted."""
        check_name("key", key)
        check_name("namespace", namespace)
        with self.write() as conn:
            cur = conn.execute("DELETE FROM memory WHERE namespace = ? AND key = ?", (namespace, key))
        return cur.rowcount > 0

    def purge_expired(self) -> int:
        with self.write() as conn:
            cur = conn.execute("DELETE FROM memory WHERE expires_at IS NOT NULL AND expires_at <= ?", (self.clock(),))
        return cur.rowcount

    def stats(self) -> MemoryStats:
        self.purge_expired()
        rows = self.query(
            "SELECT namespace, count(*) AS n, sum(length(CAST(value AS BLOB))) AS b FROM memory GROUP BY namespace"
        )
        return MemoryStats(
            entries=sum(r["n"] for r in rows),
            namespaces={r["namespace"]: r["n"] for r in rows},
            value_bytes=sum(r["b"] or 0 for r in rows),
            file_bytes=self.path.stat().st_size,
            path=str(self.path),
        )

    # -- moving memory between workspaces ---------------------------------------------------

    def export_entries(self, *, namespace: str | None = None) -> Iterator[dict[str, Any]]:
        """Every live entry as a JSON-ready dict (for JSON lines)."""
        offset = 0
        while True:
            page = self.list(namespace=namespace, limit=500, offset=offset)
            yield from (e.model_dump() for e in page.entries)
            offset += len(page.entries)
            if offset >= page.total or not page.entries:
                return

    def import_entries(self, records: Iterable[dict[str, Any]]) -> int:
        """Upsert exported records; keeps their tags and remaining TTL. Returns how many were written."""
        count = 0
        now = self.clock()
        for i, rec in enumerate(records, 1):
            if not isinstance(rec, dict) or "key" not in rec or "value" not in rec:
                raise InvalidInputError(
                    f"Record {i} must be an object with at least 'key' and 'value' (as written by memory export); "
                    f"received {str(rec)[:200]}."
                )
            expires = rec.get("expires_at")
            if expires is not None and expires <= now:
                continue
            self.store(
                rec["key"],
                rec["value"],
                namespace=rec.get("namespace") or DEFAULT_NAMESPACE,
                tags=rec.get("tags") or [],
                ttl=None if expires is None else expires - now,
            )
            count += 1
        return count
