"""MCP wiring: the `MCPServer`, its lifespan (workspace, store, job manager) and the server's instructions.

Tools are plain functions in `ml_expert.tools` whose first parameter is the `Workspace`;
`server.expose` registers each one (see its docstring) and `server.registry` lists them.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio.to_thread
from mcp.server.mcpserver import MCPServer

from ml_expert.server.registry import register_all
from ml_expert.tools.jobs.manager import JobManager
from ml_expert.tools.settings import Settings
from ml_expert.tools.workspace import Workspace

log = logging.getLogger("ml_expert.server")

INSTRUCTIONS = """ml-expert develops ML models step by step. Workflow: analyze_data -> prepare_data ->
recommend_architecture -> train -> evaluate -> package (or run_workflow for all at once), then predict
(new rows, with drift warnings) and explain. Each step
returns a run_id/model_id for the next and stores its result in memory under ml-expert/<phase>
(read with memory_retrieve). Long steps run as jobs: follow with get_job."""


@dataclass
class AppContext:
    settings: Settings
    workspace: Workspace


class Startup:
    """Work that must finish before the first tool call but not before the MCP handshake: importing the tool
    modules and registering the tools, opening (and, for a new workspace, migrating) the store, starting the job
    manager. Each runs in a thread from the moment the server is built; `gate`, a server middleware, holds every
    request except the handshake's own until they are done, so a client connects as fast as the SDK allows and
    its first list_tools still sees every tool."""

    HANDSHAKE = ("initialize", "server/discover", "notifications/initialized", "ping", "notifications/cancelled")

    def __init__(self) -> None:
        self._threads: list[threading.Thread] = []
        self._errors: list[BaseException] = []

    def start(self, name: str, work: Callable[[], Any]) -> None:
        def run() -> None:
            try:
                work()
            except BaseException as exc:  # reported to the first request, which then fails clearly
                log.exception("start-up step %s failed", name)
                self._errors.append(exc)

        thread = threading.Thread(target=run, name=f"ml-expert-{name}", daemon=True)
        self._threads.append(thread)
        thread.start()

    def join(self) -> None:
        for thread in list(self._threads):
            thread.join()
        if self._errors:
            raise RuntimeError(f"ml-expert could not start: {self._errors[0]}") from self._errors[0]

    async def gate(self, ctx: Any, call_next: Any) -> Any:
        if ctx.method not in self.HANDSHAKE and any(t.is_alive() for t in self._threads):
            await anyio.to_thread.run_sync(self.join)
        elif self._errors and ctx.method not in self.HANDSHAKE:
            self.join()
        return await call_next(ctx)


def make_lifespan(settings: Settings, startup: Startup) -> Callable[[MCPServer], Any]:
    @asynccontextmanager
    async def lifespan(_: MCPServer) -> AsyncIterator[AppContext]:
        ws = Workspace(settings=settings)
        startup.start("workspace", functools.partial(open_workspace, ws))
        try:
            yield AppContext(settings=settings, workspace=ws)
        finally:
            await anyio.to_thread.run_sync(_close, startup, ws)

    return lifespan


def _close(startup: Startup, ws: Workspace) -> None:
    try:
        startup.join()
    finally:
        if ws.jobs is not None:
            ws.jobs.stop()
        ws.close()


def open_workspace(ws: Workspace) -> Workspace:
    """Open (and migrate) the workspace's store and attach a started job manager."""
    ws.store  # noqa: B018 - open and migrate now, not on the first call
    ws.jobs = JobManager(ws).start()
    return ws


def build_server(settings: Settings) -> MCPServer:
    """The ml-expert MCP server; its tools, resources and prompt register in a thread (see `Startup`)."""
    startup = Startup()
    mcp = MCPServer("ml-expert", instructions=INSTRUCTIONS, lifespan=make_lifespan(settings, startup))
    mcp.middleware.append(startup.gate)
    startup.start("tools", functools.partial(register_all, mcp))
    return mcp
