"""Phase 1a — `analyze_data`: profile a dataset and start (or reuse) a run.

Shape, per-column kind and statistics, duplicates, a target summary with the task-type guess,
warnings with severity (identifiers, constants, missing, high cardinality, leakage suspects,
imbalance, classes too small to stratify) and concrete cleaning recommendations. Stores
`ml-expert/data-analysis`.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from ml_expert.memory.errors import InvalidInputError, NotFoundError
from ml_expert.memory.store import check_name
from ml_expert.tools import runs
from ml_expert.tools.core.lazy import lazy_import
from ml_expert.tools.core.scoring import IMBALANCE_RATIO
from ml_expert.tools.core.tasks import is_classification
from ml_expert.tools.data import modalities
from ml_expert.tools.data.io import check_size, read_table
from ml_expert.tools.data.modalities import DataOptions
from ml_expert.tools.data.profiling import (
    HIGH_CARDINALITY,
    guess_task,
    infer_kind,
    is_string_like,
    repeats_are_observations,
    row_hashes,
)
from ml_expert.tools.workspace import DEFAULT_SEED, Workspace

np = lazy_import("numpy")  # loads with the first data tool call, not at server start
pd = lazy_import("pandas")  # loads with the first data tool call, not at server start

MAX_DETAIL_COLUMNS = 40
LEAKAGE_SAMPLE = 5000
MAX_CLASSES_SHOWN = 30
MIN_ROWS_PER_CLASS = 7  # a 70/15/15 stratified split needs about this many rows in every class

Severity = Literal["info", "warning", "high"]


class ColumnProfile(BaseModel):
    name: str
    dtype: str
    kind: str = Field(description="numeric, categorical, boolean, datetime, text, identifier, constant or empty.")
    missing: int
    missing_share: float
    unique: int
    stats: dict[str, float] | None = Field(None, description="mean, std, min, 25%, 50%, 75%, max (numeric).")
    top_values: list[dict[str, Any]] | None = Field(None, description="Most frequent values with counts.")


class TargetSummary(BaseModel):
    column: str
    task_type: Literal["binary", "multiclass", "regression"]
    missing: int
    n_classes: int | None = None
    class_counts: dict[str, int] | None = Field(None, description=f"Up to {MAX_CLASSES_SHOWN} classes, largest first.")
    imbalance_ratio: float | None = Field(None, description="Largest class count / smallest class count.")
    distribution: dict[str, float] | None = Field(None, description="Regression target statistics.")


class DataWarning(BaseModel):
    severity: Severity
    code: str
    column: str | None = None
    message: str


class DataAnalysis(BaseModel):
    """Profile of a dataset; `run_id` is the handle for the next phases."""

    run_id: str
    path: str
    modality: str = "tabular"
    modality_summary: dict[str, Any] | None = Field(None, description="Images / sequences / text: what was found.")
    data_options: dict[str, Any] | None = Field(None, description="How non-tabular data was read (reused by prepare).")
    rows: int
    columns: int
    memory_bytes: int
    duplicate_rows: int
    kinds: dict[str, int] = Field(description="How many columns of each kind.")
    column_profiles: list[ColumnProfile]
    columns_omitted: int = Field(0, description="Columns not detailed here (wide data); see kinds for counts.")
    target: TargetSummary | None
    task_type: Literal["binary", "multiclass", "regression", "clustering"]
    warnings: list[DataWarning]
    recommendations: list[str]
    seconds: float
    next_step: str


def _numeric_stats(desc: pd.DataFrame, col: str) -> dict[str, float]:
    return {k: float(v) for k, v in desc[col].items() if k != "count" and pd.notna(v)}


def _top_values(s: pd.Series, n: int = 5) -> list[dict[str, Any]]:
    counts = s.value_counts(dropna=True).head(n)
    return [{"value": str(k)[:80], "count": int(v)} for k, v in counts.items()]


def _codes(x: pd.Series) -> np.ndarray:
    """A feature as small integer bins: 64 quantile bins for numbers, codes for categories; missing = own bin."""
    if pd.api.types.is_numeric_dtype(x.dtype):
        values = x.to_numpy(dtype=float)
        edges = np.unique(np.nanquantile(values, np.linspace(0, 1, 65)[1:-1])) if np.isfinite(values).any() else []
        codes = np.searchsorted(edges, values)
        codes[np.isnan(values)] = len(edges) + 1
        return codes
    return x.astype("category").cat.codes.to_numpy().astype(np.int64) + 1


def _holdout_score(codes: np.ndarray, y: np.ndarray, classify: bool, train: np.ndarray) -> float:
    """How well the feature alone predicts y on held-out rows: bin -> majority class (accuracy) or mean (R²)."""
    test = ~train
    n_bins = int(codes.max()) + 1
    if classify:
        table = np.zeros((n_bins, int(y.max()) + 1))
        np.add.at(table, (codes[train], y[train]), 1)
        return float(np.mean(table.argmax(axis=1)[codes[test]] == y[test]))
    sums = np.bincount(codes[train], weights=y[train], minlength=n_bins)
    counts = np.bincount(codes[train], minlength=n_bins)
    means = np.where(counts > 0, sums / np.maximum(counts, 1), y[train].mean())
    residual = np.sum((y[test] - means[codes[test]]) ** 2)
    return float(1 - residual / max(np.sum((y[test] - y[test].mean()) ** 2), 1e-12))


def _leakage_suspects(df: pd.DataFrame, target: str, task: str, kinds: dict[str, str]) -> list[tuple[str, float]]:
    """Features that alone predict the target almost perfectly on held-out rows (a leakage smell).

    Each feature is binned (quantiles / categories); the bin -> class (or mean) map is learned on a
    random half of a sample and scored on the other half. NumPy only, so wide and long data stay fast.
    """
    data = df[df[target].notna()]
    if len(data) > LEAKAGE_SAMPLE:
        data = data.sample(LEAKAGE_SAMPLE, random_state=DEFAULT_SEED)
    if len(data) < 30:
        return []
    classify = is_classification(task)
    if classify:
        labels = data[target].astype(str)
        if labels.value_counts().min() < 3:
            return []
        y = labels.astype("category").cat.codes.to_numpy().astype(np.int64)
    else:
        y = data[target].to_numpy(dtype=float)
    train = np.random.default_rng(DEFAULT_SEED).random(len(data)) < 0.5
    baseline = float(np.mean(y[~train] == np.bincount(y[train]).argmax())) if classify else 0.0
    suspects = []
    for col, kind in kinds.items():
        if col == target or kind not in ("numeric", "categorical", "boolean"):
            continue
        codes = _codes(data[col])
        if codes.max() > 256:  # a near-unique categorical: reported as high cardinality instead
            continue
        score = _holdout_score(codes, y, classify, train)
        if score >= 0.98 and (not classify or score - baseline >= 0.05):
            suspects.append((col, score))
    return suspects


def _target_summary(df: pd.DataFrame, target: str) -> TargetSummary:
    y = df[target]
    missing = int(y.isna().sum())
    if missing == len(y):
        raise InvalidInputError(
            f"Target column {target!r} is entirely missing ({missing} empty values). Pick a column with values."
        )
    task = guess_task(y)
    if not is_classification(task):
        return TargetSummary(
            column=target, task_type=task, missing=missing, distribution=_numeric_stats(y.describe().to_frame(), target)
        )
    counts = y.dropna().astype(str).value_counts()
    return TargetSummary(
        column=target,
        task_type=task,
        missing=missing,
        n_classes=len(counts),
        class_counts={str(k): int(v) for k, v in counts.head(MAX_CLASSES_SHOWN).items()},
        imbalance_ratio=float(counts.iloc[0] / counts.iloc[-1]),
    )


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


def _repeats_are_observations(df: pd.DataFrame, kinds: dict[str, str], target: TargetSummary | None) -> bool:
    """prepare_data's test, on the columns it keeps as features (no target: repeats are taken for copies)."""
    if target is None:
        return False
    features = [c for c in df.columns if kinds[c] not in ("identifier", "constant", "empty") and c != target.column]
    if not features:
        return False
    return repeats_are_observations(*row_hashes(df[features], df[target.column]))


