"""Background jobs: long work runs in worker processes, recorded in SQLite.
Tools: `get_job`, `list_jobs`, `cancel_job`, `resume_job`.

The server never imports TensorFlow: `JobManager.submit` records a job and a worker process
(`python -m ml_expert.tools.worker`) does the work, writing progress into the job's row. A worker
that dies marks its job `failed`; a job whose worker vanished with its server becomes
`interrupted` at the next start and can be resumed from its last checkpoint.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from ml_expert.tools.errors import ConflictError, NotFoundError
from ml_expert.tools.workspace import Workspace, new_id

ACTIVE = ("queued", "running")
FINISHED = ("succeeded", "failed", "cancelled", "interrupted")
JobState = Literal["queued", "running", "succeeded", "failed", "cancelled", "interrupted"]
JobId = Annotated[str, Field(description="Job id returned by train or run_workflow, e.g. 'job_1a2b3c4d'.")]


class JobCancelled(Exception):
    """Raised inside a job handler when its cancel flag is seen; args[0] may carry a partial result."""


class JobStatus(BaseModel):
    """Where a job stands. When status is 'running' or 'queued', call get_job again later."""

    job_id: str
    kind: str
    status: JobState
    run_id: str | None = None
    progress: dict[str, Any] = Field(default_factory=dict, description="Latest progress: phase, epoch, metrics.")
    result: dict[str, Any] | None = Field(None, description="The finished tool result (status 'succeeded').")
    error: str | None = None
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    next_step: str | None = Field(None, description="What to call next.")


class JobList(BaseModel):
    jobs: list[JobStatus]
    total: int


def _pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child counts as dead
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[-1][:1] != "Z"
    except OSError:
        return True


def _status(row: dict[str, Any]) -> JobStatus:
    status = row["status"]
    hint = {
        "queued": f"Waiting for a free worker. Call get_job(job_id='{row['job_id']}') to follow it.",
        "running": f"Call get_job(job_id='{row['job_id']}') to follow it, or cancel_job to stop it.",
        "interrupted": f"Its worker vanished. Call resume_job(job_id='{row['job_id']}') to continue from the "
        "last checkpoint.",
        "failed": "Read error, fix the cause, then call the tool again.",
    }.get(status)
    result = json.loads(row["result"]) if row["result"] else None
    if status == "succeeded" and result:
        hint = result.get("next_step")
    return JobStatus(
        job_id=row["job_id"],
        kind=row["kind"],
        status=status,
        run_id=row["run_id"],
        progress=json.loads(row["progress"] or "{}"),
        result=result,
        error=row["error"],
        created_at=row["created_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        next_step=hint,
    )


def _row(ws: Workspace, job_id: str) -> dict[str, Any]:
    rows = ws.store.query("SELECT * FROM jobs WHERE job_id = ?", [job_id])
    if not rows:
        raise NotFoundError(f"No job {job_id!r} in this workspace. Call list_jobs to see the job ids.")
    return rows[0]


def get_job(ws: Workspace, job_id: JobId) -> JobStatus:
    """Status, progress (epoch, metrics), result or error of a background job."""
    return _status(_row(ws, job_id))


def list_jobs(
    ws: Workspace,
    status: Annotated[JobState | None, Field(description="Only jobs in this state, e.g. 'running'.")] = None,
    limit: Annotated[int, Field(description="At most this many jobs, newest first.", ge=1, le=200)] = 20,
) -> JobList:
    """List background jobs, newest first."""
    where, params = ("WHERE status = ?", [status]) if status else ("", [])
    total = ws.store.query(f"SELECT count(*) AS n FROM jobs {where}", params)[0]["n"]
    rows = ws.store.query(f"SELECT * FROM jobs {where} ORDER BY created_at DESC LIMIT ?", [*params, limit])
    return JobList(jobs=[_status(r) for r in rows], total=total)


def finish_job(ws: Workspace, job_id: str, status: str, *, result: Any = None, error: str | None = None) -> None:
    """Record the end of a job (used by workers and by the manager when a worker died)."""
    now = time.time()
    with ws.store.write() as conn:
        conn.execute(
            "UPDATE jobs SET status = ?, result = ?, error = ?, finished_at = ?, updated_at = ? "
            "WHERE job_id = ? AND status IN ('queued', 'running')",
            (status, json.dumps(result) if result is not None else None, error, now, now, job_id),
        )


class JobManager:
    """Starts worker processes for queued jobs (at most max_jobs at once) and notices dead ones."""

    def __init__(self, ws: Workspace, *, max_jobs: int = 1, poll_interval: float = 0.2) -> None:
        self.ws = ws
        self.max_jobs = max(1, max_jobs)
        self.poll_interval = poll_interval
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> JobManager:
        self.mark_orphans_interrupted()
        self._thread = threading.Thread(target=self._loop, name="ml-expert-jobs", daemon=True)
        self._thread.start()
        return self

    def stop(self, *, terminate: bool = True) -> None:
        """Stop scheduling; with terminate, end running workers (their jobs become interrupted)."""
        self._stop.set()
        self._wake.set()
        if self._thread:
            self._thread.join(timeout=5)
        if terminate:
            with self._lock:
                procs = list(self._procs.items())
            for job_id, proc in procs:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
                    try:
                        proc.wait(timeout=10)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait()
                finish_job(self.ws, job_id, "interrupted", error="The server stopped while the job ran.")

    def mark_orphans_interrupted(self) -> int:
        """Jobs left running/queued by a server or worker that no longer exists become 'interrupted'."""
        count = 0
        for row in self.ws.store.query(
            "SELECT job_id, status, pid, owner_pid FROM jobs WHERE status IN (?, ?)", ACTIVE
        ):
            if row["status"] == "running" and row["pid"]:
                alive = _pid_alive(row["pid"])
            elif row["status"] == "running":  # launched, pid not written yet: its server decides
                alive = _pid_alive(row["owner_pid"])
            else:  # queued: its server will start it, unless that server is gone
                alive = row["owner_pid"] == os.getpid() or _pid_alive(row["owner_pid"])
            if not alive:
                finish_job(
                    self.ws,
                    row["job_id"],
                    "interrupted",
                    error="Its worker process vanished (server restart or kill). Call resume_job to continue.",
                )
                count += 1
        return count

    # -- jobs ------------------------------------------------------------------------------

    def submit(self, kind: str, spec: dict[str, Any], *, run_id: str | None = None, namespace: str = "default") -> str:
        job_id = new_id("job")
        now = time.time()
        with self.ws.store.write() as conn:
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
                    os.getpid(),
                    now,
                    now,
                ),
            )
        self._schedule()
        return job_id

    def cancel(self, job_id: str) -> JobStatus:
        row = _row(self.ws, job_id)
        if row["status"] in FINISHED:
            return _status(row)
        with self.ws.store.write() as conn:
            conn.execute("UPDATE jobs SET cancel_requested = 1, updated_at = ? WHERE job_id = ?", (time.time(), job_id))
        if row["status"] == "queued":
            finish_job(self.ws, job_id, "cancelled", error="Cancelled before it started.")
        return get_job(self.ws, job_id)

    def resume(self, job_id: str) -> JobStatus:
        row = _row(self.ws, job_id)
        if row["status"] not in ("interrupted", "failed", "cancelled"):
            raise ConflictError(
                f"Job {job_id!r} is {row['status']}; only an interrupted, failed or cancelled job can be resumed."
            )
        spec = {**json.loads(row["spec"]), "resume": True}
        with self.ws.store.write() as conn:
            conn.execute(
                "UPDATE jobs SET status = 'queued', spec = ?, error = NULL, result = NULL, finished_at = NULL, "
                "cancel_requested = 0, owner_pid = ?, pid = NULL, updated_at = ? WHERE job_id = ?",
                (json.dumps(spec), os.getpid(), time.time(), job_id),
            )
        self._schedule()
        return get_job(self.ws, job_id)

    def kill_worker(self, job_id: str, sig: int = signal.SIGKILL) -> None:
        """Send a signal to a job's worker (tests and operators)."""
        pid = _row(self.ws, job_id)["pid"]
        if pid:
            os.kill(pid, sig)

    # -- scheduling ----------------------------------------------------------------------------

    def _schedule(self) -> None:
        self._wake.set()
        if self._thread is None:  # not started (e.g. a CLI one-shot): schedule inline
            self._tick()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._tick()
            except Exception:  # keep scheduling whatever one tick hit
                import logging

                logging.getLogger(__name__).exception("job scheduler tick failed")
            self._wake.wait(self.poll_interval)
            self._wake.clear()

    def _tick(self) -> None:
        with self._lock:
            for job_id, proc in list(self._procs.items()):
                code = proc.poll()
                if code is None:
                    continue
                del self._procs[job_id]
                if code != 0:
                    how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
                    finish_job(
                        self.ws,
                        job_id,
                        "failed",
                        error=f"The worker process {how} before finishing (out of memory, or killed). "
                        f"See {self.log_path(job_id)}. The server is still running; call the tool again or "
                        "resume_job.",
                    )
            free = self.max_jobs - len(self._procs)
            if free <= 0:
                return
            queued = self.ws.store.query(
                "SELECT job_id FROM jobs WHERE status = 'queued' AND owner_pid = ? ORDER BY created_at LIMIT ?",
                [os.getpid(), free],
            )
            for row in queued:
                self._launch(row["job_id"])

    def log_path(self, job_id: str) -> str:
        return str(self.ws.home / "jobs" / f"{job_id}.log")

    def _launch(self, job_id: str) -> None:
        log = self.ws.home / "jobs" / f"{job_id}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        threads = max(1, (os.cpu_count() or 1) // self.max_jobs)
        env = {
            "TF_CPP_MIN_LOG_LEVEL": "2",
            "PYTHONWARNINGS": "ignore",
            **os.environ,
            "OMP_NUM_THREADS": str(threads),
            "TF_NUM_INTRAOP_THREADS": str(threads),
        }
        with self.ws.store.write() as conn:
            conn.execute(
                "UPDATE jobs SET status = 'running', started_at = ?, updated_at = ? WHERE job_id = ?",
                (time.time(), time.time(), job_id),
            )
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "ml_expert.tools.worker", str(self.ws.root), str(self.ws.db_path), job_id],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        with self.ws.store.write() as conn:
            conn.execute("UPDATE jobs SET pid = ? WHERE job_id = ?", (proc.pid, job_id))
        self._procs[job_id] = proc

    def wait(self, job_id: str, timeout: float, on_progress: Any = None) -> JobStatus:
        """Block until the job finishes or timeout passes, calling on_progress(progress) on changes."""
        deadline = time.monotonic() + timeout
        last = None
        while True:
            status = get_job(self.ws, job_id)
            if on_progress is not None and status.progress != last:
                last = status.progress
                on_progress(status.progress)
            if status.status not in ACTIVE or time.monotonic() >= deadline:
                return status
            if self._thread is None:
                self._tick()
            time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))


