"""Size as a non-event: `train(auto, B)` on a real table grown from 10k to millions of rows.

The table is scikit-learn's diabetes data (442 patients, 10 columns, a continuous target) grown to N unique rows:
each copy jitters every number by 2 % of its column's spread, adds an integer visit count and a string clinic
column, and jitters the target, so no two rows are equal and the signal stays the original's. For each size it
runs analyze → prepare → train(auto, budget) → evaluate through the tool functions with a real job manager and
reports: train wall time against its budget (target: ≤ 1.1 × budget + 5 s), the peak summed RSS of this process
and its workers per phase, candidates evaluated, the rows the winner's fits saw, fits the deadline capped, test R²,
and the longest gap between two progress notifications during train (target: ≤ 10 s).
With --dask-rows N it also trains the N-row table twice on one prepared run, locally and on a 2-worker
dask.distributed LocalCluster (scheduler and worker processes on this machine), and reports candidates per minute.
Writes bench/results/scale_bench.json.

    python bench/scale_bench.py [--sizes 10000,100000,1000000] [--budget 60] [--dask-rows 1000000]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

RESULTS = Path(__file__).parent / "results"


def grown_table(rows: int, seed: int = 0) -> pd.DataFrame:
    """The diabetes table grown to `rows` unique rows (see the module docstring)."""
    from sklearn.datasets import load_diabetes

    base = load_diabetes(as_frame=True).frame
    rng = np.random.default_rng(seed)
    index = rng.integers(0, len(base), rows)
    frame = base.iloc[index].reset_index(drop=True)
    spread = base.std()
    for column in base.columns:
        frame[column] = (frame[column] + rng.normal(0, 0.02, rows) * spread[column]).astype("float32")
    frame["visits"] = rng.poisson(3 + 3 * (frame["bmi"] > 0), rows)
    frame["clinic"] = np.asarray(["north", "south", "east", "west", "central"])[rng.integers(0, 5, rows)]
    return frame


class PeakRSS:
    """The peak summed resident memory of this process and its children (the job workers), sampled every 0.2 s."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()  # a phase shorter than one interval still gets a reading

    def _watch(self) -> None:
        self._sample()
        while not self._stop.wait(0.2):
            self._sample()

    def _sample(self) -> None:
        self.peak = max(self.peak, sum(_rss(pid) for pid in _tree(os.getpid())))


def _tree(pid: int) -> list[int]:
    found, children = [pid], Path(f"/proc/{pid}/task/{pid}/children")
    if children.exists():
        for child in children.read_text().split():
            found += _tree(int(child))
    return found


def _rss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return 0
    return 0


class Gaps:
    """The longest wait between two progress notifications, and the messages on either side of it."""

    def __init__(self) -> None:
        self.last: float | None = None
        self.longest = 0.0
        self.message = ""
        self.between: tuple[str, str] = ("", "")

    def __call__(self, progress: Any) -> None:
        now = time.perf_counter()
        message = str((progress or {}).get("message", "")) if isinstance(progress, dict) else str(progress)
        if self.last is not None and now - self.last > self.longest:
            self.longest = now - self.last
            self.between = (self.message, message)
        self.last = now
        self.message = message


