"""Phases 2-3: recommend_architecture and train (scikit-learn and Keras) through background jobs. The Keras tests
are in the slow layer, where TensorFlow's start-up (15-19 s in a fresh environment) is paid once for all of them."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import frame_run, prepared_run

from ml_expert.tools.jobs.manager import JobManager, pid_alive
from ml_expert.tools.jobs.tools import get_job
from ml_expert.tools.selection.recommend import recommend_architecture
from ml_expert.tools.training.config import TrainConfig
from ml_expert.tools.training.train import train
from ml_expert.tools.workspace import Workspace

FAST_DNN = TrainConfig(epochs=40, early_stopping_patience=5, batch_size=32)


def _wait_for_epoch(ws: Workspace, job_id: str, epoch: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = get_job(ws, job_id)
        if status.progress.get("phase") == "train" and (status.progress.get("step") or 0) >= epoch:
            return
        assert status.status in ("queued", "running"), status.error
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not reach epoch {epoch}")


def test_recommendation_rules_and_memory(ws: Workspace) -> None:
    run = prepared_run(ws, "breast_cancer")
    rec = recommend_architecture(ws, run)
    assert rec.recommended == "gradient_boosting" and not rec.probed
    assert [c.architecture for c in rec.candidates][:2] == ["gradient_boosting", "random_forest"]
    assert rec.task_analysis.complexity == "low" and rec.task_analysis.classes == 2
    assert "gradient_boosting" in rec.why and rec.distribution == "none"
    assert ws.store.retrieve("ml-expert/architecture").value["recommended"] == "gradient_boosting"
    assert ws.store.retrieve("ml-expert/task-analysis").value["type"] == "classification"
    diabetes = prepared_run(ws, "diabetes")
    assert recommend_architecture(ws, diabetes).recommended == "random_forest"  # the seed's small-regression rule


@pytest.mark.slow
def test_probe_ranks_by_measured_validation_score(jobs_ws: Workspace) -> None:
    run = prepared_run(jobs_ws, "wine")
    rec = recommend_architecture(jobs_ws, run, probe_seconds=20, max_candidates=3)
    probed = [c for c in rec.candidates if c.probe]
    assert rec.probed and len(probed) == 3
    assert [c.score for c in probed] == sorted((c.score for c in probed), reverse=True)
    assert sum(c.probe["fit_seconds"] for c in probed) <= 20 + 10  # the budget, plus one epoch's overrun
    assert all(c.score == round(c.probe["score"], 4) == round(c.probe["accuracy"], 4) for c in probed)  # CV accuracy
    assert rec.candidates[0].score >= 0.9 and "validation" in rec.why


@pytest.mark.parametrize("arch", ["gradient_boosting", "random_forest", "linear"])
def test_sklearn_models_learn_breast_cancer(jobs_ws: Workspace, arch: str) -> None:
    run = prepared_run(jobs_ws, "breast_cancer")
    status = train(jobs_ws, run, arch, wait_seconds=120)
    assert status.status == "succeeded", status.error
    result = status.result
    assert result["val_metrics"]["accuracy"] >= 0.93 and result["learned"]
    folder = jobs_ws.root / result["artifacts"]["folder"]
    history = json.loads((folder / "training_history.json").read_text())
    assert {"loss", "val_loss", "accuracy", "val_accuracy"} <= set(history)
    assert (folder / "training_curves.png").stat().st_size > 5000 and (folder / "model.joblib").exists()
    memory = jobs_ws.store.retrieve("ml-expert/training").value
    assert memory["model_id"] == result["model_id"]
    used = {"gradient_boosting": "max_iter", "random_forest": "n_estimators", "linear": "regularization"}[arch]
    assert used in memory["config"] and "class_weight" in memory["config"]  # the settings it used, only those
    assert not {"hidden_units", "dropout", "epochs", "n_clusters"} & set(memory["config"])


@pytest.mark.slow
def test_dnn_learns_and_writes_the_seed_outputs(jobs_ws: Workspace) -> None:
    run = prepared_run(jobs_ws, "breast_cancer")
    seen: list[dict] = []
    status = train(jobs_ws, run, "dnn", config=FAST_DNN, wait_seconds=180, report=seen.append)
    assert status.status == "succeeded", status.error
    result = status.result
    assert result["framework"] == "keras" and result["val_metrics"]["accuracy"] >= 0.93
    assert result["parameters"] == 30 * 256 + 256 + 256 * 128 + 128 + 128 * 64 + 64 + 64 * 2 + 2  # the seed's DNN
    history = json.loads((jobs_ws.root / result["artifacts"]["history"]).read_text())
    assert {"loss", "val_loss", "accuracy", "val_accuracy"} <= set(history)
    assert len(history["loss"]) == result["epochs_trained"] <= 40
    assert any("epoch 1/40" in p.get("message", "") for p in seen)
    root = jobs_ws.run_dir(run)
    assert (root / "training_history.json").exists() and (root / "training_curves.png").exists()


@pytest.mark.slow
def test_dnn_regression_learns_diabetes(jobs_ws: Workspace) -> None:
    run = prepared_run(jobs_ws, "diabetes")
    status = train(
        jobs_ws, run, "dnn", config=TrainConfig(epochs=60, hidden_units=[64, 32], dropout=0.1), wait_seconds=180
    )
    assert status.status == "succeeded", status.error
    assert status.result["val_metrics"]["r2"] > 0.3 and status.result["learned"]
    assert {"mae", "val_mae"} <= set(json.loads((jobs_ws.root / status.result["artifacts"]["history"]).read_text()))


@pytest.mark.slow
def test_same_seed_gives_bit_identical_weights(jobs_ws: Workspace) -> None:
    import keras

    run = prepared_run(jobs_ws, "wine")
    config = TrainConfig(epochs=3, seed=7)
    paths = []
    for _ in range(2):
        status = train(jobs_ws, run, "dnn", config=config, wait_seconds=180)
        assert status.status == "succeeded", status.error
        paths.append(jobs_ws.root / status.result["artifacts"]["model"])
    a, b = (keras.saving.load_model(p, safe_mode=True) for p in paths)
    assert all(np.array_equal(x, y) for x, y in zip(a.get_weights(), b.get_weights(), strict=True))


@pytest.mark.slow
def test_nan_loss_fails_with_advice(jobs_ws: Workspace) -> None:
    run = prepared_run(jobs_ws, "diabetes")
    status = train(
        jobs_ws, run, "dnn", config=TrainConfig(optimizer="sgd", learning_rate=10, epochs=5), wait_seconds=180
    )
    assert status.status == "failed"
    assert "NaN or infinite" in status.error and "learning_rate" in status.error


def test_a_model_that_learned_nothing_is_flagged(jobs_ws: Workspace) -> None:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(600, 5)), columns=list("abcde")).assign(y=rng.normal(size=600))
    run = frame_run(jobs_ws, frame, "y")
    result = train(jobs_ws, run, "linear", wait_seconds=60).result
    assert result["learned"] is False and any("dummy baseline" in n for n in result["notes"])


def test_class_weights_are_applied_automatically_on_imbalance(jobs_ws: Workspace) -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(800, 3))
    y = np.where(x[:, 0] + rng.normal(scale=0.5, size=800) > 1.6, "fraud", "ok")
    run = frame_run(jobs_ws, pd.DataFrame(x, columns=["a", "b", "c"]).assign(label=y), "label")
    result = train(jobs_ws, run, "gradient_boosting", wait_seconds=60).result
    assert any("class_weight='balanced' applied" in n for n in result["notes"])


def _slow_run(ws: Workspace) -> str:
    rng = np.random.default_rng(2)
    x = rng.normal(size=(12000, 20))
    return frame_run(ws, pd.DataFrame(x).add_prefix("f").assign(y=(x[:, 0] > 0).astype(int)), "y", outliers="none")


@pytest.mark.slow
def test_cancel_stops_training_and_keeps_best_weights(jobs_ws: Workspace) -> None:
    run = _slow_run(jobs_ws)
    status = train(jobs_ws, run, "dnn", config=TrainConfig(epochs=300, early_stopping_patience=0), wait_seconds=0)
    _wait_for_epoch(jobs_ws, status.job_id, 2)
    jobs_ws.jobs.cancel(status.job_id)
    final = jobs_ws.jobs.wait(status.job_id, 120)
    assert final.status == "cancelled"
    assert final.result["cancelled"] and final.result["epochs_trained"] < 300
    assert (jobs_ws.root / final.result["artifacts"]["model"]).exists()
    assert final.result["val_metrics"]["accuracy"] > 0.9


@pytest.mark.slow
def test_a_cancelled_training_resumes_from_its_last_epoch(jobs_ws: Workspace) -> None:
    """resume_job on a cancelled job started again at epoch 1: the cancel had deleted the epoch backups."""
    run = _slow_run(jobs_ws)
    config = TrainConfig(epochs=8, early_stopping_patience=0, reduce_lr_patience=0)
    status = train(jobs_ws, run, "dnn", config=config, wait_seconds=0)
    _wait_for_epoch(jobs_ws, status.job_id, 3)
    jobs_ws.jobs.cancel(status.job_id)
    cancelled = jobs_ws.jobs.wait(status.job_id, 120)
    assert cancelled.status == "cancelled" and cancelled.result["epochs_trained"] < 8
    jobs_ws.jobs.resume(status.job_id)
    steps: list[int] = []
    deadline = time.monotonic() + 240
    while (now := get_job(jobs_ws, status.job_id)).status in ("queued", "running") and time.monotonic() < deadline:
        if now.progress.get("phase") == "train" and now.progress.get("step"):
            steps.append(int(now.progress["step"]))
        time.sleep(0.1)
    assert now.status == "succeeded", now.error
    assert steps and min(steps) >= cancelled.result["epochs_trained"], steps  # no epoch 1 again
    assert now.result["resumed"] and now.result["epochs_trained"] == 8, now.result


@pytest.mark.slow
def test_killed_worker_fails_the_job_and_the_manager_keeps_working(jobs_ws: Workspace) -> None:
    run = _slow_run(jobs_ws)
    status = train(jobs_ws, run, "dnn", config=TrainConfig(epochs=300), wait_seconds=0)
    _wait_for_epoch(jobs_ws, status.job_id, 1)
    jobs_ws.jobs.kill_worker(status.job_id)
    final = jobs_ws.jobs.wait(status.job_id, 60)
    assert final.status == "failed" and "killed by signal 9" in final.error
    again = train(jobs_ws, run, "linear", wait_seconds=60)
    assert again.status == "succeeded"


@pytest.mark.slow
def test_restart_marks_interrupted_and_resume_finishes(ws: Workspace) -> None:
    first = JobManager(ws).start()
    ws.jobs = first
    run = _slow_run(ws)
    config = TrainConfig(epochs=10, early_stopping_patience=0, reduce_lr_patience=0)  # long enough to kill mid-run
    status = train(ws, run, "dnn", config=config, wait_seconds=0)
    _wait_for_epoch(ws, status.job_id, 3)
    first.stop(terminate=False)  # the server vanishes...
    before = get_job(ws, status.job_id)
    pid = ws.job_store.get(status.job_id).pid
    first.kill_worker(status.job_id)  # ...and its worker with it
    deadline = time.monotonic() + 30
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pid_alive(pid) and before.status == "running", (before.status, before.progress)
    second = JobManager(ws).start()  # a new server on the same workspace
    ws.jobs = second
    interrupted = get_job(ws, status.job_id)
    assert interrupted.status == "interrupted", (interrupted.status, interrupted.error)
    second.resume(status.job_id)
    final = second.wait(status.job_id, 180)
    assert final.status == "succeeded", final.error
    assert final.result["resumed"] and final.result["epochs_trained"] == 10, final.result


@pytest.mark.slow
@pytest.mark.parametrize("scale", [1.0, 1e6])
def test_early_stopping_ignores_loss_dust_at_any_scale(scale: float) -> None:
    """Keras' EarlyStopping (min_delta 0) trained a saturated text model 60 epochs more on losses falling from 4e-5
    to 3e-5; improvements below 1e-4 of the first epoch's loss no longer count, whatever the loss's units."""
    import keras

    from ml_expert.tools.training.callbacks import EarlyStop

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.stop_training = False  # as fit() sets it
    stop = EarlyStop(patience=3)
    stop.set_model(model)
    stop.on_train_begin()
    losses = [0.7, 0.1, 0.01, 0.001] + [0.001 - 1e-6 * i for i in range(1, 50)]  # then only dust
    for epoch, loss in enumerate(losses):
        stop.on_epoch_end(epoch, {"val_loss": loss * scale})
        if model.stop_training:
            break
    assert (epoch, stop.best_epoch) == (6, 3)  # best at the last real gain, stopped `patience` epochs later
    plain = keras.callbacks.EarlyStopping(patience=3)
    model.stop_training = False
    plain.set_model(model)
    plain.on_train_begin()
    for epoch, loss in enumerate(losses):
        plain.on_epoch_end(epoch, {"val_loss": loss * scale})
    assert not model.stop_training  # what it replaces never stops on this curve


def test_a_forest_curve_is_the_forest_of_its_first_k_trees() -> None:
    """The forest's training curve is computed as a running mean (each tree predicts once): its first point is one
    tree's loss, its last the whole forest's, on the loss the curve reports."""
    from sklearn.datasets import load_breast_cancer
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.metrics import log_loss

    from ml_expert.tools.training.sklearn_models import _sklearn_history

    X, y = load_breast_cancer(return_X_y=True)
    data = {"X_train": X[:450], "y_train": y[:450], "X_val": X[450:], "y_val": y[450:]}
    forest = RandomForestClassifier(n_estimators=45, random_state=0).fit(X[:450], y[:450])
    history = _sklearn_history(forest, "binary", data)
    assert len(history["val_loss"]) == 20
    first = log_loss(y[450:], forest.estimators_[0].predict_proba(X[450:]), labels=[0, 1])
    assert history["val_loss"][0] == pytest.approx(first)
    assert history["val_loss"][-1] == pytest.approx(log_loss(y[450:], forest.predict_proba(X[450:])))
    assert (
        history["val_accuracy"][-1] == pytest.approx(forest.score(X[450:], y[450:]))
        and history["val_accuracy"][-1] > 0.9
    )


def test_a_snapshot_after_a_kill_mid_removal_replaces_the_leftover_copy(tmp_path: Path) -> None:
    """A worker killed while removing the previous snapshot (`backup.old`) left part of it behind; the resumed job's
    next snapshot then failed with "Directory not empty" renaming `backup.good` onto it (seen once in CI)."""
    from ml_expert.tools.training.callbacks import SnapshotBackup, restore_snapshot

    backup = tmp_path / "backup"
    backup.mkdir()
    (backup / "epoch").write_text("5")
    good = tmp_path / "backup.good"
    good.mkdir()
    (good / "epoch").write_text("4")
    leftover = tmp_path / "backup.old"
    leftover.mkdir()
    (leftover / "epoch").write_text("3")  # the part rmtree had not reached when the worker died
    SnapshotBackup(backup).on_epoch_end(5)
    assert (good / "epoch").read_text() == "5" and not leftover.exists() and not (tmp_path / "backup.tmp").exists()
    (backup / "epoch").write_text("torn")
    restore_snapshot(backup)  # a later resume starts from the last complete copy
    assert (backup / "epoch").read_text() == "5"
