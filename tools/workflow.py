"""All phases in one job — `run_workflow`: analyze → prepare → recommend → train → evaluate → package.

Each phase writes its memory key as it completes. If a phase fails, the job stops there with that
phase's error and everything before it stays usable; `resume=run_id` continues after the last finished
phase.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Annotated, Any

from pydantic import BaseModel, Field

from ml_expert.memory.errors import InvalidInputError, MLExpertError
from ml_expert.memory.store import check_name
from ml_expert.tools import runs
from ml_expert.tools.artifacts import load_model_meta
from ml_expert.tools.core.architectures import Architecture, is_keras
from ml_expert.tools.core.scoring import TargetSpec
from ml_expert.tools.data.analyze import analyze_data
from ml_expert.tools.data.prepare import prepare_data
from ml_expert.tools.data.profiling import TaskChoice
from ml_expert.tools.evaluation.evaluate import evaluate_spec, run_evaluate_job
from ml_expert.tools.jobs.manager import run_as_job
from ml_expert.tools.jobs.specs import JobCancelled, JobSpec, JobStatus, ProgressFn, Reporter, WaitSeconds
from ml_expert.tools.packaging.export import Format
from ml_expert.tools.packaging.package import check_output_dir, package_spec
from ml_expert.tools.selection.recommend import recommend
from ml_expert.tools.training.config import TimeBudget, TrainConfig
from ml_expert.tools.training.train import parse_config, run_train_job, train_spec
from ml_expert.tools.workspace import Workspace

PHASES = runs.PHASE_ORDER
AUTO_SPLIT = (0.8, 0.1, 0.1)
MAX_ALERTS = 3  # high-severity data warnings quoted in the summary


class WorkflowSpec(JobSpec):
    """A checked run_workflow call, read by the worker that runs the phases."""

    kind = "workflow"
    path: str
    target: str | None = None
    architecture: str = "auto"
    target_metric: TargetSpec | None = None
    formats: list[str] | None = None
    config: TrainConfig = Field(default_factory=TrainConfig)
    probe_seconds: float = 0
    time_budget_s: TimeBudget = 60.0
    output_dir: str | None = None
    refit_all_rows: bool | None = None
    task_type: TaskChoice = "auto"
    time_column: str | None = None

    def runs_keras(self, ws: Workspace) -> bool:
        return is_keras(self.architecture)


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
    data_alerts: list[str] = Field(
        default_factory=list, description="analyze_data's high-severity warnings (a suspected leak, tiny classes)."
    )
    summary: str
    next_step: str


class PhaseReporter:
    """Maps a phase's own progress (e.g. epochs) into overall progress that only ever increases."""

    def __init__(self, reporter: Reporter, index: int, name: str) -> None:
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

    def checkpoint(self) -> None:
        self.reporter.checkpoint()

    def graceful(self) -> AbstractContextManager[None]:
        return self.reporter.graceful()

    def flush(self) -> None:
        self.reporter.flush()


def _phase(ws: Workspace, spec: WorkflowSpec, name: str, reporter: Reporter) -> None:
    """Run one phase through the same spec builders and job handlers as the phase's own tool."""
    run_id = spec.run_id
    if name == "analyze":
        analyze_data(ws, spec.path, target=spec.target, run_id=run_id, task_type=spec.task_type)
    elif name == "prepare":
        # auto cross-validates over train + validation, so a small validation split loses nothing
        split = {"split": AUTO_SPLIT} if spec.architecture == "auto" else {}
        # auto: what analyze_data was told (a resumed run keeps the task type it started with)
        task = None if spec.task_type == "auto" else spec.task_type
        if spec.time_column:  # a forecast: oldest rows train, newest test (the search's folds keep that order)
            split |= {"split_strategy": "time", "time_column": spec.time_column}
        prepare_data(ws, run_id=run_id, target=spec.target, task_type=task, **split)  # target: a resume may add it
    elif name == "recommend":
        from ml_expert.tools.training.probe import probe_measure  # scikit-learn & co.: in the worker only

        measure = probe_measure(ws, run_id, spec.probe_seconds, reporter) if spec.probe_seconds else None
        recommend(ws, run_id, 3, measure)
    elif name == "train":
        training = train_spec(ws, run_id, spec.architecture, spec.config, time_budget_s=spec.time_budget_s)
        run_train_job(ws, training, reporter)
    elif name == "evaluate":
        meta = load_model_meta(ws, run_id, None)
        model_id = meta.refit_of or meta.model_id  # a refit of all rows (an earlier package) has no test rows left
        run_evaluate_job(ws, evaluate_spec(ws, run_id, model_id, target=spec.target_metric), reporter)
    elif name == "package":
        from ml_expert.tools.packaging.build import run_package_job  # scikit-learn & co.: worker only

        packaging = package_spec(ws, run_id, None, spec.formats, spec.output_dir, spec.refit_all_rows)
        run_package_job(ws, packaging, reporter)


