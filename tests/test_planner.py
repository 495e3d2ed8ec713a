"""Tests for labkit.planner (memory estimates, plan choice) and configs/accelerate/*.yaml."""

import dataclasses
import glob
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import transformers as T

from labkit import planner

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]


def tiny_llama(**kw):
    # 2 layers, GQA (4 heads, 2 kv heads, head_dim 16), SwiGLU ffn 176, untied head
    return T.LlamaConfig(hidden_size=64, intermediate_size=176, num_attention_heads=4,
                         num_key_value_heads=2, num_hidden_layers=2, vocab_size=128,
                         max_position_embeddings=256, **kw)


def tiny_gpt2(**kw):
    return T.GPT2Config(n_embd=64, n_head=4, n_layer=2, vocab_size=128, n_positions=128,
                        bos_token_id=0, eos_token_id=0, **kw)


def tiny_bert():
    return T.BertConfig(hidden_size=64, num_attention_heads=4, num_hidden_layers=2,
                        intermediate_size=128, vocab_size=128, max_position_embeddings=128)


def tiny_t5():
    return T.T5Config(d_model=64, d_kv=16, d_ff=128, num_heads=4, num_layers=2,
                      num_decoder_layers=2, vocab_size=128, decoder_start_token_id=0)


def llama_1b():
    return T.LlamaConfig(hidden_size=2048, intermediate_size=5632, num_attention_heads=32,
                         num_key_value_heads=8, num_hidden_layers=16, vocab_size=32000)


# ---------------------------------------------------------------- parameter counts

# hand count for tiny_llama: embed 128*64; per layer q 64*64, k and v 64*32, o 64*64,
# gate/up/down 3*64*176, two RMSNorm weights 2*64; final norm 64; lm_head 128*64
LLAMA_LAYER = 4096 + 2048 + 2048 + 4096 + 3 * 11264 + 128
LLAMA_PARAMS = 8192 + 2 * LLAMA_LAYER + 64 + 8192
LLAMA_MATMUL = 2 * (LLAMA_LAYER - 128) + 8192


def test_count_params_by_hand_and_against_real_models():
    assert LLAMA_PARAMS == 108864
    assert planner.count_params(tiny_llama()) == LLAMA_PARAMS
    assert planner.inspect_model(tiny_llama()).n_matmul_params == LLAMA_MATMUL
    # well-known sizes, counted on the meta device without allocating
    assert planner.count_params(T.GPT2Config()) == 124_439_808
    assert planner.count_params(T.LlamaConfig()) == 6_738_415_616
    for cfg, auto in [(tiny_llama(), T.AutoModelForCausalLM), (tiny_gpt2(), T.AutoModelForCausalLM),
                      (tiny_bert(), T.AutoModelForMaskedLM), (tiny_t5(), T.AutoModelForSeq2SeqLM)]:
        real = auto.from_config(cfg)
        assert planner.count_params(cfg) == sum(p.numel() for p in real.parameters()), cfg.model_type
    cls = T.AutoModelForSequenceClassification.from_config(tiny_llama(num_labels=1))
    assert planner.count_params(tiny_llama(), head="cls") == sum(p.numel() for p in cls.parameters())


