"""How many OpenMP threads a fit may use now: the cores this process may run on, less those other processes keep
busy. HistGradientBoosting's OpenMP loops end at a barrier every iteration: with 2 threads on 2 cores and one core
taken by another process, each barrier waits for the descheduled thread, and a fit ran 3 times slower than on one
thread (2.6 s against 0.9 s, measured with one busy process beside it). So each fit asks for the free cores.

The load of other processes is measured, not guessed: the machine's busy CPU time (/proc/stat) less this process's
own (its fit threads included), over the time since the last fit asked; only the cores this process may run on
count (its CPU affinity), so a busy core it cannot use takes nothing away. Linux only; elsewhere fits keep the
configured thread count."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

MIN_WINDOW_S = 0.5  # a shorter window since the last measure is too noisy: the last answer stands
FIRST_WINDOW_S = 0.1  # the first measure of a process samples this long
BUSY_FIELDS = (0, 1, 2, 5, 6, 7)  # user, nice, system, irq, softirq, steal (of /proc/stat's cpu line)


class LoadMeter:
    """Cores other processes kept busy over the time since the last `others()` call."""

    def __init__(self) -> None:
        self._last: tuple[float, float, float] | None = None  # wall, machine busy, own CPU (seconds)
        self._others = 0.0
        self._tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

    def _sample(self) -> tuple[float, float, float] | None:
        """Now, the busy seconds of the cores this process may run on, and this process's own CPU seconds."""
        cpus = {f"cpu{n}" for n in _affinity()}
        try:
            with open("/proc/stat", encoding="ascii") as f:
                lines = [line.split() for line in f if line.startswith("cpu")]
        except OSError:
            return None
        mine = [fields[1:] for fields in lines if fields[0] in cpus]
        if not mine:
            return None
        busy = sum(int(fields[i]) for fields in mine for i in BUSY_FIELDS if i < len(fields)) / self._tick
        own = os.times()
        return time.monotonic(), busy, own.user + own.system

    def others(self) -> float:
        """Cores busy with other processes' work (0 when unknown)."""
        if self._last is None:
            self._last = self._sample()
            if self._last is None:
                return 0.0
            time.sleep(FIRST_WINDOW_S)
            return self._measure(0.0)
        return self._measure(MIN_WINDOW_S)

    def _measure(self, min_window: float) -> float:
        now = self._sample()
        if now is None or self._last is None or now[0] - self._last[0] < min_window:
            return self._others
        wall, busy, own = (b - a for a, b in zip(self._last, now, strict=True))
        self._others = max(0.0, (busy - own) / wall) if wall > 0 else self._others
        self._last = now
        return self._others


_meter = LoadMeter()
_controller: Any = None


def _affinity() -> set[int]:
    """The cores this process may run on (its CPU affinity, else all of the machine's)."""
    try:
        return os.sched_getaffinity(0)
    except AttributeError:  # not Linux
        return set(range(os.cpu_count() or 1))


def usable_cores() -> int:
    """How many cores this process may run on."""
    return len(_affinity())


def free_cores() -> int:
    """Usable cores less those other processes keep busy (rounded half up), at least 1."""
    return max(1, usable_cores() - int(_meter.others() + 0.5))


@contextmanager
def openmp_threads() -> Iterator[int]:
    """Hold OpenMP (HistGradientBoosting's threads) to the free cores, never above the configured count
    (OMP_NUM_THREADS, or a Dask worker's limit around this); yields the thread count in force."""
    global _controller
    from threadpoolctl import ThreadpoolController

    if _controller is None:
        _controller = ThreadpoolController()
    openmp = _controller.select(user_api="openmp")
    configured = max((lib.num_threads for lib in openmp.lib_controllers), default=0)
    if not configured:  # no OpenMP runtime loaded: nothing to hold
        yield 0
        return
    threads = min(configured, free_cores())
    if threads >= configured:
        yield configured
        return
    with openmp.limit(limits=threads):
        yield threads
