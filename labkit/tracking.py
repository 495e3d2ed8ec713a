"""Training curves to TensorBoard: opt-in (``report_to="tensorboard"``), one setting for every stage that trains.

The default, ``report_to="none"``, writes nothing and imports nothing: metrics.jsonl and the live
chart are the lab's record. With ``tensorboard`` (``pip install -e .[tracking]``) each training stage
also writes event files to ``<run>/<stage>/tb/`` (compare: ``06_compare/tb/<method>/``), so that
``tensorboard --logdir runs/demo`` shows every stage of a run:

- the lab's own loops (pretraining, PPO) send each metrics.jsonl record through a :class:`Tracker`:
  the same keys (``pretrain/loss``, ``ppo/kl``...), global step = the record's step;
- the TRL/HF trainers (SFT, reward model, DPO, RLOO) get ``report_to`` in their config and write
  with transformers' own TensorBoardCallback (its keys: ``train/loss``, ``eval/loss``...), into the
  folder :func:`hf_logging_dir` names.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import importlib.util
import math
import os
import shutil
from dataclasses import field
from pathlib import Path

from .config import ConfigError

REPORT_TO = ("none", "tensorboard")
HELP = "also send training curves to a tracker: none | tensorboard (event files in the stage's tb/ folder; pip install -e .[tracking])"


def report_to_field():
    """The ``report_to`` field of a stage config that trains."""
    # "check" runs when the config is built (config.make_config): a tracker that does not exist, or whose
    # package is missing, fails before the stage starts
    return field(default="none", metadata={"help": HELP, "check": lambda value: check(value)})


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def check(report_to: str) -> None:
    """One-line ConfigError for a tracker that does not exist, or one whose package is missing."""
    if report_to not in REPORT_TO:
        raise ConfigError(f"report_to must be one of {', '.join(REPORT_TO)}, got {report_to!r}")
    if report_to == "tensorboard" and not _installed("tensorboard"):
        raise ConfigError("report_to='tensorboard' needs the tensorboard package: pip install -e .[tracking]")


def tb_dir(stage: Path) -> Path:
    return Path(stage) / "tb"


# Trackers opened inside a function decorated with closes_trackers, closed when it returns or raises.
_open: contextvars.ContextVar[list | None] = contextvars.ContextVar("labkit_trackers", default=None)


def closes_trackers(fn):
    """Close (flush) every Tracker opened during ``fn``, on return and on an exception or Ctrl-C."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        token = _open.set([])
        try:
            return fn(*args, **kwargs)
        finally:
            for t in _open.get():
                t.close()
            _open.reset(token)
    return wrapper


class Tracker:
    """metrics.jsonl records -> a TensorBoard SummaryWriter in ``log_dir``; does nothing with report_to='none'.

    A fresh run (``resume_step`` None or 0) starts an empty ``log_dir``; a resumed one hides the events
    written after ``resume_step`` by the interrupted run (SummaryWriter's ``purge_step``), as metrics.jsonl
    drops its interrupted tail.
    """

    def __init__(self, report_to: str, log_dir: Path, resume_step: int | None = None, enabled: bool = True):
        check(report_to)
        self.writer = None
        if report_to == "none" or not enabled:
            return
        from torch.utils.tensorboard import SummaryWriter
        if not resume_step:
            shutil.rmtree(log_dir, ignore_errors=True)
        self.writer = SummaryWriter(log_dir=str(log_dir), purge_step=resume_step + 1 if resume_step else None)
        opened = _open.get()
        if opened is not None:
            opened.append(self)

    def log(self, record: dict) -> None:
        """Every finite number of ``record`` but ``step``, at global step ``record["step"]``; flushed, so a
        crash loses nothing and a running TensorBoard sees it at once."""
        if self.writer is None:
            return
        for k, v in record.items():
            if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                self.writer.add_scalar(k, v, record["step"])
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


@contextlib.contextmanager
def hf_logging_dir(report_to: str, log_dir: Path):
    """Build a TRL/HF trainer inside this block and, with report_to='tensorboard', it writes to ``log_dir``
    (emptied first). transformers 5 has no ``logging_dir`` argument: its TensorBoardCallback reads
    TENSORBOARD_LOGGING_DIR when the trainer is built (else it writes under output_dir, a temporary folder)."""
    check(report_to)
    if report_to != "tensorboard":
        yield
        return
    shutil.rmtree(log_dir, ignore_errors=True)
    old = os.environ.get("TENSORBOARD_LOGGING_DIR")
    os.environ["TENSORBOARD_LOGGING_DIR"] = str(log_dir)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("TENSORBOARD_LOGGING_DIR", None)
        else:
            os.environ["TENSORBOARD_LOGGING_DIR"] = old
