"""CLI commands that follow or stop jobs and use a trained model: `predict`, `explain`, `cancel`, and the job
following every long command shares (a progress bar; Ctrl-C cancels the job it started and says how to resume)."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from ml_expert.memory.jobs import ACTIVE
from ml_expert.server.cli_common import settings_from
from ml_expert.tools.jobs.manager import JobManager, job_row, job_status
from ml_expert.tools.jobs.specs import JobStatus
from ml_expert.tools.workspace import Workspace

CANCEL_WAIT_S = 10.0  # how long Ctrl-C / `cancel` waits for a worker to stop at its next step before SIGTERM


def workspace_with_jobs(args: argparse.Namespace) -> Workspace:
    """The workspace of the command's flags, with a job manager that schedules inline (no thread)."""
    ws = Workspace(settings=settings_from(args))
    ws.jobs = JobManager(ws, max_jobs=1)
    return ws


def follow(ws: Workspace, job_id: str, resume_hint: str, total: int = 6) -> JobStatus:
    """Wait for a job with a live progress bar. Ctrl-C cancels the job, waits for its worker to stop, says how
    it ended and how to resume, and exits 130: the CLI never leaves a worker running without saying so.

    While it follows, Ctrl-C only raises a flag that the wait loop reads between polls, instead of a
    KeyboardInterrupt at whatever line runs (in the middle of a database write or of the progress bar's
    teardown); a second Ctrl-C, while the cancel waits for the worker, stops that wait."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    interrupted = threading.Event()
    with _ctrl_c_sets(interrupted):
        try:
            with Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                TextColumn("{task.fields[detail]}"),
                TimeElapsedColumn(),
            ) as bar:
                task = bar.add_task("starting", total=total, detail="")

                def show(progress: dict[str, Any]) -> None:
                    bar.update(
                        task,
                        completed=float(progress.get("step") or 0),
                        total=float(progress.get("total") or total),
                        description=str(progress.get("phase", "")),
                        detail=str(progress.get("message", ""))[:90],
                    )

                status = ws.jobs.wait(job_id, timeout=24 * 3600, on_progress=show, stop=interrupted.is_set)
        except KeyboardInterrupt:  # not the main thread (no flag handler): Ctrl-C still arrives as an exception
            interrupted.set()
    if not interrupted.is_set():
        return status
    status = cancel_and_wait(ws, job_id)
    print(f"Job {job_id} {status.status}. {resume_hint}", file=sys.stderr)
    raise SystemExit(130)


@contextmanager
def _ctrl_c_sets(flag: threading.Event) -> Iterator[None]:
    """Within the block the first SIGINT sets `flag` and puts back Python's handler (a second one raises
    KeyboardInterrupt); the previous handler is back after the block. Only the main thread can set handlers."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def first(signum: int, frame: Any) -> None:
        flag.set()
        signal.signal(signal.SIGINT, signal.default_int_handler)

    previous = signal.signal(signal.SIGINT, first)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def cancel_and_wait(ws: Workspace, job_id: str) -> JobStatus:
    """Request the job's cancel and wait up to CANCEL_WAIT_S for its worker to stop at its next step; a worker
    that has not reached one by then (busy in a long fit or import on a loaded machine) gets SIGTERM, which ends
    it at once, recorded as cancelled. A second Ctrl-C stops waiting; a worker still running then is named."""
    print(f"\nCancelling job {job_id}: the worker stops at its next step …", file=sys.stderr)
    status = ws.jobs.cancel(job_id)
    try:
        status = ws.jobs.wait(job_id, timeout=CANCEL_WAIT_S)
        if status.status in ACTIVE and ws.jobs.stop_worker(job_id):
            print(f"The worker reached no step within {CANCEL_WAIT_S:g} s; stopped it with SIGTERM.", file=sys.stderr)
            status = ws.jobs.wait(job_id, timeout=CANCEL_WAIT_S)
    except KeyboardInterrupt:
        status = job_status(job_row(ws, job_id))
    if status.status in ACTIVE or not ws.jobs.wait_worker(job_id, timeout=CANCEL_WAIT_S):
        pid = ws.job_store.get(job_id).pid
        print(
            f"Job {job_id} is {status.status} and its worker (pid {pid}) still runs; it stops at its next step. "
            f"Follow it with `ml-expert jobs`.",
            file=sys.stderr,
        )
    return status


