"""Worker process entry point: `python -m ml_expert.tools.worker WORKSPACE DB JOB_ID`.

Runs one job's handler (TensorFlow is imported here, never in the server), reports progress into
the job's row, honours cancel requests, and records the result or a clear error.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from ml_expert.tools.errors import MLExpertError
from ml_expert.tools.jobs import JobCancelled, finish_job
from ml_expert.tools.workspace import Workspace


class Reporter:
    """What a job handler gets: progress reporting and the cancel flag, both throttled."""

    def __init__(self, ws: Workspace, job_id: str, *, min_interval: float = 0.2) -> None:
        self.ws = ws
        self.job_id = job_id
        self.min_interval = min_interval
        self._last_write = 0.0
        self._last_check = 0.0
        self._cancelled = False
        self._pending: dict[str, Any] | None = None

    def progress(self, force: bool = False, **info: Any) -> None:
        self._pending = info
        now = time.monotonic()
        if force or now - self._last_write >= self.min_interval:
            self.flush()

    def flush(self) -> None:
        if self._pending is None:
            return
        with self.ws.store.write() as conn:
            conn.execute(
                "UPDATE jobs SET progress = ?, updated_at = ? WHERE job_id = ?",
                (json.dumps(self._pending, default=float), time.time(), self.job_id),
            )
        self._pending = None
        self._last_write = time.monotonic()

    def cancel_requested(self) -> bool:
        now = time.monotonic()
        if not self._cancelled and now - self._last_check >= 0.25:
            self._last_check = now
            rows = self.ws.store.query("SELECT cancel_requested FROM jobs WHERE job_id = ?", [self.job_id])
            self._cancelled = bool(rows and rows[0]["cancel_requested"])
        return self._cancelled


HANDLERS = {
    "train": "ml_expert.tools.training:run_train_job",
    "probe": "ml_expert.tools.selection:run_probe_job",
    "evaluate": "ml_expert.tools.evaluation:run_evaluate_job",
    "package": "ml_expert.tools.packaging:run_package_job",
    "workflow": "ml_expert.tools.workflow:run_workflow_job",
}


def handler_for(kind: str) -> Any:
    """The function that runs a job of this kind (imported only in the worker)."""
    module, _, name = HANDLERS[kind].partition(":")
    return getattr(importlib.import_module(module), name)


def main(argv: list[str] | None = None) -> int:
    root, db, job_id = (argv or sys.argv[1:])[:3]
    ws = Workspace(Path(root), db_path=Path(db))
    # A terminated worker (server shutdown) ends like an interruption, keeping its checkpoint.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    with ws.store.write() as conn:
        conn.execute("UPDATE jobs SET pid = ? WHERE job_id = ?", (os.getpid(), job_id))
    row = ws.store.query("SELECT * FROM jobs WHERE job_id = ?", [job_id])[0]
    reporter = Reporter(ws, job_id)
    reporter.progress(force=True, message="worker started", phase="starting")
    try:
        result = handler_for(row["kind"])(ws, json.loads(row["spec"]), reporter)
    except JobCancelled as exc:
        reporter.flush()
        finish_job(ws, job_id, "cancelled", result=exc.args[0] if exc.args else None, error="Cancelled on request.")
        return 0
    except KeyboardInterrupt:
        finish_job(ws, job_id, "interrupted", error="The worker was stopped. Call resume_job to continue.")
        return 0
    except MLExpertError as exc:
        reporter.flush()
        finish_job(ws, job_id, "failed", error=str(exc))
        return 0
    except Exception as exc:
        traceback.print_exc()
        reporter.flush()
        finish_job(ws, job_id, "failed", error=f"{type(exc).__name__}: {exc}")
        return 0
    reporter.flush()
    finish_job(ws, job_id, "succeeded", result=result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
