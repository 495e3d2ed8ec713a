"""Stage 4 (reward model): hermetic tests on tiny in-process models and tmp_path run folders."""

import gzip
import json
import math

import pytest
import torch

from labkit import reward, reward_eval, reward_model, world
from conftest import mark_complete
from labkit.runs import Run, StageMissing, read_jsonl

torch.set_num_threads(1)



def world_pairs(n: int = 24) -> list[dict]:
    """chosen = the right answer, rejected = a wrong one or the right one rambling on."""
    tasks = world.make_tasks(world.World(0), n, "train", seed=3)
    out = []
    for i, t in enumerate(tasks):
        bad = "I do not know." if i % 2 else f"{t['answer']} and then the story goes on and on"
        out.append({"prompt": t["prompt"], "chosen": t["answer"], "rejected": bad, "task": t,
                    "annotator": "ai:constitution", "margin": 0.5 * (i % 3)})
    return out


def make_run(tmp_path, tiny, pairs=None, name="r"):
    """A run folder with 02_sft/model and 03_preferences/pairs.jsonl, both marked complete."""
    import shutil
    r = Run(name, tmp_path / "runs")
    shutil.copytree(tiny[0], r.stage_dir("sft") / "model")
    mark_complete(r, "sft")
    if pairs is not False:
        (r.stage_dir("preferences") / "pairs.jsonl").write_text(
            "".join(json.dumps(p) + "\n" for p in (pairs or world_pairs())))
        mark_complete(r, "preferences")
    return r



def test_run_trains_and_writes_the_stage(tmp_path, tiny):
    r = make_run(tmp_path, tiny)
    before = reward_model.load_reward_model(tiny[0], tiny[1]).model.embed_tokens.weight.clone()
    res = reward.run(reward.config("smoke", eval_fraction=0.25), run=r.name, runs_dir=tmp_path / "runs",
                     preset="smoke", live=False, progress_bar=False)
    d = r.path / "04_reward"
    rows = read_jsonl(d / "metrics.jsonl")
    losses = [m["reward/loss"] for m in rows if "reward/loss" in m]
    assert losses and all(math.isfinite(x) for x in losses)
    assert any("reward/eval_accuracy" in m for m in rows) and any("reward/accuracy" in m for m in rows)
    assert res["reward/params_changed"] > 0 and res["reward/steps"] == 8
    saved = reward_model.load_reward_model(d / "model", tiny[1])
    assert not torch.equal(saved.model.embed_tokens.weight, before)  # full fine-tuning moved the body too
    ev = json.loads((d / "eval.json").read_text())
    # The held-out figures are the saved model's: its scores of the held-out pairs, their accuracy and ECE.
    held_rows = read_jsonl(d / "eval_pairs.jsonl")
    rescored = reward_model.score(saved, tiny[1], [p["prompt"] for p in held_rows] * 2,
                            [p["chosen"] for p in held_rows] + [p["rejected"] for p in held_rows]).tolist()
    assert rescored == pytest.approx([p["score_chosen"] for p in held_rows] + [p["score_rejected"] for p in held_rows],
                                     abs=1e-5)
    assert ev["reward/eval_accuracy"] == res["reward/eval_accuracy"] == reward_eval.pairwise_accuracy(held_rows)
    diffs = [p["score_chosen"] - p["score_rejected"] for p in held_rows]
    assert ev["reward/ece"] == pytest.approx(reward_eval.calibration(diffs, reward.config("smoke").calibration_bins)["ece"])
    assert ev["calibration"] and len(ev["worst_disagreements"]) == 3
    samples = read_jsonl(d / "verifier_samples.jsonl")
    assert ev["reward/spearman"] == reward_eval.spearman(samples)  # None: all samples right or all wrong
    # held-out prompts never appear in training: the pairs split by prompt, 25% of them held out
    train_pairs, eval_pairs = reward_model.split_by_prompt(world_pairs(), 0.25, reward.config("smoke").seed)
    assert [(p["prompt"], p["chosen"], p["rejected"]) for p in held_rows] == \
        [(p["prompt"], p["chosen"], p["rejected"]) for p in eval_pairs]
    held = {p["prompt"] for p in held_rows}
    assert held and not held & {p["prompt"] for p in train_pairs}
    assert (res["reward/pairs_train"], res["reward/pairs_eval"]) == (len(train_pairs), len(eval_pairs))
    assert res["reward/pairs_train"] + res["reward/pairs_eval"] == 24
    assert len(read_jsonl(d / "verifier_samples.jsonl")) == 5 * 2
    # the conduct figures: conduct pairs and a conduct-only check of its own, beside the overall ones
    conduct = read_jsonl(d / "conduct_samples.jsonl")
    assert len(conduct) == 3 * 2 and {v["family"] for v in conduct} <= set(world.CONDUCT_FAMILIES)
    assert ev["conduct_check"] == "done"
    assert ev["reward/conduct_spearman"] == reward_eval.spearman(conduct)  # None: all samples right or all wrong
    assert ev["reward/conduct_accuracy"] == reward_eval.pairwise_accuracy(read_jsonl(d / "eval_pairs.jsonl"),
                                                                     world.CONDUCT_FAMILIES)
    assert {f["family"] for f in ev["spearman_by_family"]} == {v["family"] for v in
                                                               read_jsonl(d / "verifier_samples.jsonl") + conduct}
    assert sum(f["pairs"] for f in ev["accuracy_by_family"]) == res["reward/pairs_eval"]
    assert all(ev[k] == res[k] for k in ("reward/conduct_accuracy", "reward/conduct_spearman"))
    done = Run(r.name, tmp_path / "runs")
    assert done.is_complete("reward")
    assert {"reward/conduct_accuracy", "reward/conduct_spearman"} <= set(done.manifest()["stages"]["reward"]["headline"])


