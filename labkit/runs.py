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
previous state intact.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import hashlib
import json
import os
import platform
import shutil
import tempfile
import time
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
        return read_json(self.manifest_path, default={"name": self.name, "stages": {}})

    def update_manifest(self, **fields) -> dict:
        m = self.manifest()
        m.update(fields)
        m.setdefault("stages", {})
        m["versions"] = versions()
        atomic_write_json(self.manifest_path, m)
        return m

    # stages ---------------------------------------------------------------------
    def stage_dir(self, stage: str) -> Path:
        if stage not in STAGE_DIRS:
            raise ValueError(f"unknown stage {stage!r}; stages are {', '.join(STAGES)}")
        d = self.path / STAGE_DIRS[stage]
        d.mkdir(parents=True, exist_ok=True)
        return d

    def is_complete(self, stage: str) -> bool:
        return stage in self.manifest().get("stages", {})

    def start(self, stage: str, cfg) -> Path:
        """Mark a stage as (re)started: drop its completion mark, write its config."""
        m = self.manifest()
        m.setdefault("stages", {}).pop(stage, None)
        m["versions"] = versions()
        atomic_write_json(self.manifest_path, m)
        d = self.stage_dir(stage)
        atomic_write_json(d / "config.json", cfg if isinstance(cfg, dict) else cfg.__dict__)
        return d

    def complete(self, stage: str, seconds: float, headline: dict, **extra) -> None:
        m = self.manifest()
        m.setdefault("stages", {})[stage] = {"seconds": round(seconds, 2), "headline": headline,
                                             "finished": time.strftime("%Y-%m-%dT%H:%M:%S"), **extra}
        m["versions"] = versions()
        atomic_write_json(self.manifest_path, m)

    def annotate(self, stage: str, **fields) -> None:
        """Add fields to a completed stage's entry (the runner records what it asked for and how long it took)."""
        m = self.manifest()
        m["stages"][stage].update(fields)
        atomic_write_json(self.manifest_path, m)

    def world(self):
        """The embedded world this run's model was pretrained on (later stages draw tasks from it)."""
        from .world import World
        return World(self.manifest().get("world_seed", 0))

    def require(self, stage: str, what: str = "model") -> Path:
        """The folder of a completed predecessor stage, or a clear error saying how to make it."""
        if not self.is_complete(stage):
            raise StageMissing(
                f"run '{self.name}' has no completed '{stage}' stage (looked in {self.path / STAGE_DIRS[stage]}); "
                f"run it first: labkit run --name {self.name} --stages {stage}")
        d = self.path / STAGE_DIRS[stage]
        if what and not (d / what).exists():
            raise StageMissing(f"stage '{stage}' of run '{self.name}' is marked complete but {d / what} is missing")
        return d / what if what else d
