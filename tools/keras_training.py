"""Keras training inside a worker: the seed's callbacks, per-epoch progress and cancel, persisted
history for resume, transfer learning's second stage, distribution strategies, and quick fits for probes.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from ml_expert.tools.errors import TrainingError
from ml_expert.tools.models import TrainConfig
from ml_expert.tools.predict import as_model_input
from ml_expert.tools.workspace import Workspace, write_json


class History:
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


def _snapshot_class() -> Any:
    import keras

    class _SnapshotBackup(keras.callbacks.Callback):
        """After BackupAndRestore has written an epoch, keep a complete copy of it (copy, then rename).

        A worker killed while the backup is being written leaves a torn file; resume starts from the last
        complete copy instead (at most one epoch earlier).
        """

        def __init__(self, backup: Path) -> None:
            super().__init__()
            self.backup = backup

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            if not self.backup.exists():
                return
            good, tmp, old = (self.backup.with_name(self.backup.name + s) for s in (".good", ".tmp", ".old"))
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.copytree(self.backup, tmp)
            if good.exists():
                good.rename(old)
            tmp.rename(good)
            shutil.rmtree(old, ignore_errors=True)

    return _SnapshotBackup


def SnapshotBackup(backup: Path) -> Any:
    return _snapshot_class()(backup)


def restore_snapshot(backup: Path) -> None:
    """Before a resumed fit: put the last complete backup copy in BackupAndRestore's place."""
    for suffix in (".good", ".old"):
        copy = backup.with_name(backup.name + suffix)
        if copy.exists():
            shutil.rmtree(backup, ignore_errors=True)
            shutil.copytree(copy, backup)
            return


def end_of_epoch(history: History, reporter: Any, epoch: int, total: int, logs: dict[str, Any]) -> None:
    """Persist the epoch and report it: `epoch 7/100 loss 0.31 val_loss 0.35 …`."""
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


def keras_callbacks(
    config: TrainConfig, folder: Path, reporter: Any, history: History, total: int, backup: str = "backup"
) -> list[Any]:
    """The seed's callbacks plus progress, cancel-at-batch and BackupAndRestore (for resume)."""
    import keras

    class Progress(keras.callbacks.Callback):
        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            if reporter.cancel_requested():
                self.model.stop_training = True

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            end_of_epoch(history, reporter, epoch, total, dict(logs or {}))

    patience = config.early_stopping_patience or total + 1
    cbs = [
        Progress(),
        keras.callbacks.TerminateOnNaN(),
        keras.callbacks.EarlyStopping(monitor="val_loss", patience=patience, restore_best_weights=True),
        keras.callbacks.ModelCheckpoint(str(folder / "best_model.keras"), monitor="val_loss", save_best_only=True),
        keras.callbacks.BackupAndRestore(str(folder / backup)),
        SnapshotBackup(folder / backup),
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


def fit_keras(
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
    history = History(folder / "history_partial.json", spec.get("resume", False))
    if spec.get("resume"):
        restore_snapshot(folder / "backup")
    with strategy_scope(spec["distribution"]) as dist_info:
        if spec["distribution"] == "multi_worker":
            model = None  # built inside the multi-worker strategy's scope
        elif spec.get("base_model"):
            from ml_expert.tools.transfer import build_transfer_model

            base_path, freeze = Path(spec["base_model"]), spec.get("freeze", True)
            model = build_transfer_model(base_path, task, n_classes, config, data, freeze)
        else:
            model, extra = build_network(spec["architecture"], task, n_classes, config, prepared, data)
            if extra.get("vocabulary"):  # the text vocabulary, fitted on training texts only, saved with the run
                write_json(folder / "vocabulary.json", extra["vocabulary"])
        if model is not None:
            compile_model(model, task, config)
    reporter.progress(force=True, phase="train", step=0, total=config.epochs, message="training started")
    start = time.perf_counter()
    if spec["distribution"] == "multi_worker":
        return fit_multi_worker_task(spec, prepared, data, history, reporter, config, start)
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
    transfer_info = None
    if spec.get("base_model"):
        from ml_expert.tools import transfer

        done = len(history.data.get("loss", []))
        if spec.get("fine_tune_layers") and not reporter.cancel_requested():
            total = done + max(5, config.epochs // 2)
            stage2 = keras_callbacks(config, folder, reporter, history, total, backup="backup_finetune")
            transfer.fine_tune(model, spec["fine_tune_layers"], task, config, data, class_weight, stage2, done)
        transfer_info = {"base_model": ws.relative(Path(spec["base_model"]))}
        transfer_info |= transfer.summary(model, done, len(history.data.get("loss", [])))
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
        "transfer": transfer_info,
    }


def fit_multi_worker_task(
    spec: dict[str, Any],
    prepared: dict[str, Any],
    data: dict[str, Any],
    history: History,
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
        end_of_epoch(history, reporter, epoch, config.epochs, logs)

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
