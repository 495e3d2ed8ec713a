"""Stage 1: train a tokenizer, then pretrain a model with a self-supervised objective.

``causal`` (GPT: predict the next token), ``masked`` (BERT: predict 15% hidden tokens from both sides)
or ``span`` (T5: write back corrupted spans), on the embedded world's text or your own
(``textdata``). Data-parallel, unchanged, under ``accelerate launch``: every process draws the same
windows and keeps its rows, so W processes train what one would. Why: docs/how-it-works.md,
"Stage 1: pretraining".

    from labkit import pretrain
    result = pretrain.run(pretrain.config("smoke", max_steps=20), run="demo")
    # accelerate launch --config_file configs/accelerate/ddp.yaml -m labkit.runner train pretrain --name demo

Writes ``runs/<run>/01_pretrain/``: ``tokenizer/``, ``model/``, ``config.json``, ``metrics.jsonl``
(``pretrain/loss``, ``pretrain/lr``, ``pretrain/tokens_per_s``, ``pretrain/val_loss``,
``pretrain/val_ppl``), ``eval.json`` (with ``pretrain/unigram_ppl``, the baseline), ``samples.jsonl``,
``ckpt/`` (resume) and, with ``gpu_memory_gb``, ``plan.json``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import textdata
from . import world as W
from .config import (ConfigError, bf16_field, device_field, gpu_memory_field, gradient_checkpointing_field,
                    make_config, require_at_least, require_one_of, seed_field, set_threads, threads_field)
from .live import LiveChart, Timer, progress
from .models import (OBJECTIVES, build_model, count_params, load_model, max_positions, objective_of, pick_device,
                     resolve_bf16)
from .runs import (STAGE_DIRS, Run, append_jsonl, atomic_dir, atomic_write_json, config_fingerprint,
                   read_jsonl, resumable_checkpoint, text_hash, write_jsonl_atomic, writes_run)
from .tokenizer import SENTINELS, train_tokenizer
from .tracking import Tracker, closes_trackers, report_to_field, tb_dir


@dataclass
class PretrainConfig:
    # data
    data: str = field(default="world", metadata={"help": "'world' (embedded corpus), a local .txt/.jsonl/.json/.parquet file or folder, or a hub dataset name"})
    text_field: str = field(default="text", metadata={"help": "field holding the text in JSON/parquet/hub records"})
    world_docs: int = field(default=12000, metadata={"help": "documents to generate when data='world'"})
    world_seed: int = field(default=0, metadata={"help": "which embedded world (its residents and facts); later stages read it from run.json"})
    val_fraction: float = field(default=0.05, metadata={"help": "fraction of documents held out for validation"})
    # tokenizer
    tokenizer: str = field(default="bpe", metadata={"help": "tokenizer to train: bpe | wordpiece | unigram"})
    vocab_size: int = field(default=1024, metadata={"help": "tokenizer vocabulary size (incl. special tokens)"})
    # model
    objective: str = field(default="causal", metadata={"help": "causal (decoder) | masked (encoder) | span (encoder-decoder)"})
    init_from: str | None = field(default=None, metadata={"help": "start from this checkpoint folder or hub name (its tokenizer too) instead of from scratch"})
    n_layer: int = field(default=4, metadata={"help": "transformer blocks"})
    n_head: int = field(default=4, metadata={"help": "attention heads"})
    n_embd: int = field(default=192, metadata={"help": "model width"})
    ffn_mult: float = field(default=4.0, metadata={"help": "MLP hidden size / n_embd (causal: SwiGLU's 3 matrices at 8/3 hold GPT-2's 4x weights)"})
    block_size: int = field(default=128, metadata={"help": "sequence length in tokens (also the model's max positions)"})
    # objective details
    mask_prob: float = field(default=0.15, metadata={"help": "masked: fraction of tokens to predict"})
    noise_density: float = field(default=0.15, metadata={"help": "span: fraction of tokens corrupted"})
    mean_span_length: float = field(default=3.0, metadata={"help": "span: mean corrupted span length in tokens"})
    # optimisation
    batch_size: int = field(default=32, metadata={"help": "sequences per micro-batch, over all processes (each of W data-parallel processes takes batch_size/W)"})
    grad_accum_steps: int = field(default=1, metadata={"help": "micro-batches per optimizer step"})
    max_steps: int = field(default=400, metadata={"help": "optimizer steps"})
    learning_rate: float = field(default=3e-3, metadata={"help": "peak learning rate (AdamW)"})
    min_lr_ratio: float = field(default=0.1, metadata={"help": "final learning rate as a fraction of the peak (cosine decay)"})
    warmup_steps: int = field(default=30, metadata={"help": "linear warm-up steps"})
    weight_decay: float = field(default=0.1, metadata={"help": "AdamW weight decay on matrices"})
    grad_clip: float = field(default=1.0, metadata={"help": "clip gradient norm to this (0 = off)"})
    # bookkeeping
    eval_interval: int = field(default=50, metadata={"help": "steps between validation passes"})
    eval_batches: int = field(default=10, metadata={"help": "validation micro-batches per pass"})
    log_interval: int = field(default=10, metadata={"help": "steps between training-loss log lines"})
    checkpoint_interval: int = field(default=100, metadata={"help": "steps between resumable checkpoints"})
    resume: bool = field(default=True, metadata={"help": "continue from ckpt/ when it matches this config"})
    seed: int = seed_field("data, init and sampling")
    # hardware
    device: str = device_field()
    bf16: bool | None = bf16_field()
    compile: bool = field(default=False, metadata={"help": "torch.compile the model (pays off on GPU)"})
    gradient_checkpointing: bool = gradient_checkpointing_field()
    gpu_memory_gb: float | None = gpu_memory_field("batch split, checkpointing and bf16")
    threads: int | None = threads_field()
    report_to: str = report_to_field()


PRESETS = {
    "smoke": dict(world_docs=600, vocab_size=512, n_layer=2, n_head=2, n_embd=64, block_size=128, batch_size=8,
                  max_steps=30, warmup_steps=5, eval_interval=15, eval_batches=2, log_interval=5,
                  checkpoint_interval=15),
    "cpu": dict(),  # the dataclass defaults are the cpu preset
    "gpu": dict(world_docs=200000, vocab_size=8192, n_layer=12, n_head=12, n_embd=768, block_size=1024,
                batch_size=32, max_steps=5000, learning_rate=6e-4, warmup_steps=200, eval_interval=250,
                eval_batches=20, checkpoint_interval=1000, compile=True),
    "hub": dict(),
}

# Which metrics the live chart and the report draw, grouped into subplots.
CHART = {"loss": ["pretrain/loss", "pretrain/val_loss"], "tokens/s": ["pretrain/tokens_per_s"]}
# Fields that may change between an interrupted run and its resume.
_RESUMABLE_CHANGES = {"max_steps", "eval_interval", "eval_batches", "log_interval", "checkpoint_interval",
                      "resume", "device", "threads", "compile", "gradient_checkpointing", "report_to"}


def config(preset: str = "cpu", **overrides) -> PretrainConfig:
    return make_config(PretrainConfig, PRESETS, preset, overrides)


# --- data ----------------------------------------------------------------------------

def load_corpus(cfg: PretrainConfig) -> tuple[list[str], list[str]]:
    """Train and validation documents of ``cfg`` (``textdata.load_corpus``: split by document, never inside one)."""
    return textdata.load_corpus(**{k: getattr(cfg, k) for k in textdata.TEXT_SETTINGS})


def mask_tokens(x: torch.Tensor, tokenizer, prob: float, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT masking: pick ``prob`` of positions; 80% -> <mask>, 10% -> random token, 10% kept."""
    labels = x.clone()
    special = torch.tensor(tokenizer.all_special_ids)
    picked = (torch.rand(x.shape, generator=gen) < prob) & ~torch.isin(x, special)
    labels[~picked] = -100
    x = x.clone()
    r = torch.rand(x.shape, generator=gen)
    x[picked & (r < 0.8)] = tokenizer.mask_token_id
    rand = picked & (r >= 0.8) & (r < 0.9)
    x[rand] = torch.randint(len(tokenizer), x.shape, generator=gen)[rand]
    return x, labels


