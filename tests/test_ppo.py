"""Tests for labkit.ppo (stage 5): hermetic, tiny models built in-process, tmp_path run folders.

The predecessors are stand-ins: a smoke-preset pretrained model copied to
``02_sft/model`` and a sequence classifier initialised from it (random score
head) in ``04_reward/model``. They prove the plumbing, not the quality.
"""

import contextlib
import json
import shutil

import pytest
import torch

from labkit import ppo, ppo_config, ppo_eval, ppo_models
from labkit import ppo_math as pm
from labkit import verifier as V
from labkit import world as W
from labkit.config import ConfigError
from labkit.runs import Run, StageMissing, file_hash, read_json, read_jsonl

torch.set_num_threads(1)
TIMING = {"ppo/gen_seconds", "ppo/step_seconds", "ppo/forward_seconds", "ppo/score_seconds", "ppo/update_seconds"}


def _strip(rows):
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


@pytest.fixture(scope="module")
def base_run(ppo_standins):
    """Pretrain standing in for SFT plus a random-head reward model (tests/conftest.py); read-only here."""
    return ppo_standins


def _copy(base_run, tmp_path, name):
    shutil.copytree(base_run.path, tmp_path / name)
    return Run(name, tmp_path)


def _run(r, **over):
    cfg = ppo.config("smoke", threads=1, **over)
    return ppo.run(cfg, run=r.name, runs_dir=str(r.path.parent), progress_bar=False, live=False)


@pytest.fixture(scope="module")
def smoke_run(base_run, tmp_path_factory):
    """One complete smoke-preset PPO run (reward model, LoRA), shared by the checks below."""
    r = _copy(base_run, tmp_path_factory.mktemp("smoke"), "a")
    return r, _run(r)


def _parts(r, **over):
    """Policy/critic/optimizer of a smoke config, as run() builds them, plus one batch of rollouts."""
    from accelerate import Accelerator
    cfg = ppo.config("smoke", threads=1, **over)
    torch.manual_seed(0)
    policy, ref, critic, rm, tok, rm_tok = ppo_models.load_models(cfg, r.path / "02_sft" / "model",
                                                           r.path / "04_reward" / "model")
    pv = ppo_models.PolicyAndValue(policy, critic)
    acc = Accelerator(cpu=True)
    opt = torch.optim.AdamW([p for p in pv.parameters() if p.requires_grad], lr=cfg.learning_rate)
    model, opt = acc.prepare(pv, opt)
    tasks = ppo.load_prompts(cfg, r.world())[0][:cfg.rollout_batch_size]
    batch = ppo_models.sample(policy, tok, [t["prompt"] for t in tasks], cfg.max_new_tokens, cfg.temperature)
    batch["order"] = ppo.minibatch_order(batch["query_mask"], cfg, torch.Generator().manual_seed(0))
    batch.update(ppo.forward_pass(pv, ref, batch, cfg.temperature, cfg.minibatch_size, contextlib.nullcontext(),
                                  batch["order"]))
    batch["score"] = torch.randn(len(tasks), generator=torch.Generator().manual_seed(0))
    batch["kl_coef"] = cfg.kl_coef
    batch.update(ppo.advantages_and_returns(batch, cfg))
    return cfg, pv, ref, model, opt, acc, tok, batch


# --- the update --------------------------------------------------------------------------------

