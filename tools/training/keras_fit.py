"""Keras training inside a worker: the seed's callbacks, per-epoch progress and cancel, persisted
history for resume, transfer learning's second stage, distribution strategies, and quick fits for probes.

Imported only in worker processes (it imports Keras at module level).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from ml_expert.memory.errors import TrainingError
from ml_expert.tools.artifacts import as_model_input
from ml_expert.tools.core.prepared import PreparedData
from ml_expert.tools.jobs.specs import Reporter
from ml_expert.tools.training import transfer
from ml_expert.tools.training.callbacks import Deadline, EarlyStop, EpochHistory, job_callbacks, restore_snapshot
from ml_expert.tools.training.config import Fit, TrainConfig, TrainSpec
from ml_expert.tools.training.distributed import fit_multi_worker, strategy_scope
from ml_expert.tools.training.keras_networks import build_network, compile_model
from ml_expert.tools.workspace import Workspace, write_json


def seed_everything(seed: int) -> None:
    """One seed for Python, NumPy and TensorFlow, with deterministic ops: bit-identical CPU runs."""
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def fit_on_splits(
    model: Any, data: dict[str, Any], config: TrainConfig, callbacks: list[Any], class_weight: Any = None
) -> None:
    """model.fit on the training split, validated on the validation split, shuffled each epoch."""
    model.fit(
        as_model_input(data["X_train"]),
        data["y_train"],
        validation_data=(as_model_input(data["X_val"]), data["y_val"]),
        epochs=config.epochs,
        batch_size=config.batch_size,
        class_weight=class_weight,
        verbose=0,
        shuffle=True,
        callbacks=callbacks,
    )


def _build(spec: TrainSpec, prepared: PreparedData, data: dict[str, Any], folder: Path) -> Any:
    """The network to train: a transfer model around the base, or the architecture's own network."""
    task, config = prepared.task_type, spec.config
    n_classes = len(prepared.label_mapping or {}) or 1
    if spec.base_model:
        return transfer.build_transfer_model(Path(spec.base_model), task, n_classes, config, data, spec.freeze)
    model, extra = build_network(spec.architecture, task, n_classes, config, prepared, data)
    if extra.get("vocabulary"):  # the text vocabulary, fitted on training texts only, saved with the run
        write_json(folder / "vocabulary.json", extra["vocabulary"])
    return model


def _check_finite(history: EpochHistory, config: TrainConfig) -> None:
    losses = history.data.get("loss", [])
    if not losses or not all(np.isfinite(losses)) or not np.isfinite(history.data.get("val_loss", [0])).all():
        bad = next((i + 1 for i, v in enumerate(losses) if not np.isfinite(v)), len(losses))
        raise TrainingError(
            f"The loss became NaN or infinite at epoch {bad}. Try a lower learning_rate (e.g. "
            f"{config.learning_rate / 10:g}), check that features are scaled (scaling='standard'), "
            "or a smaller batch_size."
        )


def fit_keras(
    ws: Workspace,
    spec: TrainSpec,
    prepared: PreparedData,
    data: dict[str, Any],
    folder: Path,
    reporter: Reporter,
    class_weight: Any,
) -> Fit:
    """Train the spec's network (or one multi-worker task) with the job callbacks; the caller saves it."""
    config = spec.config
    seed_everything(config.seed)
    task = prepared.task_type
    history = EpochHistory(folder / "history_partial.json", spec.resume)
    if spec.resume:
        restore_snapshot(folder / "backup")
    if spec.distribution == "multi_worker":
        return fit_multi_worker_task(spec, prepared, data, history, reporter, class_weight)
    with strategy_scope(spec.distribution) as dist_info:
        model = _build(spec, prepared, data, folder)
        compile_model(model, task, config)
    reporter.progress(force=True, phase="train", step=0, total=config.epochs, message="training started")
    start = time.perf_counter()
    fit_on_splits(model, data, config, job_callbacks(config, folder, reporter, history, config.epochs), class_weight)
    transfer_info = None
    if spec.base_model:
        done = len(history.data.get("loss", []))
        if spec.fine_tune_layers and not reporter.cancel_requested():
            total = done + transfer.fine_tune_epochs(config.epochs)
            stage2 = job_callbacks(config, folder, reporter, history, total, backup="backup_finetune")
            transfer.fine_tune(model, spec.fine_tune_layers, task, config, data, class_weight, stage2, done)
        transfer_info = {"base_model": ws.relative(Path(spec.base_model))}
        transfer_info |= transfer.summary(model, done, len(history.data.get("loss", [])))
    _check_finite(history, config)
    val_losses = history.data.get("val_loss", [])
    return Fit(
        model=model,
        framework="keras",
        epochs_trained=len(history.data.get("loss", [])),
        best_epoch=int(np.argmin(val_losses)) + 1 if val_losses else None,
        seconds=time.perf_counter() - start,
        parameters=int(model.count_params()),
        history=history.data,
        distribution=dist_info or None,
        transfer=transfer_info,
    )


def fit_multi_worker_task(
    spec: TrainSpec,
    prepared: PreparedData,
    data: dict[str, Any],
    history: EpochHistory,
    reporter: Reporter,
    class_weight: dict[int, float] | None = None,
) -> Fit:
    """One task of a MultiWorkerMirroredStrategy cluster (TF_CONFIG); only the chief's model is kept."""
    task, config = prepared.task_type, spec.config
    n_classes = len(prepared.label_mapping or {}) or 1
    reporter.progress(force=True, phase="train", step=0, total=config.epochs, message="training started")
    start = time.perf_counter()
    model, info = fit_multi_worker(
        lambda: build_network(spec.architecture, task, n_classes, config, prepared, data)[0],
        task,
        config,
        data,
        lambda epoch, logs: history.record_epoch(reporter, epoch, config.epochs, logs),
        class_weight=class_weight,
    )
    losses = history.data.get("loss", [])
    if not all(np.isfinite(losses)):
        raise TrainingError("The loss became NaN or infinite. Try a lower learning_rate.")
    return Fit(
        model=model,
        framework="keras",
        epochs_trained=len(losses),
        best_epoch=None,
        seconds=time.perf_counter() - start,
        parameters=int(model.count_params()),
        history=history.data,
        distribution=info,
    )


def fit_keras_quick(
    architecture: str,
    data: dict[str, Any],
    task: str,
    n_classes: int,
    prepared: PreparedData,
    deadline: float,
    cancelled: Callable[[], bool] = lambda: False,
) -> Any:
    """A network with default settings trained until the deadline, or until cancelled (for probes)."""
    config = TrainConfig()
    seed_everything(config.seed)
    model, _ = build_network(architecture, task, n_classes, config, prepared, data)
    compile_model(model, task, config)
    stop = [Deadline(deadline, cancelled), EarlyStop(patience=5)]
    fit_on_splits(model, data, config, stop)
    return model
