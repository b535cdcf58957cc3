"""Distributed training on TensorFlow's own engine: MirroredStrategy and MultiWorkerMirroredStrategy."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest
from conftest import prepared_run

from ml_expert.memory.errors import InvalidInputError
from ml_expert.tools.evaluation.evaluate import evaluate
from ml_expert.tools.jobs.manager import JobManager
from ml_expert.tools.training.config import TrainConfig
from ml_expert.tools.training.train import train
from ml_expert.tools.workspace import Workspace


def _ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _workers(ws: Workspace, run_id: str, epochs: int) -> list[subprocess.Popen]:
    ports = _ports(2)
    procs = []
    for index in range(2):
        tf_config = {
            "cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
            "task": {"type": "worker", "index": index},
        }
        env = {**os.environ, "TF_CONFIG": json.dumps(tf_config), "ML_EXPERT_WORKSPACE": str(ws.root)}
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "ml_expert.server.cli", "worker-train", run_id, "--epochs", str(epochs)],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    return procs


@pytest.mark.slow
def test_two_workers_match_a_single_process(jobs_ws: Workspace) -> None:
    run = prepared_run(jobs_ws, "breast_cancer")
    procs = _workers(jobs_ws, run, epochs=15)
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs[0][1][-2000:] + outs[1][1][-2000:]
    chief = json.loads(outs[0][0].strip().splitlines()[-1])
    assert chief["distribution"]["replicas"] == 2 and chief["distribution"]["chief"]
    assert chief["epochs_trained"] == 15 and "no early stopping" in chief["distribution"]["note"]
    assert json.loads(outs[1][0].strip().splitlines()[-1])["chief"] is False
    config = TrainConfig(epochs=15, early_stopping_patience=0, reduce_lr_patience=0)
    single = train(jobs_ws, run, "dnn", config=config, wait_seconds=300)
    assert single.status == "succeeded", single.error
    scores = []
    for model_id in (chief["model_id"], single.result["model_id"]):
        ev = evaluate(jobs_ws, run, model_id=model_id, wait_seconds=120)
        scores.append(ev.result["evaluations"][0]["test_metrics"]["accuracy"])
    assert abs(scores[0] - scores[1]) <= 0.02 and min(scores) >= 0.93


@pytest.mark.slow
def test_a_dead_worker_fails_the_chief_without_hanging(ws: Workspace) -> None:
    run = prepared_run(ws, "breast_cancer")
    chief, worker = _workers(ws, run, epochs=500)
    deadline = time.monotonic() + 120
    # an epoch ends only when both workers have run its collective steps: both are training now
    while time.monotonic() < deadline and not list(ws.run_dir(run).glob("models/*/history_partial.json")):
        assert chief.poll() is None and worker.poll() is None, "a worker ended before training"
        time.sleep(0.2)
    assert list(ws.run_dir(run).glob("models/*/history_partial.json")), "no epoch finished within 120 s"
    worker.kill()
    worker.wait()
    try:
        _, err = chief.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        chief.kill()
        pytest.fail("the chief hung after a worker died")
    assert chief.returncode != 0 and "lost a worker" in err


@pytest.mark.slow
def test_mirrored_strategy_over_two_cpu_replicas(ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ML_EXPERT_CPU_REPLICAS", "2")
    ws.jobs = JobManager(ws).start()
    run = prepared_run(ws, "breast_cancer")
    status = train(ws, run, "dnn", config=TrainConfig(epochs=10), distribution="mirrored", wait_seconds=300)
    assert status.status == "succeeded", status.error
    dist = status.result["distribution"]
    assert dist["strategy"] == "MirroredStrategy" and dist["replicas"] == 2
    assert status.result["val_metrics"]["accuracy"] >= 0.93


def test_multi_worker_needs_tf_config(jobs_ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TF_CONFIG", raising=False)
    run = prepared_run(jobs_ws, "wine")
    with pytest.raises(InvalidInputError, match="TF_CONFIG"):
        train(jobs_ws, run, "dnn", distribution="multi_worker")
    with pytest.raises(InvalidInputError, match="Keras models"):
        train(jobs_ws, run, "random_forest", distribution="mirrored")


@pytest.mark.slow
def test_two_workers_apply_the_class_weights_they_report(jobs_ws: Workspace) -> None:
    """On a 29:1 table the chief's notes said "class_weight='balanced' applied" while the multi-worker loop weighed
    every row the same: after 2 epochs it predicted the majority class only (balanced accuracy 0.5)."""
    import numpy as np
    import pandas as pd
    from conftest import frame_run

    rng = np.random.default_rng(0)
    x = rng.normal(size=(1500, 4))
    frame = pd.DataFrame(x, columns=["a", "b", "c", "d"]).assign(y=np.where(x[:, 0] + x[:, 1] > 2.4, "rare", "common"))
    run = frame_run(jobs_ws, frame, "y")
    procs = _workers(jobs_ws, run, epochs=2)
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs[0][1][-2000:] + outs[1][1][-2000:]
    chief = json.loads(outs[0][0].strip().splitlines()[-1])
    assert any("class_weight='balanced' applied" in n for n in chief["notes"]), chief["notes"]
    ev = evaluate(jobs_ws, run, model_id=chief["model_id"], wait_seconds=120)
    assert ev.result["evaluations"][0]["test_metrics"]["balanced_accuracy"] > 0.8  # 0.91 weighted; unweighted 0.5
