"""How long Keras jobs take end to end when their worker forks from the fork server of Keras jobs (TensorFlow
already loaded) against the server without TensorFlow (the worker imports it: the behaviour before) and a plain
worker process (`ML_EXPERT_FORKSERVER=0`), in the same run, interleaved.

On breast_cancer: `train(dnn, epochs=3)` and `evaluate` of that model, each from submit to result, --repeats times
per way (median). Also the resident memory of each fork server. Writes bench/results/job_start_bench.json.

    python bench/job_start_bench.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"
WAYS = ("keras_server", "server_without_tensorflow", "plain_process")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from sklearn.datasets import load_breast_cancer

    from ml_expert.tools.data.analyze import analyze_data
    from ml_expert.tools.data.prepare import prepare_data
    from ml_expert.tools.evaluation.evaluate import evaluate
    from ml_expert.tools.jobs import forkserver
    from ml_expert.tools.jobs.manager import JobManager
    from ml_expert.tools.training.config import TrainConfig
    from ml_expert.tools.training.train import train
    from ml_expert.tools.workspace import Workspace

    root = Path(tempfile.mkdtemp(prefix="ml-expert-job-start-"))
    ws = Workspace(root)
    ws.jobs = JobManager(ws).start()
    load_breast_cancer(as_frame=True).frame.to_csv(root / "bc.csv", index=False)
    run = analyze_data(ws, "bc.csv", target="target").run_id
    prepare_data(ws, run_id=run)
    env = ws.jobs._worker_env()
    keras_server = forkserver.warm_up(env, tensorflow=True)
    plain_server = forkserver.warm_up(env)
    assert keras_server is not None and plain_server is not None, "fork servers are off on this machine"
    time.sleep(20)  # both servers finish their imports
    original = JobManager._runs_keras
    seconds: dict[str, dict[str, list[float]]] = {way: {"train": [], "evaluate": []} for way in WAYS}
    accuracy: dict[str, list[float]] = {way: [] for way in WAYS}
    try:
        for _ in range(args.repeats):
            for way in WAYS:
                JobManager._runs_keras = original if way == "keras_server" else (lambda self, job_id: False)  # type: ignore[method-assign]
                if way == "plain_process":
                    os.environ[forkserver.DISABLE_ENV] = "0"
                t = time.perf_counter()
                trained = train(ws, run, "dnn", config=TrainConfig(epochs=3), wait_seconds=600)
                seconds[way]["train"].append(time.perf_counter() - t)
                assert trained.status == "succeeded", trained.error
                t = time.perf_counter()
                done = evaluate(ws, run, model_id=trained.result["model_id"], wait_seconds=600)
                seconds[way]["evaluate"].append(time.perf_counter() - t)
                assert done.status == "succeeded", done.error
                accuracy[way].append(done.result["evaluations"][0]["test_metrics"]["accuracy"])
                os.environ.pop(forkserver.DISABLE_ENV, None)
    finally:
        JobManager._runs_keras = original  # type: ignore[method-assign]
        os.environ.pop(forkserver.DISABLE_ENV, None)
        memory = {
            "keras_server_rss_mb": rss_mb(keras_server._proc.pid),
            "server_rss_mb": rss_mb(plain_server._proc.pid),
        }
        ws.jobs.stop()
        ws.close()

    medians = {way: {job: round(statistics.median(v), 2) for job, v in jobs.items()} for way, jobs in seconds.items()}
    base = medians["server_without_tensorflow"]
    result: dict[str, Any] = {
        "median_seconds": medians,
        "ratio_to_server_without_tensorflow": {
            way: {job: round(m[job] / base[job], 3) for job in m} for way, m in medians.items()
        },
        "all_seconds": {w: {job: [round(x, 2) for x in v] for job, v in jobs.items()} for w, jobs in seconds.items()},
        "test_accuracy": accuracy,
        "memory": memory,
        "repeats": args.repeats,
        "machine": {"python": sys.version.split()[0], "platform": platform.platform(), "cpus": os.cpu_count()},
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "job_start_bench.json").write_text(json.dumps(result, indent=2))
    for way in WAYS:
        print(f"{way:28s} train {medians[way]['train']:6.2f} s   evaluate {medians[way]['evaluate']:6.2f} s")
    print(f"fork server RSS: with TensorFlow {memory['keras_server_rss_mb']} MB, without {memory['server_rss_mb']} MB")


if __name__ == "__main__":
    main()
