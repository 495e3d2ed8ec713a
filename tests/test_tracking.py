"""report_to: training curves in TensorBoard, opt-in, one setting for every stage that trains (labkit.tracking).

The lab's own loops (pretraining, PPO) must log exactly the keys of their metrics.jsonl at the same steps;
the TRL stages log through transformers' TensorBoardCallback into the stage's tb/ folder."""
import shutil

import pytest

from labkit import compare, ppo, pretrain, reward, sft, tracking
from labkit.config import ConfigError, field_names
from labkit.runs import Run, read_jsonl

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

TRAINING_STAGES = (pretrain, sft, reward, ppo, compare)


def scalars(log_dir) -> dict[str, list[tuple[int, float]]]:
    """{tag: [(step, value), ...]} of every event file in ``log_dir``."""
    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return {t: [(e.step, e.value) for e in acc.Scalars(t)] for t in acc.Tags()["scalars"]}


def numeric_keys(rows) -> set[str]:
    return {k for m in rows for k, v in m.items()
            if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)}


def assert_mirrors_metrics(stage_dir):
    rows = read_jsonl(stage_dir / "metrics.jsonl")
    got = scalars(stage_dir / "tb")
    assert set(got) == numeric_keys(rows)
    for k, points in got.items():
        want = [(m["step"], m[k]) for m in rows if isinstance(m.get(k), (int, float))]
        assert [s for s, _ in points] == [s for s, _ in want], k
        assert [v for _, v in points] == pytest.approx([v for _, v in want], rel=1e-6), k


@pytest.mark.parametrize("module", TRAINING_STAGES, ids=lambda m: m.__name__.split(".")[-1])
def test_every_training_stage_has_report_to_off_by_default(module):
    assert "report_to" in field_names(type(module.config("smoke")))
    assert module.config("smoke").report_to == module.config("cpu").report_to == "none"


@pytest.mark.parametrize("module", TRAINING_STAGES, ids=lambda m: m.__name__.split(".")[-1])
def test_unknown_tracker_is_a_one_line_error_naming_the_allowed_ones(module):
    with pytest.raises(ConfigError) as e:
        module.config("smoke", report_to="wandb")
    msg = str(e.value)
    assert "\n" not in msg and "'wandb'" in msg and "none" in msg and "tensorboard" in msg


def test_missing_tensorboard_says_how_to_install_it(monkeypatch):
    monkeypatch.setattr(tracking, "_installed", lambda module: False)
    with pytest.raises(ConfigError, match=r"pip install -e \.\[tracking\]") as e:
        pretrain.config("smoke", report_to="tensorboard")
    assert "\n" not in str(e.value)
    pretrain.config("smoke")  # the default needs nothing


def test_report_to_never_makes_the_runner_refuse_a_completed_stage():
    from labkit.runner import config_changes
    assert config_changes({"max_steps": 30}, {"max_steps": 30, "report_to": "tensorboard"}) == []
    assert config_changes({"max_steps": 30, "report_to": "none"}, {"max_steps": 40, "report_to": "tensorboard"}) \
        == ["max_steps 30 -> 40"]


def test_tracker_closes_on_an_exception_and_a_resume_hides_the_interrupted_tail(tmp_path):
    log_dir = tmp_path / "tb"
    opened = []

    @tracking.closes_trackers
    def interrupted():
        t = tracking.Tracker("tensorboard", log_dir)
        opened.append(t)
        for step in (1, 2, 3, 4):
            t.log({"step": step, "x/loss": float(step), "x/none": None, "x/flag": True, "note": "text"})
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        interrupted()
    assert opened[0].writer is None  # closed
    assert scalars(log_dir) == {"x/loss": [(1, 1.0), (2, 2.0), (3, 3.0), (4, 4.0)]}

    t = tracking.Tracker("tensorboard", log_dir, resume_step=2)  # checkpoint at step 2: steps 3, 4 again
    t.log({"step": 3, "x/loss": 30.0})
    t.close()
    assert scalars(log_dir) == {"x/loss": [(1, 1.0), (2, 2.0), (3, 30.0)]}

    t = tracking.Tracker("tensorboard", log_dir)  # a fresh run starts an empty folder
    t.log({"step": 1, "x/loss": 5.0})
    t.close()
    assert scalars(log_dir) == {"x/loss": [(1, 5.0)]}


def test_pretraining_logs_its_metrics_keys(tmp_path, smoke_run):
    cfg = pretrain.config("smoke", max_steps=10, log_interval=2, eval_interval=4, threads=1,
                          report_to="tensorboard")
    pretrain.run(cfg, run="tb", runs_dir=str(tmp_path), progress_bar=False, live=False)
    stage = tmp_path / "tb" / "01_pretrain"
    assert_mirrors_metrics(stage)
    assert {"pretrain/loss", "pretrain/val_loss"} <= set(scalars(stage / "tb"))
    assert not (smoke_run / "01_pretrain" / "tb").exists()  # the default (conftest's run) writes none


def test_ppo_logs_its_metrics_keys(ppo_standins, tmp_path):
    shutil.copytree(ppo_standins.path, tmp_path / "a")
    cfg = ppo.config("smoke", threads=1, max_steps=2, report_to="tensorboard")
    ppo.run(cfg, run="a", runs_dir=str(tmp_path), progress_bar=False, live=False)
    stage = Run("a", tmp_path).path / "05_ppo"
    assert_mirrors_metrics(stage)
    assert {"ppo/kl", "ppo/rm_score", "ppo/pg_loss"} <= set(scalars(stage / "tb"))


def test_sft_writes_event_files_through_trl(smoke_run, tmp_path):
    shutil.copytree(smoke_run, tmp_path / "s")
    cfg = sft.config("smoke", max_steps=4, log_interval=2, eval_samples=0, n_eval=5,
                     report_to="tensorboard")
    sft.run(cfg, run="s", runs_dir=str(tmp_path), progress_bar=False, live=False)
    tags = scalars(tmp_path / "s" / "02_sft" / "tb")
    assert [s for s, _ in tags["train/loss"]] == [2, 4]
    assert not list((tmp_path / "s" / "02_sft").glob(".trainer/runs"))  # not under the trainer's output_dir


def test_dpo_writes_its_method_folder_training_and_held_out_evaluation(ppo_standins, tmp_path):
    import torch
    from transformers import AutoTokenizer
    sft_path = ppo_standins.require("sft", "model")
    tok = AutoTokenizer.from_pretrained(str(sft_path))
    pairs = [{"prompt": f"What is {i} plus {i}?", "chosen": str(2 * i), "rejected": "I do not know."} for i in range(6)]
    cfg = compare.config("smoke", max_steps=2, dpo_batch_size=2, report_to="tensorboard")
    compare.train_dpo(cfg, sft_path, tok, pairs[2:], pairs[:2], {"r": 2, "alpha": 4}, str(tmp_path / "out"),
                      torch.device("cpu"), False, tb=tmp_path / "tb" / "dpo")
    tags = scalars(tmp_path / "tb" / "dpo")
    assert [s for s, _ in tags["train/loss"]] == [1, 2] and "eval/loss" in tags  # the evaluation after training
    assert not (tmp_path / "out" / "runs").exists()