def _warnings(
    df: pd.DataFrame, kinds: dict[str, str], target: TargetSummary | None, duplicates: int, nunique: pd.Series
) -> tuple[list[DataWarning], list[str]]:
    """Every warning about the data and the recommendations that follow from them."""
    out = _column_warnings(df, kinds, target, nunique)
    recs: list[str] = []
    codes = {w.code for w in out}
    dropped = [w.column for w in out if w.code in ("identifier", "constant", "empty")]
    if dropped:
        recs.append(f"Drop {dropped}: identifiers and constants carry no signal (prepare_data does this by default).")
    if "mostly_missing" in codes:
        recs.append("Columns mostly missing: drop them or impute with a constant and keep a missing-indicator.")
    if "high_cardinality" in codes:
        recs.append(
            "High-cardinality categoricals: use categorical_encoding='ordinal' or 'frequency' for them "
            "(prepare_data does this above the one-hot limit)."
        )
    if duplicates and _repeats_are_observations(df, kinds, target):
        message = (
            f"{duplicates} duplicate rows ({duplicates / len(df):.1%}): the columns take few values, so repeated rows "
            "are observations, not copies."
        )
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
            "Impute missing values with statistics of the training split only (prepare_data default: mean / "
            "most frequent)."
        )
    target_warns, target_recs = _target_warnings(target)
    return out + target_warns, recs + target_recs


