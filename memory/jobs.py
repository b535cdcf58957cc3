"""The `jobs` table: background work recorded so that any process can follow, cancel or resume it.

Status moves queued -> running -> succeeded | failed | cancelled | interrupted; `finish` only
ever ends an active job, so a late writer cannot overwrite an ending that was already recorded.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from ml_expert.memory.database import Database

ACTIVE = ("queued", "running")
FINISHED = ("succeeded", "failed", "cancelled", "interrupted")


@dataclass(frozen=True)
class JobRow:
    """A job as stored; `spec`, `progress` and `result` are decoded JSON."""

    job_id: str
    kind: str
    run_id: str | None
    namespace: str
    status: str
    spec: dict[str, Any]
    progress: dict[str, Any]
    result: dict[str, Any] | None
    error: str | None
    pid: int | None
    owner_pid: int | None
    cancel_requested: bool
    created_at: float
    started_at: float | None
    finished_at: float | None


def _row(r: dict[str, Any]) -> JobRow:
    return JobRow(
        job_id=r["job_id"],
        kind=r["kind"],
        run_id=r["run_id"],
        namespace=r["namespace"] or "default",
        status=r["status"],
        spec=json.loads(r["spec"] or "{}"),
        progress=json.loads(r["progress"] or "{}"),
        result=json.loads(r["result"]) if r["result"] else None,
        error=r["error"],
        pid=r["pid"],
        owner_pid=r["owner_pid"],
        cancel_requested=bool(r["cancel_requested"]),
        created_at=r["created_at"],
        started_at=r["started_at"],
        finished_at=r["finished_at"],
    )


class JobStore:
    """Every read and write of the jobs table."""

    def __init__(self, database: Database) -> None:
        self.database = database

    def insert(
        self, job_id: str, *, kind: str, run_id: str | None, namespace: str, spec: dict[str, Any], owner_pid: int
    ) -> None:
        now = time.time()
        with self.database.transaction() as conn:
            conn.execute(
                "INSERT INTO jobs (job_id, kind, run_id, namespace, status, spec, progress, owner_pid, "
                "cancel_requested, created_at, updated_at) VALUES (?, ?, ?, ?, 'queued', ?, ?, ?, 0, ?, ?)",
                (
                    job_id,
                    kind,
                    run_id,
                    namespace,
                    json.dumps(spec),
                    json.dumps({"message": "queued"}),
                    owner_pid,
                    now,
                    now,
                ),
            )

    def get(self, job_id: str) -> JobRow | None:
        rows = self.database.query("SELECT * FROM jobs WHERE job_id = ?", [job_id])
        return _row(rows[0]) if rows else None

    def list(self, *, status: str | None, limit: int) -> tuple[list[JobRow], int]:
        """The newest jobs (optionally of one status) and the total count."""
        where, params = ("WHERE status = ?", [status]) if status else ("", [])
        total = self.database.query(f"SELECT count(*) AS n FROM jobs {where}", params)[0]["n"]
        rows = self.database.query(f"SELECT * FROM jobs {where} ORDER BY created_at DESC LIMIT ?", [*params, limit])
        return [_row(r) for r in rows], total

    def latest(self, run_id: str, kind: str) -> JobRow | None:
        """The job of this kind on a run submitted, requeued or updated last, or None."""
        rows = self.database.query(
            "SELECT * FROM jobs WHERE run_id = ? AND kind = ? ORDER BY updated_at DESC LIMIT 1", [run_id, kind]
        )
        return _row(rows[0]) if rows else None

    def active(self) -> list[JobRow]:
        """Queued and running jobs, oldest first."""
        rows = self.database.query("SELECT * FROM jobs WHERE status IN (?, ?) ORDER BY created_at", ACTIVE)
        return [_row(r) for r in rows]

    def claim(self, owner_pid: int, max_running: int) -> list[str]:
        """Mark this server process's oldest queued jobs running while fewer than max_running jobs run in the
        workspace; returns their ids, oldest first.

        One write transaction counts the running jobs of every process and takes the free slots, so two servers
        on one workspace never run more than max_running jobs between them; a slot that frees in any process goes
        to whichever server claims next (each polls a few times a second)."""
        mine_queued = "SELECT 1 FROM jobs WHERE status = 'queued' AND owner_pid = ? LIMIT 1"
        if not self.database.query(mine_queued, [owner_pid]):  # the usual case: a read, not the write lock
            return []
        now = time.time()
        with self.database.transaction() as conn:
            running = conn.execute("SELECT count(*) FROM jobs WHERE status = 'running'").fetchone()[0]
            if running >= max_running:
                return []
            mine = [
                r[0]
                for r in conn.execute(
                    "SELECT job_id FROM jobs WHERE status = 'queued' AND owner_pid = ? ORDER BY created_at LIMIT ?",
                    (owner_pid, max_running - running),
                )
            ]
            conn.executemany(
                "UPDATE jobs SET status = 'running', started_at = ?, updated_at = ? WHERE job_id = ?",
                [(now, now, job_id) for job_id in mine],
            )
        return mine

    def count(self, status: str) -> int:
        return self.database.query("SELECT count(*) AS n FROM jobs WHERE status = ?", [status])[0]["n"]

    def set_pid(self, job_id: str, pid: int) -> None:
        with self.database.transaction() as conn:
            conn.execute("UPDATE jobs SET pid = ? WHERE job_id = ?", (pid, job_id))

    def set_progress(self, job_id: str, progress: dict[str, Any]) -> None:
        with self.database.transaction() as conn:
            conn.execute(
                "UPDATE jobs SET progress = ?, updated_at = ? WHERE job_id = ?",
                (json.dumps(progress, default=float), time.time(), job_id),
            )

    def request_cancel(self, job_id: str) -> None:
        with self.database.transaction() as conn:
            conn.execute("UPDATE jobs SET cancel_requested = 1, updated_at = ? WHERE job_id = ?", (time.time(), job_id))

    def cancel_requested(self, job_id: str) -> bool:
        rows = self.database.query("SELECT cancel_requested FROM jobs WHERE job_id = ?", [job_id])
        return bool(rows and rows[0]["cancel_requested"])

    def finish(self, job_id: str, status: str, *, result: Any = None, error: str | None = None) -> bool:
        """End an active job; False when it had already ended."""
        now = time.time()
        with self.database.transaction() as conn:
            cur = conn.execute(
                "UPDATE jobs SET status = ?, result = ?, error = ?, finished_at = ?, updated_at = ? "
                "WHERE job_id = ? AND status IN ('queued', 'running')",
                (status, json.dumps(result) if result is not None else None, error, now, now, job_id),
            )
        return cur.rowcount > 0

    def requeue(self, job_id: str, *, spec: dict[str, Any], owner_pid: int) -> None:
        """Queue an ended job again (resume) with a new spec, owned by this server process."""
        with self.database.transaction() as conn:
            conn.execute(
                "UPDATE jobs SET status = 'queued', spec = ?, error = NULL, result = NULL, finished_at = NULL, "
                "cancel_requested = 0, owner_pid = ?, pid = NULL, updated_at = ? WHERE job_id = ?",
                (json.dumps(spec), owner_pid, time.time(), job_id),
            )
