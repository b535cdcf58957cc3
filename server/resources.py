"""MCP resources (run artifacts, memory entries) and the workflow prompt."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import anyio.to_thread
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ResourceNotFoundError
from mcp.server.mcpserver.resources import ResourceSecurity

from ml_expert.memory.errors import MLExpertError
from ml_expert.tools.artifacts import list_model_ids, model_dir
from ml_expert.tools.runs import get_run
from ml_expert.tools.workspace import Workspace

ARTIFACTS = {
    "report": ("evaluation_report.md", "text/markdown", "Evaluation report (the seed's sections + baseline)."),
    "history": ("training_history.json", "application/json", "Per-epoch loss, val_loss and metrics."),
    "curves": ("training_curves.png", "image/png", "Training curves: loss and main metric, train vs validation."),
    "confusion-matrix": ("confusion_matrix.png", "image/png", "Confusion matrix on the test split."),
    "model-card": ("deployment/model_card.md", "text/markdown", "Model card of the deployment package."),
    "importance": ("importance.json", "application/json", "Permutation importance of the raw columns (explain)."),
    "partial-dependence": ("partial_dependence.png", "image/png", "Partial dependence of the top 3 columns (explain)."),
}


def _ws(ctx: Context) -> Workspace:
    return ctx.request_context.lifespan_context.workspace


def _artifact(ws: Workspace, run_id: str, name: str) -> Path:
    try:
        get_run(ws, run_id)
    except MLExpertError as exc:
        raise ResourceNotFoundError(str(exc)) from exc
    filename = ARTIFACTS[name][0]
    path = ws.run_dir(run_id) / filename
    if not path.exists() and name == "model-card":  # a package written to a custom folder: use the model's card
        ids = list_model_ids(ws, run_id)
        path = model_dir(ws, run_id, ids[-1]) / filename if ids else path
    if not path.exists():
        raise ResourceNotFoundError(
            f"Run {run_id} has no {filename} yet. It is written by "
            + {
                "report": "evaluate",
                "confusion-matrix": "evaluate",
                "model-card": "package",
                "importance": "explain",
                "partial-dependence": "explain",
            }.get(name, "train")
            + "."
        )
    return path


def _register_artifact(mcp: MCPServer, name: str) -> None:
    _, mime, description = ARTIFACTS[name]

    def read_file(ws: Workspace, run_id: str) -> str | bytes:
        path = _artifact(ws, run_id, name)
        return path.read_bytes() if mime == "image/png" else path.read_text(encoding="utf-8")

    async def read(run_id: str, ctx: Context) -> str | bytes:
        return await anyio.to_thread.run_sync(read_file, _ws(ctx), run_id)  # the event loop never waits on disk/db

    read.__name__ = f"run_{name.replace('-', '_')}"
    mcp.resource(f"ml-expert://runs/{{run_id}}/{name}", name=read.__name__, description=description, mime_type=mime)(
        read
    )


PROMPT = """You are developing an ML model for the dataset `{dataset}` (target `{target}`) with the ml-expert
tools. Work phase by phase and read each phase's memory key before the next:

1. analyze_data(path="{dataset}", target="{target}") -> run_id. Read the warnings (identifiers, leakage
   suspects, imbalance) and decide what to drop. Memory: ml-expert/data-analysis.
2. prepare_data(run_id=..., drop_columns=[leakage suspects]) -> split sizes, features. Memory:
   ml-expert/prepared-data.
3. recommend_architecture(run_id=..., probe_seconds=30) -> ranked candidates with measured validation
   scores. Memory: ml-expert/task-analysis, ml-expert/architecture.
4. train(run_id=..., architecture=<recommended>) -> model_id. If status is 'running', poll get_job.
   Check learned=true and the notes. Memory: ml-expert/training.
5. evaluate(run_id=..., target={{"metric": "...", "min": ...}}) -> test metrics vs the dummy baseline,
   overfitting verdict, evaluation_report.md. Memory: ml-expert/metrics. Stop and report if the model
   does not beat the baseline.
6. package(run_id=...) -> deployment/ verified in a fresh process. Memory: ml-expert/deployment.
7. predict(run_id=..., path=<new rows>) -> predictions file, refused rows, drift warnings. Memory:
   ml-expert/predictions. explain(run_id=...) -> the columns that matter. Memory: ml-expert/explanations.

Report the test metric against the baseline and where the package is. run_workflow does all six at once."""


def register_resources(mcp: MCPServer) -> None:
    for name in ARTIFACTS:
        _register_artifact(mcp, name)

    @mcp.resource(
        "ml-expert://memory/{namespace}/{+key}",
        name="memory_entry",
        description="A memory entry's JSON value, e.g. ml-expert://memory/default/ml-expert/metrics.",
        mime_type="application/json",
        security=ResourceSecurity(exempt_params={"key"}),
    )
    async def memory_entry(namespace: str, key: str, ctx: Context) -> str:
        retrieve = functools.partial(_ws(ctx).store.retrieve, key, namespace=namespace)
        try:
            entry = await anyio.to_thread.run_sync(retrieve)
        except MLExpertError as exc:
            raise ResourceNotFoundError(str(exc)) from exc
        return json.dumps(entry.value, indent=2)

    @mcp.prompt(name="ml_expert_workflow", description="Walk through the ML Expert phases for a dataset and target.")
    def ml_expert_workflow(dataset: str, target: str) -> str:
        return PROMPT.format(dataset=dataset, target=target)