def cmd_cancel(args: argparse.Namespace) -> int:
    ws = workspace_with_jobs(args)
    status = cancel_and_wait(ws, args.job_id)
    print(f"Job {args.job_id} {status.status}" + (f": {status.error}" if status.error else ""))
    return 0 if status.status not in ACTIVE else 1


def _model_ref(value: str) -> dict[str, str]:
    return {"model_id": value} if value.startswith("mdl_") else {"run_id": value}


def _result(ws: Workspace, outcome: Any, kind: str, resume_hint: str) -> dict[str, Any]:
    """A tool's finished result as a dict: returned inline, or followed as a job with the progress bar."""
    if not isinstance(outcome, JobStatus):
        return outcome.model_dump(mode="json")
    status = follow(ws, outcome.job_id, resume_hint, total=3)
    if status.status != "succeeded":
        raise SystemExit(f"The {kind} job {status.job_id} ended {status.status}: {status.error}")
    return status.result or {}


def cmd_predict(args: argparse.Namespace) -> int:
    from ml_expert.tools.prediction.predict import predict  # pandas & co.: only when used

    ws = workspace_with_jobs(args)
    hint = f"Run `ml-expert predict {args.model} {args.file}` again to score the file."
    r = _result(
        ws, predict(ws, **_model_ref(args.model), path=args.file, output=args.out, wait_seconds=0), "predict", hint
    )
    print(f"{r['rows_scored']:,} of {r['rows']:,} rows scored, {r['rows_refused']:,} refused.")
    for refusal in r["refused"][:5]:
        print(f"  row {refusal['row']}: {refusal['reason']}")
    summary = r.get("label_counts") or r.get("value_quantiles") or {}
    print("Predictions: " + ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in summary.items()))
    for warning in (r.get("drift") or {}).get("warnings", [])[:10]:
        print(f"  drift: {warning}")
    print(f"{'Predictions CSV:':20} {ws.root / r['output']}")
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    from ml_expert.tools.prediction.explain import explain  # scikit-learn, shap: only when used

    ws = workspace_with_jobs(args)
    hint = f"Run `ml-expert explain {args.model}` again to explain it."
    r = _result(ws, explain(ws, **_model_ref(args.model), top_k=args.top, wait_seconds=0), "explain", hint)
    print(f"Permutation importance ({r['metric']} on {r['rows_used']:,} {r['split']} rows, score {r['score']:.4f}):")
    for c in r["importance"]:
        print(f"  {c['column']:30} {c['importance']:+.4f} ± {c['std']:.4f}")
    for line in [*r.get("notes", []), *r.get("warnings", [])]:
        print(f"  note: {line}")
    for name, path in r["artifacts"].items():
        print(f"{name + ':':24} {ws.root / path}")
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "predict": cmd_predict,
    "explain": cmd_explain,
    "cancel": cmd_cancel,
}


def add_use_commands(sub: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    p = sub.add_parser("predict", help="Score a file with a trained model (the predict tool's code path).")
    common(p)
    p.add_argument("model", help="A run id (its latest model) or a model id, e.g. run_5f2c9a1b or mdl_09c1e2aa.")
    p.add_argument("file", help="CSV/TSV/JSON-lines/Parquet/.xlsx file of raw rows inside the workspace.")
    p.add_argument("--out", help="New CSV for the predictions (default predictions/<file>-<model_id>.csv).")
    p = sub.add_parser("explain", help="Which columns drive a trained model (the explain tool's code path).")
    common(p)
    p.add_argument("model", help="A run id (its latest model) or a model id.")
    p.add_argument("--top", type=int, default=10, help="How many columns to list (default 10).")
    p = sub.add_parser("cancel", help="Cancel a job (its worker stops at its next step).")
    common(p)
    p.add_argument("job_id", help="Job id, e.g. job_1a2b3c4d (see `ml-expert jobs`).")
