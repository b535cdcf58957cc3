"""The auto search on a Dask cluster: the same rungs as locally, each as one wave of candidate × fold fits sent to
the cluster's workers; when the cluster fails, what it did not finish runs here. A mixin of `search.Search`."""

from __future__ import annotations

import math
from typing import Any

from ml_expert.tools.training.cluster import ClusterLost, FoldTask
from ml_expert.tools.training.portfolio import Config
from ml_expert.tools.training.trial import Trial


class ClusterWaves:
    """`_run_on_cluster` for `Search`, and the local search's step on a cluster (it uses the search's folds,
    budget, progress and trials)."""

    cluster: Any
    scheduler: str | None
    seed: int
    folds: list[tuple[Any, Any]]
    trials: list[Trial]
    notes: list[str]

    def _run_on_cluster(self, candidates: list[Config], neighbours: int, planned: int) -> None:
        """The same rungs, each as one wave of fold fits on the cluster: one fold of every candidate, the other folds
        of the better half, then the local search with its convergence rules, a wave of as many neighbours as the
        cluster has slots at a time."""
        first = [Trial(cfg) for cfg in candidates]
        self.trials += first
        self._wave([(t, 0) for t in first], planned)
        ranked = sorted((t for t in first if t.scores), key=lambda t: -t.mean)
        keep = ranked[: max(2, math.ceil(len(ranked) / 2))]
        for trial in ranked[len(keep) :]:
            trial.stopped = "halved"
        self._wave([(t, f) for t in keep for f in range(1, len(self.folds))], planned)
        self._local_search(neighbours, planned)  # the same rules as locally, each step one wave

    def _step_width(self) -> int:
        """Neighbours per step of the local search: as many as the cluster has slots (one without a cluster)."""
        return self.cluster.slots if self.cluster is not None else super()._step_width()

    def _fit_step(self, step: list[Trial], planned: int) -> None:
        """A local-search step's neighbours: every fold of them as one wave on the cluster (one at a time here
        without one). A neighbour the wave left with fewer folds than the others (the budget, a lost cluster) is
        marked, never ranked as complete."""
        if self.cluster is None:
            super()._fit_step(step, planned)
            return
        self._wave([(t, f) for t in step for f in range(len(self.folds))], planned)
        for trial in step:
            if trial.stopped is None and 0 < len(trial.scores) < len(self.folds):
                trial.stopped = "budget"

    def _wave(self, pairs: list[tuple[Trial, int]], planned: int) -> None:
        """Fit these candidate × fold pairs at once on the cluster, each growing for its share of the time left
        (waves of as many fits as the cluster has slots); when the cluster fails, the rest run here."""
        best = self._best_complete()
        room = self.left() - self._refit_reserve([best] if best else [])
        if not pairs or room <= 0 or self._stop():
            return
        done: set[tuple[int, int]] = set()
        if self.cluster is not None:
            seconds = max(room / math.ceil(len(pairs) / self.cluster.slots), 2.0)
            tasks = {
                id(task): (trial, task) for trial, fold in pairs for task in [self._cluster_task(trial, fold, seconds)]
            }
            try:
                for task, fit in self.cluster.run([task for _, task in tasks.values()], timeout=room + 30):
                    trial = tasks[id(task)][0]
                    done.add((id(trial), task.fold))
                    if isinstance(fit, Exception):
                        self._failed(trial, task.fold, fit)
                        continue
                    if trial.stopped == "failed":
                        continue  # another of its folds failed: its output would be partial
                    self._record(trial, task, fit)
                    if len(trial.scores) == len(self.folds) or len(trial.scores) == 1:
                        self._report(trial, planned)
                    if self._stop():
                        return
            except ClusterLost as lost:
                self.notes.append(f"the Dask cluster {self.scheduler} failed mid-search ({lost}); the rest ran locally")
                self.cluster.close()
                self.cluster = None
        for trial, fold in pairs:  # no cluster (any more): the pairs it did not finish run here
            if (id(trial), fold) in done or trial.stopped == "failed":
                continue
            if not self._stop() and self._affordable(self._estimate(trial, 1)):
                self._fit_fold(trial, fold)

    def _cluster_task(self, trial: Trial, fold: int, seconds: float) -> FoldTask:
        train, test = self.folds[fold]
        per_unit = self._per_unit(trial.config, len(train))
        return FoldTask(trial.config, fold, train, test, seconds, None, per_unit, self._bags(trial.config))
