"""Run folders: how stages hand over, and how nothing gets half-written.

A run is a folder ``runs/<name>/`` (see docs/architecture.md, "Run folders")::

    run.json          manifest: preset, seed, versions, data hashes, stages completed + timings
    01_pretrain/ 02_sft/ 03_preferences/ 04_reward/ 05_ppo/ 06_compare/ 07_trust/
    notebooks/        executed notebooks (papermill output)
    report.html

Stages never share notebook state: each one reads its predecessor's folder by
stage name (``Run.require("sft")``) and fails with a clear message when it is
missing. Every file is written atomically (temp file + ``os.replace``), and
model folders are swapped in whole, so an interrupted stage leaves the
previous state intact. One process writes a run at a time: ``Run.lock()``
(``.lock``, held with ``flock``; ``.lock.json`` says who holds it), taken by
``labkit run`` for the whole pipeline and by every stage's ``run`` (`writes_run`);
run.json is read-modified-written only under it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import gc
import gzip
import hashlib
import json
import os
import platform
import shlex
import shutil
import socket
import sys
import tempfile
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

from .config import ConfigError
from .data import DataError

STAGES = ("pretrain", "sft", "preferences", "reward", "ppo", "compare", "trust")
STAGE_DIRS = {"pretrain": "01_pretrain", "sft": "02_sft", "preferences": "03_preferences",
              "reward": "04_reward", "ppo": "05_ppo", "compare": "06_compare", "trust": "07_trust"}
NOTEBOOKS = {"pretrain": "01_pretrain.ipynb", "sft": "02_sft.ipynb", "preferences": "03_preferences.ipynb",
             "reward": "04_reward_model.ipynb", "ppo": "05_ppo.ipynb", "compare": "06_compare.ipynb",
             "trust": "07_reward_trust.ipynb"}
# What `labkit run` runs when no --stages are named: the pipeline, stages 1-5. The comparison (stage 6:
# DPO, RLOO twice and best-of-n beside PPO) trains three more policies and evaluates six; on a 2-core CPU
# that is more than the main command's 25-minute budget has left after stages 1-5, so it runs when
# asked for: `labkit run --stages compare` after the main run (README, "Results"). Stage 7 (trust: how far
# the reward model can be pushed, and what its labels cost) likewise: `labkit run --stages trust`.
DEFAULT_STAGES = ("pretrain", "sft", "preferences", "reward", "ppo")
# What a completed stage leaves in its folder: run.json's mark alone does not make a stage complete, so a
# file or model folder deleted by hand sends the stage back to the runner ("a|b": either will do).
STAGE_OUTPUTS = {"pretrain": ("model", "eval.json"), "sft": ("model|adapter", "eval.json"),
                 "preferences": ("pairs.jsonl", "eval.json"), "reward": ("model", "eval.json"),
                 "ppo": ("model", "samples.jsonl", "eval.json"), "compare": ("samples.jsonl", "eval.json"),
                 "trust": ("eval.json",)}


# --- atomic writes -----------------------------------------------------------------

def _atomic_write(path: str | Path, fill) -> Path:
    """Write ``path`` via a temp file in the same folder (``fill(f)`` writes bytes into it), fsync, then
    rename over the target: readers see the old file or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            fill(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; run folders are meant to be shared and read
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    # fsync the folder too, so the rename itself survives a power cut (POSIX; not possible on every OS).
    with contextlib.suppress(OSError):
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    return path


def atomic_write_text(path: str | Path, text: str) -> None:
    _atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def atomic_write_json(path: str | Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, default=str) + "\n")


def read_json(path: str | Path, default=None):
    path = Path(path)
    if not path.exists():
        return default
    return json.loads(path.read_text(encoding="utf-8"))


