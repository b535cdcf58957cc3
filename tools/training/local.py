"""The local search of `Search` after the portfolio: neighbours of the best HistGradientBoosting configuration,
one at a time here or a wave of them on a Dask cluster (`waves.py`), and the rules that end it in both places, since
the budget is a ceiling, not a target. PATIENCE neighbours in a row without a gain beyond the folds' noise
(`_clear_gain`) end it as converged, and none is tried when the best boosting trails the leader far (`_far_behind`) or
while another tree ensemble leads (`_substitute_leader`). When it ends on the budget or the neighbours instead,
`_resume_stopped` completes the candidates halving or the trailing rule stopped (here, not on a cluster)."""

from __future__ import annotations

import math
import time
from itertools import islice
from typing import Any

from ml_expert.tools.core.lazy import lazy_import
from ml_expert.tools.core.scoring import rank_score
from ml_expert.tools.training.portfolio import neighbours_of
from ml_expert.tools.training.trial import Trial

np = lazy_import("numpy")  # loads on first use, not at server start

PATIENCE = 6  # neighbours in a row without an out-of-fold gain end the local search: the budget is a ceiling
SUBSTITUTE_FAMILIES = ("catboost", "rf", "et")  # tree ensembles whose lead ends the local search around boosting


class LocalSearch:
    """`_local_search` and `_resume_stopped` for `Search` (they use its trials, folds, budget, metric and notes)."""

    y: Any
    folds: list[tuple[Any, Any]]
    trials: list[Trial]
    notes: list[str]
    metric: str
    seed: int
    started: float
    budget_s: float

    def _resume_stopped(self, planned: int) -> bool:
        """With budget left after the local search, complete the candidates that halving or the trailing rule
        stopped, best first, each only when its remaining folds still fit; True when one completed."""
        done = False
        waiting = sorted((t for t in self.trials if t.stopped in ("halved", "trailing")), key=lambda t: -t.mean)
        for trial in waiting:
            if self._stop():
                break
            if self._affordable(self._estimate(trial, len(self.folds) - len(trial.scores))):
                trial.stopped = None
                self._complete(trial, planned, patient=True)
                done = done or trial.complete
        return done

    def _local_search(self, neighbours: int, planned: int) -> bool:
        """Neighbours of the best boosting, a step at a time (one locally, as many as the cluster has slots on a
        cluster, fitted as one wave), until PATIENCE of them in a row bring no gain out of fold (converged: the rest
        of the budget is not spent), the budget or `neighbours` run out; True when it converged. None is tried when
        the best boosting trails the leader (another family) by more than twice the folds' noise: one step from it
        does not close such a gap (Carseats: linear 1.02 RMSE out of fold, boosting 1.43, six neighbours tried for
        nothing); nor while another tree ensemble leads (`_substitute_leader`)."""
        tried = {t.config for t in self.trials}
        without_gain = tried_here = 0
        while tried_here < neighbours:
            boosting = [t for t in self.trials if t.complete and t.config.family == "hgb"]
            best = max(boosting, key=lambda t: t.mean, default=None)
            if best is None or self._stop():
                return False
            reason = self._no_step(best)
            if reason is not None:
                return self._converged(f"no local search, since {reason}")
            if without_gain >= PATIENCE:
                return self._converged(
                    f"{PATIENCE} neighbours of the best boosting in a row brought no out-of-fold gain beyond the "
                    "folds' noise"
                )
            fresh = (c for c in neighbours_of(best.config, self.seed + len(self.trials)) if c not in tried)
            step = [Trial(c) for c in islice(fresh, min(self._step_width(), neighbours - tried_here))]
            if not step or not self._affordable(self._estimate(best, len(self.folds))):
                return False
            tried |= {t.config for t in step}
            tried_here += len(step)
            self.trials += step
            self._fit_step(step, planned)
            for trial in [t for t in step if not t.scores and t.stopped in ("budget", None)]:
                self.trials.remove(trial)  # no fold fitted in the time left: neither a candidate nor a step
                step.remove(trial)
            if not step:
                return False  # not convergence
            without_gain = 0 if any(self._clear_gain(t, best) for t in step) else without_gain + len(step)
        return False

    def _step_width(self) -> int:
        """Neighbours per step: one here (`ClusterWaves` sends a wave of them to a cluster)."""
        return 1

    def _fit_step(self, step: list[Trial], planned: int) -> None:
        """A step's neighbours, one at a time with the trailing rule."""
        for trial in step:
            self._complete(trial, planned)

    def _no_step(self, best: Trial) -> str | None:
        """Why no neighbour of the best boosting is worth a try, if so."""
        leader = self._best_complete()
        if leader is not None and self._far_behind(best, leader):
            return (
                f"the best boosting ({best.config.label()}) trails {leader.config.label()} out of fold far beyond "
                "the folds' noise, a gap that one step from it does not close"
            )
        if leader is not None and self._substitute_leader(best, leader):
            return (
                f"{leader.config.label()} leads, a tree ensemble of another family: neighbours of the best "
                f"boosting ({best.config.label()}) would be close substitutes of it that trail it"
            )
        return None

    def _converged(self, why: str) -> bool:
        self.notes.append(
            f"converged: {why} (stopped at {time.perf_counter() - self.started:.0f} s of {self.budget_s:.0f})"
        )
        return True

    def _far_behind(self, best: Trial, leader: Trial) -> bool:
        """Whether the best boosting trails the leader beyond reach of a local step: by more than twice the folds'
        noise, or on the same folds by more than three standard errors of their paired per-fold difference."""
        if leader is best:
            return False
        if leader.mean - best.mean > 2 * self._noise(leader):
            return True
        if len(leader.scores) != len(best.scores) or len(leader.scores) < 3:
            return False
        diff = np.array(leader.scores) - np.array(best.scores)
        return bool(diff.mean() > 3 * diff.std(ddof=1) / math.sqrt(len(diff)))

    @staticmethod
    def _substitute_leader(best: Trial, leader: Trial) -> bool:
        """Whether another tree ensemble (CatBoost, a random forest, extra-trees) leads the best boosting. Its
        neighbours then vary trees that the leader already beats and whose output is close to its own: in the 71
        searches led by such a family in the accuracy bench's stored results, the ensemble took a neighbour twice,
        at weights 0.14 and 0.17, and never as the model. Where a linear model leads, boosting complements it
        (attrition's ensemble is linear + a neighbour, 7 of 14 such searches), so that local search still runs."""
        return leader is not best and leader.config.family in SUBSTITUTE_FAMILIES

    def _clear_gain(self, trial: Trial, best: Trial) -> bool:
        """Whether a neighbour beats the best out of fold by more than one standard error of their paired per-fold
        difference (each fold's held-out rows scored for both). A smaller win still makes it the best; it only does
        not restart the patience count, so a search whose neighbours differ by fold noise converges."""
        if not trial.complete or trial.mean <= best.mean:
            return False
        if len(self.folds) < 2:
            return True
        diff = np.array(
            [
                rank_score(self.metric, self.y[test], trial.oof[test])
                - rank_score(self.metric, self.y[test], best.oof[test])
                for _, test in self.folds
            ]
        )
        return bool(diff.mean() > diff.std(ddof=1) / math.sqrt(len(diff)))
