"""What every `ml-expert` command shares: the workspace flags, Settings from flags, and table output."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ml_expert.tools.settings import Settings

EPILOG = (
    "Environment: ML_EXPERT_WORKSPACE (workspace folder), ML_EXPERT_MAX_JOBS, ML_EXPERT_WAIT_SECONDS, "
    "ML_EXPERT_DASK_SCHEDULER."
)


def add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--workspace",
        "-w",
        type=Path,
        help="Workspace folder: data paths resolve inside it; state lives in <workspace>/.ml-expert "
        "(default: $ML_EXPERT_WORKSPACE or the current directory).",
    )
    p.add_argument(
        "--allow-path",
        action="append",
        type=Path,
        default=None,
        metavar="DIR",
        help="Also allow reading data from DIR (repeatable).",
    )


def settings_from(args: argparse.Namespace) -> Settings:
    """Settings from the command's flags over ML_EXPERT_* environment variables over defaults."""
    return Settings.from_env(
        workspace=getattr(args, "workspace", None),
        allow_paths=tuple(args.allow_path) if getattr(args, "allow_path", None) else None,
        max_jobs=getattr(args, "max_jobs", None),
        wait_seconds=getattr(args, "wait_seconds", None),
        dask_scheduler=getattr(args, "dask_scheduler", None),
    )


def print_table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    from rich.console import Console  # rich: only for people at a terminal, not for the server
    from rich.table import Table

    table = Table(*columns)
    for r in rows:
        table.add_row(*[str(r.get(c, "")) for c in columns])
    Console().print(table)


def short(value: Any, width: int = 70) -> str:
    """A value as one line of JSON, cut to width."""
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= width else text[: width - 1] + "…"
