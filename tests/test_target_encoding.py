"""Categoricals with more levels than boosting's native splits take reach boosting target-encoded (forests keep their
codes): each model's encoder is fitted on its own training rows only, the training rows' encodings by cross fitting,
and the package and `predict` apply it from the raw row."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import frame_run, probabilities_from_package_files

from ml_expert.tools.artifacts import load_model, load_split, model_dir
from ml_expert.tools.core.portable.ensemble import Coded, TargetEncoded, target_encoded
from ml_expert.tools.packaging.package import package
from ml_expert.tools.prediction.explain import explain
from ml_expert.tools.prediction.predict import predict
from ml_expert.tools.training.cluster import FoldTask, fit_fold
from ml_expert.tools.training.portfolio import HGB_PORTFOLIO, config
from ml_expert.tools.training.search import Search
from ml_expert.tools.training.target_encoding import fit_target_encoding
from ml_expert.tools.training.train import train
from ml_expert.tools.workspace import Workspace


def _dealers(n: int, seed: int, levels: int = 400) -> pd.DataFrame:
    """A price set mostly by which of 400 dealers sold the car (an effect in no alphabetical order), a 3-level kind
    and a number; 5 % of the dealers missing. Fitted on the dealer's alphabetical codes, boosting's cross-validated
    RMSE is ~1.58 (the target's std: 2.2); on its target encoding ~0.79."""
    rng = np.random.default_rng(seed)
    names = np.array([f"dealer_{i:03d}" for i in range(levels)])
    effect = dict(zip(names, np.random.default_rng(7).normal(0, 1.0, levels), strict=True))
    dealer = rng.choice(names, n)
    x = rng.normal(size=n)
    kind = rng.choice(["new", "used", "demo"], n)
    price = 2 * np.vectorize(effect.get)(dealer) + x + (kind == "new") + rng.normal(0, 0.3, n)
    frame = pd.DataFrame({"dealer": dealer, "x": x, "kind": kind, "price": price})
    frame.loc[rng.choice(n, n // 20, replace=False), "dealer"] = None
    return frame


@pytest.mark.slow  # a whole search, package and explain (~10 s); the encoder's parts are fast tests below
def test_a_many_level_categorical_is_learned_through_its_target_encoding_and_packaged(jobs_ws: Workspace) -> None:
    run = frame_run(jobs_ws, _dealers(3000, 0), "price")
    result = train(jobs_ws, run, "auto", time_budget_s=6, wait_seconds=300)
    assert result.status == "succeeded", result.error
    search = result.result["search"]
    model = load_model(jobs_ws, model_dir(jobs_ws, run, result.result["model_id"]) / "model.joblib", "sklearn")
    coded = [m for m in getattr(model, "members", [model]) if isinstance(m, Coded)]
    trees = [t for m in coded for t in getattr(m.model, "members", [m.model])]  # bagged fold models or one refit
    assert any(isinstance(t, TargetEncoded) for t in trees), model  # boosting: on the dealer's target encoding
    X_test, y_test = load_split(jobs_ws, run, "test")
    rmse = float(np.sqrt(np.mean((model.predict(X_test) - y_test) ** 2)))
    assert rmse < 1.1, (rmse, search["chosen"], search["notes"])  # alphabetical codes: ~1.5; the target's std 2.2
    pkg = package(jobs_ws, run, wait_seconds=300)
    assert pkg.status == "succeeded" and pkg.result["verified"], pkg.error
    fresh = _dealers(60, 1)
    rows = fresh.drop(columns="price").to_dict("records")
    rows[0]["dealer"] = "dealer_unseen"  # a level no training row had: the encoder's overall mean
    rows[1]["dealer"] = None
    out = predict(jobs_ws, run_id=run, records=rows)
    assert out.rows_scored == 60 and not out.refused
    predicted = pd.read_csv(jobs_ws.root / out.output)["prediction"].to_numpy()
    assert np.isfinite(predicted[:2]).all()
    known = fresh["dealer"].notna().to_numpy() & (np.arange(60) >= 2)  # from the raw rows, the dealers' effect applied
    assert np.sqrt(np.mean((predicted[known] - fresh["price"].to_numpy()[known]) ** 2)) < 1.1
    why = explain(jobs_ws, run_id=run, wait_seconds=300)
    assert why.importance[0].column == "dealer", why.importance  # what sets the price, through its encoding


def _coded_multiclass(n: int = 900) -> tuple[np.ndarray, np.ndarray]:
    """Code columns: a number, then a 300-level categorical's codes (-1: missing); 3 classes set by the level."""
    rng = np.random.default_rng(3)
    level = rng.integers(0, 300, n).astype(np.float32)
    level[:30] = -1
    x = rng.normal(size=n).astype(np.float32)
    y = ((level.astype(int) % 3 + (x > 1.2)) % 3).astype(int)
    return np.column_stack([x, level]), y


def test_each_boosting_fold_model_encodes_with_an_encoder_fitted_on_its_own_training_rows() -> None:
    codes, y = _coded_multiclass()
    search = Search(codes, y, "multiclass", 60, ordinal_columns=[(1, 0.0, 1.0, 300)])
    assert search.problem.encoded == (1,) and search.problem.categorical == ()
    train_rows, test_rows = search.folds[0]
    task = FoldTask(config("hgb", **HGB_PORTFOLIO[0]), 0, train_rows, test_rows, 60.0, keep_model=True)
    fit = fit_fold(search.X, y, search.problem, task, codes=search.codes)
    model = fit.model
    assert isinstance(model, TargetEncoded) and model.columns == [1]
    assert set(model.encoder.categories_[0]) == set(codes[train_rows, 1])  # its fold's levels only
    # three classes: the column's first encoding in its place, the two others appended
    assert model.model.n_features_in_ == 4
    encoded = target_encoded(codes[test_rows], model.encoder, [1])
    assert np.allclose(model.predict_proba(codes[test_rows]), model.model.predict_proba(encoded))
    assert np.allclose(fit.output, model.predict_proba(codes[test_rows]))
    assert fit.score > 0.6, fit.score  # the level decides the class (chance: 1/3)
    forest = fit_fold(search.X, y, search.problem, replace(task, config=config("et")), codes=search.codes).model
    assert not isinstance(forest, TargetEncoded) and forest.n_features_in_ == 2  # forests split the codes themselves


def test_nothing_is_target_encoded_where_the_folds_hold_whole_groups() -> None:
    """The encoder's own cross fitting ignores groups: a training row's encoding would hold its group-mates' targets,
    and every held-out group would be a level it never saw. Boosting keeps the codes there."""
    codes, y = _coded_multiclass()
    groups = np.arange(len(y)) % 60
    search = Search(codes, y, "multiclass", 60, split_strategy="group", groups=groups,
                    ordinal_columns=[(1, 0.0, 1.0, 300)])  # fmt: skip
    assert search.problem.encoded == ()
    train_rows, test_rows = search.folds[0]
    assert not set(groups[train_rows]) & set(groups[test_rows])
    task = FoldTask(config("hgb", **HGB_PORTFOLIO[0]), 0, train_rows, test_rows, 60.0, keep_model=True)
    model = fit_fold(search.X, y, search.problem, task, codes=search.codes).model
    assert not isinstance(model, TargetEncoded) and model.n_features_in_ == 2


def test_a_training_row_never_sees_its_own_target_in_its_encoding() -> None:
    """Cross fitting: a level with one training row gets the other rows' mean, not its own extreme target, so the
    trees cannot learn that row's noise; new rows get the encoding of all training rows."""
    rng = np.random.default_rng(0)
    codes = np.column_stack([rng.normal(size=400), rng.integers(0, 20, 400)]).astype(np.float32)
    y = rng.normal(0, 1, 400)
    codes[0, 1], y[0] = 99, 100.0  # the only row of level 99, with an extreme target
    encoder, rows = fit_target_encoding(codes, y, [1], 0, seed=0)
    assert abs(rows[0, 1]) < 1.0  # cross-fitted: the other folds' mean
    assert target_encoded(codes[:1], encoder, [1])[0, 1] > 1.0  # all training rows: pulled towards its 100
    assert np.array_equal(rows[:, 0], codes[:, 0])  # the other columns as they were


def test_a_target_encoded_model_predicts_the_same_from_the_package_files_alone(tmp_path: Path) -> None:
    from sklearn.ensemble import HistGradientBoostingClassifier

    codes, y = _coded_multiclass()
    encoder, rows = fit_target_encoding(codes, y, [1], 3, seed=0)
    model = TargetEncoded(HistGradientBoostingClassifier(max_iter=30, random_state=0).fit(rows, y), encoder, [1])
    alone = probabilities_from_package_files(tmp_path, [model], codes)
    assert np.allclose(alone[0], model.predict_proba(codes))
