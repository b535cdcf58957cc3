"""Model combiners that travel with a deployment package (numpy and scikit-learn only).

`package` copies this module next to `inference.py` as `ml_expert_ensemble.py`; its classes pickle under
that module name, which resolves both here and in a deployment folder without ml-expert installed.

- `Blend`: the weighted average of fitted members' class probabilities (or values), as chosen by greedy
  ensemble selection, optionally with a tuned decision threshold for a binary task; regression output is kept to
  a margin around the training target's range (`bounds`); exact ties of class probabilities go to the class more
  frequent in the training rows (`shares`, `TIE_TILT`).
- `Coded`: a tree model that sees each one-hot group of the prepared row as one column of category codes, and
  each scaled ordinal column (a categorical with too many levels to one-hot) as its unscaled codes
  (`one_hot_codes`): boosting splits on them as native categoricals, forests as ordinal codes.
- `TargetEncoded`: a tree model on code columns in which each categorical with more levels than boosting's native
  splits take is replaced by its target encoding (scikit-learn's `TargetEncoder`, fitted on the model's own training
  rows with cross fitting; `target_encoded`).
- `CatBoost`: CatBoost's gradient boosting as a scikit-learn estimator on prepared rows, the code columns
  `categorical` as its categorical features (ordered target statistics); needs `catboost` where it is used.
- `Prior`: a classifier fitted on the rows as they are that decides for balanced accuracy, its class probabilities
  divided by the class shares of its training rows.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator

MODULE_NAME = "ml_expert_ensemble"
# Balanced class weights (boosting) and `Prior`'s division make every class equally likely before a model learns
# anything: a model that learned nothing (no signal in the rows) gave exactly equal probabilities, and argmax took the
# first class by name for every row (MASS's survey, smoking: its rarest class, test accuracy 0.00 where the majority
# is 0.83). `Blend` and `Prior` raise each class's probability by this share of its frequency in the training rows:
# exact ties go to the more frequent class (still above float32's resolution), and no other decision moves.
TIE_TILT = 1e-6


def class_shares(y: Any, n_classes: int) -> list[float]:
    """The share of each class code 0..n_classes-1 in the training rows `y`."""
    counts = np.bincount(np.asarray(y, dtype=np.int64), minlength=n_classes)
    return [float(c) for c in counts / max(counts.sum(), 1)]


def lean_to_frequent(probs: np.ndarray, shares: Any) -> np.ndarray:
    """Class probabilities raised by TIE_TILT times their class's share, renormalised (see TIE_TILT); as they are
    when the shares do not match their classes (a tie-break never stops a prediction)."""
    lean = np.asarray(shares, dtype=np.float64)
    if probs.ndim != 2 or lean.shape != (probs.shape[1],):
        return probs
    tilted = probs * (1 + TIE_TILT * lean)
    return tilted / tilted.sum(axis=1, keepdims=True)


sys.modules.setdefault(MODULE_NAME, sys.modules[__name__])


def shift_threshold(p1: np.ndarray, threshold: float) -> np.ndarray:
    """Map P(class 1) monotonically so that `threshold` lands on 0.5: argmax then decides at the threshold
    while the ranking of rows (ROC AUC) is unchanged."""
    t = min(max(float(threshold), 1e-6), 1 - 1e-6)
    return np.where(p1 <= t, 0.5 * p1 / t, 0.5 + 0.5 * (p1 - t) / (1 - t))


OrdinalColumn = tuple[int, float, float, int]  # (column, value of code 0, step per code, categories)


def one_hot_codes(X: Any, groups: list[list[int]], ordinal: Sequence[OrdinalColumn] = ()) -> np.ndarray:
    """The prepared rows with each one-hot group (column indices) replaced by one column of its category's index,
    -1 where no category of the group is set (a category unseen in training), and each ordinal column
    `(column, value of code 0, step per code, categories)` (a scaled ordinal encoding) by its code (-1: unseen or
    missing): the other columns first, in order, then one code column per group, then one per ordinal column."""
    source = np.asarray(X)
    X = source.astype(np.float32, copy=False)
    coded = np.zeros(X.shape[1], dtype=bool)
    for group in groups:
        coded[group] = True
    for column, *_ in ordinal:
        coded[column] = True
    codes = np.empty((X.shape[0], len(groups) + len(ordinal)), dtype=np.float32)
    for i, group in enumerate(groups):
        block = X[:, group]
        codes[:, i] = np.where(block.max(axis=1) > 0.5, block.argmax(axis=1), -1)
    for i, (column, zero, step, _) in enumerate(ordinal, start=len(groups)):
        codes[:, i] = np.rint((source[:, column].astype(np.float64) - zero) / step)  # before float32 rounding
    return np.hstack([X[:, ~coded], codes])


class Coded:
    """A model fitted on `one_hot_codes(X, groups, ordinal)`, applied to prepared rows X."""

    def __init__(self, model: Any, groups: list[list[int]], ordinal: Sequence[OrdinalColumn] = ()) -> None:
        self.model = model
        self.groups = groups
        self.ordinal = [tuple(o) for o in ordinal]
        if hasattr(model, "classes_"):
            self.classes_ = model.classes_

    def _codes(self, X: Any) -> np.ndarray:
        return one_hot_codes(X, self.groups, getattr(self, "ordinal", ()))  # packages pickled before: none

    def predict(self, X: Any) -> np.ndarray:
        return self.model.predict(self._codes(X))

    def predict_proba(self, X: Any) -> np.ndarray:
        return self.model.predict_proba(self._codes(X))

    def __repr__(self) -> str:
        ordinal = getattr(self, "ordinal", ())
        return (
            f"Coded({type(self.model).__name__}, {len(self.groups)} categorical groups"
            f"{f', {len(ordinal)} ordinal columns' if ordinal else ''})"
        )


def target_encoded(X: Any, encoder: Any, columns: Sequence[int], encoded: Any = None) -> np.ndarray:
    """Code columns (`one_hot_codes`) with each column of `columns` replaced by its target encoding: `encoded` when
    given (the training rows' cross-fitted encodings), else `encoder.transform`. A feature's first encoded column
    takes its place, its others (one per class beyond the first, multiclass) are appended, feature by feature."""
    X = np.asarray(X, dtype=np.float32)
    columns = list(columns)
    values = np.asarray(encoder.transform(X[:, columns]) if encoded is None else encoded, dtype=np.float32)
    width = values.shape[1] // len(columns)
    out = X.copy()
    out[:, columns] = values[:, ::width]
    return np.hstack([out, np.delete(values, np.s_[::width], axis=1)]) if width > 1 else out


class TargetEncoded:
    """A tree model fitted on `target_encoded` code columns, applied to code columns."""

    def __init__(self, model: Any, encoder: Any, columns: Sequence[int]) -> None:
        self.model = model
        self.encoder = encoder
        self.columns = list(columns)
        if hasattr(model, "classes_"):
            self.classes_ = model.classes_

    def predict(self, X: Any) -> np.ndarray:
        return self.model.predict(target_encoded(X, self.encoder, self.columns))

    def predict_proba(self, X: Any) -> np.ndarray:
        return self.model.predict_proba(target_encoded(X, self.encoder, self.columns))

    def __repr__(self) -> str:
        return f"TargetEncoded({type(self.model).__name__}, {len(self.columns)} target-encoded columns)"


class Prior:
    """A classifier fitted on the rows as they are, deciding for balanced accuracy: its class probabilities divided
    by the class shares of its training rows `y` (renormalised), so that argmax is the rule that maximises balanced
    accuracy for calibrated probabilities. The probabilities are those of a world of equally frequent classes, as a
    class-weighted model's are, so members of both kinds blend and take a tuned threshold alike."""

    def __init__(self, model: Any, y: Any) -> None:
        self.model = model
        self.classes_ = np.asarray(model.classes_)
        labels = np.asarray(y)
        self.priors = np.array([np.mean(labels == c) for c in self.classes_])

    def predict_proba(self, X: Any) -> np.ndarray:
        p = np.asarray(self.model.predict_proba(X)) / self.priors  # a model that learned nothing: all equal
        return lean_to_frequent(p / p.sum(axis=1, keepdims=True), self.priors)

    def predict(self, X: Any) -> np.ndarray:
        return self.classes_[self.predict_proba(X).argmax(axis=1)]

    def __repr__(self) -> str:
        return f"Prior({self.model!r})"


class Blend:
    """Weighted members; `predict_proba` for classification, `predict` for both tasks."""

    def __init__(
        self,
        members: list[Any],
        weights: list[float],
        classify: bool,
        threshold: float | None = None,
        bounds: tuple[float, float] | None = None,
        shares: list[float] | None = None,
    ) -> None:
        total = float(sum(weights))
        self.members = members
        self.weights = [float(w) / total for w in weights]
        self.classify = classify
        self.threshold = threshold
        self.bounds = bounds
        self.shares = shares  # the training rows' class shares: exact ties go to the more frequent class
        if classify:
            self.classes_ = members[0].classes_

    def _average(self, X: Any, method: str) -> np.ndarray:
        out = None
        for member, weight in zip(self.members, self.weights, strict=True):
            part = np.asarray(getattr(member, method)(X), dtype=np.float64) * weight
            out = part if out is None else out + part
        return out  # type: ignore[return-value]

    def predict_proba(self, X: Any) -> np.ndarray:
        probs = self._average(X, "predict_proba")
        shares = getattr(self, "shares", None)  # packages pickled before shares existed have none
        if shares is not None:
            probs = lean_to_frequent(probs, shares)
        if self.threshold is not None and probs.shape[1] == 2:
            p1 = shift_threshold(probs[:, 1], self.threshold)
            probs = np.column_stack([1 - p1, p1])
        return probs

    def predict(self, X: Any) -> np.ndarray:
        if self.classify:
            return np.asarray(self.classes_)[self.predict_proba(X).argmax(axis=1)]
        values = self._average(X, "predict")
        bounds = getattr(self, "bounds", None)  # packages pickled before bounds existed have none
        return values if bounds is None else np.clip(values, *bounds)

    def __repr__(self) -> str:
        parts = ", ".join(f"{type(m).__name__}×{w:.2f}" for m, w in zip(self.members, self.weights, strict=True))
        return f"Blend({parts}{f', threshold={self.threshold:.3f}' if self.threshold is not None else ''})"


def target_bounds(y: np.ndarray, margin: float = 0.25) -> tuple[float, float]:
    """The training target's range widened by `margin` of its span on each side: what a blend may predict."""
    low, high = float(np.min(y)), float(np.max(y))
    span = high - low
    return low - margin * span, high + margin * span


class CatBoost(BaseEstimator):
    """CatBoost (classifier or regressor) on a float matrix whose columns `categorical` hold category codes (-1:
    unseen or missing): those become its categorical features. A scikit-learn estimator (a target transform can
    wrap it); `fit` takes CatBoost's eval_set (those rows say when to stop; the model is not rolled back to their best
    iteration) and callbacks.
    """

    def __init__(
        self,
        classify: bool = False,
        categorical: tuple[int, ...] = (),
        iterations: int = 1000,
        learning_rate: float = 0.08,
        depth: int = 6,
        l2_leaf_reg: float = 3.0,
        max_ctr_complexity: int = 4,
        random_seed: int = 0,
        thread_count: int = -1,
        od_wait: int = 50,
        eval_fraction: float = 0.0,
    ) -> None:
        self.classify, self.categorical, self.iterations = classify, categorical, iterations
        self.learning_rate, self.depth, self.l2_leaf_reg = learning_rate, depth, l2_leaf_reg
        self.max_ctr_complexity, self.random_seed = max_ctr_complexity, random_seed
        self.thread_count, self.od_wait, self.eval_fraction = thread_count, od_wait, eval_fraction

    def _frame(self, X: Any) -> Any:
        """The rows as CatBoost takes them: a frame whose categorical columns are integers."""
        X = np.asarray(X, dtype=np.float32)
        if not self.categorical:
            return X
        import pandas as pd

        frame = pd.DataFrame(X, columns=[f"f{i}" for i in range(X.shape[1])])
        for i in self.categorical:
            frame[f"f{i}"] = X[:, i].astype(np.int32)
        return frame

    def fit(
        self, X: Any, y: Any, eval_set: tuple[Any, Any] | None = None, callbacks: list[Any] | None = None
    ) -> CatBoost:
        from catboost import CatBoostClassifier, CatBoostRegressor

        settings = {
            "iterations": int(self.iterations), "learning_rate": self.learning_rate, "depth": self.depth,
            "l2_leaf_reg": self.l2_leaf_reg, "max_ctr_complexity": self.max_ctr_complexity,
            "random_seed": self.random_seed, "thread_count": self.thread_count, "verbose": 0,
            "allow_writing_files": False, "cat_features": [f"f{i}" for i in self.categorical] or None,
        }  # fmt: skip
        if eval_set is None and self.eval_fraction:  # no rows given to watch: early-stop on a share split off
            settings |= {"eval_fraction": self.eval_fraction}
        if eval_set is not None or self.eval_fraction:
            # Given rows (a fold's held-out rows, which also score it out of fold) only say when to stop: rolling
            # back to their best iteration would pick the model on the rows that score it. A split-off share of
            # the training rows is never scored: there the best iteration is kept.
            settings |= {"od_type": "Iter", "od_wait": self.od_wait, "use_best_model": eval_set is None}
        model = CatBoostClassifier(**settings) if self.classify else CatBoostRegressor(**settings)
        evaluation = None if eval_set is None else (self._frame(eval_set[0]), np.asarray(eval_set[1]))
        model.fit(self._frame(X), np.asarray(y), eval_set=evaluation, callbacks=callbacks)
        self.model_ = model
        if self.classify:
            self.classes_ = np.asarray(model.classes_)
        return self

    @property
    def n_iter_(self) -> int:
        """Trees in the fitted model (after early stopping, the best iteration's)."""
        return int(self.model_.tree_count_)

    def predict_proba(self, X: Any) -> np.ndarray:
        return np.asarray(self.model_.predict_proba(self._frame(X)))

    def predict(self, X: Any) -> np.ndarray:
        if self.classify:
            return self.classes_[self.predict_proba(X).argmax(axis=1)]
        return np.asarray(self.model_.predict(self._frame(X)), dtype=np.float64)

    def __repr__(self) -> str:
        return f"CatBoost(lr={self.learning_rate}, depth={self.depth}, {len(self.categorical)} categorical columns)"


for _cls in (Blend, Coded, TargetEncoded, Prior, CatBoost):
    _cls.__module__ = MODULE_NAME
