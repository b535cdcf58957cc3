"""Phase 3 — `train`: Keras networks or scikit-learn models, as background jobs.

`train` checks the request, records a job and waits up to `wait_seconds` while the worker process
(`run_train_job`, where TensorFlow is imported) fits the model with the seed's callbacks, reports
every epoch, honours cancel requests at batch boundaries, and writes `model.keras` /
`model.joblib`, `training_history.json` and `training_curves.png`. Stores `ml-expert/training`.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, Field

from ml_expert.tools import runs
from ml_expert.tools.errors import InvalidInputError, TrainingError
from ml_expert.tools.jobs import JobCancelled, JobStatus, ProgressFn, WaitSeconds, run_as_job
from ml_expert.tools.models import (
    CLUSTERING_ARCHITECTURES,
    Architecture,
    TrainConfig,
    build_sklearn,
    is_keras,
)
from ml_expert.tools.plots import training_curves
from ml_expert.tools.predict import as_model_input, baseline_score, beats_baseline, model_dir, predict_output, val_score
from ml_expert.tools.preparation import load_prepared, load_split
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
    if base_model is not None:
        from ml_expert.tools.transfer import resolve_base_model

        base = str(resolve_base_model(ws, base_model))
    spec = {
        "run_id": run_id,
        "model_id": new_id("mdl"),
        "architecture": arch,
        "config": TrainConfig.model_validate(config or {}).model_dump(),
        "distribution": distribution,
        "base_model": base,
        "fine_tune_layers": fine_tune_layers,
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


class _History:
    """Per-epoch history persisted after every epoch, so a resumed job keeps the epochs before it."""

    def __init__(self, path: Path, resume: bool) -> None:
        self.path = path
        self.data: dict[str, list[float]] = json.loads(path.read_text()) if resume and path.exists() else {}

    def add(self, epoch: int, logs: dict[str, Any]) -> None:
        for k, v in logs.items():
            if k == "learning_rate":
                continue
            series = self.data.setdefault(k, [])
            del series[epoch:]
            series.append(float(v))
        write_json(self.path, self.data)


def keras_callbacks(
    config: TrainConfig, folder: Path, reporter: Any, history: _History, total: int, backup: str = "backup"
) -> list[Any]:
    """The seed's callbacks plus progress, cancel-at-batch and BackupAndRestore (for resume)."""
    import keras

    class Progress(keras.callbacks.Callback):
        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            if reporter.cancel_requested():
                self.model.stop_training = True

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            logs = dict(logs or {})
            history.add(epoch, logs)
            shown = " ".join(f"{k} {v:.4g}" for k, v in logs.items() if k != "learning_rate")
            reporter.progress(
                force=True,
                phase="train",
                step=epoch + 1,
                total=total,
                message=f"epoch {epoch + 1}/{total} {shown}",
                metrics={k: float(v) for k, v in logs.items()},
            )

    patience = config.early_stopping_patience or total + 1
    cbs = [
        Progress(),
        keras.callbacks.TerminateOnNaN(),
        keras.callbacks.EarlyStopping(monitor="val_loss", patience=patience, restore_best_weights=True),
        keras.callbacks.ModelCheckpoint(str(folder / "best_model.keras"), monitor="val_loss", save_best_only=True),
        keras.callbacks.BackupAndRestore(str(folder / backup)),
    ]
    if config.reduce_lr_patience:
        cbs.append(
            keras.callbacks.ReduceLROnPlateau(
                monitor="val_loss", factor=config.reduce_lr_factor, patience=config.reduce_lr_patience
            )
        )
    return cbs