def corrupt_spans(seq: list[int], sentinel_ids: list[int], density: float, mean_len: float,
                  rng: random.Random) -> tuple[list[int], list[int]]:
    """T5 span corruption of one sequence -> (input with sentinels, target of sentinel+span ...)."""
    n = len(seq)
    n_noise = max(1, round(n * density))
    n_spans = max(1, min(len(sentinel_ids) - 1, round(n_noise / mean_len)))
    starts = sorted(rng.sample(range(n), n_spans))
    noise = [False] * n
    per_span = max(1, n_noise // n_spans)
    for s in starts:
        for j in range(s, min(n, s + per_span)):
            noise[j] = True
    inp, tgt, k, prev = [], [], 0, False
    for tok, is_noise in zip(seq, noise):
        if is_noise and not prev:
            inp.append(sentinel_ids[k])
            tgt.append(sentinel_ids[k])
            k += 1
        (tgt if is_noise else inp).append(tok)
        prev = is_noise
    tgt.append(sentinel_ids[k])  # closing sentinel, as in T5
    return inp, tgt


def get_batch(stream: torch.Tensor, cfg: PretrainConfig, tokenizer, gen: torch.Generator,
              rank: int = 0, world_size: int = 1) -> dict:
    """A micro-batch of random windows, shaped for ``cfg.objective``.

    Data parallel: every process draws the same ``batch_size`` windows (its generator stays in
    step with the others) and keeps rows ``rank*B/W:(rank+1)*B/W`` -- together the W processes
    see exactly the batch one process would."""
    B = cfg.batch_size
    x = textdata.windows(stream, B, cfg.block_size, gen)
    rows = slice(rank * B // world_size, (rank + 1) * B // world_size)
    if cfg.objective == "causal":
        x = x[rows] if world_size > 1 else x
        return {"input_ids": x, "labels": x}  # transformers shifts labels by one inside the model
    if cfg.objective == "masked":
        inp, labels = mask_tokens(x, tokenizer, cfg.mask_prob, gen)
        return {"input_ids": inp[rows], "labels": labels[rows]}
    rng = random.Random(int(torch.randint(2**31, (1,), generator=gen)))
    sentinels = tokenizer.convert_tokens_to_ids(SENTINELS)
    pairs = [corrupt_spans(row, sentinels, cfg.noise_density, cfg.mean_span_length, rng) for row in x.tolist()]
    pairs = pairs[rows]
    li, lt = max(len(p[0]) for p in pairs), max(len(p[1]) for p in pairs)
    pad = tokenizer.pad_token_id
    inp = torch.tensor([p[0] + [pad] * (li - len(p[0])) for p in pairs])
    tgt = torch.tensor([p[1] + [-100] * (lt - len(p[1])) for p in pairs])
    return {"input_ids": inp, "attention_mask": (inp != pad).long(), "labels": tgt}


def unigram_ppl(train: torch.Tensor, val: torch.Tensor, vocab: int) -> float:
    """Perplexity of a model that ignores context: token frequencies from train, add-one smoothed."""
    counts = torch.bincount(train, minlength=vocab).double() + 1
    logp = (counts / counts.sum()).log()
    return math.exp(-logp[val].mean().item())


# --- training --------------------------------------------------------------------------

def lr_at(step: int, cfg: PretrainConfig) -> float:
    """Linear warm-up, then cosine decay to ``min_lr_ratio`` of the peak (nanoGPT's schedule)."""
    if step < cfg.warmup_steps:
        return cfg.learning_rate * (step + 1) / cfg.warmup_steps
    t = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps))
    return cfg.learning_rate * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t)))