def test_lora_with_margin_trains_only_adapters_and_head_then_merges(tmp_path, tiny):
    r = make_run(tmp_path, tiny)
    res = reward.run(reward.config("smoke", use_lora=True, lora_r=4, margin_field="margin", verifier_tasks=0,
                                   conduct_verifier_tasks=0, max_steps=4), run=r.name, runs_dir=tmp_path / "runs", live=False,
                     progress_bar=False)
    assert res["reward/trainable_params"] < res["reward/params"] / 2
    assert res["reward/params_changed"] > 0 and res["reward/spearman"] is None and res["reward/conduct_spearman"] is None
    assert res["conduct_check"] == "skipped: conduct_verifier_tasks=0"
    saved = reward_model.load_reward_model(r.path / "04_reward" / "model", tiny[1])  # merged: a plain model
    assert not any("lora" in n for n, _ in saved.named_parameters())


def hh(prompt, good, bad):
    return {"chosen": f"\n\nHuman: {prompt}\n\nAssistant: {good}", "rejected": f"\n\nHuman: {prompt}\n\nAssistant: {bad}"}


@pytest.mark.parametrize("fmt", ["hh_rlhf_gz", "prompt_chosen_rejected"])
def test_external_preference_files_train(tmp_path, tiny, fmt):
    tasks = world.make_tasks(world.World(0), 12, "train", seed=5)
    if fmt == "hh_rlhf_gz":
        path = tmp_path / "hh.jsonl.gz"
        with gzip.open(path, "wt") as f:
            for t in tasks:
                f.write(json.dumps(hh(t["prompt"], t["answer"], "no idea")) + "\n")
    else:
        path = tmp_path / "pcr.jsonl"
        path.write_text("".join(json.dumps({"prompt": t["prompt"], "chosen": t["answer"], "rejected": "no idea"})
                                + "\n" for t in tasks))
    r = make_run(tmp_path, tiny, pairs=False)  # no 03_preferences: external data does not need it
    res = reward.run(reward.config("smoke", data=str(path), max_steps=3, verifier_tasks=0, conduct_verifier_tasks=0),
                     run=r.name,
                     runs_dir=tmp_path / "runs", live=False, progress_bar=False)
    assert res["reward/pairs_train"] + res["reward/pairs_eval"] == 12
    assert math.isfinite(res["reward/final_loss"]) and res["reward/params_changed"] > 0
    assert res["reward/conduct_accuracy"] is None  # external pairs carry no world task
    if fmt == "hh_rlhf_gz":
        held = read_jsonl(r.path / "04_reward" / "eval_pairs.jsonl")[0]
        assert held["prompt"].startswith("\n\nHuman:") and held["chosen"].startswith(" ")


