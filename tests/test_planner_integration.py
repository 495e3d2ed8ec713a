"""Stages fit a GPU memory budget: ``gpu_memory_gb`` runs labkit.planner and applies its plan.

The budgets are computed from the planner's own estimates for the smoke model (a budget between
"the whole batch at once" and "a quarter of it"), so the tests pin behaviour, not constants:
the effective batch is kept (micro-batch x accumulation), the plan lands in plan.json and
eval.json, and a budget below anything possible fails before a file is written.
"""

import shutil

import pytest
import torch

from labkit import planner, pretrain, sft
from labkit.config import ConfigError
from labkit.runs import read_json, read_jsonl


def _budget_between(model, stage, seq_len, big, small):
    """GiB half-way between the fp32, no-checkpointing estimates for micro-batches ``big`` and ``small``."""
    total = [sum(planner.estimate(model, stage, micro_batch_size=m, seq_len=seq_len, use_lora=False,
                                  gradient_checkpointing=False, bf16=False).values()) for m in (big, small)]
    assert total[0] > total[1]
    return (total[0] + total[1]) / 2 / planner.GIB


def test_pretrain_budget_splits_the_batch_and_keeps_it(smoke_run, tmp_path):
    model_dir = str(smoke_run / "01_pretrain/model")  # the same model a smoke run builds
    budget = _budget_between(model_dir, "pretrain", 128, 64, 16)
    cfg = pretrain.config("smoke", batch_size=64, max_steps=2, eval_interval=2, log_interval=1,
                          gpu_memory_gb=budget, threads=1)
    res = pretrain.run(cfg, run="fit", runs_dir=str(tmp_path), progress_bar=False)
    stage = tmp_path / "fit/01_pretrain"
    ran = read_json(stage / "config.json")
    assert ran["batch_size"] * ran["grad_accum_steps"] == 64 and ran["grad_accum_steps"] > 1
    assert ran["gradient_checkpointing"] is False and ran["bf16"] is False  # fp32 on CPU; smaller micro-batch first
    assert res["pretrain/tokens"] == 2 * 64 * 128  # same tokens per step as the unsplit run
    plan = read_json(stage / "plan.json")
    assert plan["fits"] and plan["micro_batch_size"] == ran["batch_size"] and plan["gpu_memory_gb"] == budget
    assert plan["table"][-1] == ["budget", budget] and plan["table"][-2][0] == "total (peak)"
    assert plan["table"][-2][1] <= budget
    assert read_json(stage / "eval.json")["plan"] == plan
    assert all(m["pretrain/loss"] == m["pretrain/loss"] for m in read_jsonl(stage / "metrics.jsonl"))


def test_pretrain_plan_is_per_process_under_data_parallelism(smoke_run):
    """W processes: planned for batch/W rows each; batch_size keeps counting all processes' rows."""
    model_dir = str(smoke_run / "01_pretrain/model")
    budget = _budget_between(model_dir, "pretrain", 128, 32, 8)
    cfg = pretrain.config("smoke", batch_size=64, gpu_memory_gb=budget)
    fitted, plan = pretrain.fit_budget(cfg, model_dir, torch.device("cpu"), world_size=2)
    assert plan.micro_batch_size * plan.grad_accum_steps == 32  # per process
    assert fitted.batch_size == 2 * plan.micro_batch_size and fitted.grad_accum_steps == plan.grad_accum_steps
    assert fitted.batch_size * fitted.grad_accum_steps == 64
    assert pretrain.fit_budget(pretrain.config("smoke"), model_dir, torch.device("cpu")) == (pretrain.config("smoke"), None)


def test_pretrain_budget_too_small_fails_before_writing(tmp_path):
    cfg = pretrain.config("smoke", gpu_memory_gb=0.1, threads=1)
    with pytest.raises(ConfigError, match="does not fit in gpu_memory_gb=0.1: nothing fits") as e:
        pretrain.run(cfg, run="tiny", runs_dir=str(tmp_path / "runs"), progress_bar=False)
    assert "\n" not in str(e.value)
    assert not (tmp_path / "runs").exists()


