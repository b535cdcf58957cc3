"""The one scorer: every metric of a task, the headline metrics, the dummy baseline and the verdict; the
search's ranking metric and its fast score; the one imbalance rule.

Training (validation scores), the search/probe (ranking) and evaluate (test report) all score here,
so a number means the same wherever it appears. Clustering scores need the features `X`.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from ml_expert.memory.errors import InvalidInputError
from ml_expert.tools.core.lazy import lazy_import
from ml_expert.tools.core.tasks import is_classification

np = lazy_import("numpy")  # loads on first use, not at server start

HEADLINE = {
    "classification": ("balanced_accuracy", "accuracy"),
    "regression": ("r2", "rmse"),
    "clustering": ("silhouette", "adjusted_rand"),
}


IMBALANCE_RATIO = 4.0  # majority / minority class count from which classes count as imbalanced


def imbalance_ratio(y: np.ndarray) -> float:
    """Largest class count / smallest (classes present only)."""
    counts = np.bincount(np.asarray(y).astype(int))
    counts = counts[counts > 0]
    return float(counts.max() / counts.min())


def is_imbalanced(y: np.ndarray) -> bool:
    """The one imbalance rule: balanced class weights and the balanced-accuracy search metric from this ratio."""
    return imbalance_ratio(y) >= IMBALANCE_RATIO


def search_metric(task: str, y: np.ndarray) -> str:
    """The metric the search optimises: balanced accuracy for imbalanced classes, else accuracy; RMSE."""
    if not is_classification(task):
        return "rmse"
    return "balanced_accuracy" if is_imbalanced(y) else "accuracy"


def rank_score(metric: str, y: np.ndarray, output: np.ndarray) -> float:
    """The search's metric, higher is better (RMSE negated), in numpy alone: it runs for every candidate's fold and
    every ensemble step. The same values as `scores` gives for these metrics. `output`: probabilities or values."""
    if metric == "rmse":
        return -float(np.sqrt(np.mean((y - output) ** 2)))
    pred = output.argmax(axis=1)
    if metric == "accuracy":
        return float(np.mean(pred == y))
    recalls = [np.mean(pred[y == c] == c) for c in np.unique(y)]
    return float(np.mean(recalls))


class TargetSpec(BaseModel):
    metric: str = Field(description="Metric name, e.g. 'accuracy', 'f1_macro', 'rmse', 'r2'.")
    min: float | None = Field(None, description="Pass when metric >= min (for scores).")
    max: float | None = Field(None, description="Pass when metric <= max (for errors such as rmse).")


def family(task: str) -> str:
    return "classification" if is_classification(task) else task


def main_key(task: str) -> str:
    """The metric that ranks models: balanced accuracy, R², or adjusted Rand for clustering."""
    return {"classification": "balanced_accuracy", "regression": "r2"}.get(family(task), "adjusted_rand")


def _classification(y: np.ndarray, output: np.ndarray) -> dict[str, float]:
    from sklearn import metrics as m

    pred = output.argmax(axis=1)
    out = {"accuracy": m.accuracy_score(y, pred), "balanced_accuracy": m.balanced_accuracy_score(y, pred)}
    for avg in ("macro", "weighted"):
        p, r, f, _ = m.precision_recall_fscore_support(y, pred, average=avg, zero_division=0)
        out |= {f"precision_{avg}": p, f"recall_{avg}": r, f"f1_{avg}": f}
    probs = np.clip(output, 1e-15, 1)
    probs = probs / probs.sum(axis=1, keepdims=True)
    labels = list(range(output.shape[1]))
    out["log_loss"] = m.log_loss(y, probs, labels=labels)
    if len(np.unique(y)) == output.shape[1]:
        out["roc_auc"] = (
            m.roc_auc_score(y, probs[:, 1])
            if output.shape[1] == 2
            else m.roc_auc_score(y, probs, multi_class="ovr", labels=labels)
        )
    return {k: float(v) for k, v in out.items()}


SILHOUETTE_ROWS = 10_000


def scores(task: str, y: np.ndarray, output: np.ndarray, X: np.ndarray | None = None) -> dict[str, float]:
    """Every metric for the task, computed with scikit-learn. `output` is what `predict_output` returns."""
    from sklearn import metrics as m

    if task == "clustering":
        labels = output.astype(int)
        several = len(set(labels)) > 1 and X is not None
        return {
            "silhouette": _silhouette(X, labels) if several else -1.0,
            "davies_bouldin": float(m.davies_bouldin_score(X, labels)) if several else float("inf"),
            "adjusted_rand": float(m.adjusted_rand_score(y, labels)),
        }
    if is_classification(task):
        return _classification(y, output)
    out = {
        "rmse": float(np.sqrt(m.mean_squared_error(y, output))),
        "mae": float(m.mean_absolute_error(y, output)),
        "r2": float(m.r2_score(y, output)),
    }
    if np.all(np.abs(y) > 1e-12):
        out["mape"] = float(m.mean_absolute_percentage_error(y, output))
    return out


def _silhouette(X: np.ndarray, labels: np.ndarray) -> float:
    """silhouette_score, which is quadratic in rows: above SILHOUETTE_ROWS on a seeded sample of them (-1 when the
    sample holds a single cluster, as the whole of a one-cluster result scores)."""
    from sklearn import metrics as m

    if len(labels) > SILHOUETTE_ROWS:
        rows = np.random.default_rng(0).choice(len(labels), SILHOUETTE_ROWS, replace=False)
        X, labels = X[rows], labels[rows]
        if len(np.unique(labels)) < 2:
            return -1.0
    return float(m.silhouette_score(X, labels))


def headline(task: str, metrics: dict[str, float]) -> dict[str, float]:
    """The two metrics shown for validation and probes (ranking metric first)."""
    return {k: metrics[k] for k in HEADLINE[family(task)]}


def dummy_output(task: str, y_train: np.ndarray, n: int, n_classes: int) -> np.ndarray:
    """What a model that learned nothing predicts: the training majority class, or the training mean."""
    if is_classification(task):
        out = np.zeros((n, n_classes))
        out[:, np.bincount(y_train.astype(int), minlength=n_classes).argmax()] = 1.0
        return out
    if task == "clustering":
        return np.zeros(n)
    return np.full(n, float(np.mean(y_train)))


def baseline_scores(task: str, y_train: np.ndarray, y_true: np.ndarray, n_classes: int) -> dict[str, float]:
    """The dummy baseline scored on the same rows (clustering: a single cluster scores 0 on both metrics)."""
    if task == "clustering":
        return {"silhouette": 0.0, "adjusted_rand": 0.0}
    return scores(task, y_true, dummy_output(task, y_train, len(y_true), n_classes))


def beats_baseline(task: str, metrics: dict[str, float], baseline: dict[str, float]) -> bool:
    """True when the main metric clears the dummy baseline by a margin that noise rarely reaches."""
    key = main_key(task)
    margin = 0.05 if key == "r2" else 0.02
    return metrics[key] > baseline[key] + margin


def check_target(target: TargetSpec | None, metrics: dict[str, float]) -> dict[str, Any] | None:
    """The target with its measured value and pass/fail, or a clear error for an unknown metric."""
    if target is None:
        return None
    if target.metric not in metrics:
        raise InvalidInputError(
            f"target metric {target.metric!r} is not computed for this task. Choose one of {sorted(metrics)}."
        )
    if target.min is None and target.max is None:
        raise InvalidInputError("target needs min (for scores like accuracy) or max (for errors like rmse).")
    value = metrics[target.metric]
    passed = (target.min is None or value >= target.min) and (target.max is None or value <= target.max)
    return {**target.model_dump(exclude_none=True), "value": value, "passed": passed}
