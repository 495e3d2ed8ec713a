"""Stage 6: DPO, RLOO and best-of-n beside PPO, evaluated as stage 5 evaluates.

One smoke run folder for the module: stage 1's model standing in for SFT, a reward model with a random
head (conftest's ``ppo_standins``), hand-made preference pairs, and stage 5 run on the smoke preset."""
import dataclasses
import json
import math
import shutil

import pytest
import torch

from labkit import compare, ppo, ppo_config, reward, reward_model, runner
from labkit.training import quiet_peft
from conftest import mark_complete
from labkit.runs import Run, atomic_write_json, atomic_write_text, read_json, read_jsonl


@pytest.fixture(scope="module")
def stage5(ppo_standins, tmp_path_factory):
    """A run folder with stages sft, preferences, reward and ppo complete (smoke)."""
    runs = tmp_path_factory.mktemp("compare")
    shutil.copytree(ppo_standins.path, runs / "base")
    r = Run("base", runs)
    pool, _ = ppo_config.load_prompts(ppo_config.config("smoke"), r.world())
    # Hand-made preferences on training prompts: the verifier's answer over a wrong one.
    pairs = [{"prompt": t["prompt"], "chosen": str(t["answer"]), "rejected": "I do not know."} for t in pool[:12]]
    atomic_write_text(r.stage_dir("preferences") / "pairs.jsonl", "".join(json.dumps(p) + "\n" for p in pairs))
    mark_complete(r, "preferences")
    atomic_write_json(r.stage_dir("reward") / "config.json", dataclasses.asdict(reward.config("smoke")))
    ppo.run(ppo.config("smoke"), run="base", runs_dir=str(runs), progress_bar=False, live=False)
    return r


@pytest.fixture(scope="module")
def compared(stage5, tmp_path_factory):
    """Stage 6 on the smoke preset, every method, in a copy of the stage-5 folder."""
    runs = tmp_path_factory.mktemp("compared")
    shutil.copytree(stage5.path, runs / "cmp")
    result = compare.run(compare.config("smoke"), run="cmp", runs_dir=str(runs), progress_bar=False, live=False)
    return Run("cmp", runs), result


def test_the_table_has_a_row_per_method_with_the_names_a_script_reads(compared):
    r, result = compared
    ev = read_json(r.path / "06_compare" / "eval.json")
    assert [row["method"] for row in ev["methods"]] == ["sft", "best_of_n", "dpo", "rloo", "rloo_verifier", "ppo"]
    for row in ev["methods"]:
        for key in compare.ROW_KEYS:
            assert key in row, (row["method"], key)
        assert row["kl"] is not None and row["seconds"] is not None
    by = {row["method"]: row for row in ev["methods"]}
    assert by["dpo"]["peak_memory_mb"] > 100 and by["dpo"]["trainable_params"] > 0
    assert by["best_of_n"]["kl"] == pytest.approx(math.log(2) - 1 / 2)  # n = stage 5's eval_samples = 2
    assert ev["settings"]["dpo"]["beta"] == compare.config("smoke").dpo_beta
    assert ev["settings"]["rloo"]["beta"] == ppo.config("smoke").kl_coef  # stage 5's
    assert r.is_complete("compare") and "compare/dpo_harmful_refused" in r.manifest()["stages"]["compare"]["headline"]
    assert {s["method"] for s in read_jsonl(r.path / "06_compare" / "samples.jsonl")} == set(by)
    for m in ("dpo", "rloo", "rloo_verifier"):
        assert (r.path / "06_compare" / m / "adapter" / "adapter_config.json").exists()


def test_every_method_is_evaluated_as_stage_5_evaluates(compared):
    """Same prompts, seed and settings: the SFT row re-measures stage 5's "before" exactly (same threads)."""
    r, result = compared
    before = read_json(r.path / "05_ppo" / "eval.json")["before"]
    sft = result["methods"][0]
    assert result["sft_matches_stage5"]
    assert [sft[k] for k in compare.RATES] == [before[k] for k in compare.RATES] and sft["kl"] == 0.0
    assert result["settings"]["evaluation"]["prompts"] == read_json(r.path / "05_ppo" / "eval.json")["eval_prompts"]
    # the held-out prompts are read from stage 5's folder, not regenerated
    assert [t["prompt"] for t in compare.heldout_tasks(r)] == [s["prompt"] for s in
                                                               read_jsonl(r.path / "05_ppo" / "samples.jsonl")]


def test_no_training_prompt_is_a_held_out_prompt(stage5):
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(str(stage5.require("sft", "model")))
    pcfg = compare.stage5_config(stage5)
    pool = compare.training_pool(stage5, pcfg, tok, 10 ** 9, [])
    fewer = compare.training_pool(stage5, pcfg, tok, 10 ** 9, [{"prompt": pool[0]["prompt"]}])
    assert pool[0]["prompt"] not in {t["prompt"] for t in fewer} and len(fewer) < len(pool)
    pairs, _ = compare.preference_pairs(stage5, tok, 10 ** 9)
    kept, _ = compare.preference_pairs(stage5, tok, 10 ** 9, [{"prompt": pairs[0]["prompt"]}])
    assert pairs[0]["prompt"] not in {p["prompt"] for p in kept}


