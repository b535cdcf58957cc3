"""Runs: one pass of the workflow over one dataset and target. Tools: `list_runs`, `get_run`.

A run's row in SQLite records each phase's status, artifacts and the memory keys it wrote;
`record_phase` is the one place that writes a phase's result to memory, under the seed's
well-known key (`ml-expert/metrics`, …) and under `ml-expert/runs/<run_id>/<phase>`.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

from pydantic import BaseModel, Field

from ml_expert.memory import DEFAULT_NAMESPACE, RunRow
from ml_expert.memory.errors import NotFoundError
from ml_expert.tools.workspace import Workspace, check_id, new_id

WORKFLOW_MEMORY = (
    "data-analysis",
    "prepared-data",
    "task-analysis",
    "architecture",
    "training",
    "metrics",
    "deployment",
)
PHASES = (*WORKFLOW_MEMORY, "predictions", "explanations")  # every memory name a phase writes
PHASE_ORDER = ("analyze", "prepare", "recommend", "train", "evaluate", "package")

RunId = Annotated[str, Field(description="Run id returned by analyze_data or prepare_data, e.g. 'run_5f2c9a1b'.")]
Namespace = Annotated[
    str,
    Field(description="Memory namespace for the phase results (claude-flow style); default 'default'."),
]


def memory_key(name: str) -> str:
    return f"ml-expert/{name}"


class PhaseRecord(BaseModel):
    status: str
    at: float
    memory_keys: list[str] = Field(default_factory=list)
    artifacts: dict[str, str] = Field(default_factory=dict)


class RunInfo(BaseModel):
    run_id: str
    namespace: str
    dataset: str | None
    target: str | None
    created_at: float
    updated_at: float
    phases: dict[str, PhaseRecord] = Field(description="Phase name -> status, artifacts, memory keys written.")
    next_phase: str | None = Field(description="The phase after the last one done, or null after package.")
    folder: str = Field(description="Artifact folder of the run, relative to the workspace.")


class RunList(BaseModel):
    runs: list[RunInfo]
    total: int


def create_run(ws: Workspace, *, dataset: str | None, target: str | None, namespace: str = DEFAULT_NAMESPACE) -> str:
    run_id = new_id("run")
    ws.runs.create(run_id, namespace=namespace, dataset=dataset, target=target)
    ws.run_dir(run_id).mkdir(parents=True, exist_ok=True)
    return run_id


def _row(ws: Workspace, run_id: str) -> RunRow:
    row = ws.runs.get(check_id(run_id, "run"))
    if row is None:
        raise NotFoundError(
            f"No run {run_id!r} in this workspace. Recent runs: {ws.runs.recent_ids() or 'none'}. "
            "Call list_runs, or start one with analyze_data."
        )
    return row


def next_phase(done: set[str]) -> str | None:
    """The phase after the last one done (a run prepared from a path, or trained without a recommendation, does
    not go back to the phases it skipped); the first phase when none is done; None after package."""
    last = max((PHASE_ORDER.index(p) for p in done if p in PHASE_ORDER), default=-1)
    return PHASE_ORDER[last + 1] if last + 1 < len(PHASE_ORDER) else None


def _info(ws: Workspace, row: RunRow) -> RunInfo:
    phases = {k: PhaseRecord(**v) for k, v in row.phases.items()}
    done = {k for k, v in phases.items() if v.status == "done"}
    return RunInfo(
        run_id=row.run_id,
        namespace=row.namespace,
        dataset=row.dataset,
        target=row.target,
        created_at=row.created_at,
        updated_at=row.updated_at,
        phases=phases,
        next_phase=next_phase(done),
        folder=ws.relative(ws.run_dir(row.run_id)),
    )


def get_run(ws: Workspace, run_id: RunId) -> RunInfo:
    """Show one run: dataset, target, each phase's status, artifact paths and memory keys written."""
    return _info(ws, _row(ws, run_id))


def list_runs(
    ws: Workspace,
    limit: Annotated[int, Field(description="At most this many runs, newest first.", ge=1, le=200)] = 20,
) -> RunList:
    """List the runs of this workspace, newest first, with the status of each phase."""
    rows, total = ws.runs.list(limit)
    return RunList(runs=[_info(ws, r) for r in rows], total=total)


def record_phase(
    ws: Workspace,
    run_id: str,
    phase: str,
    results: dict[str, BaseModel | dict[str, Any]],
    *,
    artifacts: dict[str, str] | None = None,
) -> list[str]:
    """Write a finished phase: each result under its well-known and per-run memory key; mark the run.

    `results` maps a memory name (e.g. "metrics") to the value. Returns the keys written.
    """
    namespace = _row(ws, run_id).namespace
    keys: list[str] = []
    for name, value in results.items():
        data = value.model_dump(mode="json") if isinstance(value, BaseModel) else value
        data = {"run_id": run_id, **data}
        for key in (memory_key(name), memory_key(f"runs/{run_id}/{name}")):
            ws.store.store(key, data, namespace=namespace, tags=["ml-expert", phase, run_id])
            keys.append(key)
    record = PhaseRecord(status="done", at=time.time(), memory_keys=keys, artifacts=artifacts or {})
    ws.runs.set_phase(run_id, phase, record.model_dump())
    return keys


def run_namespace(ws: Workspace, run_id: str) -> str:
    return _row(ws, run_id).namespace
