"""Stage configs: presets, overrides, and refusing misspelled parameters.

Every stage module defines one dataclass (every field documented with
``field(metadata={"help": ...})``) and a ``PRESETS`` dict mapping a preset
name (``smoke``, ``cpu``, ``gpu``, ``hub``) to the fields it changes. A
config is built in exactly one way::

    cfg = make_config(PretrainConfig, PRESETS, "cpu", {"max_steps": 100})

Unknown names are an error listing the valid ones (and the closest one), because
papermill injects parameters as globals without checking them: a typo would
silently be ignored. nanoGPT's configurator refuses unknown keys the same way
(``Unknown config key``). Strings from the command line (``-p max_steps=100``)
are converted to the field's type.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import json
import os
import typing
from dataclasses import field

PRESET_NAMES = ("smoke", "cpu", "gpu", "hub")

# A setting may be chosen by looking at the development seeds' results, never at the test seeds': those are read
# once, to report. benchmarks/seeds.py and results_tables.py both name seeds by these.
DEV_SEEDS, TEST_SEEDS = (0, 1, 2), (3, 4)


class ConfigError(ValueError):
    """A parameter name or value that the stage does not accept."""


def field_names(cls) -> list[str]:
    return [f.name for f in dataclasses.fields(cls) if f.init]


def field_help(cls) -> dict[str, str]:
    return {f.name: f.metadata.get("help", "") for f in dataclasses.fields(cls) if f.init}


# Parameters that were renamed so that every stage and the CLI use one name per concept (the table in
# docs/architecture.md, "One name per concept"): an old name fails with its new one rather than with a list of fields.
RENAMED = {"total_steps": "max_steps", "logging_steps": "log_interval", "k_responses": "samples_per_prompt",
           "rloo_group_size": "samples_per_prompt", "rloo_steps": "max_steps", "dpo_max_steps": "max_steps",
           "rloo_batch_size": "rollout_batch_size", "rloo_beta": "kl_coef", "max_length_tokens": "max_length",
           "conduct_samples": "eval_samples", "verifier_samples_per_task": "eval_samples", "n_eval_tasks": "n_eval",
           "run_name": "run"}


def did_you_mean(name: str, valid) -> str:
    """" (did you mean 'x'?)" for the closest of ``valid``, or "" when none is close: every error about an
    unknown name (parameter, stage, method) ends the same way."""
    close = difflib.get_close_matches(name, list(valid), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def unknown_name(name: str, valid, where: str) -> ConfigError:
    """The error for a parameter ``where`` has no field called ``name``: its new name if it was renamed, else
    the closest valid one and the list."""
    if name in RENAMED:
        return ConfigError(f"parameter {name!r} was renamed to {RENAMED[name]!r}")
    return ConfigError(f"unknown parameter {name!r}{did_you_mean(name, valid)} for {where}; "
                       f"valid: {', '.join(sorted(valid))}")


def coerce(value, tp):
    """Convert a command-line string to a field's type (bool, int, float, str, list, Optional[...])."""
    if not isinstance(value, str):
        return value
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        if value.lower() in ("none", "null"):
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return coerce(value, a)
            except (ValueError, TypeError):
                continue
        return value
    if tp is bool:
        if value.lower() in ("1", "true", "yes", "on"):
            return True
        if value.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"expected a boolean, got {value!r}")
    if tp is int:
        return int(value)
    if tp is float:
        return float(value)
    if origin in (list, tuple) or tp in (list, tuple):
        v = json.loads(value) if value.startswith("[") else [s for s in value.split(",") if s]
        return type(v)(v) if origin is None else (tuple(v) if origin is tuple else list(v))
    return value


def make_config(cls, presets: dict, preset: str = "cpu", overrides: dict | None = None):
    """Build ``cls`` from the preset, then apply ``overrides`` (None values mean 'keep the preset's')."""
    if preset not in presets:
        raise ConfigError(f"unknown preset {preset!r}; choose from {', '.join(presets)}")
    valid = field_names(cls)
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    for k in overrides:
        if k not in valid:
            raise unknown_name(k, valid, cls.__name__)
    hints = typing.get_type_hints(cls)
    values = dict(presets[preset])
    for k, v in overrides.items():
        try:
            values[k] = coerce(v, hints[k])
        except (ValueError, TypeError) as e:
            raise ConfigError(f"bad value for {k}: {v!r} ({e})") from None
    cfg = cls(**values)
    for f in dataclasses.fields(cls):  # field-level checks a module attaches (tracking.report_to_field)
        if "check" in f.metadata:
            f.metadata["check"](getattr(cfg, f.name))
    return cfg


def from_notebook(cls, presets: dict, preset: str, namespace: dict):
    """Build a config from a notebook's parameter globals (fields left as None take the preset)."""
    return make_config(cls, presets, preset, {k: namespace.get(k) for k in field_names(cls)})


def parse_choices(text: str, valid, what: str) -> list[str]:
    """The names in the comma list ``text``, in ``valid``'s order (compare's methods, trust's parts); a name
    not in ``valid`` is an error naming the valid ones, and so is an empty list."""
    names = [m.strip() for m in text.split(",") if m.strip()]
    for m in names:
        if m not in valid:
            raise ConfigError(f"unknown {what} {m!r}{did_you_mean(m, valid)}; {what}s are {', '.join(valid)}")
    if not names:
        raise ConfigError(f"{what}s is empty; choose from {', '.join(valid)}")
    return [m for m in valid if m in names]


