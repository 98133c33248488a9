"""No import cycles in the package or the benchmark harness, lazy (function-level) imports included: a cycle
hidden behind a lazy import still ties two layers together, e.g. the data builders to the evaluation that reads
their datasets."""

from __future__ import annotations

import ast

from conftest import REPO_ROOT

# source folder -> the dotted package it installs as (pyproject.toml's package-dir)
PACKAGES = {
    "medrg": "medrg",
    "modeling_medrg": "medrg.modeling_medrg",
    "processing": "medrg.processing",
    "evaluation": "medrg.evaluation",
    "hub_cards": "medrg.hub_cards",
    "benchmarks": "benchmarks",
}
LAYERS = ("medrg.modeling_medrg", "medrg.processing", "medrg.evaluation", "medrg.hub_cards", "medrg.training")


def _modules() -> dict[str, tuple[ast.Module, bool]]:
    modules = {}
    for folder, package in PACKAGES.items():
        for path in (REPO_ROOT / folder).rglob("*.py"):
            parts = list(path.relative_to(REPO_ROOT / folder).with_suffix("").parts)
            is_package = parts[-1] == "__init__"
            name = ".".join([package, *(parts[:-1] if is_package else parts)])
            modules[name] = (ast.parse(path.read_text()), is_package)
    return modules


def _import_graph() -> dict[str, set[str]]:
    """module -> the repository modules its import statements (anywhere in it) load, parent packages included."""
    modules = _modules()

    def known(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph = {}
    for name, (tree, is_package) in modules.items():
        package = name if is_package else name.rpartition(".")[0]
        targets = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
                module = ".".join(base + ([node.module] if node.module else []))
                targets.update([module, *(f"{module}.{alias.name}" for alias in node.names)])
        loaded = set()
        for target in targets:
            parts = target.split(".")
            loaded.update(known(".".join(parts[:k])) for k in range(1, len(parts) + 1))
        # the packages above a module are loaded before it runs: no edge
        graph[name] = {m for m in loaded if m and m != name and not name.startswith(m + ".")}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in graph.get(node, ()):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while not component or component[-1] != node:
                component.append(stack.pop())
                on_stack.discard(component[-1])
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def _layer(module: str) -> str:
    return next((layer for layer in LAYERS if module == layer or module.startswith(layer + ".")), module)


def test_no_module_imports_itself_through_others():
    assert _cycles(_import_graph()) == []


def test_no_two_layers_import_each_other():
    layers: dict[str, set[str]] = {}
    for module, targets in _import_graph().items():
        layers.setdefault(_layer(module), set()).update(
            _layer(t) for t in targets if _layer(t) != _layer(module)
        )
    assert _cycles(layers) == []


def test_the_checks_see_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
