"""Which tools the server exposes, with their annotations. One line per tool."""

from __future__ import annotations

from mcp.server.mcpserver import MCPServer

from ml_expert.server.app import expose
from ml_expert.server.resources import register_resources
from ml_expert.tools import (
    analysis,
    evaluation,
    jobs,
    memory_tools,
    packaging,
    preparation,
    runs,
    selection,
    training,
    workflow,
)


def register_all(mcp: MCPServer) -> None:
    # memory (claude-flow v3 names)
    expose(mcp, memory_tools.memory_store, idempotent=True, inline=True)
    expose(mcp, memory_tools.memory_retrieve, read_only=True, inline=True)
    expose(mcp, memory_tools.memory_list, read_only=True, inline=True)
    expose(mcp, memory_tools.memory_search, read_only=True, inline=True)
    expose(mcp, memory_tools.memory_delete, destructive=True, idempotent=True, inline=True)
    expose(mcp, memory_tools.memory_stats, read_only=True)
    # the workflow, phase by phase
    expose(mcp, analysis.analyze_data, read_only=True)  # reads the data; records only its own run and memory
    expose(mcp, preparation.prepare_data)
    expose(mcp, selection.recommend_architecture)
    expose(mcp, training.train)
    expose(mcp, evaluation.evaluate, read_only=True)  # reads the model; records only its report and memory
    expose(mcp, packaging.package)
    expose(mcp, workflow.run_workflow)
    # runs and jobs
    expose(mcp, runs.list_runs, read_only=True)
    expose(mcp, runs.get_run, read_only=True)
    expose(mcp, jobs.get_job, read_only=True)
    expose(mcp, jobs.list_jobs, read_only=True)
    expose(mcp, jobs.cancel_job, destructive=True, idempotent=True)
    expose(mcp, jobs.resume_job)
    register_resources(mcp)