def make_optimizer(model, cfg: PretrainConfig, device) -> torch.optim.Optimizer:
    """AdamW with decay on matrices only; norms and biases are not decayed (GPT-2/nanoGPT practice)."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    # fused on a CPU too (torch>=2.4): one kernel over all tensors, not a dozen small ops per tensor per step
    return torch.optim.AdamW(groups, lr=cfg.learning_rate, betas=(0.9, 0.95), fused=device.type in ("cpu", "cuda"))


def train_step(model, opt, batches, cfg, autocast) -> float:
    """One optimizer step over ``grad_accum_steps`` micro-batches; returns the mean loss (a tensor).

    Under DDP the gradients are all-reduced (averaged over processes) in the last backward only."""
    ddp = getattr(model, "_orig_mod", model)  # torch.compile keeps the wrapped module here
    total = 0.0
    for i, batch in enumerate(batches):
        skip_sync = i < len(batches) - 1 and isinstance(ddp, torch.nn.parallel.DistributedDataParallel)
        with ddp.no_sync() if skip_sync else contextlib.nullcontext():
            with autocast:
                # use_cache=False: by default (config.use_cache) transformers copies every layer's keys and
                # values into a KV cache, of no use in training
                loss = model(**batch, use_cache=False).loss / len(batches)
            loss.backward()
        total = total + loss.detach()
    if cfg.grad_clip:
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return total


@torch.no_grad()
def evaluate(model, stream, cfg, tokenizer, device, autocast) -> float:
    """Mean loss on a fixed set of validation windows (same windows every time: comparable numbers)."""
    gen = textdata.eval_generator(cfg.seed)
    model.eval()
    losses = []
    for _ in range(cfg.eval_batches):
        batch = {k: v.to(device) for k, v in get_batch(stream, cfg, tokenizer, gen).items()}
        with autocast:
            losses.append(model(**batch, use_cache=False).loss.float().item())  # no KV cache: see train_step
    model.train()
    return sum(losses) / len(losses)


@torch.no_grad()
def samples(model, tokenizer, cfg, device) -> list[dict]:
    """What the model does with its objective: continuations, mask fills or span fills."""
    model.eval()
    out = []
    if cfg.objective == "causal":
        prompts = ["One morning,", "7 plus 5 is", "The words cat, dog, bird in reverse order are"] \
            if cfg.data == "world" else ["The", "It was"]
        for p in prompts:
            ids = tokenizer(p, return_tensors="pt", add_special_tokens=False).input_ids.to(device)
            g = model.generate(ids, max_new_tokens=24, do_sample=False, pad_token_id=tokenizer.pad_token_id)
            out.append({"prompt": p, "output": tokenizer.decode(g[0, ids.shape[1]:], skip_special_tokens=True)})
    elif cfg.objective == "masked":
        for p in ["Mara went to the <mask>.", "3 plus 4 is <mask>.", "The cat sat on the <mask>."]:
            enc = tokenizer(p, return_tensors="pt", add_special_tokens=False).to(device)
            logits = model(**enc).logits[0]
            pos = (enc.input_ids[0] == tokenizer.mask_token_id).nonzero().flatten()
            top = [tokenizer.convert_ids_to_tokens(logits[i].topk(3).indices.tolist()) for i in pos.tolist()]
            out.append({"prompt": p, "output": " / ".join(",".join(t) for t in top)})
    else:
        for p in ["One morning, Mara went to the <extra_id_0>. She found a <extra_id_1>."]:
            enc = tokenizer(p, return_tensors="pt", add_special_tokens=False).to(device)
            g = model.generate(**enc, max_new_tokens=16, do_sample=False)
            out.append({"prompt": p, "output": tokenizer.decode(g[0], skip_special_tokens=False)})
    model.train()
    return out


def _check(cfg: PretrainConfig, world_size: int = 1) -> None:
    require_one_of(cfg, {"objective": OBJECTIVES})
    require_at_least(cfg, ("max_steps", "batch_size", "block_size", "grad_accum_steps", "n_layer", "eval_batches"))
    if cfg.batch_size % world_size:
        raise ConfigError(f"batch_size={cfg.batch_size} must be a multiple of the {world_size} data-parallel "
                          f"processes (each takes batch_size/{world_size} rows of every micro-batch)")


def _accelerator(cfg: PretrainConfig):
    """An ``accelerate.Accelerator`` when launched as several processes (accelerate launch, torchrun,
    notebook_launcher), else None: a single process runs the plain loop with nothing wrapped."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    from accelerate import Accelerator
    from accelerate.utils import DistributedType
    # cpu=True: on a machine without a GPU a torchrun-started process otherwise falls back to world size 1
    acc = Accelerator(cpu=cfg.device == "cpu" or (cfg.device == "auto" and not torch.cuda.is_available()))
    if acc.distributed_type not in (DistributedType.MULTI_GPU, DistributedType.MULTI_CPU):
        raise ConfigError(f"pretraining runs data-parallel (DDP: every process holds the whole model), not "
                          f"{acc.distributed_type.value}; launch with configs/accelerate/ddp.yaml or cpu_2proc.yaml")
    return acc