def seed_everything(seed: int) -> None:
    """One seed for Python, NumPy and TensorFlow, with deterministic ops: bit-identical CPU runs."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def _fit_keras(
    ws: Workspace,
    spec: dict[str, Any],
    prepared: dict[str, Any],
    data: dict[str, Any],
    folder: Path,
    reporter: Any,
    class_weight: Any,
) -> dict[str, Any]:
    from ml_expert.tools.distribution import strategy_scope
    from ml_expert.tools.networks import build_network, compile_model

    config = TrainConfig(**spec["config"])
    seed_everything(config.seed)
    task = prepared["task_type"]
    n_classes = len(prepared["label_mapping"] or {}) or 1
    X_tr, y_tr, X_va, y_va = data["X_train"], data["y_train"], data["X_val"], data["y_val"]
    X_tr, X_va = as_model_input(X_tr), as_model_input(X_va)
    history = _History(folder / "history_partial.json", spec.get("resume", False))
    with strategy_scope(spec["distribution"]) as dist_info:
        if spec["distribution"] == "multi_worker":
            model = None  # built inside the multi-worker strategy's scope
        elif spec.get("base_model"):
            from ml_expert.tools.transfer import build_transfer_model

            model = build_transfer_model(Path(spec["base_model"]), task, n_classes, config, data)
        else:
            model, extra = build_network(spec["architecture"], task, n_classes, config, prepared, data)
            if extra.get("vocabulary"):  # the text vocabulary, fitted on training texts only, saved with the run
                write_json(folder / "vocabulary.json", extra["vocabulary"])
        if model is not None:
            compile_model(model, task, config)
    reporter.progress(force=True, phase="train", step=0, total=config.epochs, message="training started")
    start = time.perf_counter()
    if spec["distribution"] == "multi_worker":
        return _fit_multi_worker(spec, prepared, data, history, reporter, config, start)
    model.fit(
        X_tr,
        y_tr,
        validation_data=(X_va, y_va),
        epochs=config.epochs,
        batch_size=config.batch_size,
        class_weight=class_weight,
        verbose=0,
        shuffle=True,
        callbacks=keras_callbacks(config, folder, reporter, history, config.epochs),
    )
    if spec.get("base_model") and spec.get("fine_tune_layers") and not reporter.cancel_requested():
        from ml_expert.tools.transfer import fine_tune

        done = len(history.data.get("loss", []))
        total = done + max(5, config.epochs // 2)
        stage2 = keras_callbacks(config, folder, reporter, history, total, backup="backup_finetune")
        fine_tune(model, spec["fine_tune_layers"], task, config, data, class_weight, stage2, done)
    seconds = time.perf_counter() - start
    losses = history.data.get("loss", [])
    if not losses or not all(np.isfinite(losses)) or not np.isfinite(history.data.get("val_loss", [0])).all():
        bad = next((i + 1 for i, v in enumerate(losses) if not np.isfinite(v)), len(losses))
        raise TrainingError(
            f"The loss became NaN or infinite at epoch {bad}. Try a lower learning_rate (e.g. "
            f"{config.learning_rate / 10:g}), check that features are scaled (scaling='standard'), "
            "or a smaller batch_size."
        )
    model.save(folder / "model.keras")
    val_losses = history.data.get("val_loss", [])
    return {
        "model": model,
        "framework": "keras",
        "epochs_trained": len(losses),
        "best_epoch": int(np.argmin(val_losses)) + 1 if val_losses else None,
        "seconds": seconds,
        "parameters": int(model.count_params()),
        "history": history.data,
        "distribution": dist_info or None,
    }


def _fit_multi_worker(
    spec: dict[str, Any],
    prepared: dict[str, Any],
    data: dict[str, Any],
    history: _History,
    reporter: Any,
    config: TrainConfig,
    start: float,
) -> dict[str, Any]:
    """One task of a MultiWorkerMirroredStrategy cluster (TF_CONFIG); the chief saves the model."""
    from ml_expert.tools.distribution import fit_multi_worker
    from ml_expert.tools.networks import build_network

    task = prepared["task_type"]
    n_classes = len(prepared["label_mapping"] or {}) or 1

    def on_epoch(epoch: int, logs: dict[str, float]) -> None:
        history.add(epoch, logs)
        shown = " ".join(f"{k} {v:.4g}" for k, v in logs.items())
        reporter.progress(
            force=True,
            phase="train",
            step=epoch + 1,
            total=config.epochs,
            message=f"epoch {epoch + 1}/{config.epochs} {shown}",
            metrics=logs,
        )

    model, info = fit_multi_worker(
        lambda: build_network(spec["architecture"], task, n_classes, config, prepared, data)[0],
        task,
        config,
        data,
        on_epoch,
    )
    if info["chief"]:
        model.save(history.path.parent / "model.keras")
    losses = history.data.get("loss", [])
    if not all(np.isfinite(losses)):
        raise TrainingError("The loss became NaN or infinite. Try a lower learning_rate.")
    return {
        "model": model,
        "framework": "keras",
        "epochs_trained": len(losses),
        "best_epoch": None,
        "seconds": time.perf_counter() - start,
        "parameters": int(model.count_params()),
        "history": history.data,
        "distribution": info,
    }


def _sklearn_history(model: Any, task: str, data: dict[str, Any]) -> dict[str, list[float]]:
    """Per-iteration curves for boosting, per-tree-count for forests, one point otherwise (Keras' key names)."""
    from sklearn.metrics import accuracy_score, log_loss, mean_absolute_error, mean_squared_error

    classify = task in ("binary", "multiclass")
    metric = "accuracy" if classify else "mae"

    def point(split: str, out: np.ndarray) -> tuple[float, float]:
        y = data[f"y_{split}"]
        if classify:
            return log_loss(y, out, labels=range(out.shape[1])), accuracy_score(y, out.argmax(1))
        return mean_squared_error(y, out), mean_absolute_error(y, out)

    stages: list[tuple[np.ndarray, np.ndarray]] = []
    if hasattr(model, "staged_predict_proba" if classify else "staged_predict"):
        staged = {
            s: list((model.staged_predict_proba if classify else model.staged_predict)(data[f"X_{s}"]))
            for s in ("train", "val")
        }
        step = max(1, len(staged["train"]) // 50)
        stages = list(zip(staged["train"][::step], staged["val"][::step], strict=True))
    elif hasattr(model, "estimators_") and not hasattr(model, "staged_predict"):
        trees = model.estimators_
        for k in np.unique(np.linspace(1, len(trees), num=min(20, len(trees))).astype(int)):
            pair = []
            for s in ("train", "val"):
                preds = [t.predict_proba(data[f"X_{s}"]) if classify else t.predict(data[f"X_{s}"]) for t in trees[:k]]
                pair.append(np.mean(preds, axis=0))
            stages.append((pair[0], pair[1]))
    else:
        stages = [
            (
                predict_output(model, "sklearn", task, data["X_train"]),
                predict_output(model, "sklearn", task, data["X_val"]),
            )
        ]
    hist: dict[str, list[float]] = {"loss": [], metric: [], "val_loss": [], f"val_{metric}": []}
    for tr, va in stages:
        for prefix, split, out in (("", "train", tr), ("val_", "val", va)):
            loss, m = point(split, out)
            hist[f"{prefix}loss"].append(float(loss))
            hist[f"{prefix}{metric}"].append(float(m))
    return hist


def _fit_sklearn(
    spec: dict[str, Any], prepared: dict[str, Any], data: dict[str, Any], reporter: Any, class_weight: Any
) -> dict[str, Any]:
    import joblib  # noqa: F401 - saved by the caller

    config = TrainConfig(**spec["config"])
    task = prepared["task_type"]
    arch = spec["architecture"]
    n_classes = len(prepared["label_mapping"] or {}) or 1
    fit_task = "clustering" if arch in CLUSTERING_ARCHITECTURES else task
    model = build_sklearn(arch, fit_task, config, "balanced" if class_weight else None, n_classes)
    reporter.progress(force=True, phase="train", step=0, total=1, message=f"fitting {arch}")
    start = time.perf_counter()
    model.fit(data["X_train"], data["y_train"])
    seconds = time.perf_counter() - start
    history = {} if fit_task == "clustering" else _sklearn_history(model, task, data)
    params = sum(int(np.size(v)) for k, v in vars(model).items() if k.endswith("_") and isinstance(v, np.ndarray))
    if hasattr(model, "estimators_"):  # forests: tree nodes
        params = sum(int(t.tree_.node_count) for t in np.ravel(model.estimators_))
    elif hasattr(model, "_predictors"):  # HistGradientBoosting: tree nodes
        params = sum(len(p.nodes) for stage in model._predictors for p in stage)
    reporter.progress(force=True, phase="train", step=1, total=1, message=f"fitted {arch} in {seconds:.1f}s")
    return {
        "model": model,
        "framework": "sklearn",
        "epochs_trained": max(1, len(history.get("loss", []))),
        "best_epoch": None,
        "seconds": seconds,
        "parameters": params,
        "history": history,
        "distribution": None,
    }


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
        fit = _fit_keras(ws, spec, prepared, data, folder, reporter, weights)
        model_file = folder / "model.keras"
        if fit["distribution"] and fit["distribution"].get("chief") is False:  # only the chief keeps a model
            shutil.rmtree(folder, ignore_errors=True)
            return {"run_id": run_id, "model_id": model_id, "chief": False, "distribution": fit["distribution"]}
    else:
        fit = _fit_sklearn(spec, prepared, data, reporter, weights)
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
        shutil.rmtree(folder / backup, ignore_errors=True)
    if cancelled:
        raise JobCancelled(result.model_dump(mode="json"))
    return result.model_dump(mode="json")


def fit_keras_quick(
    architecture: str, data: dict[str, Any], task: str, n_classes: int, prepared: dict[str, Any], deadline: float
) -> Any:
    """A network with default settings trained until the deadline (for probes)."""
    import keras

    from ml_expert.tools.networks import build_network, compile_model

    config = TrainConfig()
    seed_everything(config.seed)
    model, _ = build_network(architecture, task, n_classes, config, prepared, data)
    compile_model(model, task, config)

    class Deadline(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            if time.perf_counter() >= deadline:
                self.model.stop_training = True

    model.fit(
        data["X_train"],
        data["y_train"],
        validation_data=(data["X_val"], data["y_val"]),
        epochs=config.epochs,
        batch_size=config.batch_size,
        verbose=0,
        callbacks=[Deadline(), keras.callbacks.EarlyStopping(patience=5, restore_best_weights=True)],
    )
    return model
