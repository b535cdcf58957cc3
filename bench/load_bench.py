"""Memory tools under load while a training job runs: 4 clients × 500 mixed calls to one HTTP server.

Each client runs its own MCP session against one `ml-expert serve --transport http` on 127.0.0.1 and
issues a mix of memory_store (40 %), memory_retrieve (30 %), memory_search (20 %) and memory_list (10 %)
on keys it shares with the other clients, while a DNN trains in a worker process of the same server.
Baseline in the same run: the same calls with no training job. Reports p50/p95 per tool and errors.
Targets: 0 errors, p95 <= 50 ms on 2 cores. Writes bench/results/load_bench.json.

    python bench/load_bench.py [--clients 4] [--calls 500]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import numpy as np
from mcp import Client

RESULTS = Path(__file__).parent / "results"
MIX = [("memory_store", 0.4), ("memory_retrieve", 0.3), ("memory_search", 0.2), ("memory_list", 0.1)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(workspace: Path, port: int) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "ml_expert.server.cli", "serve", "--transport", "http", "--port", str(port)]
    proc = subprocess.Popen([*cmd, "-w", str(workspace)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the server did not start")


def arguments(tool: str, rng: random.Random) -> dict[str, Any]:
    key = f"load/{rng.randrange(50)}"
    return {
        "memory_store": {"key": key, "value": {"n": rng.random(), "text": "epoch metrics " * 5}, "tags": ["load"]},
        "memory_retrieve": {"key": key},
        "memory_search": {"query": "epoch metrics"},
        "memory_list": {"prefix": "load/", "limit": 20},
    }[tool]


async def client(url: str, calls: int, seed: int, out: dict[str, list[float]], errors: list[str]) -> None:
    rng = random.Random(seed)
    tools, weights = zip(*MIX, strict=True)
    async with Client(url) as c:
        for _ in range(calls):
            tool = rng.choices(tools, weights)[0]
            started = time.perf_counter()
            result = await c.call_tool(tool, arguments(tool, rng))
            out.setdefault(tool, []).append(time.perf_counter() - started)
            if result.is_error and "No memory entry" not in result.content[0].text:  # a not-yet-stored key is fine
                errors.append(f"{tool}: {result.content[0].text[:200]}")


async def start_training(url: str, workspace: Path) -> str:
    from sklearn.datasets import make_classification

    X, y = make_classification(n_samples=20_000, n_features=30, random_state=0)
    frame = {f"x{i}": X[:, i] for i in range(X.shape[1])} | {"y": y}
    import pandas as pd

    pd.DataFrame(frame).to_csv(workspace / "train.csv", index=False)
    async with Client(url) as c:
        analysis = await c.call_tool("analyze_data", {"path": "train.csv", "target": "y"})
        run_id = analysis.structured_content["run_id"]
        await c.call_tool("prepare_data", {"run_id": run_id})
        config = {"epochs": 200, "early_stopping_patience": 0}
        job = await c.call_tool("train", {"run_id": run_id, "architecture": "dnn", "config": config, "wait_seconds": 0})
        return job.structured_content["job_id"]


async def one_round(url: str, clients: int, calls: int) -> dict[str, Any]:
    latencies: dict[str, list[float]] = {}
    errors: list[str] = []
    started = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for i in range(clients):
            tg.start_soon(client, url, calls, i, latencies, errors)
    wall = time.perf_counter() - started
    every = [v for values in latencies.values() for v in values]

    def ms(values: list[float], q: int) -> float:
        return round(float(np.percentile(values, q)) * 1000, 2)

    return {
        "calls": len(every),
        "errors": len(errors),
        "error_samples": errors[:5],
        "wall_seconds": round(wall, 2),
        "p50_ms": round(float(np.percentile(every, 50)) * 1000, 2),
        "p95_ms": round(float(np.percentile(every, 95)) * 1000, 2),
        "per_tool": {
            tool: {
                "p50_ms": round(float(np.percentile(v, 50)) * 1000, 2),
                "p95_ms": round(float(np.percentile(v, 95)) * 1000, 2),
            }
            for tool, v in latencies.items()
        },
    }


async def run(clients: int, calls: int) -> dict[str, Any]:
    workspace = Path(tempfile.mkdtemp(prefix="ml-expert-load-"))
    port = free_port()
    url = f"http://127.0.0.1:{port}/mcp"
    server = start_server(workspace, port)
    try:
        idle = await one_round(url, clients, calls)
        job_id = await start_training(url, workspace)
        await anyio.sleep(5)  # the worker has imported TensorFlow and trains now
        async with Client(url) as c:
            before = (await c.call_tool("get_job", {"job_id": job_id})).structured_content
        busy = await one_round(url, clients, calls)
        async with Client(url) as c:
            after = (await c.call_tool("get_job", {"job_id": job_id})).structured_content
            await c.call_tool("cancel_job", {"job_id": job_id})
    finally:
        server.terminate()
        server.wait(30)
    return {
        "idle": idle,
        "while_training": busy,
        "training_progress": [before["progress"].get("message"), after["progress"].get("message")],
        "training_status_during": after["status"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--calls", type=int, default=500)
    args = parser.parse_args()
    result = anyio.run(run, args.clients, args.calls)
    out = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "clients": args.clients,
        "calls_per_client": args.calls,
        **result,
        "targets": {"errors": 0, "p95_ms_max": 50},
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "load_bench.json").write_text(json.dumps(out, indent=2))
    for name in ("idle", "while_training"):
        r = out[name]
        print(f"{name:15} calls {r['calls']} errors {r['errors']} p50 {r['p50_ms']} ms p95 {r['p95_ms']} ms")
    print(f"training: {out['training_progress']} ({out['training_status_during']})")


if __name__ == "__main__":
    main()
