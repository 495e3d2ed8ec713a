"""The pretraining text (labkit.textdata): the same documents and windows for stage 1 and for drift."""

import math

import torch

from labkit import pretrain, textdata
from labkit.runs import Run, read_json


def test_drift_of_the_pretrained_model_is_stage_1s_validation_perplexity(smoke_run):
    """drift_ppl reads stage 1's settings from its config.json and re-makes its validation windows: on
    the model stage 1 saved it must give the perplexity stage 1 reported, to float rounding."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    r = Run.at(smoke_run)
    model = AutoModelForCausalLM.from_pretrained(r.stage_dir("pretrain") / "model")
    tok = AutoTokenizer.from_pretrained(r.stage_dir("pretrain") / "model")
    reported = read_json(r.stage_dir("pretrain") / "eval.json")["pretrain/val_ppl"]
    assert math.isclose(textdata.drift_ppl(model, tok, r), reported, rel_tol=1e-4)


def test_drift_is_none_without_a_causal_stage_1(tmp_path):
    r = Run("none", tmp_path)
    assert textdata.drift_ppl(None, None, r) is None


def test_corpus_split_and_windows_are_deterministic():
    cfg = pretrain.config("smoke")
    a = textdata.load_corpus(**{k: getattr(cfg, k) for k in textdata.TEXT_SETTINGS})
    assert a == pretrain.load_corpus(cfg) and a[0] and a[1] and not set(a[0]) & set(a[1])
    stream = torch.arange(1000)
    w1 = textdata.windows(stream, 4, 16, textdata.eval_generator(3))
    w2 = textdata.windows(stream, 4, 16, textdata.eval_generator(3))
    assert w1.shape == (4, 16) and torch.equal(w1, w2)
    assert all(torch.equal(row, torch.arange(row[0], row[0] + 16)) for row in w1)  # contiguous windows
