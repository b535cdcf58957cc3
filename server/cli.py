"""The `ml-expert` command: `serve`, `memory …`, `run`, `demo`, `runs`, `jobs`, `report`, `predict`, `explain`,
`cancel`.

Flags and ML_EXPERT_* environment variables become one frozen `Settings`; logs go to stderr
(stdout carries the stdio transport).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from importlib.metadata import version

from ml_expert.memory.errors import InvalidInputError, MLExpertError, NotFoundError
from ml_expert.server.cli_common import EPILOG, add_common, settings_from
from ml_expert.server.cli_memory import add_memory_commands, cmd_memory
from ml_expert.server.cli_use import COMMANDS as USE_COMMANDS
from ml_expert.server.cli_use import add_use_commands
from ml_expert.server.cli_workflow import COMMANDS, add_workflow_commands
from ml_expert.tools.settings import limit_native_threads


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ml-expert",
        description="ML Expert as an MCP server: analyze, prepare, recommend, train, evaluate and package ML "
        "models, with a namespaced SQLite memory shared by agents.",
        epilog=EPILOG,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {version('ml-expert')}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="Run the MCP server (stdio by default).", epilog=EPILOG)
    add_common(serve)
    serve.add_argument("--transport", choices=["stdio", "http"], default="stdio", help="MCP transport.")
    serve.add_argument("--host", default="127.0.0.1", help="HTTP bind address (with --transport http).")
    serve.add_argument("--port", type=int, default=8765, help="HTTP port (with --transport http).")
    serve.add_argument(
        "--token",
        default=os.environ.get("ML_EXPERT_TOKEN"),
        help="Bearer token HTTP clients must send (required on a non-loopback --host; default $ML_EXPERT_TOKEN).",
    )
    serve.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="NAME",
        help="Also accept this Host/Origin name over HTTP, e.g. behind a reverse proxy (repeatable).",
    )
    serve.add_argument("--max-jobs", type=int, help="Training jobs that may run at once (default 1).")
    serve.add_argument(
        "--dask-scheduler",
        metavar="ADDRESS",
        help="Send the auto search's fold fits to this dask.distributed scheduler, e.g. tcp://HOST:8786 "
        "(default $ML_EXPERT_DASK_SCHEDULER; needs pip install 'ml-expert[dask]'). See docs/distributed.md.",
    )
    serve.add_argument("--wait-seconds", type=float, help="Default wait of job tools before returning (45).")
    serve.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])

    add_memory_commands(sub)
    add_workflow_commands(sub, add_common)
    add_use_commands(sub, add_common)
    return parser


def cmd_serve(args: argparse.Namespace) -> int:
    from ml_expert.server.app import build_server  # the MCP SDK: only for serve

    if args.transport == "http":
        from ml_expert.server.http import require_token

        require_token(args.host, args.token)
    logging.basicConfig(
        level=args.log_level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    settings = settings_from(args)
    mcp = build_server(settings)
    logging.getLogger("ml_expert.server").info(
        "ml-expert serving workspace %s over %s", settings.workspace, args.transport
    )
    if args.transport == "http":
        from ml_expert.server.http import serve_http

        serve_http(mcp, args.host, args.port, args.token, args.allow_host)
    else:
        mcp.run("stdio")
    return 0


READS = {"runs", "jobs", "report", "predict", "explain", "cancel", "memory"}  # commands that read what is there
MEMORY_WRITES = {"store", "delete", "import"}


def _check_workspace(args: argparse.Namespace) -> None:
    """A workspace that is a file, or a command that only reads a workspace whose folder does not exist (a typo in
    -w), is an error: it created an empty workspace and answered "0 of 0 runs"."""
    if not hasattr(args, "workspace"):
        return
    root = settings_from(args).workspace
    if root.exists() and not root.is_dir():
        raise InvalidInputError(f"The workspace {root} is a file; pass a folder with -w (or ML_EXPERT_WORKSPACE).")
    reads = args.command in READS and getattr(args, "memory_command", None) not in MEMORY_WRITES
    if reads and not root.exists():
        raise NotFoundError(
            f"No workspace at {root}: the folder does not exist. Check -w (or ML_EXPERT_WORKSPACE); a workspace is "
            "the folder where `ml-expert run` or the server was started."
        )


def main(argv: list[str] | None = None) -> int:
    limit_native_threads()
    parser = build_parser()
    args = parser.parse_args(argv)
    handlers = {"serve": cmd_serve, "memory": cmd_memory, **COMMANDS, **USE_COMMANDS}
    try:
        _check_workspace(args)
        return handlers[args.command](args)
    except MLExpertError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `ml-expert memory export | head -1`: the reader has what it wanted; no traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python's flush at exit would fail again
        return 141  # as a shell reports a command ended by SIGPIPE


if __name__ == "__main__":
    sys.exit(main())
