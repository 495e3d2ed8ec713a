"""GPU memory budget planner: will this stage fit on this GPU, and how should it run?

Estimates peak memory part by part (weights, gradients, AdamW state, activations with and without
checkpointing, logits, KV cache, PPO's extra models) for a model (a ``PretrainedConfig``, a path or
hub name, a loaded model) and picks the fastest plan that fits: full before LoRA, bf16 before fp32,
no checkpointing before checkpointing, larger micro-batches first, the effective batch kept.

    from labkit import planner
    plan = planner.plan(model_config, "sft", gpu_memory_gb=24, effective_batch_size=32, seq_len=1024)
    plan.fits, plan.reason, plan.table()   # a verdict, a sentence, [(part, GiB), ...]
    cfg = plan.apply(cfg)                  # the config with the plan's choices (PlanDoesNotFit if none)

The byte counts per parameter, the activation formulas (Korthikanti et al. 2022, generalised) and
every convention: docs/how-it-works.md, "The memory planner".
"""

from __future__ import annotations

import copy
import dataclasses
import html
from dataclasses import dataclass, field

import torch

STAGES = ("pretrain", "sft", "reward", "ppo")
GIB = 2**30
CUDA_CONTEXT_GB = 0.8  # CUDA context (~0.3-0.5 GiB with lazy loading) + cuBLAS/NCCL workspaces
FRAGMENTATION = 0.10  # caching-allocator slack, as a fraction of everything else
OVERRIDE_KEYS = ("micro_batch_size", "grad_accum_steps", "use_lora", "lora_r",
                 "lora_target_modules", "gradient_checkpointing", "bf16")

# LoRA targets by model type: all linear layers of Llama-like models (QLoRA, Dettmers et al.
# 2023, sec. 4: adapters on every linear layer are needed to match full fine-tuning).
LORA_TARGETS = {
    "llama": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "gpt2": ["c_attn", "c_proj", "c_fc"],
    "bert": ["query", "key", "value"],
    "roberta": ["query", "key", "value"],
    "t5": ["q", "k", "v", "o"],
    "mt5": ["q", "k", "v", "o"],
}
LLAMA_LIKE_NAMES = LORA_TARGETS["llama"]
ENCODER_ONLY = {"bert", "roberta", "xlm-roberta", "distilbert", "electra", "albert",
                "deberta", "deberta-v2", "modernbert"}
# ffn-wide tensors an activation function saves for backward: native kernels save their
# input; transformers' python tanh-GELU saves x, tanh(.), 0.5*x and 1 + tanh(.).
ACT_SAVES = {"gelu_new": 4, "gelu_fast": 4, "quick_gelu": 2}


class PlanDoesNotFit(RuntimeError):
    """Raised by ``Plan.apply`` when no plan fits the memory budget."""


@dataclass(frozen=True)
class ModelSpec:
    """What the planner needs to know about a model; built by ``inspect_model``."""
    model_type: str
    head: str  # "lm" (vocabulary logits) or "cls" (sequence classification, num_labels=1)
    n_params: int  # exact, from the model built on the meta device (tied weights once)
    n_matmul_params: int  # weights of Linear/Conv1D layers (what autocast copies to bf16)
    n_head_params: int  # classification head ("score"/"classifier"), trained with LoRA too
    linears: tuple  # ((module name, in_features, out_features), ...) for LoRA counting
    n_layers: int  # encoder + decoder layers
    n_dec_layers: int  # decoder layers of an encoder-decoder (they also cross-attend)
    hidden: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    ffn: int
    vocab: int
    gated_mlp: bool
    attn_readers: int  # linears reading the attention input: 3 (q, k, v) or 1 (fused qkv)
    mlp_readers: int  # linears reading the MLP input: 2 (gate, up), or 1
    rms_norm: bool
    act_saves: int
    dropout: float
    eager_attention: bool
    relative_bias: bool  # T5-style position bias, a (B, a, T, T) tensor per stack
    config: object = field(repr=False, compare=False, default=None)  # the config it came from


def _load_config(model):
    if hasattr(model, "config") and hasattr(model, "named_parameters"):  # a loaded model
        return model.config
    if isinstance(model, str):
        from transformers import AutoConfig
        return AutoConfig.from_pretrained(model)
    return model


def _first(config, *names, default=None):
    for name in names:
        value = getattr(config, name, None)
        if value is not None:
            return value
    return default


