"""The search's helper process: two fold fits side by side (one here, one there) score exactly as one after the other,
a helper that dies leaves its fit to the search's process, a cancel reaches the fit it holds, and it never outlives
the process that started it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Any

import numpy as np
import pytest

from ml_expert.tools.training import helper as helpers
from ml_expert.tools.training.portfolio import HGB_PORTFOLIO, config
from ml_expert.tools.training.search import Search
from ml_expert.tools.training.trial import Trial


@pytest.fixture(scope="module")
def table() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_diabetes

    X, y = load_diabetes(return_X_y=True)
    X = np.column_stack([X, np.round(X[:, 0] * 100)])  # an integer-valued column beside the scaled ones
    return ((X - X.mean(axis=0)) / X.std(axis=0)).astype(np.float32), y


CANDIDATES = (config("hgb", **HGB_PORTFOLIO[0]), config("catboost", depth=4, learning_rate=0.1), config("rf"))


def _search(table: tuple[np.ndarray, np.ndarray], helper: bool, reporter: Any = None) -> Search:
    search = Search(*table, "regression", budget_s=60, reporter=reporter)
    if helper:
        search.start_helper()
        assert search.helper is not None, "a 60 s search on 2+ cores starts a helper"
        deadline = time.monotonic() + 60
        while not search.helper.ready():
            assert time.monotonic() < deadline, "the helper did not start"
            time.sleep(0.05)
    return search


def _cross_validate(search: Search) -> list[Trial]:
    trials = [Trial(cfg) for cfg in CANDIDATES]
    search.trials += trials
    for trial in trials:
        search._complete(trial, len(trials), patient=True)
    return trials


@pytest.fixture(scope="module")
def alone(table: tuple[np.ndarray, np.ndarray]) -> list[Trial]:
    """The three candidates cross-validated one fold after the other, without a helper."""
    return _cross_validate(_search(table, helper=False))


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="a helper needs 2 cores")
def test_two_folds_side_by_side_score_as_one_after_the_other(
    table: tuple[np.ndarray, np.ndarray], alone: list[Trial]
) -> None:
    search = _search(table, helper=True)
    try:
        trials = _cross_validate(search)
    finally:
        search.close()
    assert search.fits_in_helper == 6  # folds (0, 1), (2, 3), (4) of each: 2 of 5 in the helper
    for side, single in zip(trials, alone, strict=True):
        assert side.complete and single.complete
        np.testing.assert_allclose(side.scores, single.scores, rtol=1e-9)  # the same folds, in fold order
        np.testing.assert_allclose(side.oof, single.oof, rtol=1e-9)
    bag, single_bag = trials[0].models, alone[0].models  # the boosting fold models kept for bagging, from both
    assert sorted(bag) == list(range(5))
    X = table[0]
    for fold in range(5):
        np.testing.assert_allclose(bag[fold].predict(X), single_bag[fold].predict(X), rtol=1e-9)
    assert -np.mean(trials[0].scores) < 0.8 * np.std(table[1])  # it learned: RMSE well under the target's spread


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="a helper needs 2 cores")
def test_a_helper_that_dies_while_it_holds_a_fit_leaves_that_fit_to_this_process(
    table: tuple[np.ndarray, np.ndarray], alone: list[Trial], monkeypatch: pytest.MonkeyPatch
) -> None:
    search = _search(table, helper=True)
    process = search.helper.process  # type: ignore[union-attr]
    run_here = search._run_here

    def killed_meanwhile(trial: Trial, task: Any) -> Any:
        if process.poll() is None:  # the helper holds the pair's other fit now: killed as the OOM killer would
            process.kill()
            process.wait(10)
        return run_here(trial, task)

    monkeypatch.setattr(search, "_run_here", killed_meanwhile)
    try:
        trials = _cross_validate(search)
    finally:
        search.close()
    assert search.helper is None and search.fits_in_helper == 0
    assert any("helper process for fold fits ended mid-search" in note for note in search.notes), search.notes
    for side, single in zip(trials, alone, strict=True):  # every fold scored, here, as without a helper
        assert side.complete
        np.testing.assert_allclose(side.scores, single.scores, rtol=1e-9)


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="a helper needs 2 cores")
def test_a_fit_that_raises_in_the_helper_drops_its_candidate_with_a_note(table: tuple[np.ndarray, np.ndarray]) -> None:
    search = _search(table, helper=True)
    good, bad = Trial(CANDIDATES[0]), Trial(config("hgb", learning_rate=-1.0))  # scikit-learn refuses the rate
    search.trials += [good, bad]
    try:
        assert search._fit_folds([(good, 0), (bad, 0)]) == [True, False]
        assert search.helper is not None and search.helper.ready()  # the helper goes on
        assert search._fit_folds([(good, 1), (good, 2)]) == [True, True]  # and the next reply is this pair's
    finally:
        search.close()
    assert bad.stopped == "failed" and not bad.scores
    assert any("learning_rate" in note and "dropped" in note for note in search.notes), search.notes
    assert len(good.scores) == 3 and search.fits_in_helper == 1


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="a helper needs 2 cores")
def test_a_pair_whose_second_fit_the_budget_refuses_fits_the_first_alone(table: tuple[np.ndarray, np.ndarray]) -> None:
    search = _search(table, helper=True)
    forest, boosting = Trial(config("rf")), Trial(CANDIDATES[0])
    search.trials += [forest, boosting]
    search.iteration_seconds = 1e3  # boosting folds look so slow that its cap leaves too few iterations
    try:
        assert search._fit_folds([(forest, 0), (boosting, 0)]) == [True, False]
        assert search._fit_folds([(boosting, 1), (forest, 1)]) == [False, True]
    finally:
        search.close()
    assert boosting.stopped == "budget" and not boosting.scores
    assert len(forest.scores) == 2 and search.fits_in_helper == 0  # both forest folds here, on every core


class CancelAfter:
    """A reporter whose cancel flag turns on after `calls` questions."""

    def __init__(self, calls: int) -> None:
        self.calls = calls

    def cancel_requested(self) -> bool:
        self.calls -= 1
        return self.calls < 0

    def progress(self, **kwargs: Any) -> None:
        pass


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="a helper needs 2 cores")
def test_a_cancel_reaches_the_fit_the_helper_holds() -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(8_000, 30)).astype(np.float32)
    y = X @ rng.normal(size=30) + rng.normal(size=8_000)
    search = _search((X, y), helper=True, reporter=CancelAfter(0))
    slow = config("hgb", learning_rate=0.01, max_leaf_nodes=255, min_samples_leaf=2)  # a thousand iterations or more
    here, there = Trial(slow), Trial(slow)
    search.trials += [here, there]
    try:
        assert search._fit_folds([(here, 0), (there, 0)]) == [False, False]
        assert search.cancelled and search.fits_in_helper == 0
        for trial in (here, there):  # the helper's fit stopped too, at its next chunk: no score came back
            assert trial.stopped == "cancelled" and not trial.scores
        assert search.helper is not None and search.helper.alive()  # stopped its fit, not killed
    finally:
        search.close()


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"  # a zombie has ended
    except FileNotFoundError:
        return True


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's")
def test_the_helper_never_outlives_the_process_that_started_it() -> None:
    """A worker killed with SIGKILL (no finally runs) takes its helper with it: no orphan keeps fitting."""
    code = (
        "import os, sys, time, numpy as np\n"
        "from ml_expert.tools.training.cluster import Problem\n"
        "from ml_expert.tools.training.helper import Helper\n"
        "h = Helper(np.zeros((10, 2)), np.zeros(10), Problem('regression', 'rmse', 0, 0), None)\n"
        "while not h.ready(): time.sleep(0.05)\n"
        "print(h.process.pid, flush=True)\n"
        "os.kill(os.getpid(), 9)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == -signal.SIGKILL, out.stderr[-2000:]
    pid = int(out.stdout.strip())
    deadline = time.monotonic() + 10
    while not _gone(pid):
        assert time.monotonic() < deadline, f"helper {pid} outlived its parent"
        time.sleep(0.1)


def test_a_script_without_a_main_guard_runs_once(tmp_path: Any) -> None:
    """multiprocessing's spawn would import the parent's main script again in the helper: a user's script that calls
    the search at its top level would run a second search there."""
    script = tmp_path / "unguarded.py"
    runs = tmp_path / "runs.txt"
    script.write_text(
        "import time, numpy as np\n"
        "from ml_expert.tools.training.cluster import Problem\n"
        "from ml_expert.tools.training.helper import Helper\n"
        f"open({str(runs)!r}, 'a').write('ran\\n')\n"
        "h = Helper(np.zeros((10, 2)), np.zeros(10), Problem('regression', 'rmse', 0, 0), None)\n"
        "deadline = time.monotonic() + 60\n"
        "while not h.ready() and time.monotonic() < deadline: time.sleep(0.05)\n"
        "print(h.ready(), flush=True)\n"
        "h.close()\n"
    )
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "True", out.stderr[-2000:]
    assert runs.read_text() == "ran\n"


def test_no_helper_for_short_budgets_large_tables_one_core_a_cluster_or_when_turned_off(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    from ml_expert.tools.settings import Settings

    assert Settings.from_env({"ML_EXPERT_WORKSPACE": str(tmp_path)}).fit_helper
    assert not Settings.from_env({"ML_EXPERT_WORKSPACE": str(tmp_path), "ML_EXPERT_FIT_HELPER": "0"}).fit_helper
    off = Search(np.zeros((50, 2), np.float32), np.arange(50.0), "regression", budget_s=60, helper=False)
    off.start_helper()
    assert off.helper is None
    monkeypatch.setattr(helpers, "usable_cores", lambda: 2)
    assert helpers.wanted(1_000, 10**6, 60, cluster=False)
    assert not helpers.wanted(1_000, 10**6, helpers.MIN_BUDGET_S - 1, cluster=False)  # its start would not pay
    assert not helpers.wanted(helpers.MAX_ROWS + 1, 10**6, 60, cluster=False)  # row samples decide there
    assert not helpers.wanted(1_000, helpers.MAX_BYTES + 1, 60, cluster=False)  # a second copy of the table
    assert not helpers.wanted(1_000, 10**6, 60, cluster=True)  # the cluster's workers fit
    monkeypatch.setattr(helpers, "usable_cores", lambda: 1)
    assert not helpers.wanted(1_000, 10**6, 60, cluster=False)


@pytest.mark.slow
@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="a helper needs 2 cores")
def test_a_search_with_the_helper_completes_the_candidates_it_completes_alone(
    table: tuple[np.ndarray, np.ndarray],
) -> None:
    """The whole scheduler (first folds of two candidates at a time, halving, completion two folds at a time, the
    local search and its convergence) picks the same complete candidates with the same fold scores; a candidate
    that trails may have one fold more before it stops."""
    from ml_expert.tools.training.portfolio import portfolio

    def complete(helper: bool) -> tuple[dict[str, list[float]], Search]:
        search = Search(*table, "regression", budget_s=60, helper=helper)
        search.run(portfolio("regression", table[1], *table[0].shape))
        return {t.config.label(): t.scores for t in search.trials if t.complete}, search

    side, with_helper = complete(helper=True)
    single, alone = complete(helper=False)
    assert with_helper.fits_in_helper > 10 and alone.fits_in_helper == 0 and with_helper.helper is None
    assert side.keys() == single.keys() and len(side) >= 3
    for label, scores in side.items():
        np.testing.assert_allclose(scores, single[label], rtol=1e-9)
