import json

import pytest

from labkit.runs import Run, StageMissing, append_jsonl, atomic_dir, atomic_write_json, read_jsonl


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
