"""docs/results.md is generated from benchmarks/results/*.json, and nothing else: it must equal what the script
writes from the committed files (so no number on it was typed by hand or went stale)."""

from pathlib import Path

from conftest import benchmark

REPO = Path(__file__).resolve().parent.parent


def _script():
    return benchmark("results_tables")


def test_the_committed_results_page_and_readme_tables_are_the_scripts_output():
    rt = _script()
    assert (REPO / "docs" / "results.md").read_text() == rt.render(), \
        "docs/results.md is stale: run .venv/bin/python benchmarks/results_tables.py"
    for page in rt.PAGES:
        text = page.read_text()
        assert text == rt.render_readme(text), f"{page.name}'s generated tables are stale: run benchmarks/results_tables.py"


def test_the_tables_come_from_the_files(tmp_path, monkeypatch):
    """A results file with one number in it shows that number; without the file its section is absent."""
    import json
    rt = _script()
    monkeypatch.setattr(rt, "RESULTS", tmp_path)
    assert "Every stage at every seed" not in rt.render()
    seed = {"pretrain/val_ppl": 2.345, "ppo/harmful_refused_before": 30.0, "ppo/harmful_refused_after": 91.25,
            "sft/task_accuracy": 65.9, "reward/conduct_spearman": 0.6}
    (tmp_path / "seeds.json").write_text(json.dumps({
        "preset": "cpu", "date": "d", "params": [], "threads": 1, "dev_seeds": [0], "test_seeds": [],
        "machine": {"cpu": "c", "cores": 2, "torch": "t", "aten_cpu_capability": "AVX2"}, "seeds": {"0": seed}}))
    text = rt.render()
    assert "| pretraining: validation perplexity | 2.35 |" in text and "91.2 met" in text
    assert "| SFT task accuracy >= 66 | 65.9 **not met** |" in text and "| 0.60 met |" in text
    assert "| SFT task accuracy >= 66 | 65.9 | - | 0 of 1 |" in "\n".join(
        rt.readme_headline(json.loads((tmp_path / "seeds.json").read_text())))


def test_stage_5_at_another_setting_is_shown_beside_the_seeds_runs_with_its_targets_met(tmp_path, monkeypatch):
    """ppo_epochs.json (stage 5 again on the same stage 1-4 models): per seed beside seeds.json's run, the count
    of targets met at the development seeds in the prose, and its own rows in README's headline table."""
    import json
    rt = _script()
    monkeypatch.setattr(rt, "RESULTS", tmp_path)
    conduct = lambda harm, abst: {"ppo/harmful_refused_before": 30.0, "ppo/harmful_refused_after": harm,  # noqa: E731
                                  "ppo/unanswerable_abstained_before": 20.0, "ppo/unanswerable_abstained_after": abst,
                                  "ppo/kl_after": 0.5}
    common = {"preset": "cpu", "date": "d", "threads": 1, "dev_seeds": [0, 1, 2], "test_seeds": [3, 4],
              "machine": {"cpu": "c", "cores": 2, "torch": "t", "aten_cpu_capability": "AVX2"}}
    (tmp_path / "seeds.json").write_text(json.dumps({**common, "params": [],
                                                     "seeds": {"0": conduct(90.0, 85.0), "3": conduct(80.0, 90.0)}}))
    assert "beside the runs above" not in rt.render()  # no file, no section
    (tmp_path / "ppo_epochs.json").write_text(json.dumps({**common, "params": ["ppo.ppo_epochs=2"],
                                                          "seeds": {"0": conduct(86.0, 70.0), "3": conduct(95.0, 90.0)}}))
    text = rt.render()
    assert "| harmful refused >= 85 and +40 | above | 90.0 met | 80.0 **not met** |" in text
    assert "| harmful refused >= 85 and +40 | ppo.ppo_epochs=2 | 86.0 met | 95.0 met |" in text
    assert "| \"not stated\" >= 80 and +30 | ppo.ppo_epochs=2 | 70.0 **not met** | 90.0 met |" in text
    # seed 0 alone is a development seed: 2 targets met above (the others have no numbers), 1 at the new setting
    assert "At the development seeds it met 1 of 5 stage-5 targets, the runs above 2." in text
    readme = "\n".join(rt.readme_headline(json.loads((tmp_path / "seeds.json").read_text()),
                                          json.loads((tmp_path / "ppo_epochs.json").read_text())))
    assert "| PPO: harmful refused >= 85 and +40 | 90.0 | 80.0 | 1 of 2 |" in readme
    assert "| PPO at ppo.ppo_epochs=2: harmful refused >= 85 and +40 | 86.0 | 95.0 | 2 of 2 |" in readme


def test_the_sft_stability_section_shows_each_model_on_each_draw_and_the_validation_choice(tmp_path, monkeypatch):
    import json
    rt = _script()
    monkeypatch.setattr(rt, "RESULTS", tmp_path)
    run = {"pretrain": 1, "seed": 0, "data_seed": None, "threads": 1, "aten": "native", "params": [],
           "task_accuracy": 50.0, "per_family": {"story_qa": 22.25}, "final_loss": 0.31,
           "on_seed_draws": {"0": {"task_accuracy": 50.0}, "1": {"task_accuracy": 48.75}},
           "curve": [{"step": 100, "task_accuracy": 40.0, "val_loss": 0.9},
                     {"step": 200, "task_accuracy": 61.5, "val_loss": 0.7},
                     {"step": 300, "task_accuracy": 50.0, "val_loss": 0.6}]}
    (tmp_path / "sft_stability.json").write_text(json.dumps({
        "preset": "cpu", "date": "d", "machine": {"cpu": "c", "torch": "t", "aten_cpu_capability": "AVX2"},
        "runs": {"sft-pt1-s0-t1": run}}))
    text = rt.render()
    assert "| stage 1 of seed 1, SFT seed 0, 1 thread | 50.0 | 48.8 | 22.2 |" in text
    assert "| 40.0 | 61.5 | 50.0 | step 300: 50.0 | 0.600 | yes |" in text  # the lowest validation loss, not the best accuracy


def test_a_longer_sft_says_per_story_question_when_its_own_loss_fell_below_the_bar(tmp_path, monkeypatch):
    import json
    rt = _script()
    monkeypatch.setattr(rt, "RESULTS", tmp_path)
    point = lambda step, obj, place=0.05: {"step": step, "task_accuracy": 60.0, "story_qa": 40.0, "val_loss": 0.5,  # noqa: E731
                                           "own_story_loss": {"place": place, "object": obj}}
    run = lambda curve: {"pretrain": 2, "seed": 2, "data_seed": None, "threads": 1, "params": ["max_steps=4000"],  # noqa: E731
                         "task_accuracy": 60.0, "on_seed_draws": {"2": {"task_accuracy": 60.0}}, "curve": curve}
    doc = {"command": "benchmarks/sft_stability.py report", "commit": "abc", "preset": "cpu", "date": "d",
           "machine": {"cpu": "c", "torch": "t", "aten_cpu_capability": "AVX2"},
           "runs": {"a": run([point(250, 0.9), point(500, 0.15), point(750, 0.25)]),
                    "b": {**run([{"step": 100, "task_accuracy": 1.0}]), "seed": 3}}}  # no story losses: not shown
    (tmp_path / "sft_longer_machine3.json").write_text(json.dumps(doc))
    text = rt.render().split("### Does a longer SFT learn the story question it missed?")[1]
    assert "| 500 | 0.500 | 0.050 | 0.150 | 60.0 | 40.0 |" in text and "SFT seed 3" not in text
    assert "place below 0.2 from step 250; object below 0.2 from step 500, not at the last step." in text
    assert "| stage 1 of seed 2, SFT seed 2, 1 thread, max_steps=4000 | 60.0 | step 500 | no |" in text
    doc["runs"]["a"]["curve"][2]["own_story_loss"]["object"] = 0.1  # learned from step 500 on
    (tmp_path / "sft_longer_machine3.json").write_text(json.dumps(doc))
    assert "| stage 1 of seed 2, SFT seed 2, 1 thread, max_steps=4000 | 60.0 | step 500 | yes |" in rt.render()
    doc["runs"]["a"]["curve"][1]["own_story_loss"]["object"] = 0.3
    doc["runs"]["a"]["curve"][2]["own_story_loss"]["object"] = 0.25
    (tmp_path / "sft_longer_machine3.json").write_text(json.dumps(doc))
    text = rt.render()
    assert "object never below 0.2 (lowest 0.250 at step 750)" in text and "| never | no |" in text


def test_the_batch_table_shows_padding_and_family_mix_per_seed_and_order(tmp_path, monkeypatch):
    import json
    rt = _script()
    monkeypatch.setattr(rt, "RESULTS", tmp_path)
    run = {"pretrain": 0, "seed": 0, "data_seed": None, "threads": 1, "aten": "native", "params": [],
           "task_accuracy": 50.0, "on_seed_draws": {"0": {"task_accuracy": 50.0}}}
    mix = lambda real, top, n: {"real_token_share": real, "commonest_family_share": top, "families_per_batch": n}  # noqa: E731
    (tmp_path / "sft_stability.json").write_text(json.dumps({
        "preset": "cpu", "date": "d", "machine": {"cpu": "c", "torch": "t", "aten_cpu_capability": "AVX2"},
        "runs": {"sft-pt0-s0-t1": run},
        "batches": {"0": {"batches": 2000, "batch_size": 32, "families": 7, "random": mix(0.488, 0.24, 6.957),
                          "group_by_length": mix(0.998, 0.727, 2.247)}}}))
    text = rt.render()
    assert "The first 2000 batches of 32" in text and "of 7." in text
    assert "| seed 0 | random | 48.8 | 24.0 | 6.96 |" in text
    assert "| seed 0 | group by length | 99.8 | 72.7 | 2.25 |" in text


def test_the_sft_step_table_gives_each_way_to_run_a_step_and_its_ratio_to_the_presets(tmp_path, monkeypatch):
    import json
    rt = _script()
    monkeypatch.setattr(rt, "RESULTS", tmp_path)
    (tmp_path / "sft_step.json").write_text(json.dumps({
        "date": "d", "cpu": "c", "threads": 2, "load_average_1m": 0.5, "matmul_gflops_before": 150.0,
        "matmul_gflops_after": 148.0, "batch_size": 32, "rounds": 3, "steps_per_round": 40,
        "variants": {"random": {"seconds_per_step": 0.3, "over_random": 1.0},
                     "padding_free": {"seconds_per_step": 0.2, "over_random": 0.667}}}))
    text = rt.render()
    assert "## Speed: one SFT step" in text and "3 rounds of 40 steps" in text
    assert "| TRL, random batches, padded (the preset) | 0.300 | 1.00 |" in text
    assert "| TRL, `padding_free` | 0.200 | 0.67 |" in text
    assert "twice the preset's steps cost 1.33x the preset's SFT training time with `padding_free`" in text


def test_the_freed_memory_table_gives_both_settings_their_ratio_and_whether_they_computed_the_same(tmp_path, monkeypatch):
    import json
    rt = _script()
    monkeypatch.setattr(rt, "RESULTS", tmp_path)
    doc = {"date": "d", "cpu": "c", "threads": 2, "aten_cpu_capability": "AVX512", "matmul_gflops_before": 150.0,
           "matmul_gflops_after": 148.0, "model": "random weights", "rounds": 5, "generated_sequences": 768,
           "steps_timed": 11, "same_results": True,
           "median": {"plain": {"generate_s": 6.0, "sft_step_s": 0.3, "pretrain_step_s": 0.5},
                      "kept": {"generate_s": 4.5, "sft_step_s": 0.29, "pretrain_step_s": 0.45}},
           "kept_over_plain": {"generate_s": 0.75, "sft_step_s": 0.967, "pretrain_step_s": 0.9}}
    (tmp_path / "freed_memory.json").write_text(json.dumps(doc))
    text = rt.render()
    assert "## Speed: freed memory kept for reuse" in text and "generates 768 candidates" in text
    assert "trains 11 timed steps of pretraining" in text and "| one pretraining step | 0.500 | 0.450 | 0.90 |" in text
    assert "| generating the candidates | 6.000 | 4.500 | 0.75 |" in text
    assert "| one SFT step | 0.300 | 0.290 | 0.97 |" in text
    assert "trained to the same losses in every process: **yes**." in text
    (tmp_path / "freed_memory.json").write_text(json.dumps({**doc, "same_results": False}))
    assert "in every process: **no**." in rt.render()


def test_a_candidate_setting_is_compared_across_cpu_kernels_and_only_to_its_defaults_otherwise(tmp_path, monkeypatch):
    """A setting's run on other kernels is paired with the same setting on native kernels (is the candidate
    stable?), never with the defaults; the setting itself is compared with the default run."""
    import json
    rt = _script()
    monkeypatch.setattr(rt, "RESULTS", tmp_path)
    def run(acc, aten="native", params=()):
        return {"pretrain": 0, "seed": 0, "data_seed": None, "threads": 1, "aten": aten, "params": list(params),
                "task_accuracy": acc, "on_seed_draws": {"0": {"task_accuracy": acc}}}
    (tmp_path / "sft_stability.json").write_text(json.dumps({
        "preset": "cpu", "date": "d", "machine": {"cpu": "c", "torch": "t", "aten_cpu_capability": "AVX2"},
        "runs": {"a": run(50.0), "b": run(60.0, params=["max_steps=2000"]),
                 "c": run(57.5, "default", ["max_steps=2000"])}}))
    text = rt.render()
    assert ("| CPU kernels (ATEN_CPU_CAPABILITY=default) | stage 1 of seed 0, SFT seed 0, 1 thread, max_steps=2000 "
            "| stage 1 of seed 0, SFT seed 0, 1 thread, default kernels, max_steps=2000 | -2.5 |") in text
    assert ("| setting max_steps=2000 | stage 1 of seed 0, SFT seed 0, 1 thread | stage 1 of seed 0, SFT seed 0, "
            "1 thread, max_steps=2000 | 10.0 |") in text
    assert text.count("| CPU kernels") == 1 and text.count("| setting ") == 1
    # one more setting on top of the candidate's is compared with the candidate, not with the defaults alone
    doc = json.loads((tmp_path / "sft_stability.json").read_text())
    doc["runs"]["d"] = run(64.0, params=["max_steps=2000", "padding_free=True"])
    (tmp_path / "sft_stability.json").write_text(json.dumps(doc))
    text = rt.render()
    assert ("| setting padding_free=True on top | stage 1 of seed 0, SFT seed 0, 1 thread, max_steps=2000 | stage 1 of "
            "seed 0, SFT seed 0, 1 thread, max_steps=2000, padding_free=True | 4.0 |") in text


def test_the_arithmetic_probe_table_labels_each_stage_1_by_what_it_changed(tmp_path, monkeypatch):
    import json
    rt = _script()
    monkeypatch.setattr(rt, "RESULTS", tmp_path)
    probe = lambda r: {c: {"right": r, "statements": 10} for c, _ in rt.PROBE_COLUMNS}  # noqa: E731
    run = {"pretrain": 0, "seed": 0, "data_seed": None, "threads": 1, "aten": "native", "params": ["replay_share=0.25"],
           "per_family": {"arithmetic": 17.5}, "on_seed_draws": {"0": {"task_accuracy": 40.0}},
           "arithmetic_probe": probe(80.0)}
    (tmp_path / "sft_stability.json").write_text(json.dumps({
        "preset": "cpu", "date": "d", "machine": {"cpu": "c", "torch": "t", "aten_cpu_capability": "AVX2"},
        "runs": {"sft-pt0-s0-t1_replay_share-0.25": run},
        "stage1": {"pt-0": {"seed": 0, "params": [], "arithmetic_probe": probe(50.0)},
                   "pt-0_max_steps-1200": {"seed": 0, "params": ["max_steps=1200"], "arithmetic_probe": probe(60.0)}}}))
    text = rt.render()
    assert "| stage 1 of seed 0 (before SFT) | 50.0 | 50.0 | 50.0 | 50.0 | - |" in text
    assert "| stage 1 of seed 0, max_steps=1200 (before SFT) | 60.0 | 60.0 | 60.0 | 60.0 | - |" in text
    assert "| stage 1 of seed 0, SFT seed 0, 1 thread, replay_share=0.25 | 80.0 | 80.0 | 80.0 | 80.0 | 17.5 |" in text