def package_line(deployment: dict[str, Any]) -> str:
    """The package's sentence of the workflow's summary; loud when no format passed its check (the folder then has
    no runtime, and its inference.py refuses to run)."""
    line = f" Package: {deployment['folder']} (verified: {deployment.get('verified')})."
    if deployment.get("verified") is False:
        failed = "; ".join(
            f"{f.get('format')}: {f.get('error') or 'failed its check'}" for f in deployment.get("formats") or []
        )
        line += (
            f" NO format passed its check ({failed or 'none was exported'}), so the package cannot predict: do not"
            " deploy it; fix the cause and call package(...) again."
        )
    return line


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
        if ev.get("beats_baseline") and (ev.get("interval") or {}).get("within_chance"):  # a small test split
            summary += f" On {ev['interval']['rows']:,} test rows that gain is within chance (see the report)."
    elif (
        training and not test
    ):  # e.g. a run packaged without an evaluation, then resumed: nothing to quote, and it says so
        summary += f"not evaluated: no test score. Call evaluate(run_id='{run_id}')."
    if deployment.get("refit_of"):
        summary += f" The packaged model {deployment['model_id']} refits it on all rows."
    if deployment.get("folder"):
        summary += package_line(deployment)
    options = mem("prepared-data").get("options") or {}
    ordered_by = options.get("time_column") if options.get("split_strategy") == "time" else None
    alerts = [
        w["message"]
        for w in mem("data-analysis").get("warnings") or []
        if w.get("severity") == "high" and not (w.get("code") == "time_series" and w.get("column") == ordered_by)
    ]
    if alerts:  # a suspected leak makes a perfect test score; say so beside it, not only in the analysis
        more = f" (and {len(alerts) - MAX_ALERTS} more in ml-expert/data-analysis)" if len(alerts) > MAX_ALERTS else ""
        summary += " Check the data first: " + " ".join(alerts[:MAX_ALERTS]) + more
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
        data_alerts=alerts,
        summary=summary,
        next_step=f"Read the report (resource ml-expert://runs/{run_id}/report) or predict with "
        f"{deployment.get('folder', 'the deployment folder')}/inference.py.",
    )


def run_workflow_job(ws: Workspace, spec: WorkflowSpec, reporter: Reporter) -> WorkflowResult:
    """Worker entry for kind 'workflow'."""
    run_id = spec.run_id
    info = runs.get_run(ws, run_id)
    start = runs.next_phase({p for p, rec in info.phases.items() if rec.status == "done"}) if spec.resume else None
    done: list[str] = []
    for i, name in enumerate(PHASES):
        if spec.resume and (start is None or i < PHASES.index(start)):  # after the last phase done, as get_run says
            continue
        phase_reporter = PhaseReporter(reporter, i, name)
        phase_reporter.progress(force=True, message="started")
        try:
            _phase(ws, spec, name, phase_reporter)
        except JobCancelled:
            raise
        except Exception as exc:  # ml-expert's own errors, and a library's (a fit that fails on this data)
            own = isinstance(exc, MLExpertError)
            reason = str(exc) if own else f"{type(exc).__name__}: {exc}"  # a library's: named as the worker names it
            raise (type(exc) if own else MLExpertError)(
                f"Phase '{name}' failed: {reason} Earlier phases are kept; fix the cause and call "
                f"run_workflow(resume='{run_id}')."
            ) from exc
        done.append(name)
    reporter.progress(force=True, phase="done", step=len(PHASES), total=len(PHASES), message="workflow finished")
    return _result(ws, run_id, done)


