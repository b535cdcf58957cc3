"""How long the everyday scikit-learn jobs take from submit to result, through the jobs API as an MCP client sees
them: train (linear, random forest, gradient boosting), evaluate, package and explain (twice: the first explain
in a fresh worker may compile shap's kernels, the second must not), on breast_cancer with its string labels.

Medians of --repeats rounds, each round in a fresh workspace; the fork server is shared across rounds as in a long
MCP session. Run it on two commits back to back (--label) to compare them: the results file keeps both runs.

    python bench/job_latency_bench.py --label after [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"
OUT = RESULTS / "job_latency_bench.json"


def timed(fn: Any, *args: Any, **kwargs: Any) -> tuple[float, Any]:
    t = time.perf_counter()
    status = fn(*args, **kwargs)
    assert getattr(status, "status", "succeeded") == "succeeded", status.error  # explain returns its result
    return time.perf_counter() - t, status


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--label", required=True, help="name of this run in the results file, e.g. before/after")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from sklearn.datasets import load_breast_cancer

    from ml_expert.tools.data.analyze import analyze_data
    from ml_expert.tools.data.prepare import prepare_data
    from ml_expert.tools.evaluation.evaluate import evaluate
    from ml_expert.tools.jobs.manager import JobManager
    from ml_expert.tools.packaging.package import package
    from ml_expert.tools.prediction.explain import explain
    from ml_expert.tools.training.train import train
    from ml_expert.tools.workspace import Workspace

    bunch = load_breast_cancer(as_frame=True)
    frame = bunch.frame.assign(target=[str(bunch.target_names[i]) for i in bunch.target])
    rows = frame.drop(columns="target").head(3).to_dict("records")
    seconds: dict[str, list[float]] = {}
    accuracy: list[float] = []
    for _ in range(args.repeats):
        root = Path(tempfile.mkdtemp(prefix="ml-expert-job-latency-"))
        ws = Workspace(root)
        ws.jobs = JobManager(ws).start()
        try:
            frame.to_csv(root / "bc.csv", index=False)
            run = analyze_data(ws, "bc.csv", target="target").run_id
            prepare_data(ws, run_id=run)
            ids = []
            for arch in ("linear", "random_forest", "gradient_boosting"):
                s, status = timed(train, ws, run, arch, wait_seconds=600)
                seconds.setdefault(f"train {arch}", []).append(s)
                ids.append(status.result["model_id"])
            s, status = timed(evaluate, ws, run, model_ids=ids, wait_seconds=600)
            seconds.setdefault("evaluate 3 models", []).append(s)
            accuracy.append(max(e["test_metrics"]["accuracy"] for e in status.result["evaluations"]))
            s, _ = timed(package, ws, run, wait_seconds=600)
            seconds.setdefault("package", []).append(s)
            for n in ("first", "second"):
                s, explained = timed(explain, ws, run_id=run, rows=rows, wait_seconds=600)
                assert len(explained.local) == len(rows), explained
                seconds.setdefault(f"explain ({n})", []).append(s)
        finally:
            ws.jobs.stop()
            ws.close()

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True).stdout)
    run_result = {
        "commit": commit + ("+changes" if dirty else ""),
        "median_seconds": {k: round(statistics.median(v), 2) for k, v in seconds.items()},
        "all_seconds": {k: [round(x, 2) for x in v] for k, v in seconds.items()},
        "best_test_accuracy": accuracy,
        "repeats": args.repeats,
        "machine": {"python": sys.version.split()[0], "platform": platform.platform(), "cpus": os.cpu_count()},
    }
    RESULTS.mkdir(exist_ok=True)
    results = json.loads(OUT.read_text()) if OUT.exists() else {}
    results[args.label] = run_result
    OUT.write_text(json.dumps(results, indent=2))
    labels = list(results)
    widths = [max(14, len(label) + 2) for label in labels]
    print(f"{'job':22s}" + "".join(f"{label:>{w}s}" for label, w in zip(labels, widths, strict=True)))
    for job in run_result["median_seconds"]:
        cells = (results[lb]["median_seconds"].get(job, float("nan")) for lb in labels)
        print(f"{job:22s}" + "".join(f"{value:{w - 1}.2f}s" for value, w in zip(cells, widths, strict=True)))


if __name__ == "__main__":
    main()
