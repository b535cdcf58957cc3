"""Train/validation/test splits: stratified random, grouped, or in time order."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ml_expert.tools.errors import InvalidInputError


def _stratify_ok(y: np.ndarray | None, share: float) -> bool:
    """A stratified split needs every class at least twice on each side of the cut."""
    if y is None:
        return False
    counts = np.unique(y, return_counts=True)[1]
    return bool(counts.min() * min(share, 1 - share) >= 2)


def split_indices(
    n: int,
    shares: tuple[float, float, float],
    *,
    strategy: str = "random",
    y: np.ndarray | None = None,
    groups: np.ndarray | None = None,
    order: pd.Series | None = None,
    seed: int = 42,
) -> tuple[dict[str, np.ndarray], list[str]]:
    """Row positions of the train, val and test splits, and any warnings (e.g. stratification dropped)."""
    from sklearn.model_selection import GroupShuffleSplit, train_test_split

    train_share, val_share, test_share = shares
    warnings: list[str] = []
    idx = np.arange(n)
    if strategy == "time":
        if order is None:
            raise InvalidInputError("split_strategy='time' needs time_column= (the column that orders the rows).")
        sorted_idx = idx[
            np.argsort(
                pd.to_datetime(order, errors="coerce", format="mixed").to_numpy()
                if not pd.api.types.is_numeric_dtype(order)
                else order.to_numpy(),
                kind="stable",
            )
        ]
        a, b = round(n * train_share), round(n * (train_share + val_share))
        parts = {"train": sorted_idx[:a], "val": sorted_idx[a:b], "test": sorted_idx[b:]}
    elif strategy == "group":
        if groups is None:
            raise InvalidInputError("split_strategy='group' needs group_column= (rows of a group stay together).")
        if len(np.unique(groups)) < 3:
            raise InvalidInputError(
                f"split_strategy='group' needs at least 3 distinct groups; received {len(np.unique(groups))}."
            )
        outer = GroupShuffleSplit(n_splits=1, test_size=val_share + test_share, random_state=seed)
        train, rest = next(outer.split(idx, groups=groups))
        inner = GroupShuffleSplit(n_splits=1, test_size=test_share / (val_share + test_share), random_state=seed)
        v, t = next(inner.split(rest, groups=groups[rest]))
        parts = {"train": train, "val": rest[v], "test": rest[t]}
    else:
        rest_share = val_share + test_share
        strat = y if _stratify_ok(y, rest_share) else None
        if y is not None and strat is None:
            warnings.append(
                "Some classes are too small to stratify the split; used a plain random split instead, "
                "so a rare class may be missing from validation or test."
            )
        train, rest = train_test_split(idx, test_size=rest_share, random_state=seed, stratify=strat)
        inner_share = test_share / rest_share
        strat2 = y[rest] if strat is not None and _stratify_ok(y[rest], inner_share) else None
        if strat is not None and strat2 is None:
            warnings.append("Validation/test could not both be stratified (small classes); split them randomly.")
        val, test = train_test_split(rest, test_size=inner_share, random_state=seed, stratify=strat2)
        parts = {"train": train, "val": val, "test": test}
    for name, part in parts.items():
        if len(part) == 0:
            raise InvalidInputError(
                f"The {name} split is empty with {n} rows and shares {list(shares)}. Use more rows or larger shares."
            )
    return {k: np.sort(v) if strategy != "time" else v for k, v in parts.items()}, warnings
