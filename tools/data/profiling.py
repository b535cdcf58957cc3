"""Column kinds and task-type inference shared by analysis and preparation.

Kinds: numeric, categorical, boolean, datetime, text, identifier, constant, empty.
"""

from __future__ import annotations

import re
import warnings

import numpy as np
import pandas as pd

ID_WORDS = {"id", "ids", "uuid", "guid", "key", "index", "idx", "rownames", "rowname", "rowid"}
SHORT_IDS = {"pid", "uid", "sid", "cid", "oid", "eid", "gid", "tid"}  # person, user, session, customer, order, …
WORDS = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+")
BOOL_WORDS = {"true", "false", "yes", "no", "y", "n", "t", "f", "0", "1"}
MAX_CLASSES = 50
HIGH_CARDINALITY = 30


def name_says_id(name: object) -> bool:
    """An identifier's name in any case style: id, ID, PID, uid, customer_id, CustomerID, userId, row-index,
    rownames (R's row names), Unnamed: 0 (pandas' index written to CSV)."""
    text = str(name).strip()
    if text.lower() in ID_WORDS | SHORT_IDS or re.fullmatch(r"unnamed: ?0", text.lower()):
        return True
    words = [w.lower() for w in WORDS.findall(text)]
    return bool(words) and (words[-1] in ID_WORDS or words[0] in ID_WORDS - {"key"})


def is_string_like(s: pd.Series) -> bool:
    return pd.api.types.is_object_dtype(s.dtype) or pd.api.types.is_string_dtype(s.dtype)


def _looks_datetime(s: pd.Series) -> bool:
    sample = s.dropna().astype(str).head(200)
    if sample.empty or not sample.str.contains(r"\d").all() or not sample.str.contains(r"[-/:T ]").mean() > 0.9:
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        parsed = pd.to_datetime(sample, errors="coerce", format="mixed")
    return parsed.notna().mean() >= 0.9


def infer_kind(s: pd.Series, n_rows: int, nunique: int | None = None) -> str:
    """The kind of one column (see module docstring); pass nunique when it is already known."""
    non_null = s.dropna()
    if non_null.empty:
        return "empty"
    nunique = non_null.nunique() if nunique is None else nunique
    if nunique <= 1:
        return "constant"
    if pd.api.types.is_bool_dtype(s.dtype):
        return "boolean"
    if pd.api.types.is_datetime64_any_dtype(s.dtype):
        return "datetime"
    if pd.api.types.is_numeric_dtype(s.dtype):  # 0/1 included: numeric, so an unseen 2 is still a number
        if pd.api.types.is_integer_dtype(s.dtype) or (non_null == non_null.round()).all():
            unique_ratio = nunique / len(non_null)
            if len(non_null) >= 20 and (
                (name_says_id(s.name) and unique_ratio >= 0.95)
                or (unique_ratio >= 0.999 and non_null.is_monotonic_increasing)
            ):
                return "identifier"
        return "numeric"
    if is_string_like(s):
        if nunique == 2 and {str(v).lower() for v in non_null.unique()}.issubset(BOOL_WORDS):
            return "boolean"
        sample = non_null.head(1000).astype(str)  # a sample: converting a million strings costs a second
        if _looks_datetime(sample):
            return "datetime"
        avg_words = sample.str.split().str.len().mean()
        unique_ratio = nunique / len(non_null)
        if avg_words >= 4 and unique_ratio > 0.5:
            return "text"
        if len(non_null) >= 20 and (unique_ratio >= 0.95 or (name_says_id(s.name) and unique_ratio >= 0.5)):
            return "identifier"
        return "categorical"
    return "categorical"


def guess_task(y: pd.Series) -> str:
    """binary / multiclass / regression for a target column (missing values ignored)."""
    y = y.dropna()
    nunique = y.nunique()
    if nunique <= 2:
        return "binary"
    if pd.api.types.is_bool_dtype(y.dtype) or not pd.api.types.is_numeric_dtype(y.dtype):
        return "multiclass"
    integer_valued = pd.api.types.is_integer_dtype(y.dtype) or bool((y == np.round(y)).all())
    if integer_valued and nunique <= min(MAX_CLASSES, max(3, len(y) // 20)):
        return "multiclass"
    return "regression"


def is_classification(task: str) -> bool:
    return task in ("binary", "multiclass")
