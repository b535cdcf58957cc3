"""The search on an existing dask.distributed cluster: a real LocalCluster with scheduler and worker processes
(never a mock). Fold fits run on the workers (the arrays scattered once), the budget and the ranking stay on the
driver, a killed worker is survived, a cluster that disappears mid-search degrades to local fits with a note,
and a scheduler that does not answer leaves the search local."""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Iterator

import numpy as np
import pytest

pytest.importorskip("distributed")
from distributed import Client, LocalCluster

from ml_expert.tools.training import cluster as cluster_module
from ml_expert.tools.training.auto import run_search
from ml_expert.tools.training.portfolio import Config, portfolio

pytestmark = pytest.mark.slow


def _portfolio() -> list[Config]:
    return portfolio("binary", _data()[1], 3000, 20)


def _data() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import make_classification

    X, y = make_classification(n_samples=3000, n_features=20, n_informative=8, random_state=0)
    return X.astype(np.float32), y


@pytest.fixture
def local_cluster() -> Iterator[LocalCluster]:
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as lc:
        yield lc


def test_fold_fits_run_on_the_workers_and_the_ranking_on_the_driver(local_cluster: LocalCluster) -> None:
    X, y = _data()
    outcome = run_search(X, y, "binary", budget_s=25, scheduler=local_cluster.scheduler_address)
    summary = outcome.summary
    assert summary.cluster == local_cluster.scheduler_address and summary.fits_on_cluster >= 10
    workers = set(local_cluster.scheduler_info["workers"])
    ran_on = {address for row in outcome.leaderboard for address in row.get("ran_on", [])}
    assert ran_on and ran_on <= workers  # the leaderboard says where each candidate's fits ran
    assert summary.complete >= 2 and outcome.leaderboard[0]["folds"] == summary.folds == 5
    assert summary.cv_score > 0.85 and (outcome.model.predict(X[:200]) == y[:200]).mean() > 0.85  # refit here


