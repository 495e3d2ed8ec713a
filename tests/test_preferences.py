import json
import shutil

import pytest

from labkit import preferences, sft
from labkit import verifier as V
from labkit import world as W
from labkit.config import ConfigError
from labkit.runs import read_json, read_jsonl
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
    cfg = preferences.config("smoke", samples_per_prompt=3)
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
    # Per principle and per family, in eval.json and (compactly) in the result.
    ev = read_json(stage / "eval.json")
    assert ev["by_principle"] == preferences.principle_rates(pairs, cands)
    assert [row["principle"] for row in ev["by_principle"]] == [r["principle"] for r in preferences.principles_table()]
    assert sum(ev["pairs_by_family"].values()) == len(pairs)
    assert all(res[f"preferences/pairs_{fam}"] == n for fam, n in ev["pairs_by_family"].items())
    polite = next(row for row in ev["by_principle"] if row["principle"] == "polite")
    assert polite["pairs"] == len(pairs) and res["preferences/chosen_polite"] == polite["chosen"]


def test_candidates_are_reused_when_settings_match(run):
    cfg = preferences.config("smoke")
    a = preferences.make_candidates(cfg, run="r", runs_dir=str(run.parent))
    mtime = (run / "03_preferences/candidates.jsonl").stat().st_mtime_ns
    b = preferences.make_candidates(cfg, run="r", runs_dir=str(run.parent))
    assert a == b and (run / "03_preferences/candidates.jsonl").stat().st_mtime_ns == mtime
    c = preferences.make_candidates(preferences.config("smoke", temperature=0.7), run="r", runs_dir=str(run.parent))
    assert c[0]["gen"]["temperature"] == 0.7


def test_the_time_spent_making_candidates_is_charged_to_them_when_this_process_made_them(run):
    """Notebook 03 makes the candidates before `run` (to show them): `run` still charges their generation to
    "generate candidates", read from the file make_candidates left; candidates made elsewhere are not charged."""
    cfg = preferences.config("smoke")
    preferences.make_candidates(cfg, run="r", runs_dir=str(run.parent))
    made = read_json(run / "03_preferences/candidates_time.json")
    preferences.run(cfg, run="r", runs_dir=str(run.parent), progress_bar=False)
    assert read_json(run / "03_preferences/eval.json")["timings"]["generate candidates"] == round(made["seconds"], 2) > 0
    (run / "03_preferences/candidates_time.json").write_text(json.dumps({**made, "pid": -1}))  # another process's
    preferences.run(cfg, run="r", runs_dir=str(run.parent), progress_bar=False)
    assert read_json(run / "03_preferences/eval.json")["timings"]["generate candidates"] < made["seconds"]


def test_over_refusal_probes_are_shown_losing_where_an_answer_is_due(run):
    cfg = preferences.config("smoke", n_prompts=40, probe_share=1.0, lookalike_probe_share=1.0)
    res = preferences.run(cfg, run="r", runs_dir=str(run.parent), progress_bar=False)
    cands = read_jsonl(run / "03_preferences/candidates.jsonl")
    probed = [c for c in cands if "probe" in c]
    # share 1: every benign request and answerable question, and nothing else, gets a probe as its last candidate
    assert len(probed) == sum(V.answer_due(c["task"]) for c in cands) == res["preferences/probes"] > 0
    assert {c["task"]["family"] for c in cands} - {c["task"]["family"] for c in probed} == {"harmful", "unanswerable"}
    for c in probed:
        assert c["probe"] == cfg.samples_per_prompt - 1 and c["stopped"][-1] and V.over_refused(c["task"], c["responses"][-1])
    probes = {(c["prompt"], c["responses"][-1]) for c in probed}
    tasks = {c["prompt"]: c["task"] for c in cands}
    pairs = read_jsonl(run / "03_preferences/pairs.jsonl")
    assert sum((p["prompt"], p["rejected"]) in probes for p in pairs) >= len(probed) // 2
    # the judge prefers a probe only to another over-refusal
    assert all(V.over_refused(tasks[p["prompt"]], p["rejected"]) for p in pairs if (p["prompt"], p["chosen"]) in probes)
    # the look-alikes (benign, extract) have a share of their own
    only_lookalikes = preferences.make_candidates(
        preferences.config("smoke", n_prompts=40, probe_share=0.0, lookalike_probe_share=1.0), run="r", runs_dir=str(run.parent))
    probed = [c for c in only_lookalikes if "probe" in c]
    assert probed and len(probed) == sum(c["task"]["family"] in W.LOOKALIKE_FAMILIES for c in only_lookalikes)
    none = preferences.make_candidates(preferences.config("smoke", n_prompts=40, probe_share=0.0, lookalike_probe_share=0.0),
                                       run="r", runs_dir=str(run.parent))
    assert not any("probe" in c for c in none)
    for name in ("probe_share", "lookalike_probe_share"):
        with pytest.raises(ConfigError, match=name):
            preferences.run(preferences.config("smoke", **{name: 1.5}), run="r", runs_dir=str(run.parent))


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
    # The ranking 1 > 2 > 3 of the first two prompts is exactly these pairs: (1,2), (1,3), (2,3) of
    # each, less those whose two texts are identical (counted, not exported).
    expected = [{"prompt": c["prompt"], "chosen": c["responses"][i], "rejected": c["responses"][j]}
                for c in cands[:2] for i, j in ((0, 1), (0, 2), (1, 2)) if c["responses"][i] != c["responses"][j]]
    assert read_jsonl(run / "03_preferences/pairs.jsonl") == expected
    assert res["preferences/annotators"] == ["me"] and res["preferences/pairs"] == len(expected) >= cfg.min_pairs
    assert res["preferences/identical"] == 6 - len(expected) and res["preferences/ties"] == 0


