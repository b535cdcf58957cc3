"""The auto search's CatBoost family: category codes as CatBoost's categorical features, fold models early-stopped
on their held-out rows (which say when to stop, never which iteration to keep) and bagged, fits stopped at their
deadline or on a cancel, and a model that loads and predicts the same where only the package's files (and catboost)
are."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import probabilities_from_package_files

from ml_expert.tools.core.portable import ensemble
from ml_expert.tools.core.portable.ensemble import Blend, CatBoost, Coded
from ml_expert.tools.packaging.export import environment
from ml_expert.tools.training import chunked
from ml_expert.tools.training.chunked import fit_stoppable
from ml_expert.tools.training.portfolio import CATBOOST_PORTFOLIO, config
from ml_expert.tools.training.search import Search
from ml_expert.tools.training.sklearn_models import count_parameters, required_packages
from ml_expert.tools.training.trial import Cancelled, Trial


def _coded_table(n: int = 600, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """A number and a 6-level category (one-hot) with an unordered effect (no linear order of the levels fits)."""
    rng = np.random.default_rng(seed)
    level = rng.integers(0, 6, n)
    X = np.column_stack([rng.normal(size=n), np.eye(6)[level]]).astype(np.float32)
    y = (np.array([0.0, 2.5, -2.0, 1.5, -1.0, 0.5])[level] + X[:, 0] + rng.normal(0, 0.3, n) > 0).astype(int)
    return X, y


def test_catboost_folds_learn_category_codes_and_their_models_are_bagged() -> None:
    X, y = _coded_table()
    seen, held_out = np.arange(450), np.arange(450, 600)
    search = Search(X[seen], y[seen], "binary", budget_s=60, categorical_groups=[list(range(1, 7))])
    trial = Trial(config("catboost", **CATBOOST_PORTFOLIO[0]))
    search.trials.append(trial)
    search._fit_fold(trial, 0)
    search._complete(trial, 1)
    assert trial.complete and trial.mean > 0.9, trial.scores
    model = search.refit(trial)
    assert isinstance(model, Coded) and isinstance(model.model, Blend) and len(model.model.members) == 5
    codes = ensemble.one_hot_codes(X[seen], search.categorical_groups)
    for member, (_, test) in zip(model.model.members, search.folds, strict=True):
        assert member.categorical == (1,)  # the code column is a CatBoost categorical feature
        assert member.n_iter_ < member.iterations  # early-stopped on the fold's held-out rows
        # ... which only said when to stop: no rollback to their best iteration (it would pick the model on the
        # rows that score it out of fold, and the ensemble would trust that score too much)
        assert member.n_iter_ == member.model_.get_best_iteration() + member.od_wait + 1
        assert np.allclose(member.predict_proba(codes[test]), trial.oof[test])  # fold i's model made fold i's OOF
    assert float((model.predict(X[held_out]) == y[held_out]).mean()) > 0.9
    assert required_packages(Blend([model], [1.0], classify=True)) == ["catboost"]
    assert count_parameters(model) == sum(m.n_iter_ * 64 for m in model.model.members)  # depth 6: 64 leaves a tree
    assert "catboost" in environment("sklearn", ["sklearn"], extra=required_packages(model))


def test_a_catboost_fit_stops_at_its_deadline_and_carries_a_cancel(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(20_000, 20)).astype(np.float32)
    y = X[:, 0] + rng.normal(size=20_000)
    model = CatBoost(iterations=100_000, depth=8)
    started = time.perf_counter()
    grown = fit_stoppable(model, X, y, started + 1.0)
    assert grown.stopped_by_deadline and 0 < grown.units < 100_000 and model.n_iter_ == grown.units
    assert time.perf_counter() - started < 5.0
    monkeypatch.setattr(chunked, "CHUNK_SECONDS", 0.0)  # report after every iteration
    steps: list[str] = []

    def tick(step: str) -> None:
        steps.append(step)
        if len(steps) == 3:
            raise Cancelled

    with pytest.raises(Cancelled):
        fit_stoppable(CatBoost(iterations=100_000), X, y, time.perf_counter() + 60, tick)
    assert len(steps) == 3 and steps[0].startswith("iteration ") and steps[0].endswith("of 100000")


def test_a_signal_during_a_catboost_fit_stays_a_keyboard_interrupt(monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker turns SIGTERM (a cancel it did not reach a step for, a server shutting down) and SIGINT into
    KeyboardInterrupt. Raised while CatBoost runs our callback, CatBoost would turn it into a CatBoostError, which
    the search takes for one candidate's failure and goes on: the interrupt must come out as itself."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(20_000, 20)).astype(np.float32)
    y = X[:, 0] + rng.normal(size=20_000)
    previous = signal.signal(signal.SIGALRM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    signal.setitimer(signal.ITIMER_REAL, 1.5)  # a real signal, well into the training loop
    started = time.perf_counter()
    try:
        with pytest.raises(KeyboardInterrupt):
            fit_stoppable(CatBoost(iterations=100_000, depth=8), X, y, started + 60)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert time.perf_counter() - started < 10.0

    class Clock:  # the handler's exception raised inside the callback, where the signal may land
        calls = 0

        @classmethod
        def perf_counter(cls) -> float:
            cls.calls += 1
            if cls.calls == 20:
                raise KeyboardInterrupt
            return time.perf_counter()

    monkeypatch.setattr(chunked, "time", Clock)
    with pytest.raises(KeyboardInterrupt):
        fit_stoppable(CatBoost(iterations=100_000), X, y, started + 60)


def test_a_catboost_model_predicts_the_same_from_the_package_files_alone(tmp_path: Path) -> None:
    """CatBoost on category codes, and the class-prior decision (`Prior`) around CatBoost and a forest, load and
    predict where only the package's files are: none of them pickles a reference to ml_expert (a Prior once did)."""
    from sklearn.ensemble import RandomForestClassifier

    X, y = _coded_table()
    groups = [list(range(1, 7))]
    codes = ensemble.one_hot_codes(X, groups)
    models = [
        Coded(CatBoost(classify=True, categorical=(1,), iterations=200).fit(codes, y), groups),
        Coded(ensemble.Prior(CatBoost(classify=True, categorical=(1,), iterations=200).fit(codes, y), y), groups),
        ensemble.Prior(RandomForestClassifier(n_estimators=20, random_state=0).fit(X, y), y),
    ]
    alone = probabilities_from_package_files(tmp_path, models, X)
    assert np.allclose(alone, np.stack([m.predict_proba(X) for m in models]))


