"""ml-expert's persistent state in one SQLite file: the namespaced key-value memory (`MemoryStore`),
the workflow runs (`RunStore`), the background jobs (`JobStore`) and the digests of the pickles the
server wrote (`DigestStore`), plus the errors they raise.

All SQL of the project lives in this package, and it imports nothing from the tools package.
"""

from ml_expert.memory.database import Database
from ml_expert.memory.digests import DigestStore
from ml_expert.memory.jobs import ACTIVE, FINISHED, JobRow, JobStore
from ml_expert.memory.runs import RunRow, RunStore
from ml_expert.memory.store import (
    DEFAULT_MAX_VALUE_BYTES,
    DEFAULT_NAMESPACE,
    MemoryEntry,
    MemoryPage,
    MemoryStats,
    MemoryStore,
    SearchHit,
)

__all__ = [
    "ACTIVE",
    "DEFAULT_MAX_VALUE_BYTES",
    "DEFAULT_NAMESPACE",
    "FINISHED",
    "Database",
    "DigestStore",
    "JobRow",
    "JobStore",
    "MemoryEntry",
    "MemoryPage",
    "MemoryStats",
    "MemoryStore",
    "RunRow",
    "RunStore",
    "SearchHit",
]
