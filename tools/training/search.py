"""`train(architecture="auto")`: a time-budgeted model search, the way AutoML tools do it, on scikit-learn.

1. Selection on all training rows: k-fold cross-validation over train + validation (stratified for
   classification, in time order when prepare_data split by time; one repeated hold-out on large data).
   The test split is never touched here.
2. A portfolio, not one default: a fixed, documented list of HistGradientBoosting configurations (as
   zero-shot presets), RandomForest, ExtraTrees and a regularised linear model; then a small search
   around the best boosting configuration. Scheduling is successive halving over folds: every candidate
   is first scored on one fold, only the better half completes all folds, and a candidate whose first
   folds fall clearly behind the leader stops early.
3. Greedy ensemble selection (Caruana et al., 2004) over the out-of-fold predictions, kept only when it
   beats the best single model out of fold.
4. The chosen model(s) become final models without a second fit where the folds already made one: a boosting
   candidate is the average of its k fold models (bagging, as AutoGluon does by default: each saw (k-1)/k of the
   rows and early-stopped on its own hold-out). Other families, and every family on a single hold-out, are refit
   on all training rows.
5. The run's metric is optimised: balanced accuracy when the majority/minority ratio is >= 4 (with the
   binary decision threshold tuned out of fold), accuracy otherwise, RMSE for regression (a log-target
   variant is a candidate for skewed positive targets; CV decides).
6. The budget covers the whole search, refit included: no fit starts whose estimated time does not fit. It is a
   ceiling, not a target: PATIENCE neighbours in a row without an out-of-fold gain beyond the folds' noise (one
   standard error of the paired per-fold difference) end the search (converged), and there is no local search
   when the best boosting trails far behind, or while another tree ensemble (CatBoost, a forest) leads.
7. Each family sees the row its own way: linear models the one-hot, scaled columns prepare_data made; tree
   families each one-hot group, and each scaled ordinal column of a categorical with too many levels to one-hot,
   as one column of category codes (boosting splits them as native categoricals, CatBoost with target statistics,
   forests as ordinal codes), wrapped as `Coded` so that the package applies it to the prepared row. A categorical
   with more levels than boosting's native splits take reaches boosting target-encoded instead, by an encoder
   fitted on each model's own training rows (`target_encoding.py`).

Runs in a worker. Fits use the machine's cores through OpenMP (boosting) or n_jobs (forests).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from ml_expert.tools.core.lazy import lazy_import
from ml_expert.tools.core.portable.ensemble import OrdinalColumn, one_hot_codes
from ml_expert.tools.core.scoring import search_metric
from ml_expert.tools.core.tasks import is_classification
from ml_expert.tools.jobs.specs import JobCancelled, Reporter
from ml_expert.tools.training.chunked import library_interrupt
from ml_expert.tools.training.cluster import FoldFit, FoldTask, Problem, connect, fit_fold
from ml_expert.tools.training.final import FinalModels
from ml_expert.tools.training.folds import folds
from ml_expert.tools.training.helper import Helper
from ml_expert.tools.training.local import LocalSearch
from ml_expert.tools.training.pairs import FoldPairs
from ml_expert.tools.training.portfolio import MAX_NATIVE_CATEGORIES, Config, hgb_cost
from ml_expert.tools.training.samples import SampleRungs
from ml_expert.tools.training.trial import Cancelled, Trial
from ml_expert.tools.training.waves import ClusterWaves

np = lazy_import("numpy")  # loads on first use, not at server start

MIN_ITERATIONS = 30  # a boosting candidate that cannot run this many iterations per fold is not tried
REFIT_SAFETY = 1.3  # a refit sees k/(k-1) of the rows; leave room for that and for noise


class Search(SampleRungs, ClusterWaves, LocalSearch, FinalModels, FoldPairs):
    """Cross-validate candidates within a time budget, ensemble them, refit the winner on all rows. The row-sample
    rungs of large tables (`SampleRungs`), the waves of fits on a Dask cluster (`ClusterWaves`), the local search and
    its convergence rules (`LocalSearch`), the final models (`FinalModels`: bagging, the ensemble pool, refits) and
    the fold fits two at a time beside a helper process (`FoldPairs`) live in their own modules."""

    def __init__(
        self,
        X: np.ndarray,
        y: np.ndarray,
        task: str,
        budget_s: float,
        *,
        split_strategy: str = "random",
        groups: np.ndarray | None = None,
        seed: int = 42,
        reporter: Reporter | None = None,
        scheduler: str | None = None,
        categorical_groups: list[list[int]] | None = None,
        ordinal_columns: list[OrdinalColumn] | None = None,
        metric: str | None = None,
        helper: bool = True,
    ) -> None:
        self.X, self.y, self.task, self.seed = X, y, task, seed
        self.helper_allowed = helper  # a helper process may fit folds beside this one (`start_helper`)
        # tree families see each one-hot group (the columns of one categorical) as one column of category codes, and
        # each scaled ordinal column (a categorical with many levels) as its codes
        self.categorical_groups = categorical_groups or []
        self.ordinal_columns = ordinal_columns or []
        coded = self.categorical_groups or self.ordinal_columns
        self.codes = one_hot_codes(X, self.categorical_groups, self.ordinal_columns) if coded else None
        # an ordinal column's missing rows (-1) count as one more category in HistGradientBoosting's own encoding
        levels = [len(g) for g in self.categorical_groups] + [n + 1 for *_, n in self.ordinal_columns]
        plain = X.shape[1] - sum(len(g) for g in self.categorical_groups) - len(self.ordinal_columns)
        native = tuple(plain + i for i, n in enumerate(levels) if n <= MAX_NATIVE_CATEGORIES)
        # boosting sees those target-encoded (`target_encoding.py`), except where folds hold whole groups: the
        # encoder's cross fitting would put a training row's group-mates' targets in its encoding
        many = tuple(plain + i for i, n in enumerate(levels) if n > MAX_NATIVE_CATEGORIES)
        encoded = many if groups is None else ()
        self.metric = metric or search_metric(task, y)  # a refit keeps its source's, whatever all rows' ratio
        self.split_strategy = split_strategy
        self.groups = groups
        self.folds = folds(y, task, split_strategy, seed, groups=groups)
        self.started = time.perf_counter()
        self.deadline = self.started + budget_s - min(1.0, 0.05 * budget_s)  # a margin for noise and bookkeeping
        self.end = self.started + budget_s  # the refit's hard deadline: nothing grows past the budget
        self.budget_s = budget_s
        self.notes: list[str] = []
        self.failures: dict[str, str] = {}  # family -> its first fit's error
        self.reporter = reporter
        self.trials: list[Trial] = []
        self.n_classes = int(y.max()) + 1 if is_classification(task) else 0
        self.cancelled = False
        self.iteration_seconds: float | None = None
        self._timed_rows = len(y)  # training rows of the fold that measured iteration_seconds
        self.problem = Problem(task, self.metric, seed, self.n_classes, native, encoded)
        self.fits_on_cluster = 0
        self.fits_in_helper = 0  # fold fits the helper process made, beside one here
        self.cluster, why_not = connect(scheduler, X, y, self.problem, self.codes)  # None: every fit runs here
        self.scheduler = self.cluster.address if self.cluster else None
        if why_not:
            self.notes.append(why_not)
        self.helper: Helper | None = None  # a second process for fold fits during `run` (`helper.py`)

    def failed_families(self) -> dict[str, str]:
        """The families none of whose fits succeeded, with the first error: a defect, or columns the library cannot
        take, that a note among many would hide."""
        succeeded = {t.config.family for t in self.trials if t.scores}
        return {family: error for family, error in self.failures.items() if family not in succeeded}

    # -- time ---------------------------------------------------------------------------------------

    def left(self) -> float:
        return self.deadline - time.perf_counter()

    def _refit_reserve(self, members: list[Trial]) -> float:
        k = len(self.folds)
        return sum(t.fold_seconds * (k / max(k - 1, 1)) for t in members if not self.bagged(t)) * REFIT_SAFETY

    def _affordable(self, seconds: float, also: float = 0.0) -> bool:
        """Whether a fit of about `seconds` fits, keeping time for the best model's refit (and for `also`)."""
        best = self._best_complete()
        reserve = self._refit_reserve([best] if best else [])
        return seconds * 1.2 + reserve + also <= self.left()

    def _stop(self) -> bool:
        if self.reporter is not None and self.reporter.cancel_requested():
            self.cancelled = True
        return self.cancelled

    # -- scoring ------------------------------------------------------------------------------------

    def _iter_cap(self, trial: Trial) -> int | None:
        """Boosting iterations a fold of this candidate may run so that its remaining folds still fit the budget
        (a scikit-learn fit cannot be interrupted, so its length is bounded up front); None before any boosting
        fold has been timed, and for other families."""
        if trial.config.family != "hgb" or self.iteration_seconds is None:
            return None
        best = self._best_complete()
        room = self.left() - self._refit_reserve([best] if best else [])
        if not math.isfinite(room):  # no deadline: run_search completing the best candidate when none did
            return None
        return int(room / self._slots(trial) / (self.iteration_seconds * hgb_cost(trial.config)))

    def _fit_fold(self, trial: Trial, fold: int) -> bool:
        """Fit and score one fold of a candidate here; False (and the candidate stopped) when it cannot fit in time
        or was cancelled during the fit."""
        return self._fit_folds([(trial, fold)])[0]

    def _task(self, trial: Trial, fold: int, threads: int | None = None) -> FoldTask | None:
        """A fold's task, growing for its share of the time left; None (the candidate stopped) when its iteration
        cap leaves too few boosting iterations."""
        cap = self._iter_cap(trial)
        if cap is not None and cap < MIN_ITERATIONS:
            trial.stopped = "budget"
            return None
        train, test = self.folds[fold]
        return FoldTask(
            trial.config, fold, train, test, self._fold_deadline(trial) - time.perf_counter(), cap,
            self._per_unit(trial.config, len(train)), self._bags(trial.config), threads,
        )  # fmt: skip

    def _run_here(self, trial: Trial, task: FoldTask) -> FoldFit | Exception:
        """A fit in this process (progress and the cancel check between its chunks): its result, or what it raised
        (a Ctrl-C or SIGTERM that a library turned into its own error is raised again)."""
        try:
            return fit_fold(self.X, self.y, self.problem, task, self._tick(trial, len(task.train)), self.codes)
        except Exception as exc:  # one candidate's library error (CatBoost on degenerate columns): the search goes on
            interrupt = library_interrupt(exc)
            if interrupt is not None:  # a Ctrl-C or SIGTERM that a library turned into its own error
                raise interrupt from exc
            return exc

    def _take(self, trial: Trial, task: FoldTask, fit: FoldFit | Exception) -> bool:
        """Record a fit, or note what it raised (a cancel stops the search, an error drops the candidate)."""
        if isinstance(fit, Cancelled):
            self.cancelled, trial.stopped = True, "cancelled"
            return False
        if isinstance(fit, Exception):
            self._failed(trial, task.fold, fit)
            return False
        self._record(trial, task, fit)
        return True

    def _failed(self, trial: Trial, fold: int, exc: Exception) -> None:
        """A fit raised, here or on a cluster's worker: the candidate is dropped with a note, the search goes on."""
        if trial.stopped == "failed":
            return  # another of its folds failed first (a wave runs them at once)
        trial.stopped = "failed"
        error = f"{type(exc).__name__}: {str(exc)[:200]}"
        self.failures.setdefault(trial.config.family, error)
        self.notes.append(f"{trial.config.label()} failed on fold {fold + 1} and was dropped: {error}")

    def _record(self, trial: Trial, task: FoldTask, fit: FoldFit) -> None:
        """A fold fit's results into its trial (out-of-fold output, score, seconds, iterations, where it ran), and
        the seconds per boosting iteration it measured."""
        if trial.oof is None:
            shape = (len(self.y), self.n_classes) if self.n_classes else (len(self.y),)
            trial.oof = np.full(shape, np.nan)
        trial.oof[task.test] = fit.output
        trial.scores.append(fit.score)
        trial.seconds.append(fit.seconds)
        trial.where.add(fit.where)
        self.fits_on_cluster += fit.where != "local"
        trial.capped += fit.capped
        if fit.model is not None:
            trial.models[task.fold] = fit.model
            if len(trial.models) == len(self.folds):
                self._drop_unused_models()
        if fit.iterations:
            trial.iterations.append(fit.iterations)
        if trial.config.family == "hgb" and fit.iterations_grown:  # the largest seen caps later boosting folds
            per = fit.seconds / fit.iterations_grown / hgb_cost(trial.config)
            if self.iteration_seconds is None or per > self.iteration_seconds:
                self.iteration_seconds, self._timed_rows = per, len(task.train)

    def _fold_deadline(self, trial: Trial) -> float:
        """When a fold of this candidate must stop growing: its share of the time left after the leader's refit,
        so that its remaining folds fit too (at least a few seconds)."""
        best = self._best_complete()
        room = self.left() - self._refit_reserve([best] if best else [])
        if not math.isfinite(room):
            return math.inf
        return time.perf_counter() + max(room / self._slots(trial), 2.0)

    def _slots(self, trial: Trial) -> float:
        """How many fit times the candidate's remaining folds take, two at a time with the helper (+ 0.5 spare)."""
        return math.ceil((len(self.folds) - len(trial.scores)) / self._parallel()) + 0.5

    def _per_unit(self, cfg: Config, rows: int) -> float | None:
        if cfg.family != "hgb" or self.iteration_seconds is None:
            return None
        return self.iteration_seconds * hgb_cost(cfg) * rows / max(self._timed_rows, 1)

    def _tick(self, trial: Trial, rows: int, cancels: bool = True) -> Callable[[str], None] | None:
        """Progress between chunks of a local fit, and (unless a refit, which a cancel shortens instead) the cancel
        check there."""
        if self.reporter is None:
            return None
        reporter = self.reporter

        def tick(step: str) -> None:
            if cancels and reporter.cancel_requested():
                raise Cancelled
            reporter.progress(
                phase="train",
                message=f"{trial.config.label()}{'' if cancels else ' (final model)'}: {step}, rows {_rows(rows)}, "
                f"{time.perf_counter() - self.started:.0f} s of {self.budget_s:.0f}",
            )

        return tick

    def _estimate(self, trial: Trial | None, folds: int) -> float:
        """Seconds that `folds` fold fits of a candidate take, two at a time with the helper (a candidate not tried
        yet: as the slowest fold so far)."""
        if trial is not None and trial.seconds:
            per = trial.fold_seconds
        else:
            per = max((t.fold_seconds for t in self.trials if t.seconds and t.rows is None), default=0.0)
        return per * math.ceil(folds / self._parallel())

    def _estimate_new(self, cfg: Config) -> float:
        """One fold of a candidate not tried yet: as its family's slowest fold so far (boosting: scaled by its
        cost per iteration, and bounded by the iteration cap), else as the slowest fold of any family."""
        same = [t for t in self.trials if t.seconds and t.config.family == cfg.family and t.rows is None]
        if not same:
            return self._estimate(None, 1)
        if cfg.family != "hgb":
            return max(t.fold_seconds for t in same)
        scaled = max(t.fold_seconds / hgb_cost(t.config) for t in same) * hgb_cost(cfg)
        return min(scaled, max(self.left(), 0.0) / (len(self.folds) + 0.5))

    def _report(self, trial: Trial, planned: int) -> None:
        if self.reporter is None:
            return
        n = len(self.trials)
        shown = -trial.mean if self.metric == "rmse" else trial.mean
        self.reporter.progress(
            force=True,
            phase="train",
            step=min(n, planned),
            total=planned,
            message=f"candidate {n}/{planned} {trial.config.label()} cv {self.metric} {shown:.4f}"
            + (f" ({trial.stopped})" if trial.stopped else ""),
        )

    def _best_complete(self) -> Trial | None:
        complete = [t for t in self.trials if t.complete]
        return max(complete, key=lambda t: t.mean) if complete else None

    def best_complete(self) -> Trial:
        """The best candidate that completed its cross-validation. When none did in the budget, the best one-fold
        candidate completes its folds now, past the deadline (a model must come out of every search)."""
        best = self._best_complete()
        if best is not None:
            return best
        if self.cancelled:
            raise JobCancelled()  # cancelled before any candidate completed its cross-validation: no model
        self.deadline = math.inf
        waiting = [t for t in self.trials if t.rows is None and t.stopped != "failed"]
        for best in sorted(waiting, key=lambda t: t.mean, reverse=True):  # the next one when a fit of it raises
            best.stopped = None
            self._complete(best, len(self.trials))
            if best.complete:
                return best
        failures = "; ".join(f"{family}: {error}" for family, error in self.failures.items()) or "none completed"
        raise ValueError(
            f"no candidate of the auto search could be fitted on this table ({failures}). Check the prepared "
            "columns (analyze_data lists constant and all-missing ones), or train one family, e.g. "
            "architecture='random_forest'."
        )

    def _complete(self, trial: Trial, planned: int, patient: bool = False) -> None:
        """Run the remaining folds (two at a time with the helper); stop early when the candidate clearly trails the
        leader (unless patient)."""
        leader = self._best_complete()
        fold = len(trial.scores)
        while fold < len(self.folds):
            if self._stop() or not self._affordable(self._estimate(trial, 1)):
                trial.stopped = "budget"
                break
            batch = range(fold, min(fold + self._width(), len(self.folds)))
            if not all(self._fit_folds([(trial, f) for f in batch])):
                break
            fold = batch[-1] + 1
            if not patient and leader is not None and self._trails(trial, leader, batch):
                trial.stopped = "trailing"
                break
        self._report(trial, planned)

    def _trails(self, trial: Trial, leader: Trial, batch: range) -> bool:
        """Whether the candidate clearly trails the leader after any fold of this batch (as one fold at a time would
        have checked it), from its second fold up to its last but one."""
        return any(
            2 <= n < len(self.folds) and leader.mean - float(np.mean(trial.scores[:n])) > 2 * self._noise(leader)
            for n in range(batch[0] + 1, batch[-1] + 2)
        )

    def _noise(self, leader: Trial) -> float:
        """How much a fold score moves by chance: the spread of the leader's folds, and for a share of rows
        (accuracy, balanced accuracy) at least its binomial standard error on one fold's rows."""
        spread = max(float(np.std(leader.scores)), 1e-3)
        if self.metric == "rmse":
            return spread
        p = min(max(leader.mean, 0.0), 1.0)
        rows = len(self.folds[0][1])
        return max(spread, math.sqrt(p * (1 - p) / max(rows, 1)))

    # -- the search -----------------------------------------------------------------------------------

    def run(self, candidates: list[Config], neighbours: int = 40) -> None:
        """Successive halving over row samples (large data), then over folds on the portfolio, then a local search
        around the best boosting until it converges or the budget ends (at most `neighbours` more candidates). A
        candidate left with fewer folds than the others (a cancel, the budget) is marked, never taken as complete.
        Fold fits run two at a time once the first has been timed, when a helper process pays (`start_helper`)."""
        try:
            self._run(candidates, neighbours)
        finally:
            self.close_helper()
            for trial in self.trials:
                if trial.stopped is None and len(trial.scores) < len(self.folds):
                    trial.stopped = "cancelled" if self.cancelled else "budget"

    def _run(self, candidates: list[Config], neighbours: int) -> None:
        planned = len(candidates) + neighbours
        candidates = self._rank_on_samples(candidates, planned)
        if self.cluster is not None:
            self._run_on_cluster(candidates, neighbours, planned)
            return
        first: list[Trial] = []
        pending: list[Trial] = []
        for cfg in candidates:  # rung 0: one fold each, while the leader can still complete and be refit
            if self._stop():
                return
            if first:
                leader = max(first, key=lambda t: t.mean)
                completion = self._estimate(leader, len(self.folds) - 1) + self._refit_reserve([leader])
                if not self._affordable(self._estimate_new(cfg) * 1.25, also=completion):
                    continue  # a cheaper family later in the list may still fit
            trial = Trial(cfg)
            self.trials.append(trial)
            pending.append(trial)
            if first and len(pending) < self._width():
                continue  # two at a time with the helper; the first alone (it may change the folds)
            self._first_folds(pending, first)
        self._first_folds(pending, first)
        first.sort(key=lambda t: t.mean, reverse=True)
        keep = first[: max(2, math.ceil(len(first) / 2))]
        for trial in first[len(keep) :]:
            trial.stopped = "halved"
        for trial in keep:  # rung 1: the better half completes its folds
            self._complete(trial, planned)
        if self._local_search(neighbours, planned):
            return  # converged: the budget is a ceiling, not a target
        if self._resume_stopped(planned):  # time was left: more complete candidates, maybe a boosting to refine
            self._local_search(neighbours, planned)

    def _first_folds(self, pending: list[Trial], first: list[Trial]) -> None:
        """Fit the first fold of the pending candidates (emptied); those that scored join `first`. The first that
        scores may change the number of folds (`_fewer_folds_if_needed`)."""
        for trial, ok in zip(pending, self._fit_folds([(t, 0) for t in pending]), strict=True):
            if ok:
                if not first:
                    self._fewer_folds_if_needed(trial)
                    # from here on two at a time: the first fold is timed on every core, with no helper starting
                    # beside it (the estimates of every later fit start from it)
                    self.start_helper()
                first.append(trial)
        pending.clear()

    def close(self) -> None:
        """Let go of the cluster and the helper process (the refit runs here, on the driver)."""
        if self.cluster is not None:
            self.cluster.close()
            self.cluster = None
        self.close_helper()

    @property
    def rows(self) -> np.ndarray:
        """The rows that have out-of-fold output (all of them, except with a single hold-out)."""
        return np.unique(np.concatenate([test for _, test in self.folds]))

    def _fewer_folds_if_needed(self, trial: Trial) -> None:
        """When the first fold says that completing k folds and a refit will not fit the budget, start over with
        3 folds, or one 80/20 hold-out: a candidate must complete its cross-validation within the budget."""
        if self.split_strategy == "time":
            return
        for k in (3, 1):
            if len(self.folds) <= k:
                continue
            refit = 0.0 if self._bags(trial.config) else REFIT_SAFETY * 1.3  # bagged fold models need no refit
            needed = (self._estimate(trial, len(self.folds) - 1) + trial.fold_seconds * refit) * 1.2
            if needed <= self.left():
                return
            self.folds = folds(self.y, self.task, self.split_strategy, self.seed, k=k, groups=self.groups)
            trial.scores, trial.seconds, trial.iterations, trial.oof, trial.models = [], [], [], None, {}
            self._fit_fold(trial, 0)


def cross_validate(X: np.ndarray, y: np.ndarray, task: str, cfg: Config, budget_s: float, seed: int = 42) -> Trial:
    """One candidate's cross-validation within budget_s (the folds that fit in it), as the search scores it."""
    search = Search(X, y, task, budget_s, seed=seed)
    trial = Trial(cfg)
    search.trials.append(trial)
    search._fit_fold(trial, 0)
    search._complete(trial, 1)
    return trial


def _rows(n: int) -> str:
    return f"{n / 1e6:.2f}M" if n >= 1_000_000 else f"{n:,}"