def _target_warnings(target: TargetSummary | None) -> tuple[list[DataWarning], list[str]]:
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


def analyze_data(
    ws: Workspace,
    path: Annotated[str, Field(description="Dataset file inside the workspace, e.g. 'data/train.csv'.")],
    target: Annotated[
        str | None, Field(description="Target column to predict, e.g. 'price'; omit for clustering.")
    ] = None,
    run_id: Annotated[str | None, Field(description="Reuse this run instead of starting a new one.")] = None,
    modality: Annotated[
        Literal["tabular", "image", "sequence", "text"] | None,
        Field(description="Data kind; detected when omitted (folder/.npz of images, time series, text)."),
    ] = None,
    data_options: Annotated[DataOptions | None, Field(description="Reading options for non-tabular data.")] = None,
    namespace: runs.Namespace = "default",
) -> DataAnalysis:
    """Profile a dataset (CSV/TSV/Parquet/JSON lines): columns, kinds, missing, stats, target, warnings.

    Starts a run; call prepare_data(run_id=...) next.
    """
    started = time.perf_counter()
    file = ws.resolve_path(path, kind="dataset")
    check_size(file, ws.settings.max_file_bytes)
    check_name("namespace", namespace)
    if run_id is not None:
        runs.get_run(ws, run_id)  # a clear error before any work
    options = DataOptions.model_validate(data_options or {}).model_dump()
    kind = modalities.detect_modality(file, modality, options)
    if kind != "tabular":
        return _analyze_other(ws, file, kind, target, options, run_id, namespace, started)
    df = read_table(file)
    if target is not None:
        check_target_column(df, target, file.name)
    return _analyze_table(ws, file, df, target, run_id, namespace, started)


def _analyze_table(
    ws: Workspace,
    file: Path,
    df: pd.DataFrame,
    target: str | None,
    run_id: str | None,
    namespace: str,
    started: float,
) -> DataAnalysis:
    """analyze_data for a table: kinds, statistics, warnings; the run is started only once all of it worked."""
    nunique = df.nunique()  # once: the most expensive statistic on long data
    kinds = {c: infer_kind(df[c], len(df), int(nunique[c])) for c in df.columns}
    target_summary = _target_summary(df, target) if target else None
    duplicates = int(pd.util.hash_pandas_object(df, index=False).duplicated().sum())
    warns, recs = _warnings(df, kinds, target_summary, duplicates, nunique)
    for col, count in df.attrs.get("infinite", {}).items():
        message = f"{col!r} held {count} infinite values (±inf); they are treated as missing values."
        warns.append(DataWarning(severity="warning", code="infinite_values", column=col, message=message))
    if target_summary is not None:
        _add_leakage_warnings(df, target_summary, kinds, warns, recs)
    profiles = _profiles(df, kinds, nunique, order_first={target, *(w.column for w in warns if w.column)})
    kind_counts = dict(Counter(kinds.values()))

    rel = ws.relative(file)
    run_id = _start_run(ws, rel, target, run_id, namespace)
    task_type = target_summary.task_type if target_summary else "clustering"
    result = DataAnalysis(
        run_id=run_id,
        path=rel,
        rows=len(df),
        columns=df.shape[1],
        memory_bytes=int(df.memory_usage(deep=True).sum()),
        duplicate_rows=duplicates,
        kinds=kind_counts,
        column_profiles=profiles,
        columns_omitted=len(df.columns) - len(profiles),
        target=target_summary,
        task_type=task_type,
        warnings=warns,
        recommendations=recs,
        seconds=round(time.perf_counter() - started, 3),
        next_step=f"Call prepare_data(run_id='{run_id}') to clean, split and scale the data."
        if target
        else f"Call prepare_data(run_id='{run_id}', target=<the column to predict>) to clean, split and scale it.",
    )
    runs.record_phase(ws, run_id, "analyze", {"data-analysis": result})
    return result