@pytest.mark.parametrize("group_by_length", [True, False])
def test_one_update_trains_lora_only_and_keeps_the_reference(base_run, group_by_length):
    from transformers import AutoModelForCausalLM
    cfg, pv, ref, model, opt, acc, tok, batch = _parts(base_run, group_by_length=group_by_length)
    sft = AutoModelForCausalLM.from_pretrained(str(base_run.path / "02_sft" / "model"))
    ids, attn = ppo_models.rollout_inputs(batch, slice(None))
    kw = dict(input_ids=ids, attention_mask=attn, position_ids=ppo_models.position_ids(attn))
    sft_logits = sft(**kw).logits
    lora = {n: p.detach().clone() for n, p in pv.named_parameters() if p.requires_grad}
    frozen = {n: p.detach().clone() for n, p in pv.named_parameters() if not p.requires_grad}
    assert all("lora_" in n or "modules_to_save" in n for n in lora)

    stats = ppo.ppo_update(model, opt, acc, batch, cfg, contextlib.nullcontext(), step=0)

    assert all(torch.isfinite(torch.tensor(v)) for k, v in stats.items() if k != "epochs")
    assert stats["ratio_dev_first"] < 1e-5  # old log-probs recomputed exactly as in training: ratio == 1
    changed = [n for n, p in pv.named_parameters() if p.requires_grad and not torch.equal(p, lora[n])]
    assert any("policy" in n and "lora_B" in n for n in changed) and any("critic" in n for n in changed)
    assert all(torch.equal(p, frozen[n]) for n, p in pv.named_parameters() if not p.requires_grad)
    with torch.no_grad():
        with ppo_models.reference(pv, ref) as reference:
            assert torch.allclose(reference(**kw).logits, sft_logits, atol=1e-5)  # reference == SFT, untouched
        assert not torch.allclose(pv.policy(**kw).logits, sft_logits, atol=1e-5)  # while the policy moved


def test_ptx_keeps_the_demonstrations_likely_and_never_shows_conduct_or_evaluation(base_run):
    """PPO-ptx: with zero advantages the policy gradient is zero, so a ptx update alone moves the policy,
    and it moves it towards the demonstrations (their loss falls); without ptx it does not fall."""
    cfg, pv, ref, model, opt, acc, tok, batch = _parts(base_run, ptx_coef=1.0, ptx_batch_size=4)
    tasks = ppo_models.demonstration_tasks(base_run.world(), cfg.families, cfg.seed, n=300)
    held = ppo.load_prompts(cfg, base_run.world())[1]
    assert {t["family"] for t in tasks} == set(W.DEFAULT_ANSWER_FAMILIES) and {t["split"] for t in tasks} == {"train"}
    assert not {t["prompt"] for t in tasks} & {t["prompt"] for t in held}
    ptx = ppo_models.demonstrations(tok, tasks)
    labelled = ptx["labels"] != -100
    assert labelled.any(1).all() and (ptx["attention_mask"].bool() | ~labelled).all()  # answers are real tokens
    assert (ptx["labels"][labelled] == ptx["input_ids"][labelled]).all()
    batch["advantages"] = torch.zeros_like(batch["advantages"])
    everything = torch.arange(len(tasks))

    def demo_loss():
        with torch.no_grad():
            return ppo_models.ptx_loss(pv.policy, ptx, everything, contextlib.nullcontext()).item()

    before = demo_loss()
    stats = ppo.ppo_update(model, opt, acc, batch, cfg, contextlib.nullcontext(), step=0, ptx=ptx)
    assert stats["ptx_loss"] > 0 and demo_loss() < before
    cfg0, pv0, _, model0, opt0, acc0, _, batch0 = _parts(base_run)
    batch0["advantages"] = torch.zeros_like(batch0["advantages"])
    lora = {n: p.detach().clone() for n, p in pv0.policy.named_parameters() if p.requires_grad}
    assert "ptx_loss" not in ppo.ppo_update(model0, opt0, acc0, batch0, cfg0, contextlib.nullcontext(), step=0)
    # zero advantages, no ptx: the policy's LoRA B matrices (zero at init) get no gradient, so they stay put
    assert all(torch.equal(p, lora[n]) for n, p in pv0.policy.named_parameters() if p.requires_grad and "lora_B" in n)
    with pytest.raises(ConfigError, match="conduct"):
        ppo_models.demonstration_tasks(base_run.world(), "harmful,benign", 0)


def test_ptx_loss_on_a_few_short_demonstrations_is_the_loss_with_every_pad_column(base_run):
    """ptx_loss cuts the batch to its longest row: the same loss as through the global padding (causal
    attention: right pads change no real token), so the cut only saves compute."""
    cfg, pv, _, _, _, _, tok, _ = _parts(base_run, ptx_coef=1.0)
    ptx = ppo_models.demonstrations(tok, ppo_models.demonstration_tasks(base_run.world(), cfg.families, 0, n=200))
    lengths = ptx["attention_mask"].sum(1)
    short = torch.argsort(lengths)[:4]
    assert lengths[short].max() < ptx["input_ids"].shape[1]  # these rows do have pad columns to cut
    with torch.no_grad():
        cut = ppo_models.ptx_loss(pv.policy, ptx, short, contextlib.nullcontext())
        full = pv.policy(**{k: ptx[k][short] for k in ("input_ids", "attention_mask", "labels")}, use_cache=False).loss
    assert torch.allclose(cut, full, atol=1e-5)


