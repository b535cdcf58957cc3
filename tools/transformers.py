"""Self-contained preprocessing pieces that travel with a deployment package.

This module depends only on numpy, pandas and scikit-learn, so `package` copies it next to
`inference.py` as `ml_expert_transformers.py`; its classes pickle under that module name, which
therefore resolves both here and in a deployment folder without ml-expert installed.

- `coerce_frame(df, schema)`: raw rows -> the dtypes the preprocessor was fitted on, with clear
  errors for missing columns and wrong types (used at fit time and at inference time alike).
- `FrequencyEncoder`, `DatetimeExpander`: scikit-learn transformers (fit on training data only).
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

MODULE_NAME = "ml_expert_transformers"
sys.modules.setdefault(MODULE_NAME, sys.modules[__name__])

TRUE_WORDS = {"true", "yes", "y", "t", "1", "1.0"}
FALSE_WORDS = {"false", "no", "n", "f", "0", "0.0"}


class SchemaError(ValueError):
    """Raw input rows do not match the feature schema the model was trained on."""


def _as_object(s: pd.Series) -> pd.Series:
    out = s.astype(object)
    return out.where(s.notna(), np.nan)


def coerce_column(s: pd.Series, kind: str, name: str) -> pd.Series:
    """Convert one raw column to the type its kind needs; raise SchemaError on values that cannot be."""
    if kind in ("numeric", "boolean"):
        if kind == "boolean" and not pd.api.types.is_numeric_dtype(s.dtype):
            words = s.astype(str).str.strip().str.lower()
            mapped = pd.Series(
                np.where(words.isin(TRUE_WORDS), 1.0, np.where(words.isin(FALSE_WORDS), 0.0, np.nan)), index=s.index
            )
            bad = s.notna() & mapped.isna()
        else:
            mapped = pd.to_numeric(s, errors="coerce").astype(float)
            bad = s.notna() & mapped.isna() & (s.astype(str).str.strip() != "")
        if bad.any():
            examples = list(s[bad].astype(str).unique()[:3])
            raise SchemaError(
                f"Column {name!r} must be {kind}; received values {examples} in {int(bad.sum())} rows. "
                "Fix those values or leave them empty (missing values are imputed)."
            )
        return mapped
    if kind == "datetime":
        return pd.to_datetime(s, errors="coerce", format="mixed")
    return _as_object(s.astype(str).where(s.notna(), np.nan))


def coerce_frame(df: pd.DataFrame, schema: dict[str, Any]) -> pd.DataFrame:
    """Select and convert the schema's input columns of raw rows (extra columns are ignored)."""
    columns = schema["columns"]
    missing = [c["name"] for c in columns if c["name"] not in df.columns]
    if missing:
        raise SchemaError(
            f"Input is missing columns {missing}. Expected columns: {[c['name'] for c in columns]}. "
            "Pass every feature column with its original name (missing values may be empty)."
        )
    return pd.DataFrame(
        {c["name"]: coerce_column(df[c["name"]], c["kind"], c["name"]) for c in columns}, index=df.index
    )


class FrequencyEncoder(TransformerMixin, BaseEstimator):
    """Replace each category by its share of the training rows (unseen categories -> 0)."""

    def fit(self, X: Any, y: Any = None) -> FrequencyEncoder:
        frame = pd.DataFrame(X)
        self.feature_names_in_ = np.asarray([str(c) for c in frame.columns], dtype=object)
        self.maps_ = [frame[c].value_counts(normalize=True, dropna=True).to_dict() for c in frame.columns]
        return self

    def transform(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "maps_")
        frame = pd.DataFrame(X)
        cols = [frame.iloc[:, i].map(m).astype(float).fillna(0.0).to_numpy() for i, m in enumerate(self.maps_)]
        return np.column_stack(cols) if cols else np.empty((len(frame), 0))

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        names = self.feature_names_in_ if input_features is None else input_features
        return np.asarray([f"{n}_freq" for n in names], dtype=object)


class DatetimeExpander(TransformerMixin, BaseEstimator):
    """Expand datetime columns into numeric parts (year, month, day, weekday, hour) that vary in training."""

    PARTS = ("year", "month", "day", "dayofweek", "hour")

    def fit(self, X: Any, y: Any = None) -> DatetimeExpander:
        frame = pd.DataFrame(X)
        self.feature_names_in_ = np.asarray([str(c) for c in frame.columns], dtype=object)
        self.parts_ = []
        for c in frame.columns:
            d = pd.to_datetime(frame[c], errors="coerce", format="mixed")
            self.parts_.append([p for p in self.PARTS if getattr(d.dt, p).nunique(dropna=True) > 1])
        return self

    def transform(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "parts_")
        frame = pd.DataFrame(X)
        cols = []
        for i, parts in enumerate(self.parts_):
            d = pd.to_datetime(frame.iloc[:, i], errors="coerce", format="mixed")
            cols += [getattr(d.dt, p).astype(float).to_numpy() for p in parts]
        return np.column_stack(cols) if cols else np.empty((len(frame), 0))

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        names = self.feature_names_in_ if input_features is None else input_features
        return np.asarray(
            [f"{n}_{p}" for n, parts in zip(names, self.parts_, strict=True) for p in parts], dtype=object
        )


for _cls in (FrequencyEncoder, DatetimeExpander, SchemaError):
    _cls.__module__ = MODULE_NAME
