import json

import pytest

from labkit.runs import (Run, StageMissing, UnsafeCheckpoint, append_jsonl, atomic_dir, atomic_write_json,
                         load_checkpoint, read_jsonl)


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


def test_jsonl_ignores_torn_last_line(tmp_path):
    p = tmp_path / "m.jsonl"
    append_jsonl(p, {"step": 1})
    with open(p, "a") as f:
        f.write('{"step": 2, "lo')
    assert read_jsonl(p) == [{"step": 1}]


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
