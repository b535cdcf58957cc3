"""Which tools the server exposes, with their annotations. One line per tool."""

from __future__ import annotations

from mcp.server.mcpserver import MCPServer


def register_all(mcp: MCPServer) -> None:
    """Register every tool, resource and prompt. The tool modules are imported here, not at the top: the server
    runs this in a thread while it answers the MCP handshake (see `app.Startup`)."""
    from ml_expert.server.expose import expose
    from ml_expert.server.resources import register_resources
    from ml_expert.tools import memory_tools, runs, workflow
    from ml_expert.tools.data import analyze, prepare
    from ml_expert.tools.evaluation import evaluate
    from ml_expert.tools.jobs import tools as jobs
    from ml_expert.tools.packaging import package
    from ml_expert.tools.prediction import explain, predict
    from ml_expert.tools.selection import recommend
    from ml_expert.tools.training import train

    # memory (claude-flow v3 names)
    expose(mcp, memory_tools.memory_store, idempotent=True, inline=True)
    expose(mcp, memory_tools.memory_retrieve, read_only=True, inline=True)
    expose(mcp, memory_tools.memory_list, read_only=True, inline=True)
    expose(mcp, memory_tools.memory_search, read_only=True)  # full-text search: in a thread, never on the loop
    expose(mcp, memory_tools.memory_delete, destructive=True, idempotent=True, inline=True)
    expose(mcp, memory_tools.memory_stats, read_only=True)
    # the workflow, phase by phase
    expose(mcp, analyze.analyze_data, read_only=True)  # reads the data; records only its own run and memory
    expose(mcp, prepare.prepare_data)
    expose(mcp, recommend.recommend_architecture)
    expose(mcp, train.train)
    expose(mcp, evaluate.evaluate, read_only=True)  # reads the model; records only its report and memory
    expose(mcp, package.package)
    expose(mcp, workflow.run_workflow)
    # after training
    expose(mcp, predict.predict)  # writes a new predictions file, never over an existing one
    expose(mcp, explain.explain, read_only=True)  # reads the model; records only its explanations and memory
    # runs and jobs
    expose(mcp, runs.list_runs, read_only=True)
    expose(mcp, runs.get_run, read_only=True)
    expose(mcp, jobs.get_job, read_only=True)
    expose(mcp, jobs.list_jobs, read_only=True)
    expose(mcp, jobs.cancel_job, destructive=True, idempotent=True)
    expose(mcp, jobs.resume_job)
    register_resources(mcp)
