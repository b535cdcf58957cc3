"""Model combiners that travel with a deployment package (numpy and scikit-learn only).

`package` copies this module next to `inference.py` as `ml_expert_ensemble.py`; its classes pickle under
that module name, which resolves both here and in a deployment folder without ml-expert installed.

- `Blend`: the weighted average of fitted members' class probabilities (or values), as chosen by greedy
  ensemble selection, optionally with a tuned decision threshold for a binary task.
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


class Blend:
    """Weighted members; `predict_proba` for classification, `predict` for both tasks."""

    def __init__(
        self, members: list[Any], weights: list[float], classify: bool, threshold: float | None = None
    ) -> None:
        total = float(sum(weights))
        self.members = members
        self.weights = [float(w) / total for w in weights]
        self.classify = classify
        self.threshold = threshold
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
        return self._average(X, "predict")

    def __repr__(self) -> str:
        parts = ", ".join(f"{type(m).__name__}×{w:.2f}" for m, w in zip(self.members, self.weights, strict=True))
        return f"Blend({parts}{f', threshold={self.threshold:.3f}' if self.threshold is not None else ''})"


for _cls in (Blend,):
    _cls.__module__ = MODULE_NAME
