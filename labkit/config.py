"""Stage configs: presets, overrides, and refusing misspelled parameters.

Every stage module defines one dataclass (every field documented with
``field(metadata={"help": ...})``) and a ``PRESETS`` dict mapping a preset
name (``smoke``, ``cpu``, ``gpu``, ``hub``) to the fields it changes. A
config is built in exactly one way::

    cfg = make_config(PretrainConfig, PRESETS, "cpu", {"max_steps": 100})

Unknown names are an error listing the valid ones, because papermill injects
parameters as globals without checking them (a typo would silently be ignored,
as in nanoGPT's configurator). Strings from the command line (``-p
max_steps=100``) are converted to the field's type.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import typing

PRESET_NAMES = ("smoke", "cpu", "gpu", "hub")


class ConfigError(ValueError):
    """A parameter name or value that the stage does not accept."""


def field_names(cls) -> list[str]:
    return [f.name for f in dataclasses.fields(cls) if f.init]


def field_help(cls) -> dict[str, str]:
    return {f.name: f.metadata.get("help", "") for f in dataclasses.fields(cls) if f.init}


def _unknown(names, valid, where):
    lines = []
    for n in names:
        close = difflib.get_close_matches(n, valid, n=1)
        lines.append(f"{n!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    return ConfigError(f"unknown parameter {', '.join(lines)} for {where}; valid: {', '.join(sorted(valid))}")


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
    bad = [k for k in overrides if k not in valid]
    if bad:
        raise _unknown(bad, valid, cls.__name__)
    hints = typing.get_type_hints(cls)
    values = dict(presets[preset])
    for k, v in overrides.items():
        try:
            values[k] = coerce(v, hints[k])
        except (ValueError, TypeError) as e:
            raise ConfigError(f"bad value for {k}: {v!r} ({e})") from None
    cfg = cls(**values)
    if hasattr(cfg, "report_to"):  # an unknown tracker, or a missing package, fails before the stage starts
        from .tracking import check
        check(cfg.report_to)
    return cfg


def from_notebook(cls, presets: dict, preset: str, namespace: dict):
    """Build a config from a notebook's parameter globals (fields left as None take the preset)."""
    return make_config(cls, presets, preset, {k: namespace.get(k) for k in field_names(cls)})


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


def set_threads(n: int | None = None) -> int:
    """Pin torch's intra-op threads: oversubscription made training >10x slower on a busy 2-core box.

    Defaults to the cores this process may use (``os.sched_getaffinity``),
    capped at 16, unless LABKIT_THREADS is set.
    """
    import torch
    if n is None:
        n = int(os.environ.get("LABKIT_THREADS", "0")) or min(16, len(os.sched_getaffinity(0)))
    torch.set_num_threads(max(1, n))
    return torch.get_num_threads()


def describe(cfg) -> str:
    """A two-column markdown table of a config with each field's help: what the notebook prints."""
    rows = ["| field | value | meaning |", "|---|---|---|"]
    helps = field_help(type(cfg))
    for k in field_names(type(cfg)):
        rows.append(f"| `{k}` | `{getattr(cfg, k)!r}` | {helps.get(k, '')} |")
    return "\n".join(rows)
