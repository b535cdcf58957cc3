"""Phase 1b — `prepare_data`: clean, split, encode and scale without leakage.

Unlike the reference recipe, every fitted statistic (imputer, encoders, scaler, outlier
thresholds) comes from the training split only, as one scikit-learn `ColumnTransformer` saved with
the run; outliers are removed from training rows only; every categorical column has its own
encoder. Saves `data/X_{train,val,test}.npy`, `data/y_*.npy`, `preprocessor.joblib`,
`schema.json`, the feature names and the label mapping. Stores `ml-expert/prepared-data`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field

from ml_expert.memory.errors import InvalidInputError
from ml_expert.tools import runs
from ml_expert.tools.artifacts import check_data_kept, save_pickle
from ml_expert.tools.core.lazy import lazy_import
from ml_expert.tools.core.prepared import PreparedData
from ml_expert.tools.core.tasks import is_classification
from ml_expert.tools.data import modalities
from ml_expert.tools.data.cleaning import (
    Table,
    drop_outliers,
    drop_rows,
    log_bad_dates,
    read_and_check,
    select_features,
)
from ml_expert.tools.data.encoding import encoder_pipeline
from ml_expert.tools.data.io import check_size
from ml_expert.tools.data.modalities import DataOptions, detect_modality
from ml_expert.tools.data.options import PrepareOptions, Split, check_split
from ml_expert.tools.data.profiling import (
    HIGH_CARDINALITY,
    MAX_CLASSES,
    TaskChoice,
    choose_task,
    training_profile,
)
from ml_expert.tools.data.splitting import split_indices
from ml_expert.tools.workspace import DEFAULT_SEED, Workspace, write_json

np = lazy_import("numpy")  # loads with the first data tool call, not at server start
pd = lazy_import("pandas")  # loads with the first data tool call, not at server start

FIT_ROWS = 1_000_000  # the preprocessor's statistics come from at most this many training rows (a seeded sample)
CHUNK_ROWS = 250_000  # rows transformed at a time: a 10M-row table never holds a float64 copy of itself


def prepare_data(
    ws: Workspace,
    run_id: Annotated[str | None, Field(description="Run from analyze_data; its dataset and target are used.")] = None,
    path: Annotated[str | None, Field(description="Dataset file (starts a new run when run_id is omitted).")] = None,
    target: Annotated[str | None, Field(description="Target column; defaults to the run's target.")] = None,
    impute: Annotated[
        Literal["mean", "median", "constant", "drop"],
        Field(description="Numeric missing values: mean (default), median, constant 0, or drop rows."),
    ] = "mean",
    drop_duplicates: Annotated[
        bool | Literal["auto"],
        Field(
            description="Drop exact duplicate rows before splitting: 'auto' (default) unless repeats are observations "
            "(codes, replicated measurements); true; false."
        ),
    ] = "auto",
    outliers: Annotated[
        Literal["zscore", "iqr", "none"],
        Field(description="Drop outlying training rows (zscore / iqr); default none: extremes are often informative."),
    ] = "none",
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
    drop_identifiers: Annotated[
        bool, Field(description="Drop identifier, constant, empty and duplicate columns.")
    ] = True,
    drop_columns: Annotated[list[str] | None, Field(description="Columns to drop, e.g. leakage suspects.")] = None,
    keep_columns: Annotated[list[str] | None, Field(description="Columns to keep even if they look like ids.")] = None,
    split: Annotated[Split, Field(description="Train/validation/test shares; must sum to 1.")] = (0.7, 0.15, 0.15),
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
    task_type: Annotated[
        TaskChoice | None,
        Field(description="Overrules the task guessed from the target; default: analyze_data's (else auto)."),
    ] = None,
    namespace: runs.Namespace = "default",
) -> PreparedData:
    """Clean, split (70/15/15), encode and scale a dataset, fitting only on the training split.

    Call recommend_architecture(run_id=...) next.
    """
    # Long only in its signature, which is the tool's schema (one parameter per option).
    check_split(split)
    opts = PrepareOptions(
        impute=impute,
        drop_duplicates=drop_duplicates,
        outliers=outliers,
        outlier_threshold=outlier_threshold,
        max_outlier_share=max_outlier_share,
        categorical_encoding=categorical_encoding,
        one_hot_max_categories=one_hot_max_categories,
        high_cardinality_encoding=high_cardinality_encoding,
        scaling=scaling,
        drop_identifiers=drop_identifiers,
        drop_columns=drop_columns,
        keep_columns=keep_columns,
        split=split,
        split_strategy=split_strategy,
        group_column=group_column,
        time_column=time_column,
        random_state=random_state,
        task_type=task_type or "auto",
    )
    return _prepare(ws, opts, run_id, path, target, modality, namespace, task_type is None)


def _prepare(
    ws: Workspace,
    opts: PrepareOptions,
    run_id: str | None,
    path: str | None,
    target: str | None,
    modality: str | None,
    namespace: str,
    task_as_analyzed: bool = False,
) -> PreparedData:
    """Find the dataset (from the run or the path) and read it as analyze_data did; then the table or other path.
    With task_as_analyzed, the task type is the one analyze_data was asked for (if any)."""
    if run_id is None and path is None:
        raise InvalidInputError("Pass run_id (from analyze_data) or path (a dataset file).")
    analysis: dict[str, Any] = {}
    if run_id is not None:
        info = check_data_kept(ws, run_id, "prepare_data")
        path, target, namespace = path or info.dataset, target or info.target, info.namespace
        analysis = ws.store.get_value(runs.memory_key(f"runs/{run_id}/data-analysis"), namespace=namespace) or {}
    analyzed_target = (analysis.get("target") or {}).get("column")
    # the task analyze_data was asked for, for this target only ("y": the target of arrays and image folders)
    if task_as_analyzed and analysis.get("task_requested") and analyzed_target == (target or "y"):
        opts = opts.model_copy(update={"task_type": analysis["task_requested"]})
    file = ws.resolve_path(path or "", kind="dataset")
    check_size(file, ws.settings.max_file_bytes)
    read_options = analysis.get("data_options") or DataOptions().model_dump()  # as analyze_data read the data
    kind = detect_modality(file, modality or analysis.get("modality"), read_options)
    if kind != "tabular":
        return _prepare_other(ws, file, kind, target, read_options, opts, run_id, namespace)
    if target is None:
        raise InvalidInputError(
            "prepare_data needs target= (the column to predict) for tabular data. Pass target=, or start with "
            "analyze_data(path=..., target=...)."
        )
    return _prepare_table(ws, file, target, opts, run_id, namespace)


def _prepare_table(
    ws: Workspace, file: Path, target: str, opts: PrepareOptions, run_id: str | None, namespace: str
) -> PreparedData:
    """The tabular path: clean, type, split, fit the preprocessor on training rows, save."""
    from ml_expert.tools.core.portable.preprocessing import SchemaError, coerce_frame  # sklearn: not at start

    table = read_and_check(file, target, opts)
    task = choose_task(table.df[target], opts.task_type)
    _check_classes(table.df[target], task)
    features, dropped, schema = select_features(table, task, opts)
    try:
        table.X = coerce_frame(table.df, schema)
    except SchemaError as exc:
        raise InvalidInputError(str(exc)) from exc
    log_bad_dates(table, schema)
    drop_rows(table, opts)
    y, classes = _encode_target(table.df[target], task)
    parts, warns = _split(table, y if classes else None, opts, classes)
    drop_outliers(table, parts, schema, opts)
    # what is still needed of the raw rows, so the file's frame can go before the large arrays are built
    raw = {split: table.df.iloc[parts[split]][[*features, target]] for split in ("val", "test")}
    groups = pd.factorize(table.df[opts.group_column])[0] if opts.split_strategy == "group" else None
    known_columns = [str(c) for c in table.df.columns]
    table.df = table.df[[target]]
    pre, feature_names, fit_rows = _fit_preprocessor(table.X, parts["train"], schema, opts)
    if fit_rows < len(parts["train"]):
        warns.append(
            f"The preprocessor's statistics (imputation, scaling, categories) come from a seeded sample of "
            f"{fit_rows:,} of the {len(parts['train']):,} training rows; every row is transformed with them."
        )
    if run_id is None:
        run_id = runs.create_run(ws, dataset=ws.relative(file), target=target, namespace=namespace)
    else:  # the run names the target it was prepared for (analyze_data may have had none)
        ws.runs.set_source(run_id, dataset=ws.relative(file), target=target)
    folder = ws.run_dir(run_id)
    for name, idx in parts.items():  # one split at a time, transformed in chunks
        data_dir = _save_splits(folder, {name: _transform(pre, table.X, idx, len(feature_names))}, y, {name: idx})
    if groups is not None:  # the auto search (and its refit on all rows) keeps groups together in its folds as well
        for split in ("train", "val", "test"):
            np.save(data_dir / f"groups_{split}.npy", groups[parts[split]])
    for split, rows in raw.items():  # raw rows: packaging verifies on test, explain permutes held-out columns
        rows.to_parquet(data_dir / f"raw_{split}.parquet", index=False)
    save_pickle(ws, pre, folder / "preprocessor.joblib")
    profile = training_profile(table.X, parts["train"], schema, known_columns)
    write_json(folder / "profile.json", profile)  # predict's drift check compares new rows with it
    schema |= {"classes": classes, "target_dtype": table.df[target].dtype.kind, "feature_names": feature_names}
    write_json(folder / "schema.json", schema)  # target_dtype (b, i, u, f or O): labels go back to this type
    rel = ws.relative
    result = PreparedData(
        run_id=run_id,
        task_type=task,
        target=target,
        splits={k: len(v) for k, v in parts.items()},
        class_distribution=_class_distribution(y, parts, classes),
        features_in=features,
        features_out=len(feature_names),
        feature_names=feature_names[:100],
        label_mapping={str(i): c for i, c in enumerate(classes)} if classes else None,
        dropped_columns=dropped,
        cleaning_log=table.log,
        options=opts.model_dump(mode="json"),
        warnings=warns,
        artifacts={
            "data": rel(data_dir),
            "preprocessor": rel(folder / "preprocessor.joblib"),
            "schema": rel(folder / "schema.json"),
            "profile": rel(folder / "profile.json"),
        },
        next_step=f"Call recommend_architecture(run_id='{run_id}') to pick a model, or train(run_id='{run_id}').",
    )
    return _record(ws, folder, result)


def _check_classes(y: pd.Series, task: str) -> None:
    """A classification target must repeat its labels: one whose values are mostly seen once (a comment, a name,
    an id) has nothing to learn per class, and its training failed later with scikit-learn's split error."""
    if not is_classification(task):
        return
    counts = y.value_counts()
    once = int((counts < 2).sum())
    if len(counts) > MAX_CLASSES and once > len(counts) / 2:
        raise InvalidInputError(
            f"target {y.name!r} has {len(counts):,} distinct values among {int(counts.sum()):,} rows, {once:,} of them "
            "seen only once: that is text or an identifier, not a label to learn. Choose a target column whose "
            "values repeat (a class, or a number to predict)."
        )


