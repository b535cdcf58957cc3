"""Excel workbooks (.xlsx) as users bring them: typed cells (integers, decimals with gaps, text categories, booleans,
dates) on the first sheet of several; training reads them, and predict scores a workbook of new rows as it scores
the same rows as CSV."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ml_expert.memory.errors import InvalidInputError
from ml_expert.tools.data.analyze import analyze_data
from ml_expert.tools.data.prepare import prepare_data
from ml_expert.tools.prediction.predict import predict
from ml_expert.tools.training.config import TrainConfig
from ml_expert.tools.training.train import train
from ml_expert.tools.workspace import Workspace


def _orders(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    amount = rng.gamma(2.0, 50.0, n).round(2)
    frame = pd.DataFrame(
        {
            "items": rng.integers(1, 9, n),
            "amount": np.where(rng.random(n) < 0.1, np.nan, amount),
            "region": rng.choice(["north", "south", "east", "west"], n),
            "member": rng.random(n) < 0.4,
            "ordered": pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.integers(0, 365, n), unit="D"),
        }
    )
    score = np.nan_to_num(amount) / 100 + 0.8 * frame["member"] + (frame["region"] == "north") - 1.2
    frame["returned"] = np.where(score + rng.normal(0, 0.3, n) > 0, "yes", "no")
    return frame


def _workbook(path: object, frame: pd.DataFrame) -> None:
    with pd.ExcelWriter(path, engine="openpyxl") as book:
        frame.to_excel(book, sheet_name="orders", index=False)
        pd.DataFrame({"note": ["exported from the shop"]}).to_excel(book, sheet_name="about", index=False)


def test_a_workbook_trains_and_its_new_rows_score_as_their_csv_does(jobs_ws: Workspace) -> None:
    ws = jobs_ws
    _workbook(ws.root / "orders.xlsx", _orders(600, seed=0))
    analysis = analyze_data(ws, "orders.xlsx", target="returned")
    assert analysis.rows == 600 and analysis.task_type == "binary"
    kinds = {p.name: p.kind for p in analysis.column_profiles}
    assert kinds["ordered"] == "datetime" and kinds["region"] == "categorical" and kinds["amount"] == "numeric"
    prepared = prepare_data(ws, run_id=analysis.run_id)
    assert set(prepared.features_in) == {"items", "amount", "region", "member", "ordered"}
    status = train(ws, prepared.run_id, "random_forest", TrainConfig(n_estimators=100), wait_seconds=180)
    assert status.status == "succeeded", status.error

    new = _orders(120, seed=1)
    _workbook(ws.root / "new.xlsx", new.drop(columns="returned"))
    new.drop(columns="returned").to_csv(ws.root / "new.csv", index=False)
    scored = {name: predict(ws, run_id=prepared.run_id, path=name) for name in ("new.xlsx", "new.csv")}
    assert all(r.rows_scored == 120 and r.rows_refused == 0 for r in scored.values())
    rows = {name: pd.read_csv(ws.root / r.output) for name, r in scored.items()}
    assert rows["new.xlsx"]["prediction"].tolist() == rows["new.csv"]["prediction"].tolist()
    assert np.allclose(rows["new.xlsx"].filter(like="proba").to_numpy(), rows["new.csv"].filter(like="proba"))
    assert (rows["new.xlsx"]["prediction"] == new["returned"]).mean() >= 0.8  # it learned from the workbook


def test_a_file_named_xlsx_that_is_not_a_workbook_is_refused_clearly(jobs_ws: Workspace) -> None:
    """In training and, before a job starts, in predict."""
    ws = jobs_ws
    (ws.root / "broken.xlsx").write_bytes(b"name,age\nann,3\n")  # a CSV renamed
    with pytest.raises(InvalidInputError, match=r"not a readable Excel workbook.*export the sheet as CSV"):
        analyze_data(ws, "broken.xlsx", target="age")
    _workbook(ws.root / "orders.xlsx", _orders(200, seed=0))
    run = prepare_data(ws, path="orders.xlsx", target="returned").run_id
    assert train(ws, run, "random_forest", TrainConfig(n_estimators=10), wait_seconds=180).status == "succeeded"
    with pytest.raises(InvalidInputError, match=r"broken.xlsx is not a readable Excel workbook.*renamed CSV"):
        predict(ws, run_id=run, path="broken.xlsx")
    twice = pd.DataFrame([[1, 2, "a"], [3, 4, "b"]], columns=["x", "x ", "y"])  # "x" twice, as a reader trims it
    twice.to_excel(ws.root / "twice.xlsx", index=False)
    with pytest.raises(InvalidInputError, match=r"twice.xlsx has duplicate column names \['x'\]"):
        analyze_data(ws, "twice.xlsx", target="y")
