"""Phase 4 — `evaluate`: honest test metrics, baseline, overfitting verdict, `evaluation_report.md`.

Runs as a job (Keras models need TensorFlow, which the server never imports). Metrics come from
the held-out test split, which neither fitting nor early stopping saw. Stores `ml-expert/metrics`.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

import numpy as np
from pydantic import BaseModel, Field

from ml_expert.tools import runs
from ml_expert.tools.errors import InvalidInputError
from ml_expert.tools.jobs import JobStatus, ProgressFn, WaitSeconds, run_as_job
from ml_expert.tools.plots import confusion_matrix_png, residuals_png
from ml_expert.tools.predict import beats_baseline, load_model, load_model_meta, main_key, model_dir, predict_output
from ml_expert.tools.preparation import load_prepared, load_split
from ml_expert.tools.report import write_report
from ml_expert.tools.workspace import Workspace, write_json

HIGHER_IS_BETTER = {
    "accuracy",
    "balanced_accuracy",
    "precision_macro",
    "recall_macro",
    "f1_macro",
    "f1_weighted",
    "precision_weighted",
    "recall_weighted",
    "roc_auc",
    "r2",
    "silhouette",
    "adjusted_rand",
}
OVERFIT_RULE = {
    "classification": "overfitting when train accuracy exceeds validation accuracy by more than 0.05",
    "regression": "overfitting when train R² exceeds validation R² by more than 0.10",
}


class TargetSpec(BaseModel):
    metric: str = Field(description="Metric name, e.g. 'accuracy', 'f1_macro', 'rmse', 'r2'.")
    min: float | None = Field(None, description="Pass when metric >= min (for scores).")
    max: float | None = Field(None, description="Pass when metric <= max (for errors such as rmse).")


class ModelEvaluation(BaseModel):
    model_id: str
    architecture: str
    task_type: str
    test_metrics: dict[str, float]
    baseline_metrics: dict[str, float] = Field(description="Dummy baseline (majority class / training mean) on test.")
    beats_baseline: bool
    baseline_verdict: str
    split_scores: dict[str, float] = Field(description="Main metric on train, validation and test.")
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


def test_metrics(task: str, y: np.ndarray, output: np.ndarray, X: np.ndarray | None = None) -> dict[str, float]:
    """Every test metric for the task, computed with scikit-learn."""
    from sklearn import metrics as m

    if task == "clustering":
        labels = output.astype(int)
        several = len(set(labels)) > 1
        return {
            "silhouette": float(m.silhouette_score(X, labels)) if several and X is not None else -1.0,
            "davies_bouldin": float(m.davies_bouldin_score(X, labels)) if several and X is not None else float("inf"),
            "adjusted_rand": float(m.adjusted_rand_score(y, labels)),
        }
    if task in ("binary", "multiclass"):
        pred = output.argmax(axis=1)
        out = {"accuracy": m.accuracy_score(y, pred), "balanced_accuracy": m.balanced_accuracy_score(y, pred)}
        for avg in ("macro", "weighted"):
            p, r, f, _ = m.precision_recall_fscore_support(y, pred, average=avg, zero_division=0)
            out |= {f"precision_{avg}": p, f"recall_{avg}": r, f"f1_{avg}": f}
        probs = np.clip(output, 1e-15, 1)
        probs = probs / probs.sum(axis=1, keepdims=True)
        labels = list(range(output.shape[1]))
        out["log_loss"] = m.log_loss(y, probs, labels=labels)
        if len(np.unique(y)) == output.shape[1]:
            out["roc_auc"] = (
                m.roc_auc_score(y, probs[:, 1])
                if output.shape[1] == 2
                else m.roc_auc_score(y, probs, multi_class="ovr", labels=labels)
            )
        return {k: float(v) for k, v in out.items()}
    out = {
        "rmse": float(np.sqrt(m.mean_squared_error(y, output))),
        "mae": float(m.mean_absolute_error(y, output)),
        "r2": float(m.r2_score(y, output)),
    }
    if np.all(np.abs(y) > 1e-12):
        out["mape"] = float(m.mean_absolute_percentage_error(y, output))
    return out


def dummy_output(task: str, y_train: np.ndarray, n: int, n_classes: int) -> np.ndarray:
    if task in ("binary", "multiclass"):
        out = np.zeros((n, n_classes))
        out[:, np.bincount(y_train.astype(int), minlength=n_classes).argmax()] = 1.0
        return out
    if task == "clustering":
        return np.zeros(n)
    return np.full(n, float(np.mean(y_train)))


def _check_target(target: TargetSpec | None, metrics: dict[str, float]) -> dict[str, Any] | None:
    if target is None:
        return None
    if target.metric not in metrics:
        raise InvalidInputError(
            f"target metric {target.metric!r} is not computed for this task. Choose one of {sorted(metrics)}."
        )
    if target.min is None and target.max is None:
        raise InvalidInputError("target needs min (for scores like accuracy) or max (for errors like rmse).")
    value = metrics[target.metric]
    passed = (target.min is None or value >= target.min) and (target.max is None or value <= target.max)
    return {**target.model_dump(exclude_none=True), "value": value, "passed": passed}


def evaluate_model(ws: Workspace, run_id: str, model_id: str | None, target: TargetSpec | None) -> ModelEvaluation:
    """Evaluate one model on the test split and write its pictures (worker side)."""
    from sklearn.metrics import classification_report, confusion_matrix

    prepared = load_prepared(ws, run_id)
    meta = load_model_meta(ws, run_id, model_id)
    model_id = meta["model_id"]
    task = meta["task_type"]
    folder = model_dir(ws, run_id, model_id)
    model = load_model(ws.resolve_path(meta["artifacts"]["model"]), meta["framework"])
    splits = {s: load_split(ws, run_id, s) for s in ("train", "val", "test")}
    outputs = {s: predict_output(model, meta["framework"], task, X) for s, (X, _) in splits.items()}
    X_test, y_test = splits["test"]
    labels = list((prepared.get("label_mapping") or {}).values())
    metrics = test_metrics(task, y_test, outputs["test"], X_test)
    baseline = (
        test_metrics(task, y_test, dummy_output(task, splits["train"][1], len(y_test), len(labels)), X_test)
        if task != "clustering"
        else {"adjusted_rand": 0.0}
    )
    key = main_key(task)
    beats = beats_baseline(task, metrics, baseline)
    verdict = f"{key} {metrics[key]:.4f} vs baseline {baseline[key]:.4f}: " + (
        "clearly better than the dummy baseline." if beats else "no better than guessing — do not ship this model."
    )
    if task in ("binary", "multiclass") and baseline["accuracy"] >= 0.8:
        verdict += f" Note: {baseline['accuracy']:.0%} of test rows are one class, so accuracy alone flatters."
    split_key = "accuracy" if task in ("binary", "multiclass") else ("r2" if task == "regression" else key)
    split_scores = {s: test_metrics(task, splits[s][1], outputs[s], splits[s][0])[split_key] for s in splits}
    kind = "classification" if task in ("binary", "multiclass") else "regression"
    gap = 0.05 if kind == "classification" else 0.10
    overfitting = task != "clustering" and split_scores["train"] - split_scores["val"] > gap
    artifacts: dict[str, str] = {}
    report_dict = matrix = None
    if task in ("binary", "multiclass"):
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
        architecture=meta["architecture"],
        task_type=task,
        test_metrics=metrics,
        baseline_metrics=baseline,
        beats_baseline=beats,
        baseline_verdict=verdict,
        split_scores=split_scores,
        overfitting=overfitting,
        overfitting_rule=OVERFIT_RULE.get(kind, "not applicable to clustering"),
        target=_check_target(target, metrics),
        classification_report=report_dict,
        confusion_matrix=matrix,
        artifacts=artifacts,
    )


def main_score(ev: ModelEvaluation) -> float:
    return ev.test_metrics[main_key(ev.task_type)]


def run_evaluate_job(ws: Workspace, spec: dict[str, Any], reporter: Any) -> dict[str, Any]:
    """Worker entry for kind 'evaluate'."""
    import shutil

    run_id = spec["run_id"]
    target = TargetSpec(**spec["target"]) if spec.get("target") else None
    evaluations = []
    for i, mid in enumerate(spec["model_ids"]):
        reporter.progress(
            force=True, phase="evaluate", step=i, total=len(spec["model_ids"]), message=f"evaluating {mid}"
        )
        evaluations.append(evaluate_model(ws, run_id, mid, target))
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
    return result.model_dump(mode="json")


def evaluate(
    ws: Workspace,
    run_id: runs.RunId,
    model_id: Annotated[str | None, Field(description="Model to evaluate; default the run's latest.")] = None,
    model_ids: Annotated[
        list[str] | None, Field(description="Several models of the run to compare (returns a leaderboard).")
    ] = None,
    target: Annotated[
        TargetSpec | None, Field(description="Pass/fail goal, e.g. {'metric': 'accuracy', 'min': 0.9}.")
    ] = None,
    wait_seconds: WaitSeconds = 45,
    report: ProgressFn | None = None,
) -> JobStatus:
    """Test-set metrics vs the dummy baseline, overfitting check, target pass/fail and evaluation_report.md.

    The result is in `result` when status is 'succeeded'. Then call package(run_id, model_id).
    """
    load_prepared(ws, run_id)
    ids = list(dict.fromkeys(model_ids or [load_model_meta(ws, run_id, model_id)["model_id"]]))
    for mid in ids:
        load_model_meta(ws, run_id, mid)
    spec = {
        "run_id": run_id,
        "model_ids": ids,
        "target": TargetSpec.model_validate(target).model_dump() if target else None,
    }
    namespace = runs.run_namespace(ws, run_id)
    return run_as_job(
        ws, "evaluate", spec, run_id=run_id, namespace=namespace, wait_seconds=wait_seconds, report=report
    )
