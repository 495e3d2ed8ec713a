import json

import pytest

from labkit.data import DataError
from labkit.runs import (Run, StageMissing, UnsafeCheckpoint, append_jsonl, atomic_dir, atomic_write_json,
                         config_fingerprint, load_checkpoint, read_jsonl, resumable_checkpoint, write_jsonl_atomic)


def test_atomic_write_leaves_old_file_on_failure(tmp_path, monkeypatch):
    p = tmp_path / "x.json"
    atomic_write_json(p, {"a": 1})

    class Boom(Exception):
        pass

    def bad(*a, **k):
        raise Boom()
    monkeypatch.setattr(json, "dumps", bad)
    with pytest.raises(Boom):
        atomic_write_json(p, {"a": 2})
    monkeypatch.undo()
    assert json.loads(p.read_text()) == {"a": 1}
    assert [q.name for q in tmp_path.iterdir()] == ["x.json"]  # no temp file left


def test_atomic_dir_replaces_whole_or_not_at_all(tmp_path):
    target = tmp_path / "model"
    with atomic_dir(target) as d:
        (d / "w.bin").write_text("v1")
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as d:
            (d / "w.bin").write_text("half")
            raise RuntimeError("crash mid-save")
    assert (target / "w.bin").read_text() == "v1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_jsonl_skip_passes_over_a_torn_last_line_and_raise_names_it(tmp_path):
    p = tmp_path / "m.jsonl"
    append_jsonl(p, {"step": 1, "text": "héllo"})
    with open(p, "ab") as f:
        f.write('{"step": 2, "text": "é'.encode()[:-1])  # torn inside a multi-byte character
    assert read_jsonl(p, on_error="skip") == [{"step": 1, "text": "héllo"}]
    with pytest.raises(UnicodeDecodeError):
        read_jsonl(p, on_error="raise")
    p.write_text('{"ok": 1}\n\n{"torn": ')
    assert read_jsonl(p, on_error="skip") == [{"ok": 1}]
    with pytest.raises(DataError, match="m.jsonl line 3: invalid JSON"):
        read_jsonl(p)  # "raise" is the default: a file written whole has no torn line, so a bad one is damage
    with pytest.raises(ValueError, match="on_error must be"):
        read_jsonl(p, on_error="ignore")
    assert read_jsonl(tmp_path / "not_yet.jsonl") == []


def test_write_jsonl_atomic(tmp_path):
    import numpy as np
    import torch
    p = tmp_path / "sub" / "out.jsonl"
    recs = [{"a": 1, "s": "héllo\nworld"}, {"x": np.float32(0.5), "v": np.arange(3), "t": torch.tensor(2.5)}]
    assert write_jsonl_atomic(p, recs) == p
    assert read_jsonl(p) == [{"a": 1, "s": "héllo\nworld"}, {"x": 0.5, "v": [0, 1, 2], "t": 2.5}]
    assert p.stat().st_mode & 0o777 == 0o644
    assert write_jsonl_atomic(tmp_path / "z.jsonl.gz", recs[:1]) and read_jsonl(tmp_path / "z.jsonl.gz") == recs[:1]
    write_jsonl_atomic(p, [])
    assert read_jsonl(p) == [] and p.read_bytes() == b""

    # a failure mid-write leaves the previous file intact and no temp file behind
    write_jsonl_atomic(p, [{"keep": True}])

    def gen():
        yield {"new": 1}
        raise RuntimeError("interrupted")
    with pytest.raises(RuntimeError):
        write_jsonl_atomic(p, gen())
    assert read_jsonl(p) == [{"keep": True}]
    assert sorted(f.name for f in p.parent.iterdir()) == ["out.jsonl"]
    with pytest.raises(TypeError):
        write_jsonl_atomic(p, [{"bad": object()}])
    assert read_jsonl(p) == [{"keep": True}]


def test_manifest_and_require(tmp_path):
    r = Run("demo", tmp_path)
    with pytest.raises(StageMissing, match="no completed 'pretrain'.*labkit run --name demo --stages pretrain"):
        r.require("pretrain")
    r.start("pretrain", {"x": 1})
    (r.stage_dir("pretrain") / "model").mkdir()
    r.complete("pretrain", 1.5, {"ppl": 2.0})
    assert r.require("pretrain") == r.path / "01_pretrain" / "model"
    m = json.loads((r.path / "run.json").read_text())
    assert m["stages"]["pretrain"]["headline"] == {"ppl": 2.0} and "torch" in m["versions"]
    with pytest.raises(ValueError):
        Run("../escape", tmp_path)


class _RunsCodeOnLoad:
    """What a hostile checkpoint holds: unpickling it would call os.system."""

    def __reduce__(self):
        import os
        return (os.system, ("echo loaded-a-pickled-object",))


def test_checkpoint_reader_returns_tensors_and_plain_values(tmp_path):
    import torch
    state = {"model": {"w": torch.ones(2)}, "gen": torch.Generator().get_state(), "step": 3,
             "config": {"lr": 1e-3, "families": ("a", "b"), "data": None}, "alarms": [{"step": 1, "kind": "kl"}]}
    torch.save(state, tmp_path / "state.pt")
    back = load_checkpoint(tmp_path / "state.pt")
    assert back["step"] == 3 and back["config"] == state["config"] and torch.equal(back["model"]["w"], torch.ones(2))


def test_checkpoint_with_a_pickled_object_is_refused(tmp_path, capfd):
    import torch
    f = tmp_path / "ckpt" / "state.pt"
    f.parent.mkdir()
    torch.save({"step": 1, "payload": _RunsCodeOnLoad()}, f)
    with pytest.raises(UnsafeCheckpoint, match="not weights") as e:
        load_checkpoint(f)
    assert isinstance(e.value, ValueError) and str(f) in str(e.value) and "\n" not in str(e.value)
    assert "loaded-a-pickled-object" not in capfd.readouterr().out  # the object was never built


def test_resumable_checkpoint_needs_the_same_config_and_steps_left(tmp_path):
    import dataclasses

    import torch

    from labkit import pretrain
    cfg = pretrain.config("smoke")
    resumable = {"max_steps"}
    (tmp_path / "ckpt").mkdir()
    torch.save({"step": 2, "config": config_fingerprint(cfg, resumable)}, tmp_path / "ckpt" / "state.pt")
    assert "max_steps" not in config_fingerprint(cfg, resumable)
    assert resumable_checkpoint(tmp_path / "ckpt", cfg, resumable, 5)["step"] == 2
    longer = dataclasses.replace(cfg, max_steps=cfg.max_steps + 7)  # a resumable change
    assert resumable_checkpoint(tmp_path / "ckpt", longer, resumable, 5)["step"] == 2
    assert resumable_checkpoint(tmp_path / "ckpt", dataclasses.replace(cfg, seed=cfg.seed + 1), resumable, 5) is None
    assert resumable_checkpoint(tmp_path / "ckpt", cfg, resumable, 2) is None  # nothing left to do
    assert resumable_checkpoint(tmp_path / "nowhere", cfg, resumable, 5) is None