def _new_model(cfg: PretrainConfig, tokenizer):
    return build_model(cfg.objective, tokenizer, cfg.n_layer, cfg.n_head, cfg.n_embd, cfg.block_size, cfg.ffn_mult)


def model_shape(cfg: PretrainConfig, tokenizer):
    """The model `run` trains, as the planner needs it: ``init_from`` (the planner reads its config), or a
    fresh model of the config's shape and the tokenizer's vocabulary on the meta device (nothing allocated)."""
    if cfg.init_from:
        return cfg.init_from
    with torch.device("meta"):
        return _new_model(cfg, tokenizer)


def plan_for(cfg: PretrainConfig, model, budget: float | None = None, device=None, world_size: int = 1):
    """labkit.planner's plan for training ``model`` in ``budget`` GiB (None: the config's gpu_memory_gb), on
    ``device`` (None: the config's), with ``world_size`` data-parallel processes.

    Planned per process, for its share of an optimizer step (``batch_size * grad_accum_steps / W``
    sequences of ``block_size`` tokens), choosing micro-batch x accumulation (the effective batch is
    kept), activation checkpointing and bf16. Pretraining trains every weight: no LoRA. ``model`` is the
    model `run` trains, or its `model_shape`: the stage has no predecessor to read it from, so `run`
    passes the model it built and notebook 01 the shape from its tokenizer, and both get the plan from
    this call -- the notebook cannot show a plan the stage would not apply."""
    from . import planner
    return planner.plan(model, "pretrain", cfg.gpu_memory_gb if budget is None else budget,
                        effective_batch_size=cfg.batch_size * cfg.grad_accum_steps // world_size,
                        seq_len=cfg.block_size, use_lora=False,
                        bf16=planner.bf16_choice(cfg.bf16, device or pick_device(cfg.device)),
                        gradient_checkpointing=True if cfg.gradient_checkpointing else None)