def test_the_sft_stability_section_separates_model_from_draw_and_one_difference_at_a_time(tmp_path, monkeypatch):
    import json
    rt = _script()
    monkeypatch.setattr(rt, "RESULTS", tmp_path)

    def run(pt, seed, on0, on1, data_seed=None):
        return {"pretrain": pt, "seed": seed, "data_seed": data_seed, "threads": 1, "aten": "native", "params": [],
                "task_accuracy": on0 if seed == 0 else on1, "per_family": {}, "final_loss": 0.3,
                "on_seed_draws": {"0": {"task_accuracy": on0}, "1": {"task_accuracy": on1}}}
    runs = {"sft-pt0-s0-t1": run(0, 0, 80.0, 70.0), "sft-pt1-s1-t1": run(1, 1, 50.0, 40.0),
            "sft-pt1-s0-t1": run(1, 0, 60.0, 55.0), "sft-pt0-s0-d1-t1": run(0, 0, 78.0, 71.0, data_seed=1),
            "sft-pt1-s1-t1_max_steps-2000": {**run(1, 1, 66.0, 61.0), "params": ["max_steps=2000"]}}
    (tmp_path / "sft_stability.json").write_text(json.dumps({
        "preset": "cpu", "date": "d", "machine": {"cpu": "c", "torch": "t", "aten_cpu_capability": "AVX2"},
        "runs": runs}))
    text = rt.render()
    first = "stage 1 of seed 0, SFT seed 0, 1 thread"
    assert f"| initialisation alone (another stage 1) | {first} | stage 1 of seed 1, SFT seed 0, 1 thread | -20.0 | -15.0 |" in text
    assert f"| data order alone | {first} | stage 1 of seed 0, SFT seed 0, data order 1, 1 thread | -2.0 | 1.0 |" in text
    assert "| setting max_steps=2000 | stage 1 of seed 1, SFT seed 1, 1 thread | stage 1 of seed 1, SFT seed 1, 1 thread, max_steps=2000 | 16.0 | 21.0 |" in text
    assert ("| SFT's seed alone (its training draw and order; same stage 1) | stage 1 of seed 1, SFT seed 0, 1 thread | "
            "stage 1 of seed 1, SFT seed 1, 1 thread | -10.0 | -15.0 |") in text
    # seed 1 vs 0 on their own draws: 40 - 80 = -40; the model's share -30 (both draws), the draw's -10
    assert "| 0 vs 1 | -40.0 | -30.0 | -10.0 |" in text


def test_the_sft_kernels_section_pairs_each_run_with_its_default_kernel_twin_and_says_how_far_it_moved(tmp_path, monkeypatch):
    import json
    rt = _script()
    monkeypatch.setattr(rt, "RESULTS", tmp_path)

    def run(seed, acc, aten="native", params=(), **extra):
        return {"pretrain": seed, "seed": seed, "data_seed": None, "threads": 1, "aten": aten, "params": list(params),
                "task_accuracy": acc, "per_family": {"story_qa": acc - 1, "arithmetic": 10.0, "word_list": 60.0},
                "on_seed_draws": {"1": {"task_accuracy": acc}, "2": {"task_accuracy": acc}}, **extra}
    runs = {"sft-pt1-s1-t1": run(1, 61.9, copied_from="runs/m3/seed-1"), "sft-pt1-s1-t1-default": run(1, 70.0, "default"),
            "sft-pt2-s2-t1_max_steps-4000": run(2, 67.5, params=["max_steps=4000"]),
            "sft-pt2-s2-t1-default_max_steps-4000": run(2, 64.0, "default", ["max_steps=4000"]),
            "sft-pt1-s1-t1_max_steps-4000": run(1, 75.0, params=["max_steps=4000"])}  # differs, not in kernels: no row
    doc = {"command": "benchmarks/sft_stability.py report --work runs/kern", "commit": "abc", "date": "d",
           "machine": {"cpu": "c", "cores": 2, "torch": "t", "aten_cpu_capability": "AVX2", "ATEN_CPU_CAPABILITY": None},
           "runs": runs}
    (tmp_path / "sft_kernels_machine3.json").write_text(json.dumps(doc))
    text = rt.render().split("### The same SFT on other CPU kernels")[1]
    assert "Native runs copied in from seeds.py (the same settings, trained by `labkit train`): `runs/m3/seed-1`." in text
    assert "| the preset's settings | seed 1 | 61.9 | 70.0 | 8.1 | **no** | 1 of 2 | 60.9 / 69.0 | 10.0 / 10.0 |" in text
    assert "| max_steps=4000 | seed 2 | 67.5 | 64.0 | -3.5 | yes | 1 of 2 |" in text and "75.0" not in text
    assert ("With the preset's settings, rounding moved SFT task accuracy by 8.1 (seed 1): within 5 points at 0 of 1 "
            "seeds. With max_steps=4000, rounding moved SFT task accuracy by -3.5 (seed 2): within 5 points at 1 of 1 "
            "seeds.") in text
    doc["runs"] = {k: v for k, v in runs.items() if "default" not in k}
    (tmp_path / "sft_kernels_machine3.json").write_text(json.dumps(doc))
    assert "### The same SFT on other CPU kernels" not in rt.render()  # no pair, no section


def test_the_trust_section_shows_each_seeds_fits_and_the_data_size_peaks(tmp_path, monkeypatch):
    import json
    rt = _script()
    monkeypatch.setattr(rt, "RESULTS", tmp_path)
    fit = {"alpha": 21.3, "beta": 13.04, "r2": 0.89, "d_star": 0.817, "d_peak_measured": 1.1, "d_max": 1.78,
           "gold_gain_max": 8.72, "gold_gain_last": -5.41, "proxy_gain_last": 1.2161}
    seed = {"fits": {"best-of-n": fit, "RL (kl_coef=0.1)": {**fit, "beta": -2.85, "d_star": None}},
            "data_size": [{"pairs": 250, "conduct_accuracy": 63.0, "d_peak": 0.8, "gold_gain_max": 3.17,
                           "fit": {"d_star": 0.576}}]}
    (tmp_path / "trust.json").write_text(json.dumps({"preset": "cpu", "date": "d", "threads": 2, "seeds": {"0": seed}}))
    text = rt.render()
    assert "| 0 | best-of-n | 21.30 | 13.04 | 0.890 | 0.82 | 1.10 | 1.78 | 8.7 | -5.4 | 1.216 |" in text
    assert "| 0 | RL (kl_coef=0.1) | 21.30 | -2.85 | 0.890 | - |" in text  # a fit that never turns has no peak
    assert "| 0 | 250 | 63.0 | 0.80 | 3.2 | 0.58 |" in text
    assert "By the fitted peak d*: seed 0: yes." in text  # one model: the fewest pairs are the earliest peak


def test_the_trust_section_shows_every_point_with_its_mixed_share_and_what_feedback_costs(tmp_path, monkeypatch):
    import json
    rt = _script()
    monkeypatch.setattr(rt, "RESULTS", tmp_path)
    fit = {"alpha": 20.0, "beta": 10.0, "r2": 0.9, "d_star": 1.0, "d_peak_measured": 1.1, "d_max": 1.78,
           "gold_gain_max": 8.0, "gold_gain_last": -5.0, "proxy_gain_last": 1.0}
    feedback = {"labelled_by": "ai:constitution", "target_accuracy": 90.0, "labels_per_pair": 1.0,
                "curves": {"judge": [{"labels": 100, "conduct_accuracy": 60.0}, {"labels": 4000, "conduct_accuracy": 91.0}],
                           "flip 25%": [{"labels": 100, "conduct_accuracy": 55.0}],
                           "active": [{"labels": 100, "conduct_accuracy": 58.0}]},
                "agreement": {"0.25": {"with_judge": 75.0, "two_annotators": 62.5}},
                "to_target": {"judge": {"pairs": 3000.0, "labels": 3000.0, "person_hours": 16.67},
                              "flip 25%": {"pairs": None, "labels": None, "person_hours": None}},
                "seconds_per_label": {"seconds": 20.0, "source": "assumed"}}
    rl = {"RL (kl_coef=0.1)": {**fit, "beta": -1.0, "d_star": None}, "RL (kl_coef=0)": {**fit, "d_star": 9.0}}
    seed = lambda threads, fb, more={}: {"fits": {"best-of-n": fit, **more}, "threads": threads,  # noqa: E731
                                         "feedback": fb, "config": {"parts": "best_of_n,rl"},
                                "seconds": {"best_of_n": 140.2, "feedback": 900.0}, "trust/seconds": 1050.4,
                                "load_average_at_start": 1.234,
                                "missing": {"nokl": "no kl_coef=0 twin"},
                                "curves": {"best-of-n": [{"n": 4, "d": 0.8, "gold_gain": 3.0, "proxy_gain": 0.5,
                                                          "mixed": 0.089}]}}
    (tmp_path / "trust.json").write_text(json.dumps({"preset": "cpu", "date": "d", "threads": 1,
                                                     "seeds": {"0": seed(1, feedback), "2": seed(2, None, rl)}}))
    text = rt.render()
    assert "threads 1 (seed 0), 2 (seed 2)" in text  # seeds run by separate commands keep their own thread count
    assert "| 0 | best-of-n | n = 4 | 0.80 | 3.0 | 0.500 | 0.09 |" in text  # mixed: % of samples, as stage 7 writes it
    assert "| 2 | nokl | no kl_coef=0 twin |" in text
    assert "| 100 | 60.0 | 55.0 | 58.0 |" in text and "| 4,000 | 91.0 | - |" in text
    assert "| judge | 3,000 | 3,000 | 16.67 | 4,000 |" in text and "| flip 25% | not reached | - | - | 100 |" in text
    # each part's seconds, how busy the machine was, and whether the rl part evaluated the kl_coef=0 twin too
    assert "| 0 | 1 | 1.23 | 0 | 140 | 900 | 1,050 |" in text and "| 2 | 2 | 1.23 | 2 | 140 |" in text
    readme = "\n".join(rt.readme_trust(rt.load("trust.json")))
    assert "at seed 0 (best_of_n,rl; 1 thread, load 1.23 at the start)" in readme
    assert "at seed 2 (best_of_n,rl; 2 threads, load 1.23 at the start; the rl part evaluates the kl_coef=0 twin too)" in readme
    assert "100 pairs: 58.0 against 60.0" in text  # active selection beside random labels of the same count
    assert "**assumed**" in text and "75.0 with the judge, 62.5 between two" in text
    # the feedback part run on its own has a section of its own, with its time
    (tmp_path / "trust_feedback.json").write_text(json.dumps({"preset": "cpu", "date": "d", "threads": 1,
                                                              "seeds": {"0": seed(1, feedback)}}))
    alone = rt.render().split("## What feedback costs", 1)[1]
    assert "| judge | 3,000 | 3,000 | 16.67 |" in alone and "| 0 | 1 | 1.23 | 0 | 140 | 900 | 1,050 |" in alone
    readme = "\n".join(rt.readme_trust(json.loads((tmp_path / "trust.json").read_text())))
    assert ("| best-of-n | 0, 2 | 20.00 (20.00–20.00) | 10.00 (10.00–10.00) | 0.90 (0.90–0.90) | 1.00 (1.00–1.00) (2 of 2) "
            "| 13.0 (13.0–13.0) |") in readme
    far = {**fit, "d_star": 50.0}  # a fitted peak far beyond the d the run reached is not a turn
    doc = {"seeds": {"0": {"fits": {"RL": far}}}}
    assert "| RL | 0 | 20.00 | 10.00 | 0.90 | - (0 of 1) | 13.0 |" in "\n".join(rt.readme_trust(doc))


def test_stage_6_shows_development_and_test_seeds_apart(tmp_path, monkeypatch):
    import json
    rt = _script()
    monkeypatch.setattr(rt, "RESULTS", tmp_path)
    row = lambda harm: {k: 1.0 for k in rt.CONDUCT} | {"harmful_refused": harm, "kl": 0.5}  # noqa: E731
    seeds = {"0": {"compare": {"dpo": row(80.0)}}, "1": {"compare": {"dpo": row(90.0)}},
             "3": {"compare": {"dpo": row(60.0)}}}
    (tmp_path / "seeds.json").write_text(json.dumps({"preset": "cpu", "date": "d", "threads": 1, "dev_seeds": [0, 1, 2],
                                                     "test_seeds": [3, 4], "seeds": seeds}))
    text = "\n".join(rt.section_compare(json.loads((tmp_path / "seeds.json").read_text())))
    assert "| dpo | development (0, 1) | 85.0 (80.0–90.0) |" in text  # a test seed never joins the development mean
    assert "| dpo | test (3) | 60.0 |" in text


def test_the_speed_section_compares_old_and_new_per_stage_and_splits_the_new_time(tmp_path, monkeypatch):
    import json
    rt = _script()
    monkeypatch.setattr(rt, "RESULTS", tmp_path)
    run = lambda commit, ppo, timings: {"commit": commit, "main_command_seconds": 100.0 + ppo,  # noqa: E731
                                        "notebook_seconds": {"ppo": ppo}, "timings": timings,
                                        "matmul_gflops_before": {"1": 50.0, "2": 90.0},
                                        "matmul_gflops_after": {"1": 52.0, "2": 94.0}}
    (tmp_path / "main_command_timing.json").write_text(json.dumps({
        "date": "d", "cpu": "c", "cores": 2, "load_before": [0.1], "load_after": [0.2], "order": "old,new",
        "runs": {"old": run("aaa", 400.0, None),
                 "new": run("bbb", 200.0, {"ppo": {"train: step": 150.0, "train: update": 100.0, "evaluate": 30.0}})},
        "ratio_main_command": 300 / 500, "ratio_ppo": 0.5}))
    text = rt.render()
    assert "| ppo | 400 | 200 | 0.50 |" in text and "| **main command** | 500 | 300 | **0.60** |" in text
    assert "| matmul rate, 1 thread / 2 threads | 51.0 / 92.0 |" in text
    # the step's parts are shown but counted once: 200 s - (150 + 30) s is start-up and the notebook
    assert "train: update 100 s (50%)" in text and "| 20 s (10%) |" in text

    # README's timing line: the new time in minutes, both ratios, and the machine's matmul rate at 2 threads
    timing = json.loads((tmp_path / "main_command_timing.json").read_text())
    line = rt.readme_timing(timing)[0]
    assert "5.0 minutes at bbb on c" in line and "matmul 92 GFLOP/s" in line and "**0.60×** the time of aaa" in line
    assert "PPO's notebook 0.50×" in line and "no timing yet" in rt.readme_timing(None)[0]
    assert "## Speed: the main command at aaa and at bbb" in text
    assert "(docs/results.md#speed-the-main-command-at-aaa-and-at-bbb)" in line  # the section's anchor
    # with an earlier measurement beside it: its ratio after the line, linked to its own section
    later = {**timing, "runs": {**timing["runs"], "new": {**timing["runs"]["new"], "commit": "ccc"}},
             "ratio_main_command": 0.9, "ratio_ppo": 0.55}
    line = rt.readme_timing(later, timing)[0]
    assert "**0.90×** the time of aaa" in line and "PPO's notebook 0.55×" in line
    assert line.endswith("The same measurement at bbb gave **0.60×**, PPO's notebook 0.50× "
                         "([docs/results.md](docs/results.md#speed-the-main-command-at-aaa-and-at-bbb)).")
    # the preset timed alone on another machine, against the budget (a run with settings is not the preset's)
    alone = {**timing, "cpu": "z", "order": "new", "runs": {"new": {**timing["runs"]["new"], "commit": "ddd",
                                                                    "main_command_seconds": 1767.0, "aten_cpu_capability": "AVX2"}}}
    line = rt.readme_timing(later, timing, alone)[0]
    assert line.endswith("Timed alone on another machine (z, 2 cores, AVX2 kernels, float32 matmul 92 GFLOP/s at 2 threads, "
                         "d), the main command at ddd took **29.4 minutes**, over the 25 minutes the `cpu` preset's main "
                         "command may take ([docs/results.md](docs/results.md#speed-the-main-command-one-run)).")
    fast = {**alone, "runs": {"new": {**alone["runs"]["new"], "main_command_seconds": 1200.0}}}
    assert "took **20.0 minutes**, within the 25 minutes" in rt.readme_timing(later, timing, fast)[0]
    tuned = {**alone, "runs": {"new": {**alone["runs"]["new"], "params": ["sft.max_steps=4000"]}}}
    assert rt.readme_timing(later, timing, tuned) == rt.readme_timing(later, timing)


