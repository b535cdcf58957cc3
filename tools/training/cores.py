"""How many OpenMP threads a fit may use now: the cores this process may run on, less those other processes keep
busy. HistGradientBoosting's OpenMP loops end at a barrier every iteration: with 2 threads on 2 cores and one core
taken by another process, each barrier waits for the descheduled thread, and a fit ran 3 times slower than on one
thread (2.6 s against 0.9 s, measured with one busy process beside it). So each fit asks for the free cores.

The load of other processes is measured, not guessed: the busy CPU time of the cores this process may run on (its
CPU affinity; /proc/stat) less this process's own (its fit threads included), over the time since the last fit
asked, or over a fresh FIRST_WINDOW_S sample when that was long ago (load that ended minutes back says nothing) or
the affinity changed. The search's helper process (`helper.py`) counts as this process: its fits are the search's
own. Linux only; elsewhere fits keep the configured thread count. Not seen: CPU quotas of a cgroup, and fits in
sibling threads of this process (a Dask worker's), which count as its own work."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple

MIN_WINDOW_S = 0.5  # a shorter window since the last measure is too noisy: the last answer stands
MAX_WINDOW_S = 5.0  # a longer one is stale: a fresh sample is taken
FIRST_WINDOW_S = 0.1  # the length of a fresh sample
BUSY_FIELDS = (0, 1, 2, 5, 6, 7)  # user, nice, system, irq, softirq, steal of a /proc/stat cpu line (guest: in user)


class Sample(NamedTuple):
    wall: float  # time.monotonic()
    busy: float  # busy seconds of the cores in `cpus`, since boot
    own: float  # this process's CPU seconds
    cpus: frozenset[int]


def _affinity() -> frozenset[int]:
    """The cores this process may run on (its CPU affinity, else all of the machine's)."""
    try:
        return frozenset(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return frozenset(range(os.cpu_count() or 1))


_helper: int | None = None  # the pid of the search's helper process, whose CPU time counts as this process's


def register_helper(pid: int | None) -> None:
    """Count the CPU time of process `pid` (the search's helper) as this process's own (None: no helper any more)."""
    global _helper
    _helper = pid
    _meter.restart()  # own CPU time just jumped: the next window starts afresh


def _helper_seconds() -> float:
    """CPU seconds of the helper process (0 when none, or gone)."""
    if _helper is None:
        return 0.0
    try:
        with open(f"/proc/{_helper}/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime (fields 14, 15)


def read_sample() -> Sample | None:
    """Now, the busy seconds of the cores this process may run on, and its own CPU seconds; None without /proc."""
    cpus = _affinity()
    names = {f"cpu{n}" for n in cpus}
    try:
        with open("/proc/stat", encoding="ascii") as f:
            lines = [line.split() for line in f if line.startswith("cpu")]
    except OSError:
        return None
    mine = [fields[1:] for fields in lines if fields[0] in names]
    if not mine:
        return None
    tick = os.sysconf("SC_CLK_TCK")
    busy = sum(int(fields[i]) for fields in mine for i in BUSY_FIELDS if i < len(fields)) / tick
    own = os.times()
    return Sample(time.monotonic(), busy, own.user + own.system + _helper_seconds(), cpus)


class LoadMeter:
    """Cores other processes kept busy over the window since the last `others()` call (see the module docstring)."""

    def __init__(
        self,
        sample: Callable[[], Sample | None] = read_sample,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._sample, self._sleep = sample, sleep
        self._last: Sample | None = None
        self._others = 0.0

    def restart(self) -> None:
        """Forget the last sample: the next `others()` takes a fresh one."""
        self._last = None

    def others(self) -> float:
        """Cores busy with other processes' work (0 when unknown)."""
        now = self._sample()
        if now is None:
            return 0.0
        last = self._last
        if last is None or now.cpus != last.cpus or now.wall - last.wall > MAX_WINDOW_S:
            last = now  # a fresh baseline, then a short sample
            self._sleep(FIRST_WINDOW_S)
            now = self._sample()
            if now is None:
                return 0.0
        elif now.wall - last.wall < MIN_WINDOW_S:
            return self._others
        if now.wall > last.wall:
            self._others = max(0.0, (now.busy - last.busy - (now.own - last.own)) / (now.wall - last.wall))
        self._last = now
        return self._others


_meter = LoadMeter()
_openmp: Any = None  # threadpoolctl's view of the OpenMP runtimes, kept once one is loaded


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
    global _openmp
    if _openmp is None or not _openmp.lib_controllers:  # looked for again until an OpenMP runtime is loaded
        from threadpoolctl import ThreadpoolController

        _openmp = ThreadpoolController().select(user_api="openmp")
    openmp = _openmp
    configured = max((lib.num_threads for lib in openmp.lib_controllers), default=0)
    if configured <= 1:  # no OpenMP runtime loaded, or one thread already: nothing to hold
        yield configured
        return
    threads = min(configured, free_cores())
    if threads == configured:
        yield configured
        return
    with openmp.limit(limits=threads):
        yield threads
