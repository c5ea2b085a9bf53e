"""scripts/ci's import graph: plumbing at the bottom, no cycles, no workflow script used as a library.

GIVEN every module of scripts/ci parsed with `ast` (imports inside functions included, since a lazy
import is how a cycle hides), WHEN the graph of `ci.*` imports is walked, THEN it has no cycle, the
GitHub plumbing (ci.github) imports no other ci module, and reading runs (ci.runs) imports only it.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

CI = Path(__file__).resolve().parent.parent / "scripts" / "ci"


def ci_imports(source: str) -> set[str]:
    """The `ci.*` modules a module's source imports, anywhere in it."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "ci":
                found |= {f"ci.{alias.name}" for alias in node.names}
            elif node.module.startswith("ci."):
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("ci.")}
    return found


def graph() -> dict[str, set[str]]:
    return {f"ci.{path.stem}": ci_imports(path.read_text()) for path in sorted(CI.glob("*.py"))}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path of module names (first == last), or None."""
    state: dict[str, str] = {}

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = "open"
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == "open":
                return [*path[path.index(nxt) :], nxt] if nxt in path else [*path, nxt]
            if nxt not in state and (cycle := visit(nxt, [*path, nxt])):
                return cycle
        state[node] = "done"
        return None

    for start in sorted(edges):
        if start not in state and (cycle := visit(start, [start])):
            return cycle
    return None


def test_scripts_ci_has_no_import_cycle() -> None:
    assert find_cycle(graph()) is None


def test_plumbing_imports_no_other_ci_module_and_runs_only_the_plumbing() -> None:
    edges = graph()
    assert edges["ci.github"] == set()
    assert edges["ci.runs"] == {"ci.github"}


def test_no_workflow_script_imports_another_workflow_scripts_plumbing() -> None:
    # retrain.py was the library of report/preview/comments/sweep; plumbing now lives in ci.github.
    # Only ci.sweep may reuse ci.retrain, for the retrain request it extends with a grid.
    importers = {name for name, deps in graph().items() if "ci.retrain" in deps}
    assert importers <= {"ci.sweep"}
    assert all("ci.report" not in deps for deps in graph().values())


@pytest.mark.parametrize(
    ("edges", "expected"),
    [
        ({"ci.a": {"ci.b"}, "ci.b": {"ci.a"}}, ["ci.a", "ci.b", "ci.a"]),
        ({"ci.a": {"ci.b"}, "ci.b": {"ci.c"}, "ci.c": set()}, None),
        ({"ci.a": {"ci.a"}}, ["ci.a", "ci.a"]),
    ],
)
def test_cycle_finder_finds_a_cycle_it_is_given(edges: dict[str, set[str]], expected: list[str] | None) -> None:
    assert find_cycle(edges) == expected


def test_lazy_import_inside_a_function_counts() -> None:
    # the cycle retrain -> report -> retrain hid in a function body before the split
    assert ci_imports("def f():\n    from ci.report import read_report\n") == {"ci.report"}
    assert ci_imports("from ci import runs, github\n") == {"ci.runs", "ci.github"}


# --- what the runner's own python3 must find ------------------------------------------------------

CHART = CI.parents[1] / "trainer" / "src" / "trainer" / "chart.py"
# The one trainer module scripts/ci may use: the charts' look, shared with the run report (stdlib only).
ALLOWED_TRAINER = {"trainer.chart"}


def top_level_imports(source: str) -> set[str]:
    """Every module a source imports (absolute imports, anywhere in it), as written."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
    return found


def foreign(modules: set[str]) -> set[str]:
    """The modules that are neither the standard library nor ci.*, trainer.chart."""
    return {
        m for m in modules
        if m.split(".")[0] not in sys.stdlib_module_names and m.split(".")[0] != "ci" and m not in ALLOWED_TRAINER
    }  # fmt: skip


def test_scripts_ci_imports_only_the_standard_library_and_trainer_chart() -> None:
    # the workflows run scripts/ci with the runner's python3 before anything is installed
    found = {path.stem: foreign(top_level_imports(path.read_text())) for path in sorted(CI.glob("*.py"))}
    assert {name: mods for name, mods in found.items() if mods} == {}


def test_trainer_chart_imports_only_the_standard_library() -> None:
    assert {m for m in top_level_imports(CHART.read_text()) if m.split(".")[0] not in sys.stdlib_module_names} == set()
    # and the check sees a planted import
    assert foreign(top_level_imports("import torch\nfrom trainer.report import x\n")) == {"torch", "trainer.report"}