def _encode_target(y_raw: pd.Series, task: str) -> tuple[np.ndarray, list[str] | None]:
    """Class indices (classes sorted, numerically when the labels are numbers) or float values."""
    if not is_classification(task):
        return y_raw.astype(float).to_numpy(), None
    y_str = y_raw.astype(str)
    classes = sorted(y_str.unique(), key=lambda v: (len(v), v) if y_raw.dtype.kind in "iuf" else (0, v))
    index = {c: i for i, c in enumerate(classes)}
    return y_str.map(index).to_numpy(dtype=np.int64), classes


def _split(
    table: Table, y_classes: np.ndarray | None, opts: PrepareOptions, labels: list[str] | None = None
) -> tuple[dict[str, np.ndarray], list[str]]:
    df = table.df
    return split_indices(
        len(table.X),
        opts.split,
        strategy=opts.split_strategy,
        y=y_classes,
        groups=df[opts.group_column].to_numpy() if opts.split_strategy == "group" else None,
        order=df[opts.time_column] if opts.split_strategy == "time" else None,
        seed=opts.random_state,
        labels=labels,
    )


def _fit_preprocessor(
    X: pd.DataFrame, train: np.ndarray, schema: dict[str, Any], opts: PrepareOptions
) -> tuple[Any, list[str], int]:
    """The ColumnTransformer fitted on the training rows only (a seeded sample of FIT_ROWS of them on larger
    tables: its means, scales and categories need no more), its output feature names and the rows it saw."""
    kind_cols = {
        k: [c["name"] for c in schema["columns"] if c["kind"] == k]
        for k in ("numeric", "boolean", "datetime", "categorical", "text")
    }
    if len(train) > FIT_ROWS:
        train = np.sort(np.random.default_rng(opts.random_state).choice(train, FIT_ROWS, replace=False))
    rows = X.iloc[train]
    card = {c: int(rows[c].nunique()) for c in kind_cols["categorical"]}
    pre = encoder_pipeline(kind_cols, card, opts.model_dump())
    pre.fit(rows)
    return pre, [str(n) for n in pre.get_feature_names_out()], len(train)


