"""The `runs` table: one row per workflow run, with each phase's record as JSON."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from ml_expert.memory.database import Database


@dataclass(frozen=True)
class RunRow:
    """A run as stored: ids, dataset, target and the phase records (phase -> dict)."""

    run_id: str
    namespace: str
    dataset: str | None
    target: str | None
    created_at: float
    updated_at: float
    phases: dict[str, dict[str, Any]]


def _row(r: dict[str, Any]) -> RunRow:
    return RunRow(
        run_id=r["run_id"],
        namespace=r["namespace"] or "default",
        dataset=r["dataset"],
        target=r["target"],
        created_at=r["created_at"],
        updated_at=r["updated_at"],
        phases=json.loads(r["phases"] or "{}"),
    )


class RunStore:
    """Create, read and update runs."""

    def __init__(self, database: Database) -> None:
        self.database = database

    def create(self, run_id: str, *, namespace: str, dataset: str | None, target: str | None) -> None:
        now = time.time()
        with self.database.transaction() as conn:
            conn.execute(
                "INSERT INTO runs (run_id, namespace, dataset, target, created_at, updated_at, phases) "
                "VALUES (?, ?, ?, ?, ?, ?, '{}')",
                (run_id, namespace, dataset, target, now, now),
            )

    def get(self, run_id: str) -> RunRow | None:
        rows = self.database.query("SELECT * FROM runs WHERE run_id = ?", [run_id])
        return _row(rows[0]) if rows else None

    def recent_ids(self, limit: int = 5) -> list[str]:
        rows = self.database.query("SELECT run_id FROM runs ORDER BY created_at DESC LIMIT ?", [limit])
        return [r["run_id"] for r in rows]

    def list(self, limit: int) -> tuple[list[RunRow], int]:
        """The newest runs and the total count."""
        total = self.database.query("SELECT count(*) AS n FROM runs")[0]["n"]
        rows = self.database.query("SELECT * FROM runs ORDER BY created_at DESC LIMIT ?", [limit])
        return [_row(r) for r in rows], total

    def set_source(self, run_id: str, *, dataset: str | None, target: str | None) -> None:
        with self.database.transaction() as conn:
            conn.execute(
                "UPDATE runs SET dataset = ?, target = ?, updated_at = ? WHERE run_id = ?",
                (dataset, target, time.time(), run_id),
            )

    def set_phase(self, run_id: str, phase: str, record: dict[str, Any]) -> None:
        """Record one phase (read-modify-write inside one transaction, so concurrent phases do not clash)."""
        with self.database.transaction() as conn:
            found = conn.execute("SELECT phases FROM runs WHERE run_id = ?", (run_id,)).fetchone()
            current = json.loads((found[0] if found else None) or "{}")
            current[phase] = record
            conn.execute(
                "UPDATE runs SET phases = ?, updated_at = ? WHERE run_id = ?",
                (json.dumps(current), time.time(), run_id),
            )
