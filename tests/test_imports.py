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


def test_labkit_keeps_jsonschemas_iri_parsers_out_and_notebooks_still_validate():
    """labkit/__init__.py marks rfc3987_syntax absent (1.6 s of parser building in every kernel and runner); what
    reads notebooks still validates them, and a broken notebook still fails."""
    import subprocess
    import sys
    code = """
import sys
import labkit, nbformat, plotly.io, jsonschema
checkers = jsonschema.Draft7Validator.FORMAT_CHECKER.checkers
nb = nbformat.read("notebooks/01_pretrain.ipynb", as_version=4)
nbformat.validate(nb)
nb.cells[0]["cell_type"] = "not a cell type"
try:
    nbformat.validate(nb)
    broken = "validated"
except nbformat.ValidationError:
    broken = "rejected"
print(sys.modules["rfc3987_syntax"] is None, "iri" in checkers, "date-time" in checkers, broken)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=PACKAGE.parent, check=True)
    assert out.stdout.split() == ["True", "False", "True", "rejected"]


def test_the_runner_checks_every_stage_config_without_transformers_modelling_code():
    """`labkit run` imports every stage module to build the configs before any notebook starts; transformers'
    models are imported where a model is built or loaded (labkit/models.py), so that check stays quick."""
    import subprocess
    import sys
    code = """
import sys
from labkit.runner import config_class
from labkit.runs import STAGES
from labkit.config import make_config
for s in STAGES:
    make_config(config_class(s), __import__(f"labkit.{s}", fromlist=["PRESETS"]).PRESETS, "cpu", {})
print(sorted(m for m in ("transformers.modeling_utils", "trl", "peft", "datasets") if m in sys.modules))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=PACKAGE.parent, check=True)
    assert out.stdout.strip() == "[]"
