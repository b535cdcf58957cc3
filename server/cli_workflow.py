"""CLI commands for people: `run`, `demo`, `runs`, `jobs`, `report`."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

from ml_expert.server.settings import Settings


def _settings(args: argparse.Namespace) -> Settings:
    from ml_expert.server.cli import settings_from

    return settings_from(args)


def _workspace(args: argparse.Namespace) -> Any:
    from ml_expert.tools.workspace import Workspace

    s = _settings(args)
    return Workspace(s.workspace, allowed_roots=s.allow_paths)


def cmd_runs(args: argparse.Namespace) -> int:
    from ml_expert.server.cli import _print_table
    from ml_expert.tools.runs import list_runs

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
    _print_table(rows, ["run_id", "created", "dataset", "target", "done", "next"])
    print(f"{len(rows)} of {result.total} runs")
    return 0


def cmd_jobs(args: argparse.Namespace) -> int:
    from ml_expert.server.cli import _print_table
    from ml_expert.tools.jobs import list_jobs

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
    _print_table(rows, ["job_id", "kind", "status", "run_id", "progress", "error"])
    print(f"{len(rows)} of {result.total} jobs")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from ml_expert.tools.errors import NotFoundError
    from ml_expert.tools.runs import get_run

    ws = _workspace(args)
    get_run(ws, args.run_id)
    path = ws.run_dir(args.run_id) / "evaluation_report.md"
    if not path.exists():
        raise NotFoundError(f"Run {args.run_id!r} has no evaluation_report.md yet. Run evaluate on it first.")
    print(path.read_text(encoding="utf-8"))
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {"runs": cmd_runs, "jobs": cmd_jobs, "report": cmd_report}


def add_workflow_commands(sub: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    p = sub.add_parser("runs", help="Table of the workspace's runs.")
    common(p)
    p.add_argument("--limit", type=int, default=20)
    p = sub.add_parser("jobs", help="Table of background jobs.")
    common(p)
    p.add_argument("--limit", type=int, default=20)
    p = sub.add_parser("report", help="Print a run's evaluation report.")
    common(p)
    p.add_argument("run_id", help="Run id, e.g. run_5f2c9a1b (see `ml-expert runs`).")
