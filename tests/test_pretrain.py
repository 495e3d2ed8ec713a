import contextlib
import json
import math
import random
from pathlib import Path

import pytest
import torch

from labkit import pretrain, textdata
from labkit.config import ConfigError
from labkit.models import build_model
from labkit.runs import Run, read_jsonl
from labkit.tokenizer import train_tokenizer
from labkit.world import World, corpus

SAMPLES = Path(__file__).resolve().parent.parent / "data" / "samples"


def test_smoke_causal_learns_and_writes_stage(smoke_run):
    stage = smoke_run / "01_pretrain"
    ev = json.loads((stage / "eval.json").read_text())
    assert math.isfinite(ev["pretrain/val_loss"])
    rows = read_jsonl(stage / "metrics.jsonl")
    losses = [r["pretrain/loss"] for r in rows]
    assert losses[-1] < losses[0]  # it trained
    for p in ("model/config.json", "model/model.safetensors", "tokenizer/tokenizer.json", "ckpt/state.pt"):
        assert (stage / p).exists(), p
    assert Run.at(smoke_run).is_complete("pretrain")
    parts = ev["timings"]  # where the time went: each part timed once, together no more than the whole stage
    assert {"corpus", "tokenizer", "train", "evaluate", "checkpoint", "samples", "save"} <= set(parts)
    assert min(parts.values()) >= 0 and sum(parts.values()) <= ev["pretrain/seconds"]


@pytest.mark.parametrize("objective", ["masked", "span"])
def test_other_objectives_train(tmp_path, objective):
    res = pretrain.run(pretrain.config("smoke", objective=objective, max_steps=12), run="r", runs_dir=str(tmp_path),
                       progress_bar=False)
    rows = read_jsonl(tmp_path / "r/01_pretrain/metrics.jsonl")
    assert math.isfinite(res["pretrain/val_loss"]) and rows[-1]["pretrain/loss"] < rows[0]["pretrain/loss"]
    from transformers import AutoConfig
    cfg = AutoConfig.from_pretrained(tmp_path / "r/01_pretrain/model")
    assert cfg.model_type == {"masked": "bert", "span": "t5"}[objective]


def test_masking_follows_bert_recipe():
    tok = train_tokenizer(corpus(World(0), 200), "bpe", 400)
    x = torch.randint(40, len(tok), (64, 128))
    inp, labels = pretrain.mask_tokens(x, tok, 0.15, torch.Generator().manual_seed(0))
    picked = labels != -100
    assert 0.12 < picked.float().mean() < 0.18
    assert torch.equal(labels[picked], x[picked])  # labels are the original tokens
    frac_mask = (inp[picked] == tok.mask_token_id).float().mean()
    assert 0.75 < frac_mask < 0.85
    assert torch.equal(inp[~picked], x[~picked])  # untouched elsewhere


def test_span_corruption_reconstructs_the_text():
    seq = list(range(100, 160))
    sentinels = list(range(10, 26))
    inp, tgt = pretrain.corrupt_spans(seq, sentinels, 0.15, 3.0, random.Random(0))
    # Fill each sentinel in the input with its span from the target: the original comes back.
    spans, cur = {}, None
    for t in tgt:
        if t in sentinels:
            cur = t
            spans[cur] = []
        else:
            spans[cur].append(t)
    rebuilt = [x for t in inp for x in (spans[t] if t in sentinels else [t])]
    assert rebuilt == seq
    assert 5 <= sum(len(v) for v in spans.values()) <= 15


def test_unigram_baseline_matches_hand_computation():
    train = torch.tensor([0, 0, 1])
    val = torch.tensor([0, 1])
    # add-one: p0 = 3/5, p1 = 2/5, vocab 2
    expected = math.exp(-(math.log(3 / 5) + math.log(2 / 5)) / 2)
    assert pretrain.unigram_ppl(train, val, 2) == pytest.approx(expected)


def test_resume_continues_from_checkpoint(tmp_path):
    cfg = pretrain.config("smoke", max_steps=10, checkpoint_interval=5)
    pretrain.run(cfg, run="r", runs_dir=str(tmp_path), progress_bar=False)
    res = pretrain.run(pretrain.config("smoke", max_steps=16, checkpoint_interval=5), run="r",
                       runs_dir=str(tmp_path), progress_bar=False)
    assert res["resumed_from"] == 10 and res["pretrain/steps"] == 16
    steps = [r["step"] for r in read_jsonl(tmp_path / "r/01_pretrain/metrics.jsonl")]
    assert steps == sorted(set(steps)) and steps[-1] == 16


