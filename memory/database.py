"""The one SQLite file behind memory, runs, jobs and digests: migrated once, one connection per thread.

`Database` hands out transactions and read queries to the stores of this package (`MemoryStore`,
`RunStore`, `JobStore`, `DigestStore`); nothing outside `ml_expert.memory` writes SQL. Every thread
gets its own connection (WAL mode), so a thread that waits for another process's write lock never
holds up readers in other threads — the server's event loop included.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import sys
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from ml_expert.memory.errors import BusyError

# The names of the migrations in migrations.py, in order (a test keeps the two lists equal). Checking them with
# plain sqlite3 lets an up-to-date database open without importing sqlite-utils, which imports pandas and numpy:
# the server answers the MCP handshake before any of them load.
MIGRATIONS = ("m001_memory", "m002_runs_and_jobs", "m003_file_digests")

BUSY_TIMEOUT_MS = 30_000
_lock_wait: ContextVar[float | None] = ContextVar("ml_expert_lock_wait", default=None)


@contextmanager
def lock_wait(seconds: float) -> Iterator[None]:
    """Within this block a write waits at most `seconds` for SQLite's write lock (0: not at all) and then
    raises BusyError instead of blocking longer. The server's event loop runs memory tools under lock_wait(0)."""
    token = _lock_wait.set(seconds)
    try:
        yield
    finally:
        _lock_wait.reset(token)


def _migration_tools() -> tuple[Any, Any]:
    """sqlite-utils' Database and our migrations. sqlite-utils imports pandas and numpy when they are installed,
    only to map their types in its inserts, which ml-expert never uses (the stores write SQL of their own); they
    are hidden during its import, unless already loaded, so that opening a new workspace does not load them."""
    hidden = [name for name in ("pandas", "numpy") if name not in sys.modules]
    for name in hidden:
        sys.modules[name] = None  # type: ignore[assignment]  # "import pandas" raises ImportError meanwhile
    try:
        from sqlite_utils import Database as SqliteUtilsDatabase

        from ml_expert.memory.migrations import migrations
    finally:
        for name in hidden:
            if sys.modules.get(name) is None:
                del sys.modules[name]
    return SqliteUtilsDatabase, migrations


class Database:
    """`<workspace>/.ml-expert/memory.db` (WAL, busy timeout, synchronous=NORMAL), a connection per thread."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._guard = threading.Lock()
        self._migrate()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, check_same_thread=False, isolation_level=None)
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA synchronous = NORMAL")
        with self._guard:
            self._all.append(conn)
        return conn

    @property
    def conn(self) -> sqlite3.Connection:
        """This thread's connection."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._connect()
        return conn

    def _migrate(self) -> None:
        # Migrations from two processes at once would clash: serialise them with a file lock.
        with open(self.path.with_name(self.path.name + ".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                if self.conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                    self.conn.execute("PRAGMA journal_mode = WAL")
                if self._pending():  # a new or older database
                    SqliteUtilsDatabase, migrations = _migration_tools()
                    db = SqliteUtilsDatabase(self.conn)
                    if migrations.pending(db):
                        migrations.apply(db)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _pending(self) -> bool:
        """Whether a migration of MIGRATIONS is not applied yet (sqlite-utils records them in _sqlite_migrations)."""
        try:
            rows = self.conn.execute("SELECT name FROM _sqlite_migrations WHERE migration_set = 'ml-expert'").fetchall()
        except sqlite3.OperationalError:  # no such table: a new database
            return True
        return not set(MIGRATIONS) <= {row[0] for row in rows}

    def close(self) -> None:
        with self._guard:
            for conn in self._all:
                conn.close()
            self._all.clear()
        self._local = threading.local()

    def _begin(self, conn: sqlite3.Connection) -> None:
        wait = _lock_wait.get()
        if wait is None:
            conn.execute("BEGIN IMMEDIATE")
            return
        conn.execute(f"PRAGMA busy_timeout = {int(wait * 1000)}")
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
            raise BusyError(
                f"The memory database is busy: another process held its write lock for more than {wait:g} s, so "
                "nothing was written. Retry in a moment."
            ) from exc
        finally:
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction that takes the write lock up front (BEGIN IMMEDIATE).

        Taking it at the start means SQLite's busy timeout applies, instead of the instant
        'database is locked' a deferred transaction gets when it upgrades from read to write.
        """
        conn = self.conn
        try:
            self._begin(conn)
            yield conn
        except BaseException:  # a KeyboardInterrupt just after BEGIN too: never leave the write lock held
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def query(self, sql: str, params: Iterable[Any] = ()) -> list[dict[str, Any]]:
        """Rows of a read query as dicts."""
        cur = self.conn.execute(sql, list(params))
        columns = [c[0] for c in cur.description]
        return [dict(zip(columns, row, strict=True)) for row in cur]
