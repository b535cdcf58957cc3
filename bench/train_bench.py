"""Overhead of the `train` tool over a real stdio MCP client vs plain Keras `model.fit` in a script,
and test accuracy of `auto` vs the seed's DNN on bundled datasets.

(a) and (b) train the same DNN (the seed's 256-128-64), on the same prepared arrays, with the same
seed, epochs and batch size; both include starting Python and importing TensorFlow. Also reports
the time from the tool call to the first progress notification.
Targets: overhead <= 10% on a ~30 s training; first progress <= 5 s.
Writes bench/results/train_bench.json.

    python bench/train_bench.py [--rows 40000] [--epochs 12] [--skip-accuracy]
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
from typing import Any

import anyio
import numpy as np
import pandas as pd
from mcp import Client, StdioServerParameters

RESULTS = Path(__file__).parent / "results"

PLAIN = """
import os, sys, time
t0 = time.perf_counter()
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
import numpy as np, keras, tensorflow as tf
data, epochs = sys.argv[1], int(sys.argv[2])
keras.utils.set_random_seed(42); tf.config.experimental.enable_op_determinism()
X, y = np.load(f"{data}/X_train.npy"), np.load(f"{data}/y_train.npy")
Xv, yv = np.load(f"{data}/X_val.npy"), np.load(f"{data}/y_val.npy")
model = keras.Sequential([keras.Input((X.shape[1],)), keras.layers.Dense(256, activation="relu"),
    keras.layers.Dropout(0.3), keras.layers.Dense(128, activation="relu"), keras.layers.Dropout(0.3),
    keras.layers.Dense(64, activation="relu"), keras.layers.Dense(int(y.max()) + 1, activation="softmax")])
model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
t1 = time.perf_counter()
model.fit(X, y, validation_data=(Xv, yv), epochs=epochs, batch_size=32, verbose=0, callbacks=[
    keras.callbacks.EarlyStopping(monitor="val_loss", patience=epochs + 1, restore_best_weights=True),
    keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=5),
    keras.callbacks.ModelCheckpoint(f"{data}/plain_best.keras", save_best_only=True)])
print(time.perf_counter() - t1, time.perf_counter() - t0)
"""


def make_data(root: Path, rows: int) -> str:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(rows, 30))
    y = (X[:, :5].sum(axis=1) + np.sin(X[:, 5] * 2) + rng.normal(0, 0.5, rows) > 0).astype(int)
    pd.DataFrame(X).add_prefix("f").assign(y=y).to_csv(root / "bench.csv", index=False)
    return "bench.csv"


def server(root: Path) -> StdioServerParameters:
    return StdioServerParameters(
        command=sys.executable,
        args=["-m", "ml_expert.server.cli", "serve", "--log-level", "WARNING"],
        env={"ML_EXPERT_WORKSPACE": str(root), "PATH": "/usr/bin:/bin"},
    )


def overhead(root: Path, rows: int, epochs: int) -> dict[str, Any]:
    from ml_expert.tools.data.prepare import prepare_data
    from ml_expert.tools.workspace import Workspace

    run_id = prepare_data(Workspace(root), path=make_data(root, rows), target="y", outliers="none").run_id
    data = root / ".ml-expert" / "runs" / run_id / "data"
    t = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", PLAIN, str(data), str(epochs)], capture_output=True, text=True, check=True
    )
    plain_wall = time.perf_counter() - t
    plain_fit = float(out.stdout.split()[0])
    config = {"epochs": epochs, "early_stopping_patience": 0}
    first: list[float] = []

    async def via_tool() -> dict[str, Any]:
        async with Client(server(root)) as c:
            t0 = time.perf_counter()

            async def progress(p: float, total: float | None, message: str | None) -> None:
                if not first:
                    first.append(time.perf_counter() - t0)

            result = await c.call_tool(
                "train",
                {"run_id": run_id, "architecture": "dnn", "config": config, "wait_seconds": 600},
                progress_callback=progress,
                read_timeout_seconds=700,
            )
            wall = time.perf_counter() - t0
            return {"wall": wall, "result": result.structured_content}

    tool = anyio.run(via_tool)
    assert tool["result"]["status"] == "succeeded", tool["result"]["error"]
    fit = tool["result"]["result"]["train_seconds"]
    return {
        "rows": rows,
        "epochs": epochs,
        "plain_keras": {"wall_s": round(plain_wall, 2), "fit_s": round(plain_fit, 2)},
        "train_tool_over_stdio": {
            "wall_s": round(tool["wall"], 2),
            "fit_s": fit,
            "first_progress_s": round(first[0], 2) if first else None,
        },
        "wall_ratio": round(tool["wall"] / plain_wall, 3),
        "fit_ratio": round(fit / plain_fit, 3),
    }


def accuracy(root: Path) -> dict[str, Any]:
    from sklearn import datasets

    from ml_expert.tools.data.analyze import analyze_data
    from ml_expert.tools.data.prepare import prepare_data
    from ml_expert.tools.evaluation.evaluate import evaluate
    from ml_expert.tools.jobs.manager import JobManager
    from ml_expert.tools.training.train import train
    from ml_expert.tools.workspace import Workspace

    ws = Workspace(root / "accuracy")
    ws.jobs = JobManager(ws).start()
    out = {}
    for name in ("breast_cancer", "wine", "digits", "diabetes"):
        frame = getattr(datasets, f"load_{name}")(as_frame=True).frame
        frame.to_csv(ws.root / f"{name}.csv", index=False)
        run = analyze_data(ws, f"{name}.csv", target="target").run_id
        prepare_data(ws, run_id=run)
        row = {}
        for arch in ("auto", "dnn"):
            status = train(ws, run, arch, wait_seconds=900)
            assert status.status == "succeeded", status.error
            ev = evaluate(ws, run, model_id=status.result["model_id"], wait_seconds=300).result["evaluations"][0]
            key = "accuracy" if "accuracy" in ev["test_metrics"] else "r2"
            row[arch] = {
                "architecture": ev["architecture"],
                key: round(ev["test_metrics"][key], 4),
                "train_s": status.result["train_seconds"],
            }
        out[name] = row
        print(name, row)
    ws.jobs.stop()
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=40_000)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--skip-accuracy", action="store_true")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="ml-expert-train-bench-"))
    res: dict[str, Any] = {"overhead": overhead(root, args.rows, args.epochs)}
    print(json.dumps(res["overhead"], indent=2))
    if not args.skip_accuracy:
        res["auto_vs_seed_dnn_test"] = accuracy(root)
    o = res["overhead"]
    res["targets"] = {
        "overhead<=10%": o["wall_ratio"] <= 1.10,
        "first_progress<=5s": (o["train_tool_over_stdio"]["first_progress_s"] or 99) <= 5,
    }
    res["meta"] = {"python": platform.python_version(), "when": time.ctime()}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "train_bench.json").write_text(json.dumps(res, indent=2))
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
