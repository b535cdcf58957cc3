"""Schema of ml-expert's SQLite file, as sqlite-utils migrations applied at open.

One file, `<workspace>/.ml-expert/memory.db`, holds four tables: `memory` (the namespaced
key-value entries, with an FTS5 index over key, value and tags), `runs` (one row per workflow
run), `jobs` (background work) and `file_digests` (the sha256 of every pickle the server wrote).
Add a new function to change the schema; never edit one that has shipped.
"""

from __future__ import annotations

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

migrations = Migrations("ml-expert")


@migrations()
def m001_memory(db: Database) -> None:
    db["memory"].create(
        {
            "namespace": str,
            "key": str,
            "value": str,
            "tags": str,
            "created_at": float,
            "updated_at": float,
            "accessed_at": float,
            "access_count": int,
            "expires_at": float,
        },
        pk=("namespace", "key"),
        not_null={"namespace", "key", "value", "created_at", "updated_at"},
        defaults={"access_count": 0, "tags": "[]"},
    )
    db["memory"].create_index(["expires_at"])
    db["memory"].enable_fts(["key", "value", "tags"], fts_version="FTS5", create_triggers=True)


@migrations()
def m002_runs_and_jobs(db: Database) -> None:
    db["runs"].create(
        {
            "run_id": str,
            "namespace": str,
            "dataset": str,
            "target": str,
            "created_at": float,
            "updated_at": float,
            "phases": str,  # JSON: phase -> {"status", "memory_keys", "artifacts", "at"}
        },
        pk="run_id",
        not_null={"run_id", "created_at", "updated_at"},
        defaults={"phases": "{}"},
    )
    db["jobs"].create(
        {
            "job_id": str,
            "kind": str,
            "run_id": str,
            "namespace": str,
            "status": str,  # queued, running, succeeded, failed, cancelled, interrupted
            "spec": str,
            "progress": str,
            "result": str,
            "error": str,
            "pid": int,
            "owner_pid": int,
            "cancel_requested": int,
            "created_at": float,
            "started_at": float,
            "finished_at": float,
            "updated_at": float,
        },
        pk="job_id",
        not_null={"job_id", "kind", "status", "created_at"},
        defaults={"cancel_requested": 0, "progress": "{}"},
    )
    db["jobs"].create_index(["status"])


@migrations()
def m003_file_digests(db: Database) -> None:
    db["file_digests"].create(
        {"path": str, "sha256": str, "bytes": int, "created_at": float},
        pk="path",
        not_null={"path", "sha256", "created_at"},
    )
