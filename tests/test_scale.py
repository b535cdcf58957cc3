"""Size as a non-event: stoppable fits (chunks that check a deadline and report progress), row-sample rungs on large
tables, forests on bootstrap samples, and a refit capped by the budget. Times themselves are measured in
bench/scale_bench.py; these tests check behaviour."""

from __future__ import annotations

import multiprocessing
import os
import time
import warnings

import numpy as np
import pytest
from sklearn.compose import TransformedTargetRegressor
from sklearn.ensemble import (
    ExtraTreesClassifier,
    ExtraTreesRegressor,
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)

from ml_expert.tools.training.auto import run_search
from ml_expert.tools.training.chunked import fit_stoppable
from ml_expert.tools.training.portfolio import FOREST_SAMPLE_ROWS, build, config

STOPPING = {"max_iter": 2000, "early_stopping": True, "validation_fraction": 0.1, "n_iter_no_change": 20}


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(4000, 8))
    y = (X[:, 0] + X[:, 1] * X[:, 2] + rng.normal(size=4000) > 0).astype(int)
    target = np.exp(X[:, 0] + rng.normal(size=4000) * 0.3)
    return X, y, target


@pytest.mark.parametrize(
    "make",
    [
        lambda: HistGradientBoostingClassifier(random_state=42, **STOPPING),
        lambda: RandomForestClassifier(n_estimators=60, random_state=42, n_jobs=2),
        lambda: RandomForestClassifier(n_estimators=60, random_state=42, n_jobs=2, class_weight="balanced"),
    ],
    ids=["boosting", "forest", "balanced-forest"],
)
def test_a_chunked_fit_is_the_one_call_fit(data: tuple, make: object) -> None:
    X, y, _ = data
    whole, chunked = make().fit(X, y), make()  # type: ignore[operator]
    ticks: list[str] = []
    with warnings.catch_warnings(record=True) as caught:  # none for refitting the same rows with warm_start
        grown = fit_stoppable(chunked, X, y, time.perf_counter() + 600, ticks.append)
    assert [str(w.message) for w in caught] == []
    assert grown.chunks >= 2 and not grown.stopped_by_deadline and ticks  # it did grow in chunks, and said so
    assert np.array_equal(whole.predict_proba(X), chunked.predict_proba(X))
    assert chunked.get_params()["warm_start"] is False  # a clone of it starts afresh


def test_a_chunked_forest_regressor_is_the_one_call_fit(data: tuple) -> None:
    X, _, target = data
    whole, chunked = (RandomForestRegressor(n_estimators=40, random_state=42, n_jobs=2) for _ in range(2))
    grown = fit_stoppable(chunked, X, target, time.perf_counter() + 600)
    assert grown.chunks >= 2 and grown.units == 40
    assert np.allclose(whole.fit(X, target).predict(X), chunked.predict(X), rtol=1e-12)  # the trees summed in any order
    assert chunked.get_params()["warm_start"] is False


def test_a_log_target_boosting_grows_in_chunks_too(data: tuple) -> None:
    X, _, target = data

    def make() -> TransformedTargetRegressor:
        return TransformedTargetRegressor(
            HistGradientBoostingRegressor(random_state=42, **STOPPING), func=np.log1p, inverse_func=np.expm1
        )

    whole, chunked = make().fit(X, target), make()
    grown = fit_stoppable(chunked, X, target, time.perf_counter() + 600)
    assert grown.chunks >= 2 and grown.units == whole.regressor_.n_iter_
    assert np.allclose(whole.predict(X), chunked.predict(X))


def test_the_deadline_stops_growing_with_a_valid_smaller_model(data: tuple) -> None:
    X, y, _ = data
    model = HistGradientBoostingClassifier(random_state=42, max_iter=100_000, early_stopping=False)
    grown = fit_stoppable(model, X, y, time.perf_counter() + 0.5)
    assert grown.stopped_by_deadline and 0 < model.n_iter_ < 100_000
    assert (model.predict(X) == y).mean() > 0.8  # what it grew is a working model


