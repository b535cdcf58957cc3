"""analyze_data and prepare_data on a generated 1,000,000-row x 20-column mixed CSV, against plain
`pandas.read_csv` + `describe()` of the same file, in the same run.

Each measurement runs in its own subprocess so its peak memory (max RSS) is its own.
Targets: analyze_data <= 2x the plain pandas time; peak memory <= 3x the file size.
Writes bench/results/data_bench.json.

    python bench/data_bench.py [--rows 1000000]
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

RESULTS = Path(__file__).parent / "results"

CODE = {
    "pandas_read_csv_describe": "import pandas as pd; df = pd.read_csv(PATH); df.describe(include='all')",
    "analyze_data": "from ml_expert.tools.workspace import Workspace; from ml_expert.tools.data.analyze import "
    "analyze_data; analyze_data(Workspace(ROOT), PATH, target='target')",
    "prepare_data": "from ml_expert.tools.workspace import Workspace; from ml_expert.tools.data.prepare import "
    "prepare_data; prepare_data(Workspace(ROOT), path=PATH, target='target')",
}
RUNNER = """
import resource, sys, time
ROOT, PATH = sys.argv[1], sys.argv[2]
t = time.perf_counter()
exec(sys.argv[3])
elapsed = time.perf_counter() - t
print(elapsed, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
"""


def make_csv(path: Path, rows: int) -> None:
    rng = np.random.default_rng(0)
    cols = {f"num_{i}": rng.normal(i, 1 + i, rows).round(4) for i in range(10)}
    cols |= {f"int_{i}": rng.integers(0, 1000, rows) for i in range(3)}
    cols |= {f"cat_{i}": rng.choice([f"c{j}" for j in range(5 + 20 * i)], rows) for i in range(4)}
    cols["flag"] = rng.choice(["true", "false"], rows)
    cols["day"] = pd.to_datetime("2020-01-01") + pd.to_timedelta(rng.integers(0, 1500, rows), unit="D")
    df = pd.DataFrame(cols)
    df.loc[rng.random(rows) < 0.05, "num_1"] = np.nan
    df["target"] = np.where(df["num_0"] + (df["cat_0"] == "c1") + rng.normal(0, 1, rows) > 0.5, "yes", "no")
    df.to_csv(path, index=False)


def measure(name: str, root: Path, path: Path) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", RUNNER, str(root), str(path), CODE[name]], capture_output=True, text=True, check=True
    )
    seconds, rss = out.stdout.split()
    return {"seconds": round(float(seconds), 3), "peak_rss_bytes": int(rss)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="ml-expert-data-bench-"))
    path = root / "mixed.csv"
    t = time.perf_counter()
    make_csv(path, args.rows)
    size = path.stat().st_size
    print(f"generated {args.rows} rows x 20 columns ({size / 1e6:.0f} MB) in {time.perf_counter() - t:.1f}s")
    res = {name: measure(name, root, path) for name in CODE}
    base = res["pandas_read_csv_describe"]
    for name, r in res.items():
        r["time_ratio_vs_pandas"] = round(r["seconds"] / base["seconds"], 2)
        r["peak_rss_vs_file_size"] = round(r["peak_rss_bytes"] / size, 2)
        print(
            f"{name:26} {r['seconds']:7.2f}s  x{r['time_ratio_vs_pandas']:.2f} vs pandas  "
            f"peak {r['peak_rss_bytes'] / 1e6:6.0f} MB = {r['peak_rss_vs_file_size']:.2f}x file"
        )
    res["targets"] = {
        "analyze_time<=2x_pandas": res["analyze_data"]["time_ratio_vs_pandas"] <= 2,
        "analyze_peak<=3x_file": res["analyze_data"]["peak_rss_vs_file_size"] <= 3,
    }
    res["meta"] = {
        "rows": args.rows,
        "columns": 20,
        "file_bytes": size,
        "python": platform.python_version(),
        "pandas": pd.__version__,
        "when": time.ctime(),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "data_bench.json").write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