def test_interrupted_run_keeps_previous_model_and_resumes(tmp_path, monkeypatch):
    pretrain.run(pretrain.config("smoke", max_steps=6), run="r", runs_dir=str(tmp_path), progress_bar=False)
    model_file = tmp_path / "r/01_pretrain/model/model.safetensors"
    before = model_file.read_bytes()
    calls = {"n": 0}
    real = pretrain.train_step

    def crash_at_9(*a, **k):
        calls["n"] += 1
        if calls["n"] == 9:
            raise KeyboardInterrupt
        return real(*a, **k)
    monkeypatch.setattr(pretrain, "train_step", crash_at_9)
    with pytest.raises(KeyboardInterrupt):
        pretrain.run(pretrain.config("smoke", max_steps=20, checkpoint_interval=4), run="r", runs_dir=str(tmp_path),
                     progress_bar=False)
    assert model_file.read_bytes() == before  # the interrupted stage did not touch the finished model
    monkeypatch.setattr(pretrain, "train_step", real)
    res = pretrain.run(pretrain.config("smoke", max_steps=20, checkpoint_interval=4), run="r",
                       runs_dir=str(tmp_path), progress_bar=False)
    assert res["resumed_from"] == 12  # the 6-step run left a checkpoint at 6; the crashed one saved 8 and 12


def _write(path, data):
    path.write_bytes(data) if isinstance(data, bytes) else path.write_text(data)
    return path


@pytest.mark.parametrize("make,match", [
    (lambda p: p / "missing.txt", "not found|does not exist|no such"),
    (lambda p: _write(p / "empty.txt", ""), "empty"),
    (lambda p: _write(p / "bin.txt", b"\x00\x01\x02abc" * 50), "binary|NUL"),
    (lambda p: _write(p / "latin.txt", "caf\xe9 ".encode("latin-1") * 50), "UTF-8"),
    (lambda p: "someone/no-such-dataset-xyz", "could not reach"),
])
def test_bad_data_is_one_clear_line_and_writes_nothing(tmp_path, make, match):
    from labkit.data import DataError
    src = make(tmp_path)
    with pytest.raises(DataError, match=match) as e:
        pretrain.run(pretrain.config("smoke", data=str(src)), run="bad", runs_dir=str(tmp_path / "runs"),
                     progress_bar=False)
    assert "\n" not in str(e.value)
    assert not (tmp_path / "runs" / "bad").exists()


def test_block_size_beyond_positions_and_tiny_vocab(tmp_path, smoke_run):
    with pytest.raises(ConfigError, match="beyond the model's"):
        pretrain.run(pretrain.config("smoke", init_from=str(smoke_run / "01_pretrain/model"), block_size=256),
                     run="r", runs_dir=str(tmp_path), progress_bar=False)
    from labkit.tokenizer import TokenizerError
    with pytest.raises(TokenizerError, match="too small"):
        pretrain.run(pretrain.config("smoke", vocab_size=20), run="r2", runs_dir=str(tmp_path), progress_bar=False)


def test_fused_adamw_trains_the_losses_of_the_reference_loop():
    """make_optimizer's fused AdamW (on a CPU too) is a faster kernel for the same update: 20 steps of the
    smoke model give the losses of torch's plain for-loop AdamW with the same groups, to float rounding."""
    cfg = pretrain.config("smoke")
    tok = train_tokenizer(corpus(World(0), 200, seed=1), cfg.tokenizer, cfg.vocab_size)
    stream = textdata.encode(tok, corpus(World(0), 200, seed=1))
    losses = []
    for fused in (True, False):
        torch.manual_seed(0)
        model = build_model(cfg.objective, tok, cfg.n_layer, cfg.n_head, cfg.n_embd, cfg.block_size)
        opt = pretrain.make_optimizer(model, cfg, torch.device("cpu"))
        assert opt.defaults["fused"]
        if not fused:  # the same parameter groups and settings, torch's reference implementation
            groups = [{"params": g["params"], "weight_decay": g["weight_decay"]} for g in opt.param_groups]
            opt = torch.optim.AdamW(groups, lr=cfg.learning_rate, betas=opt.defaults["betas"], foreach=False)
        gen = torch.Generator().manual_seed(0)
        losses.append([float(pretrain.train_step(model, opt, [pretrain.get_batch(stream, cfg, tok, gen)], cfg,
                                                 contextlib.nullcontext())) for _ in range(20)])
    assert losses[0][-1] < losses[0][0] - 0.5  # it trained
    assert losses[0] == pytest.approx(losses[1], rel=1e-4)


