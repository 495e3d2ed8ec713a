"""Stage 5's settings (labkit.ppo_config): checks, prompt draws, and which prompts train and which evaluate."""

import collections

import pytest

from labkit import ppo_config
from labkit.config import ConfigError


def test_prompt_draws():
    cfg = ppo_config.config("smoke", rollout_batch_size=8, samples_per_prompt=4)
    pick = ppo_config.pick_prompts(100, cfg, rank=0, step=3)
    assert pick == ppo_config.pick_prompts(100, cfg, rank=0, step=3) and len(pick) == 8
    assert pick[:4] == [pick[0]] * 4 and pick[4:] == [pick[4]] * 4 and pick[0] != pick[4]
    assert pick != ppo_config.pick_prompts(100, cfg, rank=1, step=3)  # each process draws its own prompts
    assert len(ppo_config.pick_prompts(1, ppo_config.config("smoke"), 0, 0)) == ppo_config.config("smoke").rollout_batch_size


def test_config_rejects_bad_values():
    with pytest.raises(ConfigError, match="did you mean 'kl_coef'"):
        ppo_config.config("smoke", kl_coeff=0.1)
    with pytest.raises(ConfigError, match="must divide"):
        ppo_config.check(ppo_config.config("smoke", rollout_batch_size=10, minibatch_size=4))
    with pytest.raises(ConfigError, match="reward"):
        ppo_config.check(ppo_config.config("smoke", reward="judge"))
    with pytest.raises(ConfigError, match="ptx_coef must be >= 0"):
        ppo_config.check(ppo_config.config("smoke", ptx_coef=-1.0))
    with pytest.raises(ConfigError, match="ptx_coef needs prompts='world'"):
        ppo_config.check(ppo_config.config("smoke", ptx_coef=1.0, prompts="mine.jsonl"))
    for preset in ppo_config.PRESETS:
        ppo_config.check(ppo_config.config(preset))


def test_training_prompts_are_never_evaluation_prompts():
    from labkit import world
    cfg = ppo_config.config("smoke", n_prompts=400, n_eval=100)
    train, held = ppo_config.load_prompts(cfg, world.World(0))
    assert len(train) == 400 and len(held) == 100
    assert {t["split"] for t in train} == {"rl"} and {t["split"] for t in held} == {"eval"}
    assert not {t["prompt"] for t in train} & {t["prompt"] for t in held}


def test_rollout_families_narrow_the_training_prompts_not_the_evaluation():
    from labkit import world
    cfg = ppo_config.config("smoke", n_prompts=80, n_eval=70)
    train, held = ppo_config.load_prompts(cfg, world.World(0))
    # by default the conduct families and extraction, the ones the reward model judges
    assert {t["family"] for t in train} == {"harmful", "unanswerable", "benign", "extract"}
    assert {t["family"] for t in held} == set(world.DEFAULT_FAMILIES)
    assert not {t["prompt"] for t in train} & {t["prompt"] for t in held}
    everything = ppo_config.load_prompts(ppo_config.config("smoke", n_prompts=80, n_eval=70, rollout_families=""), world.World(0))[0]
    assert {t["family"] for t in everything} == set(world.DEFAULT_FAMILIES)
    # only those among families: a narrower families setting keeps working with the default
    assert ppo_config.rollout_families(ppo_config.config("smoke", families="story_qa,harmful,benign")) == ("harmful", "benign")
    with pytest.raises(ConfigError, match="none of rollout_families .* is among families"):
        ppo_config.check(ppo_config.config("smoke", families="story_qa,arithmetic"))
    with pytest.raises(ConfigError, match="unknown task family nonsense"):
        ppo_config.check(ppo_config.config("smoke", rollout_families="nonsense"))
    # equal shares of the pool, a family named twice two of them (world.rl_tasks cycles the list)
    weighted = ppo_config.load_prompts(ppo_config.config("smoke", n_prompts=90, n_eval=70,
                                                         rollout_families="harmful,extract,extract"), world.World(0))[0]
    assert collections.Counter(t["family"] for t in weighted) == {"harmful": 30, "extract": 60}


def test_rollout_templates_widen_the_training_phrasings_not_the_evaluation():
    from labkit import world
    base = ppo_config.load_prompts(ppo_config.config("smoke", n_prompts=200, n_eval=70), world.World(0))
    wide = ppo_config.load_prompts(ppo_config.config("smoke", n_prompts=200, n_eval=70, rollout_templates="rl+train"),
                                   world.World(0))
    assert wide[1] == base[1]  # the held-out prompts are the same
    assert {t["template"] for t in base[0]} < {t["template"] for t in wide[0]}
    assert not {t["template"] for t in wide[0]} & {t["template"] for t in wide[1]}
    with pytest.raises(ConfigError, match="rollout_templates must be one of rl, rl\\+train, got 'eval'"):
        ppo_config.check(ppo_config.config("smoke", rollout_templates="eval"))


def test_a_prompts_file_is_read_with_its_last_n_eval_lines_held_out(tmp_path):
    from labkit import world
    from labkit.data import DataError
    path = tmp_path / "prompts.jsonl"
    path.write_text("\n".join(['"Say hi."', '{"prompt": "Add 2 and 2.", "answer": "4", "family": "arithmetic"}',
                               '', '"Name a color."']) + "\n")
    cfg = ppo_config.config("smoke", prompts=str(path), n_eval=1, ptx_coef=0.0)
    train, held = ppo_config.load_prompts(cfg, world.World(0))
    assert [t["prompt"] for t in train] == ["Say hi.", "Add 2 and 2."] and held[0]["prompt"] == "Name a color."
    assert train[0]["family"] == "custom" and train[1]["family"] == "arithmetic" and train[1]["answer"] == "4"
    path.write_text('"Say hi."\n{"prompt": 3}\n"x"\n')
    with pytest.raises(DataError, match=r"prompts.jsonl line 2: field 'prompt' is int, expected a string"):
        ppo_config.load_prompts(cfg, world.World(0))
    path.write_text('"Say hi."\n{"prompt": \n"x"\n')
    with pytest.raises(DataError, match=r"prompts.jsonl.*line 2"):
        ppo_config.load_prompts(cfg, world.World(0))
