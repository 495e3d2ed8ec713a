"""Imports run one way (docs/architecture.md, "Imports run one way"), read from the source with ast:
stages import shared modules only, shared modules never import a stage, no cycle (TYPE_CHECKING
imports included), and no _private name crosses a module boundary."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "labkit"
STAGES = {"pretrain", "sft", "preferences", "reward", "ppo", "compare", "trust"}


def imports(source: str, modules: set[str]) -> list[tuple[str, str]]:
    """(module, name) for every labkit import in ``source``, wherever it sits (function bodies and
    TYPE_CHECKING blocks too): ``from .x import y`` gives (x, y), ``from . import x`` gives (x, "")."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            if node.level == 0 and mod.split(".")[0] != "labkit":
                continue
            mod = mod.removeprefix("labkit").lstrip(".") if node.level == 0 else mod
            if mod:
                out += [(mod.split(".")[0], a.name) for a in node.names]
            else:
                out += [(a.name, "") for a in node.names if a.name in modules]
        elif isinstance(node, ast.Import):
            out += [(a.name.split(".")[1], "") for a in node.names if a.name.startswith("labkit.")]
    return out


def graph(package: Path = PACKAGE) -> dict[str, list[tuple[str, str]]]:
    modules = {p.stem for p in package.glob("*.py")}
    return {p.stem: [(m, n) for m, n in imports(p.read_text(), modules) if m in modules]
            for p in package.glob("*.py")}


def problems(g: dict[str, list[tuple[str, str]]]) -> list[str]:
    """Everything that breaks the rule, one line each (empty: the package is clean)."""
    out = []
    for mod, edges in sorted(g.items()):
        for target, name in edges:
            if mod in STAGES and target in STAGES and target != mod:
                out.append(f"stage {mod} imports stage {target}")
            if mod not in STAGES and target in STAGES:
                out.append(f"shared module {mod} imports stage {target}")
            if name.startswith("_") and not name.startswith("__") and target != mod:
                out.append(f"{mod} imports the private name {target}.{name}")
    seen, stack = set(), []

    def visit(m):  # depth-first search: a node met again on the current path closes a cycle
        if m in stack:
            out.append("import cycle: " + " -> ".join(stack[stack.index(m):] + [m]))
            return
        if m in seen:
            return
        seen.add(m)
        stack.append(m)
        for target, _ in g.get(m, ()):
            if target != m:
                visit(target)
        stack.pop()

    for m in sorted(g):
        visit(m)
    return out


def test_the_package_imports_one_way():
    assert problems(graph()) == []


@pytest.mark.parametrize("files, expected", [
    ({"ppo": "from .reward import score\n", "reward": ""}, "stage ppo imports stage reward"),
    ({"world": "def f():\n    from . import sft\n", "sft": ""}, "shared module world imports stage sft"),
    ({"a": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .b import X\n", "b": "from .a import Y\n"},
     "import cycle: a -> b -> a"),
    ({"a": "from labkit.b import _helper\n", "b": ""}, "a imports the private name b._helper"),
])
def test_the_checker_catches_each_kind_of_problem(tmp_path, files, expected):
    for name, source in files.items():
        (tmp_path / f"{name}.py").write_text(source)
    assert expected in problems(graph(tmp_path))