WaitSeconds = Annotated[
    float,
    Field(
        description="Seconds to wait for the job before returning status 'running' (then follow with get_job).",
        ge=0,
        le=600,
    ),
]
ProgressFn = Callable[[dict[str, Any]], None]


def cancel_job(ws: Workspace, job_id: JobId) -> JobStatus:
    """Stop a job: training ends at the next batch/epoch, keeps the best weights so far; status 'cancelled'."""
    return ws.jobs.cancel(job_id)


def resume_job(
    ws: Workspace, job_id: JobId, wait_seconds: WaitSeconds = 45, report: ProgressFn | None = None
) -> JobStatus:
    """Continue an interrupted (or failed/cancelled) training job from its last checkpoint."""
    ws.jobs.resume(job_id)
    return ws.jobs.wait(job_id, wait_seconds, on_progress=report)


def run_as_job(
    ws: Workspace,
    kind: str,
    spec: dict[str, Any],
    *,
    run_id: str | None,
    namespace: str,
    wait_seconds: float,
    report: ProgressFn | None = None,
) -> JobStatus:
    """Submit a job and wait for it up to wait_seconds, forwarding progress; the common path of job tools."""
    job_id = ws.jobs.submit(kind, spec, run_id=run_id, namespace=namespace)
    return ws.jobs.wait(job_id, wait_seconds, on_progress=report)
