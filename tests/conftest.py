"""Shared test settings: the suite runs on two pytest-xdist workers (pyproject's addopts), each with its share of
the cores as torch threads (LABKIT_THREADS; the CI box has 2 cores, so one each), and the fixtures several test
files share (the expensive run folders built once per session, ``built_once``)."""
import contextlib
import fcntl
import os
import shutil

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import pytest  # noqa: E402
import torch  # noqa: E402


def pytest_configure(config):
    """Threads per test process. Most of a test's time is one busy core (papermill kernels starting, Python around
    small models), so two workers with a thread each finish sooner than one worker with two. The controller sets
    LABKIT_THREADS before it starts the workers, which inherit it (as do the stages' subprocesses)."""
    if "PYTEST_XDIST_WORKER" not in os.environ:
        workers = config.getoption("numprocesses", None)
        workers = workers if isinstance(workers, int) and workers > 0 else 1
        os.environ.setdefault("LABKIT_THREADS", str(max(1, min(2, (os.cpu_count() or 2) // workers))))
    torch.set_num_threads(int(os.environ["LABKIT_THREADS"]))


@contextlib.contextmanager
def built_once(tmp_path_factory, name: str):
    """A folder this test session builds once, whichever xdist worker needs it first: the others wait for it,
    then read it (each worker has its own session, so a session fixture alone would build it once per worker).

    Yields (folder, built): the caller builds into ``folder`` when ``built`` is false, under the lock. A build
    that failed half-way is thrown away, not reused."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the session's folder, above each worker's own
    folder, done = root / name, root / f"{name}.built"
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
        yield folder, done.exists()
        done.touch()


@pytest.hookimpl(trylast=True)  # after -k and -m have deselected
def pytest_collection_modifyitems(config, items):
    """The two longest jobs start at once, on different workers. --dist worksteal hands one worker the first half
    of this list and the other the second half, so the slow tests that share the smoke pipeline lead the first
    half and the other slow ones lead the second: neither worker waits for the other's build at the start."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return
    slow = [i for i in items if i.get_closest_marker("slow")]
    smoke = [i for i in slow if i.module.__name__ in ("test_runner", "test_browser")]
    other = [i for i in slow if i not in smoke]
    rest = [i for i in items if i not in slow]
    cut = max(0, len(items) // 2 - len(smoke))
    items[:] = smoke + rest[:cut] + other + rest[cut:]


def ran_every_cell(run_dir, stage: str) -> None:
    """nbval's check on an executed notebook: every code cell of the committed notebook ran (papermill adds one,
    the injected parameters), in order, and no output is an error."""
    import nbformat

    from labkit.runner import NOTEBOOK_DIR, NOTEBOOKS
    committed = nbformat.read(NOTEBOOK_DIR / NOTEBOOKS[stage], as_version=4)
    cells = [c for c in nbformat.read(run_dir / "notebooks" / NOTEBOOKS[stage], as_version=4).cells
             if c.cell_type == "code"]
    assert len(cells) == 1 + sum(c.cell_type == "code" for c in committed.cells), stage
    assert [c.execution_count for c in cells] == list(range(1, len(cells) + 1)), stage
    assert not [o for c in cells for o in c.outputs if o.output_type == "error"], stage


def benchmark(name: str):
    """A script of benchmarks/ as a module (benchmarks/ is not a package: its scripts run by path)."""
    import importlib.util
    from pathlib import Path
    spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def mark_complete(run, stage: str, seconds: float = 0.0, headline: dict | None = None) -> None:
    """Mark a hand-made stage complete as a stage's ``run`` does: under the run's lock, with the eval.json a
    complete stage has (runs.STAGE_OUTPUTS; its other outputs are the test's to make)."""
    from labkit.runs import atomic_write_json
    eval_json = run.stage_dir(stage) / "eval.json"
    if not eval_json.exists():
        atomic_write_json(eval_json, {})
    with run.lock():
        run.complete(stage, seconds, headline or {})


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
    """A run folder with stage 1 done on the smoke preset (shared: pretraining once per session)."""
    from labkit import pretrain
    runs = tmp_path_factory.mktemp("runs")
    pretrain.run(pretrain.config("smoke"), run="shared", runs_dir=str(runs), progress_bar=False)
    return runs / "shared"


@pytest.fixture(scope="session")
def ppo_standins(tmp_path_factory):
    """A run folder for PPO's plumbing tests: stage 1 (smoke) standing in for SFT, and a reward model
    initialised from it with a random score head (seed 1). Tests copy it before running PPO in it."""
    import shutil

    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from labkit import pretrain
    from labkit.runs import Run
    runs = tmp_path_factory.mktemp("ppo_standins")
    r = Run("base", runs)
    pretrain.run(pretrain.config("smoke", threads=1), run="base", runs_dir=str(runs), progress_bar=False, live=False)
    src = r.path / "01_pretrain" / "model"
    shutil.copytree(src, r.stage_dir("sft") / "model")
    mark_complete(r, "sft")
    tok = AutoTokenizer.from_pretrained(str(src))
    torch.manual_seed(1)
    rm = AutoModelForSequenceClassification.from_pretrained(str(src), num_labels=1)
    rm.config.pad_token_id = tok.pad_token_id
    rm.save_pretrained(r.stage_dir("reward") / "model")
    tok.save_pretrained(r.stage_dir("reward") / "model")
    mark_complete(r, "reward")
    return r


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """A tiny tokenizer + Llama saved as a checkpoint folder (stands in for the SFT model)."""
    from labkit import world
    from labkit.models import build_model
    from labkit.tokenizer import train_tokenizer
    docs = world.corpus(world.World(0), 150, seed=1)
    tok = train_tokenizer(docs, "bpe", 300)
    torch.manual_seed(0)
    model = build_model("causal", tok, n_layer=1, n_head=2, n_embd=32, block_size=256)
    path = tmp_path_factory.mktemp("sft") / "model"
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path, tok


CHROMIUM = "/usr/bin/chromium"


def require_browser():
    """Skip a real-browser test where Chromium or playwright is missing -- but fail it in CI (CI=true), where a
    missing browser is a broken setup, not a machine without one (tests/browser_setup.sh installs both)."""
    import importlib.util
    missing = [what for what, ok in (("playwright", importlib.util.find_spec("playwright") is not None),
                                     (CHROMIUM, os.path.exists(CHROMIUM))) if not ok]
    if missing:
        why = f"{' and '.join(missing)} missing (run tests/browser_setup.sh)"
        (pytest.fail if os.environ.get("CI", "").lower() == "true" else pytest.skip)(why)


@pytest.fixture(scope="session")
def explore_run(tmp_path_factory):
    """A run folder with every stage done on the smoke preset (stage 6's DPO and RLOO adapters included),
    for the explorers' tests (tests/test_explore*.py, test_arena.py, test_explore_browser.py). Tests that
    write into a run (the arena, stage 1's extra tokenizers) work on a copy of it."""
    from labkit import compare, ppo, preferences, pretrain, reward, sft
    with built_once(tmp_path_factory, "explore_runs") as (runs, built):
        if not built:
            kw = dict(run="explore", runs_dir=str(runs), preset="smoke", progress_bar=False, live=False)
            pretrain.run(pretrain.config("smoke"), **kw)
            sft.run(sft.config("smoke"), **kw)
            preferences.run(preferences.config("smoke"), **kw)
            reward.run(reward.config("smoke"), **kw)
            ppo.run(ppo.config("smoke", kl_ablation=False), **kw)
            compare.run(compare.config("smoke"), **kw)
    return runs / "explore"
