"""docs/results.md is generated from benchmarks/results/*.json, and nothing else: it must equal what the script
writes from the committed files (so no number on it was typed by hand or went stale)."""

import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _script():
    spec = importlib.util.spec_from_file_location("results_tables", REPO / "benchmarks" / "results_tables.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_the_committed_results_page_and_readme_tables_are_the_scripts_output():
    rt = _script()
    assert (REPO / "docs" / "results.md").read_text() == rt.render(), \
        "docs/results.md is stale: run .venv/bin/python benchmarks/results_tables.py"
    for page in rt.PAGES:
        text = page.read_text()
        assert text == rt.render_readme(text), f"{page.name}'s generated tables are stale: run benchmarks/results_tables.py"


def test_the_tables_come_from_the_files(tmp_path, monkeypatch):
    """A results file with one number in it shows that number; without the file its section is absent."""
    import json
    rt = _script()
    monkeypatch.setattr(rt, "RESULTS", tmp_path)
    assert "Every stage at every seed" not in rt.render()
    seed = {"pretrain/val_ppl": 2.345, "ppo/harmful_refused_before": 30.0, "ppo/harmful_refused_after": 91.25}
    (tmp_path / "seeds.json").write_text(json.dumps({
        "preset": "cpu", "date": "d", "params": [], "threads": 1, "dev_seeds": [0], "test_seeds": [],
        "machine": {"cpu": "c", "cores": 2, "torch": "t", "aten_cpu_capability": "AVX2"}, "seeds": {"0": seed}}))
    text = rt.render()
    assert "| pretraining: validation perplexity | 2.35 |" in text and "91.2 met" in text
