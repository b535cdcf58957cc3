"""Keras callbacks of a training job, as top-level classes (imported only in worker processes).

- `EpochHistory`: per-epoch logs persisted after every epoch (a resumed job keeps earlier epochs).
- `JobProgress`: reports each epoch to the job row and stops at the next batch when cancel is requested.
- `Deadline`: stops training at the end of the epoch that passes a wall-clock deadline, or on cancel (probes).
- `SnapshotBackup`: keeps a complete copy of BackupAndRestore's folder after each epoch.
- `EarlyStop`: EarlyStopping on val_loss whose improvements must exceed a fraction of the first epoch's loss.
`job_callbacks` assembles the seed's set around them.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras

from ml_expert.tools.jobs.specs import Reporter
from ml_expert.tools.training.config import TrainConfig
from ml_expert.tools.workspace import write_json


class EpochHistory:
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

    def record_epoch(self, reporter: Reporter, epoch: int, total: int, logs: dict[str, Any]) -> None:
        """Persist the epoch and report it: `epoch 7/100 loss 0.31 val_loss 0.35 …`."""
        self.add(epoch, logs)
        shown = " ".join(f"{k} {v:.4g}" for k, v in logs.items() if k != "learning_rate")
        reporter.progress(
            force=True,
            phase="train",
            step=epoch + 1,
            total=total,
            message=f"epoch {epoch + 1}/{total} {shown}",
            metrics={k: float(v) for k, v in logs.items()},
        )


class JobProgress(keras.callbacks.Callback):
    """Epoch progress into the job row; a cancel request stops training at the next batch boundary."""

    def __init__(self, reporter: Reporter, history: EpochHistory, total: int) -> None:
        super().__init__()
        self.reporter, self.history, self.total = reporter, history, total

    def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
        if self.reporter.cancel_requested():
            self.model.stop_training = True

    def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
        self.history.record_epoch(self.reporter, epoch, self.total, dict(logs or {}))


class Deadline(keras.callbacks.Callback):
    """Stop at the end of the first epoch that ends after `deadline` (a `time.perf_counter()` value), or at the next
    batch once `cancelled()` is true (the job's cancel flag)."""

    def __init__(self, deadline: float, cancelled: Callable[[], bool] = lambda: False) -> None:
        super().__init__()
        self.deadline, self.cancelled = deadline, cancelled

    def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
        if self.cancelled():
            self.model.stop_training = True

    def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
        if time.perf_counter() >= self.deadline:
            self.model.stop_training = True


class SnapshotBackup(keras.callbacks.Callback):
    """After BackupAndRestore has written an epoch, keep a complete copy of it (copy, then rename).

    A worker killed while the backup is being written leaves a torn file; resume starts from the last
    complete copy instead (at most one epoch earlier). A worker killed while removing the previous copy leaves part
    of `.old` behind: it is removed before the next rename, which cannot replace a folder that is not empty.
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
            shutil.rmtree(old, ignore_errors=True)  # a leftover of a kill mid-removal; `good` is complete and newer
            good.rename(old)
        tmp.rename(good)
        shutil.rmtree(old, ignore_errors=True)


class EarlyStop(keras.callbacks.EarlyStopping):
    """The seed's EarlyStopping (val_loss, restoring the best weights), where an epoch counts as an improvement
    only when it lowers the best loss by more than `relative_delta` of the first epoch's loss.

    Keras' own `min_delta` is absolute, and its default of 0 counts dust as progress: a text model at 100 % validation
    accuracy kept "improving" its loss from 4e-5 to 3e-5 for 60 epochs. The first epoch's loss is the problem's own
    scale (cross-entropy near log(classes); MSE near the target's variance, since the output head rescales to the
    target), so 1e-4 of it is a change of 0.0001 in R² for a regression: no model worth waiting for."""

    def __init__(self, patience: int, relative_delta: float = 1e-4) -> None:
        super().__init__(monitor="val_loss", mode="min", patience=patience, restore_best_weights=True)
        self.relative_delta = relative_delta
        self.scale = 0.0

    def _is_improvement(self, monitor_value: Any, reference_value: Any) -> bool:
        if reference_value is None:  # the first epoch (of this fit): its loss sets the scale
            self.scale = abs(float(monitor_value))
            return True
        return float(monitor_value) < float(reference_value) - self.relative_delta * self.scale


def restore_snapshot(backup: Path) -> None:
    """Before a resumed fit: put the last complete backup copy in BackupAndRestore's place."""
    for suffix in (".good", ".old"):
        copy = backup.with_name(backup.name + suffix)
        if copy.exists():
            shutil.rmtree(backup, ignore_errors=True)
            shutil.copytree(copy, backup)
            return


def job_callbacks(
    config: TrainConfig, folder: Path, reporter: Reporter, history: EpochHistory, total: int, backup: str = "backup"
) -> list[keras.callbacks.Callback]:
    """The seed's callbacks (EarlyStopping restoring the best weights, ReduceLROnPlateau, TerminateOnNaN)
    plus progress, cancel-at-batch and BackupAndRestore with snapshots (for resume)."""
    patience = config.early_stopping_patience or total + 1
    cbs = [
        JobProgress(reporter, history, total),
        keras.callbacks.TerminateOnNaN(),
        EarlyStop(patience),
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
