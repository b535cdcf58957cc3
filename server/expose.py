"""Registering a tools/ function as an MCP tool: `expose`.

It hides `ws` (and the optional `report` progress callback) from the schema, runs the function in a
worker thread (or inline for millisecond calls), forwards progress as MCP progress notifications,
and turns `MLExpertError` into `ToolError` — the one exception whose message reaches the client.
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
import typing
from collections.abc import Callable
from typing import Any

import anyio
import anyio.from_thread
import anyio.to_thread
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import CallToolResult, TextContent, ToolAnnotations

from ml_expert.memory.database import lock_wait
from ml_expert.memory.errors import BusyError, MLExpertError
from ml_expert.tools.workspace import Workspace

log = logging.getLogger("ml_expert.server")
HIDDEN_PARAMS = ("ws", "report")
BUSY_WAIT_SECONDS = 5.0


def _progress_forwarder(ctx: Context) -> Callable[[dict[str, Any]], None]:
    """A callback for tool code running in a thread that sends MCP progress notifications."""

    last = {"step": 0.0}

    def report(progress: dict[str, Any]) -> None:
        step = max(last["step"], float(progress.get("step") or 0))  # MCP progress must never decrease
        last["step"] = step
        total = progress.get("total")
        message = progress.get("message")
        try:
            anyio.from_thread.run(functools.partial(ctx.report_progress, step, total, message))
        except Exception:  # a client that went away must not break the tool
            log.debug("progress notification failed", exc_info=True)

    return report


async def _inline(call: Callable[[], Any]) -> Any:
    """Run a millisecond call on the event loop without ever blocking it: when the database is busy the call
    moves to a thread and waits there, at most BUSY_WAIT_SECONDS, before it fails with a clear 'retry'."""
    try:
        with lock_wait(0):
            return call()
    except BusyError:
        return await anyio.to_thread.run_sync(functools.partial(_waiting, call))


def _waiting(call: Callable[[], Any]) -> Any:
    with lock_wait(BUSY_WAIT_SECONDS):
        return call()


def expose(
    mcp: MCPServer,
    fn: Callable[..., Any],
    *,
    read_only: bool = False,
    destructive: bool = False,
    idempotent: bool = False,
    inline: bool = False,
) -> None:
    """Register a tools/ function as an MCP tool with honest annotations.

    inline=True runs it on the event loop instead of a worker thread: for calls of about a millisecond
    (memory operations), where the thread hand-off costs as much as the work.
    """
    hints = typing.get_type_hints(fn, include_extras=True)
    sig = inspect.signature(fn)
    params = [p.replace(annotation=hints[p.name]) for p in sig.parameters.values() if p.name not in HIDDEN_PARAMS]
    takes_report = "report" in sig.parameters
    params.append(inspect.Parameter("ctx", inspect.Parameter.KEYWORD_ONLY, annotation=Context))

    async def tool(**kwargs: Any) -> Any:
        ctx: Context = kwargs.pop("ctx")
        ws: Workspace = ctx.request_context.lifespan_context.workspace
        if takes_report:
            kwargs["report"] = _progress_forwarder(ctx)
        try:
            call = functools.partial(fn, ws, **kwargs)
            result = await (_inline(call) if inline else anyio.to_thread.run_sync(call))
            data = result.model_dump(mode="json")
        except MLExpertError as exc:
            raise ToolError(str(exc)) from exc
        except Exception as exc:  # a defect, not bad input: the client still gets its name, the log the traceback
            log.exception("%s failed", fn.__name__)
            raise ToolError(
                f"{fn.__name__} failed with an unexpected {type(exc).__name__}: {str(exc)[:500]}. The server keeps "
                "running; its log has the traceback."
            ) from exc
        return CallToolResult(content=[TextContent(type="text", text=json.dumps(data))], structured_content=data)

    tool.__name__ = fn.__name__
    tool.__doc__ = inspect.getdoc(fn)
    tool.__signature__ = sig.replace(parameters=params, return_annotation=CallToolResult)  # type: ignore[attr-defined]
    tool.__annotations__ = {p.name: p.annotation for p in params} | {"return": CallToolResult}
    # Results are structured content without an advertised outputSchema: the schemas of all results
    # would triple the size of list_tools, which every agent pays for in its context.
    mcp.add_tool(
        tool,
        structured_output=False,
        annotations=ToolAnnotations(
            read_only_hint=read_only,
            destructive_hint=destructive,
            idempotent_hint=idempotent or read_only,
            open_world_hint=False,
        ),
    )
    registered = mcp._tool_manager.get_tool(fn.__name__)  # the SDK has no public setter for the schema
    registered.parameters = compact_schema(registered.parameters)


def compact_schema(schema: Any) -> Any:
    """A shorter schema that accepts the same calls: no auto-generated titles (they repeat the name), no
    `default: null`, and `anyOf: [T, null]` of an optional parameter shown as T (omitting it is the null)."""
    if isinstance(schema, list):
        return [compact_schema(v) for v in schema]
    if not isinstance(schema, dict):
        return schema
    out = {
        k: compact_schema(v)
        for k, v in schema.items()
        if not (k == "title" and isinstance(v, str)) and not (k == "default" and v is None)
    }
    options = out.get("anyOf")
    if isinstance(options, list) and len(options) == 2 and {"type": "null"} in options:
        inner = next(o for o in options if o != {"type": "null"})
        out.pop("anyOf")
        out = {**inner, **out}
    return out
