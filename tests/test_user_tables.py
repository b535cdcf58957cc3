"""Tables as users bring them (an outside audit, 2026-12-03): a header with spaces around a name, dates with a time
zone in Parquet and as text, an integer count as the target, and a package that no format could be verified for."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest

from ml_expert.memory.errors import InvalidInputError
from ml_expert.tools.core.portable.preprocessing import DatetimeExpander, coerce_column
from ml_expert.tools.data.profiling import guess_task
from ml_expert.tools.prediction.predict import predict
from ml_expert.tools.training.config import TrainConfig
from ml_expert.tools.training.train import train
from ml_expert.tools.workflow import package_line
from ml_expert.tools.workspace import Workspace


@pytest.fixture(scope="module")
def padded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Workspace, str, pd.DataFrame]]:
    """A random forest trained on a CSV whose header names a column " padded " (spaces around it)."""
    from ml_expert.tools.data.prepare import prepare_data
    from ml_expert.tools.jobs.manager import JobManager

    ws = Workspace(tmp_path_factory.mktemp("padded") / "ws")
    ws.jobs = JobManager(ws).start()
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({" padded ": rng.normal(size=400), "other": rng.normal(size=400)})
    frame["y"] = np.where(frame[" padded "] + 0.2 * frame["other"] > 0, "up", "down")
    frame.to_csv(ws.root / "train.csv", index=False)
    try:
        run = prepare_data(ws, path="train.csv", target="y").run_id
        status = train(ws, run, "random_forest", TrainConfig(n_estimators=50), wait_seconds=180)
        assert status.status == "succeeded", status.error
        yield ws, run, frame.drop(columns="y").head(60)
    finally:
        ws.jobs.stop()
        ws.close()


def test_a_header_with_spaces_around_a_name_predicts_like_the_training_file(
    padded: tuple[Workspace, str, pd.DataFrame],
) -> None:
    """Training trims the header (" padded " is the column "padded"); predict used to look for " padded " as it
    came, imputed "padded" in every row and shifted probabilities by up to 0.11."""
    ws, run, rows = padded
    rows.to_csv(ws.root / "as_trained.csv", index=False)  # the header as in the training file: " padded "
    rows.rename(columns=str.strip).to_csv(ws.root / "trimmed.csv", index=False)
    got = {name: predict(ws, run_id=run, path=f"{name}.csv") for name in ("as_trained", "trimmed")}
    for result in got.values():
        assert result.rows_scored == 60 and not [w for w in result.drift.warnings if "missing column" in w]
    scored = {name: pd.read_csv(ws.root / r.output) for name, r in got.items()}
    assert scored["as_trained"]["prediction"].tolist() == scored["trimmed"]["prediction"].tolist()
    truth = np.where(rows[" padded "] + 0.2 * rows["other"] > 0, "up", "down")
    assert (scored["as_trained"]["prediction"].to_numpy() == truth).mean() >= 0.85  # it learned from "padded"
    # records (the fast path of a few rows) with the padded key, as a client would send the file's header
    records = rows.head(3).to_dict(orient="records")
    by_record = predict(ws, run_id=run, records=records)
    assert [p.prediction for p in by_record.predictions] == scored["trimmed"]["prediction"].head(3).tolist()


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


def test_an_integer_count_target_is_a_regression_and_class_codes_stay_classes() -> None:
    """Visits per patient (0 to ~30, a long tail of values seen once or twice) were taken for 30 classes, whose
    rarest could not be split into folds: the search failed. Integers with few values, or with many rows for each
    value, stay classes."""
    rng = np.random.default_rng(0)
    visits = pd.Series(rng.poisson(rng.gamma(2.0, 4.0, size=1000)))
    assert visits.nunique() > 10 and visits.value_counts().min() < 5
    assert guess_task(visits) == "regression"
    codes = pd.Series(np.repeat(np.arange(12), 60))  # 12 class codes, 60 rows each
    assert guess_task(codes) == "multiclass"
    grades = pd.Series([3] * 2 + [4] * 30 + [5] * 300 + [6] * 300 + [7] * 100 + [8] * 20 + [9] * 1)  # few values
    assert guess_task(grades) == "multiclass"


def test_a_package_without_a_verified_format_says_so_in_the_workflow_summary() -> None:
    deployment = {
        "folder": "runs/run_1/deployment",
        "verified": False,
        "formats": [
            {"format": "onnx", "error": "parity failed: agreement 0.989, max |Δ| 0.135"},
            {"format": "joblib", "error": None},
        ],
    }
    line = package_line(deployment)
    assert "NO format passed its check" in line and "do not deploy it" in line
    assert "onnx: parity failed: agreement 0.989" in line and "joblib: failed its check" in line
    fine = package_line({"folder": "runs/run_1/deployment", "verified": True, "formats": []})
    assert fine == " Package: runs/run_1/deployment (verified: True)." and "NO format" not in fine


def test_predict_names_an_empty_file_and_a_run_that_does_not_exist(padded: tuple[Workspace, str, pd.DataFrame]) -> None:
    """An empty file gave pandas' traceback (EmptyDataError); an unknown run was said to have no model yet; a header
    naming a column twice was read as "padded" and "padded.1" and scored without a word (training refuses it)."""
    from ml_expert.memory.errors import InvalidInputError, NotFoundError

    ws, run, _ = padded
    (ws.root / "empty.csv").write_text("")
    (ws.root / "blank.csv").write_text("\n\n")
    for name in ("empty.csv", "blank.csv"):
        with pytest.raises(InvalidInputError, match=f"{name} is empty"):
            predict(ws, run_id=run, path=name)
    with pytest.raises(NotFoundError, match="No run 'run_deadbeef' in this workspace"):
        predict(ws, run_id="run_deadbeef", path="empty.csv")
    (ws.root / "twice.csv").write_text("padded,other,padded\n0.5,0.0,0.7\n")  # pandas would read padded.1
    with pytest.raises(InvalidInputError, match=r"twice.csv has duplicate column names \['padded'\]"):
        predict(ws, run_id=run, path="twice.csv")
    (ws.root / "blanks.csv").write_text("padded,other,,\n0.5,0.0,,\n")  # a spreadsheet's empty trailing columns
    assert predict(ws, run_id=run, path="blanks.csv").rows_scored == 1
    assert predict(ws, run_id=run, records=[{"padded": 0.5, "other": 0.0}]).rows_scored == 1  # the server goes on


def test_integer_labels_stay_integers_in_the_predictions_csv_beside_a_refused_row(
    padded: tuple[Workspace, str, pd.DataFrame],
) -> None:
    """Labels 1, 2, 3 were written as 1.0, 2.0, 3.0 once a refused row left an empty cell in the column."""
    from ml_expert.tools.data.prepare import prepare_data

    ws, _, _ = padded
    rng = np.random.default_rng(1)
    frame = pd.DataFrame({"a": rng.normal(size=300), "b": rng.normal(size=300)})
    frame["grade"] = 1 + (frame["a"] > -0.5).astype(int) + (frame["a"] > 0.5).astype(int)
    frame.to_csv(ws.root / "grades.csv", index=False)
    run = prepare_data(ws, path="grades.csv", target="grade").run_id
    assert train(ws, run, "random_forest", TrainConfig(n_estimators=30), wait_seconds=180).status == "succeeded"
    rows = frame.drop(columns="grade").head(6).astype(object)
    rows.loc[2, "a"] = "not a number"
    rows.to_csv(ws.root / "grades_new.csv", index=False)
    result = predict(ws, run_id=run, path="grades_new.csv")
    assert (result.rows_scored, result.rows_refused) == (5, 1)
    written = (ws.root / result.output).read_text().splitlines()
    cells = [line.split(",")[1] for line in written[1:]]
    assert cells[2] == "" and all(c in {"1", "2", "3"} for i, c in enumerate(cells) if i != 2), cells


def test_json_lines_with_list_and_object_cells_train_and_predict_like_their_csv(
    padded: tuple[Workspace, str, pd.DataFrame],
) -> None:
    """A list or object cell crashed the analysis (unhashable type: 'list'), and a column mixing numbers with "-"
    crashed prepare (Arrow could not convert it). Both now read as a CSV of the same rows would: the JSON text of
    the cell, and text throughout the mixed column; predict reads a JSON-lines file the same way."""
    from ml_expert.tools.data.io import read_table
    from ml_expert.tools.data.prepare import prepare_data

    ws, _, _ = padded
    rng = np.random.default_rng(2)
    n = 300
    tags = [["x"], [], ["x", "y"]]
    pick = rng.integers(0, 3, n)
    lines = pd.DataFrame(
        {
            "tags": [tags[i] for i in pick],
            "meta": [{"src": "web" if i else "app"} for i in rng.integers(0, 2, n)],
            "age": [int(a) if a > 25 else "-" for a in rng.integers(18, 80, n)],
            "noise": rng.normal(size=n),
        }
    )
    lines["y"] = np.where(pick == 1, "no", "yes")
    lines.to_json(ws.root / "events.jsonl", orient="records", lines=True)
    read = read_table(ws.root / "events.jsonl")
    assert set(read["tags"]) == {'["x"]', "[]", '["x", "y"]'} and set(read["meta"]) == {
        '{"src": "web"}',
        '{"src": "app"}',
    }
    assert {type(v) for v in read["age"]} == {str} and "-" in set(read["age"])
    run = prepare_data(ws, path="events.jsonl", target="y").run_id
    assert train(ws, run, "random_forest", TrainConfig(n_estimators=30), wait_seconds=180).status == "succeeded"
    lines.drop(columns="y").head(60).to_json(ws.root / "events_new.jsonl", orient="records", lines=True)
    result = predict(ws, run_id=run, path="events_new.jsonl")
    assert result.rows_scored == 60 and not [w for w in result.drift.warnings if "unseen" in w]
    labels = pd.read_csv(ws.root / result.output)["prediction"].to_numpy()
    assert (labels == lines["y"].head(60).to_numpy()).mean() >= 0.95  # the tags, read as text, decide the label


def test_a_suspected_leak_is_quoted_beside_the_test_score_of_the_workflow(jobs_ws: Workspace) -> None:
    """A copy of the target among the columns gave a perfect test score; the analysis flagged it (severity high)
    but neither `run` nor run_workflow's summary said so."""
    from ml_expert.tools.workflow import run_workflow

    rng = np.random.default_rng(3)
    frame = pd.DataFrame({"a": rng.normal(size=300), "b": rng.normal(size=300)})
    frame["churned"] = np.where(frame["a"] + rng.normal(scale=1.0, size=300) > 0, "yes", "no")
    frame["churned_flag"] = (frame["churned"] == "yes").astype(int)  # the target again, under another name
    frame.to_csv(jobs_ws.root / "leaky.csv", index=False)
    status = run_workflow(jobs_ws, path="leaky.csv", target="churned", architecture="linear", wait_seconds=300)
    assert status.status == "succeeded", status.error
    result = status.result
    assert result["test_metrics"]["balanced_accuracy"] == 1.0  # the leak at work
    assert any("'churned_flag' alone predicts 'churned'" in a for a in result["data_alerts"])
    assert "Check the data first: 'churned_flag' alone predicts 'churned'" in result["summary"]