def inspect_model(model, head: str = "lm") -> ModelSpec:
    """Dims and exact parameter counts of ``model`` (config, name/path or ModelSpec)."""
    if head not in ("lm", "cls"):
        raise ValueError(f"head must be 'lm' or 'cls', not {head!r}")
    if isinstance(model, ModelSpec):
        if model.head == head:
            return model
        model = model.config
    config = _load_config(model)
    # configs are mutable and unhashable: key the cache on their full JSON
    key = (type(config).__name__, config.to_json_string(use_diff=False),
           getattr(config, "_attn_implementation", None), head)
    if key not in _SPEC_CACHE:
        _SPEC_CACHE[key] = _inspect(copy.deepcopy(config), head)
    return _SPEC_CACHE[key]


_SPEC_CACHE: dict = {}  # (config class, JSON, attention implementation, head) -> ModelSpec


def _inspect(config, head: str) -> ModelSpec:
    import transformers

    model_type = config.model_type
    if head == "cls":
        config.num_labels = 1
        auto = transformers.AutoModelForSequenceClassification
    elif config.is_encoder_decoder:
        auto = transformers.AutoModelForSeq2SeqLM
    elif model_type in ENCODER_ONLY:
        auto = transformers.AutoModelForMaskedLM
    else:
        auto = transformers.AutoModelForCausalLM
    # Built on the meta device: shapes only, nothing allocated, a 7B model in well under a second.
    with torch.device("meta"):
        net = auto.from_config(config)
    n_params = sum(p.numel() for p in net.parameters())  # parameters() yields tied weights once
    matmul, seen, linears, head_params, rms = 0, set(), [], 0, False
    for name, module in net.named_modules():
        kind = type(module).__name__
        rms = rms or "RMSNorm" in kind or kind == "T5LayerNorm"
        weight = getattr(module, "weight", None)
        if kind in ("Linear", "Conv1D") and weight is not None:
            # nn.Linear weight is (out, in); transformers' Conv1D (GPT-2) stores (in, out).
            d_in, d_out = weight.shape[::-1] if kind == "Linear" else weight.shape
            linears.append((name, int(d_in), int(d_out)))
            if id(weight) not in seen:
                seen.add(id(weight))
                matmul += weight.numel()
            if head == "cls" and name.split(".")[-1] in ("score", "classifier", "out_proj"):
                head_params += sum(p.numel() for p in module.parameters())
    leaves = {name.split(".")[-1] for name, _, _ in linears}
    gated = bool(leaves & {"gate_proj", "wi_0", "gate_up_proj"})
    hidden = config.hidden_size
    n_heads = config.num_attention_heads
    enc_layers = config.num_hidden_layers
    dec_layers = _first(config, "num_decoder_layers", default=enc_layers) if config.is_encoder_decoder else 0
    act = _first(config, "hidden_act", "activation_function", "dense_act_fn", default="gelu")
    attn_impl = getattr(config, "_attn_implementation", None)
    return ModelSpec(
        model_type=model_type, head=head, n_params=n_params, n_matmul_params=matmul,
        n_head_params=head_params, linears=tuple(linears),
        n_layers=enc_layers + dec_layers, n_dec_layers=dec_layers, hidden=hidden,
        n_heads=n_heads, n_kv_heads=_first(config, "num_key_value_heads", default=n_heads),
        head_dim=_first(config, "head_dim", "d_kv", default=hidden // n_heads),
        ffn=_first(config, "intermediate_size", "n_inner", "d_ff", default=4 * hidden),
        vocab=config.vocab_size,
        gated_mlp=gated,
        attn_readers=1 if leaves & {"c_attn", "qkv_proj", "query_key_value", "Wqkv", "in_proj"} else 3,
        mlp_readers=2 if gated and "gate_up_proj" not in leaves else 1,
        rms_norm=rms, act_saves=ACT_SAVES.get(str(act), 1),
        dropout=float(_first(config, "resid_pdrop", "hidden_dropout_prob", "dropout_rate",
                             "hidden_dropout", default=0.0)),
        eager_attention=attn_impl == "eager",
        relative_bias=getattr(config, "relative_attention_num_buckets", None) is not None,
        config=config,
    )


def count_params(model, head: str = "lm") -> int:
    """Exact number of parameters (tied embeddings counted once)."""
    return inspect_model(model, head).n_params


def default_lora_targets(model) -> list[str]:
    """LoRA target modules by model type; unknown types get every linear layer but the head."""
    spec = model if isinstance(model, ModelSpec) else inspect_model(model)
    if spec.model_type in LORA_TARGETS:
        return list(LORA_TARGETS[spec.model_type])
    leaves = {name.split(".")[-1] for name, _, _ in spec.linears}
    if set(LLAMA_LIKE_NAMES) & leaves:  # Mistral, Qwen, Gemma, ... share Llama's names
        return [n for n in LLAMA_LIKE_NAMES if n in leaves]
    return sorted(leaves - {"lm_head", "score", "classifier"})


def lora_targets(model, names=None) -> list[str]:
    """The modules that get LoRA adapters: ``names`` (a config's ``lora_target_modules``, a comma list or a
    list) when given, else `default_lora_targets`. Every stage and the planner ask this one function, so a plan
    counts the adapters training will add."""
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    return list(names) if names else default_lora_targets(model)


def _targeted(spec: ModelSpec, target_modules) -> list[tuple[str, int, int]]:
    # peft's rule (tuners_utils.check_target_module_exists): exact name or ".<target>" suffix.
    targets = list(target_modules)
    return [(n, i, o) for n, i, o in spec.linears
            if any(n == t or n.endswith("." + t) for t in targets)]


def count_lora_params(model, r: int, target_modules=None, head: str = "lm") -> int:
    """Trainable parameters of a LoRA model: r*(in+out) per targeted linear (A is r x in,
    B is out x r; Hu et al. 2021), plus the classification head for head="cls" (peft puts
    it in modules_to_save). Equals peft's ``get_nb_trainable_parameters()[0]``."""
    spec = inspect_model(model, head)
    targets = default_lora_targets(spec) if target_modules is None else target_modules
    found = _targeted(spec, targets)
    if not found:
        raise ValueError(f"none of the LoRA targets {list(targets)} is a linear layer of {spec.model_type}")
    return sum(r * (i + o) for _, i, o in found) + spec.n_head_params


def kv_cache_bytes(model, batch_size: int, seq_len: int, bytes_per_value: int = 2) -> int:
    """KV cache of generation: 2 (k, v) * layers * kv heads * head dim * bytes * B * T."""
    spec = inspect_model(model)
    # an encoder-decoder caches self- and cross-attention k/v in each decoder layer
    layers = 2 * spec.n_dec_layers if spec.n_dec_layers else spec.n_layers
    return 2 * layers * spec.n_kv_heads * spec.head_dim * bytes_per_value * batch_size * seq_len


def _layer_bytes(spec: ModelSpec, seq_len: int, e_mm: int, e_res: int, decoder: bool) -> float:
    """Bytes saved for backward per token by one transformer layer (Korthikanti et al. 2022,
    sec. 4.1, term by term). e_mm: bytes of matmul inputs (2 under bf16 autocast, else 4);
    e_res: bytes of the residual stream (4 with fp32 parameters, 2 with a bf16 base)."""
    h, h_kv, ffn, a = spec.hidden, spec.n_kv_heads * spec.head_dim, spec.ffn, spec.n_heads
    inner = spec.n_heads * spec.head_dim  # == h except in T5 (d_kv * heads)
    mask = h if spec.dropout > 0 else 0  # bool dropout mask after attention / MLP output
    # a norm saves its fp32 input; HF's unfused RMSNorm also its normalised output
    norm = 4 * h + (e_res * h if spec.rms_norm else 0)
    # autocast casts a block's fp32 input to bf16 once per linear reading it (it caches casts
    # of weights only), so separate q/k/v (gate/up) projections each save their own copy
    attn_in, mlp_in = (spec.attn_readers, spec.mlp_readers) if e_mm != e_res else (1, 1)
    # qkv input(s), q, k, v, attention output (= o_proj input: flash kernels return it in
    # (B, T, heads, head_dim) layout, so the reshape is a view)
    attn = norm + e_mm * (attn_in * h + 2 * inner + 2 * h_kv) + mask
    if spec.eager_attention:  # softmax probabilities (+ dropout mask and output)
        attn += a * seq_len * (e_mm + (1 + e_mm if spec.dropout > 0 else 0))
    else:  # fused attention keeps only the fp32 log-sum-exp
        attn += 4 * a
    # fc input, activation saves, down/proj input; a gated MLP also keeps act(gate) and up
    mlp = norm + e_mm * (mlp_in * h + ffn * (spec.act_saves + 1 + (2 if spec.gated_mlp else 0))) + mask
    return attn * (2 if decoder else 1) + mlp  # a decoder layer also cross-attends


def activation_bytes(model, micro_batch_size: int, seq_len: int, *, checkpointing: bool,
                     bf16: bool, stage: str = "sft", use_lora: bool = False, lora_r: int = 16,
                     lora_target_modules=None) -> int:
    """Activations saved for backward by one micro-batch, at the backward peak (the vocabulary
    logits are a separate part: ``logits_bytes``)."""
    head = "cls" if stage == "reward" else "lm"
    spec = inspect_model(model, head)
    seqs = micro_batch_size * (2 if stage == "reward" else 1)  # reward: chosen + rejected
    tokens = seqs * seq_len
    e_mm = 2 if bf16 else 4
    e_res = 2 if (bf16 and use_lora) else 4
    n_dec = spec.n_dec_layers
    per_layer = [_layer_bytes(spec, seq_len, e_mm, e_res, decoder=False)] * (spec.n_layers - n_dec)
    per_layer += [_layer_bytes(spec, seq_len, e_mm, e_res, decoder=True)] * n_dec
    if use_lora:  # peft: dropout mask + bf16 copy of each targeted input, and the rank-r output
        targets = default_lora_targets(spec) if lora_target_modules is None else lora_target_modules
        extra = sum(i * (1 + e_mm) + lora_r * e_mm for _, i, _ in _targeted(spec, targets))
        per_layer = [b + extra / spec.n_layers for b in per_layer]
    if checkpointing:  # keep each layer's input, recompute one layer at a time in backward
        layers = spec.n_layers * e_res * spec.hidden + max(per_layer)
    else:
        layers = sum(per_layer)
    # outside the layers: final norm + head input, embedding dropout mask
    outer = 4 * spec.hidden + e_res * spec.hidden + e_mm * spec.hidden + (spec.hidden if spec.dropout > 0 else 0)
    total = tokens * (layers + outer)
    total += seqs * seq_len * seq_len  # bool 4D attention mask built for padded batches
    if spec.relative_bias:  # T5 position bias (B, heads, T, T), once per stack
        total += (2 if n_dec else 1) * seqs * spec.n_heads * seq_len * seq_len * e_mm
    return int(total)


def logits_bytes(model, micro_batch_size: int, seq_len: int, *, bf16: bool, stage: str = "sft") -> int:
    """Vocabulary logits: B*T*V*(logits dtype + 4 B fp32 log-softmax output + 4 B its grad)."""
    if stage == "reward":
        return 0  # one score per sequence
    spec = inspect_model(model)
    return micro_batch_size * seq_len * spec.vocab * ((2 if bf16 else 4) + 4 + 4)


def _trained_model_parts(spec, tag, *, use_lora, lora_r, targets, bf16, micro_batch_size,
                         seq_len, checkpointing, stage, with_logits=True) -> dict[str, int]:
    """Weights, gradients, optimizer state and activations of one trained model."""
    if use_lora:
        trainable = count_lora_params(spec, lora_r, targets, spec.head)
        frozen = spec.n_params - spec.n_head_params
        weights = frozen * (2 if bf16 else 4) + trainable * 4
        autocast_copy = 0  # adapters are tiny; their bf16 casts are ignored
    else:
        trainable = spec.n_params
        weights = trainable * 4
        autocast_copy = spec.n_matmul_params * 2 if bf16 else 0
    parts = {f"weights{tag}": weights}
    if autocast_copy:
        parts[f"bf16 weight copies (autocast){tag}"] = autocast_copy
    parts[f"gradients (fp32){tag}"] = trainable * 4
    parts[f"AdamW state (2 x fp32){tag}"] = trainable * 8
    parts[f"activations{tag}"] = activation_bytes(
        spec, micro_batch_size, seq_len, checkpointing=checkpointing, bf16=bf16, stage=stage,
        use_lora=use_lora, lora_r=lora_r, lora_target_modules=targets)
    if with_logits and stage != "reward":
        parts[f"logits + loss{tag}"] = logits_bytes(spec, micro_batch_size, seq_len, bf16=bf16, stage=stage)
    return parts


def estimate(model, stage: str, *, micro_batch_size: int, seq_len: int, use_lora: bool,
             gradient_checkpointing: bool, bf16: bool, lora_r: int = 16, lora_target_modules=None,
             critic: str = "separate", reward_model=None,
             generation_batch_size: int | None = None) -> dict[str, int]:
    """Peak memory in bytes by part for one fixed choice; the last two parts are overheads.
    PPO only: ``generation_batch_size`` prompts are generated at once (None: micro_batch_size)."""
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, not {stage!r}")
    spec = inspect_model(model, "cls" if stage == "reward" else "lm")
    targets = default_lora_targets(spec) if lora_target_modules is None else list(lora_target_modules)
    common = dict(use_lora=use_lora, lora_r=lora_r, bf16=bf16, micro_batch_size=micro_batch_size,
                  seq_len=seq_len, checkpointing=gradient_checkpointing)
    parts = _trained_model_parts(spec, "", targets=targets, stage=stage, **common)
    if stage == "ppo":
        frozen_bytes = 2 if bf16 else 4
        gen_batch = generation_batch_size or micro_batch_size
        parts["KV cache (generation)"] = kv_cache_bytes(spec, gen_batch, seq_len, frozen_bytes)
        # the reference is the base with adapters disabled under LoRA: nothing extra
        parts["reference model"] = 0 if use_lora else spec.n_params * frozen_bytes
        rm = inspect_model(model if reward_model is None else reward_model, "cls")
        parts["reward model (frozen)"] = rm.n_params * frozen_bytes
        if critic == "head":  # value head on the policy's hidden states: h + 1 params, fp32 + grad + Adam
            parts["value head"] = (spec.hidden + 1) * 16
        elif critic == "separate":
            rm_targets = default_lora_targets(rm) if lora_target_modules is None else targets
            parts.update(_trained_model_parts(rm, " (critic)", targets=rm_targets, stage="reward",
                                              with_logits=False, **common))
            # the critic scores micro_batch_size sequences, not pairs
            parts["activations (critic)"] //= 2
        else:
            raise ValueError(f"critic must be 'separate' or 'head', not {critic!r}")
    subtotal = sum(parts.values())
    parts[f"allocator fragmentation ({FRAGMENTATION:.0%})"] = int(subtotal * FRAGMENTATION)
    parts["CUDA context + workspaces"] = int(CUDA_CONTEXT_GB * GIB)
    return parts


@dataclass
class Plan:
    """The chosen way to run a stage and its memory estimate (bytes per part)."""
    stage: str
    fits: bool
    reason: str
    gpu_memory_gb: float | None
    micro_batch_size: int
    grad_accum_steps: int
    use_lora: bool
    lora_r: int
    lora_target_modules: list[str]
    gradient_checkpointing: bool
    bf16: bool
    seq_len: int
    n_params: int
    n_trainable: int
    parts: dict[str, int] = field(default_factory=dict)

    @property
    def effective_batch_size(self) -> int:
        return self.micro_batch_size * self.grad_accum_steps

    @property
    def total_gb(self) -> float:
        return sum(self.parts.values()) / GIB

    @property
    def base_dtype(self) -> str:
        """dtype to load the (frozen) base weights in; bf16 only for LoRA + bf16."""
        return "bfloat16" if (self.use_lora and self.bf16) else "float32"

    def overrides(self) -> dict:
        """Stage-config fields this plan sets."""
        return {k: getattr(self, k) for k in OVERRIDE_KEYS}

    def apply(self, cfg):
        """A copy of ``cfg`` (dataclass or dict) with the plan's overrides.

        Stage configs that call the micro-batch ``batch_size`` get it there, and a
        ``lora_target_modules`` that holds a comma-separated string gets one. Raises
        PlanDoesNotFit when nothing fits, and ValueError when ``cfg`` lacks a field the plan
        needs (it asks for LoRA and ``cfg`` has no ``use_lora``, or for accumulation and
        ``cfg`` has no ``grad_accum_steps``)."""
        if not self.fits:
            raise PlanDoesNotFit(self.reason)
        current = dict(cfg) if isinstance(cfg, dict) else {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}
        over = self.overrides()
        if "micro_batch_size" not in current and "batch_size" in current:
            over["batch_size"] = over.pop("micro_batch_size")
        if _holds_comma_string(cfg, current.get("lora_target_modules")):
            over["lora_target_modules"] = ",".join(self.lora_target_modules)
        needed = {"micro_batch_size" if "micro_batch_size" in over else "batch_size"}
        # A config with its own micro_batch_size (PPO) accumulates minibatch / micro-batch by itself.
        needed |= {"grad_accum_steps"} if self.grad_accum_steps > 1 and "micro_batch_size" not in current else set()
        needed |= {"use_lora", "lora_r", "lora_target_modules"} if self.use_lora else set()
        needed |= {"gradient_checkpointing"} if self.gradient_checkpointing else set()
        needed |= {"bf16"} if self.bf16 else set()
        if needed - set(current):
            raise ValueError(f"the plan needs config fields {sorted(needed - set(current))} "
                             f"that {type(cfg).__name__} lacks")
        over = {k: v for k, v in over.items() if k in current}
        return {**cfg, **over} if isinstance(cfg, dict) else dataclasses.replace(cfg, **over)

    def table(self) -> list[tuple[str, float]]:
        """(part, GiB) rows, zero rows dropped, then the total and the budget."""
        rows = [(part, round(b / GIB, 3)) for part, b in self.parts.items() if b]
        rows.append(("total (peak)", round(self.total_gb, 3)))
        if self.gpu_memory_gb is not None:
            rows.append(("budget", float(self.gpu_memory_gb)))
        return rows

    def summary(self) -> str:
        how = f"LoRA r={self.lora_r} on {', '.join(self.lora_target_modules)}" if self.use_lora else "full fine-tuning"
        return (f"{self.stage}: {how}, {'bf16' if self.bf16 else 'fp32'}, "
                f"checkpointing {'on' if self.gradient_checkpointing else 'off'}, "
                f"micro-batch {self.micro_batch_size} x {self.grad_accum_steps} accumulation steps; "
                f"{self.n_trainable:,} of {self.n_params:,} parameters trained")

    def to_markdown(self) -> str:
        lines = [f"**{'Fits' if self.fits else 'Does not fit'}** -- {self.reason}", "",
                 self.summary(), "", "| part | GiB |", "|---|---:|"]
        lines += [f"| {part} | {gb:.3f} |" for part, gb in self.table()]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        color = "#1a7f37" if self.fits else "#cf222e"
        rows = "".join(f"<tr><td>{html.escape(p)}</td><td style='text-align:right'>{gb:.3f}</td></tr>"
                       for p, gb in self.table())
        return (f"<p><b style='color:{color}'>{'Fits' if self.fits else 'Does not fit'}</b> &mdash; "
                f"{html.escape(self.reason)}<br>{html.escape(self.summary())}</p>"
                f"<table><tr><th>part</th><th>GiB</th></tr>{rows}</table>")

    def __str__(self) -> str:
        return self.to_markdown()


def _holds_comma_string(cfg, value) -> bool:
    """Does cfg's lora_target_modules field take "q_proj,v_proj" rather than a list?"""
    if value is not None:
        return isinstance(value, str)
    types = {f.name: str(f.type) for f in dataclasses.fields(cfg)} if dataclasses.is_dataclass(cfg) else {}
    annotation = types.get("lora_target_modules", "")
    return "str" in annotation and "list" not in annotation


def _divisors_desc(n: int) -> list[int]:
    return [d for d in range(n, 0, -1) if n % d == 0]


def _choices(pinned, preferred_first):
    return [pinned] if pinned is not None else list(preferred_first)


def plan(model, stage: str, gpu_memory_gb: float | None, *, effective_batch_size: int, seq_len: int,
         use_lora: bool | None = None, bf16: bool | None = None,
         gradient_checkpointing: bool | None = None, micro_batch_size: int | None = None,
         lora_r: int = 16, lora_target_modules=None, critic: str = "separate",
         reward_model=None, generation_batch_size: int | None = None) -> Plan:
    """The fastest plan whose estimated peak fits ``gpu_memory_gb`` (GiB); see the module doc."""
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, not {stage!r}")
    if effective_batch_size < 1 or seq_len < 1:
        raise ValueError("effective_batch_size and seq_len must be positive")
    if micro_batch_size is not None and effective_batch_size % micro_batch_size:
        raise ValueError(f"micro_batch_size={micro_batch_size} does not divide effective_batch_size={effective_batch_size}")
    config = model if isinstance(model, ModelSpec) else _load_config(model)
    spec = inspect_model(config, "cls" if stage == "reward" else "lm")
    targets = default_lora_targets(spec) if lora_target_modules is None else list(lora_target_modules)
    candidates = [
        dict(use_lora=lora, bf16=b, gradient_checkpointing=ckpt, micro_batch_size=mb)
        for lora in _choices(use_lora, (False, True))
        for b in _choices(bf16, (True, False))
        for ckpt in _choices(gradient_checkpointing, (False, True))
        for mb in _choices(micro_batch_size, _divisors_desc(effective_batch_size))
    ]
    budget = None if gpu_memory_gb is None else gpu_memory_gb * GIB
    best, smallest = None, None
    for choice in candidates:
        parts = estimate(spec, stage, seq_len=seq_len, lora_r=lora_r, lora_target_modules=targets,
                         critic=critic, reward_model=reward_model,
                         generation_batch_size=generation_batch_size, **choice)
        total = sum(parts.values())
        if smallest is None or total < smallest[1]:
            smallest = (choice, total, parts)
        if budget is None or total <= budget:
            best = (choice, total, parts)
            break
    choice, total, parts = best or smallest
    if best is None:
        frozen = spec.n_params * (2 if choice["bf16"] else 4)
        reason = (f"nothing fits in {gpu_memory_gb:g} GiB: the smallest plan tried needs "
                  f"{total / GIB:.1f} GiB (the weights alone take {frozen / GIB:.1f} GiB); use a "
                  f"bigger GPU, a smaller model, a shorter seq_len, or shard with FSDP/ZeRO")
    elif budget is None:
        reason = f"no budget given: fastest plan, estimated peak {total / GIB:.1f} GiB"
    else:
        reason = f"estimated peak {total / GIB:.1f} GiB of {gpu_memory_gb:g} GiB"
    use = choice["use_lora"]
    trainable = count_lora_params(spec, lora_r, targets, spec.head) if use else spec.n_params
    return Plan(stage=stage, fits=best is not None, reason=reason, gpu_memory_gb=gpu_memory_gb,
                micro_batch_size=choice["micro_batch_size"],
                grad_accum_steps=effective_batch_size // choice["micro_batch_size"],
                use_lora=use, lora_r=lora_r, lora_target_modules=targets,
                gradient_checkpointing=choice["gradient_checkpointing"], bf16=choice["bf16"],
                seq_len=seq_len, n_params=spec.n_params, n_trainable=trainable, parts=parts)


def bf16_choice(setting: bool | None, device) -> bool | None:
    """The ``bf16`` a stage config hands to `plan`: as set; unset, None (the planner may choose it) where the
    GPU has bf16, else False (a CPU, or a GPU without it, never gets it)."""
    from .models import bf16_available
    return setting if setting is not None else (None if bf16_available(device) else False)


def config_plan(cfg, model, stage: str, device, *, seq_len: int, budget: float | None = None,
                lora_target_modules=None) -> Plan:
    """The plan for a fine-tuning stage config (SFT, reward) in ``budget`` GiB (None: its ``gpu_memory_gb``).

    The SFT and reward configs share the fields this reads: ``batch_size`` x ``grad_accum_steps``
    (the effective batch the plan keeps), ``use_lora``, ``lora_r``, ``bf16``,
    ``gradient_checkpointing``; settings the user turned on stay on, bf16 only where the GPU has it.
    """
    return plan(model, stage, cfg.gpu_memory_gb if budget is None else budget,
                effective_batch_size=cfg.batch_size * cfg.grad_accum_steps, seq_len=seq_len,
                use_lora=True if cfg.use_lora else None, bf16=bf16_choice(cfg.bf16, device),
                gradient_checkpointing=True if cfg.gradient_checkpointing else None,
                lora_r=cfg.lora_r, lora_target_modules=lora_target_modules)


def fit_config(cfg, plan_for):
    """(cfg with the plan ``plan_for()`` makes applied, the plan) for a config with ``gpu_memory_gb``;
    (cfg, None) without one, ``plan_for`` not called. Raises ValueError when nothing fits."""
    if cfg.gpu_memory_gb is None:
        return cfg, None
    p = plan_for()
    if not p.fits:
        raise ValueError(f"does not fit in gpu_memory_gb={cfg.gpu_memory_gb:g}: {p.reason}")
    return p.apply(cfg), p
