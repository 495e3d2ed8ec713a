"""Models: three standard transformers architectures, one per pretraining objective.

All models are built from stock transformers configs, so ``save_pretrained``,
``from_pretrained``, PEFT and accelerate work on them unchanged:

* ``causal`` -> decoder-only **Llama** (``LlamaForCausalLM``): predicts the next
  token; the architecture of today's chat models, and the one later stages use.
* ``masked`` -> encoder-only **BERT** (``BertForMaskedLM``): sees the whole
  sentence and fills in hidden tokens; good at understanding, cannot generate.
* ``span`` -> encoder-decoder **T5** (``T5ForConditionalGeneration``): the
  encoder reads text with spans replaced by sentinels, the decoder writes the
  missing spans.
"""

from __future__ import annotations

from pathlib import Path

import torch

# transformers is imported where a model is built or loaded, not here: `labkit run` imports every stage module to
# check the configs before it starts a notebook, and transformers' modelling code was most of that import's seconds.

OBJECTIVES = {"causal": "decoder", "masked": "encoder", "span": "encoder-decoder"}
AUTO = {"causal": "AutoModelForCausalLM", "masked": "AutoModelForMaskedLM", "span": "AutoModelForSeq2SeqLM"}


def build_model(objective: str, tokenizer, n_layer: int, n_head: int, n_embd: int, block_size: int,
                ffn_mult: float = 4.0, dropout: float = 0.0, attn_impl: str = "sdpa") -> torch.nn.Module:
    """A freshly initialised model for ``objective`` sized by the arguments."""
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown objective {objective!r}; choose from {', '.join(OBJECTIVES)}")
    if n_embd % n_head:
        raise ValueError(f"n_embd={n_embd} must be divisible by n_head={n_head}")
    vocab = len(tokenizer)
    ffn = int(ffn_mult * n_embd)
    ids = dict(pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
               eos_token_id=tokenizer.eos_token_id)
    # Each branch imports only its own model family: the first transformers model module imported in a process
    # costs seconds, and a notebook kernel building a Llama has no use for BERT's and T5's.
    if objective == "causal":
        from transformers import LlamaConfig, LlamaForCausalLM
        cfg = LlamaConfig(vocab_size=vocab, hidden_size=n_embd, intermediate_size=ffn, num_hidden_layers=n_layer,
                          num_attention_heads=n_head, num_key_value_heads=n_head, max_position_embeddings=block_size,
                          rms_norm_eps=1e-5, tie_word_embeddings=True, attention_dropout=dropout,
                          hidden_act="silu", **ids)
        model = LlamaForCausalLM._from_config(cfg, attn_implementation=attn_impl)
    elif objective == "masked":
        from transformers import BertConfig, BertForMaskedLM
        cfg = BertConfig(vocab_size=vocab, hidden_size=n_embd, num_hidden_layers=n_layer, num_attention_heads=n_head,
                         intermediate_size=ffn, max_position_embeddings=block_size, hidden_dropout_prob=dropout,
                         attention_probs_dropout_prob=dropout, hidden_act="gelu", type_vocab_size=1,
                         pad_token_id=tokenizer.pad_token_id)
        model = BertForMaskedLM._from_config(cfg, attn_implementation=attn_impl)
    else:
        from transformers import T5Config, T5ForConditionalGeneration
        cfg = T5Config(vocab_size=vocab, d_model=n_embd, d_kv=n_embd // n_head, d_ff=ffn, num_layers=n_layer,
                       num_decoder_layers=n_layer, num_heads=n_head, dropout_rate=dropout,
                       feed_forward_proj="gated-gelu", tie_word_embeddings=True,
                       decoder_start_token_id=tokenizer.pad_token_id, **ids)
        model = T5ForConditionalGeneration(cfg)
    return model


def load_model(path_or_name: str | Path, objective: str = "causal", dtype=None, **kw) -> torch.nn.Module:
    """Load a checkpoint folder or hub name for ``objective`` (hub names need internet)."""
    import transformers
    try:
        return getattr(transformers, AUTO[objective]).from_pretrained(str(path_or_name), dtype=dtype, **kw)
    except OSError as e:
        raise FileNotFoundError(f"could not load a model from {str(path_or_name)!r}: not a local checkpoint "
                                f"folder, and the hub is unreachable or has no such model ({e.__class__.__name__})"
                                ) from None


