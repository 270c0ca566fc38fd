"""The import graph of airflow_ray, read from its source: no cycles, and ``_remote`` stays apart.

Every ``import`` counts, also inside functions (they run when the function does); imports under
``if TYPE_CHECKING:`` never run and do not count. ``from package import name`` is an edge to
``package.name`` when that is a module, else to ``package``; a package is its ``__init__``.
"""

from __future__ import annotations

import ast
from collections import deque
from collections.abc import Iterator
from pathlib import Path

import pytest

import airflow_ray

PACKAGE = "airflow_ray"
REMOTE = "airflow_ray._remote"


def module_names(root: Path, package: str) -> dict[str, Path]:
    """``{dotted name: file}`` of every module under ``root``, the folder of ``package``."""
    modules = {}
    for path in sorted(root.rglob("*.py")):
        parts = [package, *path.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(node: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """The import statements that can run: all of them but those under ``if TYPE_CHECKING:``."""
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        yield node
        return
    if isinstance(node, ast.If) and _is_type_checking(node.test):
        children: list[ast.AST] = list(node.orelse)
    else:
        children = list(ast.iter_child_nodes(node))
    for child in children:
        yield from _imports(child)


def _absolute(module: str, is_package: bool, statement: ast.ImportFrom) -> str:
    if statement.level == 0:
        return statement.module or ""
    parts = module.split(".") if is_package else module.split(".")[:-1]
    base = parts[: len(parts) - (statement.level - 1)]
    return ".".join([*base, statement.module] if statement.module else base)


def import_graph(root: Path, package: str) -> dict[str, set[str]]:
    """``{module: modules of the package it imports}`` for the package in folder ``root``."""
    modules = module_names(root, package)
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        for statement in _imports(tree):
            if isinstance(statement, ast.Import):
                targets = [alias.name for alias in statement.names]
            else:
                source = _absolute(name, path.name == "__init__.py", statement)
                targets = [
                    f"{source}.{alias.name}" if f"{source}.{alias.name}" in modules else source
                    for alias in statement.names
                ]
            graph[name].update(target for target in targets if target in modules and target != name)
    return graph


def _strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm: the strongly connected components of ``graph``."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def _shortest_cycle_through(graph: dict[str, set[str]], start: str) -> list[str]:
    previous: dict[str, str] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for target in sorted(graph.get(node, ())):
            if target == start:
                path = [node]
                while path[-1] != start:
                    path.append(previous[path[-1]])
                return [*reversed(path), start]
            if target not in previous:
                previous[target] = node
                queue.append(target)
    return []


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (``[a, b, ..., a]``) for each group of modules that import each other."""
    return sorted(
        _shortest_cycle_through(graph, component[0])
        for component in _strongly_connected(graph)
        if len(component) > 1 or component[0] in graph.get(component[0], ())
    )


def describe(cycles: list[list[str]]) -> str:
    return "\n".join(" -> ".join(cycle) for cycle in cycles)


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph(Path(airflow_ray.__file__).parent, PACKAGE)


def test_the_graph_holds_every_module_and_function_level_imports(graph):
    root = Path(airflow_ray.__file__).parent
    assert len(graph) == len(list(root.rglob("*.py")))
    assert "airflow_ray._remote.task" in graph["airflow_ray._remote.owner_actor"]
    # cli.py imports the hook inside the function that needs it.
    assert "airflow_ray.hooks.ray" in graph["airflow_ray.cli"]


def test_airflow_ray_has_no_import_cycles(graph):
    cycles = find_cycles(graph)
    assert not cycles, f"import cycles:\n{describe(cycles)}"


def test_remote_imports_nothing_of_the_worker_side(graph):
    outside = {
        f"{module} -> {target}"
        for module, targets in graph.items()
        if module == REMOTE or module.startswith(f"{REMOTE}.")
        for target in targets
        if not (target == REMOTE or target.startswith(f"{REMOTE}."))
    }
    assert not outside, f"_remote imports worker-side modules: {sorted(outside)}"


def test_cycles_are_found_and_named(tmp_path):
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    files = {
        "__init__.py": "",
        "a.py": "from pkg import b\nfrom pkg.sub import c\n",
        # A function-level import runs when the function does: a cycle.
        "b.py": "def later():\n    from . import a\n",
        # Never runs: not a cycle.
        "sub/__init__.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import pkg.a\n",
        "sub/c.py": "import typing\nif typing.TYPE_CHECKING:\n    from .. import a\nelse:\n    from ..sub import d\n",
        "sub/d.py": "from .c import *\n",
    }
    for name, source in files.items():
        (package / name).write_text(source)
    graph = import_graph(package, "pkg")
    assert graph == {
        "pkg": set(),
        "pkg.a": {"pkg.b", "pkg.sub.c"},
        "pkg.b": {"pkg.a"},
        "pkg.sub": set(),
        "pkg.sub.c": {"pkg.sub.d"},
        "pkg.sub.d": {"pkg.sub.c"},
    }
    assert describe(find_cycles(graph)) == "pkg.a -> pkg.b -> pkg.a\npkg.sub.c -> pkg.sub.d -> pkg.sub.c"


def test_a_module_importing_itself_is_a_cycle():
    assert find_cycles({"m": {"m"}, "n": set()}) == [["m", "m"]]
    assert find_cycles({"m": {"n"}, "n": set()}) == []