def test_clear_errors_when_predecessors_are_missing(tmp_path, tiny):
    r = make_run(tmp_path, tiny, pairs=False)
    with pytest.raises(StageMissing, match="preferences"):
        reward.run(reward.config("smoke"), run=r.name, runs_dir=tmp_path / "runs", live=False, progress_bar=False)
    assert not (r.path / "04_reward" / "model").exists()
    empty = Run("empty", tmp_path / "runs")
    (empty.stage_dir("preferences") / "pairs.jsonl").write_text("".join(json.dumps(p) + "\n" for p in world_pairs(2)))
    mark_complete(empty, "preferences")
    with pytest.raises(StageMissing, match="sft"):
        reward.run(reward.config("smoke"), run="empty", runs_dir=tmp_path / "runs", live=False, progress_bar=False)



def test_config_rejects_unknown_names():
    from labkit.config import ConfigError
    with pytest.raises(ConfigError, match="learning_rate"):
        reward.config("cpu", learning_rat=1e-3)


def test_same_seed_same_reward_model(tmp_path, tiny):
    out = []
    for name in ("a", "b"):
        r = make_run(tmp_path, tiny, name=name)
        reward.run(reward.config("smoke", max_steps=2, verifier_tasks=3), run=name, runs_dir=tmp_path / "runs",
                   live=False, progress_bar=False)
        out.append(([m.get("reward/loss") for m in read_jsonl(r.path / "04_reward" / "metrics.jsonl")],
                    read_jsonl(r.path / "04_reward" / "verifier_samples.jsonl"),
                    read_jsonl(r.path / "04_reward" / "conduct_samples.jsonl")))
    assert out[0] == out[1]


def test_margin_is_used_only_when_asked_for(tmp_path, tiny):
    from labkit.config import ConfigError
    r = make_run(tmp_path, tiny)  # its pairs.jsonl has a "margin" field
    rows, note = reward.pairs_for(reward.config("smoke"), r)
    assert len(rows) == 24 and not any("margin" in p for p in rows) and "24 pairs" in note
    assert "margin" not in reward_model.to_trl(rows).column_names
    rows, _ = reward.pairs_for(reward.config("smoke", margin_field="margin"), r)
    assert [p["margin"] for p in rows[:3]] == [0.0, 0.5, 1.0]
    with pytest.raises(ConfigError, match="line 1: margin_field='strength'"):
        reward.pairs_for(reward.config("smoke", margin_field="strength"), r)


def test_gpu_budget_splits_the_batch_and_reaches_the_trainer(tmp_path, tiny, monkeypatch):
    import trl

    from labkit import planner
    seen = {}
    real = trl.RewardConfig
    monkeypatch.setattr(trl, "RewardConfig", lambda *a, **kw: seen.update(kw) or real(*a, **kw))
    r = make_run(tmp_path, tiny)
    texts = [reward_model.scoring_text(tiny[1], p["prompt"], p[k]) for p in world_pairs() for k in ("chosen", "rejected")]
    longest = max(len(tiny[1](t, add_special_tokens=False)["input_ids"]) for t in texts)
    # half-way between the fp32 estimates for 8 pairs and 2 pairs per micro-batch: 8 must not fit, 4 or 2 must
    big, small = (sum(planner.estimate(str(tiny[0]), "reward", micro_batch_size=m, seq_len=longest, use_lora=False,
                                       gradient_checkpointing=False, bf16=False).values()) for m in (8, 2))
    budget = (big + small) / 2 / planner.GIB
    reward.run(reward.config("smoke", batch_size=8, max_steps=2, verifier_tasks=0, conduct_verifier_tasks=0,
                             gpu_memory_gb=budget),
               run=r.name, runs_dir=tmp_path / "runs", live=False, progress_bar=False)
    d = r.path / "04_reward"
    ran = json.loads((d / "config.json").read_text())
    assert ran["batch_size"] * ran["grad_accum_steps"] == 8 and ran["grad_accum_steps"] > 1
    assert seen["per_device_train_batch_size"] == ran["batch_size"]
    assert seen["gradient_accumulation_steps"] == ran["grad_accum_steps"]
    plan = json.loads((d / "plan.json").read_text())
    assert plan["fits"] and plan["stage"] == "reward" and plan["seq_len"] == longest
    assert json.loads((d / "eval.json").read_text())["plan"] == plan


def test_gpu_budget_too_small_fails_before_writing(tmp_path, tiny):
    from labkit.config import ConfigError
    r = make_run(tmp_path, tiny)
    with pytest.raises(ConfigError, match="reward model does not fit in gpu_memory_gb=0.01: nothing fits"):
        reward.run(reward.config("smoke", gpu_memory_gb=0.01), run=r.name, runs_dir=tmp_path / "runs",
                   live=False, progress_bar=False)
    d = r.path / "04_reward"
    assert not d.exists() or not any(d.iterdir())  # nothing written, the stage never started
    assert not Run(r.name, tmp_path / "runs").is_complete("reward")


