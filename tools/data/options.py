"""The options of `prepare_data` for tabular data: how it cleans, encodes, scales and splits (recorded in its
result), and the check of a split's shares."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from ml_expert.memory.errors import InvalidInputError
from ml_expert.tools.data.profiling import HIGH_CARDINALITY, TaskChoice
from ml_expert.tools.workspace import DEFAULT_SEED

Split = tuple[float, float, float]


class PrepareOptions(BaseModel):
    """How prepare_data cleans, encodes, scales and splits tabular data (recorded in its result)."""

    impute: Literal["mean", "median", "constant", "drop"] = "mean"
    drop_duplicates: bool | Literal["auto"] = "auto"
    outliers: Literal["zscore", "iqr", "none"] = "none"
    outlier_threshold: float = Field(3.0, gt=0)
    max_outlier_share: float = Field(0.05, ge=0, le=0.5)
    categorical_encoding: Literal["auto", "onehot", "ordinal"] = "auto"
    one_hot_max_categories: int = Field(HIGH_CARDINALITY, ge=2, le=1000)
    high_cardinality_encoding: Literal["ordinal", "frequency"] = "ordinal"
    scaling: Literal["standard", "minmax", "robust", "none"] = "standard"
    drop_identifiers: bool = True
    drop_columns: list[str] | None = None
    keep_columns: list[str] | None = None
    split: Split = (0.7, 0.15, 0.15)
    split_strategy: Literal["random", "group", "time"] = "random"
    group_column: str | None = None
    time_column: str | None = None
    random_state: int = DEFAULT_SEED
    task_type: TaskChoice = "auto"


def check_split(split: Split) -> None:
    if abs(sum(split) - 1) > 1e-6 or min(split) <= 0:
        raise InvalidInputError(
            f"split must be three positive shares summing to 1 (train, validation, test); received "
            f"{list(split)} (sum {sum(split):.3f}). Use e.g. [0.7, 0.15, 0.15]."
        )
