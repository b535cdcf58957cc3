"""The whole workflow on one large CSV, as a person at a terminal runs it: `ml-expert run FILE --target y`
(analyze → prepare → recommend → train auto → evaluate → package), then `ml-expert predict` on a 1M-row file.

Reports the wall time of each command and the peak summed resident memory of every ml-expert process (the CLI
and its job workers), sampled every 0.2 s, against the 8 GB target. The table is synthetic (16 normal numbers, a
count, a boolean, a string category and a noisy non-linear target) unless --csv names an existing one with a
column `y`. Writes bench/results/workflow_bench.json.

    python bench/workflow_bench.py [--rows 10000000] [--predict-rows 1000000] [--folder /tmp/ml-expert-wf]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
from scale_bench import _rss, _tree

RESULTS = Path(__file__).parent / "results"
TARGET_GB = 8.0


def synthetic(rows: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({f"x{i}": rng.normal(size=rows).astype("float32") for i in range(16)})
    frame["count"] = rng.poisson(20, rows)
    frame["flag"] = rng.random(rows) < 0.3
    frame["region"] = np.asarray(["north", "south", "east", "west"])[rng.integers(0, 4, rows)]
    region_effect = frame["region"].map({"north": 0.5, "south": -0.5, "east": 0.0, "west": 1.0}).to_numpy()
    y = (
        np.sin(frame["x0"])
        + frame["x1"] * frame["x2"]
        + 0.05 * frame["count"]
        + frame["flag"] * 0.8
        + region_effect
        + rng.normal(0, 0.5, rows)
    )
    frame["y"] = y.astype("float32")
    return frame


def write_csv(frame: pd.DataFrame, path: Path) -> None:
    import pyarrow as pa
    import pyarrow.csv as pacsv

    pacsv.write_csv(pa.Table.from_pandas(frame, preserve_index=False), path)


def measured(command: list[str], cwd: Path) -> dict[str, Any]:
    """Run a CLI command; its wall time, exit code, peak summed RSS of its process tree and last output lines."""
    started = time.perf_counter()
    proc = subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak = [0]

    def watch() -> None:
        while proc.poll() is None:
            peak[0] = max(peak[0], sum(_rss(pid) for pid in _tree(proc.pid)))
            time.sleep(0.2)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    output = proc.communicate()[0]
    watcher.join()
    lines = [line.split("\r")[-1] for line in output.splitlines() if line.strip()]
    return {
        "command": " ".join(command),
        "exit": proc.returncode,
        "seconds": round(time.perf_counter() - started, 1),
        "peak_rss_gb": round(peak[0] / 1e9, 2),
        "output_tail": lines[-6:],
    }


def _rows(path: Path) -> int:
    with open(path, "rb") as f:
        return sum(block.count(b"\n") for block in iter(lambda: f.read(1 << 24), b"")) - 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--predict-rows", type=int, default=1_000_000)
    parser.add_argument("--folder", default="/tmp/ml-expert-wf", help="workspace for the files and the run")
    parser.add_argument("--csv", help="an existing CSV with a target column y (in --folder); skips generation")
    args = parser.parse_args()
    folder = Path(args.folder)
    folder.mkdir(parents=True, exist_ok=True)
    name = args.csv or f"table_{args.rows}.csv"
    if not (folder / name).exists():
        write_csv(synthetic(args.rows, 0), folder / name)
    new_rows = folder / f"new_{args.predict_rows}.csv"
    if not new_rows.exists():
        write_csv(synthetic(args.predict_rows, 1).drop(columns=["y"]), new_rows)
    cli = str(Path(sys.executable).with_name("ml-expert"))
    run = measured([cli, "run", name, "--target", "y"], folder)
    print(f"run: {run['seconds']} s, peak summed RSS {run['peak_rss_gb']} GB, exit {run['exit']}")
    run_id = next(
        (w for line in run["output_tail"] for w in line.replace(":", " ").split() if w.startswith("run_")), ""
    )
    predict = measured([cli, "predict", run_id, new_rows.name], folder)
    print(f"predict: {predict['seconds']} s, peak summed RSS {predict['peak_rss_gb']} GB, exit {predict['exit']}")
    size = (folder / name).stat().st_size
    record = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "file": {"name": name, "bytes": size, "rows": _rows(folder / name)},
        "target_gb": TARGET_GB,
        "run": run,
        "predict": predict,
        "within_target": max(run["peak_rss_gb"], predict["peak_rss_gb"]) <= TARGET_GB,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "workflow_bench.json").write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
