"""All phases in one job — `run_workflow`: analyze → prepare → recommend → train → evaluate → package.

Each phase writes its memory key as it completes. If a phase fails, the job stops there with that
phase's error and everything before it stays usable; `resume=run_id` continues from the first
unfinished phase.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, Field, ValidationError

from ml_expert.tools import runs
from ml_expert.tools.errors import InvalidInputError, MLExpertError
from ml_expert.tools.evaluation import TargetSpec
from ml_expert.tools.jobs import JobStatus, ProgressFn, WaitSeconds, run_as_job
from ml_expert.tools.models import Architecture, TrainConfig
from ml_expert.tools.packaging import Format
from ml_expert.tools.workspace import Workspace, new_id

PHASES = runs.PHASE_ORDER


class WorkflowResult(BaseModel):
    run_id: str
    model_id: str | None
    architecture: str | None
    task_type: str | None
    test_metrics: dict[str, float]
    baseline_metrics: dict[str, float]
    beats_baseline: bool | None
    target: dict[str, Any] | None
    report: str | None
    curves: str | None
    deployment: str | None
    default_runtime: str | None
    phases_run: list[str]
    summary: str
    next_step: str


class PhaseReporter:
    """Maps a phase's own progress (e.g. epochs) into overall progress that only ever increases."""

    def __init__(self, reporter: Any, index: int, name: str) -> None:
        self.reporter, self.index, self.name = reporter, index, name
        self.last = float(index)

    def progress(self, force: bool = False, **info: Any) -> None:
        inner = (info.get("step") or 0) / info["total"] if info.get("total") else 0.0
        message = f"phase {self.index + 1}/{len(PHASES)} {self.name}: {info.get('message', '')}".rstrip(": ")
        self.last = max(self.last, self.index + min(inner, 0.999))
        self.reporter.progress(
            force=force,
            **{
                **info,
                "phase": self.name,
                "step": self.last,
                "total": len(PHASES),
                "message": message,
            },
        )

    def cancel_requested(self) -> bool:
        return self.reporter.cancel_requested()

    def flush(self) -> None:
        self.reporter.flush()


def _phase(ws: Workspace, spec: dict[str, Any], run_id: str, name: str, reporter: Any) -> dict[str, Any] | None:
    from ml_expert.tools.analysis import analyze_data
    from ml_expert.tools.evaluation import run_evaluate_job
    from ml_expert.tools.packaging import run_package_job
    from ml_expert.tools.preparation import load_prepared, prepare_data
    from ml_expert.tools.selection import recommend_architecture, run_probe_job
    from ml_expert.tools.training import resolve_architecture, run_train_job

    if name == "analyze":
        analyze_data(ws, spec["path"], target=spec.get("target"), run_id=run_id)
    elif name == "prepare":
        prepare_data(ws, run_id=run_id)
    elif name == "recommend":
        rec = recommend_architecture(ws, run_id)  # rules; a probe below replaces the ranking with measurements
        if spec.get("probe_seconds"):
            measured = run_probe_job(
                ws,
                {
                    "run_id": run_id,
                    "architectures": [c.architecture for c in rec.candidates[:3]],
                    "budget": spec["probe_seconds"],
                },
                reporter,
            )
            best = max(measured, key=lambda a: measured[a]["score"])
            stored = rec.model_dump(mode="json") | {"recommended": best, "probe": measured}
            runs.record_phase(ws, run_id, "recommend", {"task-analysis": rec.task_analysis, "architecture": stored})
    elif name == "train":
        prepared = load_prepared(ws, run_id)
        arch = resolve_architecture(ws, run_id, spec.get("architecture") or "auto", prepared)
        return run_train_job(
            ws,
            {
                "run_id": run_id,
                "model_id": new_id("mdl"),
                "architecture": arch,
                "config": spec.get("config") or TrainConfig().model_dump(),
                "distribution": "none",
            },
            reporter,
        )
    elif name == "evaluate":
        from ml_expert.tools.predict import load_model_meta

        model_id = load_model_meta(ws, run_id, None)["model_id"]
        return run_evaluate_job(
            ws, {"run_id": run_id, "model_ids": [model_id], "target": spec.get("target_metric")}, reporter
        )
    elif name == "package":
        return run_package_job(
            ws,
            {
                "run_id": run_id,
                "model_id": None,
                "formats": spec.get("formats") or None,
                "output_dir": spec.get("output_dir"),
            },
            reporter,
        )
    return None


