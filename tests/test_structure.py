"""The shape of the code: the import graph has no cycle and never imports upward (docs/CONTRIBUTING.md has
the map; every import counts, including those inside functions), and no function is longer than 80 lines
(a CLI command's option declarations do not count).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "ctxext"

# Lowest first. A module may import modules of its own layer (without a cycle) or of a lower one.
LAYERS = {
    "core": [
        "ctxext",
        "compat",
        "errors",
        "presets",
        "card",
        "io",
        "manifest",
        "architectures",
        "checkpoint",
        "checks",
        "block_sparse",
        "encode",
        "flip_models",
        "bottleneck",
    ],
    "operations": ["positions", "transfer", "guide", "flip", "qa_prompt", "qa", "average", "inspect", "embed", "data"],
    "evaluate": ["evaluate", "retrieval"],
    "train": ["train", "extend"],
    "cli": ["cli", "__main__"],
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, name: str) -> set[str]:
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names}
    return {module for module in found if module == "ctxext" or module.startswith("ctxext.")}


def import_graph() -> dict[str, set[str]]:
    paths = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    return {name: {m for m in imported_modules(path, name) if m in paths and m != name} for name, path in paths.items()}


def layer_of(module: str) -> int:
    top = module.split(".")[1] if "." in module else module
    for rank, members in enumerate(LAYERS.values()):
        if top in members:
            return rank
    raise AssertionError(f"{module} is in no layer: add it to LAYERS (and to docs/CONTRIBUTING.md)")


def test_every_module_belongs_to_a_layer():
    for module in import_graph():
        layer_of(module)


def test_no_module_imports_a_higher_layer():
    upward = sorted(
        f"{module} -> {target}"
        for module, targets in import_graph().items()
        for target in targets
        if layer_of(target) > layer_of(module)
    )
    assert upward == []


def test_the_import_graph_has_no_cycle():
    graph = import_graph()
    state: dict[str, str] = {}
    cycles: list[list[str]] = []

    def visit(module: str, trail: list[str]) -> None:
        state[module] = "open"
        for target in sorted(graph[module]):
            if state.get(target) == "open":
                cycles.append([*trail[trail.index(target) :], target] if target in trail else [module, target])
            elif target not in state:
                visit(target, [*trail, target])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    # a package importing its own submodules (``ctxext.data`` re-exporting ``ctxext.data.text``) is not a cycle
    real = [cycle for cycle in cycles if not all(m.startswith(cycle[0] + ".") or m == cycle[0] for m in cycle)]
    assert real == []


MAX_LINES = 80


def counted_lines(function: ast.FunctionDef, path: Path) -> int:
    """Lines from ``def`` to the end; a CLI command is counted from its first statement after the docstring."""
    if "cli" not in path.relative_to(PACKAGE).parts:
        return function.end_lineno - function.lineno + 1
    body = function.body
    if isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) and len(body) > 1:
        body = body[1:]
    return function.end_lineno - body[0].lineno + 1


def test_no_function_is_longer_than_80_lines():
    long = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and counted_lines(node, path) > MAX_LINES:
                long.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name} ({counted_lines(node, path)})")
    assert sorted(long) == []