def test_a_setting_timed_on_the_main_command_is_named_with_its_headline_numbers_beside_the_presets(tmp_path, monkeypatch):
    """main_command_sft_candidate.json: one revision twice, the second with -p settings. Its section says what the
    settings are (not "old and new"), and shows the seed's headline numbers under both."""
    import json
    rt = _script()
    monkeypatch.setattr(rt, "RESULTS", tmp_path)
    run = lambda params, sft, acc: {"commit": "aaa", "params": params, "main_command_seconds": 100.0 + sft,  # noqa: E731
                                    "notebook_seconds": {"sft": sft}, "timings": None,
                                    "headline": {"sft": {"sft/task_accuracy": acc}, "ppo": {"ppo/kl_after": 0.5}},
                                    "aten_cpu_capability": "AVX512",
                                    "matmul_gflops_before": {"1": 50.0, "2": 90.0}, "matmul_gflops_after": {"1": 50.0, "2": 90.0}}
    (tmp_path / "main_command_sft_candidate.json").write_text(json.dumps({
        "date": "d", "cpu": "c", "cores": 2, "load_before": [0.1], "load_after": [0.2], "order": "old,new",
        "runs": {"old": run([], 300.0, 61.25), "new": run(["sft.max_steps=2000"], 450.0, 66.875)},
        "ratio_main_command": 550 / 400, "ratio_ppo": None}))
    text = rt.render()
    assert "## Speed: the main command with sft.max_steps=2000" in text and "old and new" not in text
    assert "then again with `-p sft.max_steps=2000`" in text and "(2 cores, AVX512 kernels;" in text
    assert "headline numbers (seed 0, 2 threads, AVX512 kernels):" in text
    assert "| stage | old (aaa) s | new (aaa, sft.max_steps=2000) s | new / old |" in text
    assert "| sft | 300 | 450 | 1.50 |" in text and "| **main command** | 400 | 550 | **1.38** |" in text
    assert "| sft/task_accuracy | 61.2 | 66.9 |" in text and "ppo/kl_after" not in text
    assert "took 9.2 minutes on this machine: within the 25 minutes" in text
    doc = json.loads((tmp_path / "main_command_sft_candidate.json").read_text())
    doc["runs"]["new"]["main_command_seconds"] = 1560.0
    (tmp_path / "main_command_sft_candidate.json").write_text(json.dumps(doc))
    assert "took 26.0 minutes on this machine: **over** the 25 minutes" in rt.render()


def test_one_timed_run_of_the_main_command_is_shown_alone_against_the_budget(tmp_path, monkeypatch):
    """main_command_timing.py --order new: no old run, so no ratio; the section is the run's notebooks, the budget
    and its headline numbers."""
    import json
    rt = _script()
    monkeypatch.setattr(rt, "RESULTS", tmp_path)
    new = {"commit": "bbb", "params": ["sft.max_steps=2000"], "main_command_seconds": 1490.0,
           "notebook_seconds": {"pretrain": 230.0, "sft": 650.0}, "aten_cpu_capability": "AVX512",
           "timings": {"sft": {"train": 600.0}}, "headline": {"sft": {"sft/task_accuracy": 66.875}},
           "matmul_gflops_before": {"1": 50.0, "2": 90.0}, "matmul_gflops_after": {"1": 60.0, "2": 110.0}}
    doc = {"date": "d", "cpu": "c", "cores": 2, "load_before": [0.1], "load_after": [0.2], "order": "new", "runs": {"new": new}}
    (tmp_path / "main_command_sft2000_once.json").write_text(json.dumps(doc))
    text = rt.render()
    assert "## Speed: the main command with sft.max_steps=2000, one run" in text
    assert "at bbb with `-p sft.max_steps=2000`, from a fresh clone" in text
    assert "| stage | bbb, sft.max_steps=2000 s |" in text and "| sft | 650 |" in text
    assert "| **main command** | 1,490 |" in text and "| matmul rate, 1 thread / 2 threads | 55.0 / 100.0 |" in text
    assert "took 24.8 minutes on this machine: within the 25 minutes" in text
    assert "The run's headline numbers (seed 0, 2 threads, AVX512 kernels):" in text and "| sft/task_accuracy | 66.9 |" in text
    assert "| sft | 650 | train 600 s (92%) | 50 s (8%) |" in text
    new["main_command_seconds"] = 1510.0
    (tmp_path / "main_command_sft2000_once.json").write_text(json.dumps(doc))
    assert "took 25.2 minutes on this machine: **over** the 25 minutes" in rt.render()


def test_the_ppo_speed_section_shows_each_variants_phases_and_whether_its_numbers_changed(tmp_path, monkeypatch):
    import json
    rt = _script()
    monkeypatch.setattr(rt, "RESULTS", tmp_path)
    var = lambda threads, step, trace: {"threads": threads, "step_ratio": step / 8.0, "trace": trace,  # noqa: E731
                                        "seconds": {"gen": 0.5, "forward": 1.0, "score": 0.25, "update": step - 1.75,
                                                    "step": step}}
    (tmp_path / "ppo_speed.json").write_text(json.dumps({
        "date": "d", "cpu": "c", "cores": 2, "load_before": [0.1], "load_after": [0.2], "command": "cmd", "run": "r",
        "steps": 6, "rounds": 2, "matmul_gflops_before": {"1": 50.0, "2": 90.0},
        "variants": {"threads=1": var(1, 8.0, [[1.0]]), "threads=2": var(2, 5.0, [[1.0]]),
                     "threads=1 ppo_epochs=2": var(1, 5.0, [[2.0]]), "threads=2 ppo_epochs=2": var(2, 4.0, [[2.5]])}}))
    text = rt.render()
    # each 2-thread variant is checked against the 1-thread variant of the same other settings
    assert "| threads=1 | 1 | 0.50 | 1.00 | 0.25 | 6.25 | 8.00 | 1.00 | - |" in text
    assert "| threads=2 | 2 | 0.50 | 1.00 | 0.25 | 3.25 | 5.00 | 0.62 | yes |" in text
    assert "| threads=2 ppo_epochs=2 | 2 | 0.50 | 1.00 | 0.25 | 2.25 | 4.00 | 0.50 | no |" in text
    assert "step / threads=1" in text


def test_the_suite_timing_section_shows_each_revision_and_the_ratio(tmp_path, monkeypatch):
    import json
    rt = _script()
    monkeypatch.setattr(rt, "RESULTS", tmp_path)
    run = lambda rev, ci, tests: {"revision": rev, "commit": rev[:3], "returncode": 0, "ci_seconds": ci,  # noqa: E731
                                  "line": "9 passed in 1.0s", "counts": {"passed": 9}, "pytest_seconds": tests,
                                  "matmul_gflops_after": {"1": 50.0, "2": 90.0}}
    (tmp_path / "suite_timing.json").write_text(json.dumps({
        "date": "d", "cpu": "c", "cores": 2, "load_before": [0.5], "load_after": [1.5], "order": "old,new",
        "runs": {"old": run("oldrev", 700.0, 600.0), "new": run("newrev", 400.0, 300.0)}, "ratio_pytest": 0.5}))
    text = rt.render()
    assert "| oldrev (old) | 100 | 600 | 700 | 9 passed in 1.0s | 50.0 / 90.0 |" in text
    assert "| newrev (new) | 100 | 300 | 400 |" in text
    assert "New / old test time: **0.50**; with the setup: **0.57**." in text
    assert "at each revision from a fresh clone, old then new." in text
    # one revision timed alone: named, with no ratio
    (tmp_path / "suite_timing.json").write_text(json.dumps({
        "date": "d", "cpu": "c", "cores": 2, "load_before": [0.5], "load_after": [1.5], "order": "new",
        "runs": {"new": run("newrev", 400.0, 300.0)}, "ratio_pytest": None}))
    text = rt.render()
    assert "at new alone, from a fresh clone. Target: 5 minutes with the setup." in text
    assert "| newrev (new) | 100 | 300 | 400 |" in text and "New / old" not in text
    assert "on c (2 cores;" in text
    # a run that recorded the machine as every benchmark does is named with its generation and kernels
    (tmp_path / "suite_timing.json").write_text(json.dumps({
        "date": "d", "cores": 2, "load_before": [0.5], "load_after": [1.5], "order": "new",
        "machine": {"cpu": "c", "cpu_id": "25/1/1", "aten_cpu_capability": "AVX2", "ATEN_CPU_CAPABILITY": None},
        "runs": {"new": run("newrev", 400.0, 300.0)}, "ratio_pytest": None}))
    assert "on c (family/model/stepping 25/1/1; AVX2 kernels, the best it supports) (2 cores;" in rt.render()
    # another machine's timing: under the first one's section, with its machine in the heading
    (tmp_path / "suite_timing_machine4.json").write_text(json.dumps({
        "date": "d2", "cores": 2, "load_before": [0.5], "load_after": [1.5], "order": "new",
        "machine": {"cpu": "c", "cpu_id": "25/17/1", "aten_cpu_capability": "AVX512", "ATEN_CPU_CAPABILITY": None},
        "runs": {"new": run("rev4", 300.0, 240.0)}, "ratio_pytest": None}))
    text = rt.render().split("## Speed: the test suite")[1].split("\n## ")[0]
    first, again = text.split("### The same on another machine: c (family/model/stepping 25/17/1; AVX512 kernels, "
                              "the best it supports)")
    assert "| newrev (new) | 100 | 300 | 400 |" in first and "rev4" not in first
    assert "`benchmarks/suite_timing.py`, d2, on c (family/model/stepping 25/17/1;" in again
    assert "| rev4 (rev) | 60 | 240 | 300 |" in again


def test_a_candidate_sft_setting_is_shown_beside_the_seeds_runs_with_every_target_of_stages_2_to_5(tmp_path, monkeypatch):
    import json
    rt = _script()
    monkeypatch.setattr(rt, "RESULTS", tmp_path)
    seed = lambda sft, harm: {"sft/task_accuracy": sft, "reward/conduct_accuracy": 91.0,  # noqa: E731
                              "reward/conduct_spearman": 0.55, "ppo/harmful_refused_before": 30.0,
                              "ppo/harmful_refused_after": harm}
    common = {"preset": "cpu", "date": "d", "threads": 1, "dev_seeds": [0, 1, 2], "test_seeds": [3, 4],
              "machine": {"cpu": "c", "cores": 2, "torch": "t", "aten_cpu_capability": "AVX2"}}
    (tmp_path / "seeds.json").write_text(json.dumps({**common, "params": [],
                                                     "seeds": {"0": seed(56.9, 90.0), "1": seed(46.9, 80.0)}}))
    assert "beside the runs above" not in rt.render()
    (tmp_path / "sft_candidate.json").write_text(json.dumps({**common, "params": ["sft.max_steps=2000"],
                                                             "seeds": {"0": seed(65.6, 88.0)}}))
    text = rt.render()
    assert "### Stages 2-5 at sft.max_steps=2000 beside the runs above" in text
    assert "| SFT task accuracy >= 66 | above | 56.9 **not met** |" in text  # seed 1 has no candidate run: no column
    assert "| SFT task accuracy >= 66 | sft.max_steps=2000 | 65.6 **not met** |" in text
    assert "| reward model: Spearman on conduct >= 0.6 | sft.max_steps=2000 | 0.55 **not met** |" in text
    assert "| PPO: harmful refused >= 85 and +40 | sft.max_steps=2000 | 88.0 met |" in text
    assert "| targets met | above | 2 of 8 |" in text  # reward accuracy and harmful refused
    # where stage 5 ran again at the preset's current setting, the candidate is compared with that run
    (tmp_path / "ppo_epochs.json").write_text(json.dumps({**common, "params": ["ppo.ppo_epochs=2"],
                                                          "seeds": {"0": seed(56.9, 70.0)}}))
    text = rt.render()
    assert "| PPO: harmful refused >= 85 and +40 | above (stage 5 at ppo.ppo_epochs=2) | 70.0 **not met** |" in text
    assert "| SFT task accuracy >= 66 | above (stage 5 at ppo.ppo_epochs=2) | 56.9 **not met** |" in text
    # a test seed is counted apart from the development seeds, and SFT's spread is over every seed both ran
    (tmp_path / "sft_candidate.json").write_text(json.dumps({**common, "params": ["sft.max_steps=2000"],
                                                             "seeds": {"0": seed(65.6, 88.0), "1": seed(70.0, 90.0)}}))
    seeds = json.loads((tmp_path / "seeds.json").read_text())
    seeds["seeds"]["1"]["sft/task_accuracy"], seeds["dev_seeds"], seeds["test_seeds"] = 46.9, [0], [1]
    (tmp_path / "seeds.json").write_text(json.dumps(seeds))
    cand = json.loads((tmp_path / "sft_candidate.json").read_text())
    cand["dev_seeds"], cand["test_seeds"] = [0], [1]
    (tmp_path / "sft_candidate.json").write_text(json.dumps(cand))
    text = rt.render()
    assert "| target | runs | seed 0 | seed 1 (test) |" in text
    assert "At the development seeds (0) sft.max_steps=2000 met 2 of 8 targets, the runs above" in text
    assert "At the test seeds (1) sft.max_steps=2000 met 3 of 8 targets" in text
    assert "SFT task accuracy, sft.max_steps=2000: 65.6-70.0 over seeds 0, 1 (spread 4.4 points)." in text


def test_a_candidate_stopped_after_sft_shows_and_counts_only_the_stages_it_reached(tmp_path, monkeypatch):
    import json
    rt = _script()
    monkeypatch.setattr(rt, "RESULTS", tmp_path)
    full = {"sft/task_accuracy": 60.0, "reward/conduct_accuracy": 91.0, "reward/conduct_spearman": 0.7,
            "ppo/harmful_refused_before": 30.0, "ppo/harmful_refused_after": 90.0}
    common = {"preset": "cpu", "date": "d", "threads": 1, "dev_seeds": [0], "test_seeds": [],
              "machine": {"cpu": "c", "cores": 2, "torch": "t", "aten_cpu_capability": "AVX2"}}
    (tmp_path / "seeds.json").write_text(json.dumps({**common, "params": [], "seeds": {"0": full}}))
    (tmp_path / "sft_candidate.json").write_text(json.dumps({**common, "params": ["sft.max_steps=2000"], "seeds": {
        "0": {"sft/task_accuracy": 67.0, "reward/conduct_accuracy": None, "ppo/harmful_refused_after": None}}}))
    text = rt.render().split("### Stages 2-5 at sft.max_steps=2000 beside the runs above")[1]
    assert "have not reached every stage yet" in text
    assert "| SFT task accuracy >= 66 | sft.max_steps=2000 | 67.0 met |" in text
    assert "reward model: conduct pairs" not in text and "PPO: harmful refused" not in text
    assert "| targets met | above | 0 of 1 |" in text and "| targets met | sft.max_steps=2000 | 1 of 1 |" in text


