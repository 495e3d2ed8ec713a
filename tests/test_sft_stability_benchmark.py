"""benchmarks/sft_stability.py: a run copied in from seeds.py or `labkit train` is labelled as the script's own
runs are, so it pairs with the run that differs from it in one thing."""
import dataclasses

from conftest import benchmark
from labkit import sft


def test_a_copied_run_is_labelled_by_the_settings_its_config_changes():
    st = benchmark("sft_stability")
    preset = dataclasses.asdict(sft.config("cpu"))
    # seeds.py's run at the preset's settings: no settings, the seed and threads it ran with left out of them
    assert st.copied_settings(dataclasses.asdict(sft.config("cpu", seed=2, threads=1)), preset) == \
        {"params": [], "threads": 1}
    longer = dataclasses.asdict(sft.config("cpu", seed=1, threads=2, max_steps=4000, data_seed=100))
    assert st.copied_settings(longer, preset) == {"params": ["max_steps=4000"], "threads": 2}
