"""Job tools: `get_job`, `list_jobs`, `cancel_job`, `resume_job`."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from ml_expert.tools.jobs.manager import job_row, job_status
from ml_expert.tools.jobs.specs import JobId, JobList, JobState, JobStatus, ProgressFn, WaitSeconds
from ml_expert.tools.workspace import Workspace


def get_job(ws: Workspace, job_id: JobId) -> JobStatus:
    """Status, progress (epoch, metrics), result or error of a background job."""
    return job_status(job_row(ws, job_id))


def list_jobs(
    ws: Workspace,
    status: Annotated[JobState | None, Field(description="Only jobs in this state, e.g. 'running'.")] = None,
    limit: Annotated[int, Field(description="At most this many jobs, newest first.", ge=1, le=200)] = 20,
) -> JobList:
    """List background jobs, newest first; each finished job's result is left out (get_job has it)."""
    rows, total = ws.job_store.list(status=status, limit=limit)
    # a search's result holds its leaderboard: 20 of them were 45 KB of an agent's context
    return JobList(jobs=[job_status(r).model_copy(update={"result": None}) for r in rows], total=total)


def cancel_job(ws: Workspace, job_id: JobId) -> JobStatus:
    """Stop a job: training ends at the next batch/epoch and keeps the best weights so far; other jobs stop at their
    next step (within seconds); status 'cancelled'."""
    return ws.jobs.cancel(job_id)


def resume_job(
    ws: Workspace, job_id: JobId, wait_seconds: WaitSeconds = None, report: ProgressFn | None = None
) -> JobStatus:
    """Continue an interrupted (or failed/cancelled) training job from its last checkpoint."""
    ws.jobs.resume(job_id)
    return ws.jobs.wait(job_id, ws.wait_for(wait_seconds), on_progress=report)
