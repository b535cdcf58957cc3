"""A second process for the local search's fold fits: on 2 cores, two fold fits on one thread each finish sooner
than the same fits one after the other on two threads. HistGradientBoosting gains least from its second thread on
small tables (600 rows x 8 columns: 0.26 s on one thread, 0.25 s on two; 3,000 x 20: 1.27x faster; 100,000 x 20:
1.67x; 1,500 x 60 with 32 classes: 1.56x) since every iteration ends at an OpenMP barrier, while two single-thread
fits run side by side at nearly full speed each. The search fits folds two at a time (a candidate's next two folds,
or the first fold of two candidates): one in its own process, as before (its progress and cancel check between
chunks), the other here.

The helper is a fresh interpreter (`python -m` this module; forking a process whose OpenMP runtime has run is
unsafe, and multiprocessing's spawn would run the parent's main script again), started beside the search's first
fits and given the table once; it is used only once it says it is ready, so a slow start costs nothing but a core
for a second or two. It dies with the process that started it (Linux's parent-death signal), ignores the terminal's
Ctrl-C (the search decides), and stops a fit at its next chunk when the search is cancelled. Not started below
MIN_BUDGET_S (its start would cost more than it saves), above MAX_ROWS rows (row-sample rungs decide there, and two
threads gain more) or MAX_BYTES of arrays, on one core, beside a Dask cluster, or where no file descriptor can be
passed to a child (Windows). When it dies mid-search (out of memory), the fit it held runs in the search's process
and the rest one at a time."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Callable
from typing import Any

from ml_expert.tools.core.lazy import lazy_import
from ml_expert.tools.training.cluster import FoldFit, FoldTask, Problem, fit_fold
from ml_expert.tools.training.cores import register_helper, usable_cores
from ml_expert.tools.training.trial import Cancelled

np = lazy_import("numpy")  # loads on first use, not at server start

MIN_BUDGET_S = 20.0
MAX_ROWS = 100_000
MAX_BYTES = 256 * 2**20
PR_SET_PDEATHSIG = 1


class HelperLost(Exception):
    """The helper process ended while it held a fit."""


def wanted(rows: int, nbytes: int, budget_s: float, cluster: bool) -> bool:
    """Whether a search of this size gains from a helper process."""
    return (
        not cluster and budget_s >= MIN_BUDGET_S and rows <= MAX_ROWS and nbytes <= MAX_BYTES and (usable_cores() >= 2)
    )


def threads_per_fit() -> int:
    """Threads of each of two fits that run side by side: half the cores."""
    return max(1, usable_cores() // 2)


class Helper:
    """One helper process: `submit` a fold task, `result` waits for its outcome (the cancel polled meanwhile). Every
    task carries a number that its reply repeats, so a reply left unread (its wait interrupted) is never taken for
    a later task's."""

    def __init__(self, X: np.ndarray, y: np.ndarray, problem: Problem, codes: np.ndarray | None) -> None:
        import socket
        import subprocess
        import sys
        import threading
        from multiprocessing.connection import Connection

        ours, theirs = socket.socketpair()
        cancel_reader, cancel_writer = os.pipe()
        # `python -m` this module, not multiprocessing's spawn: spawn runs the parent's main script again in the child
        # (a script that calls the search without a main guard would run a second search there)
        self.process = subprocess.Popen(
            [sys.executable, "-m", __name__, str(theirs.fileno()), str(cancel_reader), str(os.getpid())],
            pass_fds=(theirs.fileno(), cancel_reader), stdin=subprocess.DEVNULL,
        )  # fmt: skip
        theirs.close()
        os.close(cancel_reader)
        self.conn = Connection(ours.detach())
        self._cancel = Connection(cancel_writer, readable=False)
        # the table goes down the pipe from a thread: the search's first fits need not wait for the helper to start
        self._loading = threading.Thread(target=self._send_table, args=((X, y, problem, codes),), daemon=True)
        self._loading.start()
        self._ready = False
        self.lost = False
        self._sent = 0

    def alive(self) -> bool:
        return self.process.poll() is None

    def _send_table(self, table: tuple[Any, ...]) -> None:
        with contextlib.suppress(OSError):  # a helper gone before it read the table: `ready` finds out
            self.conn.send(table)

    def ready(self) -> bool:
        """Whether it has started and holds the table (never blocks)."""
        if not self._ready and not self.lost:
            try:
                if self.conn.poll():
                    self._ready = self.conn.recv() == "ready"
                    self._loading.join()  # it read the whole table before it said so
                    # from now on its CPU time is this search's own work (while it starts, it is load beside the
                    # first fits, which then hold to one thread)
                    register_helper(self.process.pid)
            except (EOFError, OSError):
                self.lost = True
        return self._ready and not self.lost

    def submit(self, task: FoldTask) -> None:
        self._sent += 1
        try:
            self.conn.send((self._sent, task))
        except OSError as exc:
            self.lost = True
            raise HelperLost(str(exc)) from exc

    def result(self, stop: Callable[[], bool]) -> FoldFit | Exception:
        """The last submitted fit's result, or the exception it raised there (Cancelled when `stop()` turned true
        meanwhile); HelperLost when the process ended without one."""
        cancelled = False
        while True:
            try:
                if self.conn.poll(0.2):
                    number, value = self.conn.recv()
                    if number == self._sent:
                        return value  # a FoldFit, or what the fit raised there
                    continue  # the reply to an earlier task whose wait was interrupted
            except (EOFError, OSError) as exc:
                self.lost = True
                raise HelperLost(f"the helper process ended (exit code {self.process.poll()})") from exc
            if not self.alive():
                self.lost = True
                raise HelperLost(f"the helper process ended (exit code {self.process.poll()})")
            if not cancelled and stop():
                cancelled = True
                with contextlib.suppress(OSError):
                    self._cancel.send(self._sent)  # that fit raises Cancelled at its next chunk

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.conn.send(None)
        try:
            self.process.wait(timeout=1.0)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5.0)
        register_helper(None)
        self.conn.close()
        self._cancel.close()


