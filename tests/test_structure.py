"""The shape of the code: the import graph has no cycle and never imports upward (docs/CONTRIBUTING.md has
the map; every import counts, including those inside functions), and no module is longer than 600 lines (a
longer one becomes a package along its sections). The length, branches, statements and arguments of each
function are ruff's to check (C901, PLR0912, PLR0913, PLR0915; pyproject.toml says the limits and why).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "ctxext"

# Lowest first. A module may import modules of its own layer (without a cycle) or of a lower one. A package's
# submodules sit in the layer of the package (``ctxext.io.files`` is in ``io``'s, core): see ``layer_of``.
LAYERS = {
    "core": [
        "ctxext",
        "compat",
        "errors",
        "options",
        "presets",
        "card",
        "io",
        "manifest",
        "architectures",
        "sentence_folder",
        "checkpoint",
        "checks",
        "block_sparse",
        "encode",
        "flip_models",
        "bottleneck",
    ],
    "operations": ["positions", "transfer", "guide", "flip", "qa_prompt", "qa", "average", "inspect", "embed", "data"],
    "evaluate": ["evaluate", "retrieval"],
    "train": ["train", "extend", "commands", "pipeline"],
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
    # A package importing its own submodules (``ctxext.io`` re-exporting ``ctxext.io.files``) is not a cycle, nor
    # is a cycle closed by a submodule looking the package up at call time (``cli.pipeline`` reads ``ctxext.cli.app``):
    # only a cycle that starts at the package itself is left out. Submodules importing each other in a circle are
    # still caught: DFS closes every cycle with a back edge to the first of its modules it reached, so a cycle
    # among submodules is recorded starting at a submodule.
    real = [cycle for cycle in cycles if not all(m.startswith(cycle[0] + ".") or m == cycle[0] for m in cycle)]
    assert real == []


MAX_MODULE_LINES = 600


def test_no_module_is_longer_than_600_lines():
    lengths = {
        path.relative_to(PACKAGE).as_posix(): len(path.read_text(encoding="utf-8").splitlines())
        for path in PACKAGE.rglob("*.py")
    }
    long = sorted(f"{name} ({lines} lines)" for name, lines in lengths.items() if lines > MAX_MODULE_LINES)
    assert long == []
