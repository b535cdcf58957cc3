"""The fitted preprocessor compiled to plain arrays, for a few raw records at a time (`FastPreprocessor`).

`package` compiles it (`FastPreprocessor.compile`, a JSON description, never a pickle), checks that it reproduces
the regular path on the test rows, and ships this module next to `inference.py` as `ml_expert_fast.py`; like
`ml_expert_transformers.py` it depends only on numpy, pandas and scikit-learn.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

MODULE_NAME = "ml_expert_fast"
sys.modules.setdefault(MODULE_NAME, sys.modules[__name__])
HERE = Path(__file__).resolve().parent
if (HERE / "ml_expert_transformers.py").exists():  # a deployment folder (run as a script or imported as a package)
    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))
else:  # in ml-expert: the sibling module registers the name a deployment folder gives its file
    from . import preprocessing  # noqa: F401

from ml_expert_transformers import (  # noqa: E402
    EXPECTED,
    FALSE_WORDS,
    FLOAT32_MAX,
    TRUE_WORDS,
    FrequencyEncoder,
    SchemaError,
    _number_text,
    shown,
)


class FastPreprocessor:
    """The fitted ColumnTransformer compiled to plain arrays, for a few raw records at a time.

    scikit-learn's ColumnTransformer costs milliseconds per call on a one-row DataFrame; this does the
    same arithmetic in microseconds. `compile` returns None when a step is not one it knows (datetime
    parts, custom steps): then the regular transformer is used. Packaging checks it reproduces the
    regular path on the test rows before shipping it.
    """

    def __init__(self, blocks: list[dict[str, Any]], schema: dict[str, Any]) -> None:
        self.blocks = blocks
        self.kinds = {c["name"]: c["kind"] for c in schema["columns"]}
        self.formats = {c["name"]: c["format"] for c in schema["columns"] if c.get("format") and c["kind"] == "numeric"}
        self.width = sum(b["width"] for b in blocks)
        for b in self.blocks:
            if "categories" in b:
                b["index"] = [{c: i for i, c in enumerate(cats)} for cats in b["categories"]]

    @staticmethod
    def _scaler(steps: list[Any], n: int) -> tuple[list[float], list[float]]:
        """(offset, factor) so that out = (x - offset) * factor, for the trailing scaler (or identity)."""
        from sklearn.preprocessing import MinMaxScaler, RobustScaler, StandardScaler

        last = steps[-1] if steps else None
        if isinstance(last, StandardScaler):
            mean = last.mean_ if last.with_mean else np.zeros(n)
            scale = last.scale_ if last.with_std else np.ones(n)
            return list(map(float, mean)), list(map(float, 1.0 / scale))
        if isinstance(last, RobustScaler):
            center = last.center_ if last.with_centering else np.zeros(n)
            scale = last.scale_ if last.with_scaling else np.ones(n)
            return list(map(float, center)), list(map(float, 1.0 / scale))
        if isinstance(last, MinMaxScaler):  # x * scale_ + min_ == (x - (-min_ / scale_)) * scale_
            return list(map(float, -last.min_ / last.scale_)), list(map(float, last.scale_))
        return [0.0] * n, [1.0] * n

    @classmethod
    def compile(cls, column_transformer: Any, schema: dict[str, Any]) -> dict[str, Any] | None:
        """A JSON-able description of the fitted transformer, or None if it has steps this cannot mirror."""
        from sklearn.impute import SimpleImputer
        from sklearn.pipeline import Pipeline
        from sklearn.preprocessing import MinMaxScaler, OneHotEncoder, OrdinalEncoder, RobustScaler, StandardScaler

        scalers = (StandardScaler, MinMaxScaler, RobustScaler)
        blocks = []
        for name, trans, cols in column_transformer.transformers_:
            if name == "remainder" or trans == "drop":
                continue
            steps = list(trans.named_steps.values()) if isinstance(trans, Pipeline) else [trans]
            first, rest = steps[0], steps[1:]
            block: dict[str, Any] = {"columns": list(cols)}
            if (isinstance(first, SimpleImputer) and not rest) or (
                isinstance(first, SimpleImputer) and all(isinstance(s, scalers) for s in rest)
            ):
                if name not in ("numeric", "boolean"):
                    return None
                indicator = getattr(first, "indicator_", None)  # 0/1 columns after the values: where one was missing
                flagged = [int(i) for i in indicator.features_] if indicator is not None else []
                width = len(cols) + len(flagged)
                block |= {"kind": "numeric", "fill": list(map(float, first.statistics_)), "width": width}
                block["flagged"] = flagged
                block["offset"], block["factor"] = cls._scaler(rest, width)
            elif name == "onehot" and isinstance(steps[-1], OneHotEncoder) and steps[-1].drop is None:
                fill = list(steps[0].statistics_) if isinstance(steps[0], SimpleImputer) else [None] * len(cols)
                cats = [[str(c) for c in cat] for cat in steps[-1].categories_]
                block |= {
                    "kind": "onehot",
                    "fill": [str(f) for f in fill],
                    "categories": cats,
                    "width": sum(len(c) for c in cats),
                }
            elif name in ("ordinal", "frequency") and all(isinstance(s, scalers) for s in rest):
                if isinstance(first, OrdinalEncoder):
                    block |= {"kind": "ordinal", "categories": [[str(c) for c in cat] for cat in first.categories_]}
                elif isinstance(first, FrequencyEncoder):
                    block |= {
                        "kind": "frequency",
                        "maps": [{str(k): float(v) for k, v in m.items()} for m in first.maps_],
                    }
                else:
                    return None
                block["width"] = len(cols)
                block["offset"], block["factor"] = cls._scaler(rest, len(cols))
            else:
                return None
            blocks.append(block)
        return {"blocks": blocks}

    def _number(self, name: str, value: Any) -> float:
        """One raw value as a number by the rules of _coerce: missing or empty -> nan, a bad value -> SchemaError."""
        if value is None or (isinstance(value, float | np.floating) and value != value):
            return float("nan")
        if isinstance(value, str) and not value.strip():
            return float("nan")
        x = float("nan")
        if self.kinds[name] == "boolean" and isinstance(value, str):
            word = value.strip().lower()
            x = 1.0 if word in TRUE_WORDS else 0.0 if word in FALSE_WORDS else x
        else:
            if isinstance(value, str) and name in self.formats:
                value = _number_text(pd.Series([value]), self.formats[name]).iloc[0]
            try:
                x = float(value)
            except OverflowError:  # an int past float's range
                x = float("inf")
            except (TypeError, ValueError):
                pass
        if abs(x) <= FLOAT32_MAX:
            return x
        raise SchemaError(
            f"Column {name!r} must be {EXPECTED[self.kinds[name]]}; received values [{shown(value)}] in 1 rows. "
            "Fix those values or leave them empty (missing values are imputed)."
        )

    def transform_records(self, records: list[dict[str, Any]]) -> np.ndarray:
        """Raw records (dicts with the original column names) -> model features (float32)."""
        missing = [c for c in self.kinds if c not in records[0]] if records else []
        if missing:
            raise SchemaError(
                f"Input is missing columns {missing}. Expected columns: {list(self.kinds)}. "
                "Pass every feature column with its original name (missing values may be empty)."
            )
        out = np.empty((len(records), self.width), dtype=np.float64)
        for r, record in enumerate(records):
            pos = 0
            for b in self.blocks:
                kind = b["kind"]
                empty = []
                for j, col in enumerate(b["columns"]):
                    value = record.get(col, None)
                    if kind == "numeric":
                        x = self._number(col, value)
                        empty.append(x != x)
                        x = b["fill"][j] if x != x else x
                        out[r, pos] = (x - b["offset"][j]) * b["factor"][j]
                        pos += 1
                    elif kind == "onehot":
                        text = b["fill"][j] if value is None or value != value else str(value)
                        width = len(b["categories"][j])
                        out[r, pos : pos + width] = 0.0
                        hit = b["index"][j].get(text)
                        if hit is not None:
                            out[r, pos + hit] = 1.0
                        pos += width
                    else:
                        missing_value = value is None or value != value
                        if kind == "ordinal":
                            x = -1.0 if missing_value else float(b["index"][j].get(str(value), -1))
                        else:
                            x = 0.0 if missing_value else b["maps"][j].get(str(value), 0.0)
                        out[r, pos] = (x - b["offset"][j]) * b["factor"][j]
                        pos += 1
                for k, j in enumerate(b.get("flagged", ())):  # packages compiled before: no indicators
                    at = len(b["columns"]) + k
                    out[r, pos] = (float(empty[j]) - b["offset"][at]) * b["factor"][at]
                    pos += 1
        with np.errstate(over="ignore"):  # a value pushed past float32 by its scaler: ModelInference refuses it
            return out.astype(np.float32)
