"""ml-expert's persistent memory: the namespaced key-value store and the SQLite schema."""

from ml_expert.memory.store import DEFAULT_NAMESPACE, MemoryEntry, MemoryPage, MemoryStats, MemoryStore, SearchHit

__all__ = ["DEFAULT_NAMESPACE", "MemoryEntry", "MemoryPage", "MemoryStats", "MemoryStore", "SearchHit"]
