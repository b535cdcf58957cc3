"""The namespaced key-value memory on SQLite (claude-flow semantics: `ml-expert/metrics` is one key).

`MemoryStore` opens (and migrates) `<workspace>/.ml-expert/memory.db` in WAL mode with a busy
timeout, so several processes — server instances of a swarm, training workers, a person at the
CLI — can read and write the same file at once without losing a write.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from pydantic import BaseModel, Field

from ml_expert.memory.database import Database
from ml_expert.memory.errors import InvalidInputError, NotFoundError

DEFAULT_NAMESPACE = "default"
MAX_NAME_CHARS = 1024
DEFAULT_MAX_VALUE_BYTES = 1024 * 1024
MAX_VALUE_DEPTH = 100  # lists and objects within each other; pydantic's serializer refuses values past ~255


def _depth(value: Any) -> int:
    """How deeply lists and objects nest in a value (a scalar: 0), without recursion; stops counting past the
    limit, so a hostile value costs no more than the limit's walk."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list | tuple) else None
        if children is None:
            continue
        deepest = max(deepest, level)
        if level > MAX_VALUE_DEPTH:
            return level
        stack.extend((child, level + 1) for child in children)
    return deepest


MAX_QUERY_WORDS = 64  # an FTS5 query's cost grows fast with its words: 5,000 words took 7.7 s, 20,000 two minutes
MAX_QUERY_BYTES = 1000
MAX_TTL_SECONDS = 10 * 365 * 24 * 3600  # ten years; longer is forever, which is what omitting ttl means
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
    truncated: bool = Field(
        False, description="True in lists and searches when the value is large: `value` is then a preview string."
    )
    value_bytes: int | None = Field(None, description="Size of the stored JSON value (set when truncated).")


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
    value_bytes: int = Field(description="Total size of the stored entries: keys, JSON values and tags.")
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
    """Turn free text into a safe FTS5 query: every word quoted, all words required; at most MAX_QUERY_WORDS words
    and MAX_QUERY_BYTES bytes, so that no query can keep the database busy for long."""
    size = len(text.encode())
    # Control characters separate words, as FTS5's tokenizer reads them; a NUL would end SQLite's query text early.
    words = [w for w in re.split(r"[\s\x00-\x1f\x7f]+", text) if w]
    if not words:
        raise InvalidInputError("Search query must contain at least one word; received an empty query.")
    if len(words) > MAX_QUERY_WORDS or size > MAX_QUERY_BYTES:
        raise InvalidInputError(
            f"Search query must have at most {MAX_QUERY_WORDS} words and {MAX_QUERY_BYTES} bytes; received "
            f"{len(words)} words, {size} bytes. Search for a few distinctive words (every word must match), or list "
            "keys by prefix with memory_list."
        )
    return " ".join('"' + w.replace('"', '""') + '"' for w in words)