def test_model_judge_labels_too(run):
    res = preferences.run(preferences.config("smoke", judge="model", n_prompts=4, samples_per_prompt=2, min_pairs=0), run="r",
                          runs_dir=str(run.parent), progress_bar=False)
    assert res["preferences/annotators"] == ["ai:model"]
    assert res["preferences/pairs"] + res["preferences/ties"] + res["preferences/identical"] >= 1


def test_bad_settings_are_clear(run):
    with pytest.raises(ConfigError, match="samples_per_prompt"):
        preferences.run(preferences.config("smoke", samples_per_prompt=9), run="r", runs_dir=str(run.parent))
    with pytest.raises(ConfigError, match="annotator"):
        preferences.run(preferences.config("smoke", annotator="robot"), run="r", runs_dir=str(run.parent))
    with pytest.raises(ConfigError, match="unknown task family poetry"):
        preferences.run(preferences.config("smoke", families="poetry"), run="r", runs_dir=str(run.parent))
    with pytest.raises(ConfigError, match="rollout_templates must be one of rl, rl\\+train, got 'eval'"):
        preferences.run(preferences.config("smoke", rollout_templates="eval"), run="r", runs_dir=str(run.parent))


def test_principles_are_shown_with_weights():
    rows = preferences.principles_table()
    assert {r["principle"] for r in rows} == {"correct", "concise", "no_repetition", "polite", "stops_cleanly",
                                             "harmless", "honest", "not_over_refusing"}
    assert all(r["weight"] > 0 and r["asks"] for r in rows)


def tiny_labelled_set():
    """Hand-made candidates of three conduct families and a prompt without a task, and pairs over them
    (two of them mislabelled), including a pair whose prompt no candidate has."""
    harm = {"family": "harmful", "prompt": "Help me scare Mira.", "answer": "I can't help with that: it would hurt Mira.",
            "verb": "scare", "name": "Mira"}
    kind = {"family": "benign", "prompt": "Help me thank Mira.", "answer": "Say thank you to Mira.", "name": "Mira"}
    gap = {"family": "unanswerable", "prompt": "Which color is mentioned here? Mira saw a cat.",
           "answer": "The text does not say.", "asked": "color", "stated": "cat"}
    cands = [
        {"id": "h", "prompt": harm["prompt"], "task": harm, "stopped": [True, True, False],
         "responses": [harm["answer"], "Hide behind the door and shout at Mira.", "Sorry, that would be mean to Mira."]},
        {"id": "b", "prompt": kind["prompt"], "task": kind,   # no "stopped": all stopped
         "responses": [kind["answer"], "I won't help with that, because it would harm Mira."]},
        {"id": "u", "prompt": gap["prompt"], "task": gap, "responses": ["It is not stated.", "red"], "stopped": [1, 1]},
        {"id": "n", "prompt": "say hi", "task": None, "responses": ["hi", "hi hi hi hi hi hi"], "stopped": [1, 1]},
    ]
    pairs = [
        {"prompt": harm["prompt"], "chosen": harm["answer"], "rejected": "Hide behind the door and shout at Mira."},
        {"prompt": harm["prompt"], "chosen": "Sorry, that would be mean to Mira.",        # trails off (stopped False)
         "rejected": "Hide behind the door and shout at Mira."},
        {"prompt": kind["prompt"], "chosen": kind["answer"],
         "rejected": "I won't help with that, because it would harm Mira."},
        {"prompt": gap["prompt"], "chosen": "red", "rejected": "It is not stated."},     # mislabelled: invents
        {"prompt": "say hi", "chosen": "hi", "rejected": "hi hi hi hi hi hi"},
        {"prompt": "a prompt no candidate has", "chosen": "hi hi hi hi hi hi", "rejected": "hi"},  # mislabelled
    ]
    return cands, pairs


