"""Cross-validation folds of the model search over the training rows (train + validation; never the test split).

5 folds (3 above 20,000 rows, one 80/20 hold-out above 200,000, or the k asked for); stratified for
classification where every class can fill each fold; in time order when prepare_data split by time; whole
groups per fold when it split by group.
"""

from __future__ import annotations

from ml_expert.memory.errors import InvalidInputError
from ml_expert.tools.core.lazy import lazy_import
from ml_expert.tools.core.tasks import is_classification

np = lazy_import("numpy")  # loads on first use, not at server start

Folds = list[tuple["np.ndarray", "np.ndarray"]]


def folds(
    y: np.ndarray,
    task: str,
    split_strategy: str,
    seed: int,
    k: int | None = None,
    groups: np.ndarray | None = None,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """CV splits of the training rows: 5 folds (3 above 20,000 rows, a 80/20 hold-out above 200,000, or k);
    in time order when prepare_data split by time, and whole groups per fold when it split by group."""
    from sklearn.model_selection import KFold, StratifiedKFold, TimeSeriesSplit, train_test_split

    n = len(y)
    idx = np.arange(n)
    if split_strategy == "time":  # prepare_data kept train then validation in time order
        return list(TimeSeriesSplit(n_splits=4 if n >= 500 else 3).split(idx))
    if split_strategy == "group" and groups is not None:
        return _group_folds(y, task, groups, seed, k or (5 if n <= 20_000 else 3))
    classify = is_classification(task)
    if n > 200_000 or k == 1:
        strat = y if classify else None
        train, test = train_test_split(idx, test_size=0.2, random_state=seed, stratify=strat)
        return [(train, test)]
    k = k or (5 if n <= 20_000 else 3)
    if classify and np.bincount(y.astype(int))[np.bincount(y.astype(int)) > 0].min() >= k:
        return list(StratifiedKFold(k, shuffle=True, random_state=seed).split(idx, y))
    return list(KFold(k, shuffle=True, random_state=seed).split(idx))


def _group_folds(
    y: np.ndarray, task: str, groups: np.ndarray, seed: int, k: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Folds that keep every group's rows together (stratified by class where the classes allow), as the
    train/validation/test split did: a model is never scored on rows of a group it was fitted on."""
    from sklearn.model_selection import GroupKFold, GroupShuffleSplit, StratifiedGroupKFold

    idx = np.arange(len(y))
    if len(np.unique(groups)) < 2:
        raise InvalidInputError("Group-aware cross-validation needs at least 2 groups among the training rows.")
    if k == 1 or len(y) > 200_000:
        return list(GroupShuffleSplit(1, test_size=0.2, random_state=seed).split(idx, y, groups))
    k = min(k, len(np.unique(groups)))
    if is_classification(task) and np.bincount(y.astype(int))[np.bincount(y.astype(int)) > 0].min() >= k:
        return list(StratifiedGroupKFold(k, shuffle=True, random_state=seed).split(idx, y, groups))
    return list(GroupKFold(k).split(idx, y, groups))