def _result(ws: Workspace, run_id: str, done: list[str]) -> WorkflowResult:
    ns = runs.run_namespace(ws, run_id)

    def mem(name: str) -> dict[str, Any]:
        return ws.store.get_value(runs.memory_key(f"runs/{run_id}/{name}"), namespace=ns) or {}

    training, metrics, deployment = mem("training"), mem("metrics"), mem("deployment")
    ev = (metrics.get("evaluations") or [{}])[0]
    test, base = ev.get("test_metrics", {}), ev.get("baseline_metrics", {})
    key = next((k for k in ("balanced_accuracy", "r2", "adjusted_rand") if k in test), None)
    summary = f"{training.get('architecture', '?')} on {run_id}: "
    if key:
        summary += f"test {key} {test[key]:.4f} vs baseline {base.get(key, float('nan')):.4f}"
        summary += " (beats the baseline)." if ev.get("beats_baseline") else " (NOT better than the baseline)."
    if deployment.get("folder"):
        summary += f" Package: {deployment['folder']} (verified: {deployment.get('verified')})."
    return WorkflowResult(
        run_id=run_id,
        model_id=training.get("model_id"),
        architecture=training.get("architecture"),
        task_type=training.get("task_type"),
        test_metrics=test,
        baseline_metrics=base,
        beats_baseline=ev.get("beats_baseline"),
        target=ev.get("target"),
        report=metrics.get("report"),
        curves=training.get("artifacts", {}).get("curves"),
        deployment=deployment.get("folder"),
        default_runtime=deployment.get("default_runtime"),
        phases_run=done,
        summary=summary,
        next_step=f"Read the report (resource ml-expert://runs/{run_id}/report) or predict with "
        f"{deployment.get('folder', 'the deployment folder')}/inference.py.",
    )


def run_workflow_job(ws: Workspace, spec: dict[str, Any], reporter: Any) -> dict[str, Any]:
    """Worker entry for kind 'workflow'."""
    run_id = spec["run_id"]
    info = runs.get_run(ws, run_id)
    done_before = {p for p, rec in info.phases.items() if rec.status == "done"}
    done: list[str] = []
    for i, name in enumerate(PHASES):
        if name in done_before and spec.get("resume"):
            continue
        phase_reporter = PhaseReporter(reporter, i, name)
        phase_reporter.progress(force=True, message="started")
        try:
            _phase(ws, spec, run_id, name, phase_reporter)
        except MLExpertError as exc:
            raise type(exc)(
                f"Phase '{name}' failed: {exc} Earlier phases are kept; fix the cause and call "
                f"run_workflow(resume='{run_id}')."
            ) from exc
        done.append(name)
    reporter.progress(force=True, phase="done", step=len(PHASES), total=len(PHASES), message="workflow finished")
    return _result(ws, run_id, done).model_dump(mode="json")


def run_workflow(
    ws: Workspace,
    path: Annotated[str | None, Field(description="Dataset file inside the workspace, e.g. 'data/houses.csv'.")] = None,
    target: Annotated[str | None, Field(description="Column to predict, e.g. 'price'.")] = None,
    architecture: Annotated[Architecture, Field(description="Model family; 'auto' = recommended.")] = "auto",
    target_metric: Annotated[
        TargetSpec | None, Field(description="Goal checked by evaluate, e.g. {'metric': 'accuracy', 'min': 0.9}.")
    ] = None,
    formats: Annotated[list[Format] | None, Field(description="Package formats (default per framework).")] = None,
    config: Annotated[
        dict[str, Any] | None, Field(description="Training hyper-parameters: the fields of train's config.")
    ] = None,
    probe_seconds: Annotated[float, Field(description="Probe budget for the recommendation (0 = rules).", ge=0)] = 0,
    output_dir: Annotated[str | None, Field(description="Deployment folder inside the workspace.")] = None,
    resume: Annotated[str | None, Field(description="run_id of a stopped workflow: continue where it stopped.")] = None,
    namespace: runs.Namespace = "default",
    wait_seconds: WaitSeconds = 45,
    report: ProgressFn | None = None,
) -> JobStatus:
    """Run all phases (analyze, prepare, recommend, train, evaluate, package) as one job.

    Returns the summary when done within wait_seconds; else follow with get_job(job_id).
    """
    try:
        train_config = TrainConfig(**(config or {})).model_dump()
    except ValidationError as exc:
        raise InvalidInputError(f"config is not a valid training configuration: {exc}") from exc
    if resume:
        info = runs.get_run(ws, resume)
        run_id, namespace = resume, info.namespace
        path, target = path or info.dataset, target or info.target
    else:
        if path is None:
            raise InvalidInputError("run_workflow needs path= (a dataset file) or resume= (a run_id).")
        ws.resolve_path(path, kind="dataset")
        run_id = runs.create_run(ws, dataset=path, target=target, namespace=namespace)
    spec = {
        "run_id": run_id,
        "path": path,
        "target": target,
        "architecture": architecture,
        "target_metric": target_metric.model_dump() if target_metric else None,
        "formats": formats,
        "config": train_config,
        "probe_seconds": probe_seconds,
        "output_dir": output_dir,
        "resume": bool(resume),
    }
    return run_as_job(
        ws, "workflow", spec, run_id=run_id, namespace=namespace, wait_seconds=wait_seconds, report=report
    )
