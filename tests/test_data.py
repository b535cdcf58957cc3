"""Phase 1: analyze_data and prepare_data on real and messy data, leakage-free, with clear errors."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest
from conftest import messy_frame, sklearn_frame, write_dataset

from ml_expert.memory.errors import InvalidInputError, NotFoundError, PathNotAllowedError
from ml_expert.tools.artifacts import load_split
from ml_expert.tools.data.analyze import analyze_data
from ml_expert.tools.data.prepare import prepare_data
from ml_expert.tools.runs import get_run, list_runs
from ml_expert.tools.workspace import Workspace


@pytest.mark.parametrize(
    ("name", "task", "classes"),
    [("breast_cancer", "binary", 2), ("wine", "multiclass", 3), ("diabetes", "regression", None)],
)
def test_analyze_bundled_datasets(ws: Workspace, name: str, task: str, classes: int | None) -> None:
    path = write_dataset(ws, name)
    result = analyze_data(ws, path, target="target")
    frame = sklearn_frame(name)
    assert (result.rows, result.columns) == frame.shape
    assert result.task_type == task and result.target.task_type == task
    assert result.target.n_classes == classes
    assert result.kinds.get("numeric", 0) >= frame.shape[1] - 2
    profile = next(p for p in result.column_profiles if p.name == frame.columns[0])
    assert profile.stats["mean"] == pytest.approx(frame.iloc[:, 0].mean())
    stored = ws.store.retrieve("ml-expert/data-analysis").value
    assert stored["run_id"] == result.run_id and stored["rows"] == len(frame)
    assert ws.store.retrieve(f"ml-expert/runs/{result.run_id}/data-analysis").value["task_type"] == task
    assert get_run(ws, result.run_id).phases["analyze"].status == "done"


def test_analyze_messy_data_kinds_and_warnings(ws: Workspace, messy_csv: str) -> None:
    result = analyze_data(ws, messy_csv, target="label")
    kinds = {p.name: p.kind for p in result.column_profiles}
    assert kinds["customer_id"] == "identifier" and kinds["const"] == "constant"
    assert kinds["signup"] == "datetime" and kinds["flag"] == "boolean" and kinds["city"] == "categorical"
    codes = {(w.code, w.column) for w in result.warnings}
    assert {("identifier", "customer_id"), ("constant", "const"), ("duplicates", None)} <= codes
    assert result.duplicate_rows == 5
    city = next(p for p in result.column_profiles if p.name == "city")
    assert city.missing == messy_frame()["city"].isna().sum() and city.top_values[0]["count"] > 0
    assert any("Drop ['customer_id', 'const']" in r or "customer_id" in r for r in result.recommendations)


def test_leakage_suspect_and_imbalance_are_flagged(ws: Workspace) -> None:
    rng = np.random.default_rng(0)
    n = 600
    y = (rng.random(n) < 0.1).astype(int)
    df = pd.DataFrame({"noise": rng.normal(size=n), "refund_issued": y * 3 + rng.normal(scale=0.01, size=n), "y": y})
    df.to_csv(ws.root / "leaky.csv", index=False)
    result = analyze_data(ws, "leaky.csv", target="y")
    codes = {(w.code, w.column): w.severity for w in result.warnings}
    assert codes[("leakage_suspect", "refund_issued")] == "high"
    assert ("leakage_suspect", "noise") not in codes
    assert ("imbalance", "y") in codes and result.target.imbalance_ratio == pytest.approx(
        (y == 0).sum() / (y == 1).sum()
    )


def test_a_label_cut_from_a_number_is_a_leakage_suspect_on_a_small_table(ws: Workspace) -> None:
    """MASS's birthwt: `low` is `bwt < 2500`, yet on its 189 rows the 64-bin check scored bwt 0.92 and said nothing
    (the model then scored 1.00). A single cut learned on half the rows is checked too; a target that is a feature
    in other units (a straight line) likewise; a merely strong feature is not flagged."""
    rng = np.random.default_rng(2)
    n = 189
    weight = rng.normal(2950, 700, n).round()
    strong = weight / 1000 + rng.normal(0, 0.5, n)  # informative, not a leak
    df = pd.DataFrame({"bwt": weight, "age": rng.integers(15, 45, n), "strong": strong, "low": (weight < 2500) * 1})
    df.to_csv(ws.root / "births.csv", index=False)
    codes = {(w.code, w.column) for w in analyze_data(ws, "births.csv", target="low").warnings}
    assert ("leakage_suspect", "bwt") in codes
    assert ("leakage_suspect", "strong") not in codes and ("leakage_suspect", "age") not in codes
    celsius = rng.normal(15, 8, n)
    units = pd.DataFrame({"celsius": celsius, "wind": rng.normal(size=n), "fahrenheit": celsius * 1.8 + 32})
    units.to_csv(ws.root / "units.csv", index=False)
    codes = {(w.code, w.column) for w in analyze_data(ws, "units.csv", target="fahrenheit").warnings}
    assert ("leakage_suspect", "celsius") in codes and ("leakage_suspect", "wind") not in codes


def test_wide_data_stays_bounded(ws: Workspace) -> None:
    rng = np.random.default_rng(1)
    df = pd.DataFrame(rng.normal(size=(60, 2000)), columns=[f"f{i}" for i in range(2000)])
    df["target"] = rng.integers(0, 2, size=60)
    df.to_csv(ws.root / "wide.csv", index=False)
    result = analyze_data(ws, "wide.csv", target="target")
    assert result.columns == 2001 and len(result.column_profiles) <= 40
    assert result.columns_omitted == 2001 - len(result.column_profiles)
    assert result.kinds["numeric"] == 2001  # the 0/1 target is a number too
    assert len(result.model_dump_json()) < 40_000


def test_prepare_fits_on_training_rows_only(ws: Workspace) -> None:
    path = write_dataset(ws, "breast_cancer")
    run = analyze_data(ws, path, target="target").run_id
    prepared = prepare_data(ws, run_id=run, outliers="none")
    folder = ws.run_dir(run)
    pre = joblib.load(folder / "preprocessor.joblib")
    scaler = pre.named_transformers_["numeric"][-1]
    frame = sklearn_frame("breast_cancer")
    X_train, _ = load_split(ws, run, "train")
    X_val, _ = load_split(ws, run, "val")
    # the scaler's mean is the training rows' mean: all rows minus the validation and test rows
    features = frame.drop(columns="target").drop_duplicates()
    test_raw = pd.read_parquet(folder / "data" / "raw_test.parquet").drop(columns="target")[features.columns]
    val_raw = scaler.inverse_transform(X_val.astype(np.float64))
    n_train = len(features) - len(val_raw) - len(test_raw)
    assert n_train == len(X_train) == prepared.splits["train"]
    train_mean = (features.to_numpy().sum(axis=0) - val_raw.sum(axis=0) - test_raw.to_numpy().sum(axis=0)) / n_train
    assert np.allclose(scaler.mean_, train_mean, rtol=1e-4)
    assert not np.allclose(scaler.mean_, features.mean().to_numpy(), rtol=1e-4)
    assert np.allclose(X_train.mean(axis=0), 0, atol=1e-5) and np.allclose(X_train.std(axis=0), 1, atol=1e-3)
    X_test, _ = load_split(ws, run, "test")
    assert not np.allclose(X_test.mean(axis=0), 0, atol=1e-3)  # test rows were transformed, not fitted
    assert prepared.splits == {"train": 398, "val": 85, "test": 86}
    assert prepared.label_mapping == {"0": "benign", "1": "malignant"}
    shares = {k: v["malignant"] / sum(v.values()) for k, v in prepared.class_distribution.items()}
    assert max(shares.values()) - min(shares.values()) < 0.03  # stratified
    assert ws.store.retrieve("ml-expert/prepared-data").value["features_out"] == 30


def test_missing_cells_are_features_a_model_learns_from(ws: Workspace) -> None:
    """An empty cell is information (no garage, an income not declared): a numeric column with gaps gets a 0/1
    column saying where, and a missing category is a category of its own, not the most frequent one. Here the
    gaps are the signal: buyers declared no income and had no garage far more often."""
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(3)
    n = 900
    bought = rng.random(n) < 0.5
    income = rng.normal(50, 15, n).round(1)
    garage = rng.choice(["attached", "detached", "carport"], n, p=[0.5, 0.3, 0.2]).astype(object)
    no_income = np.where(bought, rng.random(n) < 0.6, rng.random(n) < 0.05)
    no_garage = np.where(bought & ~no_income, rng.random(n) < 0.9, rng.random(n) < 0.03)
    frame = pd.DataFrame(
        {"income": np.where(no_income, np.nan, income), "garage": garage, "rooms": rng.integers(1, 9, n)}
    )
    frame.loc[no_garage, "garage"] = None
    frame["bought"] = np.where(bought, "yes", "no")
    frame.to_csv(ws.root / "homes.csv", index=False)
    result = prepare_data(ws, path="homes.csv", target="bought")
    assert {"missingindicator_income", "garage_(missing)"} <= set(result.feature_names)
    assert "missingindicator_rooms" not in result.feature_names  # no gaps in training: no indicator
    names = result.feature_names
    X_train, y_train = load_split(ws, result.run_id, "train")
    X_test, y_test = load_split(ws, result.run_id, "test")
    raw = pd.read_parquet(ws.run_dir(result.run_id) / "data" / "raw_test.parquet")
    flag = X_test[:, names.index("missingindicator_income")]
    assert (flag > flag.min()).tolist() == raw["income"].isna().tolist()  # scaled, but 1 exactly where missing
    assert (X_test[:, names.index("garage_(missing)")] == 1).tolist() == raw["garage"].isna().tolist()
    model = LogisticRegression(max_iter=1000).fit(X_train, y_train)
    assert model.score(X_test, y_test) >= 0.88  # 0.956; mean and mode fills hid the gaps (0.66)


def test_outliers_only_leave_the_training_split(ws: Workspace) -> None:
    path = write_dataset(ws, "diabetes")
    base = prepare_data(ws, path=path, target="target", outliers="none")
    cleaned = prepare_data(ws, path=path, target="target", outliers="zscore", max_outlier_share=0.2)
    assert cleaned.splits["val"] == base.splits["val"] and cleaned.splits["test"] == base.splits["test"]
    dropped = next(s for s in cleaned.cleaning_log if "outliers" in s.reason).rows
    assert dropped > 0 and cleaned.splits["train"] == base.splits["train"] - dropped


def test_prepare_messy_data_encodes_each_column_separately(ws: Workspace, messy_csv: str) -> None:
    result = prepare_data(ws, path=messy_csv, target="label")
    assert result.dropped_columns == {"customer_id": "identifier", "const": "constant"}
    assert {"city_oslo", "city_lima", "flag", "x1"} <= set(result.feature_names)
    assert any(n.startswith("signup_") for n in result.feature_names)
    actions = {s.reason: s.rows for s in result.cleaning_log}
    assert actions["duplicate rows"] == 5
    X, _ = load_split(ws, result.run_id, "train")
    assert not np.isnan(X).any()
    schema = json.loads((ws.run_dir(result.run_id) / "schema.json").read_text())
    city = next(c for c in schema["columns"] if c["name"] == "city")
    assert city["categories"] == ["lima", "oslo", "paris", "rome"]


def test_group_and_time_splits(ws: Workspace) -> None:
    rng = np.random.default_rng(3)
    n = 400
    df = pd.DataFrame(
        {
            "patient": np.repeat(np.arange(40), 10),
            "x": np.arange(n) + rng.random(n),
            "day": pd.date_range("2023-01-01", periods=n, freq="D").astype(str),
            "y": rng.normal(size=n),
        }
    )
    df.to_csv(ws.root / "groups.csv", index=False)
    res = prepare_data(
        ws,
        path="groups.csv",
        target="y",
        split_strategy="group",
        group_column="patient",
        drop_identifiers=False,
        outliers="none",
    )
    assert sum(res.splits.values()) == n
    res_t = prepare_data(ws, path="groups.csv", target="y", split_strategy="time", time_column="day", outliers="none")
    assert res_t.splits == {"train": 280, "val": 60, "test": 60}
    raw_test = pd.read_parquet(ws.run_dir(res_t.run_id) / "data" / "raw_test.parquet")
    assert raw_test["x"].min() > df["x"].iloc[339]  # the newest rows are the test rows


def test_missing_target_rows_are_dropped_and_counted(ws: Workspace) -> None:
    df = messy_frame()
    df.loc[:9, "label"] = np.nan
    df.to_csv(ws.root / "gaps.csv", index=False)
    result = prepare_data(ws, path="gaps.csv", target="label")
    assert any(s.rows == 10 and "target" in s.reason for s in result.cleaning_log)


def test_small_class_falls_back_with_a_warning(ws: Workspace) -> None:
    df = sklearn_frame("iris")
    df = pd.concat([df[df.target != "virginica"], df[df.target == "virginica"].head(3)])
    df.to_csv(ws.root / "tiny_class.csv", index=False)
    result = prepare_data(ws, path="tiny_class.csv", target="target", outliers="none")
    assert any("too small to stratify" in w for w in result.warnings)


def test_runs_are_listed_newest_first(ws: Workspace, messy_csv: str) -> None:
    a = analyze_data(ws, messy_csv, target="label").run_id
    b = analyze_data(ws, messy_csv, target="label").run_id
    listed = list_runs(ws)
    assert [r.run_id for r in listed.runs][:2] == [b, a] and listed.total == 2
    assert listed.runs[0].next_phase == "prepare"


def test_latin1_and_gzip_and_tsv_files_just_work(ws: Workspace) -> None:
    df = pd.DataFrame({"city": ["Zürich", "Málaga", "Orléans"] * 10, "v": range(30), "y": [0, 1, 1] * 10})
    (ws.root / "latin.csv").write_bytes(df.to_csv(index=False).encode("latin-1"))
    with gzip.open(ws.root / "data.tsv.gz", "wt") as f:
        f.write(df.to_csv(index=False, sep="\t"))
    df.to_json(ws.root / "rows.jsonl", orient="records", lines=True)
    df.to_parquet(ws.root / "rows.parquet")
    for name in ("latin.csv", "data.tsv.gz", "rows.jsonl", "rows.parquet"):
        result = analyze_data(ws, name, target="y")
        city = next(p for p in result.column_profiles if p.name == "city")
        assert result.rows == 30 and {v["value"] for v in city.top_values} == {"Zürich", "Málaga", "Orléans"}


def _write(ws: Workspace, name: str, content: bytes | str) -> str:
    data = content.encode() if isinstance(content, str) else content
    (ws.root / name).write_bytes(data)
    return name


BAD_FILES = [
    ("empty.csv", b"", InvalidInputError, "empty"),
    ("header.csv", "a,b,target\n", InvalidInputError, "no data rows"),
    ("garbage.csv", bytes(range(256)) * 40, InvalidInputError, "binary"),
    ("ragged.csv", "a,b,target\n1,2,0\n1,2,3,4\n5,6,1\n", InvalidInputError, "different number of fields"),
    ("notes.docx", "hello", InvalidInputError, "Unsupported file type"),
]


@pytest.mark.parametrize(("name", "content", "error", "message"), BAD_FILES)
def test_unreadable_files_get_clear_errors(ws: Workspace, name: str, content: bytes, error: type, message: str) -> None:
    _write(ws, name, content)
    with pytest.raises(error, match=message):
        analyze_data(ws, name, target="target")


def test_paths_outside_the_workspace_are_refused(ws: Workspace, tmp_path: Path) -> None:
    outside = tmp_path / "outside.csv"
    outside.write_text("a,target\n1,0\n2,1\n")
    os.symlink(outside, ws.root / "link.csv")
    for path in ("../outside.csv", str(outside), "link.csv", "/proc/self/environ", "/etc/passwd"):
        with pytest.raises(PathNotAllowedError, match=r"outside the workspace.*--allow-path"):
            analyze_data(ws, path, target="target")
    with pytest.raises(NotFoundError, match="does not exist"):
        analyze_data(ws, "missing.csv")
    allowed = Workspace(ws.root, allow_paths=(tmp_path,))
    assert analyze_data(allowed, str(outside), target="target").rows == 2


@pytest.mark.parametrize(
    ("frame", "kwargs", "error", "message"),
    [
        (pd.DataFrame({"a": [1, 2, 3], "y": [0, 1, 0]}), {"target": "price"}, NotFoundError, r"Columns: \['a', 'y'\]"),
        (pd.DataFrame({"a": range(20), "y": [np.nan] * 20}), {"target": "y"}, InvalidInputError, "entirely missing"),
        (pd.DataFrame({"a": range(20), "y": ["same"] * 20}), {"target": "y"}, InvalidInputError, "single value"),
        (
            pd.DataFrame({"a": [1.0, np.nan] * 5, "y": [0, 1] * 5}),
            {"target": "y", "impute": "drop"},
            InvalidInputError,
            r"Only \d+ rows remain",
        ),
        (
            pd.DataFrame({"a": range(40), "y": [0, 1] * 20}),
            {"target": "y", "split": (0.5, 0.2, 0.2)},
            InvalidInputError,
            "summing to 1",
        ),
        (
            pd.DataFrame({"a": range(40), "y": [0, 1] * 20}),
            {"target": "y", "drop_columns": ["nope"]},
            NotFoundError,
            "drop_columns names 'nope'",
        ),
    ],
)
def test_bad_prepare_requests(ws: Workspace, frame: pd.DataFrame, kwargs: dict, error: type, message: str) -> None:
    frame.to_csv(ws.root / "bad.csv", index=False)
    with pytest.raises(error, match=message):
        prepare_data(ws, path="bad.csv", **kwargs)
    assert ws.store.get_value("ml-expert/prepared-data") is None  # nothing half-written


def test_training_dates_that_do_not_parse_are_logged_not_silently_missing(ws: Workspace) -> None:
    frame = messy_frame(300)
    days = pd.date_range("2024-01-01", periods=30, freq="D").astype(str)
    frame["signup"] = np.random.default_rng(0).choice(days, len(frame)).astype(object)  # repeated: not an id
    frame.loc[[3, 7, 11], "signup"] = ["2024-13-45", "31/31/2024", "2024-02-30"]
    frame.loc[20, "signup"] = None  # an empty cell is a missing value, not a bad date
    frame.to_csv(ws.root / "dates.csv", index=False)
    prepared = prepare_data(ws, path="dates.csv", target="label")
    logged = [s for s in prepared.cleaning_log if s.columns == ["signup"] and s.action == "missing_values"]
    assert len(logged) == 1 and logged[0].rows == 3, prepared.cleaning_log
    assert "'2024-13-45'" in logged[0].reason and "imputed" in logged[0].reason


def _census_frame(n: int = 3000, seed: int = 0) -> pd.DataFrame:
    """A table of codes (24 possible rows), the label a coin whose bias depends on the row: repeats are the data."""
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(
        {
            "kids": rng.integers(0, 4, n),
            "married": rng.random(n) < 0.5,
            "region": rng.choice(["north", "south", "west"], n),
        }
    )
    logit = (
        0.9 * (df["kids"] - 1.5)
        + np.where(df["married"], 0.6, -0.6)
        + df["region"].map({"north": 0.5, "south": 0, "west": -0.5})
    )
    df["more"] = np.where(rng.random(n) < 1 / (1 + np.exp(-logit)), "yes", "no")
    return df


def test_repeated_rows_of_a_table_of_codes_are_kept_and_learned(ws: Workspace) -> None:
    from sklearn.linear_model import LogisticRegression

    frame = _census_frame()
    frame.to_csv(ws.root / "census.csv", index=False)
    analysis = analyze_data(ws, "census.csv", target="more")
    warning = next(w for w in analysis.warnings if w.code == "duplicates")
    assert warning.severity == "info" and "observations" in warning.message
    assert any("Keep the repeated rows" in r for r in analysis.recommendations)

    prepared = prepare_data(ws, run_id=analysis.run_id)
    assert sum(prepared.splits.values()) == len(frame)  # nothing dropped
    kept = next(s for s in prepared.cleaning_log if s.action == "keep_duplicates")
    assert kept.rows == analysis.duplicate_rows > 2900
    X_train, y_train = load_split(ws, analysis.run_id, "train")
    X_test, y_test = load_split(ws, analysis.run_id, "test")
    accuracy = LogisticRegression().fit(X_train, y_train).score(X_test, y_test)
    assert accuracy > 0.68, accuracy  # the label frequencies per row are there to learn (Bayes rate ~0.74)

    # asked to, it drops them: at most one row per cell (24) and label is left
    forced = analyze_data(ws, "census.csv", target="more").run_id
    assert sum(prepare_data(ws, run_id=forced, drop_duplicates=True).splits.values()) <= 48


def test_passengers_alike_in_few_columns_are_kept_not_dropped_as_copies(ws: Workspace) -> None:
    """Regression (carData's TitanicSurvival): names, sex, class and an age in whole years, a fifth of them unknown.
    Without the names, most rows repeat another exactly (59 %), too few per distinct row for a table of codes (3.2 on
    average), but half of the repeated passengers also come with the other outcome: these are passengers, not a table
    pasted over. They used to be dropped as duplicates (664 of 1,047 training rows), which also moved the share of
    survivors (38 -> 47 %), while analyze_data, counting repeats with the names, reported none."""
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(7)
    n = 900
    frame = pd.DataFrame(
        {
            "sex": rng.choice(["male", "female"], n, p=[0.64, 0.36]),
            "pclass": rng.choice(["1st", "2nd", "3rd"], n, p=[0.25, 0.2, 0.55]),
            "age": np.where(rng.random(n) < 0.2, np.nan, np.round(rng.gamma(4, 7.5, n)).clip(1, 75)),
        }
    )
    logit = (
        np.where(frame["sex"] == "female", 1.3, -1.2)
        + frame["pclass"].map({"1st": 1.0, "2nd": 0.2, "3rd": -0.7})
        - 0.02 * (frame["age"].fillna(30) - 30)
    )
    frame["survived"] = np.where(rng.random(n) < 1 / (1 + np.exp(-logit)), "yes", "no")
    duplicates = int(frame.duplicated().sum())
    assert duplicates > n / 2  # most rows repeat another exactly, once the names are left out
    frame.insert(0, "rownames", [f"Passenger {i:04d}" for i in range(n)])  # unique: an identifier
    frame.to_csv(ws.root / "passengers.csv", index=False)

    analysis = analyze_data(ws, "passengers.csv", target="survived")
    assert analysis.duplicate_rows == duplicates  # the repeats prepare_data sees, not hidden by the names
    warning = next(w for w in analysis.warnings if w.code == "duplicates")
    assert warning.severity == "info" and "observations" in warning.message
    prepared = prepare_data(ws, run_id=analysis.run_id)
    assert sum(prepared.splits.values()) == n  # nothing dropped
    kept = next(s for s in prepared.cleaning_log if s.action == "keep_duplicates")
    assert kept.rows == duplicates and "few columns, few values" in kept.reason
    assert prepared.dropped_columns == {"rownames": "identifier"}
    survivors = sum(split.get("yes", 0) for split in prepared.class_distribution.values())
    assert survivors == (frame["survived"] == "yes").sum()  # the share of survivors as it is
    X_train, y_train = load_split(ws, prepared.run_id, "train")
    X_test, y_test = load_split(ws, prepared.run_id, "test")
    accuracy = LogisticRegression().fit(X_train, y_train).score(X_test, y_test)
    assert accuracy > 0.7, accuracy  # sex and class decide most outcomes (majority class: 0.58)


def test_a_table_of_codes_copied_over_and_over_is_deduplicated(ws: Workspace) -> None:
    cells = _census_frame(60, seed=2).drop_duplicates(subset=["kids", "married", "region"])
    cells["more"] = np.where(cells["kids"] > 1, "yes", "no")  # one label per row: nothing but copies below
    pd.concat([cells] * 8, ignore_index=True).to_csv(ws.root / "copies.csv", index=False)
    analysis = analyze_data(ws, "copies.csv", target="more")
    assert next(w for w in analysis.warnings if w.code == "duplicates").severity == "warning"
    prepared = prepare_data(ws, run_id=analysis.run_id)
    assert sum(prepared.splits.values()) == len(cells)
    assert next(s for s in prepared.cleaning_log if s.action == "drop_rows").rows == 7 * len(cells)


def test_copied_rows_of_a_continuous_table_are_still_dropped(ws: Workspace) -> None:
    frame = sklearn_frame("breast_cancer")
    doubled = pd.concat([frame, frame.iloc[:100]], ignore_index=True)
    doubled.to_csv(ws.root / "doubled.csv", index=False)
    run = analyze_data(ws, "doubled.csv", target="target").run_id
    prepared = prepare_data(ws, run_id=run)
    assert sum(prepared.splits.values()) == len(frame)
    assert next(s for s in prepared.cleaning_log if s.action == "drop_rows").rows == 100


def test_repeated_rows_of_replicated_measurements_are_kept(ws: Workspace) -> None:
    """Concrete mixes, some tested two or three times: a replicate mostly measures another strength, and now and then
    the same one, which makes an exact duplicate row. Those are observations, not copies: dropping them cost a
    CatBoost bag 1-3 % RMSE on the concrete table on 6 of 6 splits (the test rows repeat mixes too)."""
    rng = np.random.default_rng(3)
    mixes = pd.DataFrame({"cement": rng.uniform(100, 500, 300), "water": rng.uniform(120, 250, 300)})
    mixes["age"] = rng.choice([3, 7, 28, 90], 300)
    mixes["cement_type"] = rng.choice(["portland", "slag blend", "fly-ash blend"], 300)  # a string column
    mixes["retarder"] = rng.random(300) < 0.3  # a boolean
    mixes.loc[rng.choice(300, 20, replace=False), "water"] = np.nan  # unrecorded water: repeats carry the gap too
    tested = mixes.loc[np.repeat(mixes.index, np.where(mixes.index < 60, 3, 1))].reset_index(drop=True)
    strength = 0.08 * tested["cement"] - 0.1 * tested["water"].fillna(180) + 5 * np.log(tested["age"])
    tested["strength"] = np.round(strength + rng.normal(0, 2, len(tested)))  # replicates: another value, or the same
    frame = pd.concat([tested, tested.iloc[:5]], ignore_index=True)  # and some measured exactly alike
    frame.to_csv(ws.root / "mixes.csv", index=False)
    duplicates = int(frame.duplicated().sum())
    analysis = analyze_data(ws, "mixes.csv", target="strength")
    warning = next(w for w in analysis.warnings if w.code == "duplicates")
    assert warning.severity == "info" and "repeats measurements" in warning.message
    prepared = prepare_data(ws, run_id=analysis.run_id)
    assert sum(prepared.splits.values()) == len(frame)  # nothing dropped
    kept = next(s for s in prepared.cleaning_log if s.action == "keep_duplicates")
    assert kept.rows == duplicates >= 5 and "repeats measurements" in kept.reason
    forced = analyze_data(ws, "mixes.csv", target="strength").run_id
    assert sum(prepare_data(ws, run_id=forced, drop_duplicates=True).splits.values()) == len(frame) - duplicates

    # the same table pasted twice: its replicates still disagree, but half of its rows are now exact copies
    pd.concat([frame, frame], ignore_index=True).to_csv(ws.root / "pasted.csv", index=False)
    pasted = prepare_data(ws, path="pasted.csv", target="strength")
    assert sum(pasted.splits.values()) == len(frame) - duplicates
    assert next(s for s in pasted.cleaning_log if s.action == "drop_rows").rows == len(frame) + duplicates