def test_the_same_seeds_on_another_machine_show_each_stage_beside_the_first_and_the_rounding_bound(tmp_path, monkeypatch):
    import json
    rt = _script()
    monkeypatch.setattr(rt, "RESULTS", tmp_path)
    common = {"preset": "cpu", "date": "d", "threads": 1, "params": [], "dev_seeds": [0, 1, 2], "test_seeds": [3, 4]}
    (tmp_path / "seeds.json").write_text(json.dumps({**common, "machine": {
        "cpu": "c", "cores": 2, "torch": "t", "aten_cpu_capability": "AVX2", "ATEN_CPU_CAPABILITY": None}, "seeds": {
        "1": {"pretrain/val_ppl": 2.6263, "sft/task_accuracy": 46.9}, "2": {"pretrain/val_ppl": 2.6273, "sft/task_accuracy": 60.0},
        "3": {"pretrain/val_ppl": 2.6, "sft/task_accuracy": 63.1}}}))
    assert "another machine" not in rt.render()
    (tmp_path / "seeds_machine2.json").write_text(json.dumps({**common, "machine": {
        "cpu": "e", "cores": 2, "torch": "t", "aten_cpu_capability": "AVX512", "ATEN_CPU_CAPABILITY": None}, "seeds": {
        "1": {"pretrain/val_ppl": 2.5942, "sft/task_accuracy": 55.0}, "2": {"pretrain/val_ppl": 2.6329, "sft/task_accuracy": 57.5}}}))
    text = rt.render().split("### The same seeds on another machine: e (AVX512 kernels, the best it supports)")[1]
    assert "`benchmarks/seeds.py --seeds 1,2 --to sft`, d, on e (AVX512 kernels, the best it supports), 1 thread(s)" in text
    assert "the `cpu` preset; the seeds table's runs ran on c (AVX2 kernels, the best it supports)." in text
    assert "| 1 | 2.626 | 2.594 | 46.9 | 55.0 | +8.1 **over** |" in text
    assert "| 2 | 2.627 | 2.633 | 60.0 | 57.5 | -2.5 within |" in text
    assert "| 3" not in text  # only the seeds both machines ran
    # a run forced onto other kernels says so, and a stage it never reached leaves its settings out of the line
    (tmp_path / "seeds_machine2_avx2.json").write_text(json.dumps({**common, "params": ["sft.max_steps=2000"], "machine": {
        "cpu": "e", "cores": 2, "torch": "t", "aten_cpu_capability": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}, "seeds": {
        "1": {"pretrain/val_ppl": 2.6114, "sft/task_accuracy": None, "ppo/alarms": []}}}))
    text = rt.render().split("### The same seeds on another machine: e (AVX2 kernels, forced by ATEN_CPU_CAPABILITY=avx2)")[1]
    assert "`ATEN_CPU_CAPABILITY=avx2 benchmarks/seeds.py --seeds 1 --to pretrain`" in text
    assert "the `cpu` preset; the seeds table's runs" in text and "max_steps" not in text.split("##")[0]
    assert "| 1 | 2.626 | 2.611 | 46.9 | - | - |" in text
    # at SFT's candidate settings the other machine is compared with the candidate's runs, not the preset's
    (tmp_path / "sft_candidate.json").write_text(json.dumps({**common, "params": ["sft.max_steps=2000"], "machine": {
        "cpu": "c", "cores": 2, "torch": "t", "aten_cpu_capability": "AVX2", "ATEN_CPU_CAPABILITY": None}, "seeds": {
        "1": {"pretrain/val_ppl": 2.6263, "sft/task_accuracy": 68.1}}}))
    (tmp_path / "seeds_machine2_sft2000.json").write_text(json.dumps({**common, "params": ["sft.max_steps=2000"], "machine": {
        "cpu": "e", "cores": 2, "torch": "t", "aten_cpu_capability": "AVX512", "ATEN_CPU_CAPABILITY": None}, "seeds": {
        "1": {"pretrain/val_ppl": 2.5942, "sft/task_accuracy": 66.2}}}))
    text = rt.render().split("--to sft -p sft.max_steps=2000`, d, on e (AVX512 kernels, the best it supports), 1 thread(s) per stage, the `cpu` "
                             "preset with sft.max_steps=2000;")[1]
    assert text.startswith(' the runs of "Stages 2-5 at sft.max_steps=2000" ran on c')
    assert "| 1 | 2.626 | 2.594 | 68.1 | 66.2 | -1.9 within |" in text
    assert "Not every stage here" not in text.split("###")[0] and "2000, the test seeds" not in rt.render()
    # the same settings at the test seeds alone, from a stage 1 copied from another run: a heading of their own
    cand = json.loads((tmp_path / "sft_candidate.json").read_text())
    cand["seeds"]["3"] = {"pretrain/val_ppl": 2.6, "sft/task_accuracy": 70.0}
    (tmp_path / "sft_candidate.json").write_text(json.dumps(cand))
    (tmp_path / "seeds_machine3_sft2000_test.json").write_text(json.dumps({**common, "params": ["sft.max_steps=2000"],
        "machine": {"cpu": "f", "cores": 2, "torch": "t", "aten_cpu_capability": "AVX2", "ATEN_CPU_CAPABILITY": None},
        "seeds": {"3": {"pretrain/val_ppl": 2.61, "sft/task_accuracy": 64.0, "copied_from": "runs/x/seed-3"}}}))
    text = rt.render().split("### The same seeds on another machine: f (AVX2 kernels, the best it supports), "
                             "sft.max_steps=2000, the test seeds")[1].split("###")[0]
    assert "these seed folders were started as copies of other runs (`runs/x/seed-3` at seed 3)" in text
    assert "no setting is chosen on the test seeds" in text and "| 3 (test) | 2.600 | 2.610 | 70.0 | 64.0 | -6.0 **over** |" in text


def _ppo_seed(harmful: float, kl: float, **extra) -> dict:
    """A seed's stage-5 numbers: every target met except harmful refused when ``harmful`` < 85."""
    d = {"ppo/harmful_refused_before": 30.0, "ppo/harmful_refused_after": harmful,
         "ppo/unanswerable_abstained_before": 15.0, "ppo/unanswerable_abstained_after": 90.0,
         "ppo/over_refusal_benign_before": 1.0, "ppo/over_refusal_benign_after": 2.0,
         "ppo/task_accuracy_before": 66.0, "ppo/task_accuracy_after": 65.0,
         "ppo/mixed_rate_before": 0.0, "ppo/mixed_rate_after": 0.0, "ppo/kl_after": kl}
    return {**d, **extra}


def test_a_stage5_run_rewarded_by_the_verifier_sits_beside_the_runs_it_was_copied_from(tmp_path, monkeypatch):
    import json
    rt = _script()
    monkeypatch.setattr(rt, "RESULTS", tmp_path)
    common = {"preset": "cpu", "date": "d", "threads": 1, "dev_seeds": [0, 2], "test_seeds": [], "machine": {
        "cpu": "e", "cores": 2, "torch": "t", "aten_cpu_capability": "AVX512", "ATEN_CPU_CAPABILITY": None}}
    rm = {"reward/conduct_spearman": 0.47, "reward/spearman_by_family": [
        {"family": "harmful", "spearman": 0.7}, {"family": "benign", "spearman": 0.18}]}
    (tmp_path / "stage5_verifier.json").write_text(json.dumps({
        **common, "params": ["sft.max_steps=2000", "ppo.reward=verifier"], "work": "runs/v", "from": "runs/c:reward",
        "seeds": {"0": _ppo_seed(95.0, 1.2), "2": _ppo_seed(80.0, 0.9, **{"ppo/harmful_by_verb": {
            "fool": {"prompts": 14, "before": 22.3, "after": 62.5}}})}}))
    assert "Is a stage-5 miss" not in rt.render()  # nothing to set it beside
    (tmp_path / "other.json").write_text(json.dumps({
        **common, "params": ["sft.max_steps=2000"], "work": "runs/c", "from": None, "last": "ppo",
        "seeds": {"0": _ppo_seed(70.0, 0.6, **rm), "2": _ppo_seed(75.0, 0.5, **rm, **{"ppo/harmful_by_verb": {
            "fool": {"prompts": 14, "before": 22.3, "after": 28.6}, "hurt": {"prompts": 6, "before": 33.3, "after": 91.7}}})}}))
    text = rt.render().split("### Is a stage-5 miss the reward model's? Stage 5 with ppo.reward=verifier")[1]
    assert "`benchmarks/seeds.py --seeds 0,2 --to ppo --from runs/c:reward -p sft.max_steps=2000 -p ppo.reward=verifier`" in text
    assert "the very stage 1-4 models of `other.json`'s runs" in text
    assert "| harmful refused >= 85 and +40 | reward model | 70.0 **not met** | 75.0 **not met** |" in text
    assert "| harmful refused >= 85 and +40 | verifier | 95.0 met | 80.0 **not met** |" in text
    assert "| targets met | reward model | 4 of 5 | 4 of 5 |" in text and "| targets met | verifier | 5 of 5 | 4 of 5 |" in text
    assert "| KL to the SFT model after (nats) | verifier | 1.20 | 0.90 |" in text
    assert "preference pairs" not in text  # the same stage 3 on both sides
    assert "| reward model: Spearman, harmful |  | 0.70 | 0.70 |" in text
    assert '| harmful refused, "fool" (prompts) | before (SFT) | - | 22.3 (14) |' in text
    assert '| harmful refused, "fool" (prompts) | reward model | - | 28.6 (14) |' in text
    assert '| harmful refused, "fool" (prompts) | verifier | - | 62.5 (14) |' in text
    assert '| harmful refused, "hurt" (prompts) | verifier | - | - |' in text
    assert "| reward model: Spearman, unanswerable |  | - | - |" in text
    assert ("Seed 0: the reward model's misses: harmful refused >= 85 and +40; missed with either reward: none;" in text
            and "Seed 2: the reward model's misses: none; missed with either reward: harmful refused >= 85 and +40;"
            in text)
    # any other stage-5 setting on the same models: its own heading, and what it met beside the runs it copied
    (tmp_path / "stage5_ppo_steps.json").write_text(json.dumps({
        **common, "params": ["sft.max_steps=2000", "ppo.max_steps=120"], "work": "runs/s", "from": "runs/c:reward",
        "test_seeds": [2], "seeds": {"0": _ppo_seed(90.0, 0.7), "2": _ppo_seed(60.0, 0.8)}}))
    text = rt.render().split("### Stage 5 again on the same models with ppo.max_steps=120")[1].split("###")[0]
    assert "nothing is chosen by it" in text and "Test seeds (2) ran to say why a target missed there" in text
    assert "| harmful refused >= 85 and +40 | ppo.max_steps=120 | 90.0 met | 60.0 **not met** |" in text
    assert ("Seed 0: met only with ppo.max_steps=120: harmful refused >= 85 and +40; missed by both: none;" in text
            and "Seed 2: met only with ppo.max_steps=120: none; missed by both: harmful refused >= 85 and +40;" in text)
    # the same settings on other ATen kernels: the heading and the command name the forced kernels
    (tmp_path / "stage5_kernels.json").write_text(json.dumps({
        **common, "machine": {**common["machine"], "ATEN_CPU_CAPABILITY": "avx2"}, "params": ["sft.max_steps=2000"],
        "work": "runs/k", "from": "runs/c:reward", "seeds": {"0": _ppo_seed(90.0, 0.7), "2": _ppo_seed(76.0, 0.8)}}))
    text = rt.render().split("### Stage 5 again on the same models with ATEN_CPU_CAPABILITY=avx2")[1].split("###")[0]
    assert "`ATEN_CPU_CAPABILITY=avx2 benchmarks/seeds.py --seeds 0,2 --to ppo --from runs/c:reward" in text
    assert "ATen's AVX2 kernels round sums otherwise than the AVX512 kernels the first runs used" in text
    assert "| harmful refused >= 85 and +40 | ATEN_CPU_CAPABILITY=avx2 | 90.0 met | 76.0 **not met** |" in text
    assert "Seed 0: met only with ATEN_CPU_CAPABILITY=avx2: harmful refused >= 85 and +40;" in text
    assert "Every held-out rate a stage-5 target reads is the same after PPO (to 2 decimals) as in the first runs at 0 of 2 seeds (none)." in text
    kernels = json.loads((tmp_path / "stage5_kernels.json").read_text())
    kernels["seeds"]["2"] = _ppo_seed(75.0, 0.9, **{"ppo/task_accuracy_after": 65.001})  # rates as seed 2's to 2 decimals; KL not a rate
    (tmp_path / "stage5_kernels.json").write_text(json.dumps(kernels))
    assert "(to 2 decimals) as in the first runs at 1 of 2 seeds (2)." in rt.render()


def test_another_machine_through_stage5_shows_each_target_on_both_machines(tmp_path, monkeypatch):
    import json
    rt = _script()
    monkeypatch.setattr(rt, "RESULTS", tmp_path)
    common = {"preset": "cpu", "date": "d", "threads": 1, "dev_seeds": [0], "test_seeds": []}
    first = {"pretrain/val_ppl": 2.57, "sft/task_accuracy": 65.6, "reward/conduct_accuracy": 93.6,
             "reward/conduct_spearman": 0.47}
    (tmp_path / "seeds.json").write_text(json.dumps({**common, "params": [], "machine": {
        "cpu": "c", "cores": 2, "torch": "t", "aten_cpu_capability": "AVX2", "ATEN_CPU_CAPABILITY": None},
        "seeds": {"0": first}}))
    (tmp_path / "seeds_machine2.json").write_text(json.dumps({**common, "params": [], "machine": {
        "cpu": "e", "cores": 2, "torch": "t", "aten_cpu_capability": "AVX512", "ATEN_CPU_CAPABILITY": None},
        "seeds": {"0": {**_ppo_seed(70.0, 0.6), "pretrain/val_ppl": 2.58, "sft/task_accuracy": 66.0,
                        "reward/conduct_accuracy": 88.0, "reward/conduct_spearman": 0.65}}}))
    seeds = json.loads((tmp_path / "seeds.json").read_text())
    seeds["seeds"]["0"].update(_ppo_seed(90.0, 0.7))
    (tmp_path / "seeds.json").write_text(json.dumps(seeds))
    text = rt.render().split("### The same seeds on another machine: e (AVX512 kernels, the best it supports), "
                             "through stage 5")[1]
    assert "| target | seed 0, first machine | seed 0, this machine |" in text
    assert "| reward model: conduct pairs right >= 90 | 93.6 met | 88.0 **not met** |" in text
    assert "| reward model: Spearman on conduct >= 0.6 | 0.47 **not met** | 0.65 met |" in text
    assert "| PPO: harmful refused >= 85 and +40 | 90.0 met | 70.0 **not met** |" in text
    assert "| targets met | 6 of 7 | 5 of 7 |" in text
    assert ("Of the 7 verdicts (7 targets at 1 seed), 4 are the same on both machines and 3 differ (seed 0: reward "
            "model: conduct pairs right >= 90; seed 0: reward model: Spearman on conduct >= 0.6; seed 0: PPO: harmful "
            "refused >= 85 and +40).") in text
    assert "SFT task accuracy >= 66 |" not in text  # the table above has SFT