def test_training_logprobs_match_generation(base_run):
    """Left padding + position ids from the mask: the forward pass sees what generate() sampled from."""
    cfg, pv, ref, model, opt, acc, tok, batch = _parts(base_run)
    from labkit.tokenizer import format_prompt
    tasks = ppo.load_prompts(cfg, base_run.world())[0][:6]
    enc = tok([format_prompt(tok, t["prompt"]) for t in tasks], return_tensors="pt", padding=True,
              padding_side="left", add_special_tokens=False)
    assert (enc.attention_mask == 0).any()  # the prompts really are padded
    g = pv.policy.generate(**enc, do_sample=True, temperature=cfg.temperature, top_k=0, top_p=1.0, max_new_tokens=6,
                           pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, output_logits=True,
                           return_dict_in_generate=True)
    resp = g.sequences[:, enc.input_ids.shape[1]:]
    mask, _ = pm.first_eos_mask(resp, tok.eos_token_id)
    gen_logp = pm.logprobs_from_logits(torch.stack(g.logits, 1) / cfg.temperature, resp)
    b = {"query": enc.input_ids, "query_mask": enc.attention_mask, "response": resp, "mask": mask}
    fwd = ppo.forward_pass(pv, ref, b, cfg.temperature, 4, contextlib.nullcontext())
    assert torch.allclose(torch.where(mask.bool(), gen_logp, 0.0), torch.where(mask.bool(), fwd["logprobs"], 0.0),
                          atol=1e-4)
    assert torch.allclose(fwd["logprobs"], fwd["ref_logprobs"], atol=1e-6)  # LoRA starts at B = 0: policy == ref


# --- whole runs ------------------------------------------------------------------------------------

def test_smoke_run_writes_the_stage(smoke_run):
    r, res = smoke_run
    stage = r.path / "05_ppo"
    rows = read_jsonl(stage / "metrics.jsonl")
    assert [m["step"] for m in rows] == [1, 2, 3, 4]
    for m in rows:
        for k in ("ppo/pg_loss", "ppo/vf_loss", "ppo/kl", "ppo/rm_score", "ppo/entropy", "ppo/approx_kl"):
            assert m[k] is not None and m[k] == m[k] and abs(m[k]) < 1e6, (k, m[k])
        assert m["ppo/ratio_dev_first"] < 1e-5
        assert 0 <= m["ppo/true_score"] <= 100 and 0 <= m["ppo/eos_rate"] <= 100
    assert rows[0]["ppo/kl"] == pytest.approx(0.0, abs=1e-6)  # first rollout: policy == reference
    ev = read_json(stage / "eval.json")
    assert ev["world_size"] == 1 and ev["ppo/steps"] == 4 and ev["ranks_in_sync"]
    assert ev["before"]["kl"] == pytest.approx(0.0, abs=1e-5) and ev["after"]["kl"] >= 0
    for key in ("true_greedy", "true_sampled", "rm_score", "stop_rate"):
        assert ev["before"][key] is not None and ev["after"][key] is not None
    samples = read_jsonl(stage / "samples.jsonl")
    assert len(samples) == ev["eval_prompts"] and {"before", "after", "answer"} <= set(samples[0])
    assert (stage / "adapter" / "adapter_config.json").exists() and (stage / "model" / "config.json").exists()
    assert r.is_complete("ppo") and res["ppo/true_score_before"] == ev["before"]["true_greedy"]
    # a snapshot of the policy every snapshot_interval (1) steps before the last, for stage 7
    snaps = ppo_config.snapshots(stage)
    assert [s for s, _ in snaps] == [1, 2, 3] and all((p / "adapter_config.json").exists() for _, p in snaps)


