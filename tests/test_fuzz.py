"""A property-based fuzz of every tool through a real MCP client: random parameters (paths that walk out,
control characters, ids of the wrong kind, nested JSON) always end in a result or an actionable error, and
leave the user's files and memory as they were."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import anyio
import pytest
from conftest import sklearn_frame, snapshot
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mcp import Client

from ml_expert.memory import MemoryStore
from ml_expert.server.app import build_server
from ml_expert.tools.data.analyze import analyze_data
from ml_expert.tools.data.prepare import prepare_data
from ml_expert.tools.evaluation.evaluate import evaluate
from ml_expert.tools.packaging.package import package
from ml_expert.tools.prediction.explain import explain
from ml_expert.tools.prediction.predict import predict
from ml_expert.tools.selection.recommend import recommend_architecture
from ml_expert.tools.settings import Settings
from ml_expert.tools.training.train import train
from ml_expert.tools.workflow import run_workflow

# -- fuzz: every tool, random parameters ------------------------------------------------------------------------------

TRICKY = [
    "../../etc/passwd", "/etc/passwd", ".", "..", ".ml-expert/memory.db", "data.csv", "", "a\x00b", "run_00000000",
    "mdl_x/../../x", "ml-expert/metrics", "~", "*", "%", "\n", "' OR 1=1 --", "data.csv/..",
]  # fmt: skip
JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**9), 10**9)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
    | st.sampled_from(TRICKY),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)


def _tool_functions() -> dict[str, Any]:
    from ml_expert.tools import memory_tools, runs
    from ml_expert.tools.jobs import tools as jobs

    functions = [analyze_data, prepare_data, recommend_architecture, train, evaluate, package, run_workflow]
    functions += [
        getattr(memory_tools, f"memory_{n}") for n in ("store", "retrieve", "list", "search", "delete", "stats")
    ]
    functions += [runs.list_runs, runs.get_run, jobs.get_job, jobs.list_jobs, jobs.cancel_job, jobs.resume_job]
    functions += [predict, explain]
    return {f.__name__: f for f in functions}


def _arguments(fn: Any) -> st.SearchStrategy[dict[str, Any]]:
    """Random values for a tool's own parameters: the required ones always, the others sometimes."""
    import inspect

    params = [p for p in inspect.signature(fn).parameters.values() if p.name not in ("ws", "report")]
    required = {p.name: VALUE for p in params if p.default is inspect.Parameter.empty}
    optional = {p.name: VALUE for p in params if p.default is not inspect.Parameter.empty}
    return st.fixed_dictionaries(required, optional=optional)


# plain strings and numbers most of the time (they pass the schema and reach the tool's own checks)
VALUE = st.one_of(st.sampled_from(TRICKY), st.text(max_size=20), st.integers(-5, 1000), JSON)
TOOLS = _tool_functions()
JOB_TOOLS = ("train", "evaluate", "package", "run_workflow", "resume_job", "predict", "explain")
CALL = st.sampled_from(sorted(TOOLS)).flatmap(lambda name: _arguments(TOOLS[name]).map(lambda args: (name, args)))


@pytest.fixture(scope="module")
def fuzz_workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fuzz")
    sklearn_frame("wine").to_csv(root / "data.csv", index=False)
    (root / "notes.txt").write_text("keep me\n")
    store = MemoryStore(root / ".ml-expert" / "memory.db")
    for i in range(5):
        store.store(f"sentinel/{i}", {"i": i}, namespace="sentinel", tags=["keep"])
    store.close()
    return root


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(calls=st.lists(CALL, min_size=1, max_size=4))
def test_fuzz_every_tool_ends_in_a_result_or_an_actionable_error(
    fuzz_workspace: Path, calls: list[tuple[str, dict[str, Any]]]
) -> None:
    root = fuzz_workspace
    files_before = snapshot(root)

    async def session() -> list[Any]:
        settings_ = Settings.from_env(env={}, workspace=root, wait_seconds=0)
        async with Client(build_server(settings_)) as c:
            results = []
            for name, args in calls:
                results.append(
                    (
                        name,
                        args,
                        await c.call_tool(
                            name,
                            {**args, "wait_seconds": 0}
                            if name
                            in ("train", "evaluate", "package", "run_workflow", "resume_job", "predict", "explain")
                            else args,
                        ),
                    )
                )
            alive = await c.call_tool("memory_retrieve", {"key": "sentinel/0", "namespace": "sentinel"})
            return [*results, ("alive", {}, alive)]

    for name, args, result in anyio.run(session):
        if result.is_error:
            text = result.content[0].text
            if os.environ.get("FUZZ_SHOW"):
                print("ERR", name, text[:150].replace("\n", " "))
            assert len(text) > 30 and text.strip() != f"Error executing tool {name}", (name, args, text)
    assert snapshot(root) == files_before
    store = MemoryStore(root / ".ml-expert" / "memory.db")
    try:
        entries = store.list(namespace="sentinel", limit=10).entries
        assert [(e.key, e.value, e.tags) for e in entries] == [(f"sentinel/{i}", {"i": i}, ["keep"]) for i in range(5)]
    finally:
        store.close()