@pytest.mark.parametrize("family", ["catboost", "rf", "et"])
def test_for_balanced_accuracy_catboost_and_forests_learn_the_rows_as_they_are_and_decide_at_the_class_priors(
    family: str,
) -> None:
    """A search fold fit for balanced accuracy: CatBoost and the forests learn without class weights and divide their
    probabilities by the training rows' class shares (`Prior`). Against class weights, that beat CatBoost on 8 of 8
    bench splits out of fold and the forests on 16 of 16 (their one-row leaves vote for the majority, weighted or
    not). Here: a noisy table with 1 positive row in 9; the fold's held-out 30 %."""
    from sklearn.base import clone
    from sklearn.datasets import make_classification
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.model_selection import train_test_split

    from ml_expert.tools.core.portable.ensemble import Prior
    from ml_expert.tools.training.cluster import FoldTask, Problem, fit_fold

    X, y = make_classification(
        n_samples=1500, n_features=10, n_informative=4, weights=[0.9], flip_y=0.03, class_sep=0.8, random_state=1
    )
    X = X.astype(np.float32)
    train, test = train_test_split(np.arange(len(y)), test_size=0.3, stratify=y, random_state=0)
    cfg = config(family, **(CATBOOST_PORTFOLIO[0] if family == "catboost" else {}))
    problem = Problem("binary", "balanced_accuracy", 0, 2)
    fit = fit_fold(X, y, problem, FoldTask(cfg, 0, train, test, 60.0, keep_model=True))
    model = fit.model
    assert isinstance(model, Prior)
    inner = model.model
    if family == "catboost":
        assert "auto_class_weights" not in inner.model_.get_params()
    else:
        assert inner.class_weight is None
    prior = y[train].mean()
    assert np.allclose(model.priors, [1 - prior, prior])
    p, q = model.model.predict_proba(X[test]), model.predict_proba(X[test])
    assert np.allclose(q.sum(axis=1), 1.0)
    assert np.allclose(q[:, 1] * p[:, 0] * prior, p[:, 1] * q[:, 0] * (1 - prior))  # the same model, odds / prior
    assert np.array_equal(fit.output, q) and np.isclose(
        fit.score, balanced_accuracy_score(y[test], model.predict(X[test]))
    )

    if family == "catboost":  # the class weights of before, for as many iterations
        from catboost import CatBoostClassifier

        reference = CatBoostClassifier(
            iterations=int(inner.n_iter_), learning_rate=0.08, depth=6, max_ctr_complexity=1,
            auto_class_weights="Balanced", random_seed=0, verbose=0, allow_writing_files=False,
        ).fit(X[train], y[train])  # fmt: skip
    else:
        reference = clone(inner).set_params(class_weight="balanced").fit(X[train], y[train])
    before = balanced_accuracy_score(y[test], reference.predict(X[test]))
    assert fit.score > 0.8 and fit.score > before + 0.01, (fit.score, before)
