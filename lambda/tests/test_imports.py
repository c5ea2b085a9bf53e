"""The trigger's modules import each other without a cycle: when two need each other, the shared part is a
third (trigger.starts for the start protocol, trigger.launcher for the seam). Walked with ast, not by
importing, so a cycle hidden inside a function (a late import) counts too."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).parents[1] / "src" / "trigger"


def imports_of(path: Path) -> set[str]:
    """The trigger modules `path` imports anywhere in it (top level or inside a function)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "trigger":
            if node.module == "trigger":  # from trigger import flows, stops
                found |= {alias.name for alias in node.names}
            else:
                found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("trigger.")}
    return found


def graph() -> dict[str, set[str]]:
    modules = {path.stem: path for path in PACKAGE.glob("*.py") if path.stem != "__init__"}
    return {name: imports_of(path) & modules.keys() for name, path in modules.items()}


def cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path [a, b, ..., a], or None (depth-first search)."""
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> list[str] | None:
        if node in path:
            return [*path[path.index(node) :], node]
        if node in done:
            return None
        for nxt in sorted(edges[node]):
            found = visit(nxt, [*path, node])
            if found:
                return found
        done.add(node)
        return None

    for start in sorted(edges):
        found = visit(start, [])
        if found:
            return found
    return None


def test_the_trigger_has_no_import_cycle() -> None:
    edges = graph()
    assert {"handler", "starts", "flows", "reconcile", "batch", "ecs"} <= edges.keys()
    assert cycle(edges) is None, " -> ".join(cycle(edges) or [])


def test_the_cycle_finder_finds_a_late_import_cycle() -> None:
    # GIVEN the real graph with one late import added back (flows importing reconcile inside a function)
    edges = graph()
    edges["flows"] = edges["flows"] | {"reconcile"}
    # THEN it is reported
    assert cycle(edges) is not None


def test_only_the_front_door_and_the_command_line_import_the_flows_of_others() -> None:
    edges = graph()
    # the launchers know nothing of the protocol; the protocol nothing of the flows
    assert not edges["ecs"] & {"starts", "flows", "reconcile", "handler"}
    assert not edges["batch"] & {"starts", "flows", "reconcile", "handler"}
    assert not edges["starts"] & {"flows", "reconcile", "handler"}
    assert "handler" not in set().union(*(deps for name, deps in edges.items() if name != "handler"))
