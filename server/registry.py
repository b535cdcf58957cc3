"""Which tools the server exposes, with their annotations. One line per tool."""

from __future__ import annotations

from mcp.server.mcpserver import MCPServer

from ml_expert.server.app import expose
from ml_expert.tools import jobs, memory_tools, runs


def register_all(mcp: MCPServer) -> None:
    # memory (claude-flow v3 names)
    expose(mcp, memory_tools.memory_store, idempotent=True)
    expose(mcp, memory_tools.memory_retrieve, read_only=True)
    expose(mcp, memory_tools.memory_list, read_only=True)
    expose(mcp, memory_tools.memory_search, read_only=True)
    expose(mcp, memory_tools.memory_delete, destructive=True, idempotent=True)
    expose(mcp, memory_tools.memory_stats, read_only=True)
    # runs and jobs
    expose(mcp, runs.list_runs, read_only=True)
    expose(mcp, runs.get_run, read_only=True)
    expose(mcp, jobs.get_job, read_only=True)
    expose(mcp, jobs.list_jobs, read_only=True)
    expose(mcp, jobs.cancel_job, destructive=True, idempotent=True)
    expose(mcp, jobs.resume_job)