def test_a_free_text_target_is_refused_by_prepare_with_what_to_choose_instead(ws: Workspace) -> None:
    """A comment column as the target (every value distinct) failed in train with scikit-learn's
    "least populated class" error listing every class id."""
    from ml_expert.memory.errors import InvalidInputError
    from ml_expert.tools.data.prepare import prepare_data

    rng = np.random.default_rng(4)
    words = np.array(["late", "good", "broken", "fast", "again", "never", "okay", "price"])
    frame = pd.DataFrame({"x": rng.normal(size=1500)})
    frame["comment"] = [" ".join(rng.choice(words, 4)) + f" (ticket {i})" for i in range(1500)]
    frame.to_csv(ws.root / "comments.csv", index=False)
    with pytest.raises(
        InvalidInputError,
        match=r"target 'comment' has 1,500 distinct values among 1,500 rows, 1,500 of them seen only once",
    ):
        prepare_data(ws, path="comments.csv", target="comment")
    frame["label"] = np.where(frame["x"] > 0, "pos", "neg")  # a real label: 2 classes
    frame.to_csv(ws.root / "labelled.csv", index=False)
    assert prepare_data(ws, path="labelled.csv", target="label").task_type == "binary"


EUROPEAN = str.maketrans(",.", ".,")  # 1,234.56 -> 1.234,56


