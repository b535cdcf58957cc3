"""A fit beside a busy process: OpenMP held to the free cores (`tools/training/cores.py`) against the configured
thread count, on a quiet machine and with BURNERS processes spinning beside it.

1. One HistGradientBoosting fit (3,000 rows, 20 columns, 200 iterations), REPEATS times per setting: median
   seconds with the configured threads (OMP_NUM_THREADS, else every core) and inside `openmp_threads()`, and
   their ratio (below 1: holding the threads helped).
2. `run_search` on a 1,500-row table with a 10 s budget, as a worker runs it: wall seconds against the budget,
   candidates, out-of-fold accuracy.
Writes bench/results/contention_bench.json.

    python bench/contention_bench.py [--burners 1]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).parent / "results"
REPEATS = 5


def _spin() -> None:
    while True:
        pass


def _hgb_seconds(X: np.ndarray, y: np.ndarray, held: bool) -> tuple[float, int]:
    from sklearn.ensemble import HistGradientBoostingClassifier

    from ml_expert.tools.training.cores import openmp_threads

    times, threads = [], 0
    for _ in range(REPEATS):
        model = HistGradientBoostingClassifier(max_iter=200, early_stopping=False, random_state=0)
        started = time.perf_counter()
        if held:
            with openmp_threads() as threads:
                model.fit(X, y)
        else:
            model.fit(X, y)
        times.append(time.perf_counter() - started)
    return statistics.median(times), threads


def _search(budget: float) -> dict[str, Any]:
    from sklearn.datasets import make_classification

    from ml_expert.tools.training.auto import run_search

    X, y = make_classification(1500, 20, n_informative=8, random_state=0)
    started = time.perf_counter()
    summary = run_search(X.astype(np.float32), y, "binary", budget).summary
    return {
        "budget_s": budget,
        "wall_s": round(time.perf_counter() - started, 1),
        "candidates": summary.candidates,
        "cv_accuracy": summary.cv_score,
    }


def measure(label: str) -> dict[str, Any]:
    from sklearn.datasets import make_classification

    X, y = make_classification(3000, 20, n_informative=8, random_state=0)
    configured, _ = _hgb_seconds(X, y, held=False)
    held, threads = _hgb_seconds(X, y, held=True)
    row = {
        "hgb_configured_s": round(configured, 3),
        "hgb_held_s": round(held, 3),
        "held_threads": threads,
        "ratio_held_to_configured": round(held / configured, 2),
        "search": _search(10.0),
    }
    print(f"{label:8} HGB {configured:.2f} s configured, {held:.2f} s held to {threads} thread(s) "
          f"(ratio {row['ratio_held_to_configured']}); search {row['search']}")  # fmt: skip
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--burners", type=int, default=1, help="busy processes beside the fits")
    args = parser.parse_args()
    out: dict[str, Any] = {"machine": platform.platform(), "cores": multiprocessing.cpu_count()}
    out["quiet"] = measure("quiet")
    burners = [multiprocessing.Process(target=_spin, daemon=True) for _ in range(args.burners)]
    for p in burners:
        p.start()
    try:
        out[f"{args.burners}_burner"] = measure(f"{args.burners} busy")
    finally:
        for p in burners:
            p.terminate()
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "contention_bench.json").write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
