"""Memory tools (claude-flow v3 names): `memory_store`, `memory_retrieve`, `memory_list`,
`memory_search`, `memory_delete`, `memory_stats`.

Thin typed functions over `MemoryStore`; the signature is the tool's schema.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, Field

from ml_expert.memory import MemoryEntry, MemoryPage, MemoryStats, SearchHit
from ml_expert.tools.workspace import Workspace

Key = Annotated[
    str,
    Field(description="Entry key, one string even with slashes, e.g. 'ml-expert/metrics'.", min_length=1),
]
PREVIEW_BYTES = 2048  # lists and searches stay small; memory_retrieve returns a value whole
NamespaceArg = Annotated[str, Field(description="Namespace of the entry, e.g. 'default' or 'swarm-1'.", min_length=1)]


class DeleteResult(BaseModel):
    deleted: bool = Field(description="True when an entry existed and was removed.")
    namespace: str
    key: str


class SearchResult(BaseModel):
    hits: list[SearchHit]
    query: str


def memory_store(
    ws: Workspace,
    key: Key,
    value: Annotated[Any, Field(description="Any JSON value: object, list, string, number, boolean or null.")],
    namespace: NamespaceArg = "default",
    ttl: Annotated[
        float | None,
        Field(description="Seconds until the entry expires, e.g. 3600 (at most ten years); omit to keep it.", gt=0),
    ] = None,
    tags: Annotated[list[str] | None, Field(description="Labels for grouping and search, e.g. ['exp-3'].")] = None,
) -> MemoryEntry:
    """Store a JSON value under a key (insert or replace). Read it back with memory_retrieve."""
    return ws.store.store(key, value, namespace=namespace, ttl=ttl, tags=tags)


def memory_retrieve(ws: Workspace, key: Key, namespace: NamespaceArg = "default") -> MemoryEntry:
    """Read the value stored under a key, e.g. 'ml-expert/metrics' after evaluate."""
    return ws.store.retrieve(key, namespace=namespace)


def memory_list(
    ws: Workspace,
    namespace: Annotated[str | None, Field(description="Namespace to list; null lists every namespace.")] = "default",
    prefix: Annotated[str | None, Field(description="Only keys starting with this, e.g. 'ml-expert/runs/'.")] = None,
    limit: Annotated[int, Field(description="Page size.", ge=1, le=500)] = 50,
    offset: Annotated[int, Field(description="Entries to skip (for paging).", ge=0)] = 0,
) -> MemoryPage:
    """List stored entries (key order) with the total count; page with offset.

    Values over 2 KB appear as a preview (truncated=true); read them whole with memory_retrieve."""
    return ws.store.list(namespace=namespace, prefix=prefix, limit=limit, offset=offset, preview_bytes=PREVIEW_BYTES)


def memory_search(
    ws: Workspace,
    query: Annotated[
        str, Field(description="Words to find in keys, values and tags, e.g. 'accuracy breast' (at most 64 words).")
    ],
    namespace: Annotated[str | None, Field(description="Namespace to search; null searches all.")] = "default",
    limit: Annotated[int, Field(description="Most hits to return.", ge=1, le=100)] = 10,
) -> SearchResult:
    """Full-text search over memory entries, best match first (values over 2 KB as previews)."""
    hits = ws.store.search(query, namespace=namespace, limit=limit, preview_bytes=PREVIEW_BYTES)
    return SearchResult(hits=hits, query=query)


def memory_delete(ws: Workspace, key: Key, namespace: NamespaceArg = "default") -> DeleteResult:
    """Delete one entry. Deleting a missing key is not an error (deleted=false)."""
    return DeleteResult(deleted=ws.store.delete(key, namespace=namespace), namespace=namespace, key=key)


def memory_stats(ws: Workspace) -> MemoryStats:
    """Count entries per namespace and report the database size."""
    return ws.store.stats()