def test_snapshots_change_nothing_in_training(smoke_run, base_run, tmp_path):
    a, _ = smoke_run
    b = _copy(base_run, tmp_path, "nosnap")
    _run(b, snapshot_interval=0)
    assert ppo_config.snapshots(b.path / "05_ppo") == []
    assert _strip(read_jsonl(b.path / "05_ppo" / "metrics.jsonl")) == _strip(read_jsonl(a.path / "05_ppo" / "metrics.jsonl"))
    assert read_json(b.path / "05_ppo" / "eval.json")["after"] == read_json(a.path / "05_ppo" / "eval.json")["after"]


def test_same_seed_same_metrics(smoke_run, base_run, tmp_path):
    a, _ = smoke_run
    b = _copy(base_run, tmp_path, "b")
    _run(b)
    assert _strip(read_jsonl(b.path / "05_ppo" / "metrics.jsonl")) == _strip(read_jsonl(a.path / "05_ppo" / "metrics.jsonl"))
    ea, eb = read_json(a.path / "05_ppo" / "eval.json"), read_json(b.path / "05_ppo" / "eval.json")
    assert ea["after"] == eb["after"]


def test_resume_mid_run_reproduces_the_continuation(smoke_run, base_run, tmp_path, monkeypatch):
    a, _ = smoke_run
    c = _copy(base_run, tmp_path, "c")
    real = ppo.check_alarms

    def crash_at_step_3(history, cfg, active):
        if history[-1]["step"] == 3:  # after step 3's metrics line was written, before its checkpoint
            raise KeyboardInterrupt
        return real(history, cfg, active)

    monkeypatch.setattr(ppo, "check_alarms", crash_at_step_3)
    with pytest.raises(KeyboardInterrupt):
        _run(c)
    assert not c.is_complete("ppo") and torch.load(c.path / "05_ppo" / "ckpt" / "state.pt")["step"] == 2
    monkeypatch.setattr(ppo, "check_alarms", real)
    res = _run(c)
    assert res["resumed_from"] == 2
    assert _strip(read_jsonl(c.path / "05_ppo" / "metrics.jsonl")) == _strip(read_jsonl(a.path / "05_ppo" / "metrics.jsonl"))
    assert read_json(c.path / "05_ppo" / "eval.json")["after"] == read_json(a.path / "05_ppo" / "eval.json")["after"]
    # the snapshots of the resumed run are the uninterrupted run's, weight for weight
    weights = lambda r: {s: file_hash(p / "adapter_model.safetensors") for s, p in ppo_config.snapshots(r.path / "05_ppo")}  # noqa: E731
    assert weights(c) == weights(a) and list(weights(c)) == [1, 2, 3]


def test_evaluation_pass_at_k_counts_any_right_sample(base_run):
    """pass@k is 1 where any of the k samples is right, the sampled score their mean; the samples repeat by seed."""
    # answer families only: a harmful or unanswerable task is judged by meaning, not by its "answer"
    cfg, pv, ref, model, opt, acc, tok, batch = _parts(base_run, eval_samples=3, families=",".join(W.DEFAULT_ANSWER_FAMILIES))
    tasks = [dict(t) for t in ppo.load_prompts(cfg, base_run.world())[1]]
    no_rm = lambda chunk, texts, eos: torch.zeros(len(texts))  # noqa: E731
    args = (pv, ref, no_rm, tok)
    first, rows = ppo_eval.evaluate(*args, tasks, cfg, acc, contextlib.nullcontext())
    assert first["k"] == 3 and all(len(r["samples"]) == 3 for r in rows)
    assert 0 <= first["true_sampled"] <= first["pass_at_k"] <= 100
    for t, r in zip(tasks, rows):
        t["answer"] = r["samples"][-1]  # the last sample is right by construction, where it stopped
    again, rows2 = ppo_eval.evaluate(*args, tasks, cfg, acc, contextlib.nullcontext())  # same seed: same samples
    assert [r["samples"] for r in rows2] == [r["samples"] for r in rows]
    assert any(r["samples_stopped"][-1] for r in rows2), "the stand-in model should stop on some prompt"
    for t, r in zip(tasks, rows2):
        right = [float(ok and V.verify(t, x)) for x, ok in zip(r["samples"], r["samples_stopped"])]
        assert r["pass_k"] == max(right) and r["sampled_correct"] == pytest.approx(sum(right) / 3)
        assert r["sampled"] == r["samples"][0]
    assert again["pass_at_k"] == pytest.approx(100 * sum(r["samples_stopped"][-1] for r in rows2) / len(rows2))
    assert again["true_sampled"] == pytest.approx(100 * sum(r["sampled_correct"] for r in rows2) / len(rows2))