def _money_frame(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    income, visits, share = rng.uniform(20_000, 120_000, n), rng.integers(500, 5_000, n), rng.uniform(0, 40, n)
    rate = rng.uniform(0, 2_000, n)
    return pd.DataFrame(
        {
            "income": [f"${v:,.0f}" for v in income],  # currency and thousands commas
            "visits": [f"{v:,}" for v in visits],  # thousands commas
            "share": [f"{v:.1f}%" for v in share],  # a percentage
            "rate": [f"{v:,.2f}".translate(EUROPEAN) for v in rate],  # a decimal comma: "1.234,56"
            "price": [f"${v:,.2f}" for v in income / 1_000 + visits / 100 + share + rate / 50 + rng.normal(0, 3, n)],
        }
    )


def test_numbers_written_with_currency_thousands_or_percent_are_read_as_numbers(
    padded: tuple[Workspace, str, pd.DataFrame],
) -> None:
    """ "$47,093" was dropped as an identifier, "3,768" and "12%" became categories in alphabetical order, and a
    target "$54,686" became a 780-class problem that failed in evaluate, and a decimal comma ("1.234,56", as a
    spreadsheet in most of Europe writes it) made a category of every value. Now every given value of such a column
    is a number (the package reads new rows the same way, as text or as plain numbers), while codes of digits kept
    as text and columns with words among the numbers stay text."""
    from ml_expert.tools.data.io import read_table
    from ml_expert.tools.data.prepare import prepare_data

    ws, _, _ = padded
    frame = _money_frame(600, seed=5)
    frame.loc[7, "income"] = None  # a missing cell among the numbers stays missing (then imputed)
    frame.to_csv(ws.root / "money.csv", index=False)
    read = read_table(ws.root / "money.csv")
    assert np.isnan(read.loc[7, "income"])
    assert read.attrs["number_formats"] == {
        **dict.fromkeys(["income", "visits", "share", "price"], "1,234.5"),
        "rate": "1.234,5",
    }
    first = frame.iloc[0]
    assert read.loc[0, "income"] == float(first["income"].strip("$").replace(",", ""))
    assert read.loc[0, "share"] == float(first["share"].rstrip("%"))
    assert read.loc[0, "rate"] == float(first["rate"].translate(EUROPEAN).replace(",", ""))
    mixed = pd.DataFrame({"codes": ["02134", "10001"] * 5, "money": ["$5", "n/a"] * 5, "n": range(10)})
    mixed.to_json(ws.root / "mixed.jsonl", orient="records", lines=True)
    assert read_table(ws.root / "mixed.jsonl").attrs["number_formats"] == {}  # codes and "n/a" keep them text
    prepared = prepare_data(ws, path="money.csv", target="price")
    assert prepared.task_type == "regression"
    assert train(ws, prepared.run_id, "linear", wait_seconds=180).status == "succeeded"
    new = _money_frame(40, seed=6)
    new.drop(columns="price").to_csv(ws.root / "money_new.csv", index=False)
    plain = new.drop(columns="price").assign(
        income=[float(v.strip("$").replace(",", "")) for v in new["income"]],
        visits=[int(v.replace(",", "")) for v in new["visits"]],
        share=[float(v.rstrip("%")) for v in new["share"]],
        rate=[float(v.translate(EUROPEAN).replace(",", "")) for v in new["rate"]],
    )
    plain.to_csv(ws.root / "money_plain.csv", index=False)
    as_text = predict(ws, run_id=prepared.run_id, path="money_new.csv")
    as_numbers = predict(ws, run_id=prepared.run_id, path="money_plain.csv")
    got = {name: pd.read_csv(ws.root / r.output)["prediction"] for name, r in (("t", as_text), ("n", as_numbers))}
    assert as_text.rows_scored == 40 and np.allclose(got["t"], got["n"])
    truth = np.array([float(v.strip("$").replace(",", "")) for v in new["price"]])
    assert np.sqrt(np.mean((got["t"].to_numpy() - truth) ** 2)) < 5  # it learned from the numbers (noise sd 3)
    # records as an agent sends them: the decimal comma as text, or a JSON number (1.234 is not read as 1234)
    row = plain.iloc[0].to_dict()
    sent = [row | {"rate": "1,234"}, row | {"rate": 1.234}, row | {"rate": "1.234,5"}, row | {"rate": 1234.5}]
    values = [p.prediction for p in predict(ws, run_id=prepared.run_id, records=sent).predictions]
    assert values[0] == values[1] and values[2] == values[3] and values[2] - values[0] > 10  # rate / 50


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


class _Progress:
    """A stand-in job reporter for calling explain's worker entry in-process."""

    def progress(self, force: bool = False, **info: object) -> None:
        pass


def test_explain_draws_a_categorical_with_many_levels_over_its_most_frequent_ones(ws: Workspace) -> None:
    """A 300-level product column among the top columns ended its curve with scikit-learn's "grid_resolution ...
    greater than" error; its curve now spans its PDP_GRID most frequent levels."""
    from ml_expert.tools.artifacts import load_model_meta
    from ml_expert.tools.data.prepare import prepare_data
    from ml_expert.tools.jobs.manager import JobManager
    from ml_expert.tools.prediction.explain import PDP_GRID, ExplainSpec, run_explain_job

    rng = np.random.default_rng(8)
    levels = np.array([f"P{i:03d}" for i in range(300)])
    effect = dict(zip(levels, rng.normal(0, 5, 300), strict=True))
    frame = pd.DataFrame({"product": rng.choice(levels, 3000), "x": rng.normal(size=3000)})
    frame["sales"] = frame["product"].map(effect) + 0.1 * frame["x"] + rng.normal(0, 0.5, 3000)
    frame.to_csv(ws.root / "products.csv", index=False)
    ws.jobs = JobManager(ws).start()
    try:
        run = prepare_data(ws, path="products.csv", target="sales").run_id
        assert train(ws, run, "random_forest", TrainConfig(n_estimators=40), wait_seconds=180).status == "succeeded"
        model_id = load_model_meta(ws, run, None).model_id
        result = run_explain_job(ws, ExplainSpec(run_id=run, model_id=model_id), _Progress())
    finally:
        ws.jobs.stop()
    assert result.importance[0].column == "product" and not result.warnings
    curve = next(p for p in result.partial_dependence if p.column == "product")
    assert len(curve.grid) == PDP_GRID and set(curve.grid) <= set(levels)  # the most frequent on explain's rows
    truth = [effect[level] for level in curve.grid]
    assert np.corrcoef(truth, curve.average)[0, 1] > 0.8  # the curve shows each level's own effect


def test_explain_says_why_it_drew_no_partial_dependence(
    padded: tuple[Workspace, str, pd.DataFrame], monkeypatch: pytest.MonkeyPatch
) -> None:
    """When no column's importance was above zero, explain returned an empty partial dependence and no word why."""
    from ml_expert.tools.artifacts import load_model_meta
    from ml_expert.tools.prediction import explain as explain_module
    from ml_expert.tools.prediction.explain import ExplainSpec, run_explain_job

    ws, run, _ = padded
    measured = explain_module.permutation_ranking

    def nothing_matters(*args: object, **kwargs: object) -> tuple:
        metric, score, importance = measured(*args, **kwargs)
        return metric, score, [c.model_copy(update={"importance": 0.0}) for c in importance]

    monkeypatch.setattr(explain_module, "permutation_ranking", nothing_matters)
    model_id = load_model_meta(ws, run, None).model_id
    result = run_explain_job(ws, ExplainSpec(run_id=run, model_id=model_id), _Progress())
    assert result.partial_dependence == [] and not result.warnings
    assert any(
        n.startswith("No partial dependence: shuffling no column lowered the model's score") for n in result.notes
    )


def test_a_rare_class_the_random_split_left_out_of_training_is_moved_there(jobs_ws: Workspace) -> None:
    """With a class of two rows, too few to stratify, the plain random split of seed 12 put both in validation/test.
    Training then failed with scikit-learn's "y_true contains values {2} not belonging to the passed labels"."""
    from ml_expert.tools.data.prepare import prepare_data
    from ml_expert.tools.data.splitting import split_indices

    rng = np.random.default_rng(1)
    frame = pd.DataFrame({"a": rng.normal(size=400), "b": rng.normal(size=400)})
    frame["y"] = np.where(frame["a"] > 0, "hi", "lo")
    frame.loc[:1, "y"] = "zz"
    frame.to_csv(jobs_ws.root / "rare.csv", index=False)
    prepared = prepare_data(jobs_ws, path="rare.csv", target="y", random_state=12)
    assert any("['zz'] had no row in the training split" in w for w in prepared.warnings), prepared.warnings
    assert prepared.class_distribution["train"]["zz"] == 1 and sum(prepared.splits.values()) == 400
    status = train(jobs_ws, prepared.run_id, "random_forest", TrainConfig(n_estimators=50), wait_seconds=180)
    assert status.status == "succeeded", status.error
    scored = predict(jobs_ws, run_id=prepared.run_id, records=frame.drop(columns="y").head(40).to_dict("records"))
    assert set(scored.predictions[0].probabilities) == {"hi", "lo", "zz"}
    truth = frame["y"].head(40).to_numpy()
    assert np.mean([p.prediction == t for p, t in zip(scored.predictions, truth, strict=False)]) >= 0.8

    y = frame["y"].map({"hi": 0, "lo": 1, "zz": 2}).to_numpy()  # a time split cannot move rows: refused, named
    newest_last = {"order": pd.Series(range(400)), "labels": ["hi", "lo", "zz"]}  # the two "zz" rows are the newest
    with pytest.raises(InvalidInputError, match=r"no training row has the class\(es\) \['zz'\].*'random'"):
        split_indices(400, (0.7, 0.15, 0.15), strategy="time", y=y[::-1], **newest_last)


def test_a_run_with_a_model_refuses_to_be_prepared_or_analyzed_again_and_its_model_keeps_predicting(
    padded: tuple[Workspace, str, pd.DataFrame],
) -> None:
    """prepare_data(run_id=...) after train rewrote the preprocessor that the run's model reads back: the same
    model's probabilities moved (0.082 -> 0.110 with scaling="none"), or, with a column dropped, predict, evaluate,
    package and explain failed with "X has 5 features, but ... is expecting 9"."""
    from ml_expert.memory.errors import ConflictError
    from ml_expert.tools.data.analyze import analyze_data
    from ml_expert.tools.data.prepare import prepare_data

    ws, run, rows = padded
    before = predict(ws, run_id=run, records=rows.head(5).to_dict("records"))
    preprocessor = (ws.run_dir(run) / "preprocessor.joblib").read_bytes()
    for attempt in (
        lambda: prepare_data(ws, run_id=run, scaling="none"),
        lambda: prepare_data(ws, run_id=run, drop_columns=["other"]),
        lambda: analyze_data(ws, "train.csv", target="other", run_id=run),
    ):
        with pytest.raises(
            ConflictError,
            match=rf"Run '{run}' has trained models \['mdl_.*Start a new run.*"
            r"prepare_data\(path='train.csv', target='y'",
        ):
            attempt()
    assert (ws.run_dir(run) / "preprocessor.joblib").read_bytes() == preprocessor
    after = predict(ws, run_id=run, records=rows.head(5).to_dict("records"))
    assert [p.probabilities for p in after.predictions] == [p.probabilities for p in before.predictions]
    fresh = prepare_data(ws, path="train.csv", target="y", scaling="none")  # the new preparation: a new run
    assert fresh.run_id != run and fresh.options["scaling"] == "none"


def test_a_clustering_of_a_labelled_table_predicts_and_packages_cluster_ids(jobs_ws: Workspace) -> None:
    """kmeans / gaussian_mixture trained on a labelled run: predict failed (KMeans has no predict_proba) or named
    the mixture's components with the run's labels ("malignant" for component 0); explain failed with the raw
    AttributeError; package shipped nothing verified."""
    import subprocess
    import sys

    from conftest import sklearn_frame

    from ml_expert.tools.data.prepare import prepare_data
    from ml_expert.tools.packaging.package import package
    from ml_expert.tools.prediction.explain import explain

    frame = sklearn_frame("breast_cancer")
    frame.to_csv(jobs_ws.root / "bc.csv", index=False)
    run = prepare_data(jobs_ws, path="bc.csv", target="target").run_id
    assert train(jobs_ws, run, "kmeans", wait_seconds=120).status == "succeeded"
    scored = predict(jobs_ws, run_id=run, path="bc.csv")
    ids = pd.read_csv(jobs_ws.root / scored.output)["prediction"]
    assert scored.rows_scored == 569 and set(ids) == {0, 1} and scored.label_counts.keys() == {"0", "1"}
    purity = pd.crosstab(ids, frame["target"]).max(axis=1).sum() / len(frame)
    assert purity > 0.85  # two clusters of standardized breast cancer cells follow the diagnosis (0.91 here)
    with pytest.raises(InvalidInputError, match=r"kmeans clustering, which learned no target"):
        explain(jobs_ws, run_id=run)
    packaged = package(jobs_ws, run, wait_seconds=240)
    assert packaged.status == "succeeded" and packaged.result["verified"], packaged.result
    folder = jobs_ws.root / packaged.result["folder"]
    frame.drop(columns="target").head(50).to_csv(jobs_ws.root / "rows.csv", index=False)
    out = subprocess.run(
        [sys.executable, "inference.py", str(jobs_ws.root / "rows.csv")],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert pd.read_csv(io.StringIO(out.stdout))["prediction"].tolist() == ids.head(50).tolist()


def test_next_phase_follows_the_last_phase_done_not_the_first_one_skipped(
    padded: tuple[Workspace, str, pd.DataFrame],
) -> None:
    """A run prepared from a path and trained without a recommendation said next_phase 'analyze': an agent
    following it went backwards (and analyze_data on that run is refused now that it has a model)."""
    from ml_expert.tools.runs import get_run

    ws, run, _ = padded
    info = get_run(ws, run)
    assert {"prepare", "train"} <= set(info.phases) and "analyze" not in info.phases
    assert info.next_phase == "evaluate"


def test_list_jobs_leaves_out_the_results_that_get_job_has(padded: tuple[Workspace, str, pd.DataFrame]) -> None:
    """Each listed job carried its whole result (a search's leaderboard): 45 KB for the default 20 jobs."""
    from ml_expert.tools.jobs.tools import get_job, list_jobs

    ws, run, _ = padded
    listed = [j for j in list_jobs(ws).jobs if j.run_id == run and j.kind == "train"]
    assert listed and listed[0].status == "succeeded" and listed[0].result is None
    assert get_job(ws, listed[0].job_id).result["model_id"].startswith("mdl_")


def test_explain_of_given_rows_warns_of_a_missing_and_an_unknown_column_as_predict_does(
    padded: tuple[Workspace, str, pd.DataFrame],
) -> None:
    """A row without 'other' and with a column the model never saw: predict warned of both, explain of neither,
    while the imputed 'other' took part in the row's Shapley values."""
    from ml_expert.tools.artifacts import load_model_meta
    from ml_expert.tools.prediction.explain import ExplainSpec, run_explain_job

    ws, run, rows = padded
    sent = [{" padded ": float(rows.iloc[0][" padded "]), "colour": "red"}]
    warned = predict(ws, run_id=run, records=sent).drift.warnings
    model_id = load_model_meta(ws, run, None).model_id
    explained = run_explain_job(ws, ExplainSpec(run_id=run, model_id=model_id, rows=sent), _Progress())
    expected = [
        "missing column 'other': imputed in every row; predictions lean on the other columns",
        "1 column(s) the model does not know were ignored: [colour]",
    ]
    assert [w for w in warned if w in expected] == expected
    assert [w for w in explained.warnings if w in expected] == expected, explained.warnings
    assert explained.local is not None and len(explained.local) == 1  # the row is still explained


def test_a_decimal_comma_column_whose_first_values_read_as_thousands_is_still_read_whole() -> None:
    """The first 1,000 values ("1,250", "12") fit the thousands format and a later "2,5" did not: the column was
    left as text instead of trying the decimal comma, which every value fits."""
    from ml_expert.tools.core.portable.preprocessing import number_format, read_numbers

    column = pd.Series(["1,250", "12", "3,500"] * 400 + ["2,5"], dtype=object)
    assert number_format(column) == "1.234,5"
    assert read_numbers(column, "1.234,5").iloc[[0, 1, -1]].tolist() == [1.25, 12.0, 2.5]
    assert number_format(pd.Series(["1,250", "12", "3,500"] * 400, dtype=object)) == "1,234.5"  # read either way


def test_a_class_whose_one_row_is_a_whole_split_is_refused_by_name() -> None:
    """Moving the row to training emptied the one-row test split, and the error blamed the split shares."""
    from ml_expert.tools.data.splitting import split_indices

    y = np.array([0] * 9 + [1])
    with pytest.raises(InvalidInputError, match=r"The class 'b' has no row in the training split, and the val split"):
        split_indices(10, (0.8, 0.1, 0.1), y=y, seed=1, labels=["a", "b"])
