"""The import graph of wow_jax has no cycle: a lower layer never imports a higher one.

Static (ast): every `import wow_jax.x` / `from wow_jax.x import y`, including imports inside
functions, is an edge; `from pkg import sub` depends on the module pkg.sub only (when sub is a
module), not on pkg's __init__.
"""

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "wow_jax"


def module_files(root: pathlib.Path) -> dict[str, pathlib.Path]:
    """{dotted module name: file} of every module of the package under `root`."""
    files = {}
    for path in root.rglob("*.py"):
        name = ".".join(path.relative_to(root.parent).with_suffix("").parts)
        files[name.removesuffix(".__init__")] = path
    return files


def import_graph(root: pathlib.Path) -> dict[str, set[str]]:
    """{module: modules of the same package it imports}."""
    files = module_files(root)
    graph = {}
    for name, path in files.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.ImportFrom) and node.level:
                raise AssertionError(f"{path}: relative import; use absolute wow_jax imports")
            if isinstance(node, ast.ImportFrom) and node.module in files:
                subs = {f"{node.module}.{a.name}" for a in node.names} & files.keys()
                deps |= subs
                if len(subs) < len(node.names):
                    deps.add(node.module)
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names} & files.keys()
        graph[name] = deps - {name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as [a, b, ..., a], or None (depth-first search with colours)."""
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                return stack[stack.index(dep) :] + [dep]
            if dep not in state and (cycle := visit(dep)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_finder_sees_a_cycle_through_a_function_level_import(tmp_path):
    pkg = tmp_path / "wow_jax"
    (pkg / "train").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "train" / "__init__.py").write_text("")
    (pkg / "train" / "loop.py").write_text("def f():\n    from wow_jax.train import demo\n")
    (pkg / "train" / "demo.py").write_text("from wow_jax.train import loop\n")
    cycle = find_cycle(import_graph(pkg))
    assert cycle == ["wow_jax.train.demo", "wow_jax.train.loop", "wow_jax.train.demo"]


def test_the_finder_passes_a_layered_package(tmp_path):
    pkg = tmp_path / "wow_jax"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "low.py").write_text("import os\n")
    (pkg / "high.py").write_text("from wow_jax import low\nimport wow_jax.low\n")
    graph = import_graph(pkg)
    assert graph["wow_jax.high"] == {"wow_jax.low"}
    assert find_cycle(graph) is None


def test_wow_jax_has_no_import_cycle():
    graph = import_graph(PACKAGE)
    assert len(graph) > 50, f"found only {len(graph)} modules under {PACKAGE}"
    cycle = find_cycle(graph)
    if cycle:
        pytest.fail("import cycle in wow_jax: " + " -> ".join(cycle))