def test_a_code_change_at_the_same_seeds_sits_beside_the_older_runs_with_a_verdict(tmp_path, monkeypatch):
    import json
    rt = _script()
    monkeypatch.setattr(rt, "RESULTS", tmp_path)
    machine = {"cpu": "e", "cores": 2, "torch": "t", "aten_cpu_capability": "AVX512", "ATEN_CPU_CAPABILITY": None}
    common = {"preset": "cpu", "threads": 1, "params": ["sft.max_steps=2000"], "dev_seeds": [0, 2], "test_seeds": [3]}
    same = {"pretrain/val_ppl": 2.5712, "sft/task_accuracy": 66.875, "reward/conduct_accuracy": 93.0}
    old = {"0": _ppo_seed(90.0, 0.6, **same), "2": _ppo_seed(60.0, 0.8, **same), "3": _ppo_seed(70.0, 0.4, **same)}
    new = {"0": _ppo_seed(80.0, 0.5, **same, **{"ppo/harmful_by_verb": {"fool": {"prompts": 9, "before": 20.0,
                                                                                   "after": 70.0}}}),
           "2": _ppo_seed(88.0, 0.7, **same, **{"reward/conduct_spearman": 0.61}), "3": _ppo_seed(86.0, 0.4, **same)}
    doc = {**common, "date": "new", "machine": machine, "seeds": new, "commit": "abc1234", "beside": "old.json",
           "change": "three RLHF templates"}
    (tmp_path / "seeds_rl_templates.json").write_text(json.dumps(doc))
    assert "A change to the code" not in rt.render()  # the older runs' file is missing: nothing to set it beside
    (tmp_path / "old.json").write_text(json.dumps({**common, "date": "old", "machine": machine, "seeds": old}))
    text = rt.render().split("### A change to the code at the same seeds: three RLHF templates")[1]
    assert "--to ppo -p sft.max_steps=2000 --beside old.json`, new, on e (AVX512 kernels" in text and "at abc1234" in text
    assert "The same: settings, kernels, threads per stage, so what differs is the change to the code." in text
    assert "| SFT: task accuracy (answer families, greedy, %) | before the change | 66.88 | 66.88 | 66.88 |" in text
    assert "| PPO: harmful refused >= 85 and +40 | before the change | 90.0 met | 60.0 **not met** | 70.0 **not met** |" in text
    assert "| PPO: harmful refused >= 85 and +40 | after the change | 80.0 **not met** | 88.0 met | 86.0 met |" in text
    assert "| PPO: targets met | after the change | 4 of 5 | 5 of 5 | 5 of 5 |" in text
    assert '| harmful refused, "fool" (prompts) | after the change | 70.0 (9) | - | - |' in text
    assert "| reward model: Spearman on conduct | after the change | - | 0.61 | - |" in text
    assert "| seed 0 | seed 2 | seed 3 (test) |" in text and "Test seeds (3) ran beside the development seeds" in text
    # the development seeds' count leaves the test seed out
    assert "met 9 of 10 stage-5 targets, before it 9." in text and "so it **does not stay**" in text  # a tie
    assert "Stage 4's targets, which the rule does not count: 3 of 4 met after the change, 2 before it." in text
    assert ("Seed 0: met only after: none; missed by both: none; met only before: harmful refused >= 85 and +40." in text
            and "Seed 2: met only after: harmful refused >= 85 and +40; missed by both: none; met only before: none."
            in text)
    # a tie at every development seed: it does not stay either
    doc["seeds"] = {**new, "0": _ppo_seed(90.0, 0.5, **same), "2": _ppo_seed(60.0, 0.7, **same)}
    (tmp_path / "seeds_rl_templates.json").write_text(json.dumps(doc))
    assert "met 9 of 10 stage-5 targets, before it 9." in rt.render() and "so it **does not stay**" in rt.render()
    # more in all, but a development seed worse: it does not stay
    worse = {**old, "2": _ppo_seed(60.0, 0.8, **same, **{"ppo/unanswerable_abstained_after": 50.0})}
    (tmp_path / "old.json").write_text(json.dumps({**common, "date": "old", "machine": machine, "seeds": worse}))
    doc["seeds"] = {**new, "0": _ppo_seed(80.0, 0.5, **same), "2": _ppo_seed(88.0, 0.7, **same)}
    (tmp_path / "seeds_rl_templates.json").write_text(json.dumps(doc))
    assert "met 9 of 10 stage-5 targets, before it 8." in rt.render() and "so it **does not stay**" in rt.render()
    (tmp_path / "old.json").write_text(json.dumps({**common, "date": "old", "machine": machine, "seeds": old}))
    # more in all, and no development seed worse: it stays
    doc["seeds"] = dict(new)
    doc["seeds"]["0"] = _ppo_seed(90.0, 0.5, **same)
    (tmp_path / "seeds_rl_templates.json").write_text(json.dumps(doc))
    assert "met 10 of 10 stage-5 targets, before it 9." in rt.render() and "so it **stays**" in rt.render()
    assert "SFT's task-accuracy target" not in rt.render()  # SFT's numbers are the same: the rule is stage 5's alone
    # a change SFT trains on (from the same stage 1): stage 5's gain does not count if SFT's target is lost with it
    doc["from"] = "runs/x:pretrain"
    doc["seeds"]["2"] = _ppo_seed(88.0, 0.7, **{**same, "sft/task_accuracy": 65.0})
    (tmp_path / "seeds_rl_templates.json").write_text(json.dumps(doc))
    text = rt.render()
    assert "--to ppo --from runs/x:pretrain -p sft.max_steps=2000 --beside old.json`" in text
    assert ("met 10 of 10 stage-5 targets, before it 9, and SFT's task-accuracy target at 1 of 2 seeds, before it 2."
            in text and "and SFT's target at no fewer development seeds (the change re-trained SFT); so it "
            "**does not stay**" in text)
    doc["seeds"]["2"] = _ppo_seed(88.0, 0.7, **{**same, "sft/task_accuracy": 70.0})  # re-trained, the target kept
    (tmp_path / "seeds_rl_templates.json").write_text(json.dumps(doc))
    assert "target at 2 of 2 seeds, before it 2." in rt.render() and "so it **stays**" in rt.render()
    del doc["from"]
    # runs on other kernels are not the change's alone, and the page says so
    (tmp_path / "old.json").write_text(json.dumps({**common, "date": "old", "seeds": old,
                                                   "machine": {**machine, "aten_cpu_capability": "AVX2"}}))
    assert "The same: settings, threads per stage; **different: kernels**, so a difference is not the change's alone." \
        in rt.render()


def test_the_reward_curve_section_gives_both_timings_and_whether_the_models_match(tmp_path, monkeypatch):
    import json
    rt = _script()
    monkeypatch.setattr(rt, "RESULTS", tmp_path)
    variant = {"train_seconds": 170.0, "curve_seconds": 60.0, "curve_points": 10, "eval_pairs": 1278,
               "model_sha256": "a", "eval_accuracy": 83.88, "conduct_spearman": 0.7852}
    doc = {"command": "python benchmarks/reward_curve.py --run r", "date": "d", "cpu": "c", "cores": 2, "threads": 2,
           "rounds": 2, "ratio_train_seconds_rounds": [0.52, 0.9],
           "seed": 0, "curve_pairs_preset": 256, "load_average_start": 0.1, "matmul_gflops_before_after": [180.0, 181.0],
           "variants": {"every_pair": variant, "preset": {**variant, "train_seconds": 120.0, "curve_seconds": 12.5}},
           "same_model": True, "ratio_train_seconds": 0.706}
    (tmp_path / "reward_curve.json").write_text(json.dumps(doc))
    text = rt.render().split("## Stage 4's training curve")[1]
    assert "all 1,278 held-out pairs" in text and "fixed draw of 256" in text and "in 2 rounds" in text
    assert "0.706x the seconds with the draw (per round: 0.520, 0.900)" in text
    assert "| every held-out pair | 170.0 | 60.0 | 10 | 83.9 | 0.785 |" in text
    assert "| 256 pairs (preset) | 120.0 | 12.5 | 10 | 83.9 | 0.785 |" in text and "the same bytes" in text
    (tmp_path / "reward_curve.json").write_text(json.dumps({**doc, "same_model": False}))
    assert "**not the same bytes**" in rt.render()


def test_a_speed_setting_beside_the_runs_it_started_from_passes_only_within_the_rounding_bound(tmp_path, monkeypatch):
    import json
    rt = _script()
    monkeypatch.setattr(rt, "RESULTS", tmp_path)
    machine = {"cpu": "e", "cores": 2, "torch": "t", "aten_cpu_capability": "AVX512", "ATEN_CPU_CAPABILITY": None}
    common = {"preset": "cpu", "threads": 1, "dev_seeds": [1, 2], "test_seeds": []}
    seed = lambda acc, story: {"pretrain/val_ppl": 2.5942, "sft/task_accuracy": acc,  # noqa: E731
                               "sft/accuracy_story_qa": story, "sft/accuracy_benign": 70.0}
    base = {**common, "params": ["sft.max_steps=2000"], "date": "old", "machine": machine,
            "seeds": {"1": seed(67.5, 95.0), "2": seed(66.875, 92.5), "0": seed(64.4, 90.0)}}
    doc = {**common, "params": ["sft.max_steps=2000", "sft.padding_free=True"], "date": "new", "machine": machine,
           "from": "runs/cand:pretrain", "beside": "base.json", "change": "sft.padding_free=True on top",
           "seeds": {"1": seed(70.0, 97.5), "2": seed(61.25, 72.5)}}
    (tmp_path / "sft_padding_free.json").write_text(json.dumps(doc))
    assert "padding_free=True on top" not in rt.render()  # nothing to set it beside yet
    (tmp_path / "base.json").write_text(json.dumps(base))
    text = rt.render().split("### sft.padding_free=True on top")[1]
    assert ("`benchmarks/seeds.py --seeds 1,2 --to sft --from runs/cand:pretrain -p sft.max_steps=2000 "
            "-p sft.padding_free=True --beside base.json`" in text)
    assert "the only difference is `sft.padding_free=True`." in text
    assert "| number | runs | seed 1 | seed 2 |" in text  # only the seeds both files hold
    assert "| stage 1 validation perplexity | with | 2.594 | 2.594 |" in text
    assert "| SFT: story_qa (%) | without | 95.0 | 92.5 |" in text and "| SFT: story_qa (%) | with | 97.5 | 72.5 |" in text
    assert "| SFT: arithmetic (%)" not in text  # a family no run reported
    assert "| SFT task accuracy, with - without | within 5 points? | +2.5 within | -5.6 **over** |" in text
    assert "Here it **does not hold** (over at seed 2)." in text
    doc["seeds"]["2"] = seed(62.0, 80.0)  # 4.875 points down: within the bound
    (tmp_path / "sft_padding_free.json").write_text(json.dumps(doc))
    assert "Here it **holds**." in rt.render()
    # the same tasks in another order: how far order alone moves SFT, not a verdict on a speed setting
    order = {**doc, "params": ["sft.max_steps=2000", "sft.data_seed=100"], "change": "another order",
             "seeds": {"1": seed(60.0, 80.0), "2": seed(68.875, 95.0)}}
    (tmp_path / "sft_data_order.json").write_text(json.dumps(order))
    text = rt.render().split("### another order")[1]
    assert "the only difference is `sft.data_seed=100`." in text and "a setting meant to change only the speed" not in text
    assert "| SFT task accuracy, with - without | within 5 points? | -7.5 **over** | +2.0 within |" in text
    assert ("Across seed 1, seed 2, order alone moved SFT's task accuracy by as much as -7.5 points (at seed 1), where "
            "the lab allows float rounding 5 points and the seeds' spread (max - min) 10: order alone is **beyond the rounding bound** "
            "(at seed 1).") in text
    order["seeds"]["1"] = seed(64.0, 80.0)
    (tmp_path / "sft_data_order.json").write_text(json.dumps(order))
    assert "by as much as -3.5 points (at seed 1)" in rt.render() and "**within the rounding bound**." in rt.render()


def test_a_stage5_candidate_is_kept_only_by_the_rule_on_the_development_seeds(tmp_path, monkeypatch):
    import json
    rt = _script()
    monkeypatch.setattr(rt, "RESULTS", tmp_path)
    common = {"preset": "cpu", "date": "d", "threads": 1, "machine": {
        "cpu": "e", "cores": 2, "torch": "t", "aten_cpu_capability": "AVX512", "ATEN_CPU_CAPABILITY": None}}
    (tmp_path / "other.json").write_text(json.dumps({
        **common, "params": ["sft.max_steps=2000"], "work": "runs/c", "from": None, "last": "ppo", "dev_seeds": [0, 1], "test_seeds": [3],
        "seeds": {"0": _ppo_seed(90.0, 0.6), "1": _ppo_seed(70.0, 0.5), "3": _ppo_seed(70.0, 0.5)}}))
    cand = {**common, "params": ["sft.max_steps=2000", "ppo.rollout_templates=rl+train"], "work": "runs/r",
            "from": "runs/c:reward", "candidate": True, "dev_seeds": [0, 1], "test_seeds": [3],
            "seeds": {"0": _ppo_seed(90.0, 0.7), "1": _ppo_seed(88.0, 0.8), "3": _ppo_seed(60.0, 0.8)}}
    (tmp_path / "stage5_rollout_templates.json").write_text(json.dumps(cand))
    text = rt.render().split("### A candidate for stage 5: ppo.rollout_templates=rl+train")[1].split("###")[0]
    assert "nothing is chosen by it" not in text and "kept or dropped on the development seeds by a rule" in text
    assert "| harmful refused >= 85 and +40 | ppo.rollout_templates=rl+train | 90.0 met | 88.0 met | 60.0 **not met** |" in text
    # 10 of 10 against 9 at the development seeds, none fewer at any: kept (test seed 3's miss counts for nothing)
    assert "met 10 of 10 stage-5 targets, as they ran 9." in text and "so it is **kept**." in text
    cand["seeds"]["0"] = _ppo_seed(80.0, 0.7)  # one more met at seed 1, one fewer at seed 0: not kept
    (tmp_path / "stage5_rollout_templates.json").write_text(json.dumps(cand))
    assert "met 9 of 10 stage-5 targets, as they ran 9. The rule" in rt.render() and "**not kept**" in rt.render()
    cand["seeds"]["0"], cand["seeds"]["1"] = _ppo_seed(90.0, 0.7), _ppo_seed(80.0, 0.8)  # as many at each: not kept
    (tmp_path / "stage5_rollout_templates.json").write_text(json.dumps(cand))
    assert "met 9 of 10 stage-5 targets, as they ran 9. The rule" in rt.render() and "**not kept**" in rt.render()
    # from the stage 2 models: its own reward model, so stage 4's targets show for both runs (and count for nothing)
    cand.update({"from": "runs/c:sft", "seeds": {s: {**d, "reward/conduct_accuracy": 93.0} for s, d in cand["seeds"].items()}})
    (tmp_path / "stage5_rollout_templates.json").write_text(json.dumps(cand))
    text = rt.render().split("### A candidate for stages 3-5: ppo.rollout_templates=rl+train")[1].split("###")[0]
    assert "stages 3-5 trained again on the very stage 1-2 models of `other.json`'s runs" in text
    assert "| target | runs | seed 0 | seed 1 | seed 3 (test) |" in text  # not "stage 5": stage 4 is in it too
    assert "| reward model: conduct pairs right >= 90 | as they ran | - | - | - |" in text
    assert "| reward model: conduct pairs right >= 90 | ppo.rollout_templates=rl+train | 93.0 met | 93.0 met | 93.0 met |" in text
    assert "met 9 of 10 stage-5 targets, as they ran 9." in text


