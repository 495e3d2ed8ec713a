import os
import subprocess
import sys

import pytest

from labkit import pretrain
from labkit.config import (ConfigError, coerce, make_config, require_at_least, require_fraction, require_one_of,
                           require_positive)


def test_preset_then_overrides_with_string_coercion():
    cfg = make_config(pretrain.PretrainConfig, pretrain.PRESETS, "smoke", {"max_steps": "7", "bf16": "false",
                                                                          "init_from": "none"})
    assert cfg.max_steps == 7 and cfg.bf16 is False and cfg.init_from is None
    assert cfg.n_layer == pretrain.PRESETS["smoke"]["n_layer"]


def test_unknown_parameter_lists_valid_names_and_suggests():
    with pytest.raises(ConfigError, match=r"max_step.*did you mean 'max_steps'.*valid:"):
        make_config(pretrain.PretrainConfig, pretrain.PRESETS, "cpu", {"max_step": 3})


def test_unknown_preset_and_bad_value():
    with pytest.raises(ConfigError, match="unknown preset"):
        pretrain.config("tiny")
    with pytest.raises(ConfigError, match="bad value for max_steps"):
        pretrain.config("cpu", max_steps="lots")


def test_coerce_types():
    assert coerce("3.5", float) == 3.5
    assert coerce("yes", bool) is True
    assert coerce("a,b", list[str]) == ["a", "b"]
    assert coerce("4", int | None) == 4


def test_range_checks_name_the_field_and_pass_unset_ones():
    cfg = pretrain.config("smoke", max_steps=0)
    with pytest.raises(ConfigError, match="max_steps must be >= 1, got 0"):
        require_at_least(cfg, ("batch_size", "max_steps"))
    require_at_least(cfg, ("max_steps",), 0)
    with pytest.raises(ConfigError, match=r"max_steps must be >= 2 \(why\), got 0"):
        require_at_least(cfg, ("max_steps",), 2, why=" (why)")
    with pytest.raises(ConfigError, match="max_steps must be > 0, got 0"):
        require_positive(cfg, ("batch_size", "max_steps"))
    require_positive(pretrain.config("smoke", gpu_memory_gb=None), ("gpu_memory_gb",))  # None: not set, not checked
    from labkit import sft
    require_fraction(sft.config("smoke", aligned_share=0.0), ("aligned_share",))
    require_fraction(sft.config("smoke", aligned_share=1.0), ("aligned_share",))
    for bad in (-0.1, 1.5):
        with pytest.raises(ConfigError, match=f"aligned_share must be between 0 and 1, got {bad}"):
            require_fraction(sft.config("smoke", aligned_share=bad), ("aligned_share",))
    cfg = pretrain.config("smoke", objective="masked", tokenizer="bpe")
    require_one_of(cfg, {"objective": ("causal", "masked"), "tokenizer": ("bpe",)})
    with pytest.raises(ConfigError, match="tokenizer must be one of wordpiece, unigram, got 'bpe'"):  # the first bad one
        require_one_of(cfg, {"objective": ("causal", "masked"), "tokenizer": ("wordpiece", "unigram")})


def test_bf16_resolution():
    import torch

    from labkit.models import resolve_bf16
    from labkit.planner import bf16_choice
    cpu = torch.device("cpu")
    assert resolve_bf16(None, cpu) is False and resolve_bf16(True, cpu) is True
    assert bf16_choice(None, cpu) is False and bf16_choice(True, cpu) is True and bf16_choice(False, cpu) is False


def test_fields_every_stage_repeats_have_one_definition():
    # seed, device, threads, bf16, ... come from config's field factories: the same help in every stage that
    # has them, and still plain (flat) fields of each stage's dataclass, as papermill and `-p` need.
    import dataclasses

    from labkit.config import field_help
    from labkit.runner import available_stages, config_class
    helps = [field_help(config_class(s)) for s in available_stages()]
    for name in ("device", "threads", "bf16", "gradient_checkpointing", "lora_target_modules"):
        assert len({h[name] for h in helps if name in h}) == 1, name
    assert all(h["seed"].startswith("seed for ") for h in helps)
    sft = dataclasses.fields(config_class("sft"))
    assert [f.default for f in sft if f.name in ("lora_r", "lora_alpha")] == [4, 16]  # a stage keeps its defaults
    cfg = make_config(config_class("ppo"), {"cpu": {}}, "cpu", {"seed": "7", "gpu_memory_gb": "12", "lora_r": "8"})
    assert (cfg.seed, cfg.gpu_memory_gb, cfg.lora_r) == (7, 12.0, 8)


_FREED_AFTER = """
import ctypes, torch
from labkit.config import set_threads
class Info(ctypes.Structure):  # glibc's struct mallinfo2
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                               "fsmblks", "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL(None)
libc.mallinfo2.restype = Info
def kept():
    blocks = [torch.ones(30 << 18) for _ in range(3)]  # 30 MiB each: under glibc's largest mmap threshold
    del blocks
    return libc.mallinfo2().fordblks >> 20  # MiB free inside the heap, kept for the next allocations
before = kept()
set_threads(1)
print(before, kept())
"""


@pytest.mark.skipif(not hasattr(os, "confstr") or not os.confstr("CS_GNU_LIBC_VERSION"), reason="glibc only")
def test_a_stage_keeps_freed_memory_for_reuse_instead_of_returning_it():
    """Once a stage has set its threads, blocks it frees stay in the heap for the next ones (a KV cache grown
    token by token frees and allocates such blocks at every step); glibc's own thresholds hand them back."""
    out = subprocess.run([sys.executable, "-c", _FREED_AFTER], capture_output=True, text=True, check=True)
    before, after = map(int, out.stdout.split()[-2:])
    assert before < 30 and after >= 90