def test_a_fit_keeps_the_time_its_held_out_rows_take_to_predict_free_before_its_deadline(data: tuple) -> None:
    X, y, _ = data
    held_out = np.tile(X, (30, 1))  # 120,000 rows to score once the fit ends, as a fold of a large table has

    def fit_then_score(scoring: tuple | None) -> tuple[int, float]:
        model = ExtraTreesClassifier(n_estimators=100_000, min_samples_leaf=1, random_state=0)
        started = time.perf_counter()
        grown = fit_stoppable(model, X, y, started + 1.0, scoring=scoring)
        model.predict_proba(held_out)
        return grown.units, time.perf_counter() - started

    trees, seconds = fit_then_score((held_out[:20_000], len(held_out)))
    unreserved_trees, unreserved_seconds = fit_then_score(None)
    assert seconds < 1.0 * 1.25 < unreserved_seconds  # fit + scoring end near the deadline, not past it
    assert 0 < trees < unreserved_trees


def test_held_out_rows_are_scored_in_chunks_with_progress_between_them(
    data: tuple, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ml_expert.tools.core import chunks

    X, y, _ = data
    model = RandomForestClassifier(n_estimators=20, random_state=0).fit(X[:3000], y[:3000])
    monkeypatch.setattr(chunks, "PREDICT_CHUNK", 400)  # as 500,000 rows at a time are at 10M rows
    ticks: list[str] = []
    rows = np.arange(3000, 4000)
    output = chunks.predict_in_chunks(model.predict_proba, X, rows, ticks.append, "scoring held-out rows")
    assert np.array_equal(output, model.predict_proba(X[rows]))  # the same output as in one call
    assert ticks == [f"scoring held-out rows {start:,} of 1,000" for start in (0, 400, 800)]


def test_a_cancel_between_chunks_stops_the_fit(data: tuple) -> None:
    X, y, _ = data

    class Stop(Exception):
        pass

    def tick(step: str) -> None:
        raise Stop(step)

    model = HistGradientBoostingClassifier(random_state=42, **STOPPING)
    with pytest.raises(Stop, match="iteration 10 of 2000"):
        fit_stoppable(model, X, y, time.perf_counter() + 600, tick)


def test_forests_grow_on_bootstrap_samples_of_large_tables() -> None:
    small = build(config("et"), "regression", "rmse", 42, rows=FOREST_SAMPLE_ROWS)
    large = build(config("et"), "regression", "rmse", 42, rows=4 * FOREST_SAMPLE_ROWS)
    assert isinstance(large, ExtraTreesRegressor)
    assert small.get_params()["max_samples"] is None
    assert large.get_params()["bootstrap"] and large.get_params()["max_samples"] == pytest.approx(0.25)


@pytest.mark.slow
def test_a_large_table_is_ranked_on_row_samples_before_every_row() -> None:
    rng = np.random.default_rng(1)
    n = 240_000
    X = rng.normal(size=(n, 6)).astype(np.float32)
    y = X[:, 0] * 2 + np.sin(X[:, 1] * 3) + rng.normal(scale=0.5, size=n)
    outcome = run_search(X, y, "regression", budget_s=30)
    summary, board = outcome.summary, outcome.leaderboard
    assert summary.folds == 1  # one hold-out above 200,000 rows
    sampled = [row for row in board if row.get("rows")]
    assert {row["rows"] for row in sampled} == {50_000}  # the rung below the 192,000 training rows of the hold-out
    assert any("halved on 50,000 sampled rows" in row["status"] for row in sampled)
    assert any("ranked on row samples" in note for note in summary.notes)
    assert summary.complete >= 1 and summary.cv_score < 0.75  # RMSE near the noise's 0.5, well below y's spread


def test_prepare_bounds_its_memory_without_changing_small_tables(ws, monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunked transforms give the one-call arrays; above FIT_ROWS / PROFILE_ROWS the preprocessor and the drift
    profile learn from a seeded sample and say so, while the range still comes from every training row."""
    import json

    from conftest import messy_frame

    from ml_expert.tools.data import prepare as prepare_module
    from ml_expert.tools.data import profiling
    from ml_expert.tools.data.prepare import prepare_data

    messy_frame(n=1200).to_csv(ws.root / "messy.csv", index=False)
    whole = prepare_data(ws, path="messy.csv", target="label")
    monkeypatch.setattr(prepare_module, "CHUNK_ROWS", 97)
    chunked = prepare_data(ws, path="messy.csv", target="label")
    for split in ("train", "val", "test"):
        a, b = (np.load(ws.run_dir(r.run_id) / "data" / f"X_{split}.npy") for r in (whole, chunked))
        assert a.dtype == np.float32 and np.array_equal(a, b)
    assert not any("sample" in w for w in whole.warnings)

    monkeypatch.setattr(prepare_module, "FIT_ROWS", 300)
    monkeypatch.setattr(profiling, "PROFILE_ROWS", 250)
    sampled = prepare_data(ws, path="messy.csv", target="label")
    assert any("sample of 300 of the" in w for w in sampled.warnings)
    X_train = np.load(ws.run_dir(sampled.run_id) / "data" / "X_train.npy")
    x1 = sampled.feature_names.index("x1")
    assert abs(float(X_train[:, x1].mean())) < 0.2 and 0.8 < float(X_train[:, x1].std()) < 1.2  # scaled, from a sample
    profile = json.loads((ws.run_dir(sampled.run_id) / "profile.json").read_text())
    assert profile["sampled_rows"] == 250 and profile["rows"] == sampled.splits["train"]
    whole_profile = json.loads((ws.run_dir(whole.run_id) / "profile.json").read_text())
    for column in ("x1", "x2"):  # min and max from every training row, not from the sample
        assert profile["columns"][column]["min"] == whole_profile["columns"][column]["min"]
        assert profile["columns"][column]["max"] == whole_profile["columns"][column]["max"]


def _spin() -> None:
    while True:
        pass


class _RecordsThreads:
    """An estimator that records the OpenMP thread count in force while it fits."""

    def fit(self, X: np.ndarray, y: np.ndarray) -> _RecordsThreads:
        from threadpoolctl import threadpool_info

        self.threads_ = {i["num_threads"] for i in threadpool_info() if i["user_api"] == "openmp"}
        return self


def test_the_load_meter_counts_other_processes_work_not_its_own_over_a_fresh_window() -> None:
    from ml_expert.tools.training.cores import MAX_WINDOW_S, LoadMeter, Sample

    two, one = frozenset({0, 1}), frozenset({0})
    samples = iter(
        [
            Sample(0.0, 100.0, 10.0, two), Sample(0.1, 100.1, 10.1, two),  # first call: a baseline, a short sample
            Sample(1.1, 101.6, 10.6, two),  # 1.5 busy core-seconds in 1 s, 0.5 of them this process's own
            Sample(1.3, 103.0, 10.6, two),  # under MIN_WINDOW_S since the last measure: the last answer stands
            Sample(1.1 + MAX_WINDOW_S + 1, 200.0, 20.0, two), Sample(7.2, 200.02, 20.0, two),  # stale: fresh sample
            Sample(8.0, 201.0, 20.0, one), Sample(8.1, 201.05, 20.0, one),  # the affinity changed: fresh sample
        ]
    )  # fmt: skip
    slept: list[float] = []
    meter = LoadMeter(sample=lambda: next(samples), sleep=slept.append)
    assert meter.others() == pytest.approx(0.0)  # all of the first sample's busy time was this process's
    assert meter.others() == pytest.approx(1.0)
    assert meter.others() == pytest.approx(1.0)
    assert meter.others() == pytest.approx(0.2)
    assert meter.others() == pytest.approx(0.5)
    assert len(slept) == 3


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="CPU affinity is Linux only")
def test_a_fit_beside_a_busy_process_holds_openmp_to_the_free_core(monkeypatch: pytest.MonkeyPatch) -> None:
    """With 2 usable cores and another process spinning on one, HistGradientBoosting's OpenMP gets 1 thread (with 2
    it ran 3x slower: bench/contention_bench.py), and the configured count is back after the fit."""
    from threadpoolctl import threadpool_limits

    from ml_expert.tools.training import cores

    mine = sorted(os.sched_getaffinity(0))
    if len(mine) < 2:
        pytest.skip("needs 2 cores")
    two = set(mine[:2])
    os.sched_setaffinity(0, two)
    burner = multiprocessing.get_context("fork").Process(target=_spin, daemon=True)
    try:
        with threadpool_limits(limits=2, user_api="openmp"):  # as OMP_NUM_THREADS=2 configures a worker
            HistGradientBoostingClassifier(max_iter=2).fit(np.eye(4), [0, 1, 0, 1])  # OpenMP is loaded
            monkeypatch.setattr(cores, "_meter", cores.LoadMeter())
            burner.start()
            os.sched_setaffinity(burner.pid, {mine[0]})
            time.sleep(0.3)  # the burner spins before the meter samples
            fit_stoppable(busy := _RecordsThreads(), np.eye(2), np.arange(2), time.perf_counter() + 60)
            after = _RecordsThreads().fit(np.eye(2), np.arange(2)).threads_
    finally:
        burner.terminate()
        os.sched_setaffinity(0, set(mine))
    assert busy.threads_ == {1}, busy.threads_
    assert after == {2}  # the configured count is back after the fit