def start(
    X: np.ndarray, y: np.ndarray, problem: Problem, codes: np.ndarray | None, budget_s: float, cluster: bool
) -> Helper | None:
    """A helper for this search when it gains from one, else None (also when the process cannot start)."""
    nbytes = X.nbytes + y.nbytes + (0 if codes is None else codes.nbytes)
    if not wanted(len(y), nbytes, budget_s, cluster):
        return None
    try:
        return Helper(X, y, problem, codes)
    except Exception:  # no process could start (no fd passing on Windows): the search runs as before
        return None


def _serve(conn: Any, cancels: Any, parent: int) -> None:
    """The helper's loop: take the table, say ready, then fit each numbered task until None or the end of the pipe,
    replying with its number."""
    _die_with(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C is the search's to handle
    import sklearn.ensemble  # noqa: F401  # imported before saying ready: the first fit is not the slower for it

    try:
        X, y, problem, codes = conn.recv()
    except (EOFError, OSError):
        return
    conn.send("ready")
    current = 0
    cancelled: set[int] = set()

    def tick(step: str) -> None:
        while cancels.poll():
            cancelled.add(cancels.recv())
        if current in cancelled:
            raise Cancelled

    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        current, task = message
        try:
            outcome: Any = fit_fold(X, y, problem, task, tick, codes)
        except Exception as exc:  # the search drops the candidate, as for a local fit that raised
            outcome = exc
        try:
            conn.send((current, outcome))
        except Exception:  # an exception that does not pickle
            conn.send((current, RuntimeError(f"{type(outcome).__name__}: {outcome}")))


def _die_with(parent: int) -> None:
    """End with the process that started this one (Linux), and now if it is already gone."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:
        os._exit(0)


if __name__ == "__main__":  # the helper process: python -m ml_expert.tools.training.helper CONN_FD CANCEL_FD PARENT_PID
    import sys
    from multiprocessing.connection import Connection

    _serve(Connection(int(sys.argv[1])), Connection(int(sys.argv[2]), writable=False), int(sys.argv[3]))
