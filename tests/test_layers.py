"""The house's layering, read from the imports of every module: no package cycles, phases import only downward,
`tools/core` (what every phase shares) imports no phase, `memory` imports nothing from `tools`, and `tools` never
imports `mcp`."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PHASES = ["data", "selection", "training", "evaluation", "packaging", "prediction"]  # the workflow's order
SHARED = {"core", "artifacts", "runs", "workspace", "settings", "jobs"}  # below every phase


def _unit(module: str) -> str:
    """The layering unit of a module: `tools.<package or module>`, or a top-level folder (`memory`, `server`)."""
    parts = module.split(".")[1:]
    if not parts:
        return "ml_expert"
    if parts[0] != "tools" or len(parts) == 1:
        return parts[0]
    return f"tools.{parts[1]}"


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(("ml_expert", *parts[:-1])) if parts[-1] == "__init__" else ".".join(("ml_expert", *parts))


def imports() -> dict[str, set[tuple[str, str]]]:
    """unit -> {(imported unit, importing file)} for every `ml_expert` import, module level or inside functions."""
    found: dict[str, set[tuple[str, str]]] = defaultdict(set)
    for folder in ("server", "tools", "memory"):
        for path in (ROOT / folder).rglob("*.py"):
            source = _unit(_module_name(path))
            for node in ast.walk(ast.parse(path.read_text())):
                names: list[str] = []
                if isinstance(node, ast.ImportFrom) and node.module:
                    names = [node.module] + (
                        [f"{node.module}.{a.name}" for a in node.names] if node.module == "ml_expert.tools" else []
                    )
                elif isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                for name in names:
                    if name.startswith("mcp") and source.startswith("tools"):
                        found[source].add(("mcp", str(path.relative_to(ROOT))))
                    if name.startswith("ml_expert.") and name != "ml_expert.tools" and _unit(name) != source:
                        found[source].add((_unit(name), str(path.relative_to(ROOT))))
    return found


def test_no_package_cycles() -> None:
    graph = {unit: {target for target, _ in edges} for unit, edges in imports().items()}
    cycles = []

    def visit(unit: str, path: list[str]) -> None:
        for target in sorted(graph.get(unit, ())):
            if target in path:
                cycles.append([*path[path.index(target) :], target])
            elif len(path) < 12:
                visit(target, [*path, target])

    for unit in graph:
        visit(unit, [unit])
    assert not cycles, f"package cycles: {cycles[:5]}"


def test_phases_import_only_downward_and_core_imports_no_phase() -> None:
    bad = []
    for unit, edges in imports().items():
        name = unit.removeprefix("tools.")
        for target, where in edges:
            target_name = target.removeprefix("tools.")
            if name in PHASES and target_name in PHASES and PHASES.index(target_name) > PHASES.index(name):
                bad.append(f"{where}: phase {name} imports the later phase {target_name}")
            if name in SHARED and target_name in PHASES:
                bad.append(f"{where}: shared {name} imports the phase {target_name}")
            if unit == "memory" and target.startswith("tools"):
                bad.append(f"{where}: memory imports {target}")
            if target == "mcp":
                bad.append(f"{where}: tools import mcp")
    assert not bad, "\n".join(sorted(bad))
