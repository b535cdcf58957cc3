"""Phase 1a — `analyze_data`: profile a dataset and start (or reuse) a run.

Shape, per-column kind and statistics, duplicates, a target summary with the task-type guess,
warnings with severity and concrete cleaning recommendations (`findings`). Stores `ml-expert/data-analysis`.
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
from ml_expert.tools.artifacts import check_data_kept
from ml_expert.tools.core.lazy import lazy_import
from ml_expert.tools.core.tasks import is_classification
from ml_expert.tools.data import modalities
from ml_expert.tools.data.findings import DataWarning, data_warnings, duplicate_rows, target_warnings
from ml_expert.tools.data.io import check_size, read_table
from ml_expert.tools.data.leakage import add_leakage_warnings
from ml_expert.tools.data.modalities import DataOptions
from ml_expert.tools.data.profiling import TaskChoice, choose_task, infer_kind, is_string_like
from ml_expert.tools.workspace import Workspace

np = lazy_import("numpy")  # loads with the first data tool call, not at server start
pd = lazy_import("pandas")  # loads with the first data tool call, not at server start

MAX_DETAIL_COLUMNS = 40
MAX_CLASSES_SHOWN = 30


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
    duplicate_rows: int = Field(
        description="Rows that repeat an earlier row on every column prepare_data keeps (identifiers and constants "
        "aside); the duplicates warning says whether they are copies or observations."
    )
    kinds: dict[str, int] = Field(description="How many columns of each kind.")
    column_profiles: list[ColumnProfile]
    columns_omitted: int = Field(0, description="Columns not detailed here (wide data); see kinds for counts.")
    target: TargetSummary | None
    task_type: Literal["binary", "multiclass", "regression", "clustering"]
    task_requested: TaskChoice = Field(
        "auto", description="The task type the caller asked for (prepare_data keeps it); auto: the guess."
    )
    warnings: list[DataWarning]
    recommendations: list[str]
    seconds: float
    next_step: str


def _numeric_stats(desc: pd.DataFrame, col: str) -> dict[str, float]:
    return {k: float(v) for k, v in desc[col].items() if k != "count" and pd.notna(v)}


def _top_values(s: pd.Series, n: int = 5) -> list[dict[str, Any]]:
    counts = s.value_counts(dropna=True).head(n)
    return [{"value": str(k)[:80], "count": int(v)} for k, v in counts.items()]


def _target_summary(df: pd.DataFrame, target: str, requested: TaskChoice) -> TargetSummary:
    y = df[target]
    missing = int(y.isna().sum())
    if missing == len(y):
        raise InvalidInputError(
            f"Target column {target!r} is entirely missing ({missing} empty values). Pick a column with values."
        )
    task = choose_task(y, requested)
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


def analyze_data(
    ws: Workspace,
    path: Annotated[str, Field(description="Dataset file inside the workspace, e.g. 'data/train.csv'.")],
    target: Annotated[
        str | None, Field(description="Target column to predict, e.g. 'price'; omit to profile only.")
    ] = None,
    run_id: Annotated[str | None, Field(description="Reuse this run instead of starting a new one.")] = None,
    modality: Annotated[
        Literal["tabular", "image", "sequence", "text"] | None,
        Field(description="Data kind; detected when omitted (folder/.npz of images, time series, text)."),
    ] = None,
    data_options: Annotated[DataOptions | None, Field(description="Reading options for non-tabular data.")] = None,
    task_type: Annotated[
        TaskChoice,
        Field(description="Overrules the task guessed from the target (auto); prepare_data keeps it."),
    ] = "auto",
    namespace: runs.Namespace = "default",
) -> DataAnalysis:
    """Profile a dataset (CSV/TSV/Parquet/JSON lines/.xlsx): columns, kinds, missing, stats, target, warnings.

    Starts a run; call prepare_data(run_id=...) next.
    """
    started = time.perf_counter()
    file = ws.resolve_path(path, kind="dataset")
    check_size(file, ws.settings.max_file_bytes)
    check_name("namespace", namespace)
    if run_id is not None:
        check_data_kept(ws, run_id, "analyze_data")  # also a clear error for an unknown run, before any work
    options = DataOptions.model_validate(data_options or {}).model_dump()
    kind = modalities.detect_modality(file, modality, options)
    if kind != "tabular":
        return _analyze_other(ws, file, kind, target, options, run_id, namespace, started, task_type)
    if task_type != "auto" and target is None:
        raise InvalidInputError(
            f"task_type={task_type!r} needs the column to predict: pass target= as well (without a target, "
            "the data is clustered)."
        )
    df = read_table(file, target)
    if target is not None:
        check_target_column(df, target, file.name)
    return _analyze_table(ws, file, df, target, run_id, namespace, started, task_type)


def _analyze_table(
    ws: Workspace,
    file: Path,
    df: pd.DataFrame,
    target: str | None,
    run_id: str | None,
    namespace: str,
    started: float,
    requested: TaskChoice = "auto",
) -> DataAnalysis:
    """analyze_data for a table: kinds, statistics, warnings; the run is started only once all of it worked."""
    nunique = df.nunique()  # once: the most expensive statistic on long data
    kinds = {c: infer_kind(df[c], len(df), int(nunique[c])) for c in df.columns}
    target_summary = _target_summary(df, target, requested) if target else None
    duplicates = duplicate_rows(df, kinds, target)
    warns, recs = data_warnings(df, kinds, target_summary, duplicates, nunique, requested)
    for col, count in df.attrs.get("infinite", {}).items():
        message = f"{col!r} held {count} infinite values (±inf); they are treated as missing values."
        warns.append(DataWarning(severity="warning", code="infinite_values", column=col, message=message))
    if target_summary is not None:
        add_leakage_warnings(df, target_summary, kinds, warns, recs)
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
        task_requested=requested,
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
    requested: TaskChoice = "auto",
) -> DataAnalysis:
    """analyze_data for images, sequences and text."""
    loaded = modalities.load(file, kind, target, options)
    summ = modalities.summary(loaded, kind, requested)
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
    warns, recs = target_warnings(target_summary)
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
        task_requested=requested,
        warnings=warns,
        recommendations=recs,
        seconds=round(time.perf_counter() - started, 3),
        next_step=f"Call prepare_data(run_id='{run_id}') to split and scale the {kind} data.",
    )
    runs.record_phase(ws, run_id, "analyze", {"data-analysis": result})
    return result
