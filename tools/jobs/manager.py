"""The job manager: starts worker processes for queued jobs and notices workers that died.

The server never imports TensorFlow: `JobManager.submit` records a job and a worker process
(forked from a warm fork server, see forkserver.py, or `python -m ml_expert.tools.jobs.worker JOB_ID`;
given the server's settings) does the work,
writing progress into the job's row. A worker that dies marks its job `failed`; a job whose
worker vanished with its server becomes `interrupted` and can be resumed from its last checkpoint.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from ml_expert.memory import ACTIVE, FINISHED, JobRow
from ml_expert.memory.errors import ConflictError, NotFoundError
from ml_expert.tools.jobs.forkserver import ForkedWorker, start_worker, warm_up
from ml_expert.tools.jobs.specs import JobSpec, JobStatus, ProgressFn
from ml_expert.tools.settings import SETTINGS_ENV
from ml_expert.tools.workspace import Workspace, check_id, new_id

MAX_QUEUED = 100
ORPHAN_CHECK_SECONDS = 2.0
VANISHED = "Its worker process vanished (server restart or kill). Call resume_job to continue."
log = logging.getLogger(__name__)


def pid_alive(pid: int | None) -> bool:
    """True while a process with this pid runs (a zombie counts as dead)."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[-1][:1] != "Z"
    except OSError:
        return True


def job_status(row: JobRow) -> JobStatus:
    """The client's view of a job row, with what to call next."""
    hint = {
        "queued": f"Waiting for a free worker. Call get_job(job_id='{row.job_id}') to follow it.",
        "running": f"Call get_job(job_id='{row.job_id}') to follow it, or cancel_job to stop it.",
        "interrupted": f"Its worker vanished. Call resume_job(job_id='{row.job_id}') to continue from the "
        "last checkpoint.",
        "failed": "Read error, fix the cause, then call the tool again.",
    }.get(row.status)
    if row.status == "succeeded" and row.result:
        hint = row.result.get("next_step")
    return JobStatus(
        job_id=row.job_id,
        kind=row.kind,
        status=row.status,  # type: ignore[arg-type]
        run_id=row.run_id,
        progress=row.progress,
        result=row.result,
        error=row.error,
        created_at=row.created_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        next_step=hint,
    )


def job_row(ws: Workspace, job_id: str) -> JobRow:
    row = ws.job_store.get(check_id(job_id, "job"))
    if row is None:
        raise NotFoundError(f"No job {job_id!r} in this workspace. Call list_jobs to see the job ids.")
    return row