def _transform(pre: Any, X: pd.DataFrame, idx: np.ndarray, width: int) -> np.ndarray:
    """The rows `idx` of X through the fitted preprocessor as float32, CHUNK_ROWS at a time."""
    out = np.empty((len(idx), width), dtype=np.float32)
    for start in range(0, len(idx), CHUNK_ROWS):
        stop = start + CHUNK_ROWS
        out[start:stop] = pre.transform(X.iloc[idx[start:stop]])
    return out


def _save_splits(folder: Path, arrays: dict[str, np.ndarray], y: np.ndarray, parts: dict[str, np.ndarray]) -> Path:
    """data/X_<split>.npy and data/y_<split>.npy for train, val and test."""
    data_dir = folder / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    for name, idx in parts.items():
        np.save(data_dir / f"X_{name}.npy", arrays[name])
        np.save(data_dir / f"y_{name}.npy", y[idx])
    return data_dir


def _class_distribution(
    y: np.ndarray, parts: dict[str, np.ndarray], classes: list[str] | None
) -> dict[str, dict[str, int]] | None:
    if not classes:
        return None
    return {
        name: {classes[k]: int(v) for k, v in zip(*np.unique(y[idx], return_counts=True), strict=True)}
        for name, idx in parts.items()
    }


def _record(ws: Workspace, folder: Path, result: PreparedData) -> PreparedData:
    write_json(folder / "prepared.json", result.model_dump(mode="json") | {"prepared_at": time.time()})
    runs.record_phase(ws, result.run_id, "prepare", {"prepared-data": result}, artifacts=result.artifacts)
    return result


