"""MCP latency of ml-expert over stdio, against the Python reference server `mcp-server-time` and a bare
MCPServer (the protocol's own floor), all on the same SDK, in the same run.

Reports connect time (spawn to initialized; the median of --spawns interleaved starts of each server),
list_tools time, and p50/p95 of 500 sequential memory_store, memory_retrieve and memory_search calls
(search on a store pre-filled with 10,000 entries) against get_current_time / echo.
Targets (issue "After training"): connect <= 1.0x mcp-server-time, memory_store p50 <= 1 ms.
Writes bench/results/mcp_latency.json. Needs the bench extra (mcp-server-time).

    python bench/mcp_latency.py [--calls 500] [--prefill 10000] [--spawns 7]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
from mcp import Client, StdioServerParameters

RESULTS = Path(__file__).parent / "results"
BASELINE = """
from mcp.server.mcpserver import MCPServer
mcp = MCPServer("baseline")
@mcp.tool()
def echo(text: str) -> str:
    \"\"\"Return the text.\"\"\"
    return text
mcp.run("stdio")
"""


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(q / 100 * (len(values) - 1)))] * 1000


async def timed_calls(client: Client, name: str, make_args: Any, n: int) -> dict[str, float]:
    times = []
    for i in range(n):
        t = time.perf_counter()
        result = await client.call_tool(name, make_args(i))
        times.append(time.perf_counter() - t)
        assert not result.is_error, result.content
    return {"p50_ms": pct(times, 50), "p95_ms": pct(times, 95), "mean_ms": statistics.mean(times) * 1000}


async def connect_once(params: StdioServerParameters) -> float:
    t0 = time.perf_counter()
    async with Client(params):
        return time.perf_counter() - t0


async def measure(params: StdioServerParameters, body: Any) -> dict[str, Any]:
    t0 = time.perf_counter()
    async with Client(params) as client:
        connect = time.perf_counter() - t0
        t = time.perf_counter()
        await client.list_tools()
        listing = time.perf_counter() - t
        out = await body(client)
    return {"connect_s": round(connect, 4), "list_tools_ms": round(listing * 1000, 3), **out}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--prefill", type=int, default=10_000)
    parser.add_argument("--spawns", type=int, default=7, help="Starts of each server for the connect median.")
    args = parser.parse_args()
    workspace = Path(tempfile.mkdtemp(prefix="ml-expert-bench-"))

    from ml_expert.memory import MemoryStore

    store = MemoryStore(workspace / ".ml-expert" / "memory.db")
    words = ["accuracy", "loss", "breast", "cancer", "wine", "digits", "regression", "forest", "boosting", "dnn"]
    for i in range(args.prefill):
        store.store(f"bench/prefill/{i}", {"note": f"{words[i % 10]} {words[(i * 7) % 10]} run {i}", "i": i})
    store.close()

    ours = StdioServerParameters(
        command=sys.executable,
        args=["-m", "ml_expert.server.cli", "serve", "--log-level", "WARNING"],
        env={"ML_EXPERT_WORKSPACE": str(workspace), "PATH": "/usr/bin:/bin"},
    )
    base = StdioServerParameters(command=sys.executable, args=["-c", BASELINE])
    reference = StdioServerParameters(command=sys.executable, args=["-m", "mcp_server_time"])
    servers = {"ml_expert": ours, "mcp_server_time": reference, "baseline": base}

    async def ml_expert_body(c: Client) -> dict[str, Any]:
        n = args.calls
        return {
            "memory_store": await timed_calls(c, "memory_store", lambda i: {"key": f"k/{i}", "value": {"i": i}}, n),
            "memory_retrieve": await timed_calls(c, "memory_retrieve", lambda i: {"key": f"k/{i}"}, n),
            "memory_search": await timed_calls(c, "memory_search", lambda i: {"query": f"{words[i % 10]} run"}, n),
        }

    async def baseline_body(c: Client) -> dict[str, Any]:
        return {"echo": await timed_calls(c, "echo", lambda i: {"text": f"hello {i}"}, args.calls)}

    async def reference_body(c: Client) -> dict[str, Any]:
        call = await timed_calls(c, "get_current_time", lambda i: {"timezone": "UTC"}, args.calls)
        return {"get_current_time": call}

    async def run_all() -> dict[str, Any]:
        spawns: dict[str, list[float]] = {name: [] for name in servers}
        for _ in range(args.spawns):  # interleaved, so that a noisy moment hits every server alike
            for name, params in servers.items():
                spawns[name].append(await connect_once(params))
        out = {
            "ml_expert": await measure(ours, ml_expert_body),
            "mcp_server_time": await measure(reference, reference_body),
            "baseline": await measure(base, baseline_body),
        }
        for name, times in spawns.items():
            out[name]["connect_s"] = round(statistics.median(times), 4)
            out[name]["connect_all_s"] = [round(t, 4) for t in times]
        return out

    res = anyio.run(run_all)
    floor = res["baseline"]["echo"]["p50_ms"]
    res["ratios_vs_baseline_p50"] = {
        k: round(res["ml_expert"][k]["p50_ms"] / floor, 2) for k in ("memory_store", "memory_retrieve", "memory_search")
    }
    res["connect_ratio_vs_mcp_server_time"] = round(
        res["ml_expert"]["connect_s"] / res["mcp_server_time"]["connect_s"], 2
    )
    res["connect_ratio_vs_baseline"] = round(res["ml_expert"]["connect_s"] / res["baseline"]["connect_s"], 2)
    res["targets"] = {
        "connect<=1.0x_mcp_server_time": res["connect_ratio_vs_mcp_server_time"] <= 1.0,
        "store_p50_ms<=1": res["ml_expert"]["memory_store"]["p50_ms"] <= 1,
        "retrieve_p50_ms<=2": res["ml_expert"]["memory_retrieve"]["p50_ms"] <= 2,
        "search_p50_ms<=5": res["ml_expert"]["memory_search"]["p50_ms"] <= 5,
    }
    res["meta"] = {
        "calls": args.calls,
        "prefill": args.prefill,
        "spawns": args.spawns,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": __import__("os").cpu_count(),
        "when": time.ctime(),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "mcp_latency.json").write_text(json.dumps(res, indent=2))
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