def check_target_column(df: pd.DataFrame, target: str, name: str) -> None:
    """The target must be a column and must not hold infinite values (read as missing by read_table)."""
    if target not in df.columns:
        raise NotFoundError(
            f"Column {target!r} not in {name}. Columns: {list(df.columns)[:50]}. Pass target= one of them."
        )
    infinite = df.attrs.get("infinite", {}).get(target)
    if infinite:
        raise InvalidInputError(
            f"Target {target!r} holds {infinite} infinite values (±inf); a model cannot learn to predict them. "
            "Fix those rows or drop them from the file, then call again."
        )


def _add_leakage_warnings(
    df: pd.DataFrame, target: TargetSummary, kinds: dict[str, str], warns: list[DataWarning], recs: list[str]
) -> None:
    suspects = _leakage_suspects(df, target.column, target.task_type, kinds)
    for col, score in suspects:
        warns.append(
            DataWarning(
                severity="high",
                code="leakage_suspect",
                column=col,
                message=f"{col!r} alone predicts {target.column!r} with score {score:.3f}: check that "
                "it is known at prediction time, else drop it.",
            )
        )
    if suspects:
        recs.append(
            "Leakage suspects: pass them in drop_columns to prepare_data unless they are truly available "
            "when predicting."
        )


def _profiles(
    df: pd.DataFrame, kinds: dict[str, str], nunique: pd.Series, order_first: set[str | None]
) -> list[ColumnProfile]:
    """Profiles of at most MAX_DETAIL_COLUMNS columns: the target and warned columns first."""
    detail = sorted(df.columns, key=lambda c: c not in order_first)[:MAX_DETAIL_COLUMNS]
    numeric = [
        c for c in detail if kinds[c] in ("numeric", "identifier") and pd.api.types.is_numeric_dtype(df[c].dtype)
    ]
    desc = df[numeric].describe() if numeric else pd.DataFrame()
    missing = df[detail].isna().sum()
    return [
        ColumnProfile(
            name=col,
            dtype=str(df[col].dtype),
            kind=kinds[col],
            missing=int(missing[col]),
            missing_share=round(float(missing[col]) / len(df), 4),
            unique=int(nunique[col]),
            stats=_numeric_stats(desc, col) if col in desc.columns else None,
            top_values=_top_values(df[col]) if is_string_like(df[col]) or kinds[col] == "boolean" else None,
        )
        for col in detail
    ]


def _start_run(ws: Workspace, rel: str, target: str | None, run_id: str | None, namespace: str) -> str:
    if run_id is None:
        return runs.create_run(ws, dataset=rel, target=target, namespace=namespace)
    runs.get_run(ws, run_id)
    ws.runs.set_source(run_id, dataset=rel, target=target)
    return run_id


def _analyze_other(
    ws: Workspace,
    file: Any,
    kind: str,
    target: str | None,
    options: dict[str, Any],
    run_id: str | None,
    namespace: str,
    started: float,
) -> DataAnalysis:
    """analyze_data for images, sequences and text."""
    loaded = modalities.load(file, kind, target, options)
    summ = modalities.summary(loaded, kind)
    y = pd.Series(loaded["y"])
    task = summ["task_type"]
    target_summary = TargetSummary(
        column=target or "y",
        task_type=task,
        missing=int(y.isna().sum()),
        n_classes=len(summ["class_counts"]) if "class_counts" in summ else None,
        class_counts=summ.get("class_counts"),
        imbalance_ratio=summ.get("imbalance_ratio"),
        distribution=_numeric_stats(y.describe().to_frame(), y.name or 0) if task == "regression" else None,
    )
    warns, recs = _target_warnings(target_summary)
    rel = ws.relative(file)
    run_id = _start_run(ws, rel, target, run_id, namespace)
    result = DataAnalysis(
        run_id=run_id,
        path=rel,
        modality=kind,
        modality_summary=summ,
        data_options=options,
        rows=len(loaded["X"]),
        columns=int(np.prod(loaded["X"].shape[1:])) if loaded["X"].ndim > 1 else 1,
        memory_bytes=int(loaded["X"].nbytes),
        duplicate_rows=0,
        kinds={kind: 1},
        column_profiles=[],
        target=target_summary,
        task_type=task,
        warnings=warns,
        recommendations=recs,
        seconds=round(time.perf_counter() - started, 3),
        next_step=f"Call prepare_data(run_id='{run_id}') to split and scale the {kind} data.",
    )
    runs.record_phase(ws, run_id, "analyze", {"data-analysis": result})
    return result
