"""The `ml-expert` command: `serve`, `memory …`, `run`, `demo`, `runs`, `jobs`, `report`.

Flags and ML_EXPERT_* environment variables become one frozen `Settings`; logs go to stderr
(stdout carries the stdio transport).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from importlib.metadata import version
from pathlib import Path
from typing import Any

from ml_expert.server.settings import Settings, limit_native_threads

EPILOG = "Environment: ML_EXPERT_WORKSPACE (workspace folder), ML_EXPERT_MAX_JOBS, ML_EXPERT_WAIT_SECONDS."


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--workspace",
        "-w",
        type=Path,
        help="Workspace folder: data paths resolve inside it; state lives in <workspace>/.ml-expert "
        "(default: $ML_EXPERT_WORKSPACE or the current directory).",
    )
    p.add_argument(
        "--allow-path",
        action="append",
        type=Path,
        default=None,
        metavar="DIR",
        help="Also allow reading data from DIR (repeatable).",
    )


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
    _common(serve)
    serve.add_argument("--transport", choices=["stdio", "http"], default="stdio", help="MCP transport.")
    serve.add_argument("--host", default="127.0.0.1", help="HTTP bind address (with --transport http).")
    serve.add_argument("--port", type=int, default=8765, help="HTTP port (with --transport http).")
    serve.add_argument("--max-jobs", type=int, help="Training jobs that may run at once (default 1).")
    serve.add_argument("--wait-seconds", type=float, help="Default wait of job tools before returning (45).")
    serve.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])

    mem = sub.add_parser("memory", help="Inspect and edit the memory agents stored.", epilog=EPILOG)
    msub = mem.add_subparsers(dest="memory_command", required=True, metavar="ACTION")
    specs: dict[str, tuple[str, list[tuple[str, dict[str, Any]]]]] = {
        "list": (
            "List entries.",
            [
                ("--prefix", {"help": "Only keys starting with this."}),
                ("--limit", {"type": int, "default": 50}),
                ("--offset", {"type": int, "default": 0}),
                ("--all-namespaces", {"action": "store_true", "help": "List every namespace."}),
            ],
        ),
        "get": ("Print one entry's value.", [("key", {"help": "e.g. ml-expert/metrics"})]),
        "store": (
            "Store a value.",
            [
                ("key", {}),
                ("value", {"help": "JSON (a bare word is stored as a string)."}),
                ("--ttl", {"type": float, "help": "Seconds until it expires."}),
                ("--tag", {"action": "append", "dest": "tags", "help": "Tag (repeatable)."}),
            ],
        ),
        "search": (
            "Full-text search.",
            [("query", {}), ("--limit", {"type": int, "default": 10}), ("--all-namespaces", {"action": "store_true"})],
        ),
        "delete": ("Delete one entry.", [("key", {})]),
        "stats": ("Entries per namespace and database size.", []),
        "export": (
            "Write entries as JSON lines (to stdout or --output).",
            [("--output", {"type": Path}), ("--all-namespaces", {"action": "store_true"})],
        ),
        "import": ("Read JSON lines written by export (file or - for stdin).", [("input", {})]),
    }
    for name, (help_text, args) in specs.items():
        p = msub.add_parser(name, help=help_text, description=help_text, epilog=EPILOG)
        _common(p)
        p.add_argument("--namespace", "-n", default="default", help="Namespace (default 'default').")
        p.add_argument("--json", action="store_true", help="Machine-readable JSON output.")
        for flag, kw in args:
            p.add_argument(flag, **kw)

    from ml_expert.server.cli_workflow import add_workflow_commands

    add_workflow_commands(sub, _common)
    return parser


def settings_from(args: argparse.Namespace) -> Settings:
    return Settings.from_env(
        workspace=getattr(args, "workspace", None),
        allow_paths=tuple(args.allow_path) if getattr(args, "allow_path", None) else None,
        max_jobs=getattr(args, "max_jobs", None),
        wait_seconds=getattr(args, "wait_seconds", None),
    )


def cmd_serve(args: argparse.Namespace) -> int:
    from ml_expert.server.app import build_server

    logging.basicConfig(
        level=args.log_level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    settings = settings_from(args)
    mcp = build_server(settings)
    logging.getLogger("ml_expert.server").info(
        "ml-expert serving workspace %s over %s", settings.workspace, args.transport
    )
    if args.transport == "http":
        mcp.run("streamable-http", host=args.host, port=args.port)
    else:
        mcp.run("stdio")
    return 0


def _print_table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(*columns)
    for r in rows:
        table.add_row(*[str(r.get(c, "")) for c in columns])
    Console().print(table)


def _short(value: Any, width: int = 70) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= width else text[: width - 1] + "…"


def cmd_memory(args: argparse.Namespace) -> int:
    from ml_expert.memory import MemoryStore

    settings = settings_from(args)
    store = MemoryStore(settings.workspace / ".ml-expert" / "memory.db")
    action, ns = args.memory_command, args.namespace
    out: Any
    if action == "list":
        page = store.list(
            namespace=None if args.all_namespaces else ns, prefix=args.prefix, limit=args.limit, offset=args.offset
        )
        if args.json:
            out = page.model_dump()
        else:
            rows = [{"namespace": e.namespace, "key": e.key, "value": _short(e.value)} for e in page.entries]
            _print_table(rows, ["namespace", "key", "value"])
            print(f"{len(page.entries)} of {page.total} entries")
            return 0
    elif action == "get":
        entry = store.retrieve(args.key, namespace=ns)
        out = entry.model_dump() if args.json else entry.value
    elif action == "store":
        try:
            value = json.loads(args.value)
        except json.JSONDecodeError:
            value = args.value
        out = store.store(args.key, value, namespace=ns, ttl=args.ttl, tags=args.tags).model_dump()
    elif action == "search":
        hits = store.search(args.query, namespace=None if args.all_namespaces else ns, limit=args.limit)
        if not args.json:
            rows = [
                {
                    "score": f"{h.score:.2f}",
                    "namespace": h.entry.namespace,
                    "key": h.entry.key,
                    "value": _short(h.entry.value, 60),
                }
                for h in hits
            ]
            _print_table(rows, ["score", "namespace", "key", "value"])
            return 0
        out = [h.model_dump() for h in hits]
    elif action == "delete":
        out = {"deleted": store.delete(args.key, namespace=ns), "key": args.key, "namespace": ns}
    elif action == "stats":
        out = store.stats().model_dump()
    elif action == "export":
        lines = (
            json.dumps(r, ensure_ascii=False) + "\n"
            for r in store.export_entries(namespace=None if args.all_namespaces else ns)
        )
        if args.output:
            with open(args.output, "w", encoding="utf-8") as f:
                n = sum(1 for line in lines if f.write(line))
            print(f"exported {n} entries to {args.output}", file=sys.stderr)
        else:
            for line in lines:
                sys.stdout.write(line)
        return 0
    else:  # import
        stream = sys.stdin if args.input == "-" else open(args.input, encoding="utf-8")  # noqa: SIM115
        with stream:
            records = (json.loads(line) for line in stream if line.strip())
            out = {"imported": store.import_entries(records)}
    print(json.dumps(out, indent=2, ensure_ascii=False, default=str))
    return 0


def main(argv: list[str] | None = None) -> int:
    from ml_expert.tools.errors import MLExpertError

    limit_native_threads()
    parser = build_parser()
    args = parser.parse_args(argv)
    from ml_expert.server.cli_workflow import COMMANDS

    handlers = {"serve": cmd_serve, "memory": cmd_memory, **COMMANDS}
    try:
        return handlers[args.command](args)
    except MLExpertError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