def test_the_ppo_row_is_read_from_stage_5_not_retrained(stage5, tmp_path, monkeypatch):
    shutil.copytree(stage5.path, tmp_path / "p")
    ev_path = tmp_path / "p" / "05_ppo" / "eval.json"
    ev = read_json(ev_path)
    ev["after"].update(harmful_refused=12.5, unanswerable_abstained=37.5, over_refusal=6.25, task_accuracy=42.0, kl=0.75)
    ev["ppo/peak_memory_mb"] = 321.0
    atomic_write_json(ev_path, ev)

    def no(*a, **k):
        raise AssertionError("compare must not run PPO")
    monkeypatch.setattr(ppo, "run", no)
    monkeypatch.setattr(ppo, "ppo_step", no)
    result = compare.run(compare.config("smoke", methods="ppo"), run="p", runs_dir=str(tmp_path), progress_bar=False,
                         live=False)
    row = result["methods"][-1]
    assert [m["method"] for m in result["methods"]] == ["sft", "ppo"]
    assert (row["harmful_refused"], row["unanswerable_abstained"], row["over_refusal"], row["task_accuracy"],
            row["kl"], row["peak_memory_mb"]) == (12.5, 37.5, 6.25, 42.0, 0.75, 321.0)
    steps = read_jsonl(tmp_path / "p" / "05_ppo" / "metrics.jsonl")
    assert row["seconds"] == pytest.approx(sum(m["ppo/step_seconds"] for m in steps), abs=0.01)


def _base_unchanged_and_adapter_trained(policy, sft_path):
    from transformers import AutoModelForCausalLM
    sft = AutoModelForCausalLM.from_pretrained(str(sft_path)).state_dict()
    base = {n.replace("base_layer.", ""): p for n, p in policy.get_base_model().state_dict().items() if "lora_" not in n}
    assert set(sft) <= set(base)
    assert all(torch.equal(base[n], sft[n]) for n in sft)  # the base did not move
    lora_b = [p for n, p in policy.named_parameters() if "lora_B" in n]
    assert lora_b and any(p.abs().sum() > 0 for p in lora_b)  # B starts at zero: the adapter trained


def test_dpo_trains_its_adapter_and_leaves_the_base(stage5, tmp_path):
    from transformers import AutoTokenizer
    sft_path = stage5.require("sft", "model")
    tok = AutoTokenizer.from_pretrained(str(sft_path))
    pairs, held = compare.preference_pairs(stage5, tok, 10 ** 9)
    policy, stats = compare.train_dpo(compare.config("smoke"), sft_path, tok, pairs, held, {"r": 4, "alpha": 8},
                                      str(tmp_path), torch.device("cpu"), False)
    assert stats["steps"] == 4 and stats["heldout_pairs"] == len(held) > 0
    _base_unchanged_and_adapter_trained(policy, sft_path)


@pytest.mark.parametrize("kind", ["reward_model", "verifier"])
def test_rloo_trains_its_adapter_and_leaves_the_base(stage5, tmp_path, kind):
    from transformers import AutoTokenizer
    sft_path = stage5.require("sft", "model")
    tok = AutoTokenizer.from_pretrained(str(sft_path))
    pcfg = compare.stage5_config(stage5)
    pool = compare.training_pool(stage5, pcfg, tok, 10 ** 9, compare.heldout_tasks(stage5))
    rm_path = stage5.require("reward", "model")
    rm = reward_model.load_reward_model(rm_path, tok)
    calls = []

    def rm_score(tasks, texts):
        calls.append(len(texts))
        return reward_model.score(rm, tok, [t["prompt"] for t in tasks], texts, 8)
    fn = compare.reward_function(kind, pool, tok.eos_token_id, pcfg, rm_score, {"mean": 0.0, "std": 1.0})
    # 4 groups a round: a smoke model is never right, but whether a sample stops (the missing-EOS penalty)
    # still differs within a group, so the verifier's run has advantages to learn from
    settings = compare.rloo_settings(compare.config("smoke", max_steps=2, rollout_batch_size=16), pcfg)
    policy, stats = compare.train_rloo(compare.config("smoke"), sft_path, tok, pool, fn, settings,
                                       {"r": 4, "alpha": 8}, str(tmp_path), torch.device("cpu"), False)
    assert stats["optimizer_steps"] == 2 * settings["batch_size"] // settings["minibatch_size"]
    assert bool(calls) == (kind == "reward_model")  # the verifier run never asks the reward model
    _base_unchanged_and_adapter_trained(policy, sft_path)


