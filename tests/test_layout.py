"""The architecture's edges, checked on the source: the agent package never imports the lab,
and its modules import each other without a cycle (lazy and type-only imports included)."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from typing import Dict, List, Set

from conftest import AGENT_DIR

CONNECTOR = os.path.join(AGENT_DIR, "connector")


def imports(path: str) -> List[ast.ImportFrom]:
    with open(path, encoding="utf-8") as handle:
        tree = ast.parse(handle.read(), path)
    found: List[ast.ImportFrom] = []
    for node in ast.walk(tree):  # every import, also inside functions and TYPE_CHECKING
        if isinstance(node, ast.ImportFrom):
            found.append(node)
        elif isinstance(node, ast.Import):
            found += [ast.ImportFrom(module=a.name, names=[], level=0) for a in node.names]
    return found


def modules() -> Dict[str, str]:
    return {name[:-3]: os.path.join(CONNECTOR, name) for name in sorted(os.listdir(CONNECTOR))
            if name.endswith(".py")}


def test_the_agent_package_never_imports_the_lab() -> None:
    offenders = [f"{name}: {node.module}" for name, path in modules().items()
                 for node in imports(path)
                 if node.level == 0 and (node.module or "").split(".")[0] == "lab"]
    assert offenders == []


def test_the_agent_modules_import_each_other_without_a_cycle() -> None:
    graph: Dict[str, Set[str]] = {}
    for name, path in modules().items():
        deps: Set[str] = set()
        for node in imports(path):
            if node.level == 1:
                deps |= {node.module.split(".")[0]} if node.module else \
                    {a.name for a in node.names}
            elif (node.module or "").startswith("connector."):
                deps.add(node.module.split(".")[1])
        graph[name] = deps - {name}
    # Depth-first search with colours: a grey module met again closes a cycle.
    colour: Dict[str, str] = {}
    cycles: List[List[str]] = []

    def visit(name: str, path: List[str]) -> None:
        colour[name] = "grey"
        for dep in sorted(graph.get(name, ())):
            if colour.get(dep) == "grey":
                cycles.append(path[path.index(dep):] + [dep])
            elif dep not in colour:
                visit(dep, path + [dep])
        colour[name] = "black"

    for name in graph:
        if name not in colour:
            visit(name, [name])
    assert cycles == []
    assert graph["lifecycle"] >= {"plan", "steps", "ordering", "device"}  # the check sees edges


def test_importing_every_agent_module_loads_no_lab_module() -> None:
    names = [f"connector.{name}" for name in modules() if name != "__init__"]
    code = ("import importlib, sys; sys.path.insert(0, sys.argv[1])\n"
            "for name in sys.argv[2:]: importlib.import_module(name)\n"
            "print(sorted(m for m in sys.modules if m == 'lab' or m.startswith('lab.')))")
    result = subprocess.run([sys.executable, "-c", code, AGENT_DIR, *names],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_the_lab_commands_are_refused_without_the_entry_point(capsys: object) -> None:
    from connector.cli import main
    assert main(["demo"]) == 2
    assert "run by paloaltoagent.py" in capsys.readouterr().err  # type: ignore[attr-defined]