def fit_budget(cfg: PretrainConfig, model, device, world_size: int = 1):
    """With ``gpu_memory_gb`` set, the config with `plan_for`'s plan applied, and the plan; else (cfg, None)."""
    from . import planner
    try:
        fitted, plan = planner.fit_config(cfg, lambda: plan_for(cfg, model, device=device, world_size=world_size))
    except ValueError as e:
        raise ConfigError(f"pretraining {e}") from None
    if plan is None:
        return cfg, None
    # the plan's micro-batch is per process; batch_size counts the rows of all processes
    return dataclasses.replace(fitted, batch_size=plan.micro_batch_size * world_size), plan


def _tokenizer(cfg: PretrainConfig, acc, resume_from: Path | None, train_docs: list[str], val_docs: list[str]):
    """init_from's tokenizer, a resumed run's (``resume_from``: its checkpoint), or one trained on the text --
    by rank 0 only under data parallelism, then sent to the others, who check they read the same text."""
    if cfg.init_from:
        from transformers import AutoTokenizer
        from .tokenizer import ensure_chat_ready
        tokenizer = ensure_chat_ready(AutoTokenizer.from_pretrained(cfg.init_from))
    elif resume_from is not None:
        from transformers import AutoTokenizer
        tokenizer = AutoTokenizer.from_pretrained(resume_from / "tokenizer")
    elif acc is None:
        tokenizer = train_tokenizer(train_docs, cfg.tokenizer, cfg.vocab_size)
    else:  # one tokenizer for all processes: rank 0 trains it, the others receive it
        from accelerate.utils import broadcast_object_list
        tokenizer = train_tokenizer(train_docs, cfg.tokenizer, cfg.vocab_size) if acc.is_main_process else None
        tokenizer = broadcast_object_list([tokenizer])[0]
    if acc:  # every process must read the same text with the same vocabulary
        from accelerate.utils import gather_object
        seen = gather_object([(text_hash(train_docs + val_docs), _vocab_hash(tokenizer))])
        if len(set(seen)) != 1:
            raise RuntimeError(f"data-parallel processes disagree on (data hash, vocabulary hash): {seen}")
    return tokenizer


