"""Where the time of a whole run goes: `run_workflow` (analyze → prepare → recommend → train auto → evaluate →
package) on bench tables' training rows (the accuracy bench's split 0), each phase's wall seconds read from the run's
record (the time between one phase's end and the next), and the search's own seconds.

    python bench/phase_bench.py --suite wide --datasets pd_speech,grants_other [--budget 60] [--out phase_bench]

Writes bench/results/<out>.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sklearn.model_selection import train_test_split

sys.path.insert(0, str(Path(__file__).parent))
from accuracy_bench import ID_COLUMN, task_of, version
from suites import SUITES, load

RESULTS = Path(__file__).parent / "results"
PHASES = ("analyze", "prepare", "recommend", "train", "evaluate", "package")


def phase_seconds(name: str, suite: str, budget: float) -> dict[str, Any]:
    """One table's run: total and per-phase seconds, the search's seconds and how many candidates completed."""
    from ml_expert.tools.jobs.manager import JobManager
    from ml_expert.tools.runs import get_run
    from ml_expert.tools.workflow import run_workflow
    from ml_expert.tools.workspace import Workspace

    ds = next(d for d in SUITES[suite] if d.name.lower() == name.lower())
    df = load(ds)
    y = df[ds.target]
    stratify = y if task_of(y) == "classification" else None
    train, _ = train_test_split(df, test_size=0.2, random_state=0, stratify=stratify)
    train = train.drop(columns=[c for c in (ID_COLUMN,) if c in train.columns])
    root = Path(tempfile.mkdtemp(prefix=f"ml-expert-phases-{ds.name}-"))
    train.to_csv(root / "train.csv", index=False)
    ws = Workspace(root)
    ws.jobs = JobManager(ws).start()
    try:
        start = time.time()
        status = run_workflow(
            ws, path="train.csv", target=ds.target, architecture="auto", wait_seconds=3600, time_budget_s=budget
        )
        total = time.time() - start
        row: dict[str, Any] = {"dataset": ds.name, "rows": len(train), "columns": train.shape[1] - 1}
        row |= {"status": status.status, "total_s": round(total, 2)}
        if status.status != "succeeded":
            return row | {"error": status.error}
        info = get_run(ws, status.result["run_id"])
        done = sorted((rec.at, phase) for phase, rec in info.phases.items())
        previous, phases = start, {}
        for at, phase in done:
            phases[phase] = round(at - previous, 2)
            previous = at
        training = ws.store.get_value("ml-expert/training") or {}
        search = training.get("search") or {}
        return row | {
            "phases_s": phases,
            "train_seconds": training.get("train_seconds"),
            "candidates_complete": search.get("complete"),
        }
    finally:
        ws.jobs.stop()
        ws.close()
        shutil.rmtree(root, ignore_errors=True)


def markdown(rows: list[dict[str, Any]]) -> str:
    head = "| dataset | rows | columns | " + " | ".join(PHASES) + " | total s |"
    lines = [head, "|" + "---|" * (len(PHASES) + 4)]
    for r in rows:
        cells = [str(r.get("phases_s", {}).get(p, "-")) for p in PHASES]
        name = f"| {r['dataset']} | {r['rows']:,} | {r['columns']:,} | "
        lines.append(name + " | ".join(cells) + f" | {r['total_s']} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", choices=sorted(SUITES), default="dev")
    parser.add_argument("--datasets", required=True, help="Comma-separated names of the suite's tables.")
    parser.add_argument("--budget", type=float, default=60.0, help="time_budget_s of each run (default 60).")
    parser.add_argument("--out", default="phase_bench", help="results file stem in bench/results/")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    rows = []
    for name in (n.strip() for n in args.datasets.split(",") if n.strip()):
        rows.append(phase_seconds(name, args.suite, args.budget))
        print(json.dumps(rows[-1]), flush=True)
    text = markdown(rows)
    meta = {
        "versions": {"python": platform.python_version(), "ml-expert": version("ml-expert")},
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform()},
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    result = {"suite": args.suite, "budget_s": args.budget, "datasets": rows, "meta": meta}
    (RESULTS / f"{args.out}.json").write_text(json.dumps(result, indent=1))
    (RESULTS / f"{args.out}.md").write_text(text + "\n")
    print("\n" + text)


if __name__ == "__main__":
    main()