@pytest.fixture
def run_with_pretrain(smoke_run, tmp_path):
    dst = tmp_path / "runs" / "r"
    shutil.copytree(smoke_run, dst)
    return dst


def test_sft_budget_sets_accumulation_and_reaches_the_trainer(run_with_pretrain, monkeypatch):
    import trl
    seen = {}
    real = trl.SFTConfig

    def spy(*args, **kw):
        seen.update(kw)
        return real(*args, **kw)

    monkeypatch.setattr(trl, "SFTConfig", spy)
    budget = _budget_between(str(run_with_pretrain / "01_pretrain/model"), "sft", 128, 16, 4)
    cfg = sft.config("smoke", batch_size=16, max_steps=2, n_eval=5, gpu_memory_gb=budget, threads=1)
    res = sft.run(cfg, run="r", runs_dir=str(run_with_pretrain.parent), progress_bar=False)
    stage = run_with_pretrain / "02_sft"
    ran = read_json(stage / "config.json")
    assert ran["batch_size"] * ran["grad_accum_steps"] == 16 and ran["grad_accum_steps"] > 1
    assert seen["per_device_train_batch_size"] == ran["batch_size"]
    assert seen["gradient_accumulation_steps"] == ran["grad_accum_steps"]
    assert ran["use_lora"] is False and res["use_lora"] is False  # full fine-tuning fits: it comes first
    plan = read_json(stage / "plan.json")
    assert plan["fits"] and plan["stage"] == "sft" and read_json(stage / "eval.json")["plan"] == plan


def test_sft_grad_accum_steps_field_reaches_the_trainer(run_with_pretrain, monkeypatch):
    import trl
    seen = {}
    real = trl.SFTConfig
    monkeypatch.setattr(trl, "SFTConfig", lambda *a, **kw: seen.update(kw) or real(*a, **kw))
    sft.run(sft.config("smoke", batch_size=4, grad_accum_steps=2, max_steps=1, n_eval=5, threads=1),
            run="r", runs_dir=str(run_with_pretrain.parent), progress_bar=False)
    assert seen["gradient_accumulation_steps"] == 2 and seen["per_device_train_batch_size"] == 4
    assert not (run_with_pretrain / "02_sft/plan.json").exists()
    assert read_json(run_with_pretrain / "02_sft/eval.json")["plan"] is None


def test_sft_budget_too_small_fails_before_writing(run_with_pretrain):
    with pytest.raises(ConfigError, match="SFT does not fit in gpu_memory_gb=0.2: nothing fits"):
        sft.run(sft.config("smoke", gpu_memory_gb=0.2, threads=1), run="r",
                runs_dir=str(run_with_pretrain.parent), progress_bar=False)
    assert not (run_with_pretrain / "02_sft").exists()


def test_pretrain_gradient_checkpointing_changes_memory_not_maths(tmp_path, monkeypatch):
    from transformers import PreTrainedModel
    calls = []
    real = PreTrainedModel.gradient_checkpointing_enable
    monkeypatch.setattr(PreTrainedModel, "gradient_checkpointing_enable",
                        lambda self, **kw: calls.append(kw) or real(self, **kw))
    losses = {}
    for ckpt in (False, True):
        cfg = pretrain.config("smoke", max_steps=3, log_interval=1, eval_interval=3, threads=1,
                              gradient_checkpointing=ckpt)
        pretrain.run(cfg, run=f"ckpt{ckpt}", runs_dir=str(tmp_path), progress_bar=False)
        losses[ckpt] = [m["pretrain/loss"] for m in read_jsonl(tmp_path / f"ckpt{ckpt}/01_pretrain/metrics.jsonl")]
    assert len(calls) == 1  # only the run that asked for it
    assert losses[True] == pytest.approx(losses[False], rel=1e-5)