def _started_with_time_column(ws: Workspace, run_id: str) -> str | None:
    """The time_column of the run's last workflow job, unless that job failed on it (a column that is not there):
    a resume then splits at random unless it names another."""
    last = ws.job_store.latest(run_id, WorkflowSpec.kind)
    column = last.spec.get("time_column") if last is not None else None
    return None if column is None or "time_column" in (last.error or "") else column


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
        dict[str, Any] | None,
        Field(description="Training hyper-parameters: the fields of train's config, e.g. {'epochs': 20}."),
    ] = None,
    probe_seconds: Annotated[float, Field(description="Probe budget for the recommendation (0 = rules).", ge=0)] = 0,
    time_budget_s: TimeBudget = 60,
    output_dir: Annotated[str | None, Field(description="Deployment folder inside the workspace.")] = None,
    refit_all_rows: Annotated[
        bool | None,
        Field(description="Package a refit of the evaluated auto model on all rows (default: a cheap regression)."),
    ] = None,
    task_type: Annotated[
        TaskChoice,
        Field(description="Overrules the task guessed from the target (auto)."),
    ] = "auto",
    time_column: Annotated[
        str | None, Field(description="Split in time order on this column (oldest rows train, newest test).")
    ] = None,
    resume: Annotated[str | None, Field(description="run_id of a stopped workflow: continue where it stopped.")] = None,
    namespace: runs.Namespace = "default",
    wait_seconds: WaitSeconds = None,
    report: ProgressFn | None = None,
) -> JobStatus:
    """Run all phases (analyze, prepare, recommend, train, evaluate, package) as one job.

    Returns the summary when done within wait_seconds; else follow with get_job(job_id).
    """
    train_config = parse_config(config)
    check_name("namespace", namespace)
    if output_dir:
        check_output_dir(ws, output_dir)
    if resume:
        info = runs.get_run(ws, resume)
        run_id, namespace = resume, info.namespace
        prepared = "prepare" in info.phases
        if prepared and task_type != "auto":  # it would be ignored: the task was decided with the prepared data
            raise InvalidInputError(
                f"Run {resume!r} is already prepared, so its task type is decided; task_type={task_type!r} would be "
                "ignored. Resume without it, or start a new run with run_workflow(path=..., task_type=...)."
            )
        if prepared and time_column:  # likewise: the rows are already split
            raise InvalidInputError(
                f"Run {resume!r} is already prepared, so its split is made; time_column={time_column!r} would be "
                "ignored. Resume without it, or start a new run with run_workflow(path=..., time_column=...)."
            )
        path, target = path or info.dataset, target or info.target
        if not prepared and time_column is None:  # the split the run was started with, not a random one
            time_column = _started_with_time_column(ws, resume)
    else:
        if path is None:
            raise InvalidInputError("run_workflow needs path= (a dataset file) or resume= (a run_id).")
        ws.resolve_path(path, kind="dataset")
        run_id = runs.create_run(ws, dataset=path, target=target, namespace=namespace)
    spec = WorkflowSpec(
        run_id=run_id,
        path=path or "",
        target=target,
        architecture=architecture,
        target_metric=target_metric,
        formats=formats,
        config=train_config,
        probe_seconds=probe_seconds,
        time_budget_s=time_budget_s,
        output_dir=output_dir,
        refit_all_rows=refit_all_rows,
        task_type=task_type,
        time_column=time_column,
        resume=bool(resume),
    )
    return run_as_job(ws, spec, namespace=namespace, wait_seconds=wait_seconds, report=report)
