"""The `file_digests` table: the sha256 of every pickle the server wrote, kept apart from the file.

A pickle runs code when it is loaded, so the server unpickles only files whose digest it recorded
itself when it wrote them. The digest lives in the database, not beside the file: whoever can
replace a file in a run folder cannot also make it pass.
"""

from __future__ import annotations

import time

from ml_expert.memory.database import Database


class DigestStore:
    """Record and look up the sha256 of files the server wrote (paths relative to the workspace)."""

    def __init__(self, database: Database) -> None:
        self.database = database

    def record(self, path: str, sha256: str, size: int) -> None:
        with self.database.transaction() as conn:
            conn.execute(
                "INSERT INTO file_digests (path, sha256, bytes, created_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(path) DO UPDATE SET sha256 = excluded.sha256, bytes = excluded.bytes, "
                "created_at = excluded.created_at",
                (path, sha256, size, time.time()),
            )

    def get(self, path: str) -> str | None:
        rows = self.database.query("SELECT sha256 FROM file_digests WHERE path = ?", [path])
        return rows[0]["sha256"] if rows else None
