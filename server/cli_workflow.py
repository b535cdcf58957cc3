"""CLI commands for people: `run` (Ctrl-C cancels its job), `demo`, `runs`, `jobs`, `report`."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from ml_expert.memory.errors import NotFoundError
from ml_expert.server.cli_common import print_table, settings_from
from ml_expert.server.cli_use import follow
from ml_expert.tools.core.architectures import Architecture
from ml_expert.tools.jobs.manager import JobManager
from ml_expert.tools.jobs.tools import list_jobs
from ml_expert.tools.runs import get_run, list_runs
from ml_expert.tools.workspace import Workspace, check_id


def _workspace(args: argparse.Namespace) -> Workspace:
    return Workspace(settings=settings_from(args))


def cmd_runs(args: argparse.Namespace) -> int:
    ws = _workspace(args)
    result = list_runs(ws, limit=args.limit)
    rows = [
        {
            "run_id": r.run_id,
            "created": time.strftime("%Y-%m-%d %H:%M", time.localtime(r.created_at)),
            "dataset": r.dataset,
            "target": r.target,
            "done": ",".join(r.phases),
            "next": r.next_phase or "-",
        }
        for r in result.runs
    ]
    print_table(rows, ["run_id", "created", "dataset", "target", "done", "next"])
    print(f"{len(rows)} of {result.total} runs")
    return 0


def cmd_jobs(args: argparse.Namespace) -> int:
    ws = _workspace(args)
    result = list_jobs(ws, limit=args.limit)
    rows = [
        {
            "job_id": j.job_id,
            "kind": j.kind,
            "status": j.status,
            "run_id": j.run_id,
            "progress": j.progress.get("message", ""),
            "error": (j.error or "")[:60],
        }
        for j in result.jobs
    ]
    print_table(rows, ["job_id", "kind", "status", "run_id", "progress", "error"])
    print(f"{len(rows)} of {result.total} jobs")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    ws = _workspace(args)
    get_run(ws, args.run_id)
    path = ws.run_dir(args.run_id) / "evaluation_report.md"
    if not path.exists():
        raise NotFoundError(f"Run {args.run_id!r} has no evaluation_report.md yet. Run evaluate on it first.")
    print(path.read_text(encoding="utf-8"))
    return 0


def _print_summary(ws: Any, status: Any) -> int:
    if status.status != "succeeded":
        print(f"\nWorkflow {status.status}: {status.error}")
        return 1
    r = status.result
    print("\n" + r["summary"])
    for label, key in (("Report", "report"), ("Curves", "curves"), ("Deployment package", "deployment")):
        if r.get(key):
            print(f"{label + ':':20} {ws.root / r[key]}")
    if r.get("deployment"):
        print(f"{'Predict:':20} cd {ws.root / r['deployment']} && python inference.py rows.csv")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from ml_expert.tools.workflow import run_workflow  # pandas, scikit-learn…: only when a workflow runs

    ws = _workspace(args)
    ws.jobs = JobManager(ws, max_jobs=1)
    config = {"epochs": args.epochs} if args.epochs else None
    status = run_workflow(
        ws,
        path=str(args.dataset) if args.dataset else None,
        target=args.target,
        architecture=args.architecture,
        output_dir=args.out,
        config=config,
        time_budget_s=args.time_budget,
        refit_all_rows=getattr(args, "refit", None),
        task_type=getattr(args, "task_type", "auto"),
        time_column=getattr(args, "time_column", None),
        resume=getattr(args, "resume", None),
        wait_seconds=0,
    )
    print(f"Run {status.run_id} · job {status.job_id} · workspace {ws.root}")
    hint = f"Continue it with `ml-expert run --resume {status.run_id}` (finished phases are kept)."
    return _print_summary(ws, follow(ws, status.job_id, hint))


def cmd_demo(args: argparse.Namespace) -> int:
    from sklearn.datasets import load_breast_cancer

    ws = _workspace(args)
    data = load_breast_cancer(as_frame=True)
    frame = data.frame.copy()
    frame["target"] = [str(data.target_names[i]) for i in data.target]
    path = ws.root / "ml-expert-demo" / "breast_cancer.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)
    print(f"Demo: scikit-learn's breast cancer data ({len(frame)} rows) written to {path}")
    args.dataset, args.target, args.out = ws.relative(path), "target", None
    return cmd_run(args)


class _ConsoleReporter:
    """Progress to stderr for a worker run from the terminal."""

    def progress(self, force: bool = False, **info: Any) -> None:
        if info.get("message"):
            print(info["message"], file=sys.stderr, flush=True)

    def cancel_requested(self) -> bool:
        return False

    def checkpoint(self) -> None:
        return None

    def graceful(self) -> AbstractContextManager[None]:
        return nullcontext()

    def flush(self) -> None:
        return None


def cmd_worker_train(args: argparse.Namespace) -> int:
    from ml_expert.tools.training.train import run_train_job, train_spec  # pandas & co.: only when used

    ws = _workspace(args)
    config = {"epochs": args.epochs, "batch_size": args.batch_size, "seed": args.seed}
    spec = train_spec(ws, args.run_id, args.architecture, config, distribution="multi_worker")
    if args.model_id:
        spec = spec.model_copy(update={"model_id": check_id(args.model_id, "mdl")})
    print(run_train_job(ws, spec, _ConsoleReporter()).model_dump_json())
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "worker-train": cmd_worker_train,
    "runs": cmd_runs,
    "jobs": cmd_jobs,
    "report": cmd_report,
    "run": cmd_run,
    "demo": cmd_demo,
}


def add_workflow_commands(sub: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    choices = list(Architecture.__args__)
    p = sub.add_parser("run", help="Run the whole workflow on a dataset with a progress bar.")
    common(p)
    p.add_argument("dataset", nargs="?", help="CSV/TSV/Parquet/JSON-lines/.xlsx file inside the workspace.")
    p.add_argument("--resume", metavar="RUN_ID", help="Continue a stopped run where it stopped (no dataset needed).")
    p.add_argument("--target", "-t", help="Column to predict (a table needs one; --resume may add it).")
    p.add_argument(
        "--task-type",
        "--task",
        default="auto",
        choices=["auto", "classification", "regression"],
        help="Predict the target as classes or as a number (default auto: guessed from its values).",
    )
    p.add_argument(
        "--time-column",
        metavar="COLUMN",
        help="Split in time order on this column: oldest rows train, newest test (a forecast; default: random).",
    )
    p.add_argument("--architecture", "-a", default="auto", choices=choices, help="Model family (default auto).")
    p.add_argument("--epochs", type=int, help="Maximum epochs for neural networks (default 100).")
    p.add_argument("--time-budget", type=float, default=60, help="Seconds for the auto model search (default 60).")
    p.add_argument("--out", help="Deployment folder inside the workspace (default <run>/deployment).")
    p.add_argument(
        "--refit",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="Package a refit of the evaluated auto model on all rows (default: when it costs <= half the budget).",
    )
    p = sub.add_parser("worker-train", help="Train as one task of a multi-worker cluster (reads TF_CONFIG).")
    common(p)
    p.add_argument("run_id", help="A prepared run present in this machine's workspace.")
    p.add_argument("--architecture", "-a", default="dnn", choices=["dnn", "cnn", "rnn", "conv1d", "transformer"])
    p.add_argument("--epochs", type=int, default=20, help="Epochs (every worker must use the same).")
    p.add_argument("--batch-size", type=int, default=32, help="Per-worker batch size.")
    p.add_argument("--seed", type=int, default=42, help="Seed (every worker must use the same).")
    p.add_argument("--model-id", help="Model id to record on the chief (default: a new one).")
    p = sub.add_parser("demo", help="The whole workflow on scikit-learn's breast cancer data (< 2 minutes).")
    common(p)
    p.add_argument("--architecture", "-a", default="auto", choices=choices, help="Model family (default auto).")
    p.add_argument("--epochs", type=int, help="Maximum epochs for neural networks.")
    p.add_argument("--time-budget", type=float, default=10, help="Seconds for the auto model search (default 10).")
    p = sub.add_parser("runs", help="Table of the workspace's runs.")
    common(p)
    p.add_argument("--limit", type=int, default=20)
    p = sub.add_parser("jobs", help="Table of background jobs.")
    common(p)
    p.add_argument("--limit", type=int, default=20)
    p = sub.add_parser("report", help="Print a run's evaluation report.")
    common(p)
    p.add_argument("run_id", help="Run id, e.g. run_5f2c9a1b (see `ml-expert runs`).")
