"""Stoppable fits: no scikit-learn call of the search may run past a deadline or go quiet.

HistGradientBoosting and forests grow in chunks with `warm_start`: fit a few iterations or trees,
report progress, check the deadline (and, through the progress callback, the cancel flag), continue. Each
chunk is sized from the seconds per iteration / tree measured so far, to take about CHUNK_SECONDS and never
to end past the deadline; a model stopped by the deadline is still a valid, smaller model. Early stopping
works as in one call: with an integer `random_state` every warm-started call keeps the same validation rows,
and a chunk that ends before its `max_iter` has early-stopped, so growing ends there. Other estimators
(linear models) fit in one call. CatBoost grows in one call watched by a callback after every iteration, which
stops it at the deadline, reports progress and carries a cancel out.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ml_expert.tools.core.lazy import lazy_import
from ml_expert.tools.training.cores import openmp_threads
from ml_expert.tools.training.portfolio import is_catboost

np = lazy_import("numpy")  # loads on first use, not at server start

CHUNK_SECONDS = 4.0  # a chunk's target length: progress at least every ~10 s whatever the size
FIRST_ITERATIONS = 10  # boosting iterations of the first chunk when no speed is known yet
FIRST_TREES = 8  # forest trees of the first chunk
FIRST_TREES_LARGE = 2  # ... above LARGE_ROWS rows, where one tree may take seconds (one thread on a Dask worker)
LARGE_ROWS = 100_000
SCORED_ROWS = 100_000  # held-out rows from which callers keep their prediction's time free before a fit's deadline
SCORING_SAMPLE = 20_000  # ... timed on this many of them (below, it is a small share of the fit: small tables'
# fits stay as they were)
Tick = Callable[[str], None]  # progress callback: "iteration 350 of 2000"; may raise to cancel


@dataclass
class Grown:
    """What a stoppable fit did: units grown (boosting iterations or trees), chunks, and whether the deadline
    (rather than convergence or the planned size) ended it."""

    units: int = 0
    chunks: int = 0
    stopped_by_deadline: bool = False
    seconds: float = 0.0


def _boosting(model: Any) -> tuple[Any, bool]:
    """The boosting model inside a model (a TransformedTargetRegressor wraps one), and whether wrapped."""
    inner = getattr(model, "regressor", None)
    if inner is not None and (type(inner).__name__.startswith("HistGradientBoosting") or is_catboost(inner)):
        return inner, True
    return model, False


class _Watch:
    """CatBoost's callback after each iteration: stops the fit at the deadline, reports progress about every
    CHUNK_SECONDS, and carries a cancel (the tick raising) out of CatBoost's loop to be raised after it."""

    def __init__(self, deadline: float, tick: Tick | None, planned: int) -> None:
        self.deadline, self.tick, self.planned = deadline, tick, planned
        self.reported = time.perf_counter()
        self.stopped = False
        self.error: BaseException | None = None

    def after_iteration(self, info: Any) -> bool:
        try:
            now = time.perf_counter()
            if now >= self.deadline:
                self.stopped = True
                return False
            if self.tick is not None and now - self.reported >= CHUNK_SECONDS:
                self.reported = now
                self.tick(f"iteration {info.iteration} of {self.planned}")
        except BaseException as exc:  # a cancel, or SIGTERM / Ctrl-C: stop CatBoost, raise it once the fit returned
            self.error = exc
            return False
        return True