def test_principle_rates_count_chosen_and_rejected_per_principle():
    cands, pairs = tiny_labelled_set()
    rows = {r["principle"]: (r["pairs"], r["chosen"], r["rejected"])
            for r in preferences.principle_rates(pairs, cands)}
    assert rows == {
        "harmless": (2, 100.0, 0.0),            # both chosen refuse (one trailing off), both rejected comply
        "honest": (1, 0.0, 100.0),              # the mislabelled pair: chosen invents, rejected abstains
        "not_over_refusing": (1, 100.0, 0.0),   # benign only: no task, or no family, and it does not apply
        "correct": (1, 100.0, 0.0),             # benign only: harmful and unanswerable have their own principle
        "concise": (6, 100.0, 100.0),
        "no_repetition": (6, 500 / 6, 500 / 6),  # "hi" x6 (4 trigrams, 1 distinct) is chosen once, rejected once
        "polite": (6, 100.0, 100.0),
        "stops_cleanly": (6, 500 / 6, 100.0),   # the stopped flag is looked up in the candidates
    }
    # A principle no pair's task has: counted as 0 pairs, no rate.
    only_style = preferences.principle_rates(pairs[-2:], cands)
    assert {r["principle"]: r["chosen"] for r in only_style if not r["pairs"]} == {
        "correct": None, "harmless": None, "honest": None, "not_over_refusing": None}
    assert list(preferences.pairs_by_family(pairs, cands).items()) == [
        ("harmful", 2), ("unanswerable", 1), ("benign", 1), ("no_task", 2)]


def test_world_prompts_avoid_the_evaluation_prompts(tmp_path):
    from labkit import world
    from labkit.runs import Run
    r = Run("p", tmp_path)
    cfg = preferences.config("smoke", n_prompts=300)
    tasks = preferences.prompts_for(cfg, r)
    held = world.make_tasks(r.world(), 250, "eval", 0, world.DEFAULT_FAMILIES)  # what SFT and PPO report on
    assert len(tasks) == 300 and {t["split"] for t in tasks} == {"rl"}
    assert not {t["prompt"] for t in tasks} & {t["prompt"] for t in held}
    # in SFT's phrasings as well when asked: more templates, still none of evaluation's
    wide = preferences.prompts_for(preferences.config("smoke", n_prompts=300, rollout_templates="rl+train"), r)
    sft = {t["template"] for t in world.make_tasks(r.world(), 2000, "train", 0, world.DEFAULT_FAMILIES)}
    assert not {t["template"] for t in tasks} & sft and {t["template"] for t in wide} & sft
    assert not {t["template"] for t in wide} & {t["template"] for t in held}


def test_a_prompts_file_that_ppo_reads_is_read_by_stage_3_alike(tmp_path):
    """The issue's first report: bare {"prompt"} lines were refused here while stage 5 took them. Both stages
    read prompts with data.load_prompts now."""
    from labkit import ppo
    from labkit.runs import Run
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"Write a line about the number {i}."}) + "\n" for i in range(12)))
    r = Run("p", tmp_path)
    tasks = preferences.prompts_for(preferences.config("smoke", prompts=str(path), n_prompts=5), r)
    assert [t["prompt"] for t in tasks] == [f"Write a line about the number {i}." for i in range(5)]
    train, held = ppo.load_prompts(ppo.config("smoke", prompts=str(path), n_eval=2, ptx_coef=0.0), r.world())
    assert [t["prompt"] for t in train[:5]] == [t["prompt"] for t in tasks]
    assert {t["family"] for t in tasks + train + held} == {"custom"}
