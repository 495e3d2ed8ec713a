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


def test_length_grouped_order_is_a_permutation_of_similar_length_batches_in_random_order():
    lengths = torch.tensor([5, 30, 5, 12, 30, 12, 5, 30, 12, 20, 20, 20] * 10)
    order = training.length_grouped_order(lengths, 10, torch.Generator().manual_seed(0))
    assert sorted(order.tolist()) == list(range(len(lengths)))
    batches = [lengths[b] for b in order.split(10)]
    assert all(b.max() == b.min() for b in batches)  # 30 of each length: every batch of 10 holds one length
    assert [int(b[0]) for b in batches] != sorted(int(b[0]) for b in batches)  # not short-to-long
    again = training.length_grouped_order(lengths, 10, torch.Generator().manual_seed(0))
    other = training.length_grouped_order(lengths, 10, torch.Generator().manual_seed(1))
    assert torch.equal(order, again) and not torch.equal(order, other)


def test_length_grouped_batches_draw_a_new_order_each_epoch_the_same_on_every_process():
    lengths = [3, 9, 4, 8, 5, 7, 6, 6] * 8
    a, b = training.LengthGroupedBatches(lengths, 4, seed=2), training.LengthGroupedBatches(lengths, 4, seed=2)
    first, second = list(a), list(a)  # no set_epoch: each pass is another epoch
    assert len(a) == len(lengths) and sorted(first) == list(range(len(lengths))) and first != second
    b.set_epoch(1)
    assert list(b) == second  # a process told the epoch deals out the same batches
    assert list(training.LengthGroupedBatches(lengths, 4, seed=3)) != first


def test_grouped_trainer_cuts_padding_in_training_and_keeps_evaluation_sequential(tiny, tmp_path):
    import trl
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    path, tok = tiny
    rows = [{"prompt": [{"role": "user", "content": "q " * n}], "completion": [{"role": "assistant", "content": "a"}]}
            for n in [1, 9, 2, 17, 3, 25, 4, 33] * 8]
    args = trl.SFTConfig(per_device_train_batch_size=8, per_device_eval_batch_size=8, max_steps=1,
                         **training.trainer_args(tmp_path, torch.device("cpu"), bf16=False, seed=0))
    model = AutoModelForCausalLM.from_pretrained(path)

    def real_share(cls):
        t = cls(model=model, args=args, processing_class=tok, train_dataset=Dataset.from_list(rows),
                eval_dataset=Dataset.from_list(rows[:16]))
        masks = [b["attention_mask"] for b in t.get_train_dataloader()]
        evals = [b["input_ids"].shape[1] for b in t.get_eval_dataloader()]
        return sum(int(m.sum()) for m in masks) / sum(m.numel() for m in masks), evals

    plain, plain_eval = real_share(trl.SFTTrainer)
    grouped, grouped_eval = real_share(training.grouped_by_length(trl.SFTTrainer))
    assert plain < 0.75 and grouped == 1.0  # 8 rows of each length: every grouped batch is one length
    assert grouped_eval == plain_eval  # the validation batches are the same, so is the validation loss
