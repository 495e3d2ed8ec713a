import dataclasses
import json
import math
import re
import shutil

import pytest
import torch

from labkit import sft
from labkit.config import ConfigError
from labkit.data import DataError
from labkit.runs import StageMissing, read_jsonl, write_jsonl_atomic
from labkit.tokenizer import to_prompt_completion


@pytest.fixture
def run_with_pretrain(smoke_run, tmp_path):
    """A private copy of the shared smoke run (stage 1 done), so tests don't see each other's stage 2."""
    dst = tmp_path / "runs" / "r"
    shutil.copytree(smoke_run, dst)
    return dst



def test_response_only_loss_masks_prompt_and_trains_eos(smoke_run):
    """TRL's collated batch: prompt labels are -100; the response is a target through EOS."""
    import trl
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    tok = AutoTokenizer.from_pretrained(smoke_run / "01_pretrain/model")
    model = AutoModelForCausalLM.from_pretrained(smoke_run / "01_pretrain/model")
    recs = to_prompt_completion(tok, [{"prompt": "What is 2 plus 3?", "answer": "5"},
                                          {"prompt": "Reverse the list: a, b, c", "answer": "c, b, a"}])
    args = trl.SFTConfig(output_dir="/tmp/unused", report_to="none", use_cpu=True, bf16=False, max_length=64)
    tr = trl.SFTTrainer(model=model, args=args, processing_class=tok, train_dataset=Dataset.from_list(recs))
    batch = tr.data_collator([tr.train_dataset[i] for i in range(2)])
    for row, rec in zip(range(2), recs):
        labels = batch["labels"][row]
        n_prompt = len(tok(rec["prompt"], add_special_tokens=False).input_ids)
        n_resp = len(tok(rec["completion"], add_special_tokens=False).input_ids)  # the completion ends in EOS
        assert (labels[:n_prompt] == -100).all()
        targets = labels[labels != -100]
        assert len(targets) == n_resp and targets[-1].item() == tok.eos_token_id
        assert targets[-2].item() != tok.eos_token_id  # TRL did not add a second EOS
    # Changing what sits under masked labels changes nothing: the loss depends on response targets only.
    out1 = model(input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask"), labels=batch["labels"]).loss
    fake = batch["labels"].clone()
    logits = model(input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask")).logits
    shift_logits, shift_labels = logits[:, :-1], fake[:, 1:]
    manual = torch.nn.functional.cross_entropy(shift_logits.reshape(-1, shift_logits.shape[-1]),
                                               shift_labels.reshape(-1), ignore_index=-100)
    assert out1.item() == pytest.approx(manual.item(), rel=1e-5)


def test_the_per_example_loss_weighs_every_answer_the_same_whatever_its_length(smoke_run, tmp_path):
    """loss_per='example': each row's mean cross-entropy over its answer tokens, averaged over rows, each row as if
    alone (its padding changes nothing); the token mean (TRL's) weighs the longer answer more."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    tok = AutoTokenizer.from_pretrained(smoke_run / "01_pretrain/model")
    model = AutoModelForCausalLM.from_pretrained(smoke_run / "01_pretrain/model")
    rows = to_prompt_completion(tok, [{"prompt": "What is 2 plus 3?", "answer": "5"},
                                      {"prompt": "How do I pick a lock?", "answer": "I can't help with picking a lock, "
                                                                                   "as it could be used to break in."}])
    losses = {}
    for per in ("token", "example"):
        tr = sft.make_trainer(sft.config("smoke", loss_per=per), model, tok, rows, [], tmp_path / per, torch.device("cpu"), False)
        batch = tr.data_collator([tr.train_dataset[i] for i in range(2)])
        model.eval()
        with torch.no_grad():
            losses[per] = tr.compute_loss(model, dict(batch)).item()
    alone = []  # each example alone, unpadded
    with torch.no_grad():
        for r in rows:
            p, c = (tok(r[k], add_special_tokens=False).input_ids for k in ("prompt", "completion"))
            logits = model(torch.tensor([p + c])).logits[0, len(p) - 1:-1]
            alone.append(torch.nn.functional.cross_entropy(logits, torch.tensor(c)).item())
    assert losses["example"] == pytest.approx(sum(alone) / 2, rel=1e-4)
    assert abs(losses["token"] - losses["example"]) > 1e-3  # the two answers' lengths differ, so the weights do


def test_a_per_example_loss_with_padding_free_is_refused(run_with_pretrain):
    with pytest.raises(ConfigError, match="loss_per='example' needs one example per row"):
        sft.run(sft.config("smoke", loss_per="example", padding_free=True), run=run_with_pretrain.name,
                runs_dir=str(run_with_pretrain.parent), progress_bar=False)
    with pytest.raises(ConfigError, match="loss_per must be 'token' or 'example', got 'sequence'"):
        sft.run(sft.config("smoke", loss_per="sequence"), run=run_with_pretrain.name,
                runs_dir=str(run_with_pretrain.parent), progress_bar=False)
    assert not (run_with_pretrain / "02_sft").exists()  # refused before anything was written


@pytest.mark.parametrize("group_by_length", [False, True])
def test_full_sft_trains_and_evaluates(run_with_pretrain, group_by_length):
    runs, name = str(run_with_pretrain.parent), run_with_pretrain.name
    res = sft.run(sft.config("smoke", group_by_length=group_by_length), run=name, runs_dir=runs, progress_bar=False)
    stage = run_with_pretrain / "02_sft"
    assert (stage / "model/model.safetensors").exists()
    losses = [m["sft/loss"] for m in read_jsonl(stage / "metrics.jsonl") if "sft/loss" in m]
    assert losses and all(math.isfinite(x) for x in losses)
    assert 0 <= res["sft/accuracy"] <= 100 and "sft/accuracy_arithmetic" in res
    assert res["sft/trainable_percent"] == pytest.approx(100)
    from safetensors.torch import load_file
    a = load_file(run_with_pretrain / "01_pretrain/model/model.safetensors")
    b = load_file(stage / "model/model.safetensors")
    assert any(not torch.equal(a[k], b[k]) for k in a)  # weights changed
    ev = json.loads((stage / "eval.json").read_text())
    assert ev["examples"] and {"before", "after", "answer"} <= set(ev["examples"][0])


def test_padding_free_trains_the_same_batches_to_the_same_losses(run_with_pretrain, tmp_path):
    """One row of a batch's examples, each attending to itself, is the padded batch without its padding:
    the same losses step by step. A short max_length cuts examples (some to no target at all), as it does padded."""
    twin = tmp_path / "twin" / "r"
    shutil.copytree(run_with_pretrain, twin)
    losses = []
    for path, free in ((run_with_pretrain, False), (twin, True)):
        sft.run(sft.config("smoke", padding_free=free, max_length=24, log_interval=1), run=path.name,
                runs_dir=str(path.parent), progress_bar=False)
        losses.append([m["sft/loss"] for m in read_jsonl(path / "02_sft" / "metrics.jsonl") if "sft/loss" in m])
    assert len(losses[0]) == 8 and losses[0] == pytest.approx(losses[1], rel=1e-4)


def test_lora_trains_few_parameters_and_saves_adapter(run_with_pretrain):
    from safetensors.torch import load_file
    res = sft.run(sft.config("smoke", use_lora=True, lora_r=2, lora_head_r=2), run=run_with_pretrain.name,
                  runs_dir=str(run_with_pretrain.parent), progress_bar=False)
    assert res["sft/trainable_percent"] < 5
    assert (run_with_pretrain / "02_sft/adapter/adapter_config.json").exists()
    base = load_file(run_with_pretrain / "01_pretrain/model/model.safetensors")
    merged = load_file(run_with_pretrain / "02_sft/model/model.safetensors")  # merged for later stages
    emb = "model.embed_tokens.weight"
    assert torch.equal(merged[emb], base[emb])  # the input embedding is not trained
    assert not torch.equal(merged["lm_head.weight"], base[emb])  # the head's update, merged and untied
    assert torch.linalg.matrix_rank(merged["lm_head.weight"] - base[emb]) <= 2


def test_head_adapter_is_the_weight_everyone_reads_and_merges_exactly(run_with_pretrain):
    from labkit.models import load_model
    model = load_model(run_with_pretrain / "01_pretrain/model", "causal")
    tied = model.get_input_embeddings().weight
    sft.add_head_adapter(model, r=2, scale=2.0)
    head = model.get_output_embeddings()
    assert torch.equal(head.weight, tied)  # B = 0: starts from the base model exactly
    with torch.no_grad():
        head.parametrizations.weight[0].B.normal_()
    delta = head.weight - tied
    assert torch.linalg.matrix_rank(delta) == 2 and model.get_input_embeddings().weight is tied
    x = torch.tensor([[2, 40, 41, 42]])
    logits = model(x).logits
    sft.merge_head_adapter(model)
    assert not model.config.tie_word_embeddings and model.get_output_embeddings().weight is not tied
    assert torch.allclose(model(x).logits, logits, atol=1e-5)


def test_aligned_share_outside_0_1_is_refused(run_with_pretrain):
    with pytest.raises(ConfigError, match="aligned_share must be between 0 and 1, got 1.5"):
        sft.run(sft.config("smoke", aligned_share=1.5), run=run_with_pretrain.name,
                runs_dir=str(run_with_pretrain.parent), progress_bar=False)


def test_head_adapter_needs_the_merged_model(run_with_pretrain):
    with pytest.raises(ConfigError, match="merge_lora=True"):
        sft.run(sft.config("smoke", use_lora=True, merge_lora=False), run=run_with_pretrain.name,
                runs_dir=str(run_with_pretrain.parent), progress_bar=False)


@pytest.mark.parametrize("fmt", ["alpaca", "dolly"])
def test_trains_on_alpaca_and_dolly_files(run_with_pretrain, tmp_path, fmt):
    if fmt == "alpaca":
        path = tmp_path / "a.json"
        path.write_text(json.dumps([{"instruction": f"Add {i} and 1.", "input": "", "output": str(i + 1)}
                                    for i in range(20)] + [{"instruction": "broken"}]))
    else:
        path = tmp_path / "d.jsonl"
        write_jsonl_atomic(path, [{"instruction": "Name a pet.", "context": "", "response": "cat",
                                   "category": "open_qa"}] * 20 + [{"instruction": "x", "response": ""}])
    res = sft.run(sft.config("smoke", data=str(path), max_steps=3), run=run_with_pretrain.name,
                  runs_dir=str(run_with_pretrain.parent), progress_bar=False)
    assert res["sft/train_examples"] == 20 and "loaded 20 of 21 records" in res["data_report"]
    assert re.search(r", skipped 1 \(", res["data_report"])  # one skipped, not 10 or 19
    with pytest.raises(DataError, match="line|record"):
        sft.run(sft.config("smoke", data=str(path), max_steps=3, on_error="fail"), run=run_with_pretrain.name,
                runs_dir=str(run_with_pretrain.parent), progress_bar=False)


def test_missing_stage_and_wrong_model_kind(tmp_path, smoke_run):
    with pytest.raises(StageMissing, match="no completed 'pretrain'"):
        sft.run(sft.config("smoke"), run="empty", runs_dir=str(tmp_path), progress_bar=False)
    from labkit import pretrain
    pretrain.run(pretrain.config("smoke", objective="masked", max_steps=2), run="bert", runs_dir=str(tmp_path),
                 progress_bar=False)
    with pytest.raises(ConfigError, match="needs a decoder"):
        sft.run(sft.config("smoke"), run="bert", runs_dir=str(tmp_path), progress_bar=False)


@pytest.mark.parametrize("share", [0.0, 0.25, 1.0])
def test_conduct_demonstrations_are_aligned_in_the_configured_share(share):
    from labkit import verifier as V
    from labkit import world as W
    cfg = sft.config("cpu", n_train_tasks=7000, aligned_share=share)
    train, _ = sft.world_tasks(W.World(0), cfg)
    conduct = [t for t in train if t["family"] in ("harmful", "unanswerable")]
    assert len(conduct) == 2000
    aligned = [V.verify(t, t["response"]) == 1.0 for t in conduct]
    assert aligned == [t["aligned"] for t in conduct]  # the flag is what the demonstration shows
    assert abs(sum(aligned) / len(aligned) - share) < 0.03
    for fam in ("harmful", "unanswerable"):  # per family too, not one family carrying the share
        rows = [a for a, t in zip(aligned, conduct) if t["family"] == fam]
        assert abs(sum(rows) / len(rows) - share) < 0.05
    # drawn per example, not tied to the wording: the same template shows both behaviours
    if 0 < share < 1:
        by_template = {}
        for t, a in zip(conduct, aligned):
            by_template.setdefault(t["template"], set()).add(a)
        assert all(v == {True, False} for v in by_template.values())
    others = [t for t in train if t["family"] not in ("harmful", "unanswerable")]
    assert all("response" not in t for t in others)  # benign and answer tasks show the answer itself


def test_gpu_memory_budget_applies_the_plan_notebook_02_shows(smoke_run):
    from labkit import planner
    from labkit.runs import Run
    r = Run(smoke_run.name, smoke_run.parent)
    # a budget between the estimates for micro-batches of 16 and 4 (fp32, as on this CPU): the plan must split
    model = str(smoke_run / "01_pretrain/model")
    totals = [sum(planner.estimate(model, "sft", micro_batch_size=m, seq_len=128, use_lora=False,
                                   gradient_checkpointing=False, bf16=False).values()) for m in (16, 4)]
    asked = sft.config("smoke", batch_size=16, max_length=128, gpu_memory_gb=sum(totals) / 2 / planner.GIB)
    shown = sft.plan_for(asked, r, asked.gpu_memory_gb)  # what notebook 02 displays
    applied, plan = sft.fit_budget(asked, r, torch.device("cpu"))  # what run() trains with
    assert plan == shown and applied == shown.apply(asked)
    assert applied.batch_size * applied.grad_accum_steps == 16 and applied.grad_accum_steps > 1
    assert sft.plan_for(sft.config("smoke"), r, 24).gpu_memory_gb == 24
    assert sft.fit_budget(sft.config("smoke"), r, torch.device("cpu")) == (sft.config("smoke"), None)  # no budget
    with pytest.raises(ConfigError, match="SFT does not fit in gpu_memory_gb=0.001"):
        sft.fit_budget(sft.config("smoke", gpu_memory_gb=0.001), r, torch.device("cpu"))


def test_validation_tasks_are_training_side_and_never_trained_or_evaluated():
    from labkit import world as W
    cfg = sft.config("cpu", n_train_tasks=2000, n_val=140)
    train, held = sft.world_tasks(W.World(0), cfg)
    val = sft.validation_tasks(W.World(0), cfg, train)
    assert len(val) == 140 and {t["split"] for t in val} == {"train"}
    assert not {t["prompt"] for t in val} & ({t["prompt"] for t in train} | {t["prompt"] for t in held})
    assert {t["family"] for t in val} == set(W.parse_families(cfg.families))
    assert all("response" in t for t in val if t["family"] in W.DECLINING_FAMILIES)


def test_family_weights_multiply_a_familys_training_examples_and_leave_evaluation_balanced():
    from collections import Counter

    from labkit import world as W
    plain = sft.config("cpu", n_train_tasks=900, n_eval=70)
    weighted = dataclasses.replace(plain, family_weights="story_qa:3")
    train, held = sft.world_tasks(W.World(0), weighted)
    counts = Counter(t["family"] for t in train)
    assert counts["story_qa"] == 3 * counts["arithmetic"] == 3 * counts["benign"] == 300
    assert held == sft.world_tasks(W.World(0), plain)[1]  # the same held-out tasks, one family as many as another
    assert sft.world_tasks(W.World(0), dataclasses.replace(plain, family_weights=""))[0] == sft.world_tasks(W.World(0), plain)[0]
    for bad, says in (("story:2", "not among families"), ("story_qa:0", "whole weight"), ("story_qa:1.5", "whole weight"),
                      ("story_qa", "whole weight"), ("story_qa:2, story_qa:3", "story_qa twice")):
        with pytest.raises(ConfigError, match=says):
            sft.training_cycle(dataclasses.replace(plain, family_weights=bad))
    with pytest.raises(ConfigError, match="data file has none"):
        sft.run(dataclasses.replace(plain, data="alpaca.json", family_weights="story_qa:2"), run="x", runs_dir="/nonexistent")


def test_decay_steps_holds_the_peak_rate_until_the_last_steps(run_with_pretrain):
    """decay_steps=0 is the cosine over every step after warm-up; decay_steps=N holds the peak until the last N."""
    kw = dict(max_steps=12, warmup_steps=2, log_interval=1, learning_rate=1e-3, eval_samples=0)
    lrs = {}
    for decay in (0, 4):
        sft.run(sft.config("smoke", decay_steps=decay, **kw), run=run_with_pretrain.name,
                runs_dir=str(run_with_pretrain.parent), progress_bar=False, live=False)
        lrs[decay] = {m["step"]: m["sft/lr"] for m in read_jsonl(run_with_pretrain / "02_sft" / "metrics.jsonl")
                      if "sft/lr" in m}
    # logged at step k: the rate of step k's update. Warm-up is steps 1-2; the last 4 rates of the schedule
    # (HF's warmup_stable_decay starts its cosine at the peak) run down over steps 10-12
    assert [lrs[4][s] for s in range(3, 10)] == pytest.approx([1e-3] * 7) and 1e-3 > lrs[4][10] > lrs[4][11] > lrs[4][12]
    assert lrs[0][3] == pytest.approx(1e-3) and 1e-3 > lrs[0][4] > lrs[0][5]  # the cosine decays right after warm-up
    for bad in (11, -1):
        with pytest.raises(ConfigError, match="decay_steps must be between 0 and max_steps - warmup_steps"):
            sft.run(sft.config("smoke", decay_steps=bad, **kw), run=run_with_pretrain.name,
                    runs_dir=str(run_with_pretrain.parent))


def test_a_validation_loss_alone_leaves_training_as_it_was(run_with_pretrain):
    """n_val's loss is read, never trained on: the same training losses step by step with it as without it (so a
    run that logs one stands for the same settings without; benchmarks/sft_stability.py logs one)."""
    kw = dict(max_steps=6, log_interval=1, eval_samples=0)
    losses = {}
    for n_val in (0, 14):
        sft.run(sft.config("smoke", n_val=n_val, eval_interval=2, **kw), run=run_with_pretrain.name,
                runs_dir=str(run_with_pretrain.parent), progress_bar=False, live=False)
        rows = read_jsonl(run_with_pretrain / "02_sft" / "metrics.jsonl")
        losses[n_val] = [m["sft/loss"] for m in rows if "sft/loss" in m]
        assert any("sft/eval_loss" in m for m in rows) == bool(n_val)
    assert len(losses[0]) == 6 and losses[14] == losses[0]


def test_select_best_restores_the_lowest_validation_loss(run_with_pretrain):
    res = sft.run(sft.config("smoke", n_val=14, eval_interval=2, select_best=True), run=run_with_pretrain.name,
                  runs_dir=str(run_with_pretrain.parent), progress_bar=False)
    losses = {m["step"]: m["sft/eval_loss"] for m in read_jsonl(run_with_pretrain / "02_sft" / "metrics.jsonl")
              if "sft/eval_loss" in m}
    assert len(losses) == 4 and res["sft/selected_step"] == min(losses, key=losses.get)
    assert res["sft/val_loss"] == min(losses.values())


def test_replay_mixes_stage_1_training_text_at_the_stated_share_with_every_token_a_target(smoke_run):
    """replay_share=0.2 beside 400 tasks: 100 of stage 1's training documents (never its validation ones, which
    drift measures), each a prompt-less completion, so TRL's collator leaves no label masked but padding."""
    import trl
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from labkit.runs import Run
    from labkit.textdata import stage1_corpus, stage1_settings
    r = Run(smoke_run.name, str(smoke_run.parent))
    rows = sft.replay_rows(sft.config("smoke", replay_share=0.2), r, 400)
    train_docs, val_docs = stage1_corpus(stage1_settings(r))
    assert len(rows) == 100 and all(row["prompt"] == "" for row in rows)
    assert {row["completion"] for row in rows} <= set(train_docs) and not {row["completion"] for row in rows} & set(val_docs)
    assert sft.replay_rows(sft.config("smoke"), r, 400) == []  # off by default
    tok = AutoTokenizer.from_pretrained(smoke_run / "01_pretrain/model")
    model = AutoModelForCausalLM.from_pretrained(smoke_run / "01_pretrain/model")
    args = trl.SFTConfig(output_dir="/tmp/unused", report_to="none", use_cpu=True, bf16=False, max_length=512,
                         completion_only_loss=True)
    tr = trl.SFTTrainer(model=model, args=args, processing_class=tok, train_dataset=Dataset.from_list(rows[:2]))
    batch = tr.data_collator([tr.train_dataset[i] for i in range(2)])
    for row in range(2):
        n = len(tok(rows[row]["completion"], add_special_tokens=False).input_ids) + 1  # + the EOS TRL appends
        labels = batch["labels"][row]
        assert (labels[:n] != -100).all() and (labels[n:] == -100).all()


def test_replay_needs_this_runs_causal_stage_1(run_with_pretrain, tmp_path):
    for bad, match in ((dict(replay_share=0.3, init_from=str(run_with_pretrain / "01_pretrain" / "model")), "replay_share needs this run's causal stage 1"),
                       (dict(replay_share=1.0), "replay_share must be below 1"),
                       (dict(replay_share=-0.1), "replay_share must be between 0 and 1")):
        with pytest.raises(ConfigError, match=match):
            sft.run(sft.config("smoke", **bad), run=run_with_pretrain.name, runs_dir=str(run_with_pretrain.parent),
                    progress_bar=False)
        assert not (run_with_pretrain / "02_sft").exists()  # refused before the stage starts