class JobManager:
    """Starts worker processes for queued jobs: at most max_jobs run at once in the workspace, counted in the job
    store across every server process (orphans included)."""

    def __init__(self, ws: Workspace, *, max_jobs: int | None = None, poll_interval: float = 0.2) -> None:
        self.ws = ws
        self.max_jobs = max(1, max_jobs or ws.settings.max_jobs)
        self.poll_interval = poll_interval
        self._procs: dict[str, subprocess.Popen[bytes] | ForkedWorker] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._orphans_checked = 0.0

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> JobManager:
        self.mark_orphans_interrupted()
        warm_up(self._worker_env())  # its imports run while the server waits for its first job
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
                self.ws.job_store.finish(job_id, "interrupted", error="The server stopped while the job ran.")

    def _alive(self, row: JobRow) -> bool:
        if row.job_id in self._procs:  # this manager's worker, exited or not: _reap judges it by its exit code
            return True  # (a forked worker's code arrives a moment after its pid is gone, maybe after _reap ran)
        if row.status == "running" and row.pid:
            return pid_alive(row.pid)
        if row.status == "running":  # launched, pid not written yet: its server decides
            return pid_alive(row.owner_pid)
        return row.owner_pid == os.getpid() or pid_alive(row.owner_pid)  # queued: its server will start it

    def mark_orphans_interrupted(self) -> int:
        """Jobs left running/queued by a server or worker that no longer exists become 'interrupted'."""
        count = 0
        for row in self.ws.job_store.active():
            if not self._alive(row) and self.ws.job_store.finish(row.job_id, "interrupted", error=VANISHED):
                count += 1
        return count

    # -- jobs ------------------------------------------------------------------------------

    def submit(self, spec: JobSpec, *, namespace: str = "default") -> str:
        """Record a job for this spec and schedule it; refuses when the queue is full."""
        queued = self.ws.job_store.count("queued")
        if queued >= MAX_QUEUED:
            raise ConflictError(
                f"{queued} jobs are already queued (the limit is {MAX_QUEUED}). Wait for some to finish "
                "(list_jobs), or cancel_job the ones you no longer need, then call again."
            )
        job_id = new_id("job")
        self.ws.job_store.insert(
            job_id,
            kind=spec.kind,
            run_id=spec.run_id,
            namespace=namespace,
            spec=spec.model_dump(mode="json"),
            owner_pid=os.getpid(),
        )
        self._schedule()
        return job_id

    def cancel(self, job_id: str) -> JobStatus:
        row = job_row(self.ws, job_id)
        if row.status in FINISHED:
            return job_status(row)
        self.ws.job_store.request_cancel(job_id)
        if row.status == "queued":
            self.ws.job_store.finish(job_id, "cancelled", error="Cancelled before it started.")
        elif not self._alive(row):  # an orphan whose worker is gone: nobody else will end it
            self.ws.job_store.finish(job_id, "cancelled", error="Cancelled; its worker had already vanished.")
        return job_status(job_row(self.ws, job_id))

    def resume(self, job_id: str) -> JobStatus:
        row = job_row(self.ws, job_id)
        if row.status in ACTIVE and not self._alive(row):
            self.ws.job_store.finish(job_id, "interrupted", error=VANISHED)
            row = job_row(self.ws, job_id)
        if row.status not in ("interrupted", "failed", "cancelled"):
            raise ConflictError(
                f"Job {job_id!r} is {row.status}; only an interrupted, failed or cancelled job can be resumed."
            )
        self.ws.job_store.requeue(job_id, spec={**row.spec, "resume": True}, owner_pid=os.getpid())
        self._schedule()
        return job_status(job_row(self.ws, job_id))

    def wait_worker(self, job_id: str, timeout: float) -> bool:
        """Wait until the worker process of a finished job has exited (it records the job's end, then exits);
        True when it is gone, False when it still runs after `timeout`."""
        with self._lock:
            proc = self._procs.get(job_id)
        if proc is not None:  # started by this manager: reap it
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                return False
            with self._lock:
                self._procs.pop(job_id, None)
            return True
        pid, deadline = job_row(self.ws, job_id).pid, time.monotonic() + timeout
        while pid and time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return True
            time.sleep(0.1)
        return not pid

    def stop_worker(self, job_id: str) -> bool:
        """SIGTERM to the worker of a job whose cancel was requested: it stops at once (the worker ends a
        terminated job as cancelled when a cancel was asked, else as interrupted); False when there is none."""
        row = job_row(self.ws, job_id)
        if row.status not in ACTIVE or not row.pid or not pid_alive(row.pid):
            return False
        try:
            os.kill(row.pid, signal.SIGTERM)
        except ProcessLookupError:
            return False
        return True

    def kill_worker(self, job_id: str, sig: int = signal.SIGKILL) -> None:
        """Send a signal to a job's worker (tests and operators)."""
        pid = job_row(self.ws, job_id).pid
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
                log.exception("job scheduler tick failed")
            self._wake.wait(self.poll_interval)
            self._wake.clear()

    def _reap(self) -> None:
        """Forget finished worker processes; a worker that died mid-job fails its job with the reason."""
        for job_id, proc in list(self._procs.items()):
            code = proc.poll()
            if code is None:
                continue
            del self._procs[job_id]
            if code != 0:
                how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
                self.ws.job_store.finish(
                    job_id,
                    "failed",
                    error=f"The worker process {how} before finishing (out of memory, or killed). "
                    f"See {self.log_path(job_id)}. The server is still running; call the tool again or resume_job.",
                )

    def _tick(self) -> None:
        with self._lock:
            self._reap()
            if time.monotonic() - self._orphans_checked >= ORPHAN_CHECK_SECONDS:
                self._orphans_checked = time.monotonic()
                self.mark_orphans_interrupted()
            for job_id in self.ws.job_store.claim(os.getpid(), self.max_jobs):  # slots counted across processes
                self._launch(job_id)

    def log_path(self, job_id: str) -> str:
        return str(self.ws.home / "jobs" / f"{job_id}.log")

    def _worker_env(self) -> dict[str, str]:
        threads = max(1, (os.cpu_count() or 1) // self.max_jobs)
        return {
            "TF_CPP_MIN_LOG_LEVEL": "2",
            "PYTHONWARNINGS": "ignore",
            **os.environ,
            "OMP_NUM_THREADS": str(threads),
            "TF_NUM_INTRAOP_THREADS": str(threads),
            SETTINGS_ENV: self.ws.settings.model_dump_json(),
        }

    def _runs_keras(self, job_id: str) -> bool:
        """Whether the job fits or loads a Keras model (its spec says); False where that cannot be told. Imports
        nothing: the job handlers' modules load NumPy, pandas or scikit-learn, which the server never does."""
        try:
            row = self.ws.job_store.get(job_id)
            spec = JobSpec.of_kind(row.kind) if row is not None else None
            return spec is not None and spec.model_validate(row.spec).runs_keras(self.ws)
        except Exception:
            return False

    def _launch(self, job_id: str) -> None:
        log_file = self.ws.home / "jobs" / f"{job_id}.log"
        log_file.parent.mkdir(parents=True, exist_ok=True)
        env = self._worker_env()
        started = self._thread is not None  # a one-shot command (no scheduler thread) starts no fork server
        proc: subprocess.Popen[bytes] | ForkedWorker | None = start_worker(
            job_id, str(log_file), env, start_server=started, tensorflow=self._runs_keras(job_id)
        )
        try:
            if proc is None:  # no fork server here: a plain process, ~2 s of imports slower to start
                with open(log_file, "ab") as out:
                    proc = subprocess.Popen(
                        [sys.executable, "-m", "ml_expert.tools.jobs.worker", job_id],
                        stdin=subprocess.DEVNULL,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        env=env,
                        start_new_session=True,
                    )
        except OSError as exc:  # claimed already: end it, or it would hold its slot
            self.ws.job_store.finish(job_id, "failed", error=f"Could not start a worker process: {exc}. Call again.")
            return
        self.ws.job_store.set_pid(job_id, proc.pid)
        self._procs[job_id] = proc

    def wait(
        self,
        job_id: str,
        timeout: float,
        on_progress: ProgressFn | None = None,
        stop: Callable[[], bool] | None = None,
    ) -> JobStatus:
        """Block until the job finishes, timeout passes or stop() says so (the CLI's Ctrl-C), calling
        on_progress(progress) on changes."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while True:
            status = job_status(job_row(self.ws, job_id))
            if on_progress is not None and status.progress != last:
                last = status.progress
                on_progress(status.progress)
            if status.status not in ACTIVE or time.monotonic() >= deadline or (stop is not None and stop()):
                return status
            if self._thread is None:
                self._tick()
            time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))


def run_as_job(
    ws: Workspace,
    spec: JobSpec,
    *,
    namespace: str,
    wait_seconds: float | None,
    report: ProgressFn | None = None,
) -> JobStatus:
    """Submit a job and wait for it up to wait_seconds (default: the server's), forwarding progress."""
    job_id = ws.jobs.submit(spec, namespace=namespace)
    return ws.jobs.wait(job_id, ws.wait_for(wait_seconds), on_progress=report)
