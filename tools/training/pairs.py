"""Fold fits two at a time for `Search`: one in the search's process, the other in its helper process
(`helper.py`), each on half the cores, while the helper is there; one at a time otherwise. A mixin of `search.Search`
(it uses the search's tasks, fits, records and cancel check)."""

from __future__ import annotations

import time
from typing import Any

from ml_expert.tools.training.cluster import FoldFit, FoldTask
from ml_expert.tools.training.helper import Helper, HelperLost, threads_per_fit
from ml_expert.tools.training.helper import start as start_helper
from ml_expert.tools.training.trial import Trial


class FoldPairs:
    """`_fit_folds` and the helper's lifetime for `Search`."""

    helper: Helper | None
    helper_allowed: bool
    fits_in_helper: int
    notes: list[str]
    cluster: Any
    X: Any
    y: Any
    problem: Any
    codes: Any
    budget_s: float
    reporter: Any

    def _fit_folds(self, items: list[tuple[Trial, int]]) -> list[bool]:
        """Fit and score these candidate x fold pairs: two side by side (the second in the helper process, each on
        half the cores) when there are two and the helper is ready, else one after the other. Per pair, False when
        it could not fit in time, raised or was cancelled; a later fold of a candidate whose earlier fold stopped is
        not recorded, so a candidate's scores stay in fold order."""
        if len(items) != 2 or self._width() != 2:
            done: list[bool] = []
            for trial, fold in items:
                stopped = any(t is trial and not ok for (t, _), ok in zip(items, done, strict=False))
                task = None if stopped else self._task(trial, fold)
                done.append(task is not None and self._take(trial, task, self._run_here(trial, task)))
            return done
        (a, fold_a), (b, fold_b) = items
        threads = threads_per_fit()
        task_a = self._task(a, fold_a, threads)
        if task_a is None:  # too few iterations left for a: b alone, here, on every core
            return [False, False] if b is a else [False, *self._fit_folds([(b, fold_b)])]
        task_b = self._task(b, fold_b, threads)
        if task_b is None:  # too few iterations left for b: a alone, on every core
            return [*self._fit_folds([(a, fold_a)]), False]
        if not self._send(task_b):  # the helper is gone: both here, one after the other
            return self._fit_folds(items)
        collected = False
        try:
            fit_a = self._run_here(a, task_a)
            fit_b = self._helper_result(b, task_b)
            collected = True
        finally:
            if not collected:  # an interrupt: the helper's reply would be left unread
                self.close_helper()
        ok_a = self._take(a, task_a, fit_a)
        if fit_b is None:  # the helper was lost: b runs here, unless it is a later fold of a that stopped
            return [ok_a, *([False] if b is a and not ok_a else self._fit_folds([(b, fold_b)]))]
        ok_b = (b is not a or ok_a) and self._take(b, task_b, fit_b)
        self.fits_in_helper += ok_b
        return [ok_a, ok_b]

    def _width(self) -> int:
        """Fold fits that run at a time now: two once the helper process is ready, else one."""
        return 2 if self.helper is not None and self.helper.ready() else 1

    def _parallel(self) -> int:
        """Fold fits that will run at a time, for the time estimates: two while there is a helper (ready, or
        starting), else one."""
        return 2 if self.helper is not None and not self.helper.lost else 1

    def _send(self, task: FoldTask) -> bool:
        try:
            self.helper.submit(task)  # type: ignore[union-attr]
            return True
        except HelperLost as lost:
            self._lose_helper(lost)
            return False

    def _helper_result(self, trial: Trial, task: FoldTask) -> FoldFit | Exception | None:
        """The helper's fit (the cancel polled meanwhile, and progress reported, as between a local fit's chunks),
        what it raised there, or None when the helper process was lost."""
        reporter, started = self.reporter, time.perf_counter()

        def stop() -> bool:
            if reporter is not None:  # the reporter writes at most one progress line per interval
                reporter.progress(
                    phase="train",
                    message=f"{trial.config.label()}: fold {task.fold + 1} in the helper process, "
                    f"{time.perf_counter() - started:.0f} s",
                )
            return self._stop()

        try:
            return self.helper.result(stop)  # type: ignore[union-attr]
        except HelperLost as lost:
            self._lose_helper(lost)
            return None

    def _lose_helper(self, lost: HelperLost) -> None:
        self.notes.append(f"the helper process for fold fits ended mid-search ({lost}); the rest ran one at a time")
        self.close_helper()

    def start_helper(self) -> None:
        """Start the helper process for fold fits when this search gains from one (`helper.py`); `close` ends it."""
        if self.helper is None and self.helper_allowed:
            cluster = self.cluster is not None
            self.helper = start_helper(self.X, self.y, self.problem, self.codes, self.budget_s, cluster)

    def close_helper(self) -> None:
        if self.helper is not None:
            self.helper.close()
            self.helper = None
