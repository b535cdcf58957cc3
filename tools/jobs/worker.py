"""Worker process entry point: `python -m ml_expert.tools.jobs.worker JOB_ID`.

Runs one job's handler (TensorFlow is imported here, or preloaded by the fork server of Keras jobs, never in the
MCP server) with the workspace its server had (settings arrive as JSON in the environment), validates the stored
spec into its typed class, reports progress into the job's row, honours cancel requests, and records the typed
result or a clear error.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from pydantic import BaseModel

from ml_expert.memory.errors import MLExpertError
from ml_expert.tools.jobs.specs import RUNNING_JOB, JobCancelled, JobSpec
from ml_expert.tools.settings import SETTINGS_ENV, Settings
from ml_expert.tools.workspace import Workspace

# kind -> (module, spec class, handler); modules are imported only in the worker
JOB_KINDS: dict[str, tuple[str, str, str]] = {
    "train": ("ml_expert.tools.training.train", "TrainSpec", "run_train_job"),
    "probe": ("ml_expert.tools.training.probe", "ProbeSpec", "run_probe_job"),
    "evaluate": ("ml_expert.tools.evaluation.evaluate", "EvaluateSpec", "run_evaluate_job"),
    "package": ("ml_expert.tools.packaging.build", "PackageSpec", "run_package_job"),
    "workflow": ("ml_expert.tools.workflow", "WorkflowSpec", "run_workflow_job"),
    "predict": ("ml_expert.tools.prediction.predict", "PredictSpec", "run_predict_job"),
    "explain": ("ml_expert.tools.prediction.explain", "ExplainSpec", "run_explain_job"),
}


_stopped_by: int | None = None  # the stop signal (SIGINT, SIGTERM) this worker received, once it has


def _stop(signum: int, frame: Any) -> None:
    """SIGINT (Ctrl-C) and SIGTERM (a server shutting down) end a job as interrupted: KeyboardInterrupt, raised where
    the signal lands. Library code can turn it into another error there (numpy makes it a ValueError while it parses
    a buffer's format, which HistGradientBoosting does at every tree, and the search drops a candidate that raised),
    so the job's next progress or cancel point raises it again."""
    global _stopped_by
    _stopped_by = signum
    raise KeyboardInterrupt


def _raise_if_stopped() -> None:
    if _stopped_by is not None:
        raise KeyboardInterrupt(f"stopped by {signal.Signals(_stopped_by).name}")


class JobReporter:
    """What a job handler gets: progress reporting and the cancel flag, both throttled.

    Every `progress` call is also a cancel point: once cancel_job has set the flag, the next progress call (or
    `checkpoint`) raises JobCancelled, which `run_job` records as 'cancelled'. So a handler that reports between
    its steps stops between them, whatever its kind. A forced progress (a step boundary) and `checkpoint` read the
    flag from the database every time; other progress calls at most every 0.25 s. Code that ends gracefully on its
    own when cancelled (training keeps its best weights) runs inside `graceful()` and polls `cancel_requested()`.
    Both `progress` and `cancel_requested` raise KeyboardInterrupt again once the worker got a stop signal (`_stop`),
    inside `graceful()` too: an interruption a library swallowed still ends the job.
    """

    def __init__(self, ws: Workspace, job_id: str, *, min_interval: float = 0.2) -> None:
        self.ws = ws
        self.job_id = job_id
        self.min_interval = min_interval
        self._last_write = 0.0
        self._last_check = 0.0
        self._cancelled = False
        self._graceful = 0
        self._pending: dict[str, Any] | None = None

    def progress(self, force: bool = False, **info: Any) -> None:
        _raise_if_stopped()
        self._pending = info
        now = time.monotonic()
        if force or now - self._last_write >= self.min_interval:
            self.flush()
        self._raise_if_cancelled(fresh=force)

    def flush(self) -> None:
        if self._pending is None:
            return
        self.ws.job_store.set_progress(self.job_id, self._pending)
        self._pending = None
        self._last_write = time.monotonic()

    def cancel_requested(self, *, fresh: bool = False) -> bool:
        """Whether cancel_job asked this job to stop (read from the database at most every 0.25 s unless fresh)."""
        _raise_if_stopped()
        now = time.monotonic()
        if not self._cancelled and (fresh or now - self._last_check >= 0.25):
            self._last_check = now
            self._cancelled = self.ws.job_store.cancel_requested(self.job_id)
        return self._cancelled

    def checkpoint(self) -> None:
        """A cancel point between steps: raise JobCancelled when the job's cancel was requested."""
        self._raise_if_cancelled(fresh=True)

    def _raise_if_cancelled(self, *, fresh: bool) -> None:
        if not self._graceful and self.cancel_requested(fresh=fresh):
            raise JobCancelled()

    @contextmanager
    def graceful(self) -> Iterator[None]:
        """A block that handles cancel itself (polls cancel_requested and ends with its partial result): progress
        calls inside it report without raising."""
        self._graceful += 1
        try:
            yield
        finally:
            self._graceful -= 1


def handler_for(kind: str) -> tuple[type[JobSpec], Any]:
    """The spec class and the function that run a job of this kind."""
    module_name, spec_name, handler_name = JOB_KINDS[kind]
    module = importlib.import_module(module_name)
    return getattr(module, spec_name), getattr(module, handler_name)


def as_json(result: Any) -> Any:
    return result.model_dump(mode="json") if isinstance(result, BaseModel) else result


def run_job(ws: Workspace, job_id: str) -> None:
    """Run one recorded job to its end and record how it ended."""
    store = ws.job_store
    row = store.get(job_id)
    if row is None:
        raise SystemExit(f"no job {job_id}")
    reporter = JobReporter(ws, job_id)
    with reporter.graceful():  # not a cancel point: each handler ends at its own first one (training: a batch)
        reporter.progress(force=True, message="worker started", phase="starting")
    running = RUNNING_JOB.set(job_id)  # a phase of a workflow job knows the job it runs in
    try:
        spec_class, handler = handler_for(row.kind)
        result = handler(ws, spec_class.model_validate(row.spec), reporter)
    except JobCancelled as exc:
        reporter.flush()
        partial = as_json(exc.args[0]) if exc.args else None
        store.finish(job_id, "cancelled", result=partial, error="Cancelled on request.")
        return
    except KeyboardInterrupt:  # SIGTERM: a server shutting down, or a cancel the job did not reach a step for
        if store.cancel_requested(job_id):
            store.finish(job_id, "cancelled", error="Cancelled on request (the worker was stopped with SIGTERM).")
        else:
            store.finish(job_id, "interrupted", error="The worker was stopped. Call resume_job to continue.")
        return
    except MLExpertError as exc:
        reporter.flush()
        store.finish(job_id, "failed", error=str(exc))
        return
    except Exception as exc:
        traceback.print_exc()
        reporter.flush()
        store.finish(job_id, "failed", error=f"{type(exc).__name__}: {exc}")
        return
    finally:
        RUNNING_JOB.reset(running)
    reporter.flush()
    store.finish(job_id, "succeeded", result=as_json(result))


def main(argv: list[str] | None = None) -> int:
    job_id = (argv or sys.argv[1:])[0]
    ws = Workspace(settings=Settings.model_validate_json(os.environ[SETTINGS_ENV]))
    for sig in (signal.SIGINT, signal.SIGTERM):  # both end the job as interrupted, keeping its checkpoint
        signal.signal(sig, _stop)
    ws.job_store.set_pid(job_id, os.getpid())
    preloaded = "tensorflow" in sys.modules  # forked from the fork server of Keras jobs
    print(f"worker {os.getpid()} for {job_id}; TensorFlow {'preloaded' if preloaded else 'not loaded'}", flush=True)
    run_job(ws, job_id)
    return 0


if __name__ == "__main__":
    sys.exit(main())
