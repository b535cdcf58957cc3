"""The one SQLite file behind memory, runs and jobs: opened once, migrated under a file lock.

`Database` hands out transactions and read queries to the three stores of this package
(`MemoryStore`, `RunStore`, `JobStore`); nothing outside `ml_expert.memory` writes SQL.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlite_utils import Database as SqliteUtilsDatabase

from ml_expert.memory.migrations import migrations

BUSY_TIMEOUT_MS = 30_000


class Database:
    """One connection to `<workspace>/.ml-expert/memory.db` (WAL, busy timeout), safe across threads."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, check_same_thread=False, isolation_level=None)
        self.db = SqliteUtilsDatabase(conn)
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
    def transaction(self) -> Iterator[sqlite3.Connection]:
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
        """Rows of a read query as dicts."""
        with self._lock:
            return list(self.db.query(sql, list(params)))
