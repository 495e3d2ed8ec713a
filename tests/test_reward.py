"""Stage 4 (reward model): hermetic tests on tiny in-process models and tmp_path run folders."""

import gzip
import json
import math

import pytest
import torch

from labkit import reward, world
from labkit.models import build_model
from conftest import mark_complete
from labkit.runs import Run, StageMissing, read_jsonl
from labkit.tokenizer import train_tokenizer

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny tokenizer + Llama saved as a checkpoint folder (stands in for the SFT model)."""
    w = world.World(0)
    docs = world.corpus(w, 150, seed=1)
    tok = train_tokenizer(docs, "bpe", 300)
    torch.manual_seed(0)
    model = build_model("causal", tok, n_layer=1, n_head=2, n_embd=32, block_size=256)
    path = tmp_path_factory.mktemp("sft") / "model"
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path, tok


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


def test_scoring_format_is_the_chat_template_and_what_trl_trains_on(tiny):
    from trl.data_utils import _tokenize
    _, tok = tiny
    text = reward.scoring_text(tok, "What is 2 plus 3?", "5")
    assert text == tok.apply_chat_template([{"role": "user", "content": "What is 2 plus 3?"},
                                            {"role": "assistant", "content": "5"}], tokenize=False)
    assert text == "<|user|>What is 2 plus 3?<|assistant|> 5<eos>"
    row = reward.to_trl([{"prompt": "What is 2 plus 3?", "chosen": "5", "rejected": "7"}])[0]
    trl_ids = _tokenize(tok, row["prompt"] + row["chosen"])["input_ids"]  # what RewardTrainer feeds the model
    assert trl_ids == tok(text, add_special_tokens=False)["input_ids"]


def test_score_ignores_padding_and_batching(tiny):
    path, tok = tiny
    model = reward.load_reward_model(path, tok)
    assert model.config.num_labels == 1 and model.config.pad_token_id == tok.pad_token_id
    ins, res = ["Name a pet.", "What is 10 plus 9? Answer with the number only."], ["cat", "19 and more words here"]
    batched = reward.score(model, tok, ins, res, batch_size=2)
    assert batched.dtype == torch.float32 and batched.shape == (2,) and not batched.requires_grad
    batched = batched.tolist()
    single = [reward.score(model, tok, [i], [r], batch_size=1)[0].item() for i, r in zip(ins, res)]
    assert batched == pytest.approx(single, abs=1e-5)


def test_run_trains_and_writes_the_stage(tmp_path, tiny):
    r = make_run(tmp_path, tiny)
    before = reward.load_reward_model(tiny[0], tiny[1]).model.embed_tokens.weight.clone()
    res = reward.run(reward.config("smoke", eval_fraction=0.25), run=r.name, runs_dir=tmp_path / "runs",
                     preset="smoke", live=False, progress_bar=False)
    d = r.path / "04_reward"
    rows = read_jsonl(d / "metrics.jsonl")
    losses = [m["reward/loss"] for m in rows if "reward/loss" in m]
    assert losses and all(math.isfinite(x) for x in losses)
    assert any("reward/eval_accuracy" in m for m in rows) and any("reward/accuracy" in m for m in rows)
    assert res["reward/params_changed"] > 0 and res["reward/steps"] == 8
    saved = reward.load_reward_model(d / "model", tiny[1])
    assert not torch.equal(saved.model.embed_tokens.weight, before)  # full fine-tuning moved the body too
    ev = json.loads((d / "eval.json").read_text())
    # The held-out figures are the saved model's: its scores of the held-out pairs, their accuracy and ECE.
    held_rows = read_jsonl(d / "eval_pairs.jsonl")
    rescored = reward.score(saved, tiny[1], [p["prompt"] for p in held_rows] * 2,
                            [p["chosen"] for p in held_rows] + [p["rejected"] for p in held_rows]).tolist()
    assert rescored == pytest.approx([p["score_chosen"] for p in held_rows] + [p["score_rejected"] for p in held_rows],
                                     abs=1e-5)
    assert ev["reward/eval_accuracy"] == res["reward/eval_accuracy"] == reward.pairwise_accuracy(held_rows)
    diffs = [p["score_chosen"] - p["score_rejected"] for p in held_rows]
    assert ev["reward/ece"] == pytest.approx(reward.calibration(diffs, reward.config("smoke").calibration_bins)["ece"])
    assert ev["calibration"] and len(ev["worst_disagreements"]) == 3
    samples = read_jsonl(d / "verifier_samples.jsonl")
    assert ev["reward/spearman"] == reward.spearman(samples)  # None: all samples right or all wrong
    # held-out prompts never appear in training: the pairs split by prompt, 25% of them held out
    train_pairs, eval_pairs = reward.split_by_prompt(world_pairs(), 0.25, reward.config("smoke").seed)
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
    assert ev["reward/conduct_spearman"] == reward.spearman(conduct)  # None: all samples right or all wrong
    assert ev["reward/conduct_accuracy"] == reward.pairwise_accuracy(read_jsonl(d / "eval_pairs.jsonl"),
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
    saved = reward.load_reward_model(r.path / "04_reward" / "model", tiny[1])  # merged: a plain model
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


def test_calibration_against_hand_computed_cases():
    ln3 = math.log(3)  # σ(ln 3) = 0.75
    # Always predicts 0.75 for chosen and is always right: observed 1 vs 0.75 (and 0 vs 0.25) -> ECE 0.25.
    cal = reward.calibration([ln3] * 4, n_bins=10)
    assert cal["ece"] == pytest.approx(0.25)
    assert [(b["bin"], b["count"]) for b in cal["bins"]] == [("0.20-0.30", 4), ("0.70-0.80", 4)]
    assert cal["bins"][1]["predicted"] == pytest.approx(0.75) and cal["bins"][1]["observed"] == 1.0
    # Right 3 times in 4 at 75%: perfectly calibrated.
    assert reward.calibration([ln3, ln3, ln3, -ln3], n_bins=10)["ece"] == pytest.approx(0.0, abs=1e-12)
    # Δ = 0 says 50/50 and one side always wins: bin 0.5 observes 0.5.
    cal = reward.calibration([0.0, 0.0], n_bins=2)
    assert cal["ece"] == pytest.approx(0.0) and cal["bins"] == [
        {"bin": "0.50-1.00", "count": 4, "predicted": 0.5, "observed": 0.5}]
    # Two bins, mixed: Δ = ln 3 (right) and Δ = ln 9 (σ = 0.9, wrong way round: -ln 9).
    cal = reward.calibration([ln3, -math.log(9)], n_bins=2)
    # entries: (.75,1) (.25,0) (.1,1) (.9,0) -> high bin {.75:1, .9:0}: pred .825 obs .5; low bin {.25:0,.1:1}: .175 vs .5
    assert cal["ece"] == pytest.approx(0.5 * 0.325 + 0.5 * 0.325)


def test_split_by_prompt_keeps_prompts_on_one_side():
    pairs = [{"prompt": f"q{i % 7}", "chosen": "a", "rejected": f"b{i}"} for i in range(30)]
    train, held = reward.split_by_prompt(pairs, 0.3, seed=1)
    assert len(train) + len(held) == 30 and held
    assert not {p["prompt"] for p in train} & {p["prompt"] for p in held}
    assert reward.split_by_prompt(pairs, 0.0, seed=1)[1] == []
    one = [{"prompt": "q", "chosen": "a", "rejected": f"b{i}"} for i in range(2)]
    assert reward.split_by_prompt(one, 0.3, seed=1) == (one, [])  # the only prompt trains, never all held out


def test_verifier_agreement_ranks_and_lists_the_worst():
    rows = [{"task_id": "t1", "rm_score": 2.0, "true_score": 1.0}, {"task_id": "t1", "rm_score": 1.0, "true_score": 0.0},
            {"task_id": "t2", "rm_score": 3.0, "true_score": 0.0}, {"task_id": "t2", "rm_score": 0.0, "true_score": 1.0}]
    a = reward.verifier_agreement(rows, worst_k=2)
    assert a["pair_accuracy"] == 50.0 and a["n_pairs"] == 2
    assert a["worst"][0]["rm_score"] == 3.0 and a["worst"][0]["rm_percentile"] == 100  # wrong, ranked top
    assert a["worst"][1]["rm_score"] == 0.0  # right, ranked bottom
    from scipy.stats import spearmanr
    assert a["spearman"] == pytest.approx(spearmanr([2, 1, 3, 0], [1, 0, 0, 1]).statistic)


def scored(family, chosen, rejected):
    """An eval_pairs.jsonl row as evaluate_pairs writes it (family None: a pair without a world task)."""
    return {"prompt": f"{family} {chosen} {rejected}", "chosen": "c", "rejected": "r", "score_chosen": chosen,
            "score_rejected": rejected, "task": family and {"family": family}}


def test_conduct_accuracy_counts_only_conduct_pairs():
    rows = [scored("harmful", 2.0, 1.0),        # win
            scored("unanswerable", 0.0, 1.0),   # loss
            scored("benign", 1.0, 1.0),         # tie: half
            scored("benign", 3.0, -1.0),        # win
            scored("arithmetic", 0.0, 5.0), scored("arithmetic", 0.0, 5.0), scored("story_qa", 1.0, 4.0),  # losses
            scored(None, 3.0, 0.0)]             # win, no family
    # conduct: (1 + 0 + 0.5 + 1) / 4 pairs; overall: (1 + 0 + 0.5 + 1 + 0 + 0 + 0 + 1) / 8 pairs
    assert reward.pairwise_accuracy(rows, world.CONDUCT_FAMILIES) == pytest.approx(62.5)
    assert reward.pairwise_accuracy(rows) == pytest.approx(43.75)
    assert reward.pairwise_accuracy(rows, ("extract",)) is None
    acc, _ = reward.by_family(rows, [])
    assert [(f["family"], f["pairs"], f["accuracy"]) for f in acc] == [
        ("-", 1, 100.0), ("arithmetic", 2, 0.0), ("benign", 2, 75.0), ("harmful", 1, 100.0),
        ("story_qa", 1, 0.0), ("unanswerable", 1, 0.0)]


def test_conduct_spearman_uses_only_conduct_samples():
    def sample(family, rm, true):
        return {"task_id": f"{family}-{rm}", "family": family, "rm_score": rm, "true_score": true}
    # conduct samples rank perfectly; the answer families' rank exactly backwards
    conduct = [sample("harmful", 3.0, 1.0), sample("harmful", 1.0, 0.0), sample("unanswerable", 2.0, 1.0),
               sample("benign", 0.0, 0.0)]
    answers = [sample("arithmetic", 5.0, 0.0), sample("arithmetic", -1.0, 1.0), sample("story_qa", 4.0, 0.0)]
    from scipy.stats import spearmanr
    assert reward.spearman(conduct + answers, world.CONDUCT_FAMILIES) == pytest.approx(
        spearmanr([3, 1, 2, 0], [1, 0, 1, 0]).statistic)
    assert reward.spearman(answers, world.CONDUCT_FAMILIES) is None  # no conduct sample
    overall = reward.spearman(conduct + answers)
    assert overall == pytest.approx(spearmanr([3, 1, 2, 0, 5, -1, 4], [1, 0, 1, 0, 0, 1, 0]).statistic)
    assert overall < 0.5 < reward.spearman(conduct + answers, world.CONDUCT_FAMILIES)
    _, rho = reward.by_family([], conduct + answers)
    assert [(f["family"], f["samples"], f["spearman"]) for f in rho] == [
        ("arithmetic", 2, pytest.approx(-1.0)), ("benign", 1, None), ("harmful", 2, pytest.approx(1.0)),
        ("story_qa", 1, None), ("unanswerable", 1, None)]


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
    rows, note = reward.load_pairs(reward.config("smoke"), r)
    assert len(rows) == 24 and not any("margin" in p for p in rows) and "24 pairs" in note
    assert "margin" not in reward.to_trl(rows).column_names
    rows, _ = reward.load_pairs(reward.config("smoke", margin_field="margin"), r)
    assert [p["margin"] for p in rows[:3]] == [0.0, 0.5, 1.0]
    with pytest.raises(ConfigError, match="line 1: margin_field='strength'"):
        reward.load_pairs(reward.config("smoke", margin_field="strength"), r)


def test_gpu_budget_splits_the_batch_and_reaches_the_trainer(tmp_path, tiny, monkeypatch):
    import trl

    from labkit import planner
    seen = {}
    real = trl.RewardConfig
    monkeypatch.setattr(trl, "RewardConfig", lambda *a, **kw: seen.update(kw) or real(*a, **kw))
    r = make_run(tmp_path, tiny)
    texts = [reward.scoring_text(tiny[1], p["prompt"], p[k]) for p in world_pairs() for k in ("chosen", "rejected")]
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
    texts = [reward.scoring_text(tiny[1], p["prompt"], p[k]) for p in world_pairs() for k in ("chosen", "rejected")]
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
    # pairs longer than max_length_tokens are dropped, so the plan sizes for the longest one kept
    short = reward.plan_for(reward.config("smoke", max_length_tokens=longest - 1), r, 24)
    assert short.seq_len < longest
