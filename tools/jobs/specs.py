"""What crosses the process boundary: a typed spec per job kind, and the status a client sees.

A tool function validates the call and builds the spec (`TrainSpec`, `EvaluateSpec`, …, each
defined next to its tool); the job manager stores it as JSON; the worker validates it back into
the same class before running the handler. Unknown fields are refused on both sides.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from ml_expert.tools.settings import MAX_WAIT_SECONDS

RUNNING_JOB: ContextVar[str | None] = ContextVar("ml_expert_running_job", default=None)  # the job this code runs in

if TYPE_CHECKING:
    from ml_expert.tools.workspace import Workspace

JobState = Literal["queued", "running", "succeeded", "failed", "cancelled", "interrupted"]
JobId = Annotated[str, Field(description="Job id returned by train or run_workflow, e.g. 'job_1a2b3c4d'.")]
WaitSeconds = Annotated[
    float | None,
    Field(
        description="Seconds to wait, then return the running job (follow with get_job); default: the server's.",
        ge=0,
        le=MAX_WAIT_SECONDS,
    ),
]
ProgressFn = Callable[[dict[str, Any]], None]


class JobSpec(BaseModel):
    """The base of every job's spec: which run it works on, and whether it resumes an earlier attempt."""

    model_config = ConfigDict(extra="forbid")
    kind: ClassVar[str]

    run_id: str
    resume: bool = False

    @classmethod
    def of_kind(cls, kind: str) -> type[JobSpec] | None:
        """The spec class of a job kind among the classes this process has imported (the tool that submits a job
        imports its spec's module), or None: a lookup that imports nothing, for the job manager."""
        stack = list(cls.__subclasses__())
        while stack:
            spec = stack.pop()
            if getattr(spec, "kind", None) == kind:
                return spec
            stack += spec.__subclasses__()
        return None

    def runs_keras(self, ws: Workspace) -> bool:
        """Whether the job fits or loads a Keras model: its worker then forks from the server that has TensorFlow
        loaded. Read by the job manager at launch; a wrong answer only costs start-up time."""
        return False


class Reporter(Protocol):
    """What a job handler reports progress to: the worker's job row, a workflow phase, the terminal, a tool call.

    `progress` is also a cancel point (it raises JobCancelled once cancel_job set the flag, except inside
    `graceful()`, where the handler checks `cancel_requested()` itself and stops cleanly); `checkpoint` is a cancel
    point without a message."""

    def progress(self, force: bool = False, **info: Any) -> None: ...

    def cancel_requested(self) -> bool: ...

    def checkpoint(self) -> None: ...

    def graceful(self) -> AbstractContextManager[None]: ...

    def flush(self) -> None: ...


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
