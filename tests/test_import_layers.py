"""The package's layers, read from its source: no import cycles between its parts, clients never
import the local server, widgets never import clients.

The graph is built with ``ast`` over ``nbtoolkit/`` and counts every import of a project module:
at module level, inside functions, and under ``TYPE_CHECKING`` (a type-only import still makes
one part depend on another). A *part* is a top-level module (``nbtoolkit.config``) or a subpackage
(``nbtoolkit.audio``): parts must form layers, without cycles. Inside one part, a class may call
its own part's helpers lazily (``Clip.load`` uses ``audio.decode``, which builds ``Clip``s), but
no cycle may run through module-level imports, which Python runs at import time.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from functools import cache
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "nbtoolkit"


def _module_names() -> dict[str, Path]:
    names = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


MODULES = _module_names()


def _resolve(name: str) -> str | None:
    """The project module ``name`` refers to (a name imported from a module is that module)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    inside: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            inside.update(id(n) for n in ast.walk(node))
    return inside


def _imports(module: str) -> Iterator[tuple[str, bool]]:
    """``(imported project module, at import time?)`` for every import in ``module``: at import time
    means at module level and not under ``TYPE_CHECKING``."""
    path = MODULES[module]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    typing_only = _type_checking_nodes(tree)
    top_level = {id(n) for n in tree.body}
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        eager = id(node) in top_level and id(node) not in typing_only
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # ``from nbtoolkit import pricing`` imports the module nbtoolkit.pricing
            targets = [
                f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names
            ]
        else:
            continue
        for target in targets:
            if target.split(".")[0] == "nbtoolkit":
                resolved = _resolve(target)
                if resolved is not None and resolved != module:
                    yield resolved, eager


@cache
def _graph(*, eager_only: bool) -> dict[str, frozenset[str]]:
    return {m: frozenset(t for t, eager in _imports(m) if eager or not eager_only) for m in MODULES}


def _part(module: str) -> str:
    """``nbtoolkit.audio.clip`` -> ``nbtoolkit.audio``; ``nbtoolkit.config`` -> itself."""
    return ".".join(module.split(".")[:2])


def _cycles(graph: dict[str, frozenset[str]]) -> list[frozenset[str]]:
    """The strongly connected components of more than one node (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(frozenset(component))
    return found


def _part_graph() -> dict[str, frozenset[str]]:
    parts: dict[str, set[str]] = {}
    for module, targets in _graph(eager_only=False).items():
        mine = parts.setdefault(_part(module), set())
        mine.update(_part(t) for t in targets if _part(t) != _part(module))
    return {part: frozenset(targets) for part, targets in parts.items()}


def _explain(cycle: frozenset[str]) -> list[str]:
    """The module imports that make up a cycle between parts."""
    return sorted(
        f"{m} -> {t}"
        for m, targets in _graph(eager_only=False).items()
        for t in targets
        if _part(m) in cycle and _part(t) in cycle and _part(m) != _part(t)
    )


def _edges(source: str, target: str) -> list[str]:
    return sorted(
        f"{m} -> {t}"
        for m, targets in _graph(eager_only=False).items()
        if m.startswith(source)
        for t in targets
        if t.startswith(target)
    )


def test_the_graph_sees_imports_of_every_kind() -> None:
    # a function-level import (Clip._repr_html_), a TYPE_CHECKING one and a module-level one
    assert "nbtoolkit.audio.inline" in _graph(eager_only=False)["nbtoolkit.audio.clip"]
    assert "nbtoolkit.audio.inline" not in _graph(eager_only=True)["nbtoolkit.audio.clip"]
    assert "nbtoolkit.errors" in _graph(eager_only=True)["nbtoolkit.config"]
    assert _cycles({"a": frozenset({"b"}), "b": frozenset({"a"}), "c": frozenset()}) == [
        frozenset({"a", "b"})
    ]


def test_no_import_cycle_between_the_packages_parts() -> None:
    cycles = _cycles(_part_graph())
    assert cycles == [], {" <-> ".join(sorted(c)): _explain(c) for c in cycles}


def test_no_import_cycle_runs_at_import_time() -> None:
    cycles = _cycles(_graph(eager_only=True))
    assert cycles == [], [sorted(c) for c in cycles]


def test_clients_never_import_the_local_server() -> None:
    assert _edges("nbtoolkit.backends", "nbtoolkit.local") == []


def test_widgets_never_import_clients() -> None:
    assert _edges("nbtoolkit.widgets", "nbtoolkit.backends") == []