class MemoryStore:
    """A namespaced JSON key-value store in one SQLite file, safe across processes."""

    def __init__(
        self,
        path: str | os.PathLike[str] | Database,
        *,
        max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.database = path if isinstance(path, Database) else Database(path)
        self.path = self.database.path
        self.max_value_bytes = max_value_bytes
        self.clock = clock
        self._write = self.database.transaction
        self.query = self.database.query

    def close(self) -> None:
        self.database.close()

    # -- entries ---------------------------------------------------------------------------

    def _row_to_entry(self, row: dict[str, Any], preview_bytes: int | None = None) -> MemoryEntry:
        text: str = row["value"]
        size = len(text.encode())
        large = preview_bytes is not None and size > preview_bytes
        value = None if large else json.loads(text)
        if not large and text.count("[") + text.count("{") > MAX_VALUE_DEPTH and _depth(value) > MAX_VALUE_DEPTH:
            # stored before the depth limit: its JSON text, which MCP clients can receive, instead of the value
            large, preview_bytes = True, size
        return MemoryEntry(
            namespace=row["namespace"],
            key=row["key"],
            value=text.encode()[:preview_bytes].decode(errors="ignore") + "…" if large else value,
            truncated=large,
            value_bytes=size if large else None,
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

    def _row(
        self, key: str, value: Any, *, namespace: str, ttl: float | None, tags: list[str] | None
    ) -> tuple[str, str, str, str]:
        """Validate one entry; (namespace, key, value JSON, tags JSON). Key, value and tags count toward the limit."""
        check_name("key", key)
        check_name("namespace", namespace)
        number = isinstance(ttl, int | float) and not isinstance(ttl, bool)
        if ttl is not None and (not number or not math.isfinite(ttl) or not 0 < ttl <= MAX_TTL_SECONDS):
            raise InvalidInputError(
                f"ttl must be a positive, finite number of seconds, at most {MAX_TTL_SECONDS} (ten years); received "
                f"{ttl!r}. Omit it to keep the entry forever."
            )
        depth = _depth(value)
        if depth > MAX_VALUE_DEPTH:
            raise InvalidInputError(
                f"value is nested more than {MAX_VALUE_DEPTH} levels deep (lists and objects within each other); "
                "deeper values cannot be sent back to MCP clients. Flatten it, or store it as a JSON string."
            )
        try:
            text = json.dumps(value, ensure_ascii=False, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise InvalidInputError(
                f"value must be JSON (object, list, string, number, true/false, null); {exc}. Convert it first."
            ) from exc
        if tags is not None and not isinstance(tags, list):
            raise InvalidInputError(f"tags must be a list of strings; received {type(tags).__name__}.")
        tag_text = json.dumps([str(t) for t in (tags or [])], ensure_ascii=False)
        size = len(text.encode()) + len(tag_text.encode()) + len(key.encode())
        if size > self.max_value_bytes:
            raise InvalidInputError(
                f"the entry is {size} bytes serialized (key, value and tags); the limit is {self.max_value_bytes}. "
                "Store a summary or a file path instead of the data itself, and keep tags short."
            )
        return namespace, key, text, tag_text

    def _upsert(self, conn: Any, row: tuple[str, str, str, str], now: float, expires: float | None) -> None:
        conn.execute(
            """INSERT INTO memory (namespace, key, value, tags, created_at, updated_at, access_count, expires_at)
               VALUES (?, ?, ?, ?, ?, ?, 0, ?)
               ON CONFLICT(namespace, key) DO UPDATE SET value = excluded.value, tags = excluded.tags,
                 updated_at = excluded.updated_at, expires_at = excluded.expires_at""",
            (*row, now, now, expires),
        )

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
        row = self._row(key, value, namespace=namespace, ttl=ttl, tags=tags)
        now = self.clock()
        expires = now + ttl if ttl is not None else None
        with self._write() as conn:
            conn.execute("DELETE FROM memory WHERE expires_at IS NOT NULL AND expires_at <= ?", (now,))
            self._upsert(conn, row, now, expires)
            found = conn.execute(
                "SELECT created_at, access_count, accessed_at FROM memory WHERE namespace = ? AND key = ?",
                (namespace, key),
            ).fetchone()
        return MemoryEntry(
            namespace=namespace,
            key=key,
            value=json.loads(row[2]),
            tags=json.loads(row[3]),
            created_at=found[0],
            updated_at=now,
            access_count=found[1] or 0,
            accessed_at=found[2],
            expires_at=expires,
        )

    def retrieve(self, key: str, *, namespace: str = DEFAULT_NAMESPACE) -> MemoryEntry:
        """Return the entry; raise NotFoundError when it is missing or expired."""
        check_name("key", key)
        check_name("namespace", namespace)
        alive, now = self._alive()
        with self._write() as conn:
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
        stem = key.split("/")[0]  # compared as text, as memory_list's prefix is (LIKE took % and _ as wildcards)
        near = self.query(
            f"SELECT key FROM memory WHERE namespace = ? AND {alive} AND substr(key, 1, ?) = ? ORDER BY key LIMIT 5",
            (namespace, now, len(stem), stem),
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
        preview_bytes: int | None = None,
    ) -> MemoryPage:
        """Entries ordered by namespace and key; namespace=None lists every namespace.

        With preview_bytes, a value larger than that comes back as a preview string (truncated=True)."""
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
        entries = [self._row_to_entry(r, preview_bytes) for r in rows]
        return MemoryPage(entries=entries, total=total, limit=limit, offset=offset)

    def search(
        self,
        query: str,
        *,
        namespace: str | None = DEFAULT_NAMESPACE,
        limit: int = 10,
        preview_bytes: int | None = None,
    ) -> list[SearchHit]:
        """Full-text search over keys, values and tags, best match first (large values as previews, as in list)."""
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
        return [SearchHit(entry=self._row_to_entry(r, preview_bytes), score=-float(r["rank"])) for r in rows]

    def delete(self, key: str, *, namespace: str = DEFAULT_NAMESPACE) -> bool:
        """Delete the entry; True when something was deleted."""
        check_name("key", key)
        check_name("namespace", namespace)
        with self._write() as conn:
            cur = conn.execute("DELETE FROM memory WHERE namespace = ? AND key = ?", (namespace, key))
        return cur.rowcount > 0

    def purge_expired(self) -> int:
        with self._write() as conn:
            cur = conn.execute("DELETE FROM memory WHERE expires_at IS NOT NULL AND expires_at <= ?", (self.clock(),))
        return cur.rowcount

    def stats(self) -> MemoryStats:
        self.purge_expired()
        rows = self.query(
            "SELECT namespace, count(*) AS n, sum(length(CAST(value AS BLOB)) + length(CAST(tags AS BLOB)) "
            "+ length(CAST(key AS BLOB))) AS b FROM memory GROUP BY namespace"
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

    def import_entries(self, records: Iterable[Any]) -> int:
        """Upsert exported records, all or nothing: every record is checked first, then all are written in
        one transaction. Keeps tags and remaining TTL; already expired records are skipped. Returns the count."""
        now = self.clock()
        rows: list[tuple[tuple[str, str, str, str], float | None]] = []
        for i, rec in enumerate(records, 1):
            try:
                row, expires = self._import_row(rec, now)
            except InvalidInputError as exc:
                raise InvalidInputError(f"Record {i}: {exc} Nothing was imported.") from exc
            if expires is None or expires > now:
                rows.append((row, expires))
        with self._write() as conn:
            for row, expires in rows:
                self._upsert(conn, row, now, expires)
        return len(rows)

    def _import_row(self, rec: Any, now: float) -> tuple[tuple[str, str, str, str], float | None]:
        if not isinstance(rec, dict) or "key" not in rec or "value" not in rec:
            raise InvalidInputError(
                "each record must be an object with at least 'key' and 'value' (as written by memory export); "
                f"received {str(rec)[:200]}."
            )
        expires = rec.get("expires_at")
        if expires is not None and (
            isinstance(expires, bool) or not isinstance(expires, int | float) or not math.isfinite(expires)
        ):
            raise InvalidInputError(f"expires_at must be a Unix time (a finite number) or null; received {expires!r}.")
        ttl = None if expires is None or expires <= now else expires - now
        namespace = rec.get("namespace") or DEFAULT_NAMESPACE
        row = self._row(rec["key"], rec["value"], namespace=namespace, ttl=ttl, tags=rec.get("tags") or [])
        return row, expires
