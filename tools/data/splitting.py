"""Train/validation/test splits: stratified random, grouped, or in time order."""

from __future__ import annotations

from ml_expert.memory.errors import InvalidInputError
from ml_expert.tools.core.lazy import lazy_import

np = lazy_import("numpy")  # loads with the first data tool call, not at server start
pd = lazy_import("pandas")  # loads with the first data tool call, not at server start


def _stratify_ok(y: np.ndarray | None, share: float) -> bool:
    """A stratified split needs every class at least twice on each side of the cut."""
    if y is None:
        return False
    counts = np.unique(y, return_counts=True)[1]
    return bool(counts.min() * min(share, 1 - share) >= 2)


def _time_split(n: int, shares: tuple[float, float, float], order: pd.Series | None) -> dict[str, np.ndarray]:
    """Oldest rows train, newest test."""
    if order is None:
        raise InvalidInputError("split_strategy='time' needs time_column= (the column that orders the rows).")
    from ml_expert.tools.core.portable.preprocessing import date_format, read_dates  # sklearn: not at server start

    # dates as the features read them: day first where written so (03/11/2024 is 3 November), every zone in UTC
    numeric = pd.api.types.is_numeric_dtype(order)
    keys = order.to_numpy() if numeric else read_dates(order, date_format(order)).to_numpy()
    sorted_idx = np.arange(n)[np.argsort(keys, kind="stable")]
    a, b = round(n * shares[0]), round(n * (shares[0] + shares[1]))
    return {"train": sorted_idx[:a], "val": sorted_idx[a:b], "test": sorted_idx[b:]}


def _group_split(
    n: int, shares: tuple[float, float, float], groups: np.ndarray | None, seed: int
) -> dict[str, np.ndarray]:
    """Every group's rows in one split."""
    from sklearn.model_selection import GroupShuffleSplit

    if groups is None:
        raise InvalidInputError("split_strategy='group' needs group_column= (rows of a group stay together).")
    if len(np.unique(groups)) < 3:
        raise InvalidInputError(
            f"split_strategy='group' needs at least 3 distinct groups; received {len(np.unique(groups))}."
        )
    _, val_share, test_share = shares
    outer = GroupShuffleSplit(n_splits=1, test_size=val_share + test_share, random_state=seed)
    train, rest = next(outer.split(np.arange(n), groups=groups))
    inner = GroupShuffleSplit(n_splits=1, test_size=test_share / (val_share + test_share), random_state=seed)
    v, t = next(inner.split(rest, groups=groups[rest]))
    return {"train": train, "val": rest[v], "test": rest[t]}


def _random_split(
    n: int, shares: tuple[float, float, float], y: np.ndarray | None, seed: int, warnings: list[str]
) -> dict[str, np.ndarray]:
    """Random, stratified by class where every class is large enough."""
    from sklearn.model_selection import train_test_split

    _, val_share, test_share = shares
    rest_share = val_share + test_share
    strat = y if _stratify_ok(y, rest_share) else None
    if y is not None and strat is None:
        warnings.append(
            "Some classes are too small to stratify the split; used a plain random split instead, "
            "so a rare class may be missing from validation or test."
        )
    train, rest = train_test_split(np.arange(n), test_size=rest_share, random_state=seed, stratify=strat)
    inner_share = test_share / rest_share
    strat2 = y[rest] if strat is not None and y is not None and _stratify_ok(y[rest], inner_share) else None
    if strat is not None and strat2 is None:
        warnings.append("Validation/test could not both be stratified (small classes); split them randomly.")
    val, test = train_test_split(rest, test_size=inner_share, random_state=seed, stratify=strat2)
    return {"train": train, "val": val, "test": test}


def _every_class_in_training(
    parts: dict[str, np.ndarray], y: np.ndarray, strategy: str, labels: list[str] | None, warnings: list[str]
) -> dict[str, np.ndarray]:
    """A model cannot learn a class it never saw, and its probabilities would lack that class's column: a random
    split moves one row of each class absent from training there (from test, else validation); a group or time
    split, whose rows cannot move, is refused with the classes named."""
    absent = np.setdiff1d(np.unique(y), np.unique(y[parts["train"]]))
    if not len(absent):
        return parts
    names = [labels[int(c)] if labels else str(c) for c in absent[:10]]
    if strategy != "random":
        raise InvalidInputError(
            f"With split_strategy={strategy!r}, no training row has the class(es) {names} (all their rows fell in "
            "validation or test), so no model could learn them. Drop those rows or merge the classes, or use "
            "split_strategy='random'."
        )
    parts = dict(parts)
    for c in absent:
        holding = [name for name in ("test", "val") if (y[parts[name]] == c).any()]
        source = max(holding, key=lambda name: len(parts[name]))  # the larger split gives the row
        if len(parts[source]) == 1:
            raise InvalidInputError(
                f"The class {labels[int(c)] if labels else str(c)!r} has no row in the training split, and the "
                f"{source} split is its one row: too few rows to split. Add rows, or drop that class."
            )
        row = parts[source][np.flatnonzero(y[parts[source]] == c)[0]]
        parts[source] = parts[source][parts[source] != row]
        parts["train"] = np.append(parts["train"], row)
    warnings.append(
        f"The class(es) {names} had no row in the training split; one row of each was moved there from "
        "validation/test, since a model cannot learn a class it never saw."
    )
    return parts


def split_indices(
    n: int,
    shares: tuple[float, float, float],
    *,
    strategy: str = "random",
    y: np.ndarray | None = None,
    groups: np.ndarray | None = None,
    order: pd.Series | None = None,
    seed: int = 42,
    labels: list[str] | None = None,
) -> tuple[dict[str, np.ndarray], list[str]]:
    """Row positions of the train, val and test splits, and any warnings (e.g. stratification dropped). With class
    indices y (named by labels), every class keeps at least one training row."""
    warnings: list[str] = []
    if strategy == "time":
        parts = _time_split(n, shares, order)
    elif strategy == "group":
        parts = _group_split(n, shares, groups, seed)
    else:
        parts = _random_split(n, shares, y, seed, warnings)
    if y is not None:
        parts = _every_class_in_training(parts, y, strategy, labels, warnings)
    for name, part in parts.items():
        if len(part) == 0:
            raise InvalidInputError(
                f"The {name} split is empty with {n} rows and shares {list(shares)}. Use more rows or larger shares."
            )
    return {k: np.sort(v) if strategy != "time" else v for k, v in parts.items()}, warnings
