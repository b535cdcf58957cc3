"""What `analyze_data` warns about, with the recommendations that follow: per-column warnings (identifiers,
constants, mostly missing, high cardinality), rows that form a time series (one per regular time step, where a
random split would test on the past), duplicate rows (copies, or repeated observations), the target (missing
values, imbalance, classes too small to stratify, integer values taken as classes), values that differ only in case
or spaces ('Yes', 'yes', 'YES '). Leakage suspects are in
`leakage.py`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel

from ml_expert.tools.core.lazy import lazy_import
from ml_expert.tools.core.scoring import IMBALANCE_RATIO
from ml_expert.tools.core.tasks import is_classification
from ml_expert.tools.data.profiling import (
    DROP_KINDS,
    HIGH_CARDINALITY,
    copied_columns,
    copies_shown,
    name_says_id,
    repeats_are_observations,
    row_hashes,
)

if TYPE_CHECKING:
    from ml_expert.tools.data.analyze import TargetSummary

np = lazy_import("numpy")
pd = lazy_import("pandas")

MIN_ROWS_PER_CLASS = 7  # a 70/15/15 stratified split needs about this many rows in every class
SERIES_MIN_ROWS = 30  # fewer timestamps say too little about their spacing
SERIES_UNIQUE = 0.95  # share of the rows with a timestamp of their own: one row per time step
MIXED_PARSE_ROWS = 100_000  # dates of several formats are read one by one (~20 µs each) up to this many rows
FORMAT_ROWS = 100_000  # rows whose text says whether the dates are written day first
VARIANT_VALUES = 10_000  # distinct values of a column compared for spelling variants
SERIES_ROWS = 1_000_000  # rows whose times are read for the series check (5M timestamps as text took 5.4 s)
SERIES_REGULAR = 0.75  # share of the gaps within 10 % of the median gap (business days: 4 of 5 gaps are one day)
STEPS = (("second", 1), ("minute", 60), ("hour", 3600), ("day", 86400), ("week", 7 * 86400),
         ("month", 30.44 * 86400), ("quarter", 91.31 * 86400), ("year", 365.25 * 86400))  # fmt: skip

Severity = Literal["info", "warning", "high"]


class DataWarning(BaseModel):
    severity: Severity
    code: str
    column: str | None = None
    message: str


def _column_warnings(
    df: pd.DataFrame, kinds: dict[str, str], target: TargetSummary | None, nunique: pd.Series
) -> list[DataWarning]:
    """Per column: identifiers, constants/empties, mostly missing, high cardinality."""
    out: list[DataWarning] = []
    missing_share = df.isna().mean()
    for col, kind in kinds.items():
        if target and col == target.column:
            continue
        if kind == "identifier":
            message = f"{col!r} looks like a row identifier (unique per row)."
            out.append(DataWarning(severity="warning", code="identifier", column=col, message=message))
        elif kind in ("constant", "empty"):
            message = f"{col!r} is {kind}: it carries no information."
            out.append(DataWarning(severity="info", code=kind, column=col, message=message))
        share = float(missing_share[col])
        if 0.5 <= share < 1:
            message = f"{col!r} is {share:.0%} missing."
            out.append(DataWarning(severity="warning", code="mostly_missing", column=col, message=message))
        if kind == "categorical" and nunique[col] > HIGH_CARDINALITY:
            message = f"{col!r} has {nunique[col]} categories; one-hot would be wide."
            out.append(DataWarning(severity="info", code="high_cardinality", column=col, message=message))
    return out


def _time_step(stamps: pd.Series) -> str | None:
    """The step of a column of timestamps that gives each row a time of its own, at regular steps ('one month', '3
    days'), else None. Day-first text (03/11/2024: 3 November) is read day first, as the features read it."""
    from ml_expert.tools.core.portable.preprocessing import date_format, read_dates  # sklearn: not at server start

    times = read_dates(stamps, date_format(stamps.head(FORMAT_ROWS)), MIXED_PARSE_ROWS).dropna()
    if len(times) < SERIES_MIN_ROWS or times.nunique() < SERIES_UNIQUE * len(stamps):
        return None
    gaps = np.diff(np.sort(times.unique().astype("datetime64[ns]").astype(np.int64))).astype(float) / 1e9
    median = float(np.median(gaps))
    if median <= 0 or np.mean(np.abs(gaps - median) <= 0.1 * median) < SERIES_REGULAR:
        return None
    name, seconds = next((step for step in reversed(STEPS) if step[1] <= 1.1 * median), STEPS[0])  # the largest unit
    count = median / seconds
    return f"one {name}" if abs(count - 1) < 0.1 else f"{count:.3g} {name}s"


def _time_series_warnings(
    df: pd.DataFrame, kinds: dict[str, str], target: str | None, nunique: pd.Series
) -> list[DataWarning]:
    """A datetime column that gives every row its own time, at regular steps: the table is a time series, and a
    random split tests the model on rows between those it learned from."""
    out = []
    for col, kind in kinds.items():
        if kind != "datetime" or col == target or nunique[col] < SERIES_UNIQUE * len(df):
            continue  # the distinct count first: parsing a column of millions of dates costs seconds
        if (step := _time_step(df[col].iloc[:SERIES_ROWS])) is None:  # the first rows of a long table: seconds less
            continue
        message = (
            f"{col!r} gives every row its own time, {step} apart: the rows form a time series. A random split "
            "tests the model on rows between those it learned from, so its test score flatters a forecast; pass "
            f"split_strategy='time', time_column={col!r} to prepare_data (run_workflow: time_column={col!r}) to "
            "test it on the latest rows."
        )
        out.append(DataWarning(severity="high", code="time_series", column=col, message=message))
    return out


def _task_guess_warning(df: pd.DataFrame, target: TargetSummary | None, requested: str) -> list[DataWarning]:
    """A numeric target of a few integer values is taken for class codes; say so, with how to read it as a number."""
    if target is None or requested != "auto" or target.task_type != "multiclass":
        return []
    y = df[target.column]
    if not pd.api.types.is_numeric_dtype(y.dtype) or pd.api.types.is_bool_dtype(y.dtype):
        return []
    shown = sorted({str(int(float(v))) for v in target.class_counts or {}}, key=int)
    values = ", ".join(shown[:8]) + (", …" if (target.n_classes or 0) > 8 else "")
    message = (
        f"{target.column!r} holds {target.n_classes} integer values ({values}): they are taken as "
        f"{target.n_classes} classes. If they are amounts (counts, ratings, scores) whose order matters, pass "
        "task_type='regression'."
    )
    return [DataWarning(severity="info", code="task_guess", column=target.column, message=message)]


def _target_identifier_warning(
    df: pd.DataFrame, kinds: dict[str, str], target: TargetSummary | None, nunique: pd.Series
) -> list[DataWarning]:
    """A target named like an identifier that is one by the rule a feature is (`infer_kind`: a 'uid' picked by
    mistake): a model of it learns how the rows were numbered, and scores well doing so (R² 1.00 on a survey's row
    ids). A measure named like one (a price_index of decimals) is numeric, not an identifier."""
    if target is None or kinds.get(target.column) != "identifier" or not name_says_id(target.column):
        return []
    share = int(nunique[target.column]) / max(1, int(df[target.column].notna().sum()))
    message = (
        f"Target {target.column!r} looks like a row identifier (its name, and a value of its own in {share:.0%} of "
        "the rows): a model of it learns how the rows were numbered, not something to predict. Pick the column to "
        "predict as target."
    )
    return [DataWarning(severity="high", code="target_identifier", column=target.column, message=message)]


def _spelling_variants(s: pd.Series) -> list[list[str]]:
    """Groups of a text column's values that differ only in case or surrounding spaces ('Yes', 'yes', 'YES ')."""
    values = s.dropna().astype(str).unique()[:VARIANT_VALUES]
    groups: dict[str, list[str]] = {}
    for value in values:
        groups.setdefault(value.strip().casefold(), []).append(value)
    return [sorted(g) for g in groups.values() if len(g) > 1]


def _variant_warnings(df: pd.DataFrame, kinds: dict[str, str], target: TargetSummary | None) -> list[DataWarning]:
    """Values that differ only in case or spaces are different classes (the target) or categories to a model."""
    out = []
    for col in df.columns:
        is_target = target is not None and col == target.column
        if not (is_target and is_classification(target.task_type)) and kinds.get(col) != "categorical":
            continue
        if not (df[col].dtype == object or pd.api.types.is_string_dtype(df[col].dtype)):
            continue
        groups = _spelling_variants(df[col])
        if not groups:
            continue
        shown = "; ".join(", ".join(repr(v) for v in g[:4]) for g in groups[:3]) + ("; …" if len(groups) > 3 else "")
        what = "different classes" if is_target else "different categories"
        message = f"{col!r} has values that differ only in case or spaces ({shown}): the model takes them as {what}."
        out.append(
            DataWarning(severity="high" if is_target else "info", code="spelling_variants", column=col, message=message)
        )
    return out


def _copy_warning(df: pd.DataFrame, kinds: dict[str, str], target: TargetSummary | None) -> list[DataWarning]:
    """One info warning naming the feature columns that repeat an earlier one value for value (prepare_data drops
    them)."""
    copies = copied_columns(df, feature_columns(df, kinds, target.column if target else None))
    if not copies:
        return []
    message = (
        f"{len(copies):,} columns repeat an earlier column value for value ({copies_shown(copies)}): copies add "
        "nothing but time; prepare_data keeps the first of each."
    )
    return [DataWarning(severity="info", code="duplicate_columns", column=next(iter(copies)), message=message)]


def feature_columns(df: pd.DataFrame, kinds: dict[str, str], target: str | None) -> list[str]:
    """The columns prepare_data keeps as features: not the target, no identifier, constant or empty column."""
    return [c for c in df.columns if kinds[c] not in DROP_KINDS and c != target]


def duplicate_rows(df: pd.DataFrame, kinds: dict[str, str], target: str | None) -> int:
    """Rows that repeat an earlier row on the features and the target, the rows prepare_data compares: a unique
    identifier column would hide every repeat."""
    kept = feature_columns(df, kinds, target) + ([target] if target else [])
    return int(pd.util.hash_pandas_object(df[kept or list(df.columns)], index=False).duplicated().sum())


def _repeats_are_observations(df: pd.DataFrame, kinds: dict[str, str], target: TargetSummary | None) -> str | None:
    """prepare_data's test, on the columns it keeps as features: why repeats are observations, or None (no target:
    repeats are taken for copies)."""
    if target is None:
        return None
    features = feature_columns(df, kinds, target.column)
    if not features:
        return None
    labelled = df[df[target.column].notna()]  # prepare_data drops the rows without a target first
    return repeats_are_observations(*row_hashes(labelled[features], labelled[target.column]))


def data_warnings(
    df: pd.DataFrame,
    kinds: dict[str, str],
    target: TargetSummary | None,
    duplicates: int,
    nunique: pd.Series,
    requested: str = "auto",
) -> tuple[list[DataWarning], list[str]]:
    """Every warning about the data and the recommendations that follow from them (`requested`: the task type the
    caller asked for)."""
    out = _column_warnings(df, kinds, target, nunique)
    series = _time_series_warnings(df, kinds, target.column if target else None, nunique)
    variants = _variant_warnings(df, kinds, target)
    out += series + variants + _task_guess_warning(df, target, requested) + _copy_warning(df, kinds, target)
    out = _target_identifier_warning(df, kinds, target, nunique) + out
    recs: list[str] = []
    codes = {w.code for w in out}
    dropped = [w.column for w in out if w.code in DROP_KINDS]
    if dropped:
        recs.append(f"Drop {dropped}: identifiers and constants carry no signal (prepare_data does this by default).")
    if series:
        recs.append(
            f"Split in time order (split_strategy='time', time_column={series[0].column!r}) so that the test rows "
            "come after every training row, as they will when the model forecasts."
        )
    if variants:
        recs.append(
            "Values that differ only in case or spaces are told apart by the model: if they mean the same, write "
            "them one way in the file (e.g. stripped and lowercased) and analyze it again."
        )
    if "mostly_missing" in codes:
        recs.append("Columns mostly missing: drop them or impute with a constant and keep a missing-indicator.")
    if "high_cardinality" in codes:
        recs.append(
            "High-cardinality categoricals: use categorical_encoding='ordinal' or 'frequency' for them "
            "(prepare_data does this above the one-hot limit)."
        )
    why = _repeats_are_observations(df, kinds, target) if duplicates else None
    if why:
        share = f"{duplicates / len(df):.1%}"
        message = f"{duplicates} duplicate rows ({share}): {why}, so repeated rows are observations, not copies."
        out.append(DataWarning(severity="info", code="duplicates", message=message))
        recs.append(
            "Keep the repeated rows: dropping them would keep one row per label and cell and erase the label "
            "frequencies (prepare_data keeps them with drop_duplicates='auto', the default)."
        )
    elif duplicates:
        n = len(df)
        out.append(
            DataWarning(
                severity="warning" if duplicates / n > 0.01 else "info",
                code="duplicates",
                message=f"{duplicates} duplicate rows ({duplicates / n:.1%}).",
            )
        )
        recs.append("Drop duplicate rows before splitting so no row lands in both train and test (default).")
    if df.isna().any().any():
        recs.append(
            "Impute missing values with statistics of the training split only (prepare_data default: the mean, plus "
            "a column marking where a number was missing; a missing category is a category of its own)."
        )
    target_warns, target_recs = target_warnings(target)
    return out + target_warns, recs + target_recs


def target_warnings(target: TargetSummary | None) -> tuple[list[DataWarning], list[str]]:
    """Warnings about the target alone: missing values, imbalance, classes too small to stratify."""
    out: list[DataWarning] = []
    recs: list[str] = []
    if target is not None:
        if target.missing:
            out.append(
                DataWarning(
                    severity="warning",
                    code="target_missing",
                    column=target.column,
                    message=f"{target.missing} rows have no target; they will be dropped.",
                )
            )
        if target.imbalance_ratio is not None and target.imbalance_ratio >= IMBALANCE_RATIO:
            sev: Severity = "high" if target.imbalance_ratio >= 10 else "warning"
            out.append(
                DataWarning(
                    severity=sev,
                    code="imbalance",
                    column=target.column,
                    message=f"Classes are imbalanced (ratio {target.imbalance_ratio:.1f}:1).",
                )
            )
            recs.append(
                "Imbalanced classes: judge by balanced accuracy / F1, not accuracy; train applies "
                f"class_weight='balanced' automatically at ratio >= {IMBALANCE_RATIO:g}."
            )
        if target.class_counts and min(target.class_counts.values()) < MIN_ROWS_PER_CLASS:
            small = [k for k, v in target.class_counts.items() if v < MIN_ROWS_PER_CLASS]
            out.append(
                DataWarning(
                    severity="high",
                    code="too_few_per_class",
                    column=target.column,
                    message=f"Classes {small[:10]} have fewer than {MIN_ROWS_PER_CLASS} rows: a "
                    "stratified 70/15/15 split cannot put them in every split.",
                )
            )
            recs.append("Merge or drop the tiny classes, or collect more rows for them.")
    return out, recs
