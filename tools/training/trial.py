"""One candidate's cross-validation as the search records it, and the helpers that read a fitted model."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from ml_expert.tools.core.lazy import lazy_import
from ml_expert.tools.core.tasks import is_classification
from ml_expert.tools.training.portfolio import Config, is_catboost

np = lazy_import("numpy")  # loads on first use, not at server start


class Cancelled(Exception):
    """The cancel flag was seen between two chunks of a fit."""


@dataclass(eq=False)  # identity-hashed: trials are dict keys in the ensemble
class Trial:
    """A candidate's cross-validation: per-fold scores, out-of-fold output, fit times, boosting iterations."""

    config: Config
    scores: list[float] = field(default_factory=list)
    oof: np.ndarray | None = None
    seconds: list[float] = field(default_factory=list)
    iterations: list[int] = field(default_factory=list)
    stopped: str | None = None
    rows: int | None = None  # rows its fits saw when a row-sample rung decided it
    capped: int = 0  # fits the deadline stopped before they converged
    where: set[str] = field(default_factory=set)  # "local", or the Dask worker addresses its fits ran on
    models: dict[int, Any] = field(default_factory=dict)  # fold -> fitted fold model, kept for bagging

    @property
    def complete(self) -> bool:
        return self.stopped is None and self.oof is not None

    @property
    def mean(self) -> float:
        return float(np.mean(self.scores)) if self.scores else -math.inf

    @property
    def fold_seconds(self) -> float:
        return float(np.mean(self.seconds)) if self.seconds else 0.0

    def row(self, metric: str) -> dict[str, Any]:
        sign = -1 if metric == "rmse" else 1  # show RMSE as RMSE, rank by its negation
        return {
            "candidate": self.config.label(),
            "family": self.config.family,
            "params": self.config.kwargs
            | ({"log_target": True} if self.config.log_target else {})
            | ({"one_hot": True} if self.config.one_hot else {}),
            f"cv_{metric}": round(sign * self.mean, 5) if self.scores else None,
            "cv_std": round(float(np.std(self.scores)), 5) if len(self.scores) > 1 else None,
            "folds": len(self.scores),
            "fit_seconds": round(sum(self.seconds), 2),
            "status": self.stopped or "complete",
            **({"rows": self.rows} if self.rows else {}),
            **({"ran_on": sorted(self.where)} if self.where - {"local"} else {}),
        }


def output_of(model: Any, task: str, X: np.ndarray) -> np.ndarray:
    return model.predict_proba(X) if is_classification(task) else model.predict(X)


def early_stopped_iterations(model: Any) -> int | None:
    """The iterations an early-stopped boosting fold model kept (what a refit on all rows grows), else None."""
    inner = getattr(model, "regressor_", model)
    if is_catboost(inner):
        return max(10, inner.n_iter_) if "od_type" in inner.model_.get_params() else None
    if hasattr(inner, "n_iter_") and getattr(inner, "n_iter_no_change", None) and inner.early_stopping:
        return max(10, int(inner.n_iter_) - int(inner.n_iter_no_change))
    return None


def widen(output: np.ndarray, classes: np.ndarray, n_classes: int) -> np.ndarray:
    wide = np.zeros((len(output), n_classes))
    wide[:, classes.astype(int)] = output
    return wide