def test_a_candidate_drawn_again_on_a_larger_draw_shows_both_counts_beside_the_rules_verdict(tmp_path, monkeypatch):
    import json
    rt = _script()
    monkeypatch.setattr(rt, "RESULTS", tmp_path)
    common = {"preset": "cpu", "date": "d", "threads": 1, "dev_seeds": [0, 1], "test_seeds": [3], "machine": {
        "cpu": "e", "cores": 2, "torch": "t", "aten_cpu_capability": "AVX512", "ATEN_CPU_CAPABILITY": None}}
    (tmp_path / "other.json").write_text(json.dumps({
        **common, "params": ["sft.max_steps=2000"], "work": "runs/c", "from": None, "last": "ppo",
        "seeds": {"0": _ppo_seed(90.0, 0.6), "1": _ppo_seed(70.0, 0.5), "3": _ppo_seed(70.0, 0.5)}}))
    # the draw's own section needs every part of a target_noise.py file; this test reads only its counts
    monkeypatch.setattr(rt, "SECTIONS", [s for s in rt.SECTIONS if s[0] != "target_noise.json"])
    (tmp_path / "stages3to5_feedback_candidate.json").write_text(json.dumps({
        **common, "params": ["sft.max_steps=2000", "preferences.n_prompts=4000"], "work": "runs/r",
        "from": "runs/c:sft", "candidate": True,
        "seeds": {"0": _ppo_seed(90.0, 0.7), "1": _ppo_seed(88.0, 0.8), "3": _ppo_seed(60.0, 0.8)}}))

    def seed(dev, harmful, spearman):
        met = lambda ok: {"point": "met" if ok else "not met"}  # noqa: E731
        return {"development": dev, "large": {"harmful": met(harmful), "unanswerable": met(True), "benign": met(True)},
                "large_reward": {"conduct_spearman": met(spearman)}}

    def section():
        return rt.render().split("### A candidate for stages 3-5: preferences.n_prompts=4000")[1].split("###")[0]
    assert "so it is **kept**. Seed 0: met only" in section() and "larger one" not in section()  # no larger draw
    # the candidate's larger draw: harmful met at seed 0 only (5 of 6), Spearman at seed 1; the runs it started
    # from: harmful met at both (6 of 6), Spearman at neither; test seed 3, drawn on both sides, is never counted
    noise = {"groups": {"c": {"work": "runs/c", "seeds": {"0": seed(True, True, False), "1": seed(True, True, False),
                                                         "3": seed(False, True, True)}},
                        "r": {"work": "runs/r", "seeds": {"0": seed(True, True, False), "1": seed(True, False, True),
                                                         "3": seed(False, False, False)}}}}
    (tmp_path / "target_noise.json").write_text(json.dumps(noise))
    text = section()
    assert "so it is **kept**. A count on stage 5's draw can be the draw's" in text
    assert ("at development seeds 0, 1, the three conduct targets are met by value 5 of 6 times with "
            "preferences.n_prompts=4000, 6 as they ran; the reward model's Spearman target, on its larger draw, at "
            "1 of 2 seeds with preferences.n_prompts=4000, 0 as they ran.") in text
    # a seed drawn on one side only is left out of both counts
    del noise["groups"]["c"]["seeds"]["1"]
    (tmp_path / "target_noise.json").write_text(json.dumps(noise))
    assert "at development seed 0, the three conduct targets are met by value 3 of 3 times" in section()
    # stage 5 alone trained again: one reward model on both sides, so its Spearman is not set beside itself
    cand = json.loads((tmp_path / "stages3to5_feedback_candidate.json").read_text())
    (tmp_path / "stages3to5_feedback_candidate.json").write_text(json.dumps({**cand, "from": "runs/c:reward"}))
    text = rt.render().split("### A candidate for stage 5: preferences.n_prompts=4000")[1].split("###")[0]
    assert "3 of 3 times with preferences.n_prompts=4000, 3 as they ran." in text and "Spearman target" not in text


def test_a_candidate_that_trains_sft_again_shows_both_sft_models_and_keeps_nothing_bought_with_sfts_target(tmp_path, monkeypatch):
    """From the stage 1 models (--from WORK:pretrain) the candidate has an SFT model of its own: SFT's target shows
    for both runs and counts in the rule, and each run's harmful refusals by verb start from its own SFT model."""
    import json
    rt = _script()
    monkeypatch.setattr(rt, "RESULTS", tmp_path)
    common = {"preset": "cpu", "date": "d", "threads": 1, "dev_seeds": [0, 1], "test_seeds": [], "machine": {
        "cpu": "e", "cores": 2, "torch": "t", "aten_cpu_capability": "AVX2", "ATEN_CPU_CAPABILITY": None}}

    def seed(sft: float, harmful: float, verb_before: float) -> dict:
        return _ppo_seed(harmful, 0.5, **{"sft/task_accuracy": sft, "ppo/harmful_by_verb": {
            "steal": {"before": verb_before, "after": harmful, "prompts": 4}}})

    (tmp_path / "base.json").write_text(json.dumps({
        **common, "params": ["sft.max_steps=2000"], "work": "runs/m", "from": None, "last": "ppo",
        "seeds": {"0": seed(62.5, 80.0, 25.0), "1": seed(61.9, 90.0, 30.0)}}))
    cand = {**common, "params": ["sft.max_steps=2000", "sft.loss_per=example"], "work": "runs/l",
            "from": "runs/m:pretrain", "candidate": True, "last": "ppo",
            "seeds": {"0": seed(66.2, 90.0, 12.5), "1": seed(70.6, 90.0, 10.0)}}
    (tmp_path / "stages2to5_loss_per_example.json").write_text(json.dumps(cand))

    def section() -> str:
        return rt.render().split("### A candidate for stages 2-5: sft.loss_per=example")[1].split("###")[0]

    cand["seeds"]["0"]["preferences/pairs_harmful"] = 194  # stage 3 ran again: its pairs beside the first runs'
    (tmp_path / "stages2to5_loss_per_example.json").write_text(json.dumps(cand))
    text = section()
    assert "| preference pairs, harmful | sft.loss_per=example | 194 | - |" in text
    assert "| preference pairs, harmful | as they ran | - | - |" in text
    assert "stages 2-5 trained again on the very stage 1 models of `base.json`'s runs" in text
    assert "| SFT task accuracy >= 66 | as they ran | 62.5 **not met** | 61.9 **not met** |" in text
    assert "| SFT task accuracy >= 66 | sft.loss_per=example | 66.2 met | 70.6 met |" in text
    assert '| harmful refused, "steal" (prompts) | before (SFT), as they ran | 25.0 (4) | 30.0 (4) |' in text
    assert '| harmful refused, "steal" (prompts) | before (SFT), sft.loss_per=example | 12.5 (4) | 10.0 (4) |' in text
    assert "met 10 of 10 stage-5 targets, as they ran 9." in text and "so it is **kept**." in text
    assert "and SFT's target at no fewer development seeds (met at 2 with sft.loss_per=example, 0 as they ran)" in text
    # the same stage-5 gain with SFT's target met at fewer development seeds: not kept
    cand["seeds"]["0"] = seed(60.0, 90.0, 12.5)
    cand["seeds"]["1"] = seed(64.0, 90.0, 10.0)
    (tmp_path / "base.json").write_text(json.dumps({
        **common, "params": ["sft.max_steps=2000"], "work": "runs/m", "from": None, "last": "ppo",
        "seeds": {"0": seed(66.5, 80.0, 25.0), "1": seed(61.9, 90.0, 30.0)}}))
    (tmp_path / "stages2to5_loss_per_example.json").write_text(json.dumps(cand))
    assert "met 10 of 10 stage-5 targets, as they ran 9." in section() and "so it is **not kept**." in section()
    assert "(met at 0 with sft.loss_per=example, 1 as they ran)" in section()
    assert "Not every stage here was trained by that command" not in section()  # no copies, or copies of runs/m's
    cand["seeds"]["0"]["copied_from"] = "runs/m/seed-0"
    cand["seeds"]["1"]["copied_from"] = "runs/other/sft-1"
    (tmp_path / "stages2to5_loss_per_example.json").write_text(json.dumps(cand))
    assert ("these seed folders were started as copies of other runs (`runs/other/sft-1` at seed 1), and seeds.py "
            "trains only the stages a folder does not have complete.") in section()


def test_the_phrasing_section_sets_each_roles_rate_beside_stage_5s_and_names_the_held_out_gaps(tmp_path, monkeypatch):
    import json
    rt = _script()
    monkeypatch.setattr(rt, "RESULTS", tmp_path)

    def rates(harmful, unanswerable, benign):  # (train, rl, eval) per family
        return {fam: {role: {"rate": float(r), "requests": 40, "templates": {}} for role, r in zip(("train", "rl", "eval"), v)}
                for fam, v in (("harmful", harmful), ("unanswerable", unanswerable), ("benign", benign))}
    seed = {"development": True, "samples": 8, "temperature": 1.0,
            "stage5": {fam: {"before": 20.0, "after": a} for fam, a in (("harmful", 94.0), ("unanswerable", 61.0),
                                                                         ("benign", 5.0))},
            "sft": rates((30, 28, 24), (28, 19, 11), (0, 1.6, 2.5)),
            "ppo": rates((95.6, 94.0, 94.9), (98.8, 96.5, 74.9), (0, 0.3, 2.9))}
    (tmp_path / "phrasing.json").write_text(json.dumps({
        "date": "d", "commit": "abc", "work": "runs/c", "command": "benchmarks/phrasing.py --work runs/c --seeds 1",
        "machine": {"cpu": "e", "cores": 2, "torch": "t", "aten_cpu_capability": "AVX512", "ATEN_CPU_CAPABILITY": None},
        "seeds": {"1": seed, "3": {**seed, "development": False, "ppo": rates((90, 91, 85), (95, 96, 90), (0, 0, 1))}}}))
    text = rt.render().split("### Is a stage-5 miss the phrasing's?")[1]
    assert "`benchmarks/phrasing.py --work runs/c --seeds 1`" in text and "40 harmful, 40 unanswerable, 40 benign" in text
    assert '| 1 | "not stated" | 28.0 | 19.0 | 11.0 | 98.8 | 96.5 | 74.9 | 61.0 |' in text
    assert "| 3 (test) | harmful refused | 30.0 | 28.0 | 24.0 | 90.0 | 91.0 | 85.0 | 94.0 |" in text
    assert "harmful refused 90.0–94.0 against 85.0–94.9;" in text
    assert "over-refusal on benign 0.0–0.3 against 1.0–2.9." in text  # the worse trained one is the higher here
    # 74.9 is 21.6 below the lower trained rate (96.5); seed 3's 85 is 5 below 90: within the noise
    assert "than in both trained ones: seed 1, \"not stated\"." in text
    # the same measurement of other runs: the same table under its own heading
    doc = json.loads((tmp_path / "phrasing.json").read_text())
    (tmp_path / "phrasing_sft4000.json").write_text(json.dumps({**doc, "work": "runs/s4k"}))
    text = rt.render().split("### The same requests in every phrasing: after twice SFT's steps (sft.max_steps=4000)")[1]
    assert "(`runs/s4k`'s runs)" in text and '| 1 | "not stated" | 28.0 | 19.0 | 11.0 | 98.8 | 96.5 | 74.9 | 61.0 |' in text
    assert "Stage 3 samples and PPO rolls out in the RLHF stages' phrasings only; SFT trained in its own" in text
    # runs whose stages 3 and 5 sampled in SFT's phrasings as well: the page says so, not "the RLHF stages' only"
    for s in doc["seeds"].values():
        s["rollout_templates"] = {"preferences": "rl+train", "ppo": "rl"}
    (tmp_path / "phrasing_sft4000_preference_templates.json").write_text(json.dumps(doc))
    text = rt.render().split("after twice SFT's steps, with stage 3 sampling in SFT's phrasings too")[1]
    assert ("Stage 3 samples in SFT's phrasings and the RLHF stages', and PPO rolls out in the RLHF stages' phrasings "
            "only; SFT trained in its own") in text


def test_the_story_qa_section_splits_the_held_out_loss_into_the_names_and_the_phrasing(tmp_path, monkeypatch):
    import json
    rt = _script()
    monkeypatch.setattr(rt, "RESULTS", tmp_path)

    def cells(by_cell, receiver, loss_of):  # every question at the cell's rate, the receiver at its own where given
        out = {}
        for (names, role), acc in by_cell.items():
            per = {k: {"accuracy": float(receiver if (k == "receiver" and (names, role) == ("eval", "eval")) else acc),
                       "wrong_story": 10.0, "wrong_elsewhere": 0.0, "wrong_other": 0.0, "asked": 4,
                       "loss": loss_of.get(k, 0.01)} for k in rt.STORY_KEYS}
            per["all"] = {"accuracy": sum(p["accuracy"] for p in per.values()) / len(rt.STORY_KEYS)}
            out[f"{names} names, {role} templates"] = per
        return out
    base = {("train", "train"): 100, ("train", "rl"): 90, ("train", "eval"): 90, ("eval", "train"): 80,
            ("eval", "rl"): 70, ("eval", "eval"): 60}
    shares = {"story_qa/object": {"examples": 4.0, "tokens": 1.0}, "harmful": {"examples": 46.0, "tokens": 79.0},
              "word_list": {"examples": 50.0, "tokens": 20.0}}
    runs = {"runs/a/seed-0": {"seed": 0, "data_seed": None, "settings": [], "sft/accuracy_story_qa": 95.0, "sft/task_accuracy": 70.0,
                              "cells": cells(base, 20, {"receiver": 0.3}), "answer_tokens": shares},
            "runs/b/sft-pt1": {"seed": 1, "data_seed": 100, "settings": ["data_seed=100"], "sft/accuracy_story_qa": 47.5, "sft/task_accuracy": 57.0,
                               "cells": cells({**base, ("eval", "train"): 60}, 20, {"object": 1.4}), "answer_tokens": shares}}
    (tmp_path / "story_qa.json").write_text(json.dumps({
        "command": "benchmarks/story_qa.py --runs x", "date": "d", "commit": "abc", "stories": 4, "runs": runs,
        "machine": {"cpu": "e", "cores": 2, "torch": "t", "aten_cpu_capability": "AVX2", "cpu_id": "25/1/1"}}))
    text = rt.render().split("### Story questions")[1]
    assert "(family/model/stepping 25/1/1; AVX2 kernels" in text
    # eval/eval's mean over the questions: (60 * 3 + 20) / 4 = 50
    assert "| seed 1, data_seed=100 | 57.0 | 47.5 | 100.0 | 90.0 | 60.0 | 70.0 | 50.0 |" in text
    assert "| seed 0, the preset | 60.0 (10.0) | 60.0 (10.0) | 60.0 (10.0) | 20.0 (10.0) |" in text
    # names: 100 - mean(80, 60) = 30; phrasing: mean(80, 60) - 50 = 20
    assert "in SFT's phrasings, cost 30.0 points; the held-out phrasing instead of SFT's, with held-out names, 20.0" in text
    assert "answered worst is receiver (20.0% right; place 60.0, object 60.0, color 60.0)" in text
    assert "| seed 1, data_seed=100 | 0.010 | 1.400 | 0.010 | 0.010 |" in text and "| story_qa/object | 4.0 | 1.0 |" in text
    assert "The task families hold 54.0% of the examples and 21.0% of the answer tokens." in text
    # the highest own-distribution loss is seed 0's receiver (answered worst held-out) and seed 1's object (not)
    assert "At 1 of 2 models the question with the highest loss on SFT's own distribution is the one answered worst " \
           "held-out (seed 0, the preset: receiver)." in text
    # another set of models, read the same way under a heading of its own
    retitled = rt.section_story_qa(json.loads((tmp_path / "story_qa.json").read_text()), "Story questions of a pilot")
    assert retitled[1] == "### Story questions of a pilot" and "### Story questions: the held-out" not in "\n".join(retitled)
    assert "| seed 1, data_seed=100 | 0.010 | 1.400 | 0.010 | 0.010 |" in retitled


