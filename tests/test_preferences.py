import shutil

import pytest

from labkit import preferences, sft
from labkit.config import ConfigError
from labkit.runs import read_jsonl
from labkit.store import LabelStore


@pytest.fixture(scope="module")
def sft_run(smoke_run, tmp_path_factory):
    """Stage 1 (shared) + stage 2 on smoke, in a module-private copy."""
    dst = tmp_path_factory.mktemp("pref") / "r"
    shutil.copytree(smoke_run, dst)
    sft.run(sft.config("smoke"), run="r", runs_dir=str(dst.parent), progress_bar=False)
    return dst


@pytest.fixture
def run(sft_run, tmp_path):
    dst = tmp_path / "r"
    shutil.copytree(sft_run, dst)
    return dst


def test_ai_labels_give_trl_pairs(run):
    cfg = preferences.config("smoke", k_responses=3)
    res = preferences.run(cfg, run="r", runs_dir=str(run.parent), progress_bar=False)
    stage = run / "03_preferences"
    cands = read_jsonl(stage / "candidates.jsonl")
    assert len(cands) == cfg.n_prompts and all(len(c["responses"]) == 3 == len(c["stopped"]) for c in cands)
    assert cands[0]["gen"]["temperature"] == cfg.temperature and cands[0]["task"]["answer"]
    pairs = read_jsonl(stage / "pairs.jsonl")
    assert res["preferences/pairs"] == len(pairs) > 0
    assert set(pairs[0]) >= {"prompt", "chosen", "rejected"} and pairs[0]["chosen"] != pairs[0]["rejected"]
    # a ranking of K=3 gives up to 3 pairs per prompt; ties / identical texts are counted, not exported
    assert len(pairs) + res["preferences/ties"] + res["preferences/identical"] <= 3 * cfg.n_prompts
    with LabelStore(stage / "labels.sqlite") as store:
        assert store.annotators() == ["ai:constitution"]


def test_candidates_are_reused_when_settings_match(run):
    cfg = preferences.config("smoke")
    a = preferences.make_candidates(cfg, run="r", runs_dir=str(run.parent))
    mtime = (run / "03_preferences/candidates.jsonl").stat().st_mtime_ns
    b = preferences.make_candidates(cfg, run="r", runs_dir=str(run.parent))
    assert a == b and (run / "03_preferences/candidates.jsonl").stat().st_mtime_ns == mtime
    c = preferences.make_candidates(preferences.config("smoke", temperature=0.7), run="r", runs_dir=str(run.parent))
    assert c[0]["gen"]["temperature"] == 0.7


def test_human_mode_needs_labels_then_uses_them(run):
    cfg = preferences.config("smoke", annotator="human", min_pairs=2)
    with pytest.raises(ConfigError, match="only 0 preference pairs from people"):
        preferences.run(cfg, run="r", runs_dir=str(run.parent), progress_bar=False)
    cands = preferences.make_candidates(cfg, run="r", runs_dir=str(run.parent))
    w = preferences.widget(cfg, run="r", runs_dir=str(run.parent), mode="rank")
    for _ in range(2):  # a person ranks two prompts with the keyboard: 1, then 2 (the last goes last)
        w.press("1")
        w.press("2")
    res = preferences.run(cfg, run="r", runs_dir=str(run.parent), progress_bar=False)
    assert res["preferences/annotators"] == ["me"] and res["preferences/pairs"] >= 2
    pairs = read_jsonl(run / "03_preferences/pairs.jsonl")
    first = cands[0]
    assert any(p["prompt"] == first["prompt"] and p["chosen"] == first["responses"][0] for p in pairs) or \
        first["responses"][0] in (first["responses"][1], first["responses"][2])


def test_model_judge_labels_too(run):
    res = preferences.run(preferences.config("smoke", judge="model", n_prompts=4, k_responses=2, min_pairs=0), run="r",
                          runs_dir=str(run.parent), progress_bar=False)
    assert res["preferences/annotators"] == ["ai:model"]
    assert res["preferences/pairs"] + res["preferences/ties"] + res["preferences/identical"] >= 1


def test_bad_settings_are_clear(run):
    with pytest.raises(ConfigError, match="k_responses"):
        preferences.run(preferences.config("smoke", k_responses=9), run="r", runs_dir=str(run.parent))
    with pytest.raises(ConfigError, match="annotator"):
        preferences.run(preferences.config("smoke", annotator="robot"), run="r", runs_dir=str(run.parent))
    with pytest.raises(ConfigError, match="unknown task family poetry"):
        preferences.run(preferences.config("smoke", families="poetry"), run="r", runs_dir=str(run.parent))


def test_principles_are_shown_with_weights():
    rows = preferences.principles_table()
    assert {r["principle"] for r in rows} == {"correct", "concise", "no_repetition", "polite", "stops_cleanly"}
    assert all(r["weight"] > 0 for r in rows)


def test_world_prompts_avoid_the_evaluation_prompts(tmp_path):
    from labkit import world
    from labkit.runs import Run
    r = Run("p", tmp_path)
    cfg = preferences.config("smoke", n_prompts=300)
    tasks = preferences.prompts_for(cfg, r)
    held = world.make_tasks(r.world(), 250, "eval", 0, world.DEFAULT_FAMILIES)  # what SFT and PPO report on
    assert len(tasks) == 300 and {t["split"] for t in tasks} == {"rl"}
    assert not {t["prompt"] for t in tasks} & {t["prompt"] for t in held}
