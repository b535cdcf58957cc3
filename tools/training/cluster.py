"""Where the search's fold fits run: in the worker process, or on an existing `dask.distributed` cluster.

One pure function, `fit_fold` (plain arguments -> a `FoldFit`), is what both paths run: locally it is called
with a progress callback; on a cluster it is submitted with the training arrays scattered to every worker once
(`Client.scatter(..., broadcast=True)`), never once per task. The budget, the halving and the ranking stay in
the search on the driver; a fit only gets how many seconds it may grow. A cluster that fails mid-search (its
scheduler gone, every worker lost) is closed and the search goes on locally, with a note saying so; a single
lost worker is dask's own business (it reruns that worker's tasks elsewhere).

`dask` / `distributed` are an extra (`pip install ml-expert[dask]`), imported only when a scheduler is named
(`ML_EXPERT_DASK_SCHEDULER`, `ml-expert serve --dask-scheduler tcp://HOST:8786`).
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import CancelledError
from dataclasses import dataclass
from functools import partial
from typing import Any

from ml_expert.tools.core.chunks import predict_in_chunks
from ml_expert.tools.core.lazy import lazy_import
from ml_expert.tools.core.scoring import rank_score
from ml_expert.tools.training.chunked import SCORED_ROWS, SCORING_SAMPLE, fit_stoppable
from ml_expert.tools.training.portfolio import BOOSTING, ENCODED_FAMILIES, Config, build, decided
from ml_expert.tools.training.target_encoding import encode_training_rows
from ml_expert.tools.training.trial import early_stopped_iterations, output_of, widen

np = lazy_import("numpy")  # loads on first use, not at server start

CONNECT_TIMEOUT_S = 10.0


@dataclass
class FoldTask:
    """One candidate × fold: what to fit, on which rows, for how long at most."""

    config: Config
    fold: int
    train: np.ndarray
    test: np.ndarray
    seconds: float
    iter_cap: int | None = None
    per_unit: float | None = None  # seconds per boosting iteration expected on these rows (sizes the first chunk)
    keep_model: bool = False  # send the fitted model back (a fold model the search may bag)
    threads: int | None = None  # native threads of the fit (two fits side by side: half the cores each)


@dataclass
class FoldFit:
    """What one fold fit gives back: held-out output and score, seconds, boosting iterations, where it ran."""

    output: np.ndarray
    score: float
    seconds: float
    iterations: int | None
    iterations_grown: int
    capped: bool
    where: str
    model: Any = None  # the fitted fold model, when the task asked to keep it


@dataclass(frozen=True)
class Problem:
    """What every fold fit of one search shares (sent once with the task, a few bytes)."""

    task: str
    metric: str
    seed: int
    n_classes: int
    categorical: tuple[int, ...] = ()  # columns of the coded matrix that boosting splits as categories
    encoded: tuple[int, ...] = ()  # columns of the coded matrix boosting sees target-encoded (too many levels)


def fit_fold(
    X: np.ndarray,
    y: np.ndarray,
    problem: Problem,
    t: FoldTask,
    tick: Callable[[str], None] | None = None,
    codes: np.ndarray | None = None,
) -> FoldFit:
    """Fit a candidate on a fold's training rows, growing for at most `t.seconds`, and score its held-out rows.
    Tree families fit on `codes` (one-hot groups as category codes) when given. On a Dask worker, native thread
    pools (OpenMP, BLAS) are held to the worker's threads: several workers on one machine each running a
    full-width OpenMP pool slow every fit many times over; so are they when the task says how many threads it may use
    (two fits side by side, `helper.py`)."""
    if codes is not None and t.config.coded:
        X, categorical = codes, problem.categorical
        encoded = problem.encoded if t.config.family in ENCODED_FAMILIES else ()
    else:
        categorical, encoded = (), ()
    threads = t.threads or _worker_threads()
    if threads is None:
        return _fit_fold(X, y, problem, t, tick, categorical, encoded, -1)
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=threads):
        return _fit_fold(X, y, problem, t, tick, categorical, encoded, threads)


def _fit_fold(
    X: np.ndarray,
    y: np.ndarray,
    problem: Problem,
    t: FoldTask,
    tick: Callable[[str], None] | None,
    categorical: tuple[int, ...],
    encoded: tuple[int, ...],
    threads: int,
) -> FoldFit:
    started = time.perf_counter()
    model = build(
        t.config, problem.task, problem.metric, problem.seed, iter_cap=t.iter_cap, rows=len(t.train),
        categorical=categorical, threads=threads,
    )  # fmt: skip
    # many-level categoricals: target-encoded on this fold's training rows only
    encoding = encode_training_rows(X[t.train], y[t.train], encoded, problem.n_classes, problem.seed)
    validation = _validation(X, y, problem, t) if t.config.family in BOOSTING else None  # only boosting early-stops
    validation = None if validation is None else (encoding.seen(validation[0]), validation[1])
    # from SCORED_ROWS held-out rows, their prediction's time is kept free before the deadline
    scoring = (encoding.seen(X[t.test[:SCORING_SAMPLE]]), len(t.test)) if len(t.test) >= SCORED_ROWS else None
    grown = fit_stoppable(model, encoding.rows, y[t.train], started + t.seconds, tick, t.per_unit, validation, scoring)
    fitted = encoding.wrap(decided(model, t.config, problem.metric, y[t.train]))
    output = predict_in_chunks(partial(output_of, fitted, problem.task), X, t.test, tick, "scoring held-out rows")
    if problem.n_classes and output.shape[1] < problem.n_classes:  # a class missing from this fold's rows
        output = widen(output, fitted.classes_, problem.n_classes)
    return FoldFit(
        output=output,
        score=rank_score(problem.metric, y[t.test], output),
        seconds=time.perf_counter() - started,
        iterations=early_stopped_iterations(model),
        iterations_grown=grown.units if t.config.family == "hgb" else 0,
        capped=grown.stopped_by_deadline,
        where=_where(),
        model=fitted if t.keep_model else None,
    )


def _validation(X: np.ndarray, y: np.ndarray, problem: Problem, t: FoldTask) -> tuple[np.ndarray, np.ndarray] | None:
    """The rows boosting early-stops on: the fold's held-out rows (as AutoGluon's bagged folds do), so that a fold
    model learns from all of its training rows; None when a held-out class is missing from the training rows."""
    if problem.n_classes:
        trained = np.bincount(y[t.train].astype(int), minlength=problem.n_classes) > 0
        held_out = np.bincount(y[t.test].astype(int), minlength=problem.n_classes) > 0
        if (held_out & ~trained).any():
            return None
    return X[t.test], y[t.test]


def _worker() -> Any:
    """The Dask worker this runs on, or None. A process that runs Dask tasks has imported `distributed`; one that has
    not is no worker, and is spared that import (most of a second, once timed as the first fold's boosting
    iterations it made the search cap every later boosting fit at a few iterations)."""
    distributed = sys.modules.get("distributed")
    if distributed is None:
        return None
    try:
        return distributed.get_worker()
    except ValueError:
        return None


def _worker_threads() -> int | None:
    worker = _worker()
    return None if worker is None else max(1, int(worker.state.nthreads))


def _where() -> str:
    worker = _worker()
    return "local" if worker is None else str(worker.address)


class ClusterLost(Exception):
    """The cluster failed while fits were running on it: the search goes on locally."""


class WorkerKilled(Exception):
    """A fit killed every worker Dask ran it on (its KilledWorker): that candidate is dropped, not run here."""


WORKER_KILLED = (
    "its fit killed every worker it ran on, as one that runs out of memory does (give the workers more memory, or "
    "train without the cluster); it was not run here, where it could take the search down"
)
WORKER_LOST = (
    "its fit was lost with a worker that died while running it (the scheduler let go of it), as under a fit that "
    "runs out of memory; it was not run here, where it could take the search down"
)


class DaskFolds:
    """Fold fits on a dask.distributed cluster: the arrays scattered once, tasks submitted, results as they come."""

    def __init__(
        self, client: Any, X: np.ndarray, y: np.ndarray, problem: Problem, codes: np.ndarray | None = None
    ) -> None:
        self.client, self.problem = client, problem
        self.address = str(client.scheduler.address)
        self.slots = max(1, sum(client.nthreads().values()))
        self.X, self.y = client.scatter([X, y], broadcast=True, hash=False)
        self.codes = None if codes is None else client.scatter(codes, broadcast=True, hash=False)

    def run(self, tasks: list[FoldTask], timeout: float) -> Iterator[tuple[FoldTask, FoldFit | Exception]]:
        """Submit every task, yield (task, fit) in the order they finish, or (task, error) for a fit that raised
        on its worker (one candidate's library error, as a local fit's: the cluster goes on) or that killed every
        worker it ran on (`WorkerKilled`, after the others: Dask retried it, and each worker died, as under a fit that
        runs out of memory; the nannies restart them and the cluster goes on); ClusterLost when the cluster fails, or
        when most of the fits killed their workers (workers too small for this table: better here than nowhere)."""
        from distributed import KilledWorker, as_completed

        futures = {
            self.client.submit(fit_fold, self.X, self.y, self.problem, t, None, self.codes, pure=False): t
            for t in tasks
        }
        killed: list[tuple[FoldTask, Exception]] = []
        try:
            for future in as_completed(list(futures), timeout=max(timeout, 1.0)):
                try:
                    error = future.exception() if future.status == "error" else None
                    outcome = future.result() if error is None else error
                except CancelledError:
                    if self.client.status != "running":
                        raise  # the client lost its scheduler: the cluster is gone
                    # the scheduler let go of a task whose worker died under it (measured: the culprit's own task,
                    # "cancelled for reason: unknown", once it had killed its workers): judged with the killed below
                    killed.append((futures[future], WorkerKilled(WORKER_LOST)))
                    continue
                if isinstance(error, KilledWorker):  # a task queued beside the culprit can be blamed too: judged below
                    killed.append((futures[future], WorkerKilled(WORKER_KILLED)))
                    continue
                yield futures[future], outcome
            if len(killed) > len(tasks) / 2:
                raise ClusterLost(f"{len(killed)} of {len(tasks)} fits killed the workers they ran on")
        except Exception as exc:  # scheduler gone, all workers lost, a timeout: finish locally
            for future in futures:
                future.cancel()
            raise ClusterLost(f"{type(exc).__name__}: {exc}") from exc
        yield from killed

    def close(self) -> None:
        with contextlib.suppress(Exception):  # closing a client of a cluster that is gone
            self.client.close(timeout=5)


def connect(
    address: str | None, X: np.ndarray, y: np.ndarray, problem: Problem, codes: np.ndarray | None = None
) -> tuple[DaskFolds | None, str]:
    """The cluster at `address` ready for this search, or None with the reason (no address, no dask installed,
    no scheduler answering): the search then runs locally."""
    if not address:
        return None, ""
    try:
        from distributed import Client
    except ImportError:
        return None, f"a Dask scheduler ({address}) is set but dask.distributed is not installed: pip install " + (
            "'ml-expert[dask]'; the search ran locally"
        )
    try:
        client = Client(address, timeout=CONNECT_TIMEOUT_S)
        return DaskFolds(client, X, y, problem, codes), ""
    except Exception as exc:  # no scheduler there, or it refused us
        return (
            None,
            f"the Dask scheduler {address} could not be used ({type(exc).__name__}: {exc}); the search ran locally",
        )
