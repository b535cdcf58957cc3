"""Per-family views of the prepared row in the auto search: tree families see each one-hot group as one column of
category codes (boosting splits them as native categoricals), blends keep regression output near the training
target's range, and the search stops when its local search has converged instead of spending the whole budget."""

from __future__ import annotations

import numpy as np
import pandas as pd
from conftest import frame_run
from sklearn.datasets import load_diabetes
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LinearRegression

from ml_expert.tools.artifacts import load_model, load_split, model_dir
from ml_expert.tools.core.portable.ensemble import Blend, Coded, one_hot_codes, target_bounds
from ml_expert.tools.packaging.package import package
from ml_expert.tools.prediction.predict import predict
from ml_expert.tools.training.auto import run_search
from ml_expert.tools.training.train import train
from ml_expert.tools.workspace import Workspace


def test_one_hot_groups_become_category_codes_and_unseen_ones_minus_one() -> None:
    X = np.array(
        [
            [0.5, 1, 0, 0, 0, 1],
            [1.5, 0, 0, 1, 1, 0],
            [2.5, 0, 0, 0, 0, 1],  # no category of the first group set: one unseen in training
        ],
        dtype=np.float32,
    )
    codes = one_hot_codes(X, [[1, 2, 3], [4, 5]])
    assert codes.tolist() == [[0.5, 0, 1], [1.5, 2, 0], [2.5, -1, 1]]
    model = HistGradientBoostingClassifier(categorical_features=[1, 2], max_iter=5).fit(
        np.tile(codes, (10, 1)), [0, 1, 0] * 10
    )
    coded = Coded(model, [[1, 2, 3], [4, 5]])
    assert np.array_equal(coded.predict_proba(X), model.predict_proba(codes))
    assert list(coded.classes_) == [0, 1]


def _churn(n: int, seed: int) -> pd.DataFrame:
    """A 14-category plan whose effect on churn follows no order and flips with tenure (no linear model fits
    it), a second category, numbers with gaps."""
    rng = np.random.default_rng(seed)
    plans = np.array([f"plan_{c}" for c in "abcdefghijklmn"])
    effect = dict(zip(plans, rng.permutation(np.linspace(-2, 2, len(plans))), strict=True))
    plan = rng.choice(plans, n)
    region = rng.choice(["north", "south", "east"], n)
    tenure = rng.integers(1, 72, n).astype(float)
    flip = np.where(tenure < 36, 1.0, -1.0)
    score = flip * np.vectorize(effect.get)(plan) + (region == "south") + rng.normal(0, 0.5, n)
    frame = pd.DataFrame({"plan": plan, "region": region, "tenure": tenure, "churn": np.where(score > 0, "yes", "no")})
    frame.loc[rng.choice(n, n // 20, replace=False), "tenure"] = np.nan
    frame.loc[rng.choice(n, n // 20, replace=False), "region"] = None
    return frame


def _members(model: object) -> list[object]:
    return list(getattr(model, "members", [model]))


def test_boosting_splits_categoricals_natively_and_the_package_applies_it_from_raw_rows(jobs_ws: Workspace) -> None:
    run = frame_run(jobs_ws, _churn(1500, 0), "churn")
    result = train(jobs_ws, run, "auto", time_budget_s=20, wait_seconds=300)
    assert result.status == "succeeded", result.error
    model = load_model(jobs_ws, model_dir(jobs_ws, run, result.result["model_id"]) / "model.joblib", "sklearn")
    coded = [m for m in _members(model) if isinstance(m, Coded)]
    assert coded, f"no tree member on category codes in {model!r}"
    boosting = [m.model for m in coded if hasattr(m.model, "is_categorical_")]
    assert all(int(m.is_categorical_.sum()) == 2 for m in boosting)  # plan and region, each one column
    X_test, y_test = load_split(jobs_ws, run, "test")
    accuracy = float((model.predict(X_test) == y_test).mean())
    assert accuracy > 0.85, accuracy  # the plan's unordered, tenure-flipped effect is learned
    pkg = package(jobs_ws, run, wait_seconds=300)
    assert pkg.status == "succeeded" and pkg.result["verified"], pkg.error
    rows = _churn(40, 1).drop(columns="churn").to_dict("records")
    rows[0]["plan"] = "plan_unseen"  # a category the training rows never had: predicted, with a warning
    out = predict(jobs_ws, run_id=run, records=rows)
    assert out.rows_scored == 40 and not out.refused
    assert out.drift is not None and any("plan_unseen" in w for w in out.drift.warnings), out.drift


def test_a_regression_blend_stays_near_the_training_target_range() -> None:
    rng = np.random.default_rng(0)
    X = rng.uniform(0, 1, (200, 1))
    y = 10 * X[:, 0]
    members = [LinearRegression().fit(X, y), LinearRegression().fit(X, y)]
    bounds = target_bounds(y)
    blend = Blend(members, [1, 1], classify=False, bounds=bounds)
    far = np.array([[0.5], [100.0], [-100.0]])
    out = blend.predict(far)
    assert np.isclose(out[0], 5.0) and out[1] == bounds[1] and out[2] == bounds[0]  # inside: untouched
    assert np.allclose(bounds, (y.min() - 0.25 * np.ptp(y), y.max() + 0.25 * np.ptp(y)))


def test_a_small_table_converges_before_the_budget_is_spent() -> None:
    X, y = load_diabetes(return_X_y=True)
    outcome = run_search(X.astype(np.float32), y, "regression", budget_s=60)
    summary = outcome.summary
    assert any(note.startswith("converged") for note in summary.notes), summary.notes
    assert summary.complete >= 5 and summary.search_seconds < summary.budget_seconds
