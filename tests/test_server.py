"""The MCP server through real clients: in-memory, stdio subprocess and streamable HTTP."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
from conftest import free_port, wait_for_port
from mcp import Client, StdioServerParameters

from ml_expert.server.app import build_server
from ml_expert.tools.settings import Settings
from ml_expert.tools.workspace import Workspace


def server_for(workspace: Path) -> Any:
    return build_server(Settings.from_env(env={}, workspace=workspace))


def call(workspace: Path, steps: Any) -> Any:
    async def main() -> Any:
        async with Client(server_for(workspace)) as client:
            return await steps(client)

    return anyio.run(main)


def _walk_properties(schema: dict[str, Any], defs: dict[str, Any], where: str) -> list[str]:
    missing = []
    for name, prop in schema.get("properties", {}).items():
        ref = prop.get("$ref") or next((a.get("$ref") for a in prop.get("anyOf", []) if "$ref" in a), None)
        if not prop.get("description"):
            missing.append(f"{where}.{name}")
        if ref:
            sub = defs[ref.split("/")[-1]]
            missing += _walk_properties(sub, defs, f"{where}.{name}") if sub.get("properties") else []
    return missing


def test_every_tool_and_parameter_has_a_description(tmp_path: Path) -> None:
    tools = call(tmp_path, lambda c: c.list_tools()).tools
    names = {t.name for t in tools}
    assert {
        "memory_store",
        "memory_retrieve",
        "memory_list",
        "memory_search",
        "memory_delete",
        "analyze_data",
        "prepare_data",
        "recommend_architecture",
        "train",
        "evaluate",
        "package",
        "run_workflow",
        "get_job",
        "list_jobs",
        "cancel_job",
        "list_runs",
        "get_run",
    } <= names
    missing = [t.name for t in tools if not (t.description or "").strip()]
    for t in tools:
        schema = t.input_schema
        missing += _walk_properties(schema, schema.get("$defs", {}), t.name)
    assert missing == []


def test_annotations_are_honest(tmp_path: Path) -> None:
    tools = {t.name: t.annotations for t in call(tmp_path, lambda c: c.list_tools()).tools}
    assert tools["memory_retrieve"].read_only_hint and tools["analyze_data"].read_only_hint
    assert tools["memory_delete"].destructive_hint and not tools["memory_delete"].read_only_hint
    assert not tools["train"].read_only_hint
    assert all(a.open_world_hint is False for a in tools.values())


def test_memory_round_trip_and_structured_results(tmp_path: Path) -> None:
    async def steps(c: Client) -> Any:
        stored = await c.call_tool("memory_store", {"key": "ml-expert/metrics", "value": {"acc": 0.9}, "tags": ["x"]})
        got = await c.call_tool("memory_retrieve", {"key": "ml-expert/metrics"})
        listed = await c.call_tool("memory_list", {"prefix": "ml-expert/"})
        found = await c.call_tool("memory_search", {"query": "acc"})
        deleted = await c.call_tool("memory_delete", {"key": "ml-expert/metrics"})
        return stored, got, listed, found, deleted

    stored, got, listed, found, deleted = call(tmp_path, steps)
    assert not stored.is_error and stored.structured_content["key"] == "ml-expert/metrics"
    assert got.structured_content["value"] == {"acc": 0.9}
    assert listed.structured_content["total"] == 1
    assert found.structured_content["hits"][0]["entry"]["key"] == "ml-expert/metrics"
    assert deleted.structured_content["deleted"] is True
    assert '"acc": 0.9' in got.content[0].text  # the same result as text for clients without structured content


def test_expected_errors_reach_the_client_and_the_server_keeps_serving(tmp_path: Path) -> None:
    async def steps(c: Client) -> Any:
        missing = await c.call_tool("memory_retrieve", {"key": "ml-expert/nothing"})
        bad = await c.call_tool("memory_store", {"key": "bad\nkey", "value": 1})
        no_run = await c.call_tool("get_run", {"run_id": "run_0000beef"})
        not_an_id = await c.call_tool("get_run", {"run_id": "run_missing"})
        schema = await c.call_tool("memory_list", {"limit": 0})
        ok = await c.call_tool("memory_store", {"key": "still", "value": "alive"})
        return missing, bad, no_run, not_an_id, schema, ok

    missing, bad, no_run, not_an_id, schema, ok = call(tmp_path, steps)
    assert missing.is_error and "No memory entry with key 'ml-expert/nothing'" in missing.content[0].text
    assert bad.is_error and "control characters" in bad.content[0].text
    assert no_run.is_error and "No run 'run_0000beef'" in no_run.content[0].text
    assert not_an_id.is_error and "run_id must be an id like 'run_5f2c9a1b'" in not_an_id.content[0].text
    assert schema.is_error and "limit" in schema.content[0].text
    assert not ok.is_error


def test_server_process_does_not_import_tensorflow(tmp_path: Path) -> None:
    code = (
        "import sys, anyio\n"
        "from pathlib import Path\n"
        "from mcp import Client\n"
        "from ml_expert.server.app import build_server\n"
        "from ml_expert.tools.settings import Settings\n"
        "async def main():\n"
        f"    async with Client(build_server(Settings.from_env(env={{}}, workspace=Path({str(tmp_path)!r})))) as c:\n"
        "        await c.list_tools()\n"
        "        await c.call_tool('memory_store', {'key': 'k', 'value': 1})\n"
        "        await c.call_tool('list_jobs', {})\n"
        "anyio.run(main)\n"
        "print('tensorflow' in sys.modules, 'keras' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip().splitlines()[-1] == "False False"


def _env(workspace: Path) -> dict[str, str]:
    return {**os.environ, "ML_EXPERT_WORKSPACE": str(workspace)}


def test_stdio_server_round_trip(tmp_path: Path) -> None:
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "ml_expert.server.cli", "serve"], env=_env(tmp_path)
    )

    async def main() -> Any:
        async with Client(params) as c:
            await c.call_tool("memory_store", {"key": "ml-expert/x", "value": [1, 2]})
            got = await c.call_tool("memory_retrieve", {"key": "ml-expert/x"})
            err = await c.call_tool("memory_retrieve", {"key": "absent"})
            return got, err

    got, err = anyio.run(main)
    assert got.structured_content["value"] == [1, 2]
    assert err.is_error and "No memory entry with key 'absent'" in err.content[0].text
    assert (tmp_path / ".ml-expert" / "memory.db").exists()


def test_http_server_round_trip(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "ml_expert.server.cli", "serve", "--transport", "http", "--port", str(port)],
        env=_env(tmp_path),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for_port(port)

        async def main() -> Any:
            async with Client(f"http://127.0.0.1:{port}/mcp") as c:
                await c.call_tool("memory_store", {"key": "via-http", "value": {"ok": True}})
                return await c.call_tool("memory_retrieve", {"key": "via-http"})

        got = anyio.run(main)
        assert got.structured_content["value"] == {"ok": True}
    finally:
        proc.terminate()
        proc.wait(10)


def test_list_tools_stays_compact(tmp_path: Path) -> None:
    import json

    tools = call(tmp_path, lambda c: c.list_tools()).tools
    chars = len(json.dumps([t.model_dump(exclude_none=True, by_alias=True) for t in tools]))
    assert chars / 4 < 7000, f"list_tools is {chars / 4:.0f} tokens"  # 21 tools, about 330 tokens each


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("ml-expert://runs/run_0000dead/report", "No run 'run_0000dead'"),
        ("ml-expert://runs/run_nope/report", "run_id must be an id like"),
        ("ml-expert://memory/default/ml-expert/none", "No memory entry with key 'ml-expert/none'"),
    ],
)
def test_missing_resources_say_what_is_missing(tmp_path: Path, uri: str, expected: str) -> None:
    async def steps(c: Client) -> Any:
        try:
            await c.read_resource(uri)
        except Exception as exc:
            return str(exc)
        return "no error"

    message = call(tmp_path, steps)
    assert expected in message, message


def broken_tool(ws: Workspace, n: int) -> Any:
    """A tool with a defect: it divides by its argument."""
    return 1 / n


def test_an_unexpected_error_reaches_the_client_with_its_name_and_the_server_keeps_answering(tmp_path: Path) -> None:
    """Errors other than ml-expert's own reached the client as a bare "Error executing tool X" (a path component
    longer than 255 bytes, a value the JSON encoder could not nest): now the client reads what failed."""
    from ml_expert.server.expose import expose

    server = server_for(tmp_path)
    expose(server, broken_tool)

    async def steps(c: Client) -> Any:
        broken = await c.call_tool("broken_tool", {"n": 0})
        long_name = await c.call_tool("analyze_data", {"path": "x" * 300 + ".csv"})
        alive = await c.call_tool("memory_store", {"key": "still-here", "value": 1})
        return broken, long_name, alive

    async def main() -> Any:
        async with Client(server) as client:
            return await steps(client)

    broken, long_name, alive = anyio.run(main)
    assert broken.is_error and "broken_tool failed with an unexpected ZeroDivisionError: division by zero" in (
        broken.content[0].text
    )
    assert long_name.is_error and "a name of 304 bytes" in long_name.content[0].text
    assert "at most 255 bytes per name" in long_name.content[0].text
    assert not alive.is_error
