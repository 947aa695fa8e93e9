"""The import graph follows the stages (docs/design.md): no module imports one of a later stage, and the
module-level imports have no cycle."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).parents[1] / "tlora_bench"
# Floors, lowest first; a module's floor is its longest matching prefix. Imports go down or sideways only.
FLOORS = {
    "tlora_bench.errors": 0, "tlora_bench.fileio": 0, "tlora_bench.limits": 0, "tlora_bench.registry": 0,
    "tlora_bench.resources": 0, "tlora_bench.threads": 0, "tlora_bench.interrupts": 0, "tlora_bench.hub": 0,
    "tlora_bench.library_output": 0, "tlora_bench.devices": 0, "tlora_bench.provenance": 0, "tlora_bench.cache": 0,
    "tlora_bench.concepts": 1, "tlora_bench.prompts": 1, "tlora_bench.layout": 1,
    "tlora_bench.synthetic": 1,  # the scene world and its judges: data, like the concepts
    "tlora_bench.synthetic.model": 3, "tlora_bench.synthetic.pretrain": 3,  # the scene model: a model
    "tlora_bench.synthetic.check": 3,
    "tlora_bench.adapters": 2, "tlora_bench.metrics.names": 2, "tlora_bench.metrics.registry": 2,
    "tlora_bench.models": 3, "tlora_bench.adapters.formats": 3,  # formats check files against models' layers
    "tlora_bench.specs": 4,
    "tlora_bench.config": 5,
    "tlora_bench.planner": 6,
    "tlora_bench.train": 7, "tlora_bench.sample": 7, "tlora_bench.metrics": 7, "tlora_bench.pipeline": 7,
    "tlora_bench.report": 8, "tlora_bench.study": 8,
    "tlora_bench.runner": 9,  # runs every stage of a plan, the report last
    "tlora_bench.cli": 10, "tlora_bench.cli_common": 10, "tlora_bench.cli_docs": 10,
    "tlora_bench.report.commands": 10, "tlora_bench.study.commands": 10, "tlora_bench.synthetic.commands": 10,
}


def _module(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _floor(module: str) -> int:
    prefixes = [p for p in FLOORS if module == p or module.startswith(p + ".")]
    assert prefixes, f"{module} has no floor: add it to FLOORS"
    return FLOORS[max(prefixes, key=len)]


def _imports(path: Path) -> list[tuple[str, bool]]:
    """(imported tlora_bench module, at module level) for every import statement of a file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        at_top = id(node) in top and not _type_checking_only(tree, node)
        found += [(name, at_top) for name in names if name.startswith("tlora_bench.")]
    return found


def _type_checking_only(tree: ast.Module, node: ast.AST) -> bool:
    return any(isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test) and node in block.body
               for block in tree.body)


def _graph() -> dict[str, list[tuple[str, bool]]]:
    return {_module(path): _imports(path) for path in sorted(PACKAGE.rglob("*.py"))}


def test_no_module_imports_a_later_stage():
    upward = [f"{module} (floor {_floor(module)}) imports {name} (floor {_floor(name)})"
              for module, imports in _graph().items() if module != "tlora_bench"
              for name, _ in imports if _floor(name) > _floor(module)]
    assert upward == []


def test_module_level_imports_have_no_cycle():
    graph = {module: {name for name, top in imports if top} for module, imports in _graph().items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for name in sorted(graph.get(module, ())):
            name = name if name in graph else name.rpartition(".")[0]  # `from pkg import module`
            assert state.get(name) != 1, f"import cycle: {' -> '.join([*path, module, name])}"
            if name in graph and state.get(name) != 2:
                visit(name, [*path, module])
        state[module] = 2

    for module in graph:
        if module not in state:
            visit(module, [])


def test_config_imports_neither_runner_nor_train_nor_models():
    imported = {name for name, _ in _graph()["tlora_bench.config"]}
    assert not {n for n in imported if n.startswith(("tlora_bench.runner", "tlora_bench.train", "tlora_bench.models"))}