def _prepare_other(
    ws: Workspace,
    file: Path,
    kind: str,
    target: str | None,
    read_options: dict[str, Any],
    opts: PrepareOptions,
    run_id: str | None,
    namespace: str,
) -> PreparedData:
    """prepare_data for images, sequences and text (see `modalities`)."""
    loaded = modalities.load(file, kind, target, read_options)
    out = modalities.prepare(loaded, kind, opts.split, opts.random_state, opts.task_type)
    run_id = run_id or runs.create_run(ws, dataset=ws.relative(file), target=target, namespace=namespace)
    folder = ws.run_dir(run_id)
    y, parts, classes = out["y"], out["parts"], out["classes"]
    data_dir = _save_splits(folder, out["arrays"], y, parts)
    raw = out["raw_test"].astype(str) if kind == "text" else out["raw_test"]
    np.savez_compressed(data_dir / "raw_test.npz", X=raw, y=y[parts["test"]])
    schema = out["schema"] | {"target": target}
    write_json(folder / "schema.json", schema)
    shape = list(out["arrays"]["train"].shape[1:])
    result = PreparedData(
        run_id=run_id,
        modality=kind,
        input_shape=shape,
        task_type=out["task"],
        target=target,
        splits={k: len(v) for k, v in parts.items()},
        class_distribution=_class_distribution(y, parts, classes),
        features_in=[schema.get("text_column") or kind],
        features_out=int(np.prod(shape)),
        feature_names=(schema.get("features") or [])[:100],
        label_mapping={str(i): c for i, c in enumerate(classes)} if classes else None,
        dropped_columns={},
        cleaning_log=[],
        options={"split": list(opts.split), "random_state": opts.random_state, **read_options},
        warnings=out["warnings"],
        artifacts={"data": ws.relative(data_dir), "schema": ws.relative(folder / "schema.json")},
        next_step=f"Call recommend_architecture(run_id='{run_id}') or train(run_id='{run_id}').",
    )
    return _record(ws, folder, result)
