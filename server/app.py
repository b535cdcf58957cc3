"""MCP wiring: the `MCPServer`, its lifespan (workspace, store, job manager) and the server's instructions.

Tools are plain functions in `ml_expert.tools` whose first parameter is the `Workspace`;
`server.expose` registers each one (see its docstring) and `server.registry` lists them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from mcp.server.mcpserver import MCPServer

from ml_expert.server.registry import register_all
from ml_expert.tools.jobs.manager import JobManager
from ml_expert.tools.settings import Settings
from ml_expert.tools.workspace import Workspace

INSTRUCTIONS = """ml-expert develops ML models step by step. Workflow: analyze_data -> prepare_data ->
recommend_architecture -> train -> evaluate -> package (or run_workflow for all at once). Each step
returns a run_id/model_id for the next and stores its result in memory under ml-expert/<phase>
(read with memory_retrieve). Long steps run as jobs: follow with get_job."""


@dataclass
class AppContext:
    settings: Settings
    workspace: Workspace


def make_lifespan(settings: Settings) -> Callable[[MCPServer], Any]:
    @asynccontextmanager
    async def lifespan(_: MCPServer) -> AsyncIterator[AppContext]:
        ws = open_workspace(settings)
        try:
            yield AppContext(settings=settings, workspace=ws)
        finally:
            ws.jobs.stop()
            ws.close()

    return lifespan


def open_workspace(settings: Settings) -> Workspace:
    """The workspace with its store opened and a started job manager attached."""
    ws = Workspace(settings=settings)
    ws.store  # noqa: B018 - open and migrate now, not on the first call
    ws.jobs = JobManager(ws).start()
    return ws


def build_server(settings: Settings) -> MCPServer:
    """The ml-expert MCP server with every tool, resource and prompt registered."""
    mcp = MCPServer("ml-expert", instructions=INSTRUCTIONS, lifespan=make_lifespan(settings))
    register_all(mcp)
    return mcp
