"""Phase 3 — `train`: Keras networks or scikit-learn models, as background jobs.

`train` checks the request, records a job and waits up to `wait_seconds` while the worker process
(`run_train_job`, where TensorFlow is imported) fits the model with the seed's callbacks, reports
every epoch, honours cancel requests at batch boundaries, and writes `model.keras` /
`model.joblib`, `training_history.json` and `training_curves.png`. Stores `ml-expert/training`.
"""

from __future__ import annotations

import shutil
import time
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, Field

from ml_expert.tools import runs
from ml_expert.tools.errors import InvalidInputError
from ml_expert.tools.jobs import JobCancelled, JobStatus, ProgressFn, WaitSeconds, run_as_job
from ml_expert.tools.keras_training import fit_keras
from ml_expert.tools.models import (
    CLUSTERING_ARCHITECTURES,
    Architecture,
    TrainConfig,
    is_keras,
)
from ml_expert.tools.plots import training_curves
from ml_expert.tools.predict import baseline_score, beats_baseline, model_dir, predict_output, val_score
from ml_expert.tools.preparation import load_prepared, load_split
from ml_expert.tools.sklearn_training import fit_sklearn
from ml_expert.tools.workspace import Workspace, new_id, write_json

Distribution = Literal["none", "mirrored", "multi_worker"]


class TrainResult(BaseModel):
    """A trained model; pass model_id to evaluate and package."""

    run_id: str
    model_id: str
    architecture: str
    framework: Literal["keras", "sklearn"]
    task_type: str
    epochs_trained: int
    best_epoch: int | None
    train_seconds: float
    parameters: int
    val_metrics: dict[str, float]
    baseline_val_metrics: dict[str, float] = Field(description="Dummy baseline (majority class / mean) on validation.")
    learned: bool = Field(description="False when the validation score is not above the dummy baseline.")
    notes: list[str]
    config: dict[str, Any]
    distribution: dict[str, Any] | None = None
    transfer: dict[str, Any] | None = Field(
        None, description="Transfer learning: base model, layers kept frozen / fine-tuned, epochs per stage."
    )
    resumed: bool = False
    cancelled: bool = False
    artifacts: dict[str, str]
    next_step: str


def resolve_architecture(ws: Workspace, run_id: str, architecture: str, prepared: dict[str, Any]) -> str:
    """`auto` -> the run's recommendation (or the rule-based top pick); check the choice fits the task."""
    if architecture == "auto":
        from ml_expert.tools.selection import analyze_task, rank_candidates

        stored = ws.store.get_value(
            runs.memory_key(f"runs/{run_id}/architecture"), namespace=runs.run_namespace(ws, run_id)
        )
        architecture = stored["recommended"] if stored else rank_candidates(analyze_task(prepared, 0))[0].architecture
    modality = prepared.get("modality", "tabular")
    if architecture == "cnn" and modality != "image":
        raise InvalidInputError(
            f"architecture 'cnn' needs image data; run {run_id} is {modality}. "
            "Use dnn, gradient_boosting, random_forest or linear."
        )
    if architecture in ("rnn", "conv1d", "transformer") and modality not in ("sequence", "text"):
        raise InvalidInputError(
            f"architecture {architecture!r} needs sequence or text data; run {run_id} is "
            f"{modality}. Use dnn or a tree model."
        )
    if modality in ("image", "sequence", "text") and not is_keras(architecture):
        raise InvalidInputError(
            f"{modality} data needs a Keras network (cnn, rnn, conv1d, transformer, dnn); received {architecture!r}."
        )
    return architecture


def train(
    ws: Workspace,
    run_id: runs.RunId,
    architecture: Annotated[Architecture, Field(description="Model family; 'auto' = the recommendation.")] = "auto",
    config: Annotated[TrainConfig | None, Field(description="Hyper-parameters (seed defaults when omitted).")] = None,
    distribution: Annotated[
        Distribution, Field(description="none, mirrored (all local GPUs / CPU replicas) or multi_worker (TF_CONFIG).")
    ] = "none",
    base_model: Annotated[
        str | None, Field(description="Transfer learning: a model_id of this workspace or a .keras file inside it.")
    ] = None,
    fine_tune_layers: Annotated[
        int, Field(description="With base_model: unfreeze this many top base layers for a second, low-LR stage.", ge=0)
    ] = 0,
    freeze: Annotated[
        bool, Field(description="With base_model: keep the base frozen while the new head trains (false: train all).")
    ] = True,
    wait_seconds: WaitSeconds = 45,
    report: ProgressFn | None = None,
) -> JobStatus:
    """Train a model on the run's prepared data as a background job; returns the result or the running job.

    When status is 'running', follow with get_job(job_id). Then call evaluate(run_id, model_id).
    """
    prepared = load_prepared(ws, run_id)
    arch = resolve_architecture(ws, run_id, architecture, prepared)
    if distribution != "none" and not is_keras(arch):
        raise InvalidInputError(
            f"distribution={distribution!r} applies to Keras models; {arch!r} is scikit-learn. Use distribution='none'."
        )
    if distribution == "multi_worker":
        from ml_expert.tools.distribution import cluster_spec

        cluster_spec()  # a clear error now, not in the worker, when TF_CONFIG is missing or malformed
    base = None
    if base_model is None and (fine_tune_layers or not freeze):
        raise InvalidInputError("fine_tune_layers and freeze apply to transfer learning; pass base_model too.")
    if fine_tune_layers and not freeze:
        raise InvalidInputError(
            "fine_tune_layers unfreezes layers of a frozen base; with freeze=false every layer trains already. "
            "Pass one or the other."
        )
    if base_model is not None:
        from ml_expert.tools import transfer

        path = transfer.resolve_base_model(ws, base_model)
        stored = transfer.stored_input_shape(path)
        if stored is not None:  # a clear error now rather than a failed job
            transfer.check_input_shape(stored, prepared.get("input_shape") or [prepared["features_out"]])
        base = str(path)
    spec = {
        "run_id": run_id,
        "model_id": new_id("mdl"),
        "architecture": arch,
        "config": TrainConfig.model_validate(config or {}).model_dump(),
        "distribution": distribution,
        "base_model": base,
        "fine_tune_layers": fine_tune_layers,
        "freeze": freeze,
    }
    namespace = runs.run_namespace(ws, run_id)
    return run_as_job(ws, "train", spec, run_id=run_id, namespace=namespace, wait_seconds=wait_seconds, report=report)