def test_the_search_on_a_cluster_converges_by_the_same_rules_as_here(
    local_cluster: LocalCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ml_expert.tools.training import local

    # no leader of another tree family ends it before its first step: neighbours of the best boosting run, a wave of
    # two (the cluster's slots) at a time, until PATIENCE of them bring no gain beyond the folds' noise
    monkeypatch.setattr(local, "SUBSTITUTE_FAMILIES", ())
    X, y = _data()
    outcome = run_search(X, y, "binary", budget_s=60, scheduler=local_cluster.scheduler_address)
    summary = outcome.summary
    assert any(note.startswith(f"converged: {local.PATIENCE} neighbours") for note in summary.notes), summary.notes
    assert summary.search_seconds < 50  # the budget is a ceiling: the old cluster loop ran neighbours until it ended
    workers = set(local_cluster.scheduler_info["workers"])
    neighbours = [row for row in outcome.leaderboard if row["candidate"] not in {c.label() for c in _portfolio()}]
    assert len(neighbours) >= local.PATIENCE and all(row["status"] == "complete" for row in neighbours)
    assert all(row.get("ran_on") and set(row["ran_on"]) <= workers for row in neighbours)  # on the workers
    assert len(neighbours) % 2 == 0  # in waves of the cluster's two slots
    assert summary.cv_score > 0.9


def test_a_worker_killed_mid_search_is_survived(local_cluster: LocalCluster) -> None:
    X, y = _data()
    with Client(local_cluster.scheduler_address) as client:
        pid = next(iter(client.run(os.getpid).values()))
    killer = threading.Timer(4.0, os.kill, (pid, signal.SIGKILL))  # mid-search, whatever it is fitting
    killer.start()
    try:
        outcome = run_search(X, y, "binary", budget_s=20, scheduler=local_cluster.scheduler_address)
    finally:
        killer.cancel()
    assert outcome.summary.complete >= 1 and outcome.summary.cv_score > 0.85
    assert outcome.summary.fits_on_cluster >= 1


def test_a_candidate_whose_fits_raise_on_the_workers_is_dropped_and_the_cluster_kept(
    local_cluster: LocalCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ml_expert.tools.training import auto

    # a CatBoost configuration CatBoost refuses (depth above 16) raises in each worker's fold fit, as a library's
    # error on degenerate data would; the configuration travels to the workers as data, no code is patched there
    bad = Config("catboost", (("depth", 17),))
    monkeypatch.setattr(auto, "portfolio", lambda *a, **k: [*portfolio(*a, **k)[:1], bad, *portfolio(*a, **k)[1:]])
    X, y = _data()
    outcome = run_search(X, y, "binary", budget_s=20, scheduler=local_cluster.scheduler_address)
    summary = outcome.summary
    assert any(note.startswith(f"{bad.label()} failed on fold") for note in summary.notes), summary.notes
    assert not any("failed mid-search" in note for note in summary.notes)  # one fit's error is not the cluster's
    assert next(row for row in outcome.leaderboard if row["candidate"] == bad.label())["status"] == "failed"
    ran_on = {a for row in outcome.leaderboard if row["status"] == "complete" for a in row.get("ran_on", [])}
    assert ran_on and ran_on <= set(local_cluster.scheduler_info["workers"])  # the rest still ran on the cluster
    assert summary.complete >= 2 and summary.cv_score > 0.85


def _kills_its_worker_on_catboost(
    X: np.ndarray, y: np.ndarray, problem: object, task: cluster_module.FoldTask, tick: object, codes: object
) -> object:
    """The fold fit the driver sends (pickled by value): a CatBoost fit ends its worker process, as one that runs
    out of memory is killed; the others are the workers' own (unpatched) fold fits."""
    if task.config.family == "catboost":
        os._exit(1)
    from ml_expert.tools.training.cluster import fit_fold

    return fit_fold(X, y, problem, task, tick, codes)


def test_a_candidate_whose_fit_kills_its_workers_is_dropped_and_the_cluster_kept(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Dask retries a task whose worker died on another one, and after `allowed-failures` deaths gives up with
    KilledWorker. That is the candidate's doing (a fit too large for a worker's memory), not the cluster's: it used to
    drop the whole cluster and run the rest of the search here, where such a fit could take the driver down too."""
    import cloudpickle
    import dask

    module = sys.modules[__name__]
    cloudpickle.register_pickle_by_value(module)
    monkeypatch.setattr(cluster_module, "fit_fold", _kills_its_worker_on_catboost)  # what DaskFolds submits
    X, y = _data()
    try:
        with (
            dask.config.set({"distributed.scheduler.allowed-failures": 1}),
            LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as lc,
        ):
            outcome = run_search(X, y, "binary", budget_s=45, scheduler=lc.scheduler_address)
            workers = set(lc.scheduler_info["workers"])
    finally:
        cloudpickle.unregister_pickle_by_value(module)
    summary = outcome.summary
    catboost = next(row for row in outcome.leaderboard if row["family"] == "catboost")
    assert catboost["status"] == "failed", summary.notes
    # Dask gives up on the task with KilledWorker, or (seen on a loaded machine) lets go of it as cancelled
    why = {
        f"WorkerKilled: {message}"[: 200 + 14] for message in (cluster_module.WORKER_KILLED, cluster_module.WORKER_LOST)
    }
    assert any(note.startswith(f"{catboost['candidate']} failed on fold 1") and any(w in note for w in why)
               for note in summary.notes), summary.notes  # fmt: skip
    assert summary.failed_families["catboost"] in why, summary.failed_families
    assert set(summary.failed_families) == {"catboost"}
    assert not any("failed mid-search" in note for note in summary.notes), summary.notes
    ran_on = {a for row in outcome.leaderboard if row["status"] == "complete" for a in row.get("ran_on", [])}
    assert ran_on and all(address.startswith("tcp://") for address in ran_on)  # the rest still ran on the cluster
    assert summary.fits_on_cluster >= 10 and summary.complete >= 2 and summary.cv_score > 0.85
    assert workers  # the nannies restarted the killed workers


def test_a_cluster_that_disappears_mid_search_degrades_to_local_fits() -> None:
    X, y = _data()
    lc = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    stopper = threading.Timer(4.0, lc.close)
    stopper.start()
    try:
        outcome = run_search(X, y, "binary", budget_s=20, scheduler=lc.scheduler_address)
    finally:
        stopper.cancel()
        lc.close()
    notes = " ".join(outcome.summary.notes)
    assert "failed mid-search" in notes and "ran locally" in notes
    assert outcome.summary.complete >= 1 and outcome.summary.cv_score > 0.85


def test_no_scheduler_answering_leaves_the_search_local(monkeypatch: pytest.MonkeyPatch) -> None:
    from conftest import free_port

    monkeypatch.setattr(cluster_module, "CONNECT_TIMEOUT_S", 2.0)
    X, y = _data()
    address = f"tcp://127.0.0.1:{free_port()}"
    outcome = run_search(X, y, "binary", budget_s=8, scheduler=address)
    assert outcome.summary.cluster is None and outcome.summary.fits_on_cluster == 0
    assert any(address in note and "ran locally" in note for note in outcome.summary.notes)
    assert outcome.summary.complete >= 1