def objective_of(path: str | Path) -> str:
    """Which objective a saved checkpoint was built for (to refuse the wrong kind early)."""
    from transformers import AutoConfig
    cfg = AutoConfig.from_pretrained(str(path))
    if cfg.is_encoder_decoder:
        return "span"
    archs = " ".join(cfg.architectures or [])
    return "masked" if "MaskedLM" in archs else "causal"


def max_positions(model) -> int | None:
    """How many positions the model can attend over (None when unbounded, e.g. T5's relative bias)."""
    cfg = model.config
    return getattr(cfg, "max_position_embeddings", None) if not cfg.is_encoder_decoder else None


def count_params(model, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def pick_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def bf16_available(device: torch.device) -> bool:
    """A CUDA GPU with bf16 support: the only place bf16 autocast pays off (on a CPU it is slower than fp32)."""
    return device.type == "cuda" and torch.cuda.is_bf16_supported()


def resolve_bf16(setting: bool | None, device: torch.device) -> bool:
    """A stage config's ``bf16`` as training uses it: True/False as set; None means on where `bf16_available`."""
    return setting if setting is not None else bf16_available(device)


def matmul_gflops(n: int = 2048, reps: int = 3) -> float:
    """The machine's practical float32 peak at torch's current thread count: the best GFLOP/s of ``reps``
    n x n matmuls. Benchmarks record it beside their timings, so a ratio to it travels between machines."""
    import time
    a, b, c = torch.randn(n, n), torch.randn(n, n), torch.empty(n, n)
    torch.mm(a, b, out=c)  # warm-up: threads, caches
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        torch.mm(a, b, out=c)
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best / 1e9


def cpu_model() -> str:
    """The CPU's model name (Linux: /proc/cpuinfo), to record beside a timing."""
    import platform
    try:
        with open("/proc/cpuinfo") as f:
            names = [ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")]
    except OSError:
        names = []
    return names[0] if names else platform.processor() or platform.machine()


def cpu_id(cpuinfo: str = "/proc/cpuinfo") -> str | None:
    """The CPU's family/model/stepping (Linux: /proc/cpuinfo), or None: "AMD EPYC" names several generations,
    whose kernels round differently and run at other speeds, so two machines of one name are told apart by this."""
    try:
        with open(cpuinfo) as f:
            fields = dict(ln.split(":", 1) for ln in f.read().split("\n\n")[0].splitlines() if ":" in ln)
    except OSError:
        return None
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    return "/".join(fields.get(k, "?") for k in ("cpu family", "model", "stepping")) if "cpu family" in fields else None


def peak_memory_mb(device: torch.device | str = "cpu") -> float:
    """This process's peak memory so far, in MiB: on a GPU what torch allocated there
    (``torch.cuda.max_memory_allocated``), else the peak resident set size of the process (``ru_maxrss``)."""
    if torch.device(device).type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 20
    import resource
    import sys
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2 ** 20 if sys.platform == "darwin" else rss / 2 ** 10  # bytes on macOS, KiB on Linux


class PeakMemory:
    """Peak memory of a block, in MiB (``.mb``): on a GPU ``torch.cuda.max_memory_allocated`` after resetting
    it; on a CPU the process's resident set size, sampled every ``interval_s`` by a thread (``ru_maxrss`` only
    ever rises, so it cannot measure one block of a process that did more before)::

        with PeakMemory(device) as mem:
            train()
        mem.mb
    """

    def __init__(self, device: torch.device | str = "cpu", interval_s: float = 0.02):
        self.device, self.interval_s, self.mb = torch.device(device), interval_s, 0.0

    def _rss_mb(self) -> float:
        try:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * self._page / 2 ** 20
        except OSError:  # no /proc (macOS): the process's peak so far
            return peak_memory_mb("cpu")

    def _watch(self):
        while not self._done.wait(self.interval_s):
            self.mb = max(self.mb, self._rss_mb())

    def __enter__(self):
        import os
        import threading
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            return self
        self._page = os.sysconf("SC_PAGE_SIZE")
        self.mb = self._rss_mb()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            self.mb = peak_memory_mb(self.device)
        else:
            self._done.set()
            self._thread.join()
            self.mb = max(self.mb, self._rss_mb())
        return False
