"""Dates and time as users bring them (outside audits and scans, 2026-12-03/04): time zones in Parquet and as text,
dates written day first, a time series (one row per month) named and split in time order, and date columns of one
format read at once."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from ml_expert.memory.errors import InvalidInputError
from ml_expert.tools.artifacts import load_split
from ml_expert.tools.core.portable.preprocessing import DatetimeExpander, coerce_column
from ml_expert.tools.data.analyze import analyze_data
from ml_expert.tools.prediction.predict import predict
from ml_expert.tools.training.config import TrainConfig
from ml_expert.tools.training.train import train
from ml_expert.tools.workflow import run_workflow
from ml_expert.tools.workspace import Workspace


def test_dates_with_a_time_zone_give_the_same_features_from_parquet_and_from_their_csv_export() -> None:
    """A Parquet column in Europe/Berlin across the spring clock change, and the same instants as text with their
    offsets (+01:00, then +02:00): the package check once failed on such a table (hours 1 apart) and shipped no
    runtime. Every date is now taken in UTC, however it was written."""
    instants = pd.Series(pd.date_range("2024-03-30", periods=40, freq="3h", tz="Europe/Berlin"))
    as_text = instants.map(lambda t: t.isoformat())
    assert {t[-6:] for t in as_text} == {"+01:00", "+02:00"}
    from_parquet, from_csv = coerce_column(instants, "datetime", "ts"), coerce_column(as_text, "datetime", "ts")
    assert from_parquet.tolist() == from_csv.tolist()
    assert from_parquet.iloc[0] == pd.Timestamp("2024-03-29 23:00")  # midnight in Berlin (UTC+1) is 23:00 UTC
    naive = coerce_column(pd.Series(["2024-03-30 00:00", "2024-03-31 06:00"]), "datetime", "ts")
    assert naive.tolist() == [pd.Timestamp("2024-03-30 00:00"), pd.Timestamp("2024-03-31 06:00")]  # unchanged
    expander = DatetimeExpander().fit(from_parquet.to_frame())
    assert np.array_equal(expander.transform(from_parquet.to_frame()), expander.transform(from_csv.to_frame()))


def test_dates_written_day_first_are_read_day_first_in_training_and_in_new_rows(
    padded: tuple[Workspace, str, pd.DataFrame],
) -> None:
    """ "05/03/2021" was read as 3 May and "15/03/2021" as 15 March in one column: every date of March looked spread
    over the year. A column whose first numbers go above 12 (or that writes dates with dots, 01.01.2023) is read
    day first, and new rows of the same column too."""
    from ml_expert.tools.core.portable.preprocessing import DAY_FIRST
    from ml_expert.tools.data.prepare import prepare_data

    ws, _, _ = padded
    rng = np.random.default_rng(7)
    days = rng.integers(1, 29, 400)
    frame = pd.DataFrame({"signup": [f"{d:02d}/03/2021" for d in days], "x": rng.normal(size=400)})
    frame["late"] = np.where(days > 14, "yes", "no")  # the day of the month decides
    frame.to_csv(ws.root / "signups.csv", index=False)
    prepared = prepare_data(ws, path="signups.csv", target="late")
    schema = json.loads((ws.root / prepared.artifacts["schema"]).read_text())
    signup = next(c for c in schema["columns"] if c["name"] == "signup")
    assert signup == {"name": "signup", "kind": "datetime", "format": DAY_FIRST}
    assert train(ws, prepared.run_id, "random_forest", TrainConfig(n_estimators=30), wait_seconds=180).status == (
        "succeeded"
    )
    written = [{"signup": f"{d:02d}/03/2021", "x": 0.0} for d in (5, 10, 20, 25)]
    iso = [{"signup": f"2021-03-{d:02d}", "x": 0.0} for d in (5, 10, 20, 25)]
    by_day_first = predict(ws, run_id=prepared.run_id, records=written)
    by_iso = predict(ws, run_id=prepared.run_id, records=iso)
    labels = [p.prediction for p in by_day_first.predictions]
    assert labels == [p.prediction for p in by_iso.predictions] == ["no", "no", "yes", "yes"]


def _monthly(n: int = 240, seed: int = 0) -> pd.DataFrame:
    """One row per month (ggplot2's economics has this shape): a trending column, a signal column and the target."""
    rng = np.random.default_rng(seed)
    signal = rng.normal(size=n)
    return pd.DataFrame(
        {
            "month": pd.date_range("2000-01-01", periods=n, freq="MS").strftime("%Y-%m-%d"),
            "population": np.linspace(100.0, 160.0, n),  # grows every month
            "signal": signal,
            "y": 3.0 * signal + rng.normal(0, 0.3, n),
        }
    )


def test_a_time_series_is_named_with_how_to_split_it_in_time_order(ws: Workspace) -> None:
    """ggplot2's economics (one row per month) was split at random with no word: its R² 0.996 flattered a forecast
    (the same search split in time order scored -3.5 on the latest rows). analyze_data now names the column and the
    split; business days are a series too; event times, and a panel of cities by month, are not."""
    rng = np.random.default_rng(1)
    tables = {
        "monthly.csv": _monthly(),
        "business_days.csv": pd.DataFrame(
            {"day": pd.bdate_range("2024-01-01", periods=300), "x": rng.normal(size=300), "y": rng.normal(size=300)}
        ),
        "events.csv": pd.DataFrame(
            {
                "at": pd.Timestamp("2024-01-01") + pd.to_timedelta(np.sort(rng.uniform(0, 3e7, 300)), unit="s"),
                "x": rng.normal(size=300),
                "y": rng.normal(size=300),
            }
        ),
        "panel.csv": pd.DataFrame(
            {
                "month": np.tile(pd.date_range("2010-01-01", periods=100, freq="MS"), 3),
                "city": np.repeat(["Austin", "Dallas", "Houston"], 100),
                "y": rng.normal(size=300),
            }
        ),
    }
    found = {}
    for name, frame in tables.items():
        frame.to_csv(ws.root / name, index=False)
        analysis = analyze_data(ws, name, target="y")
        found[name] = [w for w in analysis.warnings if w.code == "time_series"]
        if found[name]:
            assert any("split_strategy='time'" in r for r in analysis.recommendations)
    assert [(w.column, w.severity) for w in found["monthly.csv"]] == [("month", "high")]
    assert "one month apart" in found["monthly.csv"][0].message
    assert "time_column='month'" in found["monthly.csv"][0].message
    assert [w.column for w in found["business_days.csv"]] == ["day"]
    assert found["events.csv"] == [] and found["panel.csv"] == []


def test_run_workflow_with_a_time_column_tests_on_the_latest_rows(
    jobs_ws: Workspace, capsys: pytest.CaptureFixture[str]
) -> None:
    """What the warning asks for, in one call (`ml-expert run --time-column`, `run_workflow(time_column=)`): oldest
    rows train, newest test; the summary's data alerts then no longer quote the warning, and the model still learns
    (the signal column, R² above 0.9)."""
    from ml_expert.server.cli import main

    frame = _monthly()
    frame.to_csv(jobs_ws.root / "monthly.csv", index=False)
    plain = run_workflow(jobs_ws, path="monthly.csv", target="y", architecture="linear", wait_seconds=300)
    assert plain.status == "succeeded", plain.error
    assert any("time series" in alert for alert in plain.result["data_alerts"])
    code = main(["run", "monthly.csv", "-t", "y", "-a", "linear", "--time-column", "month", "-w", str(jobs_ws.root)])
    shown = capsys.readouterr().out
    assert code == 0 and "test r2" in shown and "time series" not in shown, shown
    metrics = jobs_ws.store.get_value("ml-expert/metrics")
    run_id = metrics["run_id"]
    assert metrics["evaluations"][0]["test_metrics"]["r2"] > 0.9, metrics
    prepared = jobs_ws.store.get_value("ml-expert/prepared-data")
    assert prepared["run_id"] == run_id and prepared["options"]["split_strategy"] == "time"
    assert prepared["options"]["time_column"] == "month" and prepared["splits"]["test"] == 36  # 15 % of 240
    grows = prepared["feature_names"].index("population")
    train_rows, test_rows = (load_split(jobs_ws, run_id, split)[0][:, grows] for split in ("train", "test"))
    assert test_rows.min() > train_rows.max()  # the test split is the latest months
    with pytest.raises(InvalidInputError, match="already prepared"):
        run_workflow(jobs_ws, resume=run_id, time_column="month")


def test_a_resumed_workflow_keeps_the_time_column_it_started_with(jobs_ws: Workspace) -> None:
    """A workflow started with time_column that stopped before its split (here: no target yet) and resumed without
    it split at random; the resume now takes the column the run was started with."""
    _monthly().to_csv(jobs_ws.root / "monthly.csv", index=False)
    stopped = run_workflow(jobs_ws, path="monthly.csv", architecture="linear", time_column="month", wait_seconds=300)
    assert stopped.status == "failed" and "Phase 'prepare' failed" in stopped.error, stopped.error
    resumed = run_workflow(jobs_ws, resume=stopped.run_id, target="y", architecture="linear", wait_seconds=300)
    assert resumed.status == "succeeded", resumed.error
    prepared = jobs_ws.store.get_value("ml-expert/prepared-data")
    assert prepared["run_id"] == stopped.run_id and prepared["options"]["time_column"] == "month"
    assert not any("time series" in alert for alert in resumed.result["data_alerts"])
    grows = prepared["feature_names"].index("population")
    train_rows, test_rows = (load_split(jobs_ws, stopped.run_id, split)[0][:, grows] for split in ("train", "test"))
    assert test_rows.min() > train_rows.max()  # the latest months
    # a time_column that is not there failed the first job: a resume without it does not bring it back
    wrong = run_workflow(jobs_ws, path="monthly.csv", target="y", architecture="linear", time_column="mnth",
                         wait_seconds=300)  # fmt: skip
    assert wrong.status == "failed" and "time_column 'mnth'" in wrong.error, wrong.error
    again = run_workflow(jobs_ws, resume=wrong.run_id, architecture="linear", wait_seconds=300)
    assert again.status == "succeeded", again.error
    assert jobs_ws.store.get_value("ml-expert/prepared-data")["options"]["split_strategy"] != "time"


def test_a_time_split_reads_day_first_dates_day_first(ws: Workspace) -> None:
    """Dates written day first (03/11/2024 is 3 November) were ordered month first by the time split, so its "latest"
    rows were not the latest; they are read as the features read them now, and the series is still named."""
    from ml_expert.tools.data.prepare import prepare_data

    frame = _monthly().sample(frac=1, random_state=0)  # rows out of order
    frame["day"] = frame.index.map(lambda i: (pd.Timestamp("2000-01-01") + pd.Timedelta(days=i)).strftime("%d/%m/%Y"))
    frame = frame.drop(columns="month")  # 240 days: 01/02/2000 read month first was 2 January
    frame.to_csv(ws.root / "day_first.csv", index=False)
    analysis = analyze_data(ws, "day_first.csv", target="y")
    assert [w.column for w in analysis.warnings if w.code == "time_series"] == ["day"]
    prepared = prepare_data(ws, run_id=analysis.run_id, split_strategy="time", time_column="day")
    grows = prepared.feature_names.index("population")  # grows day by day
    train_rows, test_rows = (load_split(ws, prepared.run_id, split)[0][:, grows] for split in ("train", "test"))
    assert test_rows.min() > train_rows.max()


def test_dates_of_one_format_are_read_at_once_and_mixed_formats_value_by_value() -> None:
    """Month-first or day-first dates were parsed value by value (a million took 28 s in prepare and in every
    prediction of that size); they are read in their first value's format at once now, and a column that mixes
    formats, or holds text that is no date, still falls back to reading each value as before."""
    from ml_expert.tools.core.portable.preprocessing import DAY_FIRST, read_dates

    one_format = pd.Series(["03/04/2021", "12/31/2020", None])
    assert list(read_dates(one_format)) == [pd.Timestamp("2021-03-04"), pd.Timestamp("2020-12-31"), pd.NaT]
    assert read_dates(pd.Series(["03/04/2021", "31/12/2020"]), DAY_FIRST).tolist() == [
        pd.Timestamp("2021-04-03"),
        pd.Timestamp("2020-12-31"),
    ]
    mixed = pd.Series(["2021-01-05", "05/01/2021", "Jan 3 2021", "no date", "2021-03-01T12:00:00+02:00"])
    assert read_dates(mixed).tolist() == [
        pd.Timestamp("2021-01-05"),
        pd.Timestamp("2021-05-01"),
        pd.Timestamp("2021-01-03"),
        pd.NaT,
        pd.Timestamp("2021-03-01 10:00"),
    ]
    assert read_dates(mixed, mixed_rows=3).isna().sum() > 1  # above mixed_rows: the first pass only


def test_one_split_on_a_date_separates_before_and_after_it(ws: Workspace) -> None:
    """A date column also becomes the days since 1970, not only its calendar parts: a change on 15 June 2021
    (a new price list, a policy) is one split on time itself, where year, month and day need three."""
    from sklearn.tree import DecisionTreeClassifier

    from ml_expert.tools.data.prepare import prepare_data

    rng = np.random.default_rng(5)
    when = pd.Timestamp("2020-01-01") + pd.to_timedelta(rng.integers(0, 3 * 365, 800), unit="D")
    frame = pd.DataFrame({"ordered": when.strftime("%Y-%m-%d"), "amount": rng.normal(100, 20, 800).round(2)})
    frame["new_terms"] = np.where(when >= pd.Timestamp("2021-06-15"), "yes", "no")
    frame.to_csv(ws.root / "orders.csv", index=False)
    prepared = prepare_data(ws, path="orders.csv", target="new_terms")
    names = prepared.feature_names
    assert {"ordered_days", "ordered_year", "ordered_month", "ordered_day"} <= set(names)
    X_train, y_train = load_split(ws, prepared.run_id, "train")
    X_test, y_test = load_split(ws, prepared.run_id, "test")
    stump = DecisionTreeClassifier(max_depth=1, random_state=0).fit(X_train, y_train)
    assert stump.score(X_test, y_test) >= 0.99
    assert names[int(np.argmax(stump.feature_importances_))] == "ordered_days"
    calendar = [i for i, n in enumerate(names) if n != "ordered_days"]  # the parts alone: one split is not enough
    assert (
        DecisionTreeClassifier(max_depth=1).fit(X_train[:, calendar], y_train).score(X_test[:, calendar], y_test) < 0.9
    )