def test_rloo_reward_is_ppos_shaped_score(stage5):
    """The reward model's score normalised by stage 5's mean and std, minus the missing-EOS penalty; the
    verifier's 1/0 with the same penalty."""
    pcfg = compare.stage5_config(stage5)
    pool = [{"family": "arithmetic", "prompt": "What is 2 + 3?", "answer": "5"}]
    fn = compare.reward_function("reward_model", pool, 9, pcfg, lambda tasks, texts: torch.tensor([3.0, 3.0]),
                                 {"mean": 1.0, "std": 2.0})
    got = fn(prompts=[0, 0], completions=[[{"role": "assistant", "content": " 5"}]] * 2,
             completion_ids=[[4, 9], [4, 4]], task_index=[0, 0])
    assert got == [1.0, 1.0 - pcfg.missing_eos_penalty]
    fn = compare.reward_function("verifier", pool, 9, pcfg, None, None)
    got = fn(prompts=[0, 0], completions=[" 5", " 6"], completion_ids=[[4, 9], [4, 9]], task_index=[0, 0])
    assert got == [1.0, 0.0]


def test_dpo_loss_on_a_hand_made_pair_is_the_formula(stage5, tmp_path):
    """TRL's DPO loss on one pair equals −log σ(β[(log π(y_w) − log π_ref(y_w)) − (log π(y_l) − log π_ref(y_l))])
    with every log-probability computed here by hand: the chat text, a forward pass, a sum over the response."""
    from transformers import AutoTokenizer

    from labkit.tokenizer import conversation, format_prompt
    sft_path = stage5.require("sft", "model")
    tok = AutoTokenizer.from_pretrained(str(sft_path))
    pair = {"prompt": "What is 2 + 3?", "chosen": "5", "rejected": "I will not say."}
    beta = 0.3
    trainer = compare.dpo_trainer(compare.config("smoke", dpo_beta=beta, dpo_batch_size=1), sft_path, tok, [pair],
                                  {"r": 4, "alpha": 8}, str(tmp_path), torch.device("cpu"), False)
    model = trainer.model
    torch.manual_seed(0)
    with torch.no_grad():  # move the policy away from the reference, so the margin is not zero
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)
    model.eval()
    batch = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
    with torch.no_grad(), quiet_peft():
        loss = trainer.compute_loss(model, batch).item()

    def logp(net, response):
        prompt = tok(format_prompt(tok, pair["prompt"]), add_special_tokens=False).input_ids
        full = tok(tok.apply_chat_template(conversation(pair["prompt"], response), tokenize=False),
                   add_special_tokens=False).input_ids
        assert full[:len(prompt)] == prompt
        ids = torch.tensor([full])
        with torch.no_grad():
            lp = torch.log_softmax(net(input_ids=ids).logits[0, :-1].float(), -1)
        return sum(lp[t - 1, full[t]].item() for t in range(len(prompt), len(full)))

    pi = [logp(model, pair[k]) for k in ("chosen", "rejected")]
    with model.disable_adapter():
        ref = [logp(model, pair[k]) for k in ("chosen", "rejected")]
    margin = (pi[0] - ref[0]) - (pi[1] - ref[1])
    assert abs(margin) > 0.1
    by_hand = math.log1p(math.exp(-beta * margin))  # −log σ(βΔ)
    assert loss == pytest.approx(by_hand, rel=1e-4, abs=1e-5)
    assert compare.dpo_loss(*map(torch.tensor, (pi[0], pi[1], ref[0], ref[1])), beta).item() == pytest.approx(by_hand)


def _cli(capsys, *argv) -> tuple[int, str]:
    code = runner.main(list(argv))
    return code, capsys.readouterr().err


def test_a_method_that_does_not_exist_is_one_line(stage5, capsys):
    code, err = _cli(capsys, "train", "compare", "--name", stage5.name, "--runs-dir", str(stage5.path.parent), "--preset", "smoke", "-p", "methods=dpo,rlooo")
    assert code == 2 and err.count("\n") == 1
    assert "unknown method 'rlooo' (did you mean 'rloo'?)" in err and "best_of_n" in err


def test_no_pairs_is_one_line(stage5, tmp_path, capsys):
    shutil.copytree(stage5.path, tmp_path / "nopairs")
    atomic_write_text(tmp_path / "nopairs" / "03_preferences" / "pairs.jsonl", "")
    code, err = _cli(capsys, "train", "compare", "--name", "nopairs", "--runs-dir", str(tmp_path), "--preset", "smoke")
    assert code == 2 and err.count("\n") == 1 and "holds no preference pairs, and DPO trains on them" in err
    assert not (tmp_path / "nopairs" / "06_compare").exists()  # refused before anything was written


def test_no_reward_model_is_one_line(stage5, tmp_path, capsys):
    shutil.copytree(stage5.path, tmp_path / "norm")
    shutil.rmtree(tmp_path / "norm" / "04_reward" / "model")
    code, err = _cli(capsys, "train", "compare", "--name", "norm", "--runs-dir", str(tmp_path), "--preset", "smoke")
    assert code == 2 and err.count("\n") == 1 and "04_reward/model is missing" in err


def test_no_stage_5_is_one_line(ppo_standins, capsys):
    code, err = _cli(capsys, "train", "compare", "--name", ppo_standins.name, "--runs-dir", str(ppo_standins.path.parent), "--preset", "smoke")
    assert code == 2 and err.count("\n") == 1 and "no completed 'ppo' stage" in err
    assert "labkit run --name base --stages ppo" in err
