"""The shape of the package: every module imports, and module-level imports form no cycle."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "midefend"


def module_names() -> list[str]:
    names = []
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


MODULES = module_names()


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def top_level_imports(name: str) -> set[str]:
    """The midefend modules ``name`` imports when it is imported (not inside functions, not under
    ``TYPE_CHECKING``); ``from pkg import sub`` counts as importing ``pkg.sub`` when that is a module."""
    path = ROOT.parent / (name.replace(".", "/") + ".py")
    is_package = not path.is_file()
    if is_package:
        path = ROOT.parent / name.replace(".", "/") / "__init__.py"
    package = name if is_package else name.rpartition(".")[0]
    found: set[str] = set()
    body = list(ast.parse(path.read_text()).body)
    while body:
        node = body.pop(0)
        if isinstance(node, ast.If) and not _is_type_checking(node):
            body = node.body + node.orelse + body
        elif isinstance(node, ast.Try):
            body = node.body + [n for h in node.handlers for n in h.body] + node.orelse + node.finalbody + body
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            found |= imported_modules(node, package)
    return {m for m in found if m in MODULES and m != name}


def imported_modules(node: ast.Import | ast.ImportFrom, package: str) -> set[str]:
    """The modules one import statement in ``package`` names; ``from pkg import sub`` counts as ``pkg.sub`` when that is a module."""
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names}
    if node.level:
        base = package.split(".")[: len(package.split(".")) - node.level + 1]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    subs = {f"{target}.{alias.name}" for alias in node.names if f"{target}.{alias.name}" in MODULES}
    return subs or {target}  # parent packages are implied by every import: not edges


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a path ``[a, b, ..., a]``, or None (depth-first search)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_find_cycle_finds_one_and_only_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"x": {"x"}}) == ["x", "x"]


def test_import_graph_sees_relative_and_submodule_imports():
    graph = {name: top_level_imports(name) for name in MODULES}
    assert "midefend.errors" in graph["midefend.defenses.erasing.params"]
    assert "midefend.defenses.erasing.params" in graph["midefend.defenses.erasing"]
    assert "midefend._version" in graph["midefend"]


def test_no_import_cycle_between_modules():
    graph = {name: top_level_imports(name) for name in MODULES}
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def all_imports(name: str) -> set[str]:
    """The midefend modules ``name`` imports anywhere — inside functions too, not under ``TYPE_CHECKING``.

    A function-local import defers the import, not the dependency: two modules that import each other
    that way still form a cycle (the registries that imported their implementations did).
    """
    path = ROOT.parent / (name.replace(".", "/") + ".py")
    is_package = not path.is_file()
    if is_package:
        path = ROOT.parent / name.replace(".", "/") / "__init__.py"
    package = name if is_package else name.rpartition(".")[0]
    tree = ast.parse(path.read_text())
    hidden = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and _is_type_checking(node) for n in ast.walk(node)}
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) not in hidden and isinstance(node, (ast.Import, ast.ImportFrom)):
            found |= imported_modules(node, package)
    return {m for m in found if m in MODULES and m != name}


def test_no_import_cycle_between_modules_counting_function_local_imports():
    graph = {name: all_imports(name) for name in MODULES}
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_function_local_imports_are_seen():
    # the verify workflow imports the budget planner inside a function: the graph must still see the edge
    assert "midefend.evaluation.budget" in all_imports("midefend.evaluation.verify")
    assert "midefend.evaluation.budget" not in top_level_imports("midefend.evaluation.verify")


@pytest.mark.parametrize("name", [m for m in MODULES if m != "midefend.__main__"])  # __main__ runs the CLI
def test_every_module_imports(name):
    assert importlib.import_module(name).__name__ == name


def test_no_private_name_is_imported_across_packages():
    """``from ..io.checkpoints import _check_device`` in training is how layers leak: a private name
    stays inside its own subpackage (imports inside functions count too)."""
    leaks = []
    for name in MODULES:
        path = ROOT.parent / (name.replace(".", "/") + ".py")
        path = path if path.is_file() else ROOT.parent / name.replace(".", "/") / "__init__.py"
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ImportFrom) or not node.level:
                continue
            base = package.split(".")[: len(package.split(".")) - node.level + 1]
            source = ".".join(base + ([node.module] if node.module else []))
            for alias in node.names:
                private = alias.name.startswith("_") and not alias.name.startswith("__")
                if private and f"{source}.{alias.name}" not in MODULES and source.split(".")[:2] != name.split(".")[:2]:
                    leaks.append(f"{name} imports {source}.{alias.name}")
    assert leaks == []
