"""The documentation belongs to the repository: the README's file map matches the tree, and
nothing points at design notes outside it (a user's clone has only what is committed)."""
import re
from pathlib import Path

import pytest

from labkit.runs import NOTEBOOKS, STAGE_DIRS, STAGES

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
ARCHITECTURE = REPO / "docs" / "architecture.md"
PATH_RE = re.compile(r"\b(?:labkit/[\w]+\.py|notebooks/[\w]+\.ipynb|tests/test_[\w]+\.py)\b")


def files_section() -> str:
    text = README.read_text(encoding="utf-8")
    m = re.search(r"^## Files\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    assert m, "README.md has no '## Files' section"
    return m.group(1)


def test_every_file_the_map_names_exists():
    named = set(PATH_RE.findall(files_section()))
    assert named, "the Files section names no files"
    missing = sorted(p for p in named if not (REPO / p).is_file())
    assert not missing, f"README's Files section names files that do not exist: {missing}"


def test_every_module_and_notebook_is_in_the_map():
    named = set(PATH_RE.findall(files_section()))
    tree = {f"labkit/{p.name}" for p in (REPO / "labkit").glob("*.py") if p.name != "__init__.py"}
    tree |= {f"notebooks/{p.name}" for p in (REPO / "notebooks").glob("*.ipynb")}
    unmapped = sorted(tree - named)
    assert not unmapped, f"README's Files section does not say what these are: {unmapped}"


@pytest.mark.parametrize("stage", STAGES)
def test_each_stage_line_names_its_module_notebook_tests_and_folder(stage):
    # The stage table's row for `stage`: the three spellings of stage 4 (reward.py,
    # 04_reward_model.ipynb, 04_reward/) must each come from runs.py's one definition.
    rows = [r for r in files_section().splitlines() if r.startswith("|") and f"`{STAGE_DIRS[stage]}/`" in r]
    assert len(rows) == 1, f"no single Files row for stage {stage!r} ({STAGE_DIRS[stage]}/)"
    row = rows[0]
    for part in (f"labkit/{stage}.py", f"notebooks/{NOTEBOOKS[stage]}", "tests/test_"):
        assert part in row, f"stage {stage!r}: {part} is missing from its Files row: {row}"


def test_architecture_page_exists_and_covers_the_design():
    text = ARCHITECTURE.read_text(encoding="utf-8")
    for heading in ("Data flow", "Stages", "Run folders", "Presets", "The embedded world", "AI judges",
                    "Memory planner and scaling", "Design rules", "CPU notes", "Testing notes"):
        assert re.search(rf"^## {heading}$", text, re.M), f"docs/architecture.md lacks a '## {heading}' section"


def _documents():
    yield README
    for folder in ("labkit", "tests", "notebooks", "benchmarks", "docs"):
        for p in sorted((REPO / folder).rglob("*")):
            if p.is_file() and p.suffix in (".py", ".ipynb", ".md", ".yaml", ".yml", ".sh", ".txt", ".json"):
                yield p


def test_nothing_points_outside_the_repository():
    # Spelled in pieces so this file does not match itself.
    outside = ("DESIGN" + ".md", "../" + "shared")
    hits = [f"{p.relative_to(REPO)}: {word}" for p in _documents()
            for word in outside if word in p.read_text(encoding="utf-8", errors="replace")]
    assert not hits, "files refer to notes that are not in the repository: " + "; ".join(hits)


def test_pointers_into_the_architecture_page_name_real_sections():
    # A comment such as (docs/architecture.md, "CPU notes") must name a section that exists.
    headings = set(re.findall(r"^## (.+)$", ARCHITECTURE.read_text(encoding="utf-8"), re.M))
    bad = []
    for p in _documents():
        for section in re.findall(r'docs/architecture\.md, \\?"([^"\\]+)\\?"', p.read_text(encoding="utf-8", errors="replace")):
            if section not in headings:
                bad.append(f"{p.relative_to(REPO)}: {section!r}")
    assert not bad, f"pointers to sections docs/architecture.md does not have: {bad}"