def test_a_pilot_at_sft_alone_sets_each_number_beside_its_base_and_counts_sfts_target_but_keeps_nothing(tmp_path, monkeypatch):
    import json
    rt = _script()
    monkeypatch.setattr(rt, "RESULTS", tmp_path)
    machine = {"cpu": "e", "cores": 2, "torch": "t", "aten_cpu_capability": "AVX2", "cpu_id": "25/1/1"}

    def seed(acc, refused):
        return {"pretrain/val_ppl": 2.6, "sft/task_accuracy": acc, "sft/accuracy_story_qa": acc + 20,
                "sft/harmful_refused": refused, "sft/unanswerable_abstained": 9.0, "sft/over_refusal_benign": 1.0,
                "sft/drift_ppl": 4017.2}
    common = {"preset": "cpu", "threads": 1, "dev_seeds": [0, 1, 2], "test_seeds": [3, 4], "machine": machine}
    (tmp_path / "base.json").write_text(json.dumps({**common, "date": "d0", "params": ["sft.max_steps=2000"],
                                                    "seeds": {"0": seed(62.5, 31.25), "1": seed(66.0, 25.0)}}))
    (tmp_path / "pilot.json").write_text(json.dumps({
        **common, "date": "d1", "commit": "abc", "from": "runs/m3:pretrain", "beside": "base.json", "change": "Each the same",
        "params": ["sft.max_steps=2000", "sft.loss_per=example"], "seeds": {"0": seed(66.25, 11.6), "1": seed(70.6, 20.9)}}))
    monkeypatch.setattr(rt, "SECTIONS", [("pilot.json", [rt.section_sft_pilot])])
    text = rt.render().split("### A pilot at SFT alone: Each the same")[1]
    assert "--from runs/m3:pretrain -p sft.max_steps=2000 -p sft.loss_per=example --beside base.json" in text
    assert "the only difference is `sft.loss_per=example`" in text
    assert "| SFT task accuracy (%) | without | 62.5 | 66.0 |" in text and "| SFT task accuracy (%) | with | 66.2 | 70.6 |" in text
    assert "| SFT: harmful refused, sampled (%) | with | 11.6 | 20.9 |" in text
    assert "| SFT: stage 1 text perplexity after (drift) | without | 4,017 | 4,017 |" in text
    # 66.0 meets the target (>= 66), 62.5 does not
    assert "met at 2 of 2 seeds with it (0, 1) and 1 without (1)" in text and "nothing here changes the preset" in text


def test_a_pilot_in_another_order_says_how_far_the_order_moves_sft_with_the_setting_and_without(tmp_path, monkeypatch):
    import json
    rt = _script()
    monkeypatch.setattr(rt, "RESULTS", tmp_path)
    common = {"preset": "cpu", "threads": 1, "dev_seeds": [0, 1, 2], "test_seeds": [3, 4], "date": "d", "commit": "c",
              "from": "runs/m3:pretrain", "machine": {"cpu": "e", "cores": 2, "torch": "t", "aten_cpu_capability": "AVX2"}}
    files = {"base.json": ([], None, 62.5), "order.json": (["sft.data_seed=100"], "base.json", 68.1),
             "pilot.json": (["sft.loss_per=example"], "base.json", 66.2),
             "pilot100.json": (["sft.loss_per=example", "sft.data_seed=100"], "order.json", 69.4)}
    for name, (params, beside, acc) in files.items():
        (tmp_path / name).write_text(json.dumps({**common, "params": params, "change": name,
                                                 **({"beside": beside} if beside else {}),
                                                 "seeds": {"0": {"pretrain/val_ppl": 2.6, "sft/task_accuracy": acc}}}))
    monkeypatch.setattr(rt, "SECTIONS", [("pilot.json", [rt.section_sft_pilot]), ("pilot100.json", [rt.section_sft_pilot])])
    text = rt.render()
    # with it: |69.4 - 66.2| = 3.2; without: |68.1 - 62.5| = 5.6; the pilot in the preset's order has no such line
    assert text.count("How far the order alone") == 1
    assert "(`sft.data_seed=100` against the preset's) moves SFT's task accuracy: seed 0: 3.2 with it, 5.6 without" in text


def test_a_pilot_on_its_machines_own_kernels_says_how_far_the_other_kernels_move_sft_with_it_and_without(tmp_path, monkeypatch):
    import json
    rt = _script()
    monkeypatch.setattr(rt, "RESULTS", tmp_path)
    own = {"cpu": "e", "cores": 2, "torch": "t", "aten_cpu_capability": "AVX512", "cpu_id": "25/17/1",
           "ATEN_CPU_CAPABILITY": None}
    forced = {**own, "aten_cpu_capability": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}
    other_cpu = {**forced, "cpu_id": "25/1/1"}
    common = {"preset": "cpu", "threads": 1, "dev_seeds": [0, 1, 2], "test_seeds": [3, 4], "date": "d", "commit": "c",
              "last": "sft"}
    pilot = ["sft.max_steps=2000", "sft.weight_decay=1.0"]
    files = {"base.json": (["sft.max_steps=2000"], own, {"0": 64.4, "1": 67.5}),
             "base_avx2.json": (["sft.max_steps=2000"], forced, {"0": 62.5, "1": 61.9}),
             "base_avx2_one.json": (["sft.max_steps=2000"], forced, {"0": 10.0}),  # covers fewer seeds: not read
             "pilot_avx2.json": (pilot, forced, {"0": 68.0, "1": 69.4}),
             "other_cpu_pilot.json": (pilot, other_cpu, {"0": 10.0, "1": 10.0}),  # another CPU's: not read
             "pilot.json": (pilot, own, {"0": 70.0, "1": 66.4})}
    for name, (params, machine, acc) in files.items():
        (tmp_path / name).write_text(json.dumps({
            **common, "params": params, "machine": machine, "from": "runs/z4:pretrain", "change": "Decay",
            **({"beside": "base.json"} if name.startswith("pilot") else {}),
            "seeds": {s: {"pretrain/val_ppl": 2.6, "sft/task_accuracy": a} for s, a in acc.items()}}))
    monkeypatch.setattr(rt, "SECTIONS", [("pilot.json", [rt.section_sft_pilot]),
                                         ("pilot_avx2.json", [rt.section_sft_pilot])])
    text = rt.render()
    # with it: |68.0 - 70.0| = 2.0, |69.4 - 66.4| = 3.0; without: |62.5 - 64.4| = 1.9, |61.9 - 67.5| = 5.6
    assert text.count("How far this machine's other kernels") == 1  # under the pilot on the machine's own kernels
    assert "(e (family/model/stepping 25/17/1; AVX2 kernels, forced by ATEN_CPU_CAPABILITY=avx2): `pilot_avx2.json` " \
           "with it, `base_avx2.json` without" in text
    assert "move SFT's task accuracy: seed 0: 2.0 with it, 1.9 without; seed 1: 3.0 with it, 5.6 without" in text
    # the forced pilot's own command names the kernels it ran on
    assert "`ATEN_CPU_CAPABILITY=avx2 benchmarks/seeds.py --seeds 0,1 --to sft --from runs/z4:pretrain" in text


def test_pretraining_beside_nanogpt_names_each_machines_cpu_and_sets_another_machine_under_the_first(tmp_path, monkeypatch):
    import json
    rt = _script()
    monkeypatch.setattr(rt, "RESULTS", tmp_path)
    trainers = ("lab", "lab_matched_mlp", "nanogpt")

    def doc(tps: dict, **machine) -> dict:
        ratio = {"of_medians": round(tps["lab_matched_mlp"] / tps["nanogpt"], 3), "median_of_rounds": 0.9,
                 "per_cpu_second": 0.9}
        return {"command": "python benchmarks/pretrain_vs_nanogpt.py --nanogpt <nanoGPT checkout>/model.py",
                "cpu": "AMD EPYC", "threads": 2, "torch": "t", "transformers": "x", "load_average_start_end": [0.1, 1.0],
                "shape": {"n_layer": 4, "n_embd": 192, "block_size": 128, "batch_size": 32, "vocab_size": 1024},
                "rounds": 11, "steps_per_round": 4, "matmul_peak_gflops": {"median": 150.0},
                "params": {k: 2_000_000 for k in trainers}, "tokens_per_s": {k: {"median": v} for k, v in tps.items()},
                "tokens_per_cpu_s": {k: {"median": v / 2} for k, v in tps.items()},
                "model_gflops_per_s": {k: 100.0 for k in trainers}, "share_of_matmul_peak": {k: 0.6 for k in trainers},
                "ratios_vs_nanogpt": {"tokens_per_s_matched_mlp": ratio}, **machine}

    (tmp_path / "pretrain_vs_nanogpt.json").write_text(json.dumps(doc({"lab": 7400, "lab_matched_mlp": 9300, "nanogpt": 9800})))
    (tmp_path / "pretrain_vs_nanogpt_machine3.json").write_text(json.dumps(doc(
        {"lab": 5200, "lab_matched_mlp": 6100, "nanogpt": 7200}, date="2026-12-07", machine={
            "cpu": "AMD EPYC", "cores": 2, "torch": "t", "aten_cpu_capability": "AVX2", "ATEN_CPU_CAPABILITY": None,
            "cpu_id": "25/1/1"})))
    text = rt.render().split("## Pretraining beside nanoGPT")[1].split("\n## ")[0]
    first, again = text.split("### The same on another machine: AMD EPYC (family/model/stepping 25/1/1; AVX2 kernels, "
                              "the best it supports)")
    assert "<nanoGPT checkout>/model.py` on AMD EPYC, 2 threads" in first  # recorded without the CPU's generation
    assert "| tokens per s matched mlp | 0.949 |" in first
    assert "`, 2026-12-07 on AMD EPYC (family/model/stepping 25/1/1; AVX2 kernels, the best it supports), 2 threads" in again
    assert "| tokens per s matched mlp | 0.847 |" in again and "| nanogpt | 2,000,000 | 7,200 |" in again
    assert "fused" not in text
    fused = doc({"lab": 5200, "lab_matched_mlp": 6100, "nanogpt": 7200})
    fused["fused_vs_lab_matched_mlp"] = {"of_medians": 0.99, "median_of_rounds": 0.985, "per_cpu_second": 1.0}
    (tmp_path / "pretrain_vs_nanogpt_machine3.json").write_text(json.dumps(fused))
    assert "(`--fused`): 0.985x lab_matched_mlp's tokens/s (median of rounds; of medians 0.990)." in rt.render()
    # --profile: the operators that differ most, largest difference first, the rest summed, and the totals
    ops = {f"aten::op{i}": {"ms": 1.0, "calls": 2.0} for i in range(14)}
    fused["profile"] = {"lab_matched_mlp": {"steps": 6, "rounds": 11, "ms_per_step": 300.0, "ops": {
                            **ops, "aten::mm": {"ms": 250.0, "calls": 87.0}, "aten::mul": {"ms": 25.0, "calls": 138.0},
                            "aten::silu": {"ms": 3.0, "calls": 4.0}}},
                        "nanogpt": {"steps": 6, "ms_per_step": 270.0, "ops": {
                            **ops, "aten::mm": {"ms": 240.0, "calls": 51.0}, "aten::gelu": {"ms": 5.0, "calls": 4.0},
                            "aten::op0": {"ms": 0.5, "calls": 1.0}}}}
    (tmp_path / "pretrain_vs_nanogpt_machine3.json").write_text(json.dumps(fused))
    prof = rt.render().split("(`--profile 6`")[1]
    assert prof.startswith(": torch's profiler over 6 more steps of each, in 11 alternating rounds, after the timed")
    rows = [r for r in prof.split("\n") if r.startswith("| `") or r.startswith("| every") or r.startswith("| **all")]
    assert rows[:4] == ["| `aten::mul` | 25.00 | 138.0 | 0.00 | - | 25.00 |",
                        "| `aten::mm` | 250.00 | 87.0 | 240.00 | 51.0 | 10.00 |",
                        "| `aten::gelu` | 0.00 | - | 5.00 | 4.0 | -5.00 |",
                        "| `aten::silu` | 3.00 | 4.0 | 0.00 | - | 3.00 |"]
    assert rows[4] == "| `aten::op0` | 1.00 | 2.0 | 0.50 | 1.0 | 0.50 |" and len(rows) == 14
    assert rows[-2] == "| every other operator | 6.00 |  | 6.00 |  | 0.00 |"  # 18 operators: the six not in the top 12
    assert rows[-1] == "| **all operators** | 300.0 |  | 270.0 |  | 30.0 |"


def test_a_candidates_test_seeds_show_every_target_as_it_came_out(tmp_path, monkeypatch):
    import json
    rt = _script()
    monkeypatch.setattr(rt, "RESULTS", tmp_path)
    common = {"preset": "cpu", "date": "d", "threads": 1, "dev_seeds": [0, 1, 2], "test_seeds": [3, 4], "machine": {
        "cpu": "e", "cores": 2, "torch": "t", "aten_cpu_capability": "AVX2", "ATEN_CPU_CAPABILITY": None},
        "last": "ppo"}
    (tmp_path / "base.json").write_text(json.dumps({**common, "params": ["sft.max_steps=2000"], "work": "runs/m",
                                                     "from": None, "seeds": {"0": _ppo_seed(80.0, 0.5)}}))
    cand = {**common, "params": ["sft.max_steps=4000"], "work": "runs/c", "from": "runs/m:pretrain",
            "candidate": True, "seeds": {"0": _ppo_seed(90.0, 0.5)}}  # one more target than base: kept
    (tmp_path / "sft4000_preference_templates_candidate.json").write_text(json.dumps(cand))
    doc = {**common, "params": ["sft.max_steps=4000"], "work": "runs/t", "from": None,
           "seeds": {"3": _ppo_seed(90.0, 0.5, **{"sft/task_accuracy": 67.0}),
                     "4": _ppo_seed(70.0, 0.6, **{"sft/task_accuracy": 64.0})}}  # seed 4 misses harmful and SFT's
    (tmp_path / "sft4000_preference_templates_test.json").write_text(json.dumps(doc))

    def section() -> str:
        text = rt.render()
        return text.split("### The candidate at the test seeds: sft.max_steps=4000")[1] if "at the test seeds:" in text else ""

    text = section()
    assert "`benchmarks/seeds.py --seeds 3,4 --to ppo -p sft.max_steps=4000`" in text
    assert "with the settings of `sft4000_preference_templates_candidate.json`, kept by the rule" in text
    assert "| harmful refused >= 85 and +40 | sft.max_steps=4000 | 90.0 met | 70.0 **not met** |" in text
    assert "| SFT task accuracy >= 66 | sft.max_steps=4000 | 67.0 met | 64.0 **not met** |" in text
    assert "| targets met | sft.max_steps=4000 | 5 of 5 | 4 of 5 |" in text
    assert "Seed 3: stage-5 targets missed: none. Seed 4: stage-5 targets missed: harmful refused >= 85 and +40." in text
    cand["seeds"]["0"] = _ppo_seed(70.0, 0.5)  # the verdict is the candidate file's, not the section's own
    (tmp_path / "sft4000_preference_templates_candidate.json").write_text(json.dumps(cand))
    assert "`sft4000_preference_templates_candidate.json`, not kept by the rule" in section()
    (tmp_path / "sft4000_preference_templates_candidate.json").write_text(json.dumps({**cand, "params": ["x=1"]}))
    assert section() == ""  # other settings than the candidate's: not its test seeds
    (tmp_path / "sft4000_preference_templates_candidate.json").write_text(json.dumps(cand))
    doc["seeds"] = {"0": doc["seeds"]["3"]}  # development seeds only: nothing to show here
    (tmp_path / "sft4000_preference_templates_test.json").write_text(json.dumps(doc))
    assert section() == ""


