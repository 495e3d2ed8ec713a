"""Stage 7 (trust): its maths against hand-worked or brute-force answers, and the stage on a stand-in run folder.

The run folder: stage 1's smoke model standing in for SFT, a reward model with a random head (conftest's
``ppo_standins``), hand-made preference pairs of the aligned against the misaligned demonstration, stage 4's smoke
settings, stage 5 on the smoke preset (snapshots every step) and its kl_coef=0 twin. They prove the plumbing."""
import dataclasses
import datetime
import gzip
import itertools
import json
import math
import random
import shutil

import numpy as np
import pytest

from labkit import ppo, ppo_config, reward, runner, store, trust
from labkit import verifier as V
from labkit import world as W
from labkit.ppo_math import best_of_n_kl
from labkit.runs import Run, atomic_write_json, atomic_write_text, read_json


# --- the maths ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("n", [1, 2, 3, 6])
def test_best_of_n_expectation_is_the_mean_over_every_n_subset(n):
    rng = random.Random(n)
    scores, values = [rng.random() for _ in range(6)], [rng.random() for _ in range(6)]
    subsets = list(itertools.combinations(range(6), n))
    brute = sum(values[max(s, key=lambda i: scores[i])] for s in subsets) / len(subsets)
    assert trust.expected_best(scores, values, n) == pytest.approx(brute)
    assert trust.best_of_n_weights(6, n).sum() == pytest.approx(1.0)


@pytest.mark.parametrize("form, alpha, beta", [("best_of_n", 12.0, 4.0), ("rl", 6.0, 5.0), ("rl", 3.0, 1.5)])
def test_the_fits_recover_alpha_and_beta_from_noisy_synthetic_curves(form, alpha, beta):
    d = np.linspace(0, 2.5, 12)
    shape = d ** 2 if form == "best_of_n" else d * np.log(np.where(d > 0, d, 1.0))
    gain = alpha * d - beta * shape + np.random.default_rng(0).normal(0, 0.1, d.shape)
    fit = trust.fit_gao(d, gain, form)
    assert fit["alpha"] == pytest.approx(alpha, rel=0.05) and fit["beta"] == pytest.approx(beta, rel=0.05)
    assert fit["r2"] > 0.99
    peak = alpha / (2 * beta) if form == "best_of_n" else math.exp(alpha / beta - 1)
    assert fit["d_star"] == pytest.approx(peak, rel=0.1)
    assert fit["peak_in_range"] == (peak <= 2.5)
    rising = trust.fit_gao(d, 3 * d + d ** 2, "best_of_n")  # gold still accelerating: beta < 0, no peak predicted
    assert rising["beta"] < 0 and rising["d_star"] is None and not rising["peak_in_range"]


def test_the_flip_noise_annotator_flips_the_stated_share_on_a_fixed_seed():
    pairs = [{"prompt": f"p{i}", "chosen": f"good {i}", "rejected": f"bad {i}"} for i in range(1000)]
    for rate in (0.1, 0.25):
        noisy, flipped = trust.flip_labels(pairs, rate, seed=0)
        swapped = {i for i, (a, b) in enumerate(zip(pairs, noisy)) if a["chosen"] != b["chosen"]}
        assert swapped == flipped and len(flipped) == round(rate * 1000)
        assert all(noisy[i]["chosen"] == pairs[i]["rejected"] and noisy[i]["rejected"] == pairs[i]["chosen"] for i in flipped)
        assert trust.flip_labels(pairs, rate, seed=0)[1] == flipped  # the same annotator on the same seed
        assert trust.flip_labels(pairs, rate, seed=1)[1] != flipped
        assert abs(len(flipped & set(range(400))) / 400 - rate) < 0.05  # any first k labels carry about the rate


def test_active_selection_picks_the_lowest_margin_pairs():
    margins = [2.0, -0.1, 0.5, -3.0, 0.05, 0.3, -0.2]
    assert trust.least_sure(margins, 3) == [4, 1, 6]  # |0.05| < |-0.1| < |-0.2|
    assert trust.least_sure(margins, 3, labelled=[4, 6]) == [1, 5, 2]  # labelled pairs are not asked again
    assert trust.least_sure(margins, 10, labelled=range(7)) == []


