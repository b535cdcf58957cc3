"""The final models of the auto search: a boosting candidate's fold models bagged (no second fit), the pool that
ensemble selection chooses from, and the refit on all rows of the other candidates within what is left of the
budget. A mixin of `search.Search`."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from ml_expert.tools.core.lazy import lazy_import
from ml_expert.tools.core.portable.ensemble import Blend, Coded, OrdinalColumn, class_shares
from ml_expert.tools.core.tasks import is_classification
from ml_expert.tools.training.chunked import fit_stoppable
from ml_expert.tools.training.ensemble import select_ensemble
from ml_expert.tools.training.portfolio import BOOSTING, ENCODED_FAMILIES, Config, bags, build, decided
from ml_expert.tools.training.target_encoding import encode_training_rows
from ml_expert.tools.training.trial import Trial

np = lazy_import("numpy")  # loads on first use, not at server start

CANCELLED_REFIT_S = 3.0  # a cancelled search refits what it has within this
ENSEMBLE_POOL = 10  # the best complete candidates ensemble selection chooses from (their fold models are kept)


class FinalModels:
    """Bagging, the ensemble pool and the refit for `Search` (they use the search's folds, trials and budget)."""

    X: Any
    y: Any
    task: str
    seed: int
    metric: str
    codes: Any
    categorical_groups: list[list[int]]
    ordinal_columns: list[OrdinalColumn]
    problem: Any
    folds: list[tuple[Any, Any]]
    trials: list[Trial]
    notes: list[str]
    n_classes: int
    cancelled: bool
    end: float
    rows: Any
    _tick: Callable[..., Any]

    # -- bagging ------------------------------------------------------------------------------------

    def _bags(self, cfg: Config) -> bool:
        """Whether this candidate's fold models are kept, to be averaged instead of a refit."""
        return bags(cfg.family, len(self.folds))

    def bagged(self, trial: Trial) -> list[Any] | None:
        """The candidate's k fold models when they make its final model (every fold kept, every class seen by
        each), else None (it is refit on all rows)."""
        models = [trial.models.get(fold) for fold in range(len(self.folds))]
        if not self._bags(trial.config) or any(m is None for m in models):
            return None
        if self.n_classes and any(len(m.classes_) != self.n_classes for m in models):
            return None  # a class missing from a fold's rows: the fold models' outputs do not line up
        return models

    def _drop_unused_models(self) -> None:
        """Fold models are kept only for the candidates ensemble selection may choose (memory stays bounded)."""
        pool = self._pool()
        for trial in self.trials:
            if trial.complete and trial.models and trial not in pool:
                trial.models.clear()

    def ensemble(self) -> tuple[dict[Trial, int], float]:
        """Greedy ensemble selection over the ENSEMBLE_POOL best complete candidates: member -> count, OOF score."""
        return select_ensemble(self._pool(), self.rows, self.y, self.metric)

    def _pool(self) -> list[Trial]:
        return sorted((t for t in self.trials if t.complete), key=lambda t: t.mean, reverse=True)[:ENSEMBLE_POOL]

    def refit(self, trial: Trial, share: float = 1.0) -> Any:
        """The candidate's final model: its fold models averaged when it bags (no second fit), else fitted on all rows
        (boosting: the folds' iterations + 10 %), growing until done or until its `share` of the time left before the
        budget's end; a note says when that cap decided the size."""
        coded = self.codes is not None and trial.config.coded
        folds = self.bagged(trial)
        if folds is not None:
            classify = is_classification(self.task)
            shares = class_shares(self.y, self.n_classes) if classify else None
            bag = Blend(folds, [1.0] * len(folds), classify, shares=shares)
            return Coded(bag, self.categorical_groups, self.ordinal_columns) if coded else bag
        iterations = int(np.median(trial.iterations) * 1.1) if trial.iterations else None
        model = build(
            trial.config, self.task, self.metric, self.seed, max_iter=iterations, rows=len(self.y),
            categorical=self.problem.categorical if coded else (),
        )  # fmt: skip
        now = time.perf_counter()
        end = min(self.end, now + CANCELLED_REFIT_S) if self.cancelled else self.end  # a cancel waits seconds at most
        deadline = now + max((end - now) * share, 1.0)
        tick = self._tick(trial, len(self.y), cancels=False)  # progress while the final model grows
        encoded = self.problem.encoded if coded and trial.config.family in ENCODED_FAMILIES else ()
        # many-level categoricals: target-encoded on all rows (cross-fitted), as in the folds
        encoding = encode_training_rows(self.codes if coded else self.X, self.y, encoded, self.n_classes, self.seed)
        grown = fit_stoppable(model, encoding.rows, self.y, deadline, tick)
        if grown.stopped_by_deadline:
            unit = "iterations" if trial.config.family in BOOSTING else "trees"
            self.notes.append(
                f"refit of {trial.config.label()} capped by the budget at {grown.units} {unit} (planned "
                f"{iterations or 'all'})"
            )
        model = encoding.wrap(decided(model, trial.config, self.metric, self.y))
        return Coded(model, self.categorical_groups, self.ordinal_columns) if coded else model