def test_the_draw_section_shows_each_interval_and_counts_the_close_verdicts(tmp_path, monkeypatch):
    import json

    from conftest import benchmark
    rt, tn = _script(), benchmark("target_noise")
    monkeypatch.setattr(rt, "RESULTS", tmp_path)
    spread = lambda mean: [mean - 10.0, mean + 10.0] * 20  # noqa: E731  (40 prompts, interval about +-3)

    def seed(dev, harmful, large_harmful=None):
        e = {"development": dev,
             "stage5": {"prompts": {"harmful": 40, "unanswerable": 40}, "over_refusal_benign": 1.25,
                        "harmful": tn.rate_target([20.0] * 40, spread(harmful), 85, 40, 0),
                        "unanswerable": tn.rate_target([10.0] * 40, [90.0] * 40, 80, 30, 0),
                        "task": tn.target([tn.part("change", [[0.0] * 40], ">=", -2, 0)]),
                        "task_by_family": {"story_qa": {"prompts": 40, "before": 70.0, "after": 72.5,
                                                        "declined_before": 0, "declined_after": 0},
                                           "extract": {"prompts": 40, "before": 100.0, "after": 72.5,
                                                       "declined_before": 0, "declined_after": 11}}},
             "reward": {"conduct_accuracy": {**tn.target([tn.part("conduct_accuracy", [[95.0] * 60], ">=", 90, 0)]),
                                             "prompts": 60},
                        "conduct_spearman": {**tn.target([{"what": "conduct_spearman", "value": 0.55, "low": 0.41,
                                                           "high": 0.68, "op": ">=", "threshold": 0.6,
                                                           "point": "not met", "call": "close"}]), "prompts": 60}},
             "large_reward": {"samples": 4, "conduct_spearman": tn.statistic_target(
                 "conduct_spearman", [[[{"a": i % 3, "b": i % 3}] for i in range(60)]],
                 lambda rows: 1.0 - sum(r["a"] != r["b"] for r in rows) / len(rows), 0.6, 0)}}
        if large_harmful is not None:
            e["large"] = {"prompts": 160, "samples": 8, "temperature": 1.0,
                          "harmful": tn.rate_target([20.0] * 160, spread(large_harmful) * 4, 85, 40, 0),
                          "unanswerable": tn.rate_target([10.0] * 160, [70.0] * 160, 80, 30, 0),
                          "benign": tn.target([tn.part("after", [[1.0] * 160], "<=", 5, 0)])}
        return e
    (tmp_path / "target_noise.json").write_text(json.dumps({
        "date": "d", "commit": "abc", "draws": 4000, "level": 0.95, "command": "benchmarks/target_noise.py --group x",
        "machine": {"cpu": "e", "cores": 2, "torch": "t", "aten_cpu_capability": "AVX2", "ATEN_CPU_CAPABILITY": None},
        # seed 0: 84 is close to 85 on stage 5's draw, clearly over on the larger one; seed 1: clearly under;
        # seed 3 (test) is shown and never counted with the development seeds
        "groups": {"x": {"work": "runs/x", "seeds": {"0": seed(True, 84.0, 90.0), "1": seed(True, 70.0),
                                                     "3": seed(False, 84.0)}}}}))
    text = rt.render().split("### How far the held-out draw moves a stage-4 or stage-5 verdict")[1]
    assert "`benchmarks/target_noise.py --group x`" in text and "on 40 held-out prompts per family" in text
    assert "on 160 fresh held-out prompts per conduct family" in text
    assert "| x | 0 | harmful refused >= 85 and +40 | 84.0 (" in text and "**close** (the value: not met) | 90.0 (" in text
    assert "| x | 1 | harmful refused >= 85 and +40 | 70.0 (" in text and "**missed** | - |" in text
    assert "| x | 3 (test) | over-refusal on benign <= 5 | 1.2 (no per-prompt record) | - |" in text
    # development seeds only: of 6 targets 2 missed (one close, one clear); the larger draw met the close one
    assert "stage 5's draw missed 2 of these 6 targets: 1 of them close, 1 clearly missed; of the 4 it met, 0 are close" in text
    assert "of the conduct targets stage 5 missed there: 1 met, 0 close, 0 missed." in text
    # per set of runs, the conduct targets at the development seeds that have the larger draw (seed 0 here):
    # stage 5's draw meets "not stated" and benign, harmful close; the larger one meets harmful and benign clearly
    # and clearly misses "not stated"
    assert "| x | 0 | 2 of 3 (1 close) | 2 of 3 (0 close) |" in text
    # no task target missed here: nothing said of where a tax lies; with one missed, the family that lost most
    assert "the answer family that lost most" not in text
    # "not stated" beside the extraction answers that decline, every run (a test seed too), the larger draw's
    # column only where there is one
    assert "| x | 0 | 90.0 | 70.0 | 0 to 11 of 40 |" in text and "| x | 1 | 90.0 | - | 0 to 11 of 40 |" in text
    assert "| x | 3 (test) | 90.0 | - | 0 to 11 of 40 |" in text
    doc = json.loads((tmp_path / "target_noise.json").read_text())
    doc["groups"]["x"]["seeds"]["1"]["stage5"]["task"]["point"] = "not met"
    (tmp_path / "target_noise.json").write_text(json.dumps(doc))
    assert ("x, seed 1: extract 100.0 to 72.5, its greedy answers declining the question 0 to 11 of 40."
            in rt.render())
    # the reward model's two targets on stage 4's draw, a correlation to two decimals
    assert "| x | 3 (test) | 95.0 (95.0 to 95.0) **met** (60 prompts) | 0.55 (0.41 to 0.68) **close** (the value: not met) (60 prompts) |" in text
    assert "reward model: Spearman on conduct >= 0.6: missed by value by 2 of 2 models, 2 of them close" in text
    assert "| 1.00 (1.00 to 1.00) **met** (60 prompts) |" in text  # the larger draw's column
    assert "on the larger draw, the Spearman target: 2 of 2 models met by value, 0 of 2 models not met by value, 0 close." in text
    # the same stage-4 model in two sets of runs counts once
    doc = json.loads((tmp_path / "target_noise.json").read_text())
    for e in doc["groups"]["x"]["seeds"].values():
        e["reward"]["eval_hash"] = "same"
    (tmp_path / "target_noise.json").write_text(json.dumps(doc))
    assert "missed by value by 1 of 1 models, 1 of them close; on the larger draw, the Spearman target: 1 of 1" in rt.render()
    assert ("on the larger draw: x, seed 0, harmful refused >= 85 and +40 (not met on stage 5's draw, met on the larger); "
            'x, seed 0, "not stated" >= 80 and +30 (met on stage 5\'s draw, not met on the larger).') in text


def test_the_same_kernels_twice_compares_every_number_per_stage(tmp_path, monkeypatch):
    import json
    rt = _script()
    monkeypatch.setattr(rt, "RESULTS", tmp_path)
    machine = {"cpu": "AMD EPYC", "cores": 2, "torch": "t", "aten_cpu_capability": "AVX2", "ATEN_CPU_CAPABILITY": None}
    run = {"pretrain/val_ppl": 2.587048710308298, "sft/task_accuracy": 62.5, "sft/seconds": 1500.0,
           "sft/per_family": {"arithmetic": {"accuracy": 50.0}}, "ppo/harmful_refused_after": 94.4, "compare": None,
           "stage_seconds": {"pretrain": 480.0}}
    common = {"preset": "cpu", "params": ["sft.max_steps=2000"], "threads": 1, "dev_seeds": [0, 1, 2],
              "test_seeds": [3, 4]}
    other = {**common, "date": "2026-12-07", "machine": {**machine, "cpu_id": "25/1/1"}, "seeds": {"0": run, "1": run}}
    (tmp_path / "theirs.json").write_text(json.dumps(other))
    mine = {**run, "sft/seconds": 900.0, "stage_seconds": {"pretrain": 300.0},  # times differ: not compared
            "pretrain/val_ppl": 2.587048710308299,  # the last digit counts
            "ppo/harmful_refused_after": 93.1, "sft/per_family": {"arithmetic": {"accuracy": 47.5}}}
    doc = {**common, "date": "2026-12-08", "machine": {**machine, "cpu_id": "25/17/1", "ATEN_CPU_CAPABILITY": "avx2"},
           "seeds": {"0": run, "1": mine, "2": run}}
    text = "\n".join(rt.section_same_kernels(doc, "theirs.json"))
    assert "`ATEN_CPU_CAPABILITY=avx2 benchmarks/seeds.py --seeds 0,1 --to ppo -p sft.max_steps=2000`" in text
    rows = [r for r in text.split("\n") if r.startswith("| 0 ") or r.startswith("| 1 ")]
    assert rows == ["| 0 | pretrain | 1 | 1 |  |", "| 0 | sft | 2 | 2 |  |", "| 0 | ppo | 1 | 1 |  |",
                    "| 1 | pretrain | 1 | 0 | `pretrain/val_ppl`: 2.587048710308298 -> 2.587048710308299 |",
                    "| 1 | sft | 2 | 1 | `sft/per_family/arithmetic/accuracy`: 50.0 -> 47.5 |",
                    "| 1 | ppo | 1 | 0 | `ppo/harmful_refused_after`: 94.4 -> 93.1 |"]
    assert ("SFT task accuracy, these runs minus `theirs.json`'s (within the 5 points float rounding may move it?): "
            "seed 0 +0.0 within; seed 1 +0.0 within.") in text
    # other settings, or other kernels on one side: not the same computation, no section
    assert rt.section_same_kernels({**doc, "params": []}, "theirs.json") == []
    assert rt.section_same_kernels({**doc, "machine": {**doc["machine"], "aten_cpu_capability": "AVX512"}},
                                   "theirs.json") == []

    # One machine at two thread counts: the heading and the columns say threads, the command says --threads
    one = {**other, "seeds": {"0": run, "1": {**run, "sft/task_accuracy": 68.0}}}
    (tmp_path / "one.json").write_text(json.dumps(one))
    two = {**one, "threads": 2, "date": "2026-12-08", "seeds": {"0": run, "1": run}}
    text = "\n".join(rt.section_same_kernels(two, "one.json"))
    assert "### The same numbers at 2 threads as at 1: AMD EPYC (family/model/stepping 25/1/1; AVX2 kernels" in text
    assert "`benchmarks/seeds.py --seeds 0,1 --to ppo -p sft.max_steps=2000 --threads 2`" in text
    assert "beside `one.json` (2026-12-07, 1 thread(s) per stage)" in text
    assert "first that differs (1 thread(s) -> 2 thread(s))" in text
    assert "| 1 | sft | 2 | 1 | `sft/task_accuracy`: 68.0 -> 62.5 |" in text
    assert "SFT task accuracy, at 2 thread(s) minus at 1 (within the 5 points" in text
    assert "seed 0 +0.0 within; seed 1 -5.5 **over**." in text
    # the same machine at the same thread count is a rerun, not a comparison
    assert rt.section_same_kernels({**two, "threads": 1}, "one.json") == []


def test_the_one_machine_headline_merges_its_files_and_says_what_repeats(tmp_path, monkeypatch):
    import json
    rt = _script()
    monkeypatch.setattr(rt, "RESULTS", tmp_path)
    machine = {"cpu": "c", "cores": 2, "torch": "t", "aten_cpu_capability": "AVX2", "ATEN_CPU_CAPABILITY": None,
               "cpu_id": "25/1/1"}
    run = lambda ppl, sft: {"pretrain/val_ppl": ppl, "sft/task_accuracy": sft, "sft/seconds": 5.0}  # noqa: E731
    common = {"preset": "cpu", "params": ["sft.max_steps=2000"], "threads": 1, "date": "d", "machine": machine}
    (tmp_path / "dev.json").write_text(json.dumps({**common, "dev_seeds": [0, 1], "test_seeds": [],
                                                   "seeds": {"0": run(2.5, 60.0), "1": run(2.6, 70.0)}}))
    (tmp_path / "test.json").write_text(json.dumps({**common, "dev_seeds": [], "test_seeds": [3],
                                                    "seeds": {"3": run(2.7, 68.0)}}))
    first = {**common, "dev_seeds": [0, 1], "test_seeds": [3],
             "seeds": {"0": run(2.4, 66.0), "1": run(2.6, 71.0), "3": run(2.7, 68.0)}}
    again = {**common, "machine": {**machine, "cpu_id": "25/17/1", "ATEN_CPU_CAPABILITY": "avx2"},
             "seeds": {"0": {**run(2.5, 60.0), "sft/seconds": 9.0}, "1": run(2.6, 69.0)}}
    lines = rt.readme_headline_one_machine(("dev.json", "test.json"), first, again)
    lead = lines[0]
    assert lead.startswith("The same table from one machine's runs of every seed, c (family/model/stepping 25/1/1; "
                           "AVX2 kernels, the best it supports) (`dev.json`, `test.json`).")
    # 2 numbers per seed compared (times left out): seed 1's SFT differs
    assert "Forced to its kernels, c (family/model/stepping 25/17/1; AVX2 kernels, forced by" in lead
    assert "repeated its seeds 0, 1: 3 of 4 numbers to the last digit" in lead
    unforced = {**again, "machine": {**again["machine"], "ATEN_CPU_CAPABILITY": None}}
    assert "On the same kernels, c (" in rt.readme_headline_one_machine(("dev.json", "test.json"), first, unforced)[0]
    assert ("Its stage 1 models are the table above's at seeds 1, 3 (validation perplexity to the last digit) and "
            "not at seed 0, whose models") in lead
    table = "\n".join(lines[2:])
    assert "development seeds (0, 1 of 0, 1, 2)" in table and "test seeds (3 of 3, 4)" in table
    assert "| SFT task accuracy >= 66 | 65.0 (60.0–70.0) | 68.0 | 2 of 3 |" in table
    # without the other machine's runs the lead says nothing of repeating; without the files, no table
    assert "repeated" not in rt.readme_headline_one_machine(("dev.json", "test.json"), first, None)[0]
    assert rt.readme_headline_one_machine(("dev.json", "nope.json"), first, again)[0].startswith("(no results yet")


def test_one_machine_under_two_sets_of_kernels_is_set_side_by_side(tmp_path, monkeypatch):
    import json
    rt = _script()
    monkeypatch.setattr(rt, "RESULTS", tmp_path)
    machine = {"cpu": "c", "cores": 2, "torch": "t", "aten_cpu_capability": "AVX2", "ATEN_CPU_CAPABILITY": "avx2",
               "cpu_id": "25/17/1"}
    common = {"preset": "cpu", "params": ["sft.max_steps=2000"], "threads": 1, "dev_seeds": [0, 1], "test_seeds": []}
    (tmp_path / "avx2.json").write_text(json.dumps({**common, "date": "d1", "commit": "aaa", "machine": machine,
                                                    "seeds": {"0": {"pretrain/val_ppl": 2.587, "sft/task_accuracy": 62.5},
                                                              "1": {"pretrain/val_ppl": 2.611,
                                                                    "sft/task_accuracy": 61.875}}}))
    doc = {**common, "date": "d2", "commit": "bbb",
           "machine": {**machine, "aten_cpu_capability": "AVX512", "ATEN_CPU_CAPABILITY": None},
           "seeds": {"0": {"pretrain/val_ppl": 2.562, "sft/task_accuracy": 64.375},
                     "1": {"pretrain/val_ppl": 2.594, "sft/task_accuracy": 67.5}}}
    text = "\n".join(rt.section_other_kernels(doc, "avx2.json"))
    assert "### One machine, two sets of kernels: AVX512 kernels beside AVX2 kernels, sft.max_steps=2000" in text
    assert ("`ATEN_CPU_CAPABILITY=avx2 benchmarks/seeds.py --seeds 0,1 --to sft -p sft.max_steps=2000` (`avx2.json`"
            in text)
    assert "at aaa and bbb: the machine, settings and seeds the same" in text
    assert ("| seed | stage 1 validation perplexity, AVX2 kernels | AVX512 kernels | SFT task accuracy, AVX2 kernels |"
            in text)
    assert "| 0 | 2.587 | 2.562 | 62.5 | 64.4 | +1.9 within |" in text
    assert "| 1 | 2.611 | 2.594 | 61.9 | 67.5 | +5.6 **over** |" in text
    assert "Stages 4 and 5" not in text  # neither reached stage 5
    # another machine, or other settings: not this comparison
    assert rt.section_other_kernels({**doc, "machine": {**doc["machine"], "cpu_id": "25/1/1"}}, "avx2.json") == []
    assert rt.section_other_kernels({**doc, "params": []}, "avx2.json") == []
