"""Phase 1b — `prepare_data`: clean, split, encode and scale without leakage.

Unlike the reference recipe, every fitted statistic (imputer, encoders, scaler, outlier
thresholds) comes from the training split only, as one scikit-learn `ColumnTransformer` saved with
the run; outliers are removed from training rows only; every categorical column has its own
encoder. Saves `data/X_{train,val,test}.npy`, `data/y_*.npy`, `preprocessor.joblib`,
`schema.json`, the feature names and the label mapping. Stores `ml-expert/prepared-data`.
"""

from __future__ import annotations

import json
import time
from typing import Annotated, Any, Literal

import joblib
import numpy as np
import pandas as pd
from pydantic import BaseModel, Field

from ml_expert.tools import runs
from ml_expert.tools.data_io import read_table
from ml_expert.tools.encoding import encoder_pipeline, outlier_mask
from ml_expert.tools.errors import ConflictError, InvalidInputError, NotFoundError
from ml_expert.tools.modalities import DataOptions, detect_modality
from ml_expert.tools.profiling import HIGH_CARDINALITY, guess_task, infer_kind, is_classification
from ml_expert.tools.splitting import split_indices
from ml_expert.tools.workspace import DEFAULT_SEED, Workspace, write_json

DROP_KINDS = ("identifier", "constant", "empty")


class CleaningStep(BaseModel):
    action: str
    rows: int = 0
    columns: list[str] = Field(default_factory=list)
    reason: str


class PreparedData(BaseModel):
    """What prepare_data produced; the arrays live in the run folder."""

    run_id: str
    modality: str = "tabular"
    input_shape: list[int] | None = Field(None, description="Shape of one model input (images, sequences).")
    task_type: Literal["binary", "multiclass", "regression", "clustering"]
    target: str | None
    splits: dict[str, int] = Field(description="Rows per split (train/val/test).")
    class_distribution: dict[str, dict[str, int]] | None = Field(None, description="Split -> class -> rows.")
    features_in: list[str] = Field(description="Raw input columns the model uses (the inference schema).")
    features_out: int = Field(description="Number of features after encoding.")
    feature_names: list[str] = Field(description="First 100 feature names after encoding.")
    label_mapping: dict[str, str] | None = Field(None, description="Encoded label -> original label.")
    dropped_columns: dict[str, str] = Field(description="Column -> why it was dropped.")
    cleaning_log: list[CleaningStep]
    options: dict[str, Any]
    warnings: list[str]
    artifacts: dict[str, str]
    next_step: str


def load_prepared(ws: Workspace, run_id: str) -> dict[str, Any]:
    """The prepare_data result of a run (from its folder), or a clear error to run it first."""
    runs.get_run(ws, run_id)
    path = ws.run_dir(run_id) / "prepared.json"
    if not path.exists():
        raise ConflictError(f"Run {run_id!r} has no prepared data yet. Call prepare_data(run_id='{run_id}') first.")
    return json.loads(path.read_text())