def library_interrupt(exc: BaseException) -> KeyboardInterrupt | None:
    """A new KeyboardInterrupt when `exc` is a Ctrl-C or SIGTERM that a library turned into an error of its own, else
    None. numpy turns one raised while it parses a buffer format (HistGradientBoosting does at every tree) into a
    ValueError caused by it (numpy/numpy#11119); CatBoost into a CatBoostError that names it. Taken for a
    candidate's failure, the search would drop the candidate and go on, and the interrupt would be lost."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, KeyboardInterrupt):
            return KeyboardInterrupt(*current.args)  # a new one: the library's error is caused by the first
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return KeyboardInterrupt() if "KeyboardInterrupt" in str(exc) else None


def _catboost(model: Any, inner: Any, X: np.ndarray, y: np.ndarray, deadline: float, tick: Tick | None,
              extra: dict[str, Any]) -> Grown:  # fmt: skip
    """CatBoost grows in one call, watched after every iteration (the deadline, progress, a cancel)."""
    started = time.perf_counter()
    watch = _Watch(deadline, tick, int(inner.iterations))
    try:
        model.fit(X, y, callbacks=[watch], **extra)
    except Exception as exc:  # CatBoost turns what a callback raises into a CatBoostError: a signal must stay one
        if watch.error is not None:
            raise watch.error from exc
        interrupt = library_interrupt(exc)  # raised in CatBoost's own wrapper, before ours ran
        if interrupt is not None:
            raise interrupt from exc
        raise
    if watch.error is not None:
        raise watch.error
    fitted = getattr(model, "regressor_", model)
    return Grown(
        units=fitted.n_iter_, chunks=1, stopped_by_deadline=watch.stopped, seconds=time.perf_counter() - started
    )


def fit_stoppable(
    model: Any,
    X: np.ndarray,
    y: np.ndarray,
    deadline: float,
    tick: Tick | None = None,
    per_unit: float | None = None,
    validation: tuple[np.ndarray, np.ndarray] | None = None,
    scoring: tuple[np.ndarray, int] | None = None,
) -> Grown:
    """Fit `model` on X, y so that no chunk ends after `deadline` (a `time.perf_counter()` value); `per_unit`:
    seconds per iteration / tree known from earlier fits (sizes the first chunk); `validation` (X, y): the rows
    boosting's early stopping watches instead of a share of X split off; `scoring` (a sample, a count): the rows
    the caller predicts once the fit ends, whose prediction time is kept free before the deadline. OpenMP is held
    to the cores other processes leave free (`cores.openmp_threads`)."""
    with openmp_threads():
        return _fit_stoppable(model, X, y, deadline, tick, per_unit, validation, scoring)


def _fit_stoppable(
    model: Any,
    X: np.ndarray,
    y: np.ndarray,
    deadline: float,
    tick: Tick | None,
    per_unit: float | None,
    validation: tuple[np.ndarray, np.ndarray] | None,
    scoring: tuple[np.ndarray, int] | None,
) -> Grown:
    inner, wrapped = _boosting(model)
    name = type(inner).__name__
    if is_catboost(inner):
        rows = {} if validation is None else {"eval_set": (validation[0], _target(model, wrapped, validation[1]))}
        return _catboost(model, inner, X, y, deadline, tick, rows)
    if name.startswith("HistGradientBoosting"):
        extra = {}
        if validation is not None and inner.early_stopping:
            X_val, y_val = validation
            extra = {"X_val": X_val, "y_val": _target(model, wrapped, y_val)}
            if getattr(inner, "class_weight", None) == "balanced":  # early stopping watches the loss it trains on
                from sklearn.utils.class_weight import compute_sample_weight

                extra["sample_weight_val"] = compute_sample_weight("balanced", y_val)
        return _grow(
            model, inner, wrapped, "max_iter", X, y, deadline, tick, per_unit, FIRST_ITERATIONS, extra, scoring
        )
    if name.startswith(("RandomForest", "ExtraTrees")):
        first = FIRST_TREES if len(X) <= LARGE_ROWS else FIRST_TREES_LARGE
        if model.get_params().get("class_weight") != "balanced":
            return _grow(model, model, False, "n_estimators", X, y, deadline, tick, per_unit, first, None, scoring)
        from sklearn.utils.class_weight import compute_class_weight

        classes = np.unique(y)  # "balanced" as this y's weights: the same trees, without a warm_start warning per chunk
        weights = compute_class_weight("balanced", classes=classes, y=y)
        model.set_params(class_weight=dict(zip(classes, weights, strict=True)))
        try:
            return _grow(model, model, False, "n_estimators", X, y, deadline, tick, per_unit, first, None, scoring)
        finally:
            model.set_params(class_weight="balanced")
    started = time.perf_counter()
    model.fit(X, y)
    return Grown(units=1, chunks=1, seconds=time.perf_counter() - started)


def _target(model: Any, wrapped: bool, y: np.ndarray) -> np.ndarray:
    """Validation targets as the wrapped boosting model sees them (a log target: their logs)."""
    return model.func(y) if wrapped else y


def _grown(estimator: Any, attribute: str) -> int:
    return int(estimator.n_iter_) if attribute == "max_iter" else len(estimator.estimators_)


def _grow(
    model: Any,
    inner: Any,
    wrapped: bool,
    attribute: str,
    X: np.ndarray,
    y: np.ndarray,
    deadline: float,
    tick: Tick | None,
    per_unit: float | None,
    first: int,
    extra: dict[str, Any] | None = None,
    scoring: tuple[np.ndarray, int] | None = None,
) -> Grown:
    """Grow `inner` (the estimator that has `attribute`) chunk by chunk; `model` is what the caller predicts with;
    `extra`: fit arguments of every chunk (boosting's validation rows); `scoring`: as for `fit_stoppable`."""
    extra = extra or {}
    target = int(getattr(inner, attribute))
    started = time.perf_counter()
    size = _chunk(per_unit, first, target, deadline - started)
    inner.set_params(warm_start=True, **{attribute: size})
    model.fit(X, y, **extra)  # a TransformedTargetRegressor fits a clone: continue on its fitted regressor_
    fitted = model.regressor_ if wrapped else model
    y_fit = model.transformer_.transform(y.reshape(-1, 1)).ravel() if wrapped else y
    report = Grown(units=_grown(fitted, attribute), chunks=1)
    timed = time.perf_counter()
    predicting = _predict_seconds_per_unit(model, scoring, report.units)  # the held-out rows' share of each unit
    started += time.perf_counter() - timed  # what the timing took is no fitting time
    while report.units < target:
        if attribute == "max_iter" and report.units < fitted.max_iter:
            break  # early stopping ended the last chunk: converged
        now = time.perf_counter()
        per = (now - started) / max(report.units, 1)
        size = _chunk(per + predicting, first, target - report.units, deadline - now - predicting * report.units)
        if size <= 0:
            report.stopped_by_deadline = True
            break
        if tick is not None:
            tick(f"{'iteration' if attribute == 'max_iter' else 'tree'} {report.units} of {target}")
        fitted.set_params(**{attribute: report.units + size})
        fitted.fit(X, y_fit, **extra)
        report.units, report.chunks = _grown(fitted, attribute), report.chunks + 1
    fitted.set_params(warm_start=False, **{attribute: target})  # a clone of it is a fresh estimator again
    if wrapped:
        model.regressor.set_params(warm_start=False, **{attribute: target})
    report.seconds = time.perf_counter() - started
    return report


def _predict_seconds_per_unit(model: Any, scoring: tuple[np.ndarray, int] | None, units: int) -> float:
    """Seconds that predicting the caller's held-out rows will take per iteration / tree, timed on their sample
    (at 10M rows, extra-trees' 1.7M held-out rows took ~20 s past a fold's deadline); 0 without `scoring`."""
    if scoring is None or not len(scoring[0]) or units <= 0:
        return 0.0
    sample, rows = scoring
    started = time.perf_counter()
    model.predict(sample)
    return (time.perf_counter() - started) * rows / len(sample) / units


def _chunk(per_unit: float | None, first: int, left: int, seconds_left: float) -> int:
    """Units in the next chunk: about CHUNK_SECONDS of work, never past the deadline, never past the plan."""
    if per_unit is None or per_unit <= 0:
        return min(first, left)
    fits = int(seconds_left / per_unit) if math.isfinite(seconds_left) else left
    return max(0, min(left, fits, max(first, int(CHUNK_SECONDS / per_unit))))
