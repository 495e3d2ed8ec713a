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
    with r.lock():
        r.start("pretrain", {"x": 1})
        (r.stage_dir("pretrain") / "model").mkdir()
        atomic_write_json(r.stage_dir("pretrain") / "eval.json", {})
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


# --- one writer per run folder -------------------------------------------------------------------

HOLD = """
import sys, time
from labkit.runs import Run
r = Run(sys.argv[1], sys.argv[2])
with r.lock():
    r.update_manifest(holder=True)
    print("held", flush=True)
    time.sleep(120)
"""


def _holder(tmp_path, name="r", **kw):
    import subprocess
    import sys
    p = subprocess.Popen([sys.executable, "-c", HOLD, name, str(tmp_path)], stdout=subprocess.PIPE, text=True, **kw)
    assert p.stdout.readline() == "held\n"
    return p


def _lock_in_a_new_process(tmp_path, name="r"):
    """Take the lock in a process of its own (not a child of a holder: those are covered by it)."""
    import os
    import subprocess
    import sys
    env = {k: v for k, v in os.environ.items() if k != "LABKIT_RUN_LOCKS"}
    return subprocess.run([sys.executable, "-c", "import sys\nfrom labkit.runs import Run, RunLocked\ntry:\n"
                           " with Run(sys.argv[1], sys.argv[2]).lock(): print('got it')\n"
                           "except RunLocked as e: print(e, file=sys.stderr); sys.exit(3)", name, str(tmp_path)],
                          capture_output=True, text=True, env=env, timeout=60)


def test_run_json_is_written_only_under_the_lock(tmp_path):
    r = Run("r", tmp_path)
    with pytest.raises(RuntimeError, match=r"run\.json written without the run's lock"):
        r.update_manifest(preset="smoke")
    assert not r.manifest_path.exists()
    with r.lock():
        with r.lock():  # re-entrant
            r.update_manifest(preset="smoke")
        holder = json.loads((r.path / ".lock.json").read_text())
        assert holder["pid"] == __import__("os").getpid() and holder["host"] and holder["started"] and holder["command"]
    assert not (r.path / ".lock.json").exists() and not r.holds_lock()  # released, and says so
    with pytest.raises(RuntimeError, match="without the run's lock"):
        r.complete("pretrain", 1.0, {})


def test_a_second_writer_is_refused_at_once_naming_the_holder(tmp_path):
    import time
    holder = _holder(tmp_path)
    try:
        t0 = time.monotonic()
        p = _lock_in_a_new_process(tmp_path)
        assert p.returncode == 3, p.stdout + p.stderr
        assert time.monotonic() - t0 < 30  # at once: no waiting for the holder
        msg = p.stderr.strip()
        assert "\n" not in msg and f"pid {holder.pid} on " in msg and "`-c r " in msg and "since 20" in msg
        assert "wait for it to finish, or use --name <other>" in msg
        assert json.loads((tmp_path / "r" / "run.json").read_text())["holder"] is True
    finally:
        holder.kill()
        holder.wait()


def test_a_dead_holders_lock_is_taken_over_with_a_notice(tmp_path):
    holder = _holder(tmp_path)
    holder.kill()  # SIGKILL: no clean-up runs; the kernel frees the flock, .lock.json stays behind
    holder.wait()
    assert (tmp_path / "r" / ".lock.json").exists()
    p = _lock_in_a_new_process(tmp_path)
    assert p.returncode == 0 and p.stdout == "got it\n", p.stderr
    assert p.stderr.count("\n") == 1 and f"locked by pid {holder.pid} on " in p.stderr
    assert "no longer running; taking the lock over" in p.stderr
    assert not (tmp_path / "r" / ".lock.json").exists()