def test_training_and_evaluation_build_no_kv_cache():
    """transformers fills a KV cache on every forward by default (config.use_cache), copying each layer's keys
    and values; train_step and evaluate turn it off, and the loss is the same to the last bit."""
    cfg = pretrain.config("smoke", eval_batches=2)
    docs = corpus(World(0), 100, seed=1)
    tok = train_tokenizer(docs, cfg.tokenizer, cfg.vocab_size)
    stream = textdata.encode(tok, docs)
    torch.manual_seed(0)
    model = build_model(cfg.objective, tok, cfg.n_layer, cfg.n_head, cfg.n_embd, cfg.block_size)
    assert model.config.use_cache
    outputs = []
    model.register_forward_hook(lambda module, args, out: outputs.append(out))
    batch = pretrain.get_batch(stream, cfg, tok, torch.Generator().manual_seed(0))
    with torch.no_grad():
        default = model(**batch)
    assert default.cache is not None  # what it would do
    opt = torch.optim.SGD(model.parameters(), lr=0.0)  # lr 0: the weights stay as they are
    loss = pretrain.train_step(model, opt, [batch], cfg, contextlib.nullcontext())
    pretrain.evaluate(model, stream, cfg, tok, torch.device("cpu"), contextlib.nullcontext())
    assert len(outputs) == 1 + 1 + 2 and all(o.get("cache") is None for o in outputs[1:])
    assert float(loss) == float(default.loss)


def test_ffn_mult_sets_the_mlp_width():
    """ffn_mult=8/3 gives SwiGLU's three matrices the weights of GPT-2's two at 4x (the matched shape)."""
    cfg = pretrain.config("cpu", ffn_mult=8 / 3)
    tok = train_tokenizer(corpus(World(0), 100, seed=1), "bpe", 300)
    mlp = pretrain.model_shape(cfg, tok).model.layers[0].mlp
    assert mlp.gate_proj.out_features == 512
    assert sum(p.numel() for p in mlp.parameters()) == 2 * cfg.n_embd * 4 * cfg.n_embd
    assert pretrain.model_shape(pretrain.config("cpu"), tok).config.intermediate_size == 4 * 192  # the default


def test_lr_schedule_warms_up_and_decays():
    cfg = pretrain.config("smoke", max_steps=100, warmup_steps=10, learning_rate=1.0, min_lr_ratio=0.1)
    assert pretrain.lr_at(0, cfg) == pytest.approx(0.1)
    assert pretrain.lr_at(9, cfg) == pytest.approx(1.0)
    assert pretrain.lr_at(100, cfg) == pytest.approx(0.1)
    assert pretrain.lr_at(55, cfg) == pytest.approx(0.55)


def test_gpu_memory_budget_applies_the_plan_notebook_01_shows():
    from labkit import planner
    smoke = pretrain.config("smoke", batch_size=64)
    train_docs, _ = pretrain.load_corpus(smoke)
    tok = train_tokenizer(train_docs, smoke.tokenizer, smoke.vocab_size)
    built = build_model(smoke.objective, tok, smoke.n_layer, smoke.n_head, smoke.n_embd, smoke.block_size)  # run()'s
    # a budget between the estimates for micro-batches of 64 and 16 (fp32, as on this CPU): the plan must split
    totals = [sum(planner.estimate(built, "pretrain", micro_batch_size=m, seq_len=smoke.block_size, use_lora=False,
                                   gradient_checkpointing=False, bf16=False).values()) for m in (64, 16)]
    asked = pretrain.config("smoke", batch_size=64, gpu_memory_gb=sum(totals) / 2 / planner.GIB)
    shown = pretrain.plan_for(asked, pretrain.model_shape(asked, tok), asked.gpu_memory_gb)  # notebook 01's call
    applied, plan = pretrain.fit_budget(asked, built, torch.device("cpu"))  # what run() trains with
    assert plan == shown and applied == shown.apply(asked)
    assert applied.batch_size * applied.grad_accum_steps == 64 and applied.grad_accum_steps > 1
    # data parallel: planned per process, the same call either way
    assert pretrain.fit_budget(asked, built, torch.device("cpu"), world_size=2)[1] == pretrain.plan_for(
        asked, pretrain.model_shape(asked, tok), world_size=2)
    assert pretrain.plan_for(smoke, pretrain.model_shape(smoke, tok), 24).gpu_memory_gb == 24
    assert pretrain.fit_budget(smoke, built, torch.device("cpu")) == (smoke, None)  # no budget: the config as it is
    with pytest.raises(ConfigError, match="pretraining does not fit in gpu_memory_gb=0.001"):
        pretrain.fit_budget(pretrain.config("smoke", gpu_memory_gb=0.001), built, torch.device("cpu"))