@contextmanager
def atomic_dir(path: str | Path):
    """Yield a temp folder; on success it replaces ``path`` whole (old copy removed last).

    ``os.replace`` cannot swap a non-empty folder atomically, so the old one is
    first renamed aside: at every instant either the old or the new folder is
    complete under some name, and a crash leaves ``path`` or ``path.old``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        yield tmp
        old = path.with_name(path.name + ".old")
        if old.exists():
            shutil.rmtree(old)
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
        if old.exists():
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# --- JSONL: the one writer, appender and reader ---------------------------------------

def _jsonable(obj):
    """json.dumps fallback for numpy/torch scalars and arrays (a 0-d value becomes its Python number), and paths."""
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


def _jsonl_line(record) -> str:
    return json.dumps(record, ensure_ascii=False, default=_jsonable) + "\n"


def write_jsonl_atomic(path: str | Path, records) -> Path:
    """Write one JSON object per line to ``path`` atomically (gzipped if it ends in .gz); returns ``path``.

    ``records`` may be a generator: if it raises, the previous file is left as it was."""
    def fill(raw):
        # mtime=0 keeps a .gz byte-identical for the same records (run folders are compared by hash).
        out = gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) if Path(path).suffix == ".gz" else raw
        for rec in records:
            out.write(_jsonl_line(rec).encode("utf-8"))
        if out is not raw:
            out.close()  # writes the gzip trailer; leaves `raw` open
    return _atomic_write(path, fill)


def append_jsonl(path: str | Path, record: dict) -> None:
    """Append one line and flush it: a crash loses at most the line being written (a torn last line,
    which ``read_jsonl(path, on_error="skip")`` passes over)."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(_jsonl_line(record))
        f.flush()


def read_jsonl(path: str | Path, on_error: str = "raise") -> list[dict]:
    """The records of a JSONL file (.gz ok); a file that does not exist yet, or is empty, gives [].

    ``on_error`` says what a line that is not JSON means. "raise" (files written whole by
    `write_jsonl_atomic`, where a bad line can only be damage): a `DataError` naming the file and
    line. "skip" (logs grown by `append_jsonl`, such as metrics.jsonl, whose last line a crash can
    tear): the line is passed over."""
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    path = Path(path)
    if not path.exists():
        return []
    raw = path.read_bytes()
    if path.suffix == ".gz":
        raw = gzip.decompress(raw)
    out = []
    # A crash can tear a line inside a multi-byte character; "skip" then drops that line, not the file.
    text = raw.decode("utf-8", errors="replace" if on_error == "skip" else "strict")
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError as e:
            if on_error == "raise":
                raise DataError(f"{path} line {n}: invalid JSON ({e.msg} at column {e.colno}) — the file is "
                                f"damaged; restore it or remove this line") from None
    return out


def file_hash(path: str | Path) -> str:
    """A short hash of a file's bytes (or of every file under a folder, in path order)."""
    h = hashlib.sha256()
    p = Path(path)
    files = sorted(q for q in p.rglob("*") if q.is_file()) if p.is_dir() else [p]
    for q in files:
        h.update(q.read_bytes())
    return h.hexdigest()[:16]


def text_hash(texts) -> str:
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()[:16]


def versions() -> dict:
    import importlib.metadata as md
    out = {"python": platform.python_version()}
    for pkg in ("torch", "transformers", "tokenizers", "datasets", "peft", "accelerate", "trl"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


class StageMissing(RuntimeError):
    """A stage needs a predecessor that this run has not completed."""


class ManifestError(ConfigError):
    """run.json is damaged or is not a manifest."""


class RunLocked(ConfigError):
    """Another live process is writing this run folder."""


# --- one writer per run folder: the lock's bookkeeping (``Run.lock`` uses it) ---------------------

# The run locks a process holds, exported to the processes it starts (notebook kernels) as JSON
# {run folder: token}: a kernel of `labkit run` writes under its runner's lock instead of asking for it.
LOCK_ENV = "LABKIT_RUN_LOCKS"
_LOCKS: dict[str, dict] = {}  # run folder -> {"fd": the flock's descriptor (None: covered by the parent), "depth", "token"}


def _key(path: Path) -> str:
    return str(Path(path).resolve())


def _rank() -> int:
    """This process's rank under torchrun / accelerate launch (0 when launched alone)."""
    return int(os.environ.get("RANK", "0") or 0)


def _export_locks() -> None:
    held = {k: v["token"] for k, v in _LOCKS.items()}
    if held:
        os.environ[LOCK_ENV] = json.dumps(held)
    else:
        os.environ.pop(LOCK_ENV, None)


def _read_holder(path: Path) -> dict:
    """``.lock.json`` (who holds, or last held, the lock), or {} when absent or unreadable (being written)."""
    try:
        holder = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}