def test_kl_ablation_is_a_controlled_pair_that_reuses_the_before_evaluation(smoke_run, monkeypatch):
    r, res = smoke_run
    calls = []
    real = ppo.evaluate
    monkeypatch.setattr(ppo, "evaluate", lambda *a, **k: calls.append(1) or real(*a, **k))
    out = ppo.kl_ablation(ppo.config("smoke", threads=1), r.name, str(r.path.parent), live=False)
    leash = f"with leash (kl_coef={ppo.config('smoke').kl_coef:g})"
    assert list(out) == [leash, "kl_coef=0"]
    twin = Run(f"{r.name}-nokl", r.path.parent)
    main_cfg, twin_cfg = (read_json(d / "05_ppo" / "config.json") for d in (r.path, twin.path))
    differs = {k for k in main_cfg if main_cfg[k] != twin_cfg[k]}
    assert differs == {"kl_coef", "init_from", "reward_from"}  # the models are the same ones, by path
    assert twin_cfg["kl_coef"] == 0.0 and twin_cfg["init_from"] == str(r.path / "02_sft" / "model")
    assert len(calls) == 1  # only "after": the twin starts from the same models, so "before" is reused
    assert out["kl_coef=0"]["before"] == out[leash]["before"]
    assert out["kl_coef=0"]["metrics"] and out["kl_coef=0"]["metrics"] != out[leash]["metrics"]


def test_before_evaluation_is_redone_when_the_starting_model_changes(base_run, tmp_path):
    r = _copy(base_run, tmp_path, "k")
    cfg = ppo.config("smoke", threads=1)
    sft, rm = r.path / "02_sft" / "model", r.path / "04_reward" / "model"
    key = ppo._eval_key(cfg, sft, rm)
    assert key == ppo._eval_key(cfg, sft, rm) and key != ppo._eval_key(ppo.config("smoke", n_eval=9), sft, rm)
    (sft / "config.json").write_text((sft / "config.json").read_text() + " ")
    assert ppo._eval_key(cfg, sft, rm) != key


def test_verifier_reward_full_finetuning_and_eos_penalty(base_run, tmp_path):
    """reward='verifier' needs no reward stage; use_lora=False keeps a frozen reference copy."""
    r = _copy(base_run, tmp_path, "v")
    shutil.rmtree(r.path / "04_reward")
    res = _run(r, reward="verifier", use_lora=False, missing_eos_penalty=3.0, max_new_tokens=3, max_steps=2)
    assert res["use_lora"] is False and not (r.path / "05_ppo" / "adapter").exists()
    for m in read_jsonl(r.path / "05_ppo" / "metrics.jsonl"):
        # score = 1 if correct (which needs EOS) else 0, minus 3 for every response without EOS
        expect = m["ppo/true_score"] / 100 - 3.0 * (1 - m["ppo/eos_rate"] / 100)
        assert m["ppo/score"] == pytest.approx(expect, abs=1e-5)
        assert m["ppo/rm_score"] == pytest.approx(m["ppo/true_score"] / 100, abs=1e-6)


def test_missing_stages_fail_clearly(base_run, tmp_path):
    r = _copy(base_run, tmp_path, "m")
    m = json.loads(r.manifest_path.read_text())
    del m["stages"]["reward"]
    r.manifest_path.write_text(json.dumps(m))
    with pytest.raises(StageMissing, match="'reward'"):
        _run(r)
    del m["stages"]["sft"]
    r.manifest_path.write_text(json.dumps(m))
    with pytest.raises(StageMissing, match="'sft'"):
        _run(r, reward="verifier")
    assert not (r.path / "05_ppo").exists()  # nothing written


# --- pieces ------------------------------------------------------------------------------------------


