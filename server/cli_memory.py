"""`ml-expert memory list|get|store|search|delete|stats|export|import` — the memory from a terminal."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ml_expert.memory import MemoryStore
from ml_expert.memory.errors import InvalidInputError, NotFoundError
from ml_expert.server.cli_common import EPILOG, add_common, print_table, settings_from, short

ACTIONS: dict[str, tuple[str, list[tuple[str, dict[str, Any]]]]] = {
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
        "Write one namespace's entries (--all-namespaces: every one) as JSON lines (to stdout or --output).",
        [("--output", {"type": Path}), ("--all-namespaces", {"action": "store_true"})],
    ),
    "import": (
        "Read JSON lines written by export (file or - for stdin); all or nothing.",
        [("input", {"help": "A .jsonl file, or - for standard input."})],
    ),
}


def add_memory_commands(sub: Any) -> None:
    mem = sub.add_parser("memory", help="Inspect and edit the memory agents stored.", epilog=EPILOG)
    msub = mem.add_subparsers(dest="memory_command", required=True, metavar="ACTION")
    for name, (help_text, args) in ACTIONS.items():
        p = msub.add_parser(name, help=help_text, description=help_text, epilog=EPILOG)
        add_common(p)
        p.add_argument("--namespace", "-n", default="default", help="Namespace (default 'default').")
        p.add_argument("--json", action="store_true", help="Machine-readable JSON output.")
        for flag, kw in args:
            p.add_argument(flag, **kw)


def _scope(args: argparse.Namespace) -> str | None:
    return None if getattr(args, "all_namespaces", False) else args.namespace


def _list(store: MemoryStore, args: argparse.Namespace) -> Any:
    page = store.list(namespace=_scope(args), prefix=args.prefix, limit=args.limit, offset=args.offset)
    if args.json:
        return page.model_dump()
    rows = [{"namespace": e.namespace, "key": e.key, "value": short(e.value)} for e in page.entries]
    print_table(rows, ["namespace", "key", "value"])
    print(f"{len(page.entries)} of {page.total} entries")
    return None


def _get(store: MemoryStore, args: argparse.Namespace) -> Any:
    entry = store.retrieve(args.key, namespace=args.namespace)
    return entry.model_dump() if args.json else entry.value


def _store(store: MemoryStore, args: argparse.Namespace) -> Any:
    try:
        value = json.loads(args.value)
    except json.JSONDecodeError:
        value = args.value
    return store.store(args.key, value, namespace=args.namespace, ttl=args.ttl, tags=args.tags).model_dump()


def _search(store: MemoryStore, args: argparse.Namespace) -> Any:
    hits = store.search(args.query, namespace=_scope(args), limit=args.limit)
    if args.json:
        return [h.model_dump() for h in hits]
    rows = [
        {
            "score": f"{h.score:.2f}",
            "namespace": h.entry.namespace,
            "key": h.entry.key,
            "value": short(h.entry.value, 60),
        }
        for h in hits
    ]
    print_table(rows, ["score", "namespace", "key", "value"])
    return None


def _delete(store: MemoryStore, args: argparse.Namespace) -> Any:
    return {"deleted": store.delete(args.key, namespace=args.namespace), "key": args.key, "namespace": args.namespace}


def _stats(store: MemoryStore, args: argparse.Namespace) -> Any:
    return store.stats().model_dump()


def _export(store: MemoryStore, args: argparse.Namespace) -> Any:
    lines = (json.dumps(r, ensure_ascii=False) + "\n" for r in store.export_entries(namespace=_scope(args)))
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            n = sum(1 for line in lines if f.write(line))
        print(f"exported {n} entries to {args.output}", file=sys.stderr)
    else:
        for line in lines:
            sys.stdout.write(line)
    scope = _scope(args)
    others = {ns: k for ns, k in store.stats().namespaces.items() if scope is not None and ns != scope}
    if others:  # the user may think the whole memory moved
        print(
            f"only namespace {scope!r} was exported; {sum(others.values())} entries of {sorted(others)[:5]} were "
            "not (add --all-namespaces for every namespace)",
            file=sys.stderr,
        )
    return None


def read_jsonl(source: str) -> list[Any]:
    """Every line of a JSON-lines file (or stdin for '-'), parsed; a clear error names the first bad line."""
    try:
        stream = sys.stdin if source == "-" else open(source, encoding="utf-8")  # noqa: SIM115
    except FileNotFoundError as exc:
        raise NotFoundError(
            f"No file {source!r} to import. Pass the path of a file written by `memory export`."
        ) from exc
    except OSError as exc:
        raise InvalidInputError(f"Cannot read {source!r}: {exc}.") from exc
    records = []
    with stream:
        for number, line in enumerate(stream, 1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise InvalidInputError(
                    f"Line {number} of {source} is not valid JSON ({exc.msg}); nothing was imported. Fix the line "
                    "or re-export the memory."
                ) from exc
    return records


def _import(store: MemoryStore, args: argparse.Namespace) -> Any:
    return {"imported": store.import_entries(read_jsonl(args.input))}


HANDLERS: dict[str, Callable[[MemoryStore, argparse.Namespace], Any]] = {
    "list": _list,
    "get": _get,
    "store": _store,
    "search": _search,
    "delete": _delete,
    "stats": _stats,
    "export": _export,
    "import": _import,
}


def cmd_memory(args: argparse.Namespace) -> int:
    store = MemoryStore(settings_from(args).workspace / ".ml-expert" / "memory.db")
    try:
        out = HANDLERS[args.memory_command](store, args)
    finally:
        store.close()
    if out is not None:
        print(json.dumps(out, indent=2, ensure_ascii=False, default=str))
    return 0
