"""Model combiners that travel with a deployment package (numpy and scikit-learn only).

`package` copies this module next to `inference.py` as `ml_expert_ensemble.py`; its classes pickle under
that module name, which resolves both here and in a deployment folder without ml-expert installed.

- `Blend`: the weighted average of fitted members' class probabilities (or values), as chosen by greedy
  ensemble selection, optionally with a tuned decision threshold for a binary task; regression output is kept to
  a margin around the training target's range (`bounds`).
- `Coded`: a tree model that sees each one-hot group of the prepared row as one column of category codes
  (`one_hot_codes`): boosting splits on them as native categoricals, forests as ordinal codes.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

MODULE_NAME = "ml_expert_ensemble"
sys.modules.setdefault(MODULE_NAME, sys.modules[__name__])


def shift_threshold(p1: np.ndarray, threshold: float) -> np.ndarray:
    """Map P(class 1) monotonically so that `threshold` lands on 0.5: argmax then decides at the threshold
    while the ranking of rows (ROC AUC) is unchanged."""
    t = min(max(float(threshold), 1e-6), 1 - 1e-6)
    return np.where(p1 <= t, 0.5 * p1 / t, 0.5 + 0.5 * (p1 - t) / (1 - t))


def one_hot_codes(X: Any, groups: list[list[int]]) -> np.ndarray:
    """The prepared rows with each one-hot group (column indices) replaced by one column of its category's index,
    -1 where no category of the group is set (a category unseen in training): the ungrouped columns first, in
    order, then one code column per group."""
    X = np.asarray(X, dtype=np.float32)
    grouped = np.zeros(X.shape[1], dtype=bool)
    for group in groups:
        grouped[group] = True
    codes = np.empty((X.shape[0], len(groups)), dtype=np.float32)
    for i, group in enumerate(groups):
        block = X[:, group]
        codes[:, i] = np.where(block.max(axis=1) > 0.5, block.argmax(axis=1), -1)
    return np.hstack([X[:, ~grouped], codes])


class Coded:
    """A model fitted on `one_hot_codes(X, groups)`, applied to prepared rows X."""

    def __init__(self, model: Any, groups: list[list[int]]) -> None:
        self.model = model
        self.groups = groups
        if hasattr(model, "classes_"):
            self.classes_ = model.classes_

    def predict(self, X: Any) -> np.ndarray:
        return self.model.predict(one_hot_codes(X, self.groups))

    def predict_proba(self, X: Any) -> np.ndarray:
        return self.model.predict_proba(one_hot_codes(X, self.groups))

    def __repr__(self) -> str:
        return f"Coded({type(self.model).__name__}, {len(self.groups)} categorical groups)"


class Blend:
    """Weighted members; `predict_proba` for classification, `predict` for both tasks."""

    def __init__(
        self,
        members: list[Any],
        weights: list[float],
        classify: bool,
        threshold: float | None = None,
        bounds: tuple[float, float] | None = None,
    ) -> None:
        total = float(sum(weights))
        self.members = members
        self.weights = [float(w) / total for w in weights]
        self.classify = classify
        self.threshold = threshold
        self.bounds = bounds
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


for _cls in (Blend, Coded):
    _cls.__module__ = MODULE_NAME
