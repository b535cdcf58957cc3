"""Columns that repeat another column value for value (a wide table's fingerprint bits, an exported column twice):
named by analyze_data, dropped by prepare_data, and not asked of new rows."""

from __future__ import annotations

import numpy as np
import pandas as pd
from conftest import sklearn_frame

from ml_expert.tools.data.analyze import analyze_data
from ml_expert.tools.data.prepare import prepare_data
from ml_expert.tools.data.profiling import copied_columns
from ml_expert.tools.prediction.predict import predict
from ml_expert.tools.training.config import TrainConfig
from ml_expert.tools.training.train import train
from ml_expert.tools.workspace import Workspace


def _cancer_with_copies() -> pd.DataFrame:
    frame = sklearn_frame("breast_cancer")
    frame["radius_again"] = frame["mean radius"]
    frame["grade"] = np.where(frame["worst area"] > 800, "high", "low")
    frame["grade_copy"] = frame["grade"]
    frame["nearly"] = frame["mean texture"]
    frame.loc[frame.index[-1], "nearly"] += 1.0  # differs in one row: not a copy
    return frame


def test_copies_of_a_column_are_named_dropped_and_not_needed_to_predict(jobs_ws: Workspace) -> None:
    ws = jobs_ws
    frame = _cancer_with_copies()
    frame.to_csv(ws.root / "cancer.csv", index=False)
    analysis = analyze_data(ws, "cancer.csv", target="target")
    found = [w for w in analysis.warnings if w.code == "duplicate_columns"]
    assert len(found) == 1 and found[0].severity == "info", analysis.warnings
    assert "'radius_again' = 'mean radius'" in found[0].message and "'grade_copy' = 'grade'" in found[0].message
    assert "nearly" not in found[0].message

    prepared = prepare_data(ws, run_id=analysis.run_id)
    assert prepared.dropped_columns == {"radius_again": "duplicate of mean radius", "grade_copy": "duplicate of grade"}
    assert {"mean radius", "grade", "nearly"} <= set(prepared.features_in)
    step = next(s for s in prepared.cleaning_log if s.columns == ["radius_again", "grade_copy"])
    assert step.action == "drop_columns" and "2 columns repeat" in step.reason

    status = train(ws, prepared.run_id, "random_forest", TrainConfig(n_estimators=50), wait_seconds=180)
    assert status.status == "succeeded", status.error
    new = _cancer_with_copies().sample(60, random_state=1)
    new.drop(columns=["target", "radius_again", "grade_copy"]).to_csv(ws.root / "new.csv", index=False)
    scored = predict(ws, run_id=prepared.run_id, path="new.csv")
    assert scored.rows_scored == 60
    labels = pd.read_csv(ws.root / scored.output)["prediction"].to_numpy()
    assert (labels == new["target"].to_numpy()).mean() >= 0.9  # it learned without the copies


def test_only_columns_equal_on_every_row_and_of_one_type_are_copies() -> None:
    """Sparse columns that agree on every sampled row (30,000 rows: every third is sampled) but not on the others,
    missing cells in other rows, equal numbers of another type: not copies; floats, dates, text and categories that
    repeat a column are."""
    n, rng = 30_000, np.random.default_rng(0)
    a = rng.random(n)
    one_at = {row: np.where(np.arange(n) == row, 1.0, 0.0) for row in (1, 2)}  # rows the sample skips
    gaps = {row: np.where(np.arange(n) % 7 == row, np.nan, a) for row in (0, 1)}
    frame = pd.DataFrame(
        {
            "a": a, "a_copy": a.copy(), "cents": np.round(a * 100).astype(int), "cents_float": np.round(a * 100),
            "sparse": one_at[1], "other_sparse": one_at[2], "sparse_copy": one_at[1].copy(),
            "gaps": gaps[0], "other_gaps": gaps[1], "gaps_copy": gaps[0].copy(),
            "when": pd.date_range("2020", periods=n, freq="h"), "when_copy": pd.date_range("2020", periods=n, freq="h"),
            "text": rng.choice(["x", "y"], n), "kind": pd.Categorical(rng.choice(["x", "y"], n)),
        }
    )  # fmt: skip
    frame["text_copy"], frame["kind_copy"] = frame["text"].copy(), frame["kind"].copy()
    assert copied_columns(frame, list(frame.columns)) == {
        "a_copy": "a", "sparse_copy": "sparse", "gaps_copy": "gaps", "when_copy": "when", "text_copy": "text",
        "kind_copy": "kind",
    }  # fmt: skip


def test_a_copy_the_caller_keeps_stays_and_the_option_off_keeps_all(ws: Workspace) -> None:
    _cancer_with_copies().to_csv(ws.root / "cancer.csv", index=False)
    kept = prepare_data(ws, path="cancer.csv", target="target", keep_columns=["grade_copy"])
    assert "grade_copy" in kept.features_in and kept.dropped_columns == {"radius_again": "duplicate of mean radius"}
    every = prepare_data(ws, path="cancer.csv", target="target", drop_identifiers=False)
    assert {"radius_again", "grade_copy"} <= set(every.features_in) and every.dropped_columns == {}