def test_alarms_fire_once_on_reward_hacking_and_drift():
    cfg = ppo.config("smoke", alarm_window=4, alarm_true_drop=10.0, alarm_kl=5.0)
    hist, active, fired = [], set(), []
    for step, (rm, true, kl) in enumerate([(0.0, 50, 1), (0.1, 50, 1), (0.5, 30, 2), (0.9, 20, 6), (1.2, 10, 13)], 1):
        hist.append({"step": step, "ppo/rm_score": rm, "ppo/true_score": true, "ppo/kl": kl})
        fired += ppo_eval.check_alarms(hist, cfg, active)
    # the KL is judged over the window, like every rule: one step at 6 nats is not drift, four averaging 5.5 are
    assert [(a["step"], a["kind"]) for a in fired] == [(4, "reward_hacking"), (5, "kl_drift")]


def test_the_drift_threshold_is_best_of_ns_kl_unless_set():
    from labkit import ppo_config
    from labkit.ppo_math import best_of_n_kl
    assert ppo_config.kl_threshold(ppo.config("cpu")) == pytest.approx(best_of_n_kl(8)) == pytest.approx(1.2044, abs=1e-4)
    assert ppo_config.kl_threshold(ppo.config("cpu", alarm_kl=3.0)) == 3.0
    before = {"rm_score": 0.1, "kl": 0.0}
    assert [a["kind"] for a in ppo_eval.final_alarms(before, {"rm_score": 0.0, "kl": 1.5}, ppo.config("cpu"))] == [
        "kl_drift_heldout"]
    assert ppo_eval.final_alarms(before, {"rm_score": 0.0, "kl": 0.9}, ppo.config("cpu")) == []


def _replay(cfg, rm, true, over=None):
    hist, active, fired = [], set(), []
    for i, (a, b) in enumerate(zip(rm, true)):
        hist.append({"step": i + 1, "ppo/rm_score": a, "ppo/true_score": b, "ppo/kl": 0.3,
                     **({"ppo/over_refusal": over[i]} if over else {})})
        fired += ppo_eval.check_alarms(hist, cfg, active)
    return fired


def test_slow_reward_hacking_like_the_fresh_clone_run_fires():
    """A run like the one the old alarm missed: over 60 steps the learned reward rose -0.30 -> +0.03 and
    the true score slid from 75% to 68%, with rollout noise (~4 points a step) hiding it in any one window."""
    import random
    cfg = ppo.config("cpu")  # the default windows and thresholds
    noise = random.Random(0)
    rm = [-0.30 + 0.33 * i / 59 + noise.gauss(0, 0.05) for i in range(60)]
    true = [75 - 7 * i / 59 + noise.gauss(0, 4) for i in range(60)]
    fired = _replay(cfg, rm, true)
    assert [a["kind"] for a in fired] == ["reward_hacking_slow"]
    # the same noise without the slide: silent (PPO raises the learned reward in every run)
    assert _replay(cfg, rm, [75 + noise.gauss(0, 4) for _ in range(60)]) == []
    # the old rule alone (one window, first half against second) never saw it
    assert not any(a["kind"] == "reward_hacking" for a in fired)


def test_over_refusal_alarm_names_a_policy_that_learned_to_refuse():
    cfg = ppo.config("cpu")
    rm = [0.01 * i for i in range(40)]
    true = [70.0] * 40
    fired = _replay(cfg, rm, true, over=[2.0] * 20 + [2.0 + 1.5 * i for i in range(20)])
    assert [a["kind"] for a in fired] == ["over_refusal"] and "harmless" in fired[0]["message"]
    assert _replay(cfg, rm, true, over=[2.0 + (i % 3) for i in range(40)]) == []


def test_held_out_alarm_fires_when_the_learned_reward_rises_and_the_truth_falls():
    cfg = ppo.config("cpu")
    before = {"rm_score": -0.30, "true_greedy": 73.5, "true_sampled": 71.0}
    fired = ppo_eval.final_alarms(before, {"rm_score": 0.03, "true_greedy": 69.0, "true_sampled": 70.0}, cfg)
    assert [a["kind"] for a in fired] == ["reward_hacking_heldout"] and "73.5 -> 69.0" in fired[0]["message"]
    assert ppo_eval.final_alarms(before, {"rm_score": 0.03, "true_greedy": 72.5, "true_sampled": 70.0}, cfg) == []
    assert ppo_eval.final_alarms(before, {"rm_score": -0.4, "true_greedy": 60.0, "true_sampled": 60.0}, cfg) == []
    assert ppo_eval.final_alarms(before, {"rm_score": 0.03, "true_greedy": 60.0, "true_sampled": 60.0},
                            ppo.config("cpu", reward="verifier")) == []