def require_at_least(cfg, names, minimum: int = 1, why: str = "") -> None:
    """Refuse the first of ``names`` whose value is below ``minimum`` (a field left as None is not checked):
    every stage's range check, so every message reads the same."""
    for name in names:
        v = getattr(cfg, name)
        if v is not None and v < minimum:
            raise ConfigError(f"{name} must be >= {minimum}{why}, got {v}")


def require_positive(cfg, names) -> None:
    """Refuse the first of ``names`` that is not above zero (a field left as None is not checked)."""
    for name in names:
        v = getattr(cfg, name)
        if v is not None and v <= 0:
            raise ConfigError(f"{name} must be > 0, got {v}")


def require_fraction(cfg, names) -> None:
    """Refuse the first of ``names`` outside [0, 1] (a share of examples or prompts)."""
    for name in names:
        v = getattr(cfg, name)
        if v is not None and not 0 <= v <= 1:
            raise ConfigError(f"{name} must be between 0 and 1, got {v}")


def require_one_of(cfg, choices: dict) -> None:
    """Refuse the first field of ``choices`` ({name: allowed values}) whose value is not among its values."""
    for name, allowed in choices.items():
        if getattr(cfg, name) not in allowed:
            raise ConfigError(f"{name} must be one of {', '.join(allowed)}, got {getattr(cfg, name)!r}")


# --- the fields every stage config repeats ---------------------------------------------------------
# One definition each (type, default, help text), used as ``seed: int = seed_field("...")`` in every stage's
# dataclass. They stay plain fields of that dataclass, in its own order, so papermill's parameters and
# ``-p name=value`` see the same flat names as before; a default that differs by stage is an argument.

def seed_field(what: str):
    """``seed``: what it seeds differs by stage, so the help says it."""
    return field(default=0, metadata={"help": f"seed for {what}"})


def device_field():
    return field(default="auto", metadata={"help": "auto | cpu | cuda"})


def threads_field():
    return field(default=None, metadata={"help": "torch CPU threads (None: the cores this process may use)"})


def bf16_field():
    return field(default=None, metadata={"help": "bf16 mixed precision (None: on where the GPU supports it; off on "
                                                 "CPU, where it is slower); models.resolve_bf16"})


def gradient_checkpointing_field():
    return field(default=False, metadata={"help": "recompute activations in backward: less memory, ~30% more compute"})


def gpu_memory_field(picks: str):
    """``gpu_memory_gb``: ``picks`` says what the planner may change for this stage."""
    return field(default=None, metadata={"help": f"GPU memory budget in GiB per process: labkit.planner picks "
                                                 f"{picks} to fit (None: off)"})


def lora_r_field(default: int):
    return field(default=default, metadata={"help": "LoRA rank"})


def lora_alpha_field(default: int):
    return field(default=default, metadata={"help": "LoRA scale numerator (the update is scaled by lora_alpha / lora_r)"})


def lora_target_modules_field():
    return field(default=None, metadata={"help": "comma list of module names for LoRA (None: every linear layer of "
                                                 "the transformer blocks, planner.lora_targets)"})


def set_threads(n: int | None = None) -> int:
    """Pin torch's intra-op threads: oversubscription made training >10x slower on a busy 2-core box; and keep
    freed memory for reuse (`keep_freed_memory`).

    Defaults to the cores this process may use (``os.sched_getaffinity``),
    capped at 16, unless LABKIT_THREADS is set.
    """
    import torch
    if n is None:
        n = int(os.environ.get("LABKIT_THREADS", "0")) or min(16, len(os.sched_getaffinity(0)))
    torch.set_num_threads(max(1, n))
    keep_freed_memory()  # here because every stage, and every step a notebook runs before its stage, sets threads
    return torch.get_num_threads()


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)


@functools.cache
def keep_freed_memory() -> bool:
    """Keep freed blocks up to 32 MiB in the process's heap instead of handing them back to the kernel (glibc).

    Generating a batch grows the KV cache by a ``torch.cat`` per layer per token: a new block of several MiB,
    the old one freed. glibc returns such blocks to the kernel (``munmap``, or trimming the heap's top), so
    each new one is page-faulted in again and zeroed by the kernel, which cost more than the copy itself.
    Kept, the same pages are reused: generating gets faster, a training step stays about the same (only
    where memory comes from changes, not the arithmetic; benchmarks/freed_memory.py). The price is a process
    that keeps its peak heap.
    False where the C library is not glibc (macOS, musl): nothing is changed there."""
    try:
        if not os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc"):
            return False
    except (ValueError, OSError, AttributeError):  # no such name: not glibc
        return False
    import ctypes
    libc = ctypes.CDLL(None)
    # 32 MiB is the largest mmap threshold glibc accepts on 64-bit; the trim threshold only has to exceed
    # what a stage frees at once
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, 32 << 20) and libc.mallopt(_M_TRIM_THRESHOLD, 1 << 30))


def describe(cfg) -> str:
    """A two-column markdown table of a config with each field's help: what the notebook prints."""
    rows = ["| field | value | meaning |", "|---|---|---|"]
    helps = field_help(type(cfg))
    for k in field_names(type(cfg)):
        rows.append(f"| `{k}` | `{getattr(cfg, k)!r}` | {helps.get(k, '')} |")
    return "\n".join(rows)
