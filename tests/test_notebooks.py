"""Notebooks stay thin, and their parameters cell mirrors the stage's config dataclass."""
import ast

import nbformat
import pytest

from labkit.config import field_names
from labkit.runner import (NOTEBOOK_DIR, NOTEBOOK_GLOBALS, available_stages, config_class, parameters_cell,
                           write_parameter_cells)
from labkit.runs import NOTEBOOKS

STAGES = available_stages()


def _code_cells(stage):
    nb = nbformat.read(NOTEBOOK_DIR / NOTEBOOKS[stage], as_version=4)
    return nb, [c for c in nb.cells if c.cell_type == "code"]


def test_every_stage_has_a_notebook():
    assert STAGES == ["pretrain", "sft", "preferences", "reward", "ppo", "compare", "trust"]


@pytest.mark.parametrize("stage", STAGES)
def test_parameters_cell_mirrors_the_dataclass(stage):
    _, cells = _code_cells(stage)
    tagged = [c for c in cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, "exactly one cell tagged 'parameters'"
    assigned = [t.id for node in ast.parse(tagged[0].source).body if isinstance(node, ast.Assign)
                for t in node.targets if isinstance(t, ast.Name)]
    expected = list(NOTEBOOK_GLOBALS) + field_names(config_class(stage))
    assert sorted(assigned) == sorted(expected)
    assert len(assigned) == len(set(assigned))


@pytest.mark.parametrize("stage", STAGES)
def test_notebook_is_thin_and_committed_without_outputs(stage):
    nb, cells = _code_cells(stage)
    for c in cells:
        tree = ast.parse(c.source)
        assert not [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef, ast.Lambda,
                                                                ast.AsyncFunctionDef))], c.source
        assert not c.get("outputs") and c.get("execution_count") is None
    assert any(c.cell_type == "markdown" for c in nb.cells)


def test_parameters_cells_are_the_ones_the_dataclasses_write():
    """`labkit notebooks` writes each parameters cell from its dataclass (names, None defaults, one-line
    help); a committed cell that differs (a renamed field, an edited help string) fails here."""
    assert write_parameter_cells(check=True) == []
    cell = parameters_cell("ppo")
    assert "max_steps = None" in cell and "# PPO steps" in cell and "total_steps" not in cell


def test_notebook_prose_says_why_and_the_run_says_how_much():
    """Markdown explains; measured numbers come from a cell reading the run (or docs/results.md). A measured
    result typed into a notebook's prose -- a rate or a difference with decimals, "we measured" -- goes stale
    (definitions stay: "15% of tokens masked", "a 95% interval")."""
    import re
    measured = re.compile(r"\d+\.\d+ ?(?:%|points|nats)|\d+\.\d+[–-]\d+\.\d+|\bmeasured (?:at|on)\b|\bwe measured\b")
    for stage in STAGES:
        nb, _ = _code_cells(stage)
        for cell in nb.cells:
            if cell.cell_type == "markdown":
                assert not measured.findall(cell.source), (stage, measured.findall(cell.source), cell.source[:120])
    md = sum(len(c.source) for c in _code_cells("ppo")[0].cells if c.cell_type == "markdown")
    assert md <= 21346 // 2, f"notebook 05's markdown grew back to {md} characters"
