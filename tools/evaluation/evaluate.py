"""Phase 4 — `evaluate`: honest test metrics, baseline, overfitting verdict, `evaluation_report.md`.

Runs as a job (Keras models need TensorFlow, which the server never imports). Metrics come from
the held-out test split, which neither fitting nor early stopping saw. Stores `ml-expert/metrics`.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from functools import partial
from typing import Annotated, Any

from pydantic import BaseModel, Field

from ml_expert.memory.errors import InvalidInputError
from ml_expert.tools import runs
from ml_expert.tools.artifacts import (
    is_keras_model,
    load_model,
    load_model_meta,
    load_prepared,
    load_split,
    model_dir,
    model_path,
    predict_output,
)
from ml_expert.tools.core.chunks import predict_in_chunks
from ml_expert.tools.core.plots import confusion_matrix_png, residuals_png
from ml_expert.tools.core.scoring import (
    TargetSpec,
    baseline_scores,
    beats_baseline,
    check_target,
    dummy_output,
    main_key,
    scores,
)
from ml_expert.tools.core.tasks import is_classification
from ml_expert.tools.evaluation.report import write_report
from ml_expert.tools.evaluation.uncertainty import MetricInterval, metric_interval
from ml_expert.tools.jobs.manager import run_as_job
from ml_expert.tools.jobs.specs import JobSpec, JobStatus, ProgressFn, Reporter, WaitSeconds
from ml_expert.tools.workspace import Workspace, write_json

SCORED_SPLIT_ROWS = 200_000  # train / validation rows scored for the overfitting check (a seeded sample above it)

OVERFIT_RULE = {
    "classification": "overfitting when train accuracy exceeds validation accuracy by more than 0.05",
    "regression": "overfitting when train R² exceeds validation R² by more than 0.10",
}


class EvaluateSpec(JobSpec):
    """What an evaluate job needs: the models to score on the test split, and the optional goal."""

    kind = "evaluate"
    model_ids: list[str] = Field(min_length=1)
    target: TargetSpec | None = None

    def runs_keras(self, ws: Workspace) -> bool:
        return any(is_keras_model(ws, self.run_id, model_id) for model_id in self.model_ids)


class ModelEvaluation(BaseModel):
    model_id: str
    architecture: str
    task_type: str
    test_metrics: dict[str, float]
    baseline_metrics: dict[str, float] = Field(description="Dummy baseline (majority class / training mean) on test.")
    beats_baseline: bool
    baseline_verdict: str
    interval: MetricInterval | None = Field(
        None,
        description="Bootstrap interval of the main test metric and of its gain over the baseline (how much the "
        "score would move on other test rows; None for clustering).",
    )
    split_scores: dict[str, float] = Field(
        description="Main metric on train, validation and test (train and validation: a seeded sample of 200,000 rows "
        "when larger)."
    )
    overfitting: bool
    overfitting_rule: str
    target: dict[str, Any] | None = Field(None, description="The target and whether it passed.")
    classification_report: dict[str, Any] | None = None
    confusion_matrix: list[list[int]] | None = Field(None, description="Rows true, columns predicted (≤ 30 classes).")
    artifacts: dict[str, str]


class EvaluationResult(BaseModel):
    run_id: str
    best_model_id: str
    leaderboard: list[dict[str, Any]] = Field(description="Models by the main test metric, best first.")
    evaluations: list[ModelEvaluation]
    report: str = Field(description="evaluation_report.md of the best model.")
    next_step: str


def evaluate_model(
    ws: Workspace,
    run_id: str,
    model_id: str | None,
    target: TargetSpec | None,
    tick: Callable[[str], None] | None = None,
) -> ModelEvaluation:
    """Evaluate one model on the test split and write its pictures (worker side). Every test row is scored; the
    train and validation scores of the overfitting check come from at most SCORED_SPLIT_ROWS rows of each (a seeded
    sample: at 10M rows, predicting the 8M training rows took most of a 70 s evaluation)."""
    import numpy as np
    from sklearn.metrics import classification_report, confusion_matrix

    prepared = load_prepared(ws, run_id)
    meta = load_model_meta(ws, run_id, model_id)
    model_id = meta.model_id
    task = meta.task_type
    folder = model_dir(ws, run_id, model_id)
    model = load_model(ws, model_path(ws, run_id, meta), meta.framework)
    splits = {s: _scored_rows(ws, run_id, s) for s in ("train", "val", "test")}
    predict = partial(predict_output, model, meta.framework, task)
    outputs = {s: predict_in_chunks(predict, X, tick=tick, what=f"predicted {s} rows") for s, (X, _) in splits.items()}
    X_test, y_test = splits["test"]
    labels = list((prepared.label_mapping or {}).values())
    metrics = scores(task, y_test, outputs["test"], X_test)
    y_train = np.array(load_split(ws, run_id, "train", mmap=True)[1])  # every training y (the X rows: a sample)
    baseline = baseline_scores(task, y_train, y_test, len(labels))
    key = main_key(task)
    beats = beats_baseline(task, metrics, baseline)
    verdict = f"{key} {metrics[key]:.4f} vs baseline {baseline[key]:.4f}: " + (
        "clearly better than the dummy baseline." if beats else "no better than guessing — do not ship this model."
    )
    interval = metric_interval(task, y_test, outputs["test"], dummy_output(task, y_train, len(y_test), len(labels)))
    if beats and interval is not None and interval.within_chance:
        why = (
            f"its {interval.level:.0%} interval reaches {interval.gain_over_baseline[0]:+.4f}"
            if interval.gain_over_baseline[0] <= 0
            else "too few to resample"
        )
        verdict = (
            f"{key} {metrics[key]:.4f} vs baseline {baseline[key]:.4f}: above the baseline by the verdict's margin, "
            f"but on {interval.rows:,} test rows that gain is within chance ({why}): more test rows would settle it."
        )
    classify = is_classification(task)
    if classify and baseline["accuracy"] >= 0.8:
        verdict += f" Note: {baseline['accuracy']:.0%} of test rows are one class, so accuracy alone flatters."
    split_key = "accuracy" if classify else ("r2" if task == "regression" else key)
    split_scores = {s: scores(task, splits[s][1], outputs[s], splits[s][0])[split_key] for s in splits}
    kind = "classification" if classify else "regression"
    gap = 0.05 if kind == "classification" else 0.10
    overfitting = task != "clustering" and split_scores["train"] - split_scores["val"] > gap
    artifacts: dict[str, str] = {}
    report_dict = matrix = None
    if classify:
        pred = outputs["test"].argmax(axis=1)
        report_dict = classification_report(
            y_test, pred, labels=range(len(labels)), target_names=labels, output_dict=True, zero_division=0
        )
        full = confusion_matrix(y_test, pred, labels=range(len(labels))).tolist()
        matrix = full if len(labels) <= 30 else None
        artifacts["confusion_matrix"] = ws.relative(confusion_matrix_png(full, labels, folder / "confusion_matrix.png"))
    elif task == "regression":
        artifacts["residuals"] = ws.relative(residuals_png(y_test, outputs["test"], folder / "residuals.png"))
    return ModelEvaluation(
        model_id=model_id,
        architecture=meta.architecture,
        task_type=task,
        test_metrics=metrics,
        baseline_metrics=baseline,
        beats_baseline=beats,
        baseline_verdict=verdict,
        interval=interval,
        split_scores=split_scores,
        overfitting=overfitting,
        overfitting_rule=OVERFIT_RULE.get(kind, "not applicable to clustering"),
        target=check_target(target, metrics),
        classification_report=report_dict,
        confusion_matrix=matrix,
        artifacts=artifacts,
    )


def _scored_rows(ws: Workspace, run_id: str, split: str) -> tuple[Any, Any]:
    """A split's X and y: every test row; at most SCORED_SPLIT_ROWS train or validation rows (seeded, in order), read
    from the memory-mapped files so that only those rows are loaded."""
    import numpy as np

    if split == "test":
        return load_split(ws, run_id, split)
    X, y = load_split(ws, run_id, split, mmap=True)
    if len(y) <= SCORED_SPLIT_ROWS:  # copies: no view of a file that a later prepare_data may rewrite
        return np.array(X), np.array(y)
    rows = np.sort(np.random.default_rng(0).choice(len(y), SCORED_SPLIT_ROWS, replace=False))
    return X[rows], y[rows]


def main_score(ev: ModelEvaluation) -> float:
    return ev.test_metrics[main_key(ev.task_type)]


def run_evaluate_job(ws: Workspace, spec: EvaluateSpec, reporter: Reporter) -> EvaluationResult:
    """Worker entry for kind 'evaluate'."""
    run_id = spec.run_id
    evaluations = []
    for i, mid in enumerate(spec.model_ids):
        reporter.progress(force=True, phase="evaluate", step=i, total=len(spec.model_ids), message=f"evaluating {mid}")

        def tick(step: str, i: int = i, mid: str = mid) -> None:
            reporter.progress(phase="evaluate", step=i, total=len(spec.model_ids), message=f"evaluating {mid}: {step}")

        evaluations.append(evaluate_model(ws, run_id, mid, spec.target, tick))
    n = len(spec.model_ids)  # every progress call is a cancel point: a cancelled job ends here, before the report
    reporter.progress(force=True, phase="evaluate", step=n, total=n, message="writing the evaluation report")
    evaluations.sort(key=main_score, reverse=True)
    best = evaluations[0]
    for ev in evaluations:
        meta = load_model_meta(ws, run_id, ev.model_id)
        path = write_report(
            ws,
            run_id,
            meta,
            ev,
            load_prepared(ws, run_id),
            [e.model_dump() for e in evaluations] if len(evaluations) > 1 else None,
        )
        ev.artifacts["report"] = ws.relative(path)
    root = ws.run_dir(run_id)
    best_folder = model_dir(ws, run_id, best.model_id)
    for name in ("evaluation_report.md", "confusion_matrix.png", "residuals.png"):
        if (best_folder / name).exists():
            shutil.copy(best_folder / name, root / name)
    leaderboard = [
        {
            "model_id": e.model_id,
            "architecture": e.architecture,
            **{k: round(v, 4) for k, v in e.test_metrics.items()},
            "beats_baseline": e.beats_baseline,
            "overfitting": e.overfitting,
        }
        for e in evaluations
    ]
    result = EvaluationResult(
        run_id=run_id,
        best_model_id=best.model_id,
        leaderboard=leaderboard,
        evaluations=evaluations,
        report=ws.relative(root / "evaluation_report.md"),
        next_step=f"Call package(run_id='{run_id}', model_id='{best.model_id}') to build and verify the deployment "
        "package.",
    )
    write_json(root / "metrics.json", result.model_dump(mode="json") | {"evaluated_at": time.time()})
    runs.record_phase(ws, run_id, "evaluate", {"metrics": result}, artifacts={"report": result.report})
    return result


def evaluate_spec(
    ws: Workspace, run_id: str, model_id: str | None = None, model_ids: list[str] | None = None, target: Any = None
) -> EvaluateSpec:
    """Check an evaluate call (run prepared, models exist, target well-formed) and build its job spec."""
    load_prepared(ws, run_id)
    latest = load_model_meta(ws, run_id, model_id)
    if model_id is None and latest.refit_of:  # the latest is a package's refit on all rows: its source is evaluable
        latest = load_model_meta(ws, run_id, latest.refit_of)
    ids = list(dict.fromkeys(model_ids or [latest.model_id]))
    for mid in ids:
        meta = load_model_meta(ws, run_id, mid)
        if meta.refit_of:
            raise InvalidInputError(
                f"Model {mid} was refit on all rows of run {run_id}, its test split included, so a test score would "
                f"flatter it. Its estimate is the evaluation of model {meta.refit_of} (the model it refits): call "
                f"evaluate(run_id='{run_id}', model_id='{meta.refit_of}'). Nothing was changed."
            )
    goal = TargetSpec.model_validate(target) if target is not None else None
    if goal is not None and goal.min is None and goal.max is None:
        raise InvalidInputError("target needs min (for scores like accuracy) or max (for errors like rmse).")
    return EvaluateSpec(run_id=run_id, model_ids=ids, target=goal)


def evaluate(
    ws: Workspace,
    run_id: runs.RunId,
    model_id: Annotated[
        str | None, Field(description="Model to evaluate; default the run's latest (not a refit on all rows).")
    ] = None,
    model_ids: Annotated[
        list[str] | None, Field(description="Several models of the run to compare (returns a leaderboard).")
    ] = None,
    target: Annotated[
        TargetSpec | None, Field(description="Pass/fail goal, e.g. {'metric': 'accuracy', 'min': 0.9}.")
    ] = None,
    wait_seconds: WaitSeconds = None,
    report: ProgressFn | None = None,
) -> JobStatus:
    """Test-set metrics vs the dummy baseline, overfitting check, target pass/fail and evaluation_report.md.

    The result is in `result` when status is 'succeeded'. Then call package(run_id, model_id).
    """
    spec = evaluate_spec(ws, run_id, model_id, model_ids, target)
    return run_as_job(ws, spec, namespace=runs.run_namespace(ws, run_id), wait_seconds=wait_seconds, report=report)
