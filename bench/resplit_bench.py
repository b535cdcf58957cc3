"""Accuracy on other splits of one small table: a test split of 30-60 rows moves a score by several percent, so
one split can say little. Reruns `accuracy_bench.py`'s protocol (80/20 split, stratified for classification; HGB and
RF baselines; `run_workflow(architecture="auto")` then the package's predictions) with other split seeds, and prints
and writes each seed's scores and their means.

    python bench/resplit_bench.py --dataset hepatic_injury_qsar --seeds 1,2,3,4,5 [--budget 60]
        [--autogluon-python PATH] [--out STEM]

With --autogluon-python (the Python of AutoGluon's own virtual environment, as in accuracy_bench.py), AutoGluon's
preset runs on every split too, with the same time limit: a minute more per split. Writes
bench/results/<--out>.json (default resplit_<dataset>.json).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
from datetime import UTC, datetime
from pathlib import Path

import accuracy_bench as ab
from competitors import AUTOGLUON_PRESET, autogluon_version, run_autogluon, sklearn_baseline
from sklearn.model_selection import train_test_split
from suites import SUITES, load

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True, help="A table of any suite in bench/suites.py.")
    parser.add_argument("--seeds", default="1,2,3,4,5", help="Comma-separated split seeds (the bench uses 0).")
    parser.add_argument("--budget", type=float, default=60.0, help="time_budget_s of each run (default 60).")
    parser.add_argument("--autogluon-python", default="", help=f"adds AutoGluon {AUTOGLUON_PRESET} on every split.")
    parser.add_argument("--out", default="", help="results file stem (default resplit_<dataset>).")
    args = parser.parse_args()
    ds = next((d for suite in SUITES.values() for d in suite if d.name == args.dataset), None)
    if ds is None:
        parser.error(f"unknown dataset {args.dataset!r}; choose from {[d.name for s in SUITES.values() for d in s]}")
    df = load(ds)
    y = df[ds.target]
    task = ab.task_of(y)
    rows = []
    for seed in (int(s) for s in args.seeds.split(",")):
        train, test = train_test_split(
            df, test_size=0.2, random_state=seed, stratify=y if task == "classification" else None
        )
        metric = ab.metric_of(task, train[ds.target])
        X_train = train.drop(columns=[ds.target])
        X_test = test.drop(columns=[ds.target])
        ids = [c for c in (ab.ID_COLUMN,) if c in X_train.columns]  # the baselines do not get the ID column
        row = {"seed": seed, "metric": metric}
        for kind in ("hgb", "rf"):
            model = sklearn_baseline(kind, task, X_train.drop(columns=ids), train[ds.target])
            row[kind] = ab.score(metric, test[ds.target], model.predict(X_test.drop(columns=ids)))
        if args.autogluon_python:
            base_train = train.drop(columns=ids)  # `load` left out ds.drop
            preds, best, _ = run_autogluon(
                args.autogluon_python, task, metric, args.budget, base_train, ds.target, X_test.drop(columns=ids)
            )
            row["autogluon"], row["autogluon_best"] = ab.score(metric, test[ds.target], preds), best
        info, predicted = ab.run_ml_expert(ds, train, X_test, args.budget, True)
        row["ml_expert"] = None if predicted is None else ab.score(metric, test[ds.target], predicted)
        row["chosen"] = [(c["candidate"], c["weight"]) for c in (info.get("search") or {}).get("chosen", [])]
        print(json.dumps(row), flush=True)
        rows.append(row)
    methods = ("hgb", "rf", *(("autogluon",) if args.autogluon_python else ()), "ml_expert")
    means = {k: statistics.mean(r[k] for r in rows if r[k] is not None) for k in methods}
    print("means:", {k: round(v, 4) for k, v in means.items()})
    out = RESULTS / f"{args.out or 'resplit_' + ds.name}.json"
    out.write_text(
        json.dumps(
            {
                "dataset": ds.name,
                "budget_s": args.budget,
                "rows": rows,
                "means": means,
                "meta": {
                    "when": datetime.now(UTC).isoformat(timespec="seconds"),
                    "machine": platform.machine(),
                    "autogluon": autogluon_version(args.autogluon_python) if args.autogluon_python else None,
                },
            },
            indent=1,
        )
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
