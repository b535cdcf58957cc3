"""Leakage suspects for `analyze_data`: features that alone predict the target almost perfectly on held-out rows.

Each feature's rule is learned on a seeded random half of (a sample of) the rows and scored on the other half:
- every feature, binned (64 quantile bins for numbers, codes for categories): bin -> majority class, or mean;
- a number and two classes: the best single cut (`low` is `bwt < 2500` in MASS's birthwt: its 95 training rows
  filled 64 bins too thinly for the bins to see it, 0.92 held-out accuracy against the cut's 1.00);
- a number and a numeric target: a straight line (a target that is a feature in other units).
NumPy only, so wide and long data stay fast. Over the bench's 50+ tables the cut and the line add one suspect, AER
CreditCard's `share` (spending over income, 0 without a card: the leak its `expenditure` already showed).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ml_expert.tools.core.lazy import lazy_import
from ml_expert.tools.core.tasks import is_classification
from ml_expert.tools.data.findings import DataWarning
from ml_expert.tools.workspace import DEFAULT_SEED

if TYPE_CHECKING:
    from ml_expert.tools.data.analyze import TargetSummary

np = lazy_import("numpy")
pd = lazy_import("pandas")

LEAKAGE_SAMPLE = 5000
SUSPECT_SCORE = 0.98  # held-out accuracy (and 0.05 above the majority class) or R² from which a feature is suspect


def _codes(x: pd.Series) -> np.ndarray:
    """A feature as small integer bins: 64 quantile bins for numbers, codes for categories; missing = own bin."""
    if pd.api.types.is_numeric_dtype(x.dtype):
        values = x.to_numpy(dtype=float)
        edges = np.unique(np.nanquantile(values, np.linspace(0, 1, 65)[1:-1])) if np.isfinite(values).any() else []
        codes = np.searchsorted(edges, values)
        codes[np.isnan(values)] = len(edges) + 1
        return codes
    return x.astype("category").cat.codes.to_numpy().astype(np.int64) + 1


def _holdout_score(codes: np.ndarray, y: np.ndarray, classify: bool, train: np.ndarray) -> float:
    """How well the feature alone predicts y on held-out rows: bin -> majority class (accuracy) or mean (R²)."""
    test = ~train
    n_bins = int(codes.max()) + 1
    if classify:
        table = np.zeros((n_bins, int(y.max()) + 1))
        np.add.at(table, (codes[train], y[train]), 1)
        return float(np.mean(table.argmax(axis=1)[codes[test]] == y[test]))
    sums = np.bincount(codes[train], weights=y[train], minlength=n_bins)
    counts = np.bincount(codes[train], minlength=n_bins)
    means = np.where(counts > 0, sums / np.maximum(counts, 1), y[train].mean())
    return _r2(y[test], means[codes[test]])


def _r2(truth: np.ndarray, predicted: np.ndarray) -> float:
    return float(1 - np.sum((truth - predicted) ** 2) / max(np.sum((truth - truth.mean()) ** 2), 1e-12))


def _cut_score(x: np.ndarray, y: np.ndarray, train: np.ndarray) -> float:
    """Two classes: held-out accuracy of the single cut of x that best splits the training half (either side for
    either class; a missing x gets the training majority)."""
    known = ~np.isnan(x)
    learn = train & known
    if learn.sum() < 2:
        return 0.0
    order = np.argsort(x[learn], kind="stable")
    xs, ys = x[learn][order], y[learn][order]
    ones_at_or_below = np.cumsum(ys)  # class-1 rows among the i+1 smallest
    below = np.arange(1, len(ys) + 1)
    right_if_ones_above = (below - ones_at_or_below) + (ones_at_or_below[-1] - ones_at_or_below)
    right = np.maximum(right_if_ones_above, len(ys) - right_if_ones_above)
    right[:-1][xs[1:] == xs[:-1]] = -1  # a cut only between distinct values
    k = int(right.argmax())
    cut = xs[k] if k == len(xs) - 1 else (xs[k] + xs[k + 1]) / 2
    ones_above = right_if_ones_above[k] >= len(ys) - right_if_ones_above[k]
    test = ~train
    above = x[test] > cut
    predicted = np.where(above == ones_above, 1, 0)
    predicted[~known[test]] = int(np.bincount(y[train]).argmax())
    return float(np.mean(predicted == y[test]))


def _line_score(x: np.ndarray, y: np.ndarray, train: np.ndarray) -> float:
    """A numeric target: held-out R² of a straight line through the training half (a missing x gets the mean)."""
    known = ~np.isnan(x)
    learn = train & known
    if learn.sum() < 3 or np.ptp(x[learn]) == 0:
        return 0.0
    slope, intercept = np.polyfit(x[learn], y[learn], 1)
    test = ~train
    predicted = np.where(known[test], slope * np.nan_to_num(x[test]) + intercept, y[train].mean())
    return _r2(y[test], predicted)


def _leakage_suspects(df: pd.DataFrame, target: str, task: str, kinds: dict[str, str]) -> list[tuple[str, float]]:
    """Features that alone predict the target almost perfectly on held-out rows (see the module doc)."""
    data = df[df[target].notna()]
    if len(data) > LEAKAGE_SAMPLE:
        data = data.sample(LEAKAGE_SAMPLE, random_state=DEFAULT_SEED)
    if len(data) < 30:
        return []
    classify = is_classification(task)
    if classify:
        labels = data[target].astype(str)
        if labels.value_counts().min() < 3:
            return []
        y = labels.astype("category").cat.codes.to_numpy().astype(np.int64)
    else:
        y = data[target].to_numpy(dtype=float)
    train = np.random.default_rng(DEFAULT_SEED).random(len(data)) < 0.5
    baseline = float(np.mean(y[~train] == np.bincount(y[train]).argmax())) if classify else 0.0
    two_classes = classify and int(y.max()) == 1
    suspects = []
    for col, kind in kinds.items():
        if col == target or kind not in ("numeric", "categorical", "boolean"):
            continue
        codes = _codes(data[col])
        if codes.max() > 256:  # a near-unique categorical: reported as high cardinality instead
            continue
        score = _holdout_score(codes, y, classify, train)
        if kind == "numeric" and pd.api.types.is_numeric_dtype(data[col].dtype) and (two_classes or not classify):
            x = data[col].to_numpy(dtype=float)
            score = max(score, _cut_score(x, y, train) if classify else _line_score(x, y, train))
        if score >= SUSPECT_SCORE and (not classify or score - baseline >= 0.05):
            suspects.append((col, score))
    return suspects


def add_leakage_warnings(
    df: pd.DataFrame, target: TargetSummary, kinds: dict[str, str], warns: list[DataWarning], recs: list[str]
) -> None:
    suspects = _leakage_suspects(df, target.column, target.task_type, kinds)
    for col, score in suspects:
        warns.append(
            DataWarning(
                severity="high",
                code="leakage_suspect",
                column=col,
                message=f"{col!r} alone predicts {target.column!r} with score {score:.3f}: check that "
                "it is known at prediction time, else drop it.",
            )
        )
    if suspects:
        recs.append(
            "Leakage suspects: pass them in drop_columns to prepare_data unless they are truly available "
            "when predicting."
        )
