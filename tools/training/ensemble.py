"""Combining the search's candidates out of fold: greedy ensemble selection (Caruana et al., 2004) and the binary
decision threshold. What they choose is applied at prediction time by `Blend` / `shift_threshold`, which travel
with the deployment package (core/portable/ensemble.py)."""

from __future__ import annotations

from typing import Any, TypeVar

from ml_expert.tools.core.lazy import lazy_import
from ml_expert.tools.core.portable.ensemble import shift_threshold
from ml_expert.tools.core.scoring import rank_score

np = lazy_import("numpy")  # loads on first use, not at server start

MAX_ENSEMBLE_STEPS = 25

Member = TypeVar("Member", bound=Any)  # anything with an `oof` array over all rows (a search Trial)


def select_ensemble(
    pool: list[Member], rows: np.ndarray, y: np.ndarray, metric: str
) -> tuple[dict[Member, int], float]:
    """Greedy selection with replacement over out-of-fold output, best candidate first: member -> count, and the
    ensemble's out-of-fold score. `pool` is sorted best first; `rows` are the rows with out-of-fold output."""
    y = y[rows]
    best = pool[0]
    chosen = {best: 1}
    current = best.oof[rows].copy()
    current_score = rank_score(metric, y, current)
    for step in range(2, MAX_ENSEMBLE_STEPS + 1):
        trials = [(rank_score(metric, y, (current * (step - 1) + t.oof[rows]) / step), t) for t in pool]
        new_score, pick = max(trials, key=lambda st: st[0])
        if new_score <= current_score and step > 2:
            break
        current = (current * (step - 1) + pick.oof[rows]) / step
        current_score = new_score
        chosen[pick] = chosen.get(pick, 0) + 1
    return chosen, current_score


def ensemble_or_best(
    best: Member, chosen: dict[Member, int], ensemble_score: float, rows: np.ndarray, y: np.ndarray, metric: str
) -> tuple[dict[Member, int], float]:
    """The members of the final model: the greedy ensemble where it beats the best single candidate (by more than
    1e-4), else that candidate alone; and that candidate's score. Like with like: the ensemble is scored over all
    out-of-fold rows at once, so the candidate is too, not by the mean of its fold scores that ranks it (for RMSE
    that mean is lower by Jensen's inequality, and an ensemble needed ~1.5 % more than it to be chosen on ames)."""
    single = rank_score(metric, y[rows], best.oof[rows])
    return (chosen if len(chosen) > 1 and ensemble_score > single + 1e-4 else {best: 1}), single


def tune_threshold(metric: str, y: np.ndarray, oof: np.ndarray) -> float | None:
    """A binary decision threshold tuned out of fold for balanced accuracy, when it helps (by more than 0.002)."""
    if metric != "balanced_accuracy" or oof.shape[1] != 2:
        return None
    p1 = oof[:, 1]
    base = rank_score(metric, y, oof)
    grid = np.unique(np.quantile(p1, np.linspace(0.02, 0.98, 97)))
    scored = []
    for t in grid:
        q = shift_threshold(p1, t)
        scored.append((rank_score(metric, y, np.column_stack([1 - q, q])), t))
    best, t = max(scored)
    return float(t) if best > base + 0.002 else None