def _vocab_hash(tokenizer) -> str:
    return hashlib.sha256(json.dumps(sorted(tokenizer.get_vocab().items())).encode()).hexdigest()[:16]


@closes_trackers
@writes_run
def run(cfg: PretrainConfig, run: str = "demo", runs_dir: str = "runs", preset: str | None = None,
        live: bool | None = None, progress_bar: bool = True) -> dict:
    """Train the tokenizer and the model; write the stage folder; return the headline numbers."""
    acc = _accelerator(cfg)  # None in a single process
    rank, world_size = (acc.process_index, acc.num_processes) if acc else (0, 1)
    main = rank == 0
    _check(cfg, world_size)
    t_start, timer = time.perf_counter(), Timer()
    cores = len(os.sched_getaffinity(0))
    threads = set_threads(cfg.threads or (max(1, cores // world_size) if world_size > 1 else None))
    torch.manual_seed(cfg.seed)
    device = acc.device if acc else pick_device(cfg.device)
    requested = cfg  # the checkpoint fingerprint: a resumed run recomputes the same plan

    # Data, tokenizer, model and memory plan first: bad input fails before anything is written.
    with timer("corpus"):
        train_docs, val_docs = load_corpus(cfg)
    stage = Path(runs_dir) / run / STAGE_DIRS["pretrain"]
    ckpt = stage / "ckpt"
    resume_state = resumable_checkpoint(ckpt, cfg, _RESUMABLE_CHANGES, cfg.max_steps) if cfg.resume else None
    with timer("tokenizer"):
        tokenizer = _tokenizer(cfg, acc, ckpt if resume_state is not None else None, train_docs, val_docs)
        train_stream, val_stream = textdata.encode(tokenizer, train_docs), textdata.encode(tokenizer, val_docs)
    if min(len(train_stream), len(val_stream)) <= cfg.block_size + 1:
        raise ConfigError(f"not enough text for block_size={cfg.block_size}: {len(train_stream)} train and "
                          f"{len(val_stream)} validation tokens; use more text or a smaller block_size")

    if cfg.init_from:
        if objective_of(cfg.init_from) != cfg.objective if Path(cfg.init_from).exists() else False:
            raise ConfigError(f"{cfg.init_from} is a {objective_of(cfg.init_from)} model, not {cfg.objective}")
        model = load_model(cfg.init_from, cfg.objective)
    else:
        model = _new_model(cfg, tokenizer)
    limit = max_positions(model)
    if limit is not None and cfg.block_size > limit:
        raise ConfigError(f"block_size={cfg.block_size} is beyond the model's {limit} positions")
    cfg, plan = fit_budget(cfg, model, device, world_size)
    if cfg.gradient_checkpointing:  # non-reentrant: the variant that works with DDP and torch.compile
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    bf16 = resolve_bf16(cfg.bf16, device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    model.to(device)
    opt = make_optimizer(model, cfg, device)
    step, tokens_seen = 0, 0
    gen = torch.Generator().manual_seed(cfg.seed)
    if resume_state is not None:
        model.load_state_dict(resume_state["model"])
        opt.load_state_dict(resume_state["optimizer"])
        gen.set_state(resume_state["gen"])
        step, tokens_seen = resume_state["step"], resume_state["tokens_seen"]
    # DDP: the wrapper averages gradients over the processes in backward; evaluation and saving use
    # the plain model (every process holds the same weights).
    ddp = acc.prepare(model) if acc else model
    fwd = torch.compile(ddp) if cfg.compile else ddp
    # A CPU evaluates with the plain model: compiling the no-grad graph too costs more than it saves there
    eval_fwd = fwd if acc is None and device.type == "cuda" else model

    r = Run(run, runs_dir) if main else None
    metrics_path = stage / "metrics.jsonl"
    plan_record = plan and {**dataclasses.asdict(plan), "summary": plan.summary(), "table": plan.table(),
                            "world_size": world_size, "requested_batch_size": requested.batch_size,
                            "requested_grad_accum_steps": requested.grad_accum_steps}
    if main:  # only rank 0 writes
        _start_outputs(r, cfg, preset, plan_record, step if resume_state else None, train_docs, val_docs,
                       train_stream, val_stream)
    baseline = unigram_ppl(train_stream, val_stream, len(tokenizer))
    chart = LiveChart(CHART, title=f"pretraining ({cfg.objective})", enabled=live if main else False)
    bar = progress(cfg.max_steps, "pretrain", initial=step, disable=not (progress_bar and main))
    tracker = Tracker(cfg.report_to, tb_dir(stage), resume_step=step, enabled=main)

    tokens_per_step = cfg.batch_size * cfg.block_size * cfg.grad_accum_steps  # over all processes
    model.train()
    t_window, tok_window = time.perf_counter(), 0
    val_loss = None
    while step < cfg.max_steps:
        for g in opt.param_groups:
            g["lr"] = lr_at(step, cfg)
        with timer("train"):  # host time: on a GPU the queued work finishes at the next sync (log steps)
            batches = [{k: v.to(device, non_blocking=True)
                        for k, v in get_batch(train_stream, cfg, tokenizer, gen, rank, world_size).items()}
                       for _ in range(cfg.grad_accum_steps)]
            loss = train_step(fwd, opt, batches, cfg, autocast)
        step += 1
        tokens_seen += tokens_per_step
        tok_window += tokens_per_step
        bar.update(1)
        if step % cfg.log_interval == 0 or step == cfg.max_steps:
            if acc:  # each process saw its rows: log the whole batch's loss
                loss = acc.reduce(loss, "mean")
            loss = float(loss)  # the only host sync of the step, and only on log steps
            if device.type == "cuda":
                torch.cuda.synchronize()
            now = time.perf_counter()
            m = {"step": step, "pretrain/loss": loss, "pretrain/lr": lr_at(step - 1, cfg),
                 "pretrain/tokens_per_s": tok_window / (now - t_window), "pretrain/tokens": tokens_seen}
            t_window, tok_window = now, 0
            if not math.isfinite(loss):
                raise FloatingPointError(f"pretraining loss became {loss} at step {step}; lower learning_rate")
            if step % cfg.eval_interval == 0 or step == cfg.max_steps:
                with timer("evaluate"):
                    val_loss = evaluate(eval_fwd, val_stream, cfg, tokenizer, device, autocast)
                m.update({"pretrain/val_loss": val_loss, "pretrain/val_ppl": math.exp(min(val_loss, 50))})
                t_window = time.perf_counter()  # evaluation time is not training throughput
            if main:
                append_jsonl(metrics_path, m)
                tracker.log(m)
                chart.update(step, m)
            bar.set_postfix(loss=f"{loss:.3f}", val=f"{val_loss:.3f}" if val_loss else "-")
        if step % cfg.checkpoint_interval == 0 and step < cfg.max_steps and main:
            with timer("checkpoint"):
                _save_ckpt(ckpt, model, opt, gen, step, tokens_seen, requested, tokenizer)
    bar.close()
    chart.update(step, {}, force=True)

    if val_loss is None:
        with timer("evaluate"):
            val_loss = evaluate(eval_fwd, val_stream, cfg, tokenizer, device, autocast)
    result = None
    if main:
        with timer("samples"):
            smp = samples(model, tokenizer, cfg, device)
        with timer("save"):
            _save_outputs(stage, model, tokenizer, smp)
        with timer("checkpoint"):  # a later run may continue
            _save_ckpt(ckpt, model, opt, gen, step, tokens_seen, requested, tokenizer)
        rows = read_jsonl(metrics_path, on_error="skip")
        tps = [m["pretrain/tokens_per_s"] for m in rows if "pretrain/tokens_per_s" in m]
        result = {"pretrain/val_loss": val_loss, "pretrain/val_ppl": math.exp(min(val_loss, 50)),
                  "pretrain/unigram_ppl": baseline,
                  "pretrain/tokens_per_s": sorted(tps)[len(tps) // 2] if tps else None,
                  "pretrain/params": count_params(model), "pretrain/steps": step, "pretrain/tokens": tokens_seen,
                  "pretrain/seconds": time.perf_counter() - t_start, "pretrain/threads": threads,
                  "objective": cfg.objective, "tokenizer": cfg.tokenizer if not cfg.init_from else cfg.init_from,
                  "vocab_size": len(tokenizer), "device": str(device), "world_size": world_size,
                  "resumed_from": resume_state and resume_state["step"]}
        atomic_write_json(stage / "eval.json", {**result, "timings": timer.rounded(), "plan": plan_record,
                                                "samples": smp})
        r.complete("pretrain", result["pretrain/seconds"], {k: result[k] for k in (
            "pretrain/val_ppl", "pretrain/unigram_ppl", "pretrain/tokens_per_s", "pretrain/params")})
    if acc:  # every process returns rank 0's result; then the process group is torn down cleanly
        from accelerate.utils import broadcast_object_list
        result = broadcast_object_list([result])[0]
        acc.wait_for_everyone()  # no process leaves while another still talks to it
        # Free the DDP wrapper (its reducer holds the process group) before the group is destroyed:
        # freed afterwards, at return, it hung the process now and then.
        del fwd, ddp
        acc.free_memory()  # drops accelerate's own references to the prepared model, then gc
        acc.end_training()
    return result



def _start_outputs(r: Run, cfg: PretrainConfig, preset: str | None, plan_record: dict | None, resumed_step: int | None,
                   train_docs: list[str], val_docs: list[str], train_stream, val_stream) -> None:
    """What the stage writes before training: the manifest and config (``r.start``), ``plan.json`` (with a
    budget), ``data.json``, and ``metrics.jsonl`` -- empty, or a resumed run's lines up to its step."""
    r.update_manifest(preset=preset or r.manifest().get("preset"), seed=cfg.seed, world_seed=cfg.world_seed)
    stage = r.start("pretrain", dataclasses.asdict(cfg))
    if plan_record:
        atomic_write_json(stage / "plan.json", plan_record)
    # Keep history up to the resumed step, drop lines from the interrupted tail.
    metrics_path = stage / "metrics.jsonl"
    kept = ([m for m in read_jsonl(metrics_path, on_error="skip") if m.get("step", 0) <= resumed_step]
            if resumed_step is not None else [])
    atomic_write_json(stage / "data.json", {"train_docs": len(train_docs), "val_docs": len(val_docs),
                                            "train_tokens": len(train_stream), "val_tokens": len(val_stream),
                                            "data_hash": text_hash(train_docs + val_docs),
                                            "corpus": W.corpus_stats(train_docs + val_docs)})
    write_jsonl_atomic(metrics_path, kept)


def _save_outputs(stage: Path, model, tokenizer, smp: list[dict]) -> None:
    """The trained model (with its tokenizer), the tokenizer on its own, and the samples."""
    with atomic_dir(stage / "model") as d:
        model.save_pretrained(d)
        tokenizer.save_pretrained(d)
    with atomic_dir(stage / "tokenizer") as d:
        tokenizer.save_pretrained(d)
    write_jsonl_atomic(stage / "samples.jsonl", smp)


# --- checkpoints (resume after an interruption) -------------------------------------------

def _save_ckpt(path: Path, model, opt, gen, step, tokens_seen, cfg, tokenizer) -> None:
    with atomic_dir(path) as d:
        torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "gen": gen.get_state(),
                    "step": step, "tokens_seen": tokens_seen, "config": config_fingerprint(cfg, _RESUMABLE_CHANGES)}, d / "state.pt")
        tokenizer.save_pretrained(d / "tokenizer")