def test_default_lora_targets_by_model_type():
    assert planner.default_lora_targets(tiny_llama()) == [
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    assert planner.default_lora_targets(tiny_gpt2()) == ["c_attn", "c_proj", "c_fc"]
    assert planner.default_lora_targets(tiny_bert()) == ["query", "key", "value"]
    assert planner.default_lora_targets(tiny_t5()) == ["q", "k", "v", "o"]
    mistral = T.MistralConfig(hidden_size=64, intermediate_size=128, num_attention_heads=4,
                              num_key_value_heads=2, num_hidden_layers=1, vocab_size=128)
    assert planner.default_lora_targets(mistral) == planner.default_lora_targets(tiny_llama())


def test_lora_targets_is_every_linear_layer_of_the_blocks_unless_named():
    # The rule sft, reward, ppo and compare share: for the lab's Llama and for GPT-2 the default is every
    # linear (or Conv1D) layer inside the transformer blocks, never the output head.
    from transformers.pytorch_utils import Conv1D
    for cfg, cls in ((tiny_llama(), T.LlamaForCausalLM), (tiny_gpt2(), T.GPT2LMHeadModel)):
        model = cls(cfg)
        backbone = getattr(model, model.base_model_prefix)
        linear = {n.rsplit(".", 1)[-1] for n, m in backbone.named_modules() if isinstance(m, (torch.nn.Linear, Conv1D))}
        assert set(planner.lora_targets(model)) == linear
        assert planner.lora_targets(model, None) == planner.lora_targets(model, "") == planner.default_lora_targets(cfg)
    assert planner.lora_targets(tiny_llama(), "q_proj, v_proj,") == ["q_proj", "v_proj"]
    assert planner.lora_targets(tiny_llama(), ["o_proj"]) == ["o_proj"]


def test_lora_count_by_hand():
    # r*(in+out) per layer: q 8*128, k 8*96, v 8*96, o 8*128, gate/up/down 3*8*240
    per_layer = 1024 + 768 + 768 + 1024 + 3 * 1920
    assert planner.count_lora_params(tiny_llama(), r=8) == 2 * per_layer


@pytest.mark.parametrize("make, auto, task", [
    (tiny_llama, T.AutoModelForCausalLM, None),
    (tiny_gpt2, T.AutoModelForCausalLM, None),  # Conv1D; c_proj sits in attention and MLP
    (tiny_bert, T.AutoModelForMaskedLM, None),
    (tiny_t5, T.AutoModelForSeq2SeqLM, None),
    (tiny_llama, T.AutoModelForSequenceClassification, "SEQ_CLS"),  # + the score head
])
def test_lora_count_equals_peft(make, auto, task):
    import peft

    cfg = make()
    head = "lm"
    if task == "SEQ_CLS":
        cfg.num_labels, head = 1, "cls"
    targets = planner.default_lora_targets(cfg)
    model = auto.from_config(cfg)
    lora = peft.LoraConfig(r=4, lora_alpha=8, target_modules=targets, task_type=task)
    trainable, _ = peft.get_peft_model(model, lora).get_nb_trainable_parameters()
    assert planner.count_lora_params(cfg, r=4, target_modules=targets, head=head) == trainable


# ---------------------------------------------------------------- memory by part

def test_weights_grads_adam_bytes_exact():
    full32 = planner.estimate(tiny_llama(), "sft", micro_batch_size=1, seq_len=8, use_lora=False,
                              gradient_checkpointing=False, bf16=False)
    assert full32["weights"] == 4 * LLAMA_PARAMS
    assert full32["gradients (fp32)"] == 4 * LLAMA_PARAMS
    assert full32["AdamW state (2 x fp32)"] == 8 * LLAMA_PARAMS
    assert "bf16 weight copies (autocast)" not in full32
    full16 = planner.estimate(tiny_llama(), "sft", micro_batch_size=1, seq_len=8, use_lora=False,
                              gradient_checkpointing=False, bf16=True)
    assert full16["weights"] == 4 * LLAMA_PARAMS  # fp32 master weights under autocast
    assert full16["bf16 weight copies (autocast)"] == 2 * LLAMA_MATMUL
    lora = planner.estimate(tiny_llama(), "sft", micro_batch_size=1, seq_len=8, use_lora=True,
                            lora_r=8, gradient_checkpointing=False, bf16=True)
    n_lora = planner.count_lora_params(tiny_llama(), r=8)
    assert lora["weights"] == 2 * LLAMA_PARAMS + 4 * n_lora  # bf16 frozen base, fp32 adapters
    assert lora["gradients (fp32)"] == 4 * n_lora
    assert lora["AdamW state (2 x fp32)"] == 8 * n_lora
    overhead = full32[f"allocator fragmentation ({planner.FRAGMENTATION:.0%})"]
    assert overhead == int(sum(list(full32.values())[:-2]) * planner.FRAGMENTATION)
    assert full32["CUDA context + workspaces"] == int(planner.CUDA_CONTEXT_GB * planner.GIB)


def test_kv_cache_exact():
    # 2 (k, v) * 2 layers * 2 kv heads * 16 head_dim * 2 bytes * B=3 * T=10
    assert planner.kv_cache_bytes(tiny_llama(), 3, 10) == 2 * 2 * 2 * 16 * 2 * 3 * 10 == 7680
    assert planner.kv_cache_bytes(tiny_llama(), 3, 10, bytes_per_value=4) == 2 * 7680
    # Llama-2-7B: 0.5 MiB per token in bf16 (32 layers * 32 heads * 128 * 2 * 2 bytes)
    assert planner.kv_cache_bytes(T.LlamaConfig(), 1, 1) == 2**19


def test_logits_bytes_exact():
    b, t, v = 3, 10, 128
    assert planner.logits_bytes(tiny_llama(), b, t, bf16=True) == b * t * v * (2 + 4 + 4)
    assert planner.logits_bytes(tiny_llama(), b, t, bf16=False) == b * t * v * 12
    assert planner.logits_bytes(tiny_llama(), b, t, bf16=True, stage="reward") == 0


@pytest.mark.parametrize("bf16", [False, True])
@pytest.mark.parametrize("ckpt", [False, True])
def test_activations_monotone_and_smaller_with_checkpointing(bf16, ckpt):
    cfg = llama_1b()
    act = lambda b, s, c=ckpt: planner.activation_bytes(cfg, b, s, checkpointing=c, bf16=bf16)
    assert act(1, 512) < act(2, 512) < act(4, 512)
    assert act(2, 256) < act(2, 512) < act(2, 1024)
    assert act(2, 1024, True) < act(2, 1024, False) / 4
    if not bf16:  # (with bf16 the LoRA base is bf16, so its residual stream is half the size)
        lora = planner.activation_bytes(cfg, 2, 512, checkpointing=ckpt, bf16=bf16, use_lora=True)
        assert lora > act(2, 512)  # LoRA adds dropout masks and rank-r inputs


def test_activation_formula_matches_korthikanti_for_gpt():
    # Korthikanti et al. 2022 sec. 4.1, 16-bit, ffn = 4h, eager attention with dropout:
    # s*b*h*(34 + 5*a*s/h) per layer. Our terms differ by design only in the LayerNorms
    # (fp32 inputs under autocast: 2 * 4 bytes instead of 2 * 2) -> +4h per token.
    cfg = T.GPT2Config(n_embd=1024, n_head=16, n_layer=1, activation_function="gelu")
    cfg._attn_implementation = "eager"
    spec = planner.inspect_model(cfg)
    s, h, a = 512, 1024, 16
    ours = planner._layer_bytes(spec, s, e_mm=2, e_res=2, decoder=False)
    assert ours == pytest.approx(h * (34 + 5 * a * s / h) + 4 * h)


def _saved_tensor_bytes(model, ids, bf16):
    """Bytes of distinct storages saved for backward in one forward (+ loss), weights excluded."""
    store = {}

    def pack(t):
        store[t.untyped_storage().data_ptr()] = (t.untyped_storage().nbytes(), tuple(t.shape), t.dtype)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            model(input_ids=ids, labels=ids)
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
    shapes = {tuple(p.shape) for p in model.parameters()}
    # autocast's bf16 weight copies are counted as weights by the planner, not activations
    return sum(n for ptr, (n, shape, dtype) in store.items()
               if ptr not in weights and not (bf16 and dtype == torch.bfloat16 and shape in shapes))


@pytest.mark.parametrize("make", [tiny_llama, lambda: tiny_gpt2(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)])
@pytest.mark.parametrize("bf16", [False, True])
def test_activation_estimate_matches_saved_tensors(make, bf16):
    # Deterministic stand-in for "measure peak memory": the tensors autograd keeps for
    # backward. No dropout: on CPU, SDPA with dropout falls back to the math kernel that
    # stores the attention matrix, which fused GPU kernels (the planner's target) do not.
    cfg = make()
    torch.manual_seed(0)
    model = T.AutoModelForCausalLM.from_config(cfg).train()
    b, s = 4, 64
    measured = _saved_tensor_bytes(model, torch.randint(0, 128, (b, s)), bf16)
    est = planner.activation_bytes(cfg, b, s, checkpointing=False, bf16=bf16)
    est -= b * s * s  # no padding here, so no 4D attention mask
    est += b * s * cfg.vocab_size * 4  # fp32 log-softmax output saved by cross entropy
    assert 0.85 < est / measured < 1.15, (est, measured)


# ---------------------------------------------------------------- plans

def _rank(p, effective):
    """Position of a plan in the planner's fastest-first search order."""
    micro = [d for d in range(effective, 0, -1) if effective % d == 0]
    return (p.use_lora, not p.bf16, p.gradient_checkpointing, micro.index(p.micro_batch_size))


def test_plan_degrades_gracefully_as_budget_shrinks():
    cfg, eff = llama_1b(), 16
    budgets = [400 * 0.92**k for k in range(90)]  # 400 GiB down to 0.2 GiB
    plans = [planner.plan(cfg, "sft", gb, effective_batch_size=eff, seq_len=2048, bf16=True) for gb in budgets]
    ranks = [_rank(p, eff) for p in plans]
    assert ranks == sorted(ranks)  # never a faster plan on a smaller GPU
    for gb, p in zip(budgets, plans):
        assert p.micro_batch_size * p.grad_accum_steps == eff == p.effective_batch_size
        assert p.fits == (p.total_gb <= gb)
    kinds = [(p.fits, p.use_lora, p.gradient_checkpointing) for p in plans]
    # full -> full + checkpointing -> LoRA -> LoRA + checkpointing -> nothing fits
    assert list(dict.fromkeys(kinds)) == [(True, False, False), (True, False, True),
                                          (True, True, False), (True, True, True), (False, True, True)]
    assert plans[0].micro_batch_size == eff and plans[0].grad_accum_steps == 1
    full_micro = [p.micro_batch_size for p in plans if p.fits and not p.use_lora and not p.gradient_checkpointing]
    assert full_micro == sorted(full_micro, reverse=True) and len(set(full_micro)) == 5  # 16, 8, 4, 2, 1


def test_pinned_choices_are_respected():
    cfg = llama_1b()
    p = planner.plan(cfg, "sft", 80, effective_batch_size=8, seq_len=512, use_lora=True,
                     gradient_checkpointing=True, bf16=False, micro_batch_size=2, lora_r=4)
    assert (p.use_lora, p.gradient_checkpointing, p.bf16, p.micro_batch_size, p.grad_accum_steps, p.lora_r) == \
        (True, True, False, 2, 4, 4)
    with pytest.raises(ValueError):
        planner.plan(cfg, "sft", 80, effective_batch_size=8, seq_len=512, micro_batch_size=3)
    with pytest.raises(ValueError):
        planner.plan(cfg, "dpo", 80, effective_batch_size=8, seq_len=512)


def test_7b_on_4gb_does_not_fit():
    p = planner.plan(T.LlamaConfig(), "sft", 4, effective_batch_size=8, seq_len=512)
    assert not p.fits
    assert "nothing fits in 4 GiB" in p.reason
    assert p.use_lora and p.gradient_checkpointing and p.micro_batch_size == 1  # the smallest tried
    assert p.total_gb > 4
    with pytest.raises(planner.PlanDoesNotFit):
        p.apply({"micro_batch_size": 8})
    assert "Does not fit" in p.to_markdown() and "Does not fit" in p._repr_html_()


def test_no_budget_returns_fastest_plan():
    p = planner.plan(tiny_llama(), "pretrain", None, effective_batch_size=6, seq_len=32)
    assert p.fits and not p.use_lora and p.bf16 and not p.gradient_checkpointing
    assert (p.micro_batch_size, p.grad_accum_steps) == (6, 1)


@dataclasses.dataclass
class FakeStageConfig:
    micro_batch_size: int = 32
    grad_accum_steps: int = 1
    use_lora: bool = False
    lora_r: int = 8
    lora_target_modules: list | None = None
    gradient_checkpointing: bool = False
    bf16: bool = False
    gpu_memory_gb: float | None = None


def test_apply_and_overrides():
    p = planner.plan(llama_1b(), "sft", 16, effective_batch_size=32, seq_len=1024)
    assert p.fits and set(p.overrides()) == set(planner.OVERRIDE_KEYS)
    cfg = p.apply(FakeStageConfig(gpu_memory_gb=16))
    assert isinstance(cfg, FakeStageConfig) and cfg.gpu_memory_gb == 16
    assert {k: getattr(cfg, k) for k in planner.OVERRIDE_KEYS} == p.overrides()
    assert p.apply({"micro_batch_size": 1, "grad_accum_steps": 1, "use_lora": False, "lora_r": 1,
                    "lora_target_modules": None, "gradient_checkpointing": False, "bf16": False,
                    "other": 3})["other"] == 3

    @dataclasses.dataclass
    class NoLora:
        micro_batch_size: int = 1
        grad_accum_steps: int = 1
        gradient_checkpointing: bool = False
        bf16: bool = True

    if p.use_lora:
        with pytest.raises(ValueError, match="use_lora"):
            p.apply(NoLora())


def test_table_markdown_html():
    p = planner.plan(tiny_llama(), "sft", 8, effective_batch_size=4, seq_len=64)
    rows = p.table()
    assert rows[-2][0] == "total (peak)" and rows[-1] == ("budget", 8.0)
    assert sum(gb for _, gb in rows[:-2]) == pytest.approx(rows[-2][1], abs=1e-2)
    md = p.to_markdown()
    assert "| part | GiB |" in md and "| total (peak) |" in md and "Fits" in md
    assert "<table>" in p._repr_html_()


def test_ppo_parts():
    cfg = llama_1b()
    kw = dict(micro_batch_size=2, seq_len=512, gradient_checkpointing=True, bf16=True)
    lora = planner.estimate(cfg, "ppo", use_lora=True, **kw)
    full = planner.estimate(cfg, "ppo", use_lora=False, **kw)
    n = planner.count_params(cfg)
    assert lora["reference model"] == 0  # the base with adapters disabled
    assert full["reference model"] == 2 * n  # a frozen bf16 copy
    assert lora["reward model (frozen)"] == full["reward model (frozen)"] == 2 * planner.count_params(cfg, head="cls")
    assert lora["KV cache (generation)"] == planner.kv_cache_bytes(cfg, 2, 512)
    assert "weights (critic)" in full and "activations (critic)" in full
    head = planner.estimate(cfg, "ppo", use_lora=True, critic="head", **kw)
    assert head["value head"] == (2048 + 1) * 16 and "weights (critic)" not in head
    assert sum(head.values()) < sum(lora.values())
    # a smaller reward model shrinks the reward-model part
    small = planner.estimate(cfg, "ppo", use_lora=True, reward_model=tiny_llama(), **kw)
    assert small["reward model (frozen)"] == 2 * planner.count_params(tiny_llama(), head="cls")


def test_reward_stage_counts_pairs():
    cfg = llama_1b()
    kw = dict(micro_batch_size=2, seq_len=256, checkpointing=False, bf16=True)
    pairs = planner.activation_bytes(cfg, stage="reward", **kw)
    seqs = planner.activation_bytes(cfg, stage="sft", **kw)
    assert pairs > 1.8 * seqs  # chosen + rejected in one forward


def test_other_architectures_plan():
    for cfg in (tiny_gpt2(), tiny_bert(), tiny_t5()):
        for stage in ("pretrain", "reward"):
            p = planner.plan(cfg, stage, 2, effective_batch_size=4, seq_len=32)
            assert p.fits, (cfg.model_type, stage, p.reason)


# ---------------------------------------------------------------- accelerate configs

CONFIGS = sorted(glob.glob(str(ROOT / "configs" / "accelerate" / "*.yaml")))


def test_accelerate_configs_exist():
    names = {Path(c).name for c in CONFIGS}
    assert {"ddp.yaml", "fsdp.yaml", "zero2.yaml", "zero3.yaml", "cpu_2proc.yaml"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: Path(p).name)
def test_accelerate_config_keys_are_known(path):
    import yaml
    from accelerate.commands.config.config_args import ClusterConfig, load_config_from_file
    from accelerate.commands.launch import launch_command_parser

    load_config_from_file(path)  # rejects unknown top-level keys
    # nested keys are copied onto the launch arguments by name and silently ignored when
    # unknown, so check them against the launcher's own argument names
    known = vars(launch_command_parser().parse_args(["script.py"]))
    raw = yaml.safe_load(Path(path).read_text())
    for key, value in raw.items():
        assert key in ClusterConfig.__dataclass_fields__, key
        for sub in (value if isinstance(value, dict) else {}):
            assert sub in known, f"{Path(path).name}: {key}.{sub} is not an accelerate launch option"


def test_cpu_2proc_really_starts_two_processes(tmp_path):
    # `accelerate launch --cpu --num_processes 2` silently starts ONE process without MPI
    # (docs/architecture.md, "Memory planner and scaling").
    # The documented command in cpu_2proc.yaml must give world size 2 and a working all-reduce.
    script = tmp_path / "world.py"
    script.write_text(textwrap.dedent("""
        import torch
        torch.set_num_threads(1)
        from accelerate import Accelerator
        acc = Accelerator()
        total = acc.reduce(torch.ones(1) * (acc.process_index + 1), reduction="sum")
        print(f"rank={acc.process_index} world={acc.num_processes} sum={total.item():g}", flush=True)
        acc.end_training()  # destroys the gloo group; without it exits sometimes SIGABRT
    """))
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "accelerate.commands.launch",
           "--config_file", str(ROOT / "configs" / "accelerate" / "cpu_2proc.yaml"), str(script)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    # both ranks write to one pipe, so their lines may run together
    ranks = sorted(re.findall(r"rank=(\d+) world=(\d+) sum=(\d+)", out.stdout))
    assert ranks == [("0", "2", "3"), ("1", "2", "3")], out.stdout


def test_apply_to_configs_that_say_batch_size_and_comma_lists():
    # labkit's stage configs call the micro-batch `batch_size` and take LoRA targets as "a,b,c"
    @dataclasses.dataclass
    class StageConfig:
        batch_size: int = 32
        grad_accum_steps: int = 1
        use_lora: bool = False
        lora_r: int = 8
        lora_target_modules: str | None = None
        gradient_checkpointing: bool = False
        bf16: bool | None = None

    p = planner.plan(llama_1b(), "sft", 8, effective_batch_size=16, seq_len=1024, use_lora=True)
    cfg = p.apply(StageConfig())
    assert (cfg.batch_size, cfg.grad_accum_steps) == (p.micro_batch_size, p.grad_accum_steps)
    assert cfg.lora_target_modules == ",".join(p.lora_target_modules)
    assert cfg.use_lora and cfg.lora_r == p.lora_r and cfg.bf16 == p.bf16


def test_ppo_generation_batch_sizes_the_kv_cache():
    kw = dict(micro_batch_size=2, seq_len=128, use_lora=True, gradient_checkpointing=False, bf16=True)
    small = planner.estimate(tiny_llama(), "ppo", **kw)
    big = planner.estimate(tiny_llama(), "ppo", generation_batch_size=64, **kw)
    assert big["KV cache (generation)"] == 32 * small["KV cache (generation)"]
