"""The TRL plumbing every training stage shares (labkit.training)."""

import torch

from labkit import training
from labkit.runs import read_jsonl


def test_trainer_args_follow_the_device_not_trls_gpu_defaults():
    cpu = training.trainer_args("out", torch.device("cpu"), bf16=False, log_interval=7, report_to="none", seed=3)
    assert cpu["use_cpu"] and not cpu["bf16"] and not cpu["activation_checkpointing"]
    assert cpu["logging_steps"] == 7 and cpu["seed"] == cpu["data_seed"] == 3 and cpu["save_strategy"] == "no"
    assert not cpu["dataloader_pin_memory"] and cpu["disable_tqdm"]
    import trl
    trl.SFTConfig(**cpu)  # TRL accepts every argument


def test_metrics_record_namespaces_keys_and_puts_accuracies_in_percent():
    rec = training.metrics_record("reward", 5, {"loss": 0.5, "accuracy": 0.75, "learning_rate": 1e-3,
                                                "train_runtime": 3.0, "flag": True, "note": "x"})
    assert rec == {"step": 5, "reward/loss": 0.5, "reward/accuracy": 75.0, "reward/lr": 1e-3, "reward/train_runtime": 3.0}
    assert training.metrics_record("sft", 1, {"note": "text only"}) is None
    rec = training.metrics_record("compare/dpo", 2, {"rewards/accuracies": 0.5}, method="dpo")
    assert rec == {"step": 2, "method": "dpo", "compare/dpo/rewards/accuracies": 50.0}


def test_metrics_callback_appends_lines_updates_the_chart_and_the_bar(tmp_path):
    from types import SimpleNamespace
    seen, ticks = [], []
    chart = SimpleNamespace(update=lambda step, rec: seen.append((step, rec)))
    bar = SimpleNamespace(update=lambda n: ticks.append(n), set_postfix=lambda **kw: ticks.append(kw))
    cb = training.MetricsCallback(tmp_path / "m.jsonl", "sft", chart, bar, show=("sft/loss",))
    state = SimpleNamespace(global_step=4)
    cb.on_step_end(None, state, None)
    cb.on_log(None, state, None, logs={"loss": 1.25})
    cb.on_log(None, state, None, logs={"note": "ignored"})
    assert read_jsonl(tmp_path / "m.jsonl") == [{"step": 4, "sft/loss": 1.25}]
    assert seen == [(4, {"step": 4, "sft/loss": 1.25})] and ticks == [1, {"loss": "1.25"}]


def test_lora_config_trains_a_classifiers_head_in_full(tiny):
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(tiny[0])
    causal = training.lora_config(model, r=4, alpha=8)
    assert causal.task_type == "CAUSAL_LM" and not causal.modules_to_save and causal.r == 4
    assert set(causal.target_modules) == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    cls = training.lora_config(model, r=4, alpha=8, target_modules="q_proj,v_proj", classifier=True)
    assert cls.task_type == "SEQ_CLS" and list(cls.modules_to_save) == ["score"]
    assert set(cls.target_modules) == {"q_proj", "v_proj"}
