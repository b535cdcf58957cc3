"""Inference speed of a deployment package: every packaged format vs the seed's `model.predict` path.

Builds two packages on breast_cancer (a DNN: keras/onnx/tflite; gradient boosting: joblib/onnx),
then measures in one process: single-row p50/p95 through `ModelInference.predict(record)` and
10,000-row batch throughput, per runtime; and the seed's path (`model.predict(scaler.transform(row))`
on the Keras model). Target: single-row p50 <= 1 ms with the fastest runtime.
Writes bench/results/inference_bench.json.

    python bench/inference_bench.py
"""

from __future__ import annotations

import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

RESULTS = Path(__file__).parent / "results"


def timings(fn: Any, rows: list[Any], n: int = 300) -> dict[str, float]:
    for i in range(20):
        fn(rows[i % len(rows)])
    times = []
    for i in range(n):
        t = time.perf_counter()
        fn(rows[i % len(rows)])
        times.append(time.perf_counter() - t)
    return {
        "p50_ms": round(float(np.percentile(times, 50)) * 1000, 4),
        "p95_ms": round(float(np.percentile(times, 95)) * 1000, 4),
    }


def build(root: Path) -> dict[str, Path]:
    from sklearn.datasets import load_breast_cancer

    from ml_expert.tools.data.analyze import analyze_data
    from ml_expert.tools.data.prepare import prepare_data
    from ml_expert.tools.jobs.manager import JobManager
    from ml_expert.tools.packaging.package import package
    from ml_expert.tools.training.config import TrainConfig
    from ml_expert.tools.training.train import train
    from ml_expert.tools.workspace import Workspace

    ws = Workspace(root)
    ws.jobs = JobManager(ws).start()
    load_breast_cancer(as_frame=True).frame.to_csv(root / "bc.csv", index=False)
    run = analyze_data(ws, "bc.csv", target="target").run_id
    prepare_data(ws, run_id=run)
    out = {}
    for arch, formats in (("dnn", ["keras", "onnx", "tflite"]), ("gradient_boosting", ["joblib", "onnx"])):
        model_id = train(ws, run, arch, config=TrainConfig(epochs=30), wait_seconds=600).result["model_id"]
        status = package(ws, run, model_id=model_id, formats=formats, output_dir=f"deploy_{arch}", wait_seconds=900)
        assert status.status == "succeeded", status.error
        out[arch] = root / status.result["folder"]
    ws.jobs.stop()
    return out


def main() -> None:
    root = Path(tempfile.mkdtemp(prefix="ml-expert-inference-bench-"))
    packages = build(root)
    raw = pd.read_csv(root / "bc.csv").drop(columns="target")
    records = raw.head(200).to_dict("records")
    big = pd.concat([raw] * (10000 // len(raw) + 1), ignore_index=True).head(10000)
    res: dict[str, Any] = {}
    for arch, folder in packages.items():
        sys.path.insert(0, str(folder))
        import importlib

        inference = importlib.import_module("inference")
        importlib.reload(inference)
        manifest = json.loads((folder / "manifest.json").read_text())
        for entry in manifest["runtimes"]:
            model = inference.ModelInference(folder, runtime=entry["runtime"])
            t = time.perf_counter()
            model.predict(big)
            batch = time.perf_counter() - t
            res[f"{arch}/{entry['runtime']}"] = {
                **timings(model.predict, records),
                "batch_rows_per_s": round(10000 / batch, 1),
            }
        if arch == "dnn":  # the seed's path: scaler.transform + keras model.predict on one row
            import joblib
            import keras

            pre = joblib.load(folder / "preprocessor.joblib")
            keras_model = keras.saving.load_model(folder / "model.keras", safe_mode=True)
            frames = [raw.iloc[[i]] for i in range(200)]
            res["seed/keras_model.predict"] = timings(
                lambda f, m=keras_model, p=pre: m.predict(p.transform(f), verbose=0), frames, n=100
            )
            t = time.perf_counter()
            keras_model.predict(pre.transform(big), verbose=0)
            res["seed/keras_model.predict"]["batch_rows_per_s"] = round(10000 / (time.perf_counter() - t), 1)
        sys.path.remove(str(folder))
    fastest = min((v["p50_ms"], k) for k, v in res.items() if not k.startswith("seed"))
    seed = res["seed/keras_model.predict"]["p50_ms"]
    for v in res.values():
        v["speedup_vs_seed_p50"] = round(seed / v["p50_ms"], 1)
    out = {
        "results": res,
        "fastest": {"runtime": fastest[1], "p50_ms": fastest[0]},
        "targets": {"single_row_p50<=1ms": fastest[0] <= 1.0},
        "meta": {"python": platform.python_version(), "when": time.ctime()},
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "inference_bench.json").write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
