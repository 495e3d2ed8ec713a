"""benchmarks/phrasing.py: a seed's stage-5 held-out conduct requests, asked in every template of each role and
sampled from its SFT and PPO models, beside the numbers stage 5 wrote."""

import json
import sys

from conftest import benchmark
from labkit import world as W
from labkit.runs import read_json


def test_each_held_out_request_is_asked_in_every_template_of_each_role(explore_run, tmp_path, monkeypatch):
    ph = benchmark("phrasing")
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "seed-0").symlink_to(explore_run)  # the smoke run stands in for seeds.py's seed 0
    out = tmp_path / "phrasing.json"
    monkeypatch.setattr(sys, "argv", ["phrasing.py", "--work", str(tmp_path / "work"), "--seeds", "0",
                                      "--threads", "1", "--out", str(out)])
    ph.main()
    doc = json.loads(out.read_text())
    seed = doc["seeds"]["0"]
    tasks, cfg = ph.requests(explore_run)
    ev = read_json(explore_run / "05_ppo" / "eval.json")
    assert seed["development"] and seed["samples"] == cfg.eval_samples and doc["work"] == str(tmp_path / "work")
    # the phrasings stages 3 and 5 sampled in, as they ran: a phrasing trained in is not held-out
    assert seed["rollout_templates"] == {"preferences": read_json(explore_run / "03_preferences" / "config.json")
                                         ["rollout_templates"], "ppo": cfg.rollout_templates}
    for fam, key in ph.RATES.items():
        assert seed["stage5"][fam] == {"before": ev["before"][key], "after": ev["after"][key]}
        for stage in ("sft", "ppo"):
            for role in ph.ROLES:
                got = seed[stage][fam][role]
                assert got["requests"] == len(tasks[fam]) > 0
                # every template of the role, named by its first request's, and each a rate
                assert list(got["templates"]) == [W.ask_in(tasks[fam][0], role, i)["template"]
                                                  for i in range(len(W.request_templates(tasks[fam][0], role)))]
                assert all(0 <= r <= 100 for r in [got["rate"], *got["templates"].values()])
    # the held-out role is the one template stage 5 asked in
    assert all(list(seed["ppo"][fam]["eval"]["templates"]) == [tasks[fam][0]["template"]] for fam in ph.RATES)


def test_a_held_out_draw_other_than_stage_5s_is_refused(explore_run, tmp_path):
    import shutil

    import pytest

    from labkit.runs import read_jsonl, write_jsonl_atomic
    ph = benchmark("phrasing")
    run = tmp_path / "seed-0"
    for part in ("run.json", "05_ppo/config.json", "05_ppo/eval.json", "05_ppo/samples.jsonl"):
        (run / part).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(explore_run / part, run / part)
    (run / "05_ppo" / "model").symlink_to(explore_run / "05_ppo" / "model")  # read, never written
    ph.requests(run)  # as stage 5 evaluated: read
    rows = read_jsonl(run / "05_ppo" / "samples.jsonl")
    rows[0]["prompt"] += " (asked otherwise)"  # what a change to the world's code since stage 5 would do
    write_jsonl_atomic(run / "05_ppo" / "samples.jsonl", rows)
    with pytest.raises(SystemExit, match="not the one stage 5 evaluated"):
        ph.requests(run)