def one_size(rows: int, budget: float, dask: bool = False) -> dict[str, Any]:
    from ml_expert.tools.data.analyze import analyze_data
    from ml_expert.tools.data.prepare import prepare_data
    from ml_expert.tools.evaluation.evaluate import evaluate
    from ml_expert.tools.jobs.manager import JobManager
    from ml_expert.tools.training.train import train
    from ml_expert.tools.workspace import Workspace

    with tempfile.TemporaryDirectory() as tmp:
        ws = Workspace(Path(tmp))
        ws.jobs = JobManager(ws).start()
        grown_table(rows).to_parquet(ws.root / "table.parquet")
        out: dict[str, Any] = {"rows": rows, "budget_s": budget, "peak_rss_gb": {}, "seconds": {}}
        gaps = Gaps()
        phases = [
            ("analyze", lambda: analyze_data(ws, "table.parquet", target="target")),
            ("prepare", lambda: prepare_data(ws, run_id=out["run_id"])),
            (
                "train",
                lambda: train(ws, out["run_id"], "auto", time_budget_s=budget, wait_seconds=24 * 3600, report=gaps),
            ),
            ("evaluate", lambda: evaluate(ws, out["run_id"], wait_seconds=3600)),
        ]
        for name, call in phases:
            with PeakRSS() as rss:
                started = time.perf_counter()
                result = call()
                out["seconds"][name] = round(time.perf_counter() - started, 1)
            out["peak_rss_gb"][name] = round(rss.peak / 1e9, 2)
            if name == "analyze":
                out["run_id"] = result.run_id
            elif name == "train":
                search = result.result["search"]
                out |= {
                    "train_within_target": out["seconds"]["train"] <= 1.1 * budget + 5,
                    "candidates": search["candidates"],
                    "complete": search["complete"],
                    "folds": search["folds"],
                    "fits_capped": search.get("fits_capped"),
                    "notes": search.get("notes", []),
                    "chosen": search["chosen"],
                    "longest_progress_gap_s": round(gaps.longest, 1),
                    "longest_gap_between": list(gaps.between),
                }
            elif name == "evaluate":
                out["test_r2"] = round(result.result["evaluations"][0]["test_metrics"]["r2"], 4)
            print(f"{rows:>10,} rows  {name:8} {out['seconds'][name]:7.1f} s  peak RSS {out['peak_rss_gb'][name]} GB")
        if dask:
            out["dask"] = local_vs_cluster(ws, out["run_id"], budget)
        ws.jobs.stop()
        ws.close()
        return out


def local_vs_cluster(ws: Any, run_id: str, budget: float) -> dict[str, Any]:
    """train(auto, budget) on one prepared run, locally and on a 2-worker LocalCluster: candidates per minute."""
    from distributed import LocalCluster

    from ml_expert.tools.training.train import train

    def measured(label: str) -> dict[str, Any]:
        started = time.perf_counter()
        search = train(ws, run_id, "auto", time_budget_s=budget, wait_seconds=24 * 3600).result["search"]
        seconds = time.perf_counter() - started
        row = {
            "seconds": round(seconds, 1),
            "candidates": search["candidates"],
            "complete": search["complete"],
            "candidates_per_minute": round(search["candidates"] / seconds * 60, 1),
            "fits_on_cluster": search.get("fits_on_cluster", 0),
            "cv_score": search["cv_score"],
        }
        print(f"  {label:8} {row}")
        return row

    result = {"local": measured("local")}
    settings = ws.settings
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        ws.settings = settings.model_copy(update={"dask_scheduler": cluster.scheduler_address})
        try:
            result["cluster"] = measured("cluster")
        finally:
            ws.settings = settings
    result["ratio"] = round(
        result["cluster"]["candidates_per_minute"] / max(result["local"]["candidates_per_minute"], 1e-9), 2
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--budget", type=float, default=60)
    parser.add_argument("--dask-rows", type=int, default=0, help="also local vs a 2-worker LocalCluster at this size")
    args = parser.parse_args()
    sizes = [int(n) for n in args.sizes.split(",")] if args.sizes else []
    results = [one_size(n, args.budget, dask=n == args.dask_rows) for n in sizes]
    if args.dask_rows and args.dask_rows not in sizes:
        results.append(one_size(args.dask_rows, args.budget, dask=True))
    for r in results:
        print(
            f"{r['rows']:>10,} rows: train {r['seconds']['train']} s of {r['budget_s']} "
            f"({'ok' if r['train_within_target'] else 'OVER'}), {r['candidates']} candidates, "
            f"test R² {r['test_r2']}, peak RSS {max(r['peak_rss_gb'].values())} GB, "
            f"longest progress gap {r['longest_progress_gap_s']} s"
        )
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / "scale_bench.json"
    earlier = json.loads(path.read_text())["results"] if path.exists() else []
    sizes = {r["rows"] for r in results}  # a run of some sizes replaces those sizes only
    merged = sorted([r for r in earlier if r["rows"] not in sizes] + results, key=lambda r: r["rows"])
    record = {"machine": f"{platform.machine()}, {os.cpu_count()} cores", "results": merged}
    path.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
