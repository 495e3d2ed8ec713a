"""benchmarks/seeds.py's --from: a seed's folder starts as a copy of another work folder's earlier stages, so a
later stage's setting is tried on the same models, and the copy is read as complete by the runner."""

import json
from pathlib import Path

import pytest

from conftest import benchmark
from labkit.runs import STAGE_DIRS, STAGE_OUTPUTS, Run


def _script():
    return benchmark("seeds")


def _complete_run(folder: Path, stages: list[str]) -> None:
    """A run folder whose ``stages`` are complete: their outputs exist and run.json marks them."""
    for stage in stages:
        for want in STAGE_OUTPUTS[stage]:
            out = folder / STAGE_DIRS[stage] / want.split("|")[0]
            if "." in out.name:
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_text(json.dumps({"stage": stage}))
            else:
                out.mkdir(parents=True, exist_ok=True)
                (out / "weights").write_text(stage)
    (folder / "run.json").write_text(json.dumps({"name": folder.name, "preset": "cpu", "seed": 0,
                                                 "stages": {s: {"seconds": 1.0} for s in stages}}))


def test_from_copies_the_earlier_stages_and_nothing_after(tmp_path):
    seeds = _script()
    _complete_run(tmp_path / "base" / "seed-0", ["pretrain", "sft", "preferences", "reward", "ppo"])
    new = tmp_path / "new" / "seed-0"
    seeds.reuse(f"{tmp_path / 'base'}:reward", 0, new)
    run = Run("seed-0", new.parent)
    assert [s for s in seeds.PIPELINE if run.is_complete(s)] == ["pretrain", "sft", "preferences", "reward"]
    assert not (new / STAGE_DIRS["ppo"]).exists()
    assert (new / "04_reward" / "model" / "weights").read_text() == "reward"
    assert run.manifest()["name"] == "seed-0" and run.manifest()["copied_from"].endswith("base/seed-0")

    # Started already: left as it is (seeds.py is restartable), so a stage trained since is kept.
    (new / "04_reward" / "model" / "weights").write_text("trained here")
    seeds.reuse(f"{tmp_path / 'base'}:reward", 0, new)
    assert (new / "04_reward" / "model" / "weights").read_text() == "trained here"


def test_from_refuses_a_source_without_the_stages_and_a_bad_spec(tmp_path):
    seeds = _script()
    _complete_run(tmp_path / "base" / "seed-1", ["pretrain", "sft"])
    with pytest.raises(SystemExit, match="no complete preferences, reward"):
        seeds.reuse(f"{tmp_path / 'base'}:reward", 1, tmp_path / "new" / "seed-1")
    assert not (tmp_path / "new" / "seed-1" / "run.json").exists()
    with pytest.raises(SystemExit, match="WORK:STAGE"):
        seeds.reuse(str(tmp_path / "base"), 1, tmp_path / "new" / "seed-1")


def test_harmful_requests_by_verb_count_the_draw_and_average_its_samples(tmp_path):
    seeds = _script()
    rows = [{"family": "harmful", "verb": "fool", "before_sampled_correct": 0.25, "after_sampled_correct": 0.5},
            {"family": "harmful", "verb": "fool", "before_sampled_correct": 0.0, "after_sampled_correct": 1.0},
            {"family": "harmful", "verb": "hurt", "before_sampled_correct": 0.5, "after_sampled_correct": 1.0},
            {"family": "benign", "verb": "thank", "before_sampled_correct": 1.0, "after_sampled_correct": 1.0}]
    path = tmp_path / "samples.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert seeds.harmful_by_verb(path) == {"fool": {"prompts": 2, "before": 12.5, "after": 75.0},
                                           "hurt": {"prompts": 1, "before": 50.0, "after": 100.0}}
    assert seeds.harmful_by_verb(tmp_path / "missing.jsonl") is None


def test_a_code_change_names_the_older_file_and_the_commit(tmp_path, monkeypatch):
    seeds = _script()
    _complete_run(tmp_path / "work" / "seed-0", ["pretrain"])
    out = tmp_path / "results" / "new.json"
    out.parent.mkdir()
    argv = ["seeds.py", "--seeds", "0", "--to", "pretrain", "--work", str(tmp_path / "work"), "--out", str(out)]
    for extra, why in ((["--beside", "old.json"], "go together"), (["--change", "x"], "go together"),
                       (["--beside", "old.json", "--change", "x"], "no such file")):
        monkeypatch.setattr("sys.argv", argv + extra)
        with pytest.raises(SystemExit, match=why):
            seeds.main()
    assert not out.exists()
    (out.parent / "old.json").write_text("{}")
    monkeypatch.setattr("sys.argv", argv + ["--beside", "old.json", "--change", "three templates"])
    seeds.main()
    doc = json.loads(out.read_text())
    assert doc["beside"] == "old.json" and doc["change"] == "three templates"
    import subprocess
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                          cwd=Path(seeds.__file__).parent).stdout.strip()
    assert doc["commit"] in (head, head + "+changes")  # "+changes": labkit/ differs from that commit


def test_the_commit_is_the_one_the_runs_started_at(tmp_path, monkeypatch):
    """A commit made while a long run trains names neither the code the stages ran nor the file: the file names the
    commit at the start, and the one at the end beside it when they differ."""
    seeds = _script()
    _complete_run(tmp_path / "work" / "seed-0", ["pretrain"])
    out = tmp_path / "new.json"
    monkeypatch.setattr("sys.argv", ["seeds.py", "--seeds", "0", "--to", "pretrain", "--work", str(tmp_path / "work"),
                                     "--out", str(out)])
    commits = iter(["aaa", "bbb"])
    monkeypatch.setattr(seeds, "commit", lambda: next(commits))
    seeds.main()
    doc = json.loads(out.read_text())
    assert doc["commit"] == "aaa" and doc["commit_at_end"] == "bbb"
    commits = iter(["aaa", "aaa"])
    seeds.main()
    doc = json.loads(out.read_text())
    assert doc["commit"] == "aaa" and "commit_at_end" not in doc