# -- worker side ------------------------------------------------------------------------------


def _class_weight(task: str, y: np.ndarray, choice: str) -> tuple[dict[int, float] | None, str | None]:
    if task not in ("binary", "multiclass") or choice == "none":
        return None, None
    counts = np.bincount(y.astype(int))
    counts = counts[counts > 0]
    ratio = counts.max() / counts.min()
    if choice == "auto" and ratio < 3:
        return None, None
    from sklearn.utils.class_weight import compute_class_weight

    classes = np.unique(y)
    weights = compute_class_weight("balanced", classes=classes, y=y)
    note = f"class_weight='balanced' applied (training imbalance ratio {ratio:.1f}:1" + (
        ", >= 3)." if choice == "auto" else ")."
    )
    return {int(c): float(w) for c, w in zip(classes, weights, strict=True)}, note


def run_train_job(ws: Workspace, spec: dict[str, Any], reporter: Any) -> dict[str, Any]:
    """Worker entry for kind 'train'."""
    import joblib

    run_id, model_id, arch = spec["run_id"], spec["model_id"], spec["architecture"]
    prepared = load_prepared(ws, run_id)
    task = prepared["task_type"]
    data = {}
    for split in ("train", "val"):
        data[f"X_{split}"], data[f"y_{split}"] = load_split(ws, run_id, split)
    folder = model_dir(ws, run_id, model_id)
    folder.mkdir(parents=True, exist_ok=True)
    config = TrainConfig(**spec["config"])
    weights, note = _class_weight(task, data["y_train"], config.class_weight)
    notes = [note] if note else []
    if is_keras(arch):
        fit = fit_keras(ws, spec, prepared, data, folder, reporter, weights)
        model_file = folder / "model.keras"
        if fit["distribution"] and fit["distribution"].get("chief") is False:  # only the chief keeps a model
            shutil.rmtree(folder, ignore_errors=True)
            return {"run_id": run_id, "model_id": model_id, "chief": False, "distribution": fit["distribution"]}
    else:
        fit = fit_sklearn(spec, prepared, data, reporter, weights)
        model_file = folder / "model.joblib"
        joblib.dump(fit["model"], model_file)
    eval_task = "clustering" if arch in CLUSTERING_ARCHITECTURES else task
    output = predict_output(fit["model"], fit["framework"], eval_task, data["X_val"])
    metrics = val_score(eval_task, data["y_val"], output, data["X_val"])
    baseline = baseline_score(eval_task, data["y_train"], data["y_val"])
    primary = next(iter(metrics))
    learned = beats_baseline(eval_task, metrics, baseline)
    if not learned:
        notes.append(
            f"The model did not beat the dummy baseline on validation ({primary} {metrics[primary]:.4f} vs "
            f"{baseline[primary]:.4f}): it learned nothing useful. Check the target, features and scaling."
        )
    cancelled = reporter.cancel_requested()
    if cancelled:
        notes.append("Cancelled on request; the best weights so far were kept.")
    history_path = folder / "training_history.json"
    write_json(history_path, fit["history"])
    curves = folder / "training_curves.png"
    if fit["history"]:
        training_curves(
            fit["history"], curves, f"{arch} — {run_id}/{model_id}", "Epoch" if fit["framework"] == "keras" else "Stage"
        )
    root = ws.run_dir(run_id)
    for f in (history_path, curves):  # the seed's names at the run root: the latest trained model
        if f.exists():
            shutil.copy(f, root / f.name)
    rel = ws.relative
    result = TrainResult(
        run_id=run_id,
        model_id=model_id,
        architecture=arch,
        framework=fit["framework"],
        task_type=eval_task,
        epochs_trained=fit["epochs_trained"],
        best_epoch=fit["best_epoch"],
        train_seconds=round(fit["seconds"], 3),
        parameters=fit["parameters"],
        val_metrics=metrics,
        baseline_val_metrics=baseline,
        learned=learned,
        notes=notes,
        config=spec["config"],
        distribution=fit["distribution"],
        transfer=fit.get("transfer"),
        resumed=bool(spec.get("resume")),
        cancelled=cancelled,
        artifacts={
            "model": rel(model_file),
            "history": rel(history_path),
            "curves": rel(curves),
            "folder": rel(folder),
        },
        next_step=f"Call evaluate(run_id='{run_id}', model_id='{model_id}') for test metrics and the report.",
    )
    write_json(folder / "model.json", result.model_dump(mode="json") | {"spec": spec, "created_at": time.time()})
    runs.record_phase(ws, run_id, "train", {"training": result}, artifacts=result.artifacts)
    for backup in ("backup", "backup_finetune"):
        for suffix in ("", ".good", ".old", ".tmp"):
            shutil.rmtree(folder / f"{backup}{suffix}", ignore_errors=True)
    if cancelled:
        raise JobCancelled(result.model_dump(mode="json"))
    return result.model_dump(mode="json")
