"""Converting raw rows given as text (a CSV read by `predict` or by a package's `inference.py`) to the types the
preprocessing was fitted on, on a wide table: `coerce_frame` and `screen_frame`, which convert the numeric text
columns of one dtype all at once, against the same conversion one column at a time (`coerce_column` per column,
as both did before), in the same run. Synthetic: --columns numeric text columns (rounded normals, 2 % empty) and
one categorical.

    python bench/coerce_bench.py [--columns 1500] [--rows 1,10,100,1000] [--repeats 5]

Writes bench/results/coerce_bench.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ml_expert.tools.core.portable.preprocessing import coerce_column, coerce_frame, screen_frame

RESULTS = Path(__file__).parent / "results"


def table(rows: int, columns: int, seed: int = 0) -> tuple[pd.DataFrame, dict[str, Any]]:
    rng = np.random.default_rng(seed)
    values = rng.normal(size=(rows, columns)).round(4).astype(str).astype(object)
    values[rng.random((rows, columns)) < 0.02] = ""
    frame = pd.DataFrame(values, columns=[f"x{i}" for i in range(columns)]).astype("str")
    frame["kind"] = pd.Series(rng.choice(["a", "b", "c"], rows), dtype="str")
    schema = {"columns": [{"name": f"x{i}", "kind": "numeric"} for i in range(columns)]}
    schema["columns"].append({"name": "kind", "kind": "categorical"})
    return frame, schema


def one_by_one(frame: pd.DataFrame, schema: dict[str, Any]) -> pd.DataFrame:
    """The conversion as it ran before: one column at a time."""
    return pd.DataFrame(
        {c["name"]: coerce_column(frame[c["name"]], c["kind"], c["name"]) for c in schema["columns"]}, index=frame.index
    )


def best_of(fn: Any, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--columns", type=int, default=1500)
    parser.add_argument("--rows", default="1,10,100,1000")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    results = []
    for rows in (int(r) for r in args.rows.split(",")):
        frame, schema = table(rows, args.columns)
        reference = one_by_one(frame, schema)
        together = coerce_frame(frame, schema)
        assert all(
            np.array_equal(together[c].to_numpy(), reference[c].to_numpy(), equal_nan=True)
            for c in reference.columns
            if c != "kind"
        ), "the conversion at once must give the same values"
        row = {
            "rows": rows,
            "columns": args.columns + 1,
            "one_by_one_s": round(best_of(lambda f=frame, s=schema: one_by_one(f, s), args.repeats), 4),
            "coerce_frame_s": round(best_of(lambda f=frame, s=schema: coerce_frame(f, s), args.repeats), 4),
            "screen_frame_s": round(best_of(lambda f=frame, s=schema: screen_frame(f, s), args.repeats), 4),
        }
        row["speedup"] = round(row["one_by_one_s"] / row["coerce_frame_s"], 2)
        results.append(row)
        print(json.dumps(row), flush=True)
    meta = {
        "python": platform.python_version(),
        "pandas": pd.__version__,
        "platform": platform.platform(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    (RESULTS / "coerce_bench.json").write_text(json.dumps({"results": results, "meta": meta}, indent=1))


if __name__ == "__main__":
    main()
