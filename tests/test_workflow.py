"""The whole workflow: run_workflow and resume, the skill's contract, real agents over stdio."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pandas as pd
import pytest
from conftest import sklearn_frame, write_dataset
from mcp import Client, StdioServerParameters

from ml_expert.tools.runs import PHASES, WORKFLOW_MEMORY, get_run
from ml_expert.tools.workflow import run_workflow
from ml_expert.tools.workspace import Workspace

SKILL = Path(__file__).parents[1] / "skills" / "ml-expert" / "SKILL.md"


@pytest.mark.slow
def test_run_workflow_writes_every_phase(jobs_ws: Workspace) -> None:
    path = write_dataset(jobs_ws, "breast_cancer")
    seen: list[dict] = []
    status = run_workflow(jobs_ws, path=path, target="target", time_budget_s=5, wait_seconds=300, report=seen.append)
    assert status.status == "succeeded", status.error
    result = status.result
    assert result["beats_baseline"] and result["test_metrics"]["accuracy"] >= 0.93
    assert result["phases_run"] == ["analyze", "prepare", "recommend", "train", "evaluate", "package"]
    for name in WORKFLOW_MEMORY:
        assert jobs_ws.store.retrieve(f"ml-expert/{name}").value["run_id"] == result["run_id"]
    assert get_run(jobs_ws, result["run_id"]).next_phase is None
    steps = [p["step"] for p in seen if "step" in p]
    assert steps == sorted(steps) and any("phase 4/6 train" in p.get("message", "") for p in seen)
    assert (jobs_ws.root / result["deployment"] / "inference.py").exists()


def test_failed_phase_keeps_earlier_work_and_resume_continues(jobs_ws: Workspace) -> None:
    path = write_dataset(jobs_ws, "diabetes")
    bad = {"n_clusters": 1000}  # valid on its own, more clusters than the training rows: the fit itself fails
    failed = run_workflow(jobs_ws, path=path, target="target", architecture="kmeans", config=bad, wait_seconds=300)
    assert failed.status == "failed" and "Phase 'train' failed" in failed.error and "resume" in failed.error
    assert "n_clusters=1000" in failed.error, failed.error  # the library's reason reaches the caller
    run = get_run(jobs_ws, failed.run_id)
    assert set(run.phases) == {"analyze", "prepare", "recommend"} and run.next_phase == "train"
    resumed = run_workflow(jobs_ws, resume=failed.run_id, architecture="linear", wait_seconds=300)
    assert resumed.status == "succeeded", resumed.error
    assert resumed.result["phases_run"] == ["train", "evaluate", "package"] and resumed.result["run_id"] == run.run_id


def test_skill_names_only_tools_and_keys_that_exist(tmp_path: Path) -> None:
    from ml_expert.server.app import build_server
    from ml_expert.tools.settings import Settings

    text = SKILL.read_text()
    front = text.split("---")[1]
    for field in ("name:", "description:", "agents:", "success_criteria:", "outputs:", "triggers:"):
        assert field in front

    async def tools() -> set[str]:
        async with Client(build_server(Settings.from_env(env={}, workspace=tmp_path))) as c:
            return {t.name for t in (await c.list_tools()).tools}

    names = anyio.run(tools)
    called = set(re.findall(r"`([a-z_]+)\(", text)) | set(re.findall(r"`([a-z]+_[a-z_]+)`", text))
    tool_like = {n for n in called if not n.startswith("ml_") and not n.endswith("_id")}
    assert tool_like and tool_like <= names, tool_like - names
    keys = set(re.findall(r"(?<!\.)ml-expert/([a-z-]+)\b(?![./])", text))
    assert keys and keys <= set(PHASES), keys - set(PHASES)


def _server(workspace: Path) -> StdioServerParameters:
    return StdioServerParameters(
        command=sys.executable,
        args=["-m", "ml_expert.server.cli", "serve"],
        env={"ML_EXPERT_WORKSPACE": str(workspace), "PATH": "/usr/bin:/bin"},
    )


async def _agent_session(c: Client, dataset: str, target: str) -> dict[str, Any]:
    """What an agent does: phase by phase, reading memory keys between phases."""

    async def call(name: str, args: dict[str, Any]) -> dict[str, Any]:
        result = await c.call_tool(name, args, read_timeout_seconds=300)
        assert not result.is_error, result.content[0].text
        return result.structured_content

    async def recall(key: str) -> dict[str, Any]:
        return (await call("memory_retrieve", {"key": key}))["value"]

    run_id = (await call("analyze_data", {"path": dataset, "target": target}))["run_id"]
    assert (await recall("ml-expert/data-analysis"))["run_id"] == run_id
    await call("prepare_data", {"run_id": run_id})
    assert (await recall("ml-expert/prepared-data"))["run_id"] == run_id
    arch = (await call("recommend_architecture", {"run_id": run_id}))["recommended"]
    assert (await recall("ml-expert/architecture"))["recommended"] == arch
    job = await call("train", {"run_id": run_id, "architecture": arch, "wait_seconds": 120})
    assert job["status"] == "succeeded", job["error"]
    assert (await recall("ml-expert/training"))["model_id"] == job["result"]["model_id"]
    ev = await call("evaluate", {"run_id": run_id, "wait_seconds": 120})
    assert ev["status"] == "succeeded", ev["error"]
    pkg = await call("package", {"run_id": run_id, "wait_seconds": 300})
    assert pkg["status"] == "succeeded", pkg["error"]
    report = await c.read_resource(f"ml-expert://runs/{run_id}/report")
    assert "# Model Evaluation Report" in report.contents[0].text
    return {"run_id": run_id, "metrics": ev["result"]["evaluations"][0], "package": pkg["result"]}


@pytest.mark.slow
@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "key", "bar"), [("breast_cancer", "accuracy", 0.93), ("wine", "accuracy", 0.85), ("diabetes", "r2", 0.3)]
)
def test_agent_over_stdio_end_to_end(tmp_path: Path, name: str, key: str, bar: float) -> None:
    ws = Workspace(tmp_path)
    dataset = write_dataset(ws, name)

    async def main() -> dict[str, Any]:
        async with Client(_server(tmp_path)) as c:
            return await _agent_session(c, dataset, "target")

    out = anyio.run(main)
    assert out["metrics"]["test_metrics"][key] >= bar and out["metrics"]["beats_baseline"]
    folder = tmp_path / out["package"]["folder"]
    rows = sklearn_frame(name).drop(columns="target").head(5)
    code = (
        f"import sys; sys.path.insert(0, {str(folder)!r}); from inference import ModelInference; "
        "import json, pandas as pd; labels = ModelInference().predict(pd.read_json(sys.stdin)); "
        "print(json.dumps([str(v) for v in labels]))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], input=rows.to_json(), capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    labels = json.loads(proc.stdout)
    expected = set(sklearn_frame(name)["target"].astype(str)) if key == "accuracy" else None
    assert len(labels) == 5 and (expected is None or set(labels) <= expected), labels


@pytest.mark.slow
def test_two_agents_share_one_workspace(tmp_path: Path) -> None:
    ws = Workspace(tmp_path)
    a, b = write_dataset(ws, "wine"), write_dataset(ws, "breast_cancer")

    async def agent(dataset: str, tag: str, out: dict[str, Any]) -> None:
        async with Client(_server(tmp_path)) as c:
            for i in range(30):
                await c.call_tool("memory_store", {"key": f"notes/{tag}/{i}", "value": {"i": i}, "namespace": "swarm"})
            job = await c.call_tool(
                "run_workflow",
                {"path": dataset, "target": "target", "time_budget_s": 5, "wait_seconds": 300},
                read_timeout_seconds=320,
            )
            out[tag] = job.structured_content
            listed = await c.call_tool("memory_list", {"namespace": "swarm", "limit": 100})
            out[f"{tag}-seen"] = listed.structured_content["total"]

    results: dict[str, Any] = {}

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(agent, a, "one", results)
            tg.start_soon(agent, b, "two", results)

    anyio.run(main)
    assert results["one"]["status"] == "succeeded", results["one"]["error"]
    assert results["two"]["status"] == "succeeded", results["two"]["error"]
    assert results["one"]["run_id"] != results["two"]["run_id"]
    assert Workspace(tmp_path).store.list(namespace="swarm", limit=100).total == 60
    assert max(results["one-seen"], results["two-seen"]) == 60


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("npx") is None, reason="Node.js (npx) is not installed; the Inspector CLI needs it")
def test_mcp_inspector_cli_lists_and_calls_tools(tmp_path: Path) -> None:
    pd.DataFrame({"a": range(30), "y": [0, 1, 2] * 10}).to_csv(tmp_path / "d.csv", index=False)
    base = [
        "npx",
        "-y",
        "@modelcontextprotocol/inspector",
        "--cli",
        sys.executable,
        "-m",
        "ml_expert.server.cli",
        "serve",
        "--workspace",
        str(tmp_path),
    ]

    def inspect(*args: str) -> dict[str, Any]:
        try:
            proc = subprocess.run([*base, *args], capture_output=True, text=True, timeout=300)
        except subprocess.TimeoutExpired:
            pytest.skip("the Inspector could not be fetched from the npm registry in time")
        if proc.returncode != 0 and ("ENOTFOUND" in proc.stderr or "EAI_AGAIN" in proc.stderr):
            pytest.skip("the npm registry is not reachable")
        assert proc.returncode == 0, proc.stderr[-2000:]
        return json.loads(proc.stdout)

    tools = inspect("--method", "tools/list")
    assert {"memory_store", "analyze_data", "train"} <= {t["name"] for t in tools["tools"]}
    stored = inspect(
        "--method",
        "tools/call",
        "--tool-name",
        "memory_store",
        "--tool-arg",
        "key=inspector",
        "--tool-arg",
        "value=hello",
    )
    assert not stored.get("isError")
    analysis = inspect(
        "--method", "tools/call", "--tool-name", "analyze_data", "--tool-arg", "path=d.csv", "--tool-arg", "target=y"
    )
    assert not analysis.get("isError") and analysis["structuredContent"]["rows"] == 30