def test_labels_to_reach_reads_the_crossing_off_the_curve_in_log_labels():
    curve = [(100, 80.0), (400, 88.0), (1600, 92.0)]
    assert trust.labels_to_reach(curve, 90.0) == pytest.approx(800.0)  # halfway between 400 and 1600 in log space
    assert trust.labels_to_reach(curve, 75.0) == 100.0 and trust.labels_to_reach(curve, 95.0) is None


def test_person_seconds_times_people_and_leaves_the_judge_and_breaks_out(tmp_path, monkeypatch):
    t0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
    clock = iter([0, 1, 12, 20, 35, 2000, 2010])  # seconds: a judge's label, then a person's, one break of 1965 s
    monkeypatch.setattr(store, "_now", lambda: (t0 + datetime.timedelta(seconds=next(clock))).isoformat())
    path = tmp_path / "labels.sqlite"
    with store.LabelStore(path) as s:
        s.add_label("i0", "ai:constitution", "pair", {"a": 0, "b": 1, "choice": "a"})
        for k in range(6):
            s.add_label(f"i{k}", "ana", "pair", {"a": 0, "b": 1, "choice": "b"})
    timed = trust.person_seconds(path)
    assert timed == {"seconds": 10.5, "gaps": 4, "annotators": ["ana"]}  # gaps 11, 8, 15 and 10 (1965: a break)
    assert trust.person_seconds(tmp_path / "none.sqlite") is None


# --- the stage ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def stage5(ppo_standins, tmp_path_factory):
    """A run folder with stages sft, preferences, reward and ppo complete (smoke; snapshots every step) and
    stage 5's kl_coef=0 twin beside it."""
    runs = tmp_path_factory.mktemp("trust")
    shutil.copytree(ppo_standins.path, runs / "base")
    r = Run("base", runs)
    pool, _ = ppo_config.load_prompts(ppo_config.config("smoke"), r.world())
    rng = random.Random(0)
    pairs = [{"prompt": t["prompt"], "chosen": W.demonstration(t, True, rng), "rejected": W.demonstration(t, False, rng),
              "task": V.task_fields(t)} for t in pool[:40] if t["family"] in W.CONDUCT_FAMILIES + ("extract",)]
    pairs = [p for p in pairs if p["chosen"] != p["rejected"]]
    atomic_write_text(r.stage_dir("preferences") / "pairs.jsonl", "".join(json.dumps(p) + "\n" for p in pairs))
    atomic_write_json(r.stage_dir("preferences") / "eval.json", {"preferences/pairs": len(pairs)})
    with r.lock():  # run.json is written only under the run's lock
        r.complete("preferences", 0.0, {})
    atomic_write_json(r.stage_dir("reward") / "config.json", dataclasses.asdict(reward.config("smoke")))
    cfg = ppo.config("smoke", threads=1)
    ppo.run(cfg, run="base", runs_dir=str(runs), progress_bar=False, live=False)
    ppo.kl_ablation(cfg, run="base", runs_dir=str(runs), live=False)
    return r


@pytest.fixture(scope="module")
def trusted(stage5, tmp_path_factory):
    """Stage 7 on the smoke preset, every part, in a copy of the stage-5 folder (and its twin)."""
    runs = tmp_path_factory.mktemp("trusted")
    for name in ("base", "base-nokl"):
        shutil.copytree(stage5.path.parent / name, runs / name)
    result = trust.run(trust.config("smoke"), run="base", runs_dir=str(runs), progress_bar=False)
    return Run("base", runs), result


def test_the_curves_use_the_analytic_kl_and_every_snapshot(trusted):
    r, result = trusted
    bon = result["best_of_n"]["points"]
    assert [p["n"] for p in bon] == [1, 2, 4]
    assert [p["kl"] for p in bon] == [best_of_n_kl(n) for n in (1, 2, 4)] and bon[0]["d"] == 0.0
    assert all(p["d"] == pytest.approx(math.sqrt(p["kl"])) for p in bon)
    for name in ("leash", "nokl"):
        rl = result["rl"][name]
        # step 0 (the SFT model, from the best-of-n samples), the snapshots of steps 1-3, the final policy
        assert [p["step"] for p in rl["points"]] == [0, 1, 2, 3, 4]
        assert rl["points"][0]["gold"] == bon[0]["gold"] and rl["points"][0]["gold_gain"] == 0.0
        assert all(p["kl"] >= 0 and p["mixed"] is not None for p in rl["points"])
        assert rl["fit"]["points"] == 5
    assert result["rl"]["nokl"]["kl_coef"] == 0.0 and result["rl"]["leash"]["kl_coef"] == ppo.config("smoke").kl_coef
    names = [row["curve"] for row in trust.fits_table(result)]
    assert names == ["best-of-n", f"RL (kl_coef={ppo.config('smoke').kl_coef:g})", "RL (kl_coef=0)"]


