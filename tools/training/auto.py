"""`train(architecture="auto")` end to end: the search (`search.Search`), ensemble selection over its out-of-fold
output, the decision threshold, the refit of the chosen members within what is left of the budget, and the
summary the train result and memory report (`SearchSummary`)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, Field

from ml_expert.tools.core.lazy import lazy_import
from ml_expert.tools.core.portable.ensemble import Blend, class_shares, shift_threshold, target_bounds
from ml_expert.tools.core.scoring import rank_score
from ml_expert.tools.core.tasks import is_classification
from ml_expert.tools.training.ensemble import ensemble_or_best, tune_threshold
from ml_expert.tools.training.portfolio import portfolio
from ml_expert.tools.training.search import Search

np = lazy_import("numpy")  # loads on first use, not at server start


def _shown(metric: str, value: float) -> float:
    """Scores are ranked higher-is-better; RMSE is shown as RMSE."""
    return -value if metric == "rmse" else value


class ChosenMember(BaseModel):
    candidate: str
    weight: float
    final_model: str = Field(description="How the final model was made: its k fold models bagged, or a refit.")
    config: dict[str, Any] | None = Field(None, description="Its configuration, as a refit on all rows rebuilds it.")
    iterations: int | None = Field(None, description="Median boosting iterations its fold models kept.")
    fit_seconds: float = Field(0.0, description="Seconds its cross-validation fits took (all folds).")


class SearchSummary(BaseModel):
    """What the search did and chose, as the train result and memory report it."""

    metric: str = Field(description="The metric the search optimised (RMSE shown as RMSE).")
    rows: int
    folds: int
    cv: str = Field(description="random, time or group folds.")
    candidates: int = Field(description="Candidates evaluated, row-sample rungs included.")
    complete: int = Field(description="Candidates that completed every fold.")
    budget_seconds: float
    search_seconds: float
    refit_seconds: float
    seconds_to_final_model: float = Field(description="From the start of the search to the refitted model.")
    chosen: list[ChosenMember]
    ensemble: bool
    cv_score: float = Field(
        description="The final model's out-of-fold score over all search rows at once, its decision threshold applied."
    )
    best_single_cv_score: float = Field(
        description="The best single candidate's over all search rows at once, before any decision threshold: what "
        "the ensemble had to beat (the leaderboard's are means of fold scores)."
    )
    threshold: float | None = None
    cancelled: bool
    boosting_iterations: int | None = None
    fits_capped: int = Field(0, description="Fold fits the deadline stopped before they converged.")
    cluster: str | None = Field(None, description="The Dask scheduler the fold fits were sent to, if any.")
    fits_on_cluster: int = Field(0, description="Fold fits that ran on the cluster's workers (the rest ran here).")
    fits_in_helper: int = Field(
        0, description="Fold fits that ran in the search's helper process, side by side with one here (2+ cores)."
    )
    notes: list[str] = Field(default_factory=list, description="Where a cap or a row sample decided something.")
    failed_families: dict[str, str] = Field(
        default_factory=dict, description="Model families whose every fit raised, with the first error."
    )


@dataclass
class SearchOutcome:
    """What the search chose: the fitted model and everything the train result reports about it."""

    model: Any
    oof: np.ndarray  # out-of-fold output for the rows in y_seen
    y_seen: np.ndarray
    metric: str
    leaderboard: list[dict[str, Any]]
    summary: SearchSummary
    trace: list[float]


def assemble(fitted: list[tuple[Any, float]], task: str, threshold: float | None, y: np.ndarray) -> Any:
    """The final model from fitted members and their weights: the member itself when it is one without a decision
    threshold, else their `Blend` (regression outputs kept to a margin around y's range)."""
    classify = is_classification(task)
    if len(fitted) == 1 and threshold is None:
        return fitted[0][0]
    bounds = None if classify else target_bounds(y)  # no blend of extrapolating members runs away
    shares = class_shares(y, len(fitted[0][0].classes_)) if classify else None  # ties: the more frequent class
    return Blend([m for m, _ in fitted], [w for _, w in fitted], classify, threshold, bounds, shares)


def _member(search: Search, trial: Any, weight: float) -> ChosenMember:
    cfg = trial.config
    return ChosenMember(
        candidate=cfg.label(),
        weight=weight,
        final_model=_final(search, trial),
        config={"family": cfg.family, "params": cfg.kwargs, "log_target": cfg.log_target, "one_hot": cfg.one_hot},
        iterations=int(np.median(trial.iterations)) if trial.iterations else None,
        fit_seconds=round(sum(trial.seconds), 3),
    )


def _final(search: Search, trial: Any) -> str:
    folds = search.bagged(trial)
    return f"bagged {len(folds)} fold models" if folds else "refit on all training rows"


def run_search(X: np.ndarray, y: np.ndarray, task: str, budget_s: float, **options: Any) -> SearchOutcome:
    """Search, ensemble, refit within budget_s seconds (refit included); options as for `Search`."""
    search = Search(X, y, task, budget_s, **options)
    try:
        # the presets for categoricals where there are one-hot groups or native categorical columns (not where every
        # coded column is an ordinal one with too many levels: boosting sees those target-encoded, its one-hot view
        # would be their scaled codes, and CatBoost's column combinations would have no categoricals to combine)
        categorical = bool(search.categorical_groups or search.problem.categorical)
        search.run(portfolio(task, y, *X.shape, categorical=categorical))
    finally:
        search.close()  # the refit runs here
    best = search.best_complete()
    rows = search.rows
    y_seen = y[rows]
    members, single_score = ensemble_or_best(best, *search.ensemble(), rows, y, search.metric)
    use_ensemble = len(members) > 1
    total = sum(members.values())
    oof = sum(t.oof[rows] * (n / total) for t, n in members.items())  # type: ignore[misc]
    threshold = tune_threshold(search.metric, y_seen, oof) if is_classification(task) else None
    refit_started = time.perf_counter()
    fitted = [(search.refit(t, share=1 / (len(members) - i)), n) for i, (t, n) in enumerate(members.items())]
    model = assemble(fitted, task, threshold, y)
    if threshold is not None:
        p1 = shift_threshold(oof[:, 1], threshold)
        oof = np.column_stack([1 - p1, p1])
    done = time.perf_counter()
    ranked = sorted(search.trials, key=lambda t: (not t.complete, t.rows is not None, -t.mean))
    capped = sum(t.capped for t in search.trials)
    if capped:
        search.notes.append(f"{capped} fold fit(s) stopped growing at their share of the budget before converging")
    summary = SearchSummary(
        metric=search.metric,
        rows=len(y),
        folds=len(search.folds),
        cv="time" if search.split_strategy == "time" else "group" if search.groups is not None else "random",
        candidates=len(search.trials),
        complete=sum(t.complete for t in search.trials),
        budget_seconds=round(budget_s, 1),
        search_seconds=round(refit_started - search.started, 2),
        refit_seconds=round(done - refit_started, 2),
        seconds_to_final_model=round(done - search.started, 2),
        chosen=[_member(search, t, round(n / total, 3)) for t, n in members.items()],
        ensemble=use_ensemble,
        cv_score=round(_shown(search.metric, rank_score(search.metric, y_seen, oof)), 5),
        best_single_cv_score=round(_shown(search.metric, single_score), 5),
        threshold=round(threshold, 4) if threshold is not None else None,
        cancelled=search.cancelled,
        boosting_iterations=int(np.median(best.iterations) * 1.1) if best.iterations else None,
        fits_capped=capped,
        cluster=search.scheduler,
        fits_on_cluster=search.fits_on_cluster,
        fits_in_helper=search.fits_in_helper,
        notes=search.notes,
        failed_families=search.failed_families(),
    )
    trace = [t.mean for t in search.trials if t.scores]
    leaderboard = [t.row(search.metric) for t in ranked][:30]
    return SearchOutcome(model, oof, y_seen, search.metric, leaderboard, summary, trace)
