"""The other tools accuracy_bench.py compares ml-expert with, on the same split: scikit-learn's
HistGradientBoosting and RandomForest defaults, FLAML (same budget) and AutoGluon (its own virtual
environment, since it pins an older pandas)."""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import (
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.impute import SimpleImputer
from sklearn.metrics import balanced_accuracy_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OrdinalEncoder

AUTOGLUON_PRESET = "best_quality_v150"

AUTOGLUON = """
import json, sys, tempfile
import pandas as pd
from autogluon.tabular import TabularPredictor
train, test, target, problem, metric, budget, preset, out = sys.argv[1:9]
with tempfile.TemporaryDirectory() as tmp:
    predictor = TabularPredictor(label=target, problem_type=problem, eval_metric=metric, path=tmp, verbosity=0)
    predictor.fit(pd.read_parquet(train), presets=preset, time_limit=float(budget), num_cpus=2, num_gpus=0)
    predictions = predictor.predict(pd.read_parquet(test))
    board = predictor.leaderboard(silent=True).head(12)
    board = [[r.model, round(float(r.score_val), 5), round(float(r.fit_time), 2)] for r in board.itertuples()]
    json.dump({"predictions": predictions.tolist(), "best_model": predictor.model_best, "leaderboard": board},
              open(out, "w"))
"""


def features(X: pd.DataFrame) -> tuple[list[str], list[str]]:
    cats = [c for c in X.columns if not pd.api.types.is_numeric_dtype(X[c]) or pd.api.types.is_bool_dtype(X[c])]
    return cats, [c for c in X.columns if c not in cats]


def sklearn_baseline(kind: str, task: str, X_train: pd.DataFrame, y_train: pd.Series) -> Pipeline:
    cats, nums = features(X_train)
    encoder = OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1, encoded_missing_value=-1)
    numbers: Any = "passthrough" if kind == "hgb" else SimpleImputer(strategy="median")
    pre = ColumnTransformer([("cat", encoder, cats), ("num", numbers, nums)], verbose_feature_names_out=False)
    if kind == "hgb":
        # HGB refuses categorical features with more than max_bins (255) categories: those stay ordinal numbers.
        categorical = [i for i, c in enumerate(cats) if X_train[c].nunique() <= 255] or None
        cls = HistGradientBoostingClassifier if task == "classification" else HistGradientBoostingRegressor
        # seeded: above 10,000 rows its early stopping draws a random validation split, which moved Fertility's
        # "best" between runs (.6327 / .6333) with nothing else changed
        model = cls(categorical_features=categorical, random_state=0)
    else:
        cls = RandomForestClassifier if task == "classification" else RandomForestRegressor
        model = cls(random_state=0)
    return Pipeline([("pre", pre), ("model", model)]).fit(X_train, y_train)


def flaml_balanced_accuracy(
    X_val: Any, y_val: Any, estimator: Any, labels: Any, X_train: Any, y_train: Any, *args: Any, **kwargs: Any
) -> tuple[float, dict[str, float]]:
    """FLAML custom metric (minimized): 1 - balanced accuracy on the validation rows."""
    value = balanced_accuracy_score(y_val, estimator.predict(X_val))
    return 1.0 - value, {"balanced_accuracy": value}


def flaml_metric(metric: str) -> Any:
    return flaml_balanced_accuracy if metric == "balanced_accuracy" else metric


def run_flaml(task: str, metric: str, budget: float, X_train: pd.DataFrame, y_train: pd.Series) -> Any:
    from flaml import AutoML

    automl = AutoML()
    automl.fit(X_train, y_train, task=task, time_budget=budget, metric=flaml_metric(metric), seed=0, verbose=0)
    return automl


def run_autogluon(
    python: str, task: str, metric: str, budget: float, train: pd.DataFrame, target: str, X_test: pd.DataFrame
) -> tuple[list[Any], str, list[Any]]:
    """AutoGluon's AUTOGLUON_PRESET with time_limit=budget in its own virtual environment (`python`), which
    pins an older pandas: the rows go over as Parquet, the predictions come back as JSON, with its best model and its
    leaderboard (model, validation score, fit seconds: its top 12)."""
    problem = "regression" if task == "regression" else "binary" if train[target].nunique() == 2 else "multiclass"
    ag_metric = {"rmse": "root_mean_squared_error"}.get(metric, metric)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        train.to_parquet(folder / "train.parquet", index=False)
        X_test.to_parquet(folder / "test.parquet", index=False)
        cmd = [python, "-c", AUTOGLUON, str(folder / "train.parquet"), str(folder / "test.parquet"), target, problem]
        cmd += [ag_metric, str(budget), AUTOGLUON_PRESET, str(folder / "out.json")]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=budget * 10 + 300)
        if done.returncode != 0:
            raise RuntimeError(f"AutoGluon exited {done.returncode}: {done.stderr[-2000:]}")
        out = json.loads((folder / "out.json").read_text())
    return out["predictions"], out["best_model"], out.get("leaderboard", [])


def autogluon_version(python: str) -> str | None:
    if not python:
        return None
    code = "from importlib.metadata import version; print(version('autogluon.tabular'), version('pandas'))"
    done = subprocess.run([python, "-c", code], capture_output=True, text=True)
    return f"autogluon.tabular {done.stdout.split()[0]} (pandas {done.stdout.split()[1]})" if done.stdout else None
