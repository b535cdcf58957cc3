"""The row-sample rungs of the auto search on large tables: successive halving over growing samples of the first
fold's training rows, before any candidate is fitted on every row. A mixin of `search.Search`."""

from __future__ import annotations

import math
import time
from typing import Any

from ml_expert.tools.core.lazy import lazy_import
from ml_expert.tools.training.cluster import FoldTask, fit_fold
from ml_expert.tools.training.portfolio import Config
from ml_expert.tools.training.trial import Cancelled, Trial

np = lazy_import("numpy")  # loads on first use, not at server start

SAMPLE_RUNGS = (50_000, 200_000)  # rows of the row-sample rungs on large data, before any fit on every row
SAMPLE_SHARE = 0.4  # at most this share of the budget goes to the row-sample rungs


class SampleRungs:
    """`_rank_on_samples` for `Search` (it uses the search's folds, budget, progress and trials)."""

    X: Any
    y: Any
    codes: Any
    problem: Any
    seed: int
    folds: list[tuple[Any, Any]]
    trials: list[Trial]
    notes: list[str]
    cancelled: bool

    def _rank_on_samples(self, candidates: list[Config], planned: int) -> list[Config]:
        """On large data, successive halving over row samples before any fit on every row: each rung fits the
        candidates on a random sample of the first fold's training rows (SAMPLE_RUNGS, growing), scores them on its
        held-out rows, and keeps the better half; at most SAMPLE_SHARE of the budget. Returns the survivors, best
        first; the others stay on the leaderboard, marked with the rows that decided them."""
        train, test = self.folds[0]
        rungs = [r for r in SAMPLE_RUNGS if r * 2 <= len(train)]
        if not rungs or len(candidates) <= 2:
            return candidates
        order = np.random.default_rng(self.seed).permutation(train)
        scored_rows = test[: max(rungs[-1] // 2, 20_000)]
        stop_at = time.perf_counter() + SAMPLE_SHARE * max(self.left(), 0.0)
        alive = list(candidates)
        for rung, rows in enumerate(rungs):
            sample = np.sort(order[:rows])
            results: list[tuple[float, Config]] = []
            for i, cfg in enumerate(alive):
                if self._stop() or time.perf_counter() >= stop_at:
                    break
                trial = Trial(cfg, rows=rows)
                share = (stop_at - time.perf_counter()) / (len(alive) - i) / (len(rungs) - rung)
                task = FoldTask(cfg, 0, sample, scored_rows, share, None, self._per_unit(cfg, rows))
                try:
                    fit = fit_fold(self.X, self.y, self.problem, task, self._tick(trial, rows), self.codes)
                except Cancelled:
                    self.cancelled = True
                    break
                trial.scores.append(fit.score)
                trial.seconds.append(fit.seconds)
                trial.capped += fit.capped
                trial.stopped = f"halved on {rows:,} sampled rows"
                self.trials.append(trial)
                self._report(trial, planned)
                results.append((trial.mean, cfg))
            if len(results) < 2:
                break
            results.sort(key=lambda sc: -sc[0])
            alive = [cfg for _, cfg in results[: max(2, math.ceil(len(results) / 2))]]
            for trial in self.trials[-len(results) :]:
                if trial.config in alive:
                    trial.stopped = f"advanced from {rows:,} sampled rows"
        if len(alive) < len(candidates):
            self.notes.append(
                f"{len(candidates)} candidates ranked on row samples of {', '.join(f'{r:,}' for r in rungs)} "
                f"rows first; the best {len(alive)} went on to all {len(train):,} training rows of the folds"
            )
        return alive