def load_split(ws: Workspace, run_id: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    data = ws.run_dir(run_id) / "data"
    return np.load(data / f"X_{split}.npy"), np.load(data / f"y_{split}.npy")


def prepare_data(
    ws: Workspace,
    run_id: Annotated[str | None, Field(description="Run from analyze_data; its dataset and target are used.")] = None,
    path: Annotated[str | None, Field(description="Dataset file (starts a new run when run_id is omitted).")] = None,
    target: Annotated[str | None, Field(description="Target column; defaults to the run's target.")] = None,
    impute: Annotated[
        Literal["mean", "median", "constant", "drop"],
        Field(description="Numeric missing values: mean (default), median, constant 0, or drop rows."),
    ] = "mean",
    drop_duplicates: Annotated[bool, Field(description="Drop exact duplicate rows before splitting.")] = True,
    outliers: Annotated[
        Literal["zscore", "iqr", "none"], Field(description="Outlier rule, applied to training rows only.")
    ] = "zscore",
    outlier_threshold: Annotated[
        float, Field(description="z-score (default 3) or IQR multiple (use 1.5).", gt=0)
    ] = 3.0,
    max_outlier_share: Annotated[
        float, Field(description="Never drop more than this share of training rows as outliers.", ge=0, le=0.5)
    ] = 0.05,
    categorical_encoding: Annotated[
        Literal["auto", "onehot", "ordinal"],
        Field(description="auto: one-hot up to one_hot_max_categories, else high_cardinality_encoding."),
    ] = "auto",
    one_hot_max_categories: Annotated[
        int, Field(description="One-hot limit for auto.", ge=2, le=1000)
    ] = HIGH_CARDINALITY,
    high_cardinality_encoding: Annotated[
        Literal["ordinal", "frequency"], Field(description="Encoding above the one-hot limit.")
    ] = "ordinal",
    scaling: Annotated[
        Literal["standard", "minmax", "robust", "none"], Field(description="Feature scaling.")
    ] = "standard",
    drop_identifiers: Annotated[bool, Field(description="Drop identifier, constant and empty columns.")] = True,
    drop_columns: Annotated[list[str] | None, Field(description="Columns to drop, e.g. leakage suspects.")] = None,
    keep_columns: Annotated[list[str] | None, Field(description="Columns to keep even if they look like ids.")] = None,
    split: Annotated[tuple[float, float, float], Field(description="Train/validation/test shares; must sum to 1.")] = (
        0.7,
        0.15,
        0.15,
    ),
    split_strategy: Annotated[
        Literal["random", "group", "time"],
        Field(
            description="random (stratified for classification), group (needs group_column), time (needs "
            "time_column; oldest rows train, newest test)."
        ),
    ] = "random",
    group_column: Annotated[str | None, Field(description="Rows of one group stay in one split.")] = None,
    time_column: Annotated[str | None, Field(description="Column that orders rows in time.")] = None,
    random_state: Annotated[int, Field(description="Seed for the split.")] = DEFAULT_SEED,
    modality: Annotated[
        Literal["tabular", "image", "sequence", "text"] | None,
        Field(description="Data kind; default: what analyze_data found."),
    ] = None,
    namespace: runs.Namespace = "default",
) -> PreparedData:
    """Clean, split (70/15/15), encode and scale a dataset, fitting only on the training split.

    Call recommend_architecture(run_id=...) next.
    """
    options = {
        k: v for k, v in locals().items() if k not in ("ws", "run_id", "path", "target", "namespace", "modality")
    }
    if abs(sum(split) - 1) > 1e-6 or min(split) <= 0:
        raise InvalidInputError(
            f"split must be three positive shares summing to 1 (train, validation, test); received {list(split)} "
            f"(sum {sum(split):.3f}). Use e.g. [0.7, 0.15, 0.15]."
        )
    if run_id is None and path is None:
        raise InvalidInputError("Pass run_id (from analyze_data) or path (a dataset file).")
    if run_id is not None:
        info = runs.get_run(ws, run_id)
        path = path or info.dataset
        target = target or info.target
        namespace = info.namespace
    if target is None:
        raise InvalidInputError(
            "prepare_data needs target= (the column to predict). Clustering data has no target: "
            "pass target and use architecture 'kmeans' only with labelled evaluation."
        )
    file = ws.resolve_path(path, kind="dataset")
    analysis = (
        (ws.store.get_value(runs.memory_key(f"runs/{run_id}/data-analysis"), namespace=namespace) or {})
        if run_id
        else {}
    )
    read_options = analysis.get("data_options") or DataOptions().model_dump()  # as analyze_data read the data
    kind = detect_modality(file, modality or analysis.get("modality"), read_options)
    if kind != "tabular":
        return _prepare_other(ws, file, kind, target, read_options, split, random_state, run_id, namespace)
    df = read_table(file)
    if target not in df.columns:
        raise NotFoundError(
            f"Column {target!r} not in {file.name}. Columns: {list(df.columns)[:50]}. Pass target= one of them."
        )
    for name, col in (("group_column", group_column), ("time_column", time_column)):
        if col is not None and col not in df.columns:
            raise NotFoundError(f"{name} {col!r} not in {file.name}. Columns: {list(df.columns)[:50]}.")
    log: list[CleaningStep] = []
    warns: list[str] = []

    missing_target = int(df[target].isna().sum())
    if missing_target == len(df):
        raise InvalidInputError(f"Target column {target!r} is entirely missing. Pick a column with values.")
    if missing_target:
        df = df[df[target].notna()]
        log.append(CleaningStep(action="drop_rows", rows=missing_target, reason=f"target {target!r} missing"))
    task = guess_task(df[target])
    if df[target].nunique() < 2:
        raise InvalidInputError(
            f"Target {target!r} has a single value ({df[target].iloc[0]!r}); there is nothing to learn. "
            "Pick another target or add rows of other classes."
        )

    kinds = {c: infer_kind(df[c], len(df)) for c in df.columns if c != target}
    dropped: dict[str, str] = {}
    for col in drop_columns or []:
        if col not in df.columns:
            raise NotFoundError(f"drop_columns names {col!r}, which is not a column. Columns: {list(df.columns)[:50]}.")
        dropped[col] = "requested"
    keep = set(keep_columns or [])
    for col, kind in kinds.items():
        if col in dropped or col in keep:
            continue
        if drop_identifiers and kind in DROP_KINDS:
            dropped[col] = kind
        elif kind == "text":
            dropped[col] = "free text (train a text model for it; see modality='text')"
    for col in (group_column, time_column):
        if col and col not in dropped and kinds.get(col) in ("identifier", "datetime"):
            dropped.setdefault(col, "split column")
    if dropped:
        log.append(
            CleaningStep(
                action="drop_columns", columns=list(dropped), reason="; ".join(f"{c}: {r}" for c, r in dropped.items())
            )
        )
    features = [c for c in kinds if c not in dropped]
    schema = {
        "target": target,
        "task_type": task,
        "columns": [
            {"name": c, "kind": "categorical" if kinds[c] in (*DROP_KINDS, "text") else kinds[c]} for c in features
        ],
    }
    for col in schema["columns"]:
        if col["kind"] == "categorical":
            col["categories"] = sorted(map(str, df[col["name"]].dropna().unique()))[:200]
    from ml_expert.tools.transformers import SchemaError, coerce_frame  # scikit-learn: not on the server's start path

    try:
        X = coerce_frame(df, schema)
    except SchemaError as exc:
        raise InvalidInputError(str(exc)) from exc

    if drop_duplicates:
        dup = pd.util.hash_pandas_object(pd.concat([X, df[[target]]], axis=1), index=False).duplicated().to_numpy()
        if dup.any():
            X, df = X[~dup], df[~dup]
            log.append(CleaningStep(action="drop_rows", rows=int(dup.sum()), reason="duplicate rows"))
    if impute == "drop":
        na = X.isna().any(axis=1).to_numpy()
        if na.any():
            X, df = X[~na], df[~na]
            log.append(CleaningStep(action="drop_rows", rows=int(na.sum()), reason="missing feature values"))
    if len(X) < 10:
        raise InvalidInputError(
            f"Only {len(X)} rows remain after cleaning ({[s.action for s in log]}); at least 10 "
            "are needed. Use impute='mean' instead of 'drop', or keep duplicates."
        )

    y_raw = df[target]
    classes: list[str] | None = None
    if is_classification(task):
        y_str = y_raw.astype(str)
        classes = sorted(y_str.unique(), key=lambda v: (len(v), v) if y_raw.dtype.kind in "iuf" else (0, v))
        index = {c: i for i, c in enumerate(classes)}
        y = y_str.map(index).to_numpy(dtype=np.int64)
    else:
        y = y_raw.astype(float).to_numpy()
    groups = df[group_column].to_numpy() if split_strategy == "group" else None
    order = df[time_column] if split_strategy == "time" else None
    parts, split_warnings = split_indices(
        len(X), split, strategy=split_strategy, y=y if classes else None, groups=groups, order=order, seed=random_state
    )
    warns += split_warnings

    train_X = X.iloc[parts["train"]]
    numeric = [c["name"] for c in schema["columns"] if c["kind"] == "numeric"]
    keep_mask, n_out = outlier_mask(train_X, numeric, outliers, outlier_threshold, max_outlier_share)
    if n_out:
        parts["train"] = parts["train"][keep_mask]
        log.append(
            CleaningStep(
                action="drop_rows",
                rows=n_out,
                reason=f"{outliers} outliers (> {outlier_threshold}) "
                "in the training split only; validation/test rows are never removed",
            )
        )

    kind_cols = {
        k: [c["name"] for c in schema["columns"] if c["kind"] == k]
        for k in ("numeric", "boolean", "datetime", "categorical")
    }
    card = {c: int(X[c].iloc[parts["train"]].nunique()) for c in kind_cols["categorical"]}
    pre = encoder_pipeline(kind_cols, card, options)
    pre.fit(X.iloc[parts["train"]])
    feature_names = [str(n) for n in pre.get_feature_names_out()]

    run_id = run_id or runs.create_run(ws, dataset=ws.relative(file), target=target, namespace=namespace)
    folder = ws.run_dir(run_id)
    data_dir = folder / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    for name, idx in parts.items():
        np.save(data_dir / f"X_{name}.npy", pre.transform(X.iloc[idx]).astype(np.float32))
        np.save(data_dir / f"y_{name}.npy", y[idx])
    df.iloc[parts["test"]][[*features, target]].to_parquet(data_dir / "raw_test.parquet", index=False)
    joblib.dump(pre, folder / "preprocessor.joblib")
    schema["classes"] = classes
    schema["target_dtype"] = y_raw.dtype.kind  # b, i, u, f or O: labels go back to this type
    schema["feature_names"] = feature_names
    write_json(folder / "schema.json", schema)

    mapping = {str(i): c for i, c in enumerate(classes)} if classes else None
    distribution = None
    if classes:
        distribution = {
            name: {classes[k]: int(v) for k, v in zip(*np.unique(y[idx], return_counts=True), strict=True)}
            for name, idx in parts.items()
        }
    rel = ws.relative
    result = PreparedData(
        run_id=run_id,
        task_type=task,
        target=target,
        splits={k: len(v) for k, v in parts.items()},
        class_distribution=distribution,
        features_in=features,
        features_out=len(feature_names),
        feature_names=feature_names[:100],
        label_mapping=mapping,
        dropped_columns=dropped,
        cleaning_log=log,
        options={k: list(v) if isinstance(v, tuple) else v for k, v in options.items()},
        warnings=warns,
        artifacts={
            "data": rel(data_dir),
            "preprocessor": rel(folder / "preprocessor.joblib"),
            "schema": rel(folder / "schema.json"),
        },
        next_step=f"Call recommend_architecture(run_id='{run_id}') to pick a model, or train(run_id='{run_id}').",
    )
    write_json(folder / "prepared.json", result.model_dump(mode="json") | {"prepared_at": time.time()})
    runs.record_phase(ws, run_id, "prepare", {"prepared-data": result}, artifacts=result.artifacts)
    return result


def _prepare_other(
    ws: Workspace,
    file: Any,
    kind: str,
    target: str,
    options: dict[str, Any],
    split: tuple[float, float, float],
    seed: int,
    run_id: str | None,
    namespace: str,
) -> PreparedData:
    """prepare_data for images, sequences and text (see tools/modalities.py)."""
    from ml_expert.tools import modalities

    loaded = modalities.load(file, kind, target, options)
    out = modalities.prepare(loaded, kind, split, seed)
    run_id = run_id or runs.create_run(ws, dataset=ws.relative(file), target=target, namespace=namespace)
    folder = ws.run_dir(run_id)
    data_dir = folder / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    y, parts, classes = out["y"], out["parts"], out["classes"]
    for name, idx in parts.items():
        np.save(data_dir / f"X_{name}.npy", out["arrays"][name])
        np.save(data_dir / f"y_{name}.npy", y[idx])
    raw = out["raw_test"].astype(str) if kind == "text" else out["raw_test"]
    np.savez_compressed(data_dir / "raw_test.npz", X=raw, y=y[parts["test"]])
    schema = out["schema"] | {"target": target}
    write_json(folder / "schema.json", schema)
    shape = list(out["arrays"]["train"].shape[1:])
    distribution = None
    if classes:
        distribution = {
            n: {classes[k]: int(v) for k, v in zip(*np.unique(y[i], return_counts=True), strict=True)}
            for n, i in parts.items()
        }
    result = PreparedData(
        run_id=run_id,
        modality=kind,
        input_shape=shape,
        task_type=out["task"],
        target=target,
        splits={k: len(v) for k, v in parts.items()},
        class_distribution=distribution,
        features_in=[schema.get("text_column") or kind],
        features_out=int(np.prod(shape)),
        feature_names=(schema.get("features") or [])[:100],
        label_mapping={str(i): c for i, c in enumerate(classes)} if classes else None,
        dropped_columns={},
        cleaning_log=[],
        options={"split": list(split), "random_state": seed, **options},
        warnings=out["warnings"],
        artifacts={"data": ws.relative(data_dir), "schema": ws.relative(folder / "schema.json")},
        next_step=f"Call recommend_architecture(run_id='{run_id}') or train(run_id='{run_id}').",
    )
    write_json(folder / "prepared.json", result.model_dump(mode="json") | {"prepared_at": time.time()})
    runs.record_phase(ws, run_id, "prepare", {"prepared-data": result}, artifacts=result.artifacts)
    return result