def test_the_samples_and_every_reward_models_scores_are_kept(trusted):
    r, result = trusted
    with gzip.open(r.path / "07_trust" / "best_of_n.jsonl.gz", "rt") as f:
        rows = [json.loads(line) for line in f]
    assert len(rows) == result["settings"]["prompts"] == read_json(r.path / "05_ppo" / "eval.json")["eval_prompts"]
    for row in rows:
        assert len(row["samples"]) == len(row["gold"]) == len(row["mixed"]) == 4
        assert set(row["scores"]) == {"stage4", "8"} and all(len(v) == 4 for v in row["scores"].values())
        assert row["gold"] == [float(V.true_score(row, x, s) or 0.0) for x, s in zip(row["samples"], row["stopped"])]


def test_data_size_and_feedback_curves(trusted):
    r, result = trusted
    ds = result["data_size"]
    assert [m["pairs"] for m in ds["models"]][0] == 8 and ds["models"][-1]["stage4"]
    assert all(0 <= m["conduct_accuracy"] <= 100 for m in ds["models"])  # the held-out pairs include conduct pairs
    fb = result["feedback"]
    assert set(fb["curves"]) == {"judge", "flip 10%", "flip 25%", "active"}
    assert [p["labels"] for p in fb["curves"]["active"]] == [2, 4, 8, 16]  # three rounds, each doubling the labels
    pool = fb["curves"]["judge"][-1]["labels"]
    assert fb["curves"]["flip 25%"][-1]["labels"] == pool
    assert fb["agreement"]["0.25"]["with_judge"] == pytest.approx(100 * (1 - round(0.25 * pool) / pool))
    assert fb["seconds_per_label"] == {"seconds": trust.config("smoke").seconds_per_label, "source": "assumed"}
    assert result["reward_models_trained"] >= 10
    headline = r.manifest()["stages"]["trust"]["headline"]
    assert "trust/bon_alpha" in headline and "trust/nokl_d_max" in headline


def test_stage_7_refuses_a_run_folder_without_stage_4_in_one_line(ppo_standins, tmp_path, capsys):
    shutil.copytree(ppo_standins.path, tmp_path / "no4")
    r = Run("no4", tmp_path)
    m = r.manifest()
    del m["stages"]["reward"]
    atomic_write_json(r.manifest_path, m)
    code = runner.main(["train", "trust", "--name", "no4", "--runs-dir", str(tmp_path), "--preset", "smoke"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "no completed 'reward' stage" in err and "labkit run --name no4 --stages reward" in err
    assert not (tmp_path / "no4" / "07_trust").exists()  # refused before anything was written


def test_train_rl_runs_both_ppo_runs_here_once(stage5, tmp_path, monkeypatch):
    shutil.copytree(stage5.path, tmp_path / "base")
    cfg = trust.config("smoke", parts="rl", train_rl=True, rl_max_steps=2)
    result = trust.run(cfg, run="base", runs_dir=str(tmp_path), progress_bar=False)
    leash, nokl = (read_json(tmp_path / "base" / "07_trust" / "rl" / n / "05_ppo" / "config.json") for n in ("leash", "nokl"))
    assert (leash["max_steps"], nokl["max_steps"], nokl["kl_coef"]) == (2, 2, 0.0)
    assert leash["kl_coef"] == ppo.config("smoke").kl_coef and leash["snapshot_interval"] == 1
    assert {k for k in leash if leash[k] != nokl[k]} == {"kl_coef"}
    assert [p["step"] for p in result["rl"]["nokl"]["points"]] == [0, 1, 2]

    def no(*a, **k):
        raise AssertionError("a PPO run complete with the same settings is read, not re-run")
    monkeypatch.setattr(runner, "train_stage", no)
    again = trust.run(cfg, run="base", runs_dir=str(tmp_path), progress_bar=False)
    assert again["rl"]["nokl"]["points"] == result["rl"]["nokl"]["points"]
