"""What the refit on all rows buys: one `run_workflow(architecture="auto")` per table, packaged twice from the same
search, as the evaluated model (`refit_all_rows=false`) and as its refit on all rows (`refit_all_rows=true`), both
scored on the same held-out 20 % of accuracy_bench's split (rows no phase of ml-expert saw). Pairing the two
packages on one search takes the search's run-to-run variation out of the comparison.

    python bench/refit_bench.py [--budget 60] [--datasets concrete,Carseats] [--out refit_bench]

`--split-seeds 0,1,2` repeats every table on other 80/20 splits (a test set of a few hundred rows moves a score
by a percent or more by chance; the mean over splits is the measure). Writes bench/results/<--out>.json and .md:
per table, both scores, the gain in % (positive = the refit is better), the refit's seconds, and the expected cost
that decides the automatic refit against half the budget.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from accuracy_bench import ID_COLUMN, PREDICT, metric_of, score, task_of
from sklearn.model_selection import train_test_split
from suites import SUITES, load

RESULTS = Path(__file__).parent / "results"


def _predict(folder: Path, rows: Path, out: Path) -> list[Any]:
    proc = subprocess.run([sys.executable, "-c", PREDICT, str(folder), str(rows), str(out)], capture_output=True)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr.decode()[-2000:])
    return json.loads(out.read_text())["predictions"]


def bench_table(name: str, budget: float, split_seed: int = 0) -> dict[str, Any]:
    from ml_expert.tools.artifacts import load_model_meta
    from ml_expert.tools.jobs.manager import JobManager
    from ml_expert.tools.packaging.package import package
    from ml_expert.tools.training.refit import decide_refit, refit_cost
    from ml_expert.tools.workflow import run_workflow
    from ml_expert.tools.workspace import Workspace

    ds = next(d for suite in SUITES.values() for d in suite if d.name == name)  # a table of any suite
    df = load(ds)
    y = df[ds.target]
    task = task_of(y)
    strat = y if task == "classification" else None
    train, test = train_test_split(df, test_size=0.2, random_state=split_seed, stratify=strat)
    metric = metric_of(task, train[ds.target])
    drop = [ds.target] + ([ID_COLUMN] if ID_COLUMN in df.columns else [])
    root = Path(tempfile.mkdtemp(prefix=f"ml-expert-refit-{name}-"))
    train.to_csv(root / "train.csv", index=False)
    rows = root / "test_rows.parquet"
    test.drop(columns=drop).to_parquet(rows)
    ws = Workspace(root)
    ws.jobs = JobManager(ws).start()
    try:
        status = run_workflow(
            ws, path="train.csv", target=ds.target, time_budget_s=budget, refit_all_rows=False, wait_seconds=3600
        )
        if status.status != "succeeded":
            return {"dataset": name, "status": "failed", "error": status.error}
        run_id = status.run_id
        evaluated = load_model_meta(ws, run_id, status.result["model_id"])
        t = time.perf_counter()
        refit = package(ws, run_id, evaluated.model_id, output_dir="refit", refit_all_rows=True, wait_seconds=3600)
        seconds = time.perf_counter() - t
        if refit.status != "succeeded":
            return {"dataset": name, "status": "failed", "error": refit.error}
        refit_meta = load_model_meta(ws, run_id, refit.result["model_id"])
        before = _predict(root / status.result["deployment"], rows, root / "before.json")
        after = _predict(root / refit.result["folder"], rows, root / "after.json")
    finally:
        ws.jobs.stop()
        ws.close()
    s_before, s_after = score(metric, test[ds.target], before), score(metric, test[ds.target], after)
    gain = (s_before - s_after) / s_before if metric == "rmse" else (s_after - s_before) / s_before
    cost = refit_cost(evaluated) or 0.0
    shutil.rmtree(root, ignore_errors=True)
    return {
        "dataset": name,
        "split_seed": split_seed,
        "status": "ok",
        "metric": metric,
        "rows": len(df),
        "evaluated": s_before,
        "refit": s_after,
        "gain_pct": round(100 * gain, 2),
        "package_with_refit_seconds": round(seconds, 1),
        "expected_cost_seconds": round(cost, 1),
        "automatic": decide_refit(evaluated, None, evaluated=True),
        "chosen": [c["candidate"] for c in evaluated.search["chosen"]],
        "search_notes": evaluated.search.get("notes", []),
        "refit_notes": (refit_meta.search or {}).get("refit", {}).get("notes", []),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", type=float, default=60.0)
    parser.add_argument(
        "--datasets", default="attrition,CreditCard,cells,stackoverflow,concrete,Wage,Sacramento,Carseats"
    )
    parser.add_argument("--out", default="refit_bench")
    parser.add_argument(
        "--split-seeds", default="0", help="Comma-separated seeds of the 80/20 split (0: accuracy_bench's)."
    )
    args = parser.parse_args()
    results = []
    for seed in (int(s) for s in args.split_seeds.split(",")):
        for name in args.datasets.split(","):
            print(f"-- {name} (split seed {seed})", flush=True)
            results.append(bench_table(name, args.budget, seed))
            print(json.dumps(results[-1]), flush=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.out}.json").write_text(json.dumps({"budget": args.budget, "results": results}, indent=1))
    lines = [
        f"# refit_bench (budget {args.budget:g} s)",
        "",
        "| dataset | split seed | metric | evaluated model | refit on all rows | gain (%) | package s (with refit) "
        "| expected s | automatic |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        if r["status"] != "ok":
            lines.append(f"| {r['dataset']} | failed: {r['error'][:80]} |")
            continue
        lines.append(
            f"| {r['dataset']} | {r['split_seed']} | {r['metric']} | {r['evaluated']:.4f} | {r['refit']:.4f} | "
            f"{r['gain_pct']:+.2f} | "
            f"{r['package_with_refit_seconds']} | {r['expected_cost_seconds']} | {'yes' if r['automatic'] else 'no'} |"
        )
    ok = [r["gain_pct"] for r in results if r["status"] == "ok"]
    if ok:
        lines += ["", f"mean gain {sum(ok) / len(ok):+.2f} %, better on {sum(g > 0 for g in ok)} of {len(ok)}"]
    (RESULTS / f"{args.out}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
