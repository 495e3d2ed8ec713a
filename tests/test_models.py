"""labkit.models: the three model kinds, loading (and its errors), device choice, bf16, peak memory, matmul peak."""

import time

import pytest
import torch

from labkit import models, world
from labkit.models import (PeakMemory, bf16_available, build_model, count_params, load_model, matmul_gflops,
                           max_positions, objective_of, peak_memory_mb, pick_device, resolve_bf16)
from labkit.tokenizer import train_tokenizer

torch.set_num_threads(1)
SIZE = dict(n_layer=1, n_head=2, n_embd=16, block_size=64)


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer(world.corpus(world.World(0), 100, seed=1), "bpe", 300)


@pytest.mark.parametrize("objective, cls", [("causal", "LlamaForCausalLM"), ("masked", "BertForMaskedLM"),
                                            ("span", "T5ForConditionalGeneration")])
def test_each_objective_builds_saves_and_loads_back(tok, tmp_path, objective, cls):
    torch.manual_seed(0)
    model = build_model(objective, tok, **SIZE)
    assert type(model).__name__ == cls and model.config.vocab_size == len(tok)
    assert max_positions(model) == (None if objective == "span" else 64)  # T5: relative positions, no limit
    model.save_pretrained(tmp_path)
    assert objective_of(tmp_path) == objective
    loaded = load_model(tmp_path, objective)
    assert type(loaded).__name__ == cls
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), name
    assert next(load_model(tmp_path, objective, dtype=torch.bfloat16).parameters()).dtype == torch.bfloat16


def test_building_a_causal_model_imports_no_other_model_family():
    """The first transformers model module a process imports costs seconds, and every notebook kernel pays it:
    a Llama built for stage 1 does not also import BERT's and T5's modelling code."""
    import subprocess
    import sys
    code = """
import sys
from labkit import world
from labkit.models import build_model
from labkit.tokenizer import train_tokenizer
build_model("causal", train_tokenizer(world.corpus(world.World(0), 20, seed=1), "bpe", 300),
            n_layer=1, n_head=2, n_embd=16, block_size=64)
print(sorted({m.split(".")[2] for m in sys.modules if m.startswith("transformers.models.") and m.count(".") == 3
              and m.split(".")[2] in ("llama", "bert", "t5")}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['llama']"


def test_build_model_refuses_bad_settings(tok):
    with pytest.raises(ValueError, match="unknown objective 'gpt'; choose from causal, masked, span"):
        build_model("gpt", tok, **SIZE)
    with pytest.raises(ValueError, match="n_embd=10 must be divisible by n_head=4"):
        build_model("causal", tok, n_layer=1, n_head=4, n_embd=10, block_size=64)


def test_count_params_trainable_only(tok):
    model = build_model("causal", tok, **SIZE)
    total = count_params(model)
    assert total == sum(p.numel() for p in model.parameters()) > 0
    model.model.embed_tokens.weight.requires_grad_(False)  # tied with the head: counted once
    assert count_params(model, trainable_only=True) == total - len(tok) * 16


def test_load_model_says_what_is_wrong(tmp_path):
    with pytest.raises(FileNotFoundError, match="could not load a model from .*nothing-here.*not a local checkpoint"):
        load_model(tmp_path / "nothing-here")
    # a hub name with the hub unreachable (the tests run offline): the same clear error, not a traceback
    with pytest.raises(FileNotFoundError, match="'nobody/no-such-model'"):
        load_model("nobody/no-such-model")


def test_pick_device(monkeypatch):
    assert pick_device("cpu") == torch.device("cpu")
    assert pick_device("cuda:1") == torch.device("cuda", 1)  # named devices are taken as given
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert pick_device() == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert pick_device("auto") == torch.device("cuda")


def test_bf16_is_on_by_default_only_on_a_gpu_that_has_it(monkeypatch):
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert not bf16_available(cpu)
    assert [resolve_bf16(s, cpu) for s in (None, True, False)] == [False, True, False]
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert bf16_available(gpu) and [resolve_bf16(s, gpu) for s in (None, True, False)] == [True, True, False]
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)  # e.g. a V100
    assert [resolve_bf16(s, gpu) for s in (None, True, False)] == [False, True, False]


def test_matmul_gflops_is_the_best_of_its_repeats(monkeypatch):
    """2n^3 FLOPs over the fastest of the timed matmuls (here a clock that reads 1.0, 0.25, 0.5 s per matmul)."""
    ticks = iter([0.0, 1.0, 10.0, 10.25, 20.0, 20.5])
    monkeypatch.setattr(time, "perf_counter", lambda: next(ticks))
    assert matmul_gflops(n=64, reps=3) == pytest.approx(2 * 64 ** 3 / 0.25 / 1e9)
    monkeypatch.undo()
    assert matmul_gflops(n=256, reps=2) > 0.1  # a real one: any machine does more than 0.1 GFLOP/s


def test_peak_memory_on_the_cpu():
    before = peak_memory_mb()
    assert before > 10  # the resident set of a Python with torch loaded, in MiB (not KiB or bytes)
    with PeakMemory("cpu", interval_s=0.005) as mem:
        x = torch.ones(64 * 2 ** 20 // 4)  # 64 MiB, touched
        x.add_(1)
        time.sleep(0.05)                   # let the sampling thread see it
        del x
    assert mem.mb >= 64 and mem.mb < 4 * 2 ** 10
    assert peak_memory_mb() >= max(before, mem.mb - 1)  # ru_maxrss only rises


def test_peak_memory_on_a_gpu_reads_torch_cuda(monkeypatch):
    calls = []
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda d: calls.append(("max", d)) or 3 * 2 ** 20)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda d: calls.append(("reset", d)))
    with PeakMemory("cuda") as mem:
        pass
    assert mem.mb == 3.0 and models.peak_memory_mb("cuda:0") == 3.0
    assert [c[0] for c in calls] == ["reset", "max", "max"]


def test_cpu_id_tells_two_generations_of_one_name_apart(tmp_path):
    """Family/model/stepping of the first processor in /proc/cpuinfo's format; None where there is none."""
    block = "processor\t: {n}\nvendor_id\t: AuthenticAMD\ncpu family\t: {fam}\nmodel\t\t: {model}\n" \
            "model name\t: AMD EPYC\nstepping\t: {step}\n"
    zen3, zen4 = tmp_path / "zen3", tmp_path / "zen4"
    zen3.write_text(block.format(n=0, fam=25, model=1, step=1) + "\n" + block.format(n=1, fam=26, model=2, step=0))
    zen4.write_text(block.format(n=0, fam=25, model=17, step=1))
    assert models.cpu_id(str(zen3)) == "25/1/1"  # the first processor's, not the last one read
    assert models.cpu_id(str(zen4)) == "25/17/1"
    (tmp_path / "arm").write_text("processor\t: 0\nBogoMIPS\t: 50.00\n")
    assert models.cpu_id(str(tmp_path / "arm")) is None and models.cpu_id(str(tmp_path / "absent")) is None
