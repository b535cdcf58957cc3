"""How much a test score would move on other test rows: a bootstrap interval of the main metric, and of its gain over
the dummy baseline on the same resampled rows (a paired bootstrap: both are scored on each resample).

A small table's test split is small, and its score is noisy: on 20 test rows one row is 5 % of accuracy. The
verdict's fixed margin ("clearly better" by 0.02 of balanced accuracy, 0.05 of R²) does not see that; the interval
does, and the verdict says so when the gain over the baseline is within chance.
"""

from __future__ import annotations

from collections.abc import Callable

from pydantic import BaseModel, Field

from ml_expert.tools.core.lazy import lazy_import
from ml_expert.tools.core.scoring import main_key

np = lazy_import("numpy")  # loads on first use, not at server start

RESAMPLES = 1000
MIN_ROWS = 10  # below, resampling a handful of rows says nothing: any gain counts as within chance
MAX_ROWS = 20_000  # above, a seeded sample of the test rows is resampled (see `metric_interval`)
LEVEL = 0.95


class MetricInterval(BaseModel):
    metric: str = Field(description="The main metric: balanced_accuracy (classification) or r2 (regression).")
    level: float = Field(LEVEL, description="Share of the resampled scores inside each interval.")
    test: tuple[float, float] = Field(description="Where the test score lies on other draws of as many test rows.")
    gain_over_baseline: tuple[float, float] = Field(
        description="The same for the score minus the dummy baseline's on the same rows: a gain within chance when "
        "it reaches 0."
    )
    rows: int = Field(description=f"Test rows scored (above {MAX_ROWS:,}, a seeded sample of them is resampled).")
    resamples: int = RESAMPLES
    within_chance: bool = Field(
        description=f"The gain's interval reaches 0, or fewer than {MIN_ROWS} test rows (too few to resample)."
    )

    def sentence(self) -> str:
        """The interval in words, for the verdict and the report."""
        lo, hi = self.test
        glo, ghi = self.gain_over_baseline
        return (
            f"{self.level:.0%} interval of {self.metric} over resamples of the {self.rows:,} test rows: "
            f"{lo:.4f} to {hi:.4f}; of its gain over the baseline: {glo:+.4f} to {ghi:+.4f}."
        )


def _balanced_accuracy(y: np.ndarray, n_classes: int) -> Callable[[np.ndarray, np.ndarray], float]:
    def score(rows: np.ndarray, hit: np.ndarray) -> float:
        truth = y[rows]
        counts = np.bincount(truth, minlength=n_classes)
        correct = np.bincount(truth, weights=hit[rows], minlength=n_classes)
        present = counts > 0
        return float(np.mean(correct[present] / counts[present]))

    return score


def _r2(y: np.ndarray) -> Callable[[np.ndarray, np.ndarray], float]:
    def score(rows: np.ndarray, squared_error: np.ndarray) -> float:
        truth = y[rows]
        total = float(np.sum((truth - truth.mean()) ** 2))
        return 1.0 - float(np.sum(squared_error[rows])) / total if total > 0 else float("nan")

    return score


def metric_interval(
    task: str, y_true: np.ndarray, output: np.ndarray, baseline_output: np.ndarray, seed: int = 0
) -> MetricInterval | None:
    """The bootstrap interval of the main metric and of its gain over the baseline (None for clustering, fewer than 2
    test rows, or an R² that a constant test target leaves undefined). `output` and `baseline_output` are what
    `predict_output` and `dummy_output` give. Above MAX_ROWS test rows a seeded sample of MAX_ROWS is resampled, and
    the spread it gives is narrowed by sqrt(MAX_ROWS / rows), as a score's spread narrows with the rows it is
    computed on."""
    key = main_key(task)
    if key not in ("balanced_accuracy", "r2") or len(y_true) < 2:
        return None
    rng = np.random.default_rng(seed)
    if key == "balanced_accuracy":
        y = np.asarray(y_true).astype(np.int64)
        score = _balanced_accuracy(y, int(max(y.max(), output.shape[1] - 1)) + 1)
        model, baseline = ((o.argmax(axis=1) == y).astype(float) for o in (output, baseline_output))
    else:
        y = np.asarray(y_true, dtype=float)
        score = _r2(y)
        model, baseline = ((y - np.asarray(o, dtype=float)) ** 2 for o in (output, baseline_output))
    every = np.arange(len(y))
    pool = np.sort(rng.choice(len(y), MAX_ROWS, replace=False)) if len(y) > MAX_ROWS else every
    scored, gains = np.empty(RESAMPLES), np.empty(RESAMPLES)
    for i in range(RESAMPLES):
        draw = pool[rng.integers(0, len(pool), len(pool))]
        scored[i] = score(draw, model)
        gains[i] = scored[i] - score(draw, baseline)
    narrow = np.sqrt(len(pool) / len(y))  # 1 unless sampled
    tail = 100 * (1 - LEVEL) / 2

    def spread(values: np.ndarray, center: float, on_pool: float) -> tuple[float, float]:
        low, high = np.nanpercentile(values, [tail, 100 - tail])
        return float(center + (low - on_pool) * narrow), float(center + (high - on_pool) * narrow)

    full, full_base = score(every, model), score(every, baseline)
    on_pool, on_pool_base = score(pool, model), score(pool, baseline)
    if not np.isfinite([full, full_base, on_pool, on_pool_base]).all() or np.isnan(scored).mean() > 0.5:
        return None  # R² of test rows whose target is one value (or nearly always so when resampled): no interval
    gain = spread(gains, full - full_base, on_pool - on_pool_base)
    return MetricInterval(
        metric=key,
        test=spread(scored, full, on_pool),
        gain_over_baseline=gain,
        rows=len(y),
        within_chance=gain[0] <= 0.0 or len(y) < MIN_ROWS,
    )