def test_family_alarm_fires_when_one_family_breaks_under_a_rising_overall_score():
    # The cpu preset's twin without the KL leash, as measured: the overall held-out score rose (conduct
    # families), the learned reward rose, and benign look-alikes fell 80.4 -> 50.0% (garbled names).
    cfg = ppo.config("cpu")
    def fams(benign, harmful):
        return {"benign": {"sampled": benign}, "harmful": {"sampled": harmful}, "extract": {"sampled": 98.3}}

    before = {"rm_score": 0.01, "true_greedy": 60.0, "true_sampled": 61.8, "per_family": fams(80.4, 32.6)}
    after = {"rm_score": 0.83, "true_greedy": 85.5, "true_sampled": 76.0, "per_family": fams(50.0, 96.9)}
    fired = ppo_eval.final_alarms(before, after, cfg)
    assert [a["kind"] for a in fired] == ["reward_hacking_family"] and "benign fell 80.4 -> 50.0" in fired[0]["message"]
    # a small fall, or a falling learned reward, is no alarm
    assert ppo_eval.final_alarms(before, {**after, "per_family": fams(72.0, 96.9)}, cfg) == []
    # a fall in greedy accuracy alone counts too (a family the rollouts never visit moves greedily first)
    greedy = {f: {**v, "greedy": 69.0} for f, v in fams(80.4, 32.6).items()}
    fell = {**greedy, "extract": {"sampled": 98.3, "greedy": 55.0}}
    fired = ppo_eval.final_alarms({**before, "per_family": greedy}, {**after, "per_family": fell}, cfg)
    assert [a["kind"] for a in fired] == ["reward_hacking_family"] and "extract fell 69.0 -> 55.0% right (greedy)" in \
        fired[0]["message"]
    assert ppo_eval.final_alarms(before, {**after, "rm_score": -0.2}, cfg) == []
    assert ppo_eval.final_alarms(before, after, ppo.config("cpu", alarm_family_drop=40.0)) == []



def test_token_kl_is_zero_against_itself(base_run):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    path = str(base_run.path / "02_sft" / "model")
    model, tok = AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)
    rows = ppo_eval.token_kl(model, model, tok, "What is 2 plus 3?", "5")
    assert rows[-1]["token"] == tok.eos_token and all(abs(x["kl"]) < 1e-6 and x["k1"] == 0 for x in rows)


def test_gpu_memory_budget_applies_the_plan_notebook_05_shows(base_run):
    fastest = ppo.plan_for(ppo.config("smoke"), base_run)  # no budget: the fastest plan and its estimate
    smallest = ppo.plan_for(ppo.config("smoke"), base_run, 1e-6)  # fits nothing: the smallest plan's estimate
    assert not smallest.fits and smallest.total_gb < fastest.total_gb
    # a budget between the two: the plan must give something up to fit
    asked = ppo.config("smoke", gpu_memory_gb=(smallest.total_gb + fastest.total_gb) / 2)
    shown = ppo.plan_for(asked, base_run)  # what notebook 05 displays
    cfg = ppo.fit_budget(asked, base_run)  # what run() trains with
    assert shown.fits and shown.total_gb <= asked.gpu_memory_gb < fastest.total_gb
    assert (shown.micro_batch_size, shown.gradient_checkpointing, shown.bf16) != (
        fastest.micro_batch_size, fastest.gradient_checkpointing, fastest.bf16)
    assert asked.minibatch_size % shown.micro_batch_size == 0
    assert (cfg.micro_batch_size, cfg.bf16, cfg.gradient_checkpointing) == (
        shown.micro_batch_size, shown.bf16, shown.gradient_checkpointing)
    assert shown.gpu_memory_gb == asked.gpu_memory_gb and ppo.plan_for(ppo.config("smoke"), base_run, 24).gpu_memory_gb == 24
    assert ppo.fit_budget(ppo.config("smoke"), base_run) == ppo.config("smoke")  # no budget: the config as it is
    with pytest.raises(ConfigError, match="does not fit"):
        ppo.fit_budget(ppo.config("smoke", gpu_memory_gb=0.001), base_run)



