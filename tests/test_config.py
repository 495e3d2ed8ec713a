import pytest

from labkit import pretrain
from labkit.config import ConfigError, coerce, make_config


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