def _command() -> str:
    """This process's command line as a person typed it: `labkit run ...`, or what a Jupyter kernel is."""
    argv = list(sys.argv) or ["python"]
    if "ipykernel" in argv[0]:
        return "a Jupyter notebook kernel"
    if Path(argv[0]).name in ("labkit", "__main__.py", "runner.py"):
        argv[0] = "labkit"
    return shlex.join(argv)


def _describe(holder: dict) -> str:
    if not holder:
        return "another process (it is just starting)"
    return (f"pid {holder.get('pid')} on {holder.get('host')} (`{holder.get('command')}`, "
            f"since {holder.get('started')})")


def _alive(pid: int, wait_s: float = 0.0) -> bool:
    """Whether process ``pid`` exists, waiting up to ``wait_s`` seconds for it to exit."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass  # exists, owned by someone else
        if time.monotonic() >= deadline:
            return True
        time.sleep(0.1)


def settle_heap() -> None:
    """One full garbage collection, then everything still alive frozen out of later ones (``gc.freeze``).

    transformers' ``Trainer.train()`` starts with a full ``gc.collect()``, which walked the several hundred
    thousand objects of torch, transformers and TRL every time: stage 6 runs three trainers and stage 7 one per
    reward model of its curves. Collecting before freezing keeps garbage out of the frozen generation (a
    notebook that runs a stage again would otherwise keep the last run's cycles for good)."""
    gc.collect()
    gc.freeze()


def writes_run(fn):
    """A stage's entry point ``run(cfg, run=..., runs_dir=..., ...)`` holds its run's lock for the call
    (rank 0 only under accelerate or torchrun: the other ranks wait for it at the usual barriers)."""
    @functools.wraps(fn)
    def locked(cfg, run: str = "demo", runs_dir: str = "runs", *args, **kwargs):
        settle_heap()
        if _rank() != 0:
            return fn(cfg, run, runs_dir, *args, **kwargs)
        folder = Path(runs_dir) / run
        existed, runs_existed = folder.exists(), Path(runs_dir).exists()
        try:
            with Run(run, runs_dir).lock():
                return fn(cfg, run, runs_dir, *args, **kwargs)
        except BaseException:
            # A stage that failed before writing anything (bad data, say) leaves no run behind: only the
            # lock made the folder.
            if not existed and {q.name for q in folder.iterdir()} <= {".lock", ".lock.json"}:
                shutil.rmtree(folder, ignore_errors=True)
                if not runs_existed and not any(Path(runs_dir).iterdir()):
                    Path(runs_dir).rmdir()
            raise
    return locked


class UnsafeCheckpoint(ConfigError):
    """A checkpoint file holds pickled Python objects, not only tensors and plain values."""


def load_checkpoint(path: str | Path) -> dict:
    """Read a resume checkpoint (``ckpt/state.pt``) onto the CPU, accepting only what training saves:
    tensors and plain Python values (dicts, lists, numbers, strings). A run folder can come from
    someone else, and unpickling an arbitrary object can run code, so ``weights_only=True`` refuses it
    with `UnsafeCheckpoint` (a ValueError) instead of loading it (docs/architecture.md, "Run folders")."""
    import pickle

    import torch
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise UnsafeCheckpoint(f"{path} holds Python objects that are not weights or plain values, so it was "
                               f"not loaded (loading it could run code); delete it to start afresh") from e


def config_fingerprint(cfg, resumable) -> dict:
    """What a resume checkpoint records of its config: every field but the ``resumable`` ones (those a
    resumed run may change, such as step counts or the device), as plain values."""
    return {k: v for k, v in dataclasses.asdict(cfg).items() if k not in resumable}


def resumable_checkpoint(folder: str | Path, cfg, resumable, max_steps: int) -> dict | None:
    """``folder/state.pt`` when it was made by this same config (bar the ``resumable`` fields) and stopped
    before ``max_steps``, else None (training starts afresh). Read with `load_checkpoint`."""
    f = Path(folder) / "state.pt"
    if not f.exists():
        return None
    state = load_checkpoint(f)
    if state.get("config") != config_fingerprint(cfg, resumable) or state["step"] >= max_steps:
        return None
    return state


class Run:
    """A run folder and its manifest."""

    def __init__(self, name: str = "demo", runs_dir: str | Path = "runs"):
        if not name or "/" in name or name.startswith("."):
            raise ValueError(f"run name must be a plain folder name, got {name!r}")
        self.name = name
        self.path = Path(runs_dir) / name
        self.path.mkdir(parents=True, exist_ok=True)

    @classmethod
    def at(cls, path: str | Path) -> "Run":
        path = Path(path)
        return cls(path.name, path.parent)

    # manifest -------------------------------------------------------------------
    @property
    def manifest_path(self) -> Path:
        return self.path / "run.json"

    def manifest(self) -> dict:
        """run.json's contents; a damaged file is a `ManifestError` naming it, never a JSON traceback."""
        path = self.manifest_path
        try:
            m = read_json(path, default={"name": self.name, "stages": {}})
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            where = f" at line {e.lineno} column {e.colno}" if isinstance(e, json.JSONDecodeError) else ""
            raise ManifestError(f"{path} is damaged (not valid JSON{where}, e.g. cut short by a full disk): restore "
                                f"it, or move it aside to start run '{self.name}' afresh (every stage then runs "
                                f"again)") from None
        if not isinstance(m, dict) or not isinstance(m.get("stages", {}), dict):
            raise ManifestError(f"{path} is not a labkit manifest (expected an object with a 'stages' object): "
                                f"restore it, or move it aside to start run '{self.name}' afresh")
        m.setdefault("stages", {})
        return m

    def _write_manifest(self, m: dict) -> None:
        """The one place run.json is written: only by the process holding the run's lock (under accelerate
        or torchrun, rank 0 holds it and writes; the other ranks' writes are left to it)."""
        if _rank() != 0:
            return
        if not self.holds_lock():
            raise RuntimeError(f"{self.manifest_path} written without the run's lock: wrap the write in "
                               f"`with Run(...).lock():` (stage entry points take it with @writes_run)")
        m["versions"] = versions()
        atomic_write_json(self.manifest_path, m)

    def update_manifest(self, **fields) -> dict:
        m = self.manifest()
        m.update(fields)
        self._write_manifest(m)
        return m

    # one writer at a time --------------------------------------------------------
    def holds_lock(self) -> bool:
        """Whether this process writes under the run's lock (its own, or that of the `labkit run` that started it)."""
        return _key(self.path) in _LOCKS

    @contextmanager
    def lock(self):
        """Hold the run's lock for the body: a second writer gets `RunLocked` at once, naming this process.

        Re-entrant. A notebook kernel that `labkit run` started is covered by the runner's lock (it finds
        the runner's token in ``LABKIT_RUN_LOCKS`` and in ``.lock.json``) and records its pid there, so a
        process taking over after the runner died waits for that kernel to go too. ``flock`` is released
        by the kernel when its holder dies (SIGKILL included), so a ``.lock.json`` left behind with the
        lock free names a dead holder: it is taken over with a one-line notice on stderr."""
        key = _key(self.path)
        if key in _LOCKS:
            _LOCKS[key]["depth"] += 1
            try:
                yield self
            finally:
                _LOCKS[key]["depth"] -= 1
            return
        info_path = self.path / ".lock.json"
        token = json.loads(os.environ.get(LOCK_ENV) or "{}").get(key)
        holder = _read_holder(info_path)
        if token is not None and holder.get("token") == token:  # covered by the process that started this one
            _LOCKS[key] = {"fd": None, "depth": 1, "token": token}
            atomic_write_json(info_path, {**holder, "helpers": sorted({*holder.get("helpers", []), os.getpid()})})
        else:
            _LOCKS[key] = {"fd": self._take(info_path), "depth": 1, "token": uuid.uuid4().hex}
            atomic_write_json(info_path, {"pid": os.getpid(), "host": socket.gethostname(), "command": _command(),
                                          "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                                          "token": _LOCKS[key]["token"], "helpers": []})
        _export_locks()
        try:
            yield self
        finally:
            held = _LOCKS.pop(key)
            _export_locks()
            if held["fd"] is not None:
                info_path.unlink(missing_ok=True)  # a clean release leaves no holder behind
                os.close(held["fd"])                # closing the file releases the flock
            else:
                with contextlib.suppress(OSError, ValueError):
                    now = _read_holder(info_path)
                    if now.get("token") == held["token"]:
                        now["helpers"] = [p for p in now.get("helpers", []) if p != os.getpid()]
                        atomic_write_json(info_path, now)

    def _take(self, info_path: Path) -> int:
        """flock ``.lock`` without waiting; the file descriptor that holds it, or `RunLocked`."""
        import fcntl
        fd = os.open(self.path / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RunLocked(f"run '{self.name}' ({self.path}) is being written by {_describe(_read_holder(info_path))}: "
                            f"wait for it to finish, or use --name <other> for a separate run") from None
        stale = _read_holder(info_path)
        if stale:
            # The holder died without releasing. Its notebook kernels exit within a second of it (ipykernel's
            # parent poller); wait for them, so that nothing of the dead run writes after this point.
            alive = [p for p in stale.get("helpers", []) if stale.get("host") == socket.gethostname()
                     and _alive(p, wait_s=5.0)]
            if alive:
                os.close(fd)
                raise RunLocked(f"run '{self.name}' ({self.path}): its previous writer ({_describe(stale)}) is gone "
                                f"but its notebook kernel (pid {alive[0]}) still runs: wait a moment, or stop it "
                                f"(kill {alive[0]})")
            print(f"labkit: run '{self.name}' was locked by {_describe(stale)}, which is no longer running; "
                  f"taking the lock over", file=sys.stderr, flush=True)
        return fd

    # stages ---------------------------------------------------------------------
    def stage_dir(self, stage: str) -> Path:
        if stage not in STAGE_DIRS:
            raise ValueError(f"unknown stage {stage!r}; stages are {', '.join(STAGES)}")
        d = self.path / STAGE_DIRS[stage]
        d.mkdir(parents=True, exist_ok=True)
        return d

    def missing_outputs(self, stage: str) -> list[str]:
        """What a completed ``stage`` should have left in its folder and has not (``STAGE_OUTPUTS``)."""
        d = self.path / STAGE_DIRS[stage]
        return [f"{STAGE_DIRS[stage]}/{' or '.join(want.split('|'))}" for want in STAGE_OUTPUTS[stage]
                if not any((d / alt).exists() for alt in want.split("|"))]

    def is_complete(self, stage: str) -> bool:
        """run.json marks the stage complete and its outputs are all there."""
        return stage in self.manifest()["stages"] and not self.missing_outputs(stage)

    def start(self, stage: str, cfg) -> Path:
        """Mark a stage as (re)started: drop its completion mark, write its config, and clear what a writer
        killed mid-save left (``.*.tmp``: nobody else writes here while the lock is held)."""
        m = self.manifest()
        m["stages"].pop(stage, None)
        self._write_manifest(m)
        d = self.stage_dir(stage)
        for junk in d.glob(".*.tmp"):
            if junk.is_dir():
                shutil.rmtree(junk, ignore_errors=True)
            else:
                junk.unlink(missing_ok=True)
        atomic_write_json(d / "config.json", cfg if isinstance(cfg, dict) else cfg.__dict__)
        return d

    def complete(self, stage: str, seconds: float, headline: dict, **extra) -> None:
        m = self.manifest()
        m["stages"][stage] = {"seconds": round(seconds, 2), "headline": headline,
                              "finished": time.strftime("%Y-%m-%dT%H:%M:%S"), **extra}
        self._write_manifest(m)

    def annotate(self, stage: str, **fields) -> None:
        """Add fields to a completed stage's entry (the runner records what it asked for and how long it took)."""
        m = self.manifest()
        m["stages"][stage].update(fields)
        self._write_manifest(m)

    def world(self):
        """The embedded world this run's model was pretrained on (later stages draw tasks from it)."""
        from .world import World
        return World(self.manifest().get("world_seed", 0))

    def require(self, stage: str, what: str = "model") -> Path:
        """The folder of a completed predecessor stage, or a clear error saying how to make it."""
        if not self.is_complete(stage):
            missing = self.missing_outputs(stage) if stage in self.manifest()["stages"] else []
            why = (f"run.json marks '{stage}' complete but {', '.join(missing)} is missing (deleted?)" if missing else
                   f"run '{self.name}' has no completed '{stage}' stage (looked in {self.path / STAGE_DIRS[stage]})")
            raise StageMissing(f"{why}; run it first: labkit run --name {self.name} --stages {stage}")
        d = self.path / STAGE_DIRS[stage]
        if what and not (d / what).exists():
            raise StageMissing(f"stage '{stage}' of run '{self.name}' is marked complete but {d / what} is missing")
        return d / what if what else d
