"""Shared test settings: one torch thread per test process (the CI box has 2 shared cores)."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("LABKIT_THREADS", "2")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(int(os.environ["LABKIT_THREADS"]))


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
    """A run folder with stage 1 done on the smoke preset (shared: pretraining once per session)."""
    from labkit import pretrain
    runs = tmp_path_factory.mktemp("runs")
    pretrain.run(pretrain.config("smoke"), run="shared", runs_dir=str(runs), progress_bar=False)
    return runs / "shared"