def test_gpu_budget_applies_the_plan_notebook_04_shows(tmp_path, tiny):
    from labkit import planner
    r = make_run(tmp_path, tiny)
    texts = [reward_model.scoring_text(tiny[1], p["prompt"], p[k]) for p in world_pairs() for k in ("chosen", "rejected")]
    longest = max(len(tiny[1](t, add_special_tokens=False)["input_ids"]) for t in texts)
    # between the fp32 estimates for 8 and 2 pairs per micro-batch (as on this CPU): the plan must split
    totals = [sum(planner.estimate(str(tiny[0]), "reward", micro_batch_size=m, seq_len=longest, use_lora=False,
                                   gradient_checkpointing=False, bf16=False).values()) for m in (8, 2)]
    asked = reward.config("smoke", batch_size=8, grad_accum_steps=1, gpu_memory_gb=sum(totals) / 2 / planner.GIB)
    shown = reward.plan_for(asked, r, asked.gpu_memory_gb)  # what notebook 04 displays
    applied, plan = reward.fit_budget(asked, r, torch.device("cpu"))  # what run() trains with
    assert plan == shown and applied == shown.apply(asked)
    assert shown.seq_len == longest  # sized for the longest pair, as run() drops and counts them
    assert applied.batch_size * applied.grad_accum_steps == 8 and applied.grad_accum_steps > 1
    assert reward.plan_for(reward.config("smoke"), r, 24).gpu_memory_gb == 24
    assert reward.fit_budget(reward.config("smoke"), r, torch.device("cpu")) == (reward.config("smoke"), None)
    # pairs longer than max_length are dropped, so the plan sizes for the longest one kept
    short = reward.plan_for(reward.config("smoke", max_length=longest - 1), r, 24)
    assert short.seq_len < longest


def test_the_training_curve_scores_a_fixed_draw_and_never_changes_the_model(tmp_path, tiny, monkeypatch):
    """curve_pairs: the curve during training scores a fixed draw of the held-out pairs; the model it trains and
    every number after training (which scores them all) are the same as when the curve scores them all."""
    trained_on = []

    def spy(model, tokenizer, train_pairs, eval_pairs, *a, **kw):
        trained_on.append(eval_pairs)
        return reward_model.reward_trainer(model, tokenizer, train_pairs, eval_pairs, *a, **kw)

    monkeypatch.setattr(reward, "reward_trainer", spy)
    out = {}
    for name, curve in (("all", None), ("few", 3)):
        r = make_run(tmp_path, tiny, pairs=world_pairs(40), name=name)
        cfg = reward.config("smoke", max_steps=4, eval_interval=2, eval_fraction=0.3, curve_pairs=curve,
                            verifier_tasks=0, conduct_verifier_tasks=0)
        reward.run(cfg, run=name, runs_dir=tmp_path / "runs", live=False, progress_bar=False)
        ev = json.loads((r.path / "04_reward" / "eval.json").read_text())
        from transformers import AutoModelForSequenceClassification
        model = AutoModelForSequenceClassification.from_pretrained(r.path / "04_reward" / "model")
        curve_rows = [m for m in read_jsonl(r.path / "04_reward" / "metrics.jsonl") if "reward/eval_accuracy" in m]
        out[name] = (model.state_dict(), ev, [m["step"] for m in curve_rows])
    held = out["all"][1]["reward/pairs_eval"]
    assert held > 3 and [len(p) for p in trained_on] == [held, 3]
    assert {p["prompt"] for p in trained_on[1]} <= {p["prompt"] for p in trained_on[0]}  # a draw of the held-out pairs
    (w_all, ev_all, steps_all), (w_few, ev_few, steps_few) = out["all"], out["few"]
    assert steps_all == steps_few == [0, 2, 4]  # the curve has every point either way
    assert w_all.keys() == w_few.keys() and all(torch.equal(w_all[k], w_few[k]) for k in w_all)
    for k in ("reward/eval_accuracy", "reward/ece", "reward/pairs_eval", "reward/train_accuracy"):
        assert ev_all[k] == ev_few[k], k
    from labkit.config import ConfigError
    with pytest.raises(ConfigError, match="curve_pairs must be >= 1"):
        reward.run(reward.config("smoke", curve_pairs=0), run="all", runs_dir=tmp_path / "runs", live=False)
