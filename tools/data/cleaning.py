"""The row and column cleaning of `prepare_data`, each step logged: read and check the named columns, drop rows
without a target, choose the features (identifiers, constants and copies of another column dropped; free text kept,
as its length and latent TF-IDF dimensions: `TextVectorizer`), log dates that do not parse, drop duplicate rows (kept
when repeats are observations) and rows with gaps, and remove outlying training rows (never validation or test
rows)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ml_expert.memory.errors import InvalidInputError, NotFoundError
from ml_expert.tools.core.lazy import lazy_import
from ml_expert.tools.core.prepared import CleaningStep
from ml_expert.tools.data.analyze import check_target_column
from ml_expert.tools.data.encoding import outlier_mask
from ml_expert.tools.data.io import read_table
from ml_expert.tools.data.options import PrepareOptions
from ml_expert.tools.data.profiling import (
    DROP_KINDS,
    copied_columns,
    copies_shown,
    infer_kind,
    repeats_are_observations,
    row_hashes,
)

np = lazy_import("numpy")
pd = lazy_import("pandas")


@dataclass
class Table:
    """The rows being prepared: features X, the frame they came from, and the cleaning log."""

    df: pd.DataFrame
    X: pd.DataFrame
    target: str
    log: list[CleaningStep]


def read_and_check(file: Path, target: str, opts: PrepareOptions) -> Table:
    """Read the table, check the named columns, drop rows without a target; refuse a target with one value."""
    df = read_table(file, target)
    check_target_column(df, target, file.name)
    for name, col in (("group_column", opts.group_column), ("time_column", opts.time_column)):
        if col is not None and col not in df.columns:
            raise NotFoundError(f"{name} {col!r} not in {file.name}. Columns: {list(df.columns)[:50]}.")
    log: list[CleaningStep] = []
    formats = df.attrs.get("number_formats", {})
    if formats:
        reason = "numbers written as text read as numbers: " + ", ".join(f"{c} ({f})" for c, f in formats.items())
        log.append(CleaningStep(action="convert_types", columns=list(formats), reason=reason))
    infinite = df.attrs.get("infinite", {})
    if infinite:
        reason = "±inf treated as missing (then imputed): " + ", ".join(f"{c} ({n})" for c, n in infinite.items())
        log.append(CleaningStep(action="missing_values", columns=list(infinite), reason=reason))
    missing_target = int(df[target].isna().sum())
    if missing_target == len(df):
        raise InvalidInputError(f"Target column {target!r} is entirely missing. Pick a column with values.")
    if missing_target:
        df = df[df[target].notna()]
        df.attrs["number_formats"] = formats
        log.append(CleaningStep(action="drop_rows", rows=missing_target, reason=f"target {target!r} missing"))
    if df[target].nunique() < 2:
        raise InvalidInputError(
            f"Target {target!r} has a single value ({df[target].iloc[0]!r}); there is nothing to learn. "
            "Pick another target or add rows of other classes."
        )
    return Table(df=df, X=df.drop(columns=[target]), target=target, log=log)


def select_features(table: Table, task: str, opts: PrepareOptions) -> tuple[list[str], dict[str, str], dict[str, Any]]:
    """Which columns become features (and why the others were dropped), and the inference schema."""
    df, target = table.df, table.target
    kinds = {c: infer_kind(df[c], len(df)) for c in df.columns if c != target}
    dropped: dict[str, str] = {}
    for col in opts.drop_columns or []:
        if col not in df.columns:
            raise NotFoundError(f"drop_columns names {col!r}, which is not a column. Columns: {list(df.columns)[:50]}.")
        dropped[col] = "requested"
    keep = set(opts.keep_columns or [])
    for col, kind in kinds.items():
        if col in dropped or col in keep:
            continue
        if opts.drop_identifiers and kind in DROP_KINDS:
            dropped[col] = kind
    for col in (opts.group_column, opts.time_column):
        if col and col not in dropped and kinds.get(col) in ("identifier", "datetime"):
            dropped.setdefault(col, "split column")
    if dropped:
        reason = "; ".join(f"{c}: {r}" for c, r in dropped.items())
        table.log.append(CleaningStep(action="drop_columns", columns=list(dropped), reason=reason))
    copies = copied_columns(df, [c for c in kinds if c not in dropped]) if opts.drop_identifiers else {}
    copies = {c: first for c, first in copies.items() if c not in keep}
    if copies:  # a copy adds nothing but time (a wide table's fingerprint bits: 744 of 1,107 columns)
        dropped |= {c: f"duplicate of {first}" for c, first in copies.items()}
        shown = copies_shown(copies)
        reason = f"{len(copies):,} columns repeat an earlier column value for value ({shown}); the first is kept"
        table.log.append(CleaningStep(action="drop_columns", columns=list(copies), reason=reason))
    features = [c for c in kinds if c not in dropped]
    columns = [{"name": c, "kind": "categorical" if kinds[c] in DROP_KINDS else kinds[c]} for c in features]
    from ml_expert.tools.core.portable.preprocessing import date_format  # sklearn: not at server start

    formats = df.attrs.get("number_formats", {})
    for col in columns:  # how the column's text is written, so that new rows are read the same way
        if col["kind"] == "numeric" and col["name"] in formats:  # numbers written as text
            col["format"] = formats[col["name"]]
        elif col["kind"] == "datetime" and (order := date_format(df[col["name"]])):  # 15/03/2021: day first
            col["format"] = order
        if col["kind"] == "categorical":
            col["categories"] = sorted(map(str, df[col["name"]].dropna().unique()))[:200]
    return features, dropped, {"target": target, "task_type": task, "columns": columns}


def log_bad_dates(table: Table, schema: dict[str, Any]) -> None:
    """A date column's values that do not parse become missing (then imputed), and the cleaning log says how many
    and shows a few: analysis calls a column datetime when 90 % of its values parse."""
    from ml_expert.tools.core.portable.preprocessing import shown

    for column in (c["name"] for c in schema["columns"] if c["kind"] == "datetime"):
        raw = table.df[column]
        bad = raw.notna() & table.X[column].isna() & (raw.astype(str).str.strip() != "")
        if bad.any():
            examples = ", ".join(list(dict.fromkeys(shown(v) for v in raw[bad].iloc[:100]))[:3])
            table.log.append(
                CleaningStep(
                    action="missing_values",
                    rows=int(bad.sum()),
                    columns=[column],
                    reason=f"{int(bad.sum())} values of {column!r} are not dates (e.g. {examples}); treated as "
                    "missing, then imputed",
                )
            )


def drop_rows(table: Table, opts: PrepareOptions) -> None:
    """Duplicates (before the split, so no row is in two splits) and, with impute='drop', rows with gaps."""
    if opts.drop_duplicates:
        features, hashes = row_hashes(table.X, table.df[table.target])
        dup = pd.Series(hashes).duplicated().to_numpy()
        why = repeats_are_observations(features, hashes) if dup.any() and opts.drop_duplicates == "auto" else None
        if why:
            table.log.append(
                CleaningStep(
                    action="keep_duplicates",
                    rows=int(dup.sum()),
                    reason=f"repeated rows kept: {why}, so repeats are observations and dropping them would erase "
                    "the label frequencies; drop_duplicates=true drops them anyway",
                )
            )
        elif dup.any():
            table.X, table.df = table.X[~dup], table.df[~dup]
            table.log.append(CleaningStep(action="drop_rows", rows=int(dup.sum()), reason="duplicate rows"))
    if opts.impute == "drop":
        na = table.X.isna().any(axis=1).to_numpy()
        if na.any():
            table.X, table.df = table.X[~na], table.df[~na]
            table.log.append(CleaningStep(action="drop_rows", rows=int(na.sum()), reason="missing feature values"))
    if len(table.X) < 10:
        raise InvalidInputError(
            f"Only {len(table.X)} rows remain after cleaning ({[s.action for s in table.log]}); at least 10 "
            "are needed. Use impute='mean' instead of 'drop', or keep duplicates."
        )


def drop_outliers(table: Table, parts: dict[str, np.ndarray], schema: dict[str, Any], opts: PrepareOptions) -> None:
    """Remove outlying training rows (never validation or test rows), at most max_outlier_share of them."""
    numeric = [c["name"] for c in schema["columns"] if c["kind"] == "numeric"]
    if opts.outliers == "none" or not numeric:
        return
    train_X = table.X.iloc[parts["train"]]
    keep, n_out = outlier_mask(train_X, numeric, opts.outliers, opts.outlier_threshold, opts.max_outlier_share)
    if n_out:
        parts["train"] = parts["train"][keep]
        table.log.append(
            CleaningStep(
                action="drop_rows",
                rows=n_out,
                reason=f"{opts.outliers} outliers (> {opts.outlier_threshold}) "
                "in the training split only; validation/test rows are never removed",
            )
        )