def test_child_processes_write_under_their_parents_lock_and_are_waited_for(tmp_path):
    """What `labkit run` does with its notebook kernels: they inherit its lock (and say so in .lock.json).
    When the holder dies first, the next writer waits for them and, while one lives, refuses naming it."""
    import os
    import signal
    import subprocess
    import sys
    child = ("import sys, time\nfrom labkit.runs import Run\nr = Run(sys.argv[1], sys.argv[2])\n"
             "with r.lock():\n    r.update_manifest(child=True)\n    print('in', flush=True)\n    time.sleep(120)\n")
    parent = ("import subprocess, sys, time\nfrom labkit.runs import Run\nwith Run(sys.argv[1], sys.argv[2]).lock():\n"
              f"    kid = subprocess.Popen([sys.executable, '-c', {child!r}, *sys.argv[1:]], stdout=subprocess.PIPE, text=True)\n"
              "    assert kid.stdout.readline() == 'in\\n'\n    print(kid.pid, flush=True)\n    time.sleep(120)\n")
    holder = subprocess.Popen([sys.executable, "-c", parent, "r", str(tmp_path)], stdout=subprocess.PIPE, text=True)
    kid = int(holder.stdout.readline())
    try:
        info = json.loads((tmp_path / "r" / ".lock.json").read_text())
        assert info["pid"] == holder.pid and info["helpers"] == [kid]
        assert json.loads((tmp_path / "r" / "run.json").read_text())["child"] is True  # written under the parent's lock
        holder.kill()  # the holder dies; its child lives on
        holder.wait()
        p = _lock_in_a_new_process(tmp_path)
        assert p.returncode == 3 and f"its notebook kernel (pid {kid}) still runs" in p.stderr, p.stderr
    finally:
        os.kill(kid, signal.SIGKILL)
    p = _lock_in_a_new_process(tmp_path)
    assert p.returncode == 0 and "taking the lock over" in p.stderr, p.stderr


def test_a_damaged_run_json_is_one_line_naming_it(tmp_path):
    from labkit.runs import ManifestError
    r = Run("r", tmp_path)
    with r.lock():
        r.update_manifest(preset="smoke")
    text = r.manifest_path.read_text()
    for damaged in (text[:len(text) // 2], "[1, 2]", '{"stages": 3}', "\xff\xfe"):
        r.manifest_path.write_bytes(damaged.encode("latin-1"))
        with pytest.raises(ManifestError) as e:
            r.is_complete("pretrain")
        assert str(r.manifest_path) in str(e.value) and "\n" not in str(e.value)
        assert "move it aside" in str(e.value)


def test_a_stage_whose_outputs_were_deleted_is_not_complete(tmp_path):
    from conftest import mark_complete
    r = Run("r", tmp_path)
    (r.stage_dir("sft") / "adapter").mkdir()  # a LoRA-only SFT: adapter/ stands for model/
    mark_complete(r, "sft")
    assert r.is_complete("sft") and r.missing_outputs("sft") == []
    (r.stage_dir("sft") / "eval.json").unlink()
    assert not r.is_complete("sft") and r.missing_outputs("sft") == ["02_sft/eval.json"]
    with pytest.raises(StageMissing, match=r"run\.json marks 'sft' complete but 02_sft/eval\.json is missing"):
        r.require("sft", what="")
    assert r.missing_outputs("pretrain") == ["01_pretrain/model", "01_pretrain/eval.json"]


def test_a_stage_collects_the_garbage_then_freezes_what_is_alive(tmp_path):
    """writes_run settles the heap before the stage: a cycle that is already garbage is freed, not frozen for
    good, and what is alive is frozen out of the full collections transformers' Trainer.train() runs."""
    import gc
    import weakref

    from labkit.runs import writes_run

    class Node:
        pass

    alive, dead = Node(), Node()
    alive.me, dead.me = alive, dead  # two reference cycles: only the collector frees them
    gone = weakref.ref(dead)
    del dead
    seen = {}

    @writes_run
    def stage(cfg, run, runs_dir):
        # tracked, yet in no generation a collection walks: in the permanent (frozen) one
        seen["frozen"] = gc.is_tracked(alive) and not any(o is alive for o in gc.get_objects())
        seen["count"] = gc.get_freeze_count()
        return "done"

    was = gc.isenabled()
    gc.disable()  # no automatic collection may free the garbage first
    gc.unfreeze()
    try:
        assert gone() is not None
        assert stage(None, run="r", runs_dir=str(tmp_path)) == "done"
        assert gone() is None
        assert seen["frozen"] and seen["count"] > 1000  # the libraries' objects too, not only this test's
        assert not gc.is_finalized(alive) and alive.me is alive
    finally:
        gc.unfreeze()
        if was:
            gc.enable()
