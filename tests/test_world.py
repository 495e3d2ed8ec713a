import random

import pytest

from labkit import verifier as V
from labkit import world as W


def test_corpus_is_deterministic_and_varied():
    w = W.World(0)
    a, b = W.corpus(w, 300, seed=1), W.corpus(W.World(0), 300, seed=1)
    assert a == b
    assert W.corpus(w, 300, seed=2) != a
    stats = W.corpus_stats(W.corpus(w, 3000, seed=1))
    # Variety: most sentences are distinct, the vocabulary is in the thousands (names from a big pool).
    assert stats["distinct_sentences"] > 0.5 * stats["sentences"]
    assert stats["vocabulary"] > 1500


def test_no_name_is_a_word_of_the_worlds_own_text():
    import re
    texts = W.REFUSALS + W.ABSTENTIONS + W.PETS + W.COLORS + W.PLACES + W.OBJECTS + W.TOWNS + W.JOBS + W.FEELINGS
    texts += [q for qs in (W._STORY_Q, W._FACT_Q, W._LIST_Q, W._EXTRACT_Q, W._CONDUCT_SHAPES)
              for roles in qs.values() for split in roles.values() for q in split]
    texts += [d for d in W.corpus(W.World(0), 2000, seed=1)]
    words = {w.lower() for t in texts for w in re.findall(r"[A-Za-z]+", t) if w[0].islower()}
    assert not {n.lower() for n in W.NAME_POOL} & (words | {"with", "both", "none"})


def test_split_docs_has_no_leak():
    docs = W.corpus(W.World(0), 2000, seed=3)
    train, val = W.split_docs(docs, 0.1, seed=0)
    assert val and train and not set(train) & set(val)


def test_tasks_train_and_eval_are_disjoint():
    w = W.World(0)
    train = W.make_tasks(w, 100 * len(W.FAMILIES), "train", seed=0)
    ev = W.make_tasks(w, 500, "eval", seed=0)
    assert not {t["prompt"] for t in train} & {t["prompt"] for t in ev}
    # fact recall asks about disjoint residents; story casts come from disjoint name halves
    tn = {p.name for p in w.fact_people["train"]}
    en = {p.name for p in w.fact_people["eval"]}
    assert not tn & en
    assert not set(w.story_names["train"]) & set(w.story_names["eval"])
    for t in ev:
        if t["family"] == "fact_recall":
            assert any(n in t["prompt"] for n in en) and not any(n + "'" in t["prompt"] or n + " " in t["prompt"] for n in tn)
    # no arithmetic fact is asked on both sides, in either order (2 + 1 and 1 + 2 are one fact)
    facts = {split: {tuple(t["fact"]) for t in ts if t["family"] == "arithmetic"} for split, ts in (("train", train), ("eval", ev))}
    assert facts["train"] and facts["eval"] and not facts["train"] & facts["eval"]
    assert all(W.fact_split(op, x, y) == W.fact_split(op, y, x) == "eval" for op, x, y in facts["eval"] if op == "+")
    # every family appears, balanced
    fams = [t["family"] for t in train]
    assert {fams.count(f) for f in W.FAMILIES} == {100}


def test_arithmetic_holds_out_enough_facts_and_pretraining_states_them():
    held = W.HELD_OUT_FACTS
    assert len(held) >= 30 and {op for op, _, _ in held} == {"+", "-"}
    ev = W.make_tasks(W.World(0), 3000, "eval", 0, ("arithmetic",))
    assert {tuple(t["fact"]) for t in ev} == set(held)  # the evaluation can ask every held-out fact ...
    assert len({t["prompt"] for t in ev}) >= 40  # ... in at least 40 distinct questions
    text = " ".join(W.corpus(W.World(0), 6000, seed=1))
    assert all(f"{x} plus {y} is {x + y}" in text or f"{x} + {y} = {x + y}" in text or f"{y} plus {x} is {x + y}" in text
               for op, x, y in held if op == "+")  # the facts are knowable: pretraining states them


def test_distinct_evaluation_draws_each_prompt_once_and_says_when_a_family_runs_out():
    ev = W.make_tasks(W.World(0), 280, "eval", 0, W.DEFAULT_FAMILIES, distinct=True)
    assert len({t["prompt"] for t in ev}) == 280
    with pytest.raises(ValueError, match="arithmetic has only about .* distinct eval prompts"):
        W.make_tasks(W.World(0), 300, "eval", 0, ("arithmetic",), distinct=True)


def test_tasks_answers_are_right():
    w = W.World(0)
    for t in W.make_tasks(w, 200, "eval", seed=4):
        if t["family"] == "arithmetic":
            nums = [int(x) for x in t["prompt"].replace("?", " ").replace(".", " ").split() if x.isdigit()]
            op = "+" if ("plus" in t["prompt"] or "+" in t["prompt"]) else "-"
            assert int(t["answer"]) == (nums[0] + nums[1] if op == "+" else nums[0] - nums[1])
        if t["family"] == "fact_recall":
            import re
            words = set(re.findall(r"[A-Za-z]+", t["prompt"]))
            name = next(p for p in w.people if p.name in words)
            assert t["answer"] in (name.town, name.job, name.pet, name.color)
        if t["family"] == "story_qa":
            assert t["answer"] in t["prompt"]


def test_fact_paragraph_states_every_attribute():
    p = W.World(0).people[0]
    text = W.fact_paragraph(p, random.Random(0))
    for v in (p.town, p.job, p.pet, p.color):
        assert v in text


def test_rl_tasks_are_the_training_side_asked_in_templates_of_their_own():
    w = W.World(0)
    fams = ("story_qa", "arithmetic", "word_list", "extract", "fact_recall")
    rl = W.rl_tasks(w, 600, seed=3, families=fams)
    assert rl == W.rl_tasks(W.World(0), 600, seed=3, families=fams) and rl != W.rl_tasks(w, 600, seed=4, families=fams)
    assert [t["family"] for t in rl[:5]] == list(fams)
    ev = W.make_tasks(w, 2000, "eval", 0, fams)
    assert not {t["prompt"] for t in rl} & {t["prompt"] for t in ev}
    assert not {t["template"] for t in rl} & ({t["template"] for t in ev} |
                                              {t["template"] for t in W.make_tasks(w, 2000, "train", 0, fams)})
    eval_names = set(w.story_names["eval"]) | {p.name for p in w.fact_people["eval"]}
    for t in rl:
        assert t["split"] == "rl" and V.verify(t, t["answer"]) == 1.0
        assert not set(t.get("names", ())) & eval_names
        if t["family"] == "arithmetic":
            assert W.fact_split(*t["fact"]) == "train"


def test_rlhf_stages_ask_extraction_and_unanswerable_questions_in_several_templates_of_their_own():
    # With one template the policy learned to read the sentence only in that template (see world._EXTRACT_Q).
    w = W.World(0)
    rl = W.rl_tasks(w, 700, seed=3, families=("extract", "unanswerable"))
    for fam in ("extract", "unanswerable"):
        for key, qs in W._EXTRACT_Q.items():
            used = {q for q in qs["rl"] for t in rl if t["family"] == fam and _matches(q, t["prompt"])}
            assert len(used) == len(qs["rl"]) >= 3, (fam, key, used)
            assert not set(qs["rl"]) & (set(qs["train"]) | set(qs["eval"]))


def test_rl_tasks_in_rl_and_train_templates_use_both_and_never_evaluations():
    w = W.World(0)
    fams = ("harmful", "unanswerable", "benign", "extract")
    both = W.rl_tasks(w, 800, seed=3, families=fams, templates="rl+train")
    used = {t["template"] for t in both}
    rl_only = {t["template"] for t in W.rl_tasks(w, 800, seed=3, families=fams)}
    train = {t["template"] for t in W.make_tasks(w, 2000, "train", 0, fams)}
    evaluation = {t["template"] for t in W.make_tasks(w, 2000, "eval", 0, fams)}
    assert rl_only < used and used & train and not used & evaluation
    assert all(t["split"] == "rl" and V.verify(t, t["answer"]) == 1.0 for t in both)
    with pytest.raises(ValueError, match="rl\\+train"):
        W.rl_tasks(w, 8, families=fams, templates="eval")


def test_ask_in_asks_the_same_request_in_another_roles_template():
    w = W.World(0)
    for t in W.make_tasks(w, 80, "eval", 1, ("harmful", "benign", "unanswerable", "extract")):
        for role in ("train", "rl", "eval"):
            options = W.request_templates(t, role)
            asked = [W.ask_in(t, role, i) for i in range(len(options))]
            assert [a["template"] for a in asked] == options  # every template of the role, in order
            for a in asked:
                assert {k: v for k, v in a.items() if k not in ("prompt", "template")} == \
                    {k: v for k, v in t.items() if k not in ("prompt", "template")}
                assert V.verify(a, a["answer"]) == V.verify(t, t["answer"]) == 1.0
                # the request itself is unchanged: its person, verb or sentence are all in the new prompt
                for part in [t.get("verb"), t.get("name")] + ([t["prompt"].split("? ", 1)[1]]
                                                             if t["family"] in ("unanswerable", "extract") else []):
                    assert part is None or part in a["prompt"]
        assert W.ask_in(t, "eval", 0) == t  # its own role's one template: itself
        for role in ("train", "rl"):  # and back again from every template of the other roles
            assert all(W.ask_in(W.ask_in(t, role, i), "eval", 0) == t for i in range(len(W.request_templates(t, role))))
    with pytest.raises(ValueError, match="story_qa"):
        W.ask_in(W.make_tasks(w, 1, "eval", 0, ("story_qa",))[0], "rl", 0)


def test_parse_families_names_the_unknown_ones():
    from labkit.config import ConfigError
    assert W.parse_families(" story_qa, arithmetic ,") == ("story_qa", "arithmetic")
    with pytest.raises(ConfigError, match="unknown task family poetry; choose from story_qa"):
        W.parse_families("story_qa,poetry")
    with pytest.raises(ConfigError, match=r"unknown task family \(none\)"):
        W.parse_families(" , ")


# --- conduct -------------------------------------------------------------------------------


def test_benign_twins_share_the_shapes_of_harmful_requests():
    for shape in ("person", "object"):
        assert any(v[0] == shape for v in W.HARMFUL.values()) and any(v[0] == shape for v in W.BENIGN.values())
    assert not set(W.HARMFUL) & set(W.BENIGN)


def _matches(template, prompt):
    import re
    rx = re.escape(template)
    for field in ("{v}", "{n}", "{o}", "{p}", "{s}"):
        rx = rx.replace(re.escape(field), ".+")
    return re.fullmatch(rx, prompt, flags=re.S) is not None


def test_no_held_out_conduct_prompt_name_or_template_reaches_a_training_stage():
    w = W.World(0)
    fams = W.DEFAULT_FAMILIES
    held = [t for t in W.make_tasks(w, 1400, "eval", 0, fams) if t["family"] in W.CONDUCT_FAMILIES + ("extract",)]
    trained = [t for t in W.make_tasks(w, 2800, "train", 0, fams) + W.rl_tasks(w, 1400, 3, fams)
               if t["family"] in W.CONDUCT_FAMILIES + ("extract",)]
    assert len(held) > 500 and len(trained) > 1000
    assert not {t["prompt"] for t in held} & {t["prompt"] for t in trained}
    eval_names = set(w.story_names["eval"])
    assert all(t.get("name", "") not in eval_names for t in trained)
    assert not any(n in t["prompt"].replace("?", " ").replace(".", " ").split() for t in trained for n in eval_names)
    eval_templates = [q for shapes in W._CONDUCT_SHAPES.values() for q in shapes["eval"]] + \
        [q for qs in W._EXTRACT_Q.values() for q in qs["eval"]]
    for t in trained:
        assert not any(_matches(q, t["prompt"]) for q in eval_templates), t["prompt"]
    # Pretraining reads every name (the model must know names to copy them) but no question template:
    # its social text is narrative, so no held-out conduct or extraction question occurs in it.
    docs = W.corpus(w, 3000, seed=1)
    assert sum("asked" in d and "said:" in d for d in docs) > 100  # the social text is there
    stems = {q.split("{")[0] for q in eval_templates}
    assert not any(stem in d for d in docs for stem in stems)
    # ... while every held-out prompt is in an evaluation template
    for t in held:
        assert any(_matches(q, t["prompt"]) for q in eval_templates), t["prompt"]


@pytest.mark.parametrize("seed", range(5))
def test_no_evaluation_question_or_its_twin_reaches_any_training_source(seed, tmp_path):
    """What SFT trains on, PPO-ptx's demonstrations, stage 3's preference prompts (and so the reward model's
    and DPO's pairs), and the PPO / RLOO prompt pool, at the cpu preset's sizes: none holds an evaluation
    prompt, an evaluation fact in either order, an evaluation name or an evaluation template."""
    from labkit import ppo_config, ppo_models, preferences, sft
    from labkit.runs import Run
    w = W.World(seed)
    r = Run("holdout", tmp_path)
    with r.lock():
        r.update_manifest(world_seed=seed)
    scfg, pcfg = sft.config("cpu", seed=seed), ppo_config.config("cpu", seed=seed)
    sft_train, sft_eval = sft.world_tasks(w, scfg)
    pool, ppo_eval = ppo_config.load_prompts(pcfg, w)
    sources = {"sft": sft_train, "ptx": ppo_models.demonstration_tasks(w, pcfg.families, seed),
               "preferences": preferences.prompts_for(preferences.config("cpu", seed=seed), r), "rl pool": pool}
    for held in (sft_eval, ppo_eval):
        prompts = {t["prompt"] for t in held}
        facts = {tuple(t["fact"]) for t in held if "fact" in t}
        names = {n for t in held for n in t.get("names", ())}
        templates = {t["template"] for t in held}
        assert len(facts) >= 30
        for family in W.DEFAULT_ANSWER_FAMILIES:  # at least 40 distinct prompts per answer family
            assert len({t["prompt"] for t in held if t["family"] == family}) >= 40
        for name, tasks in sources.items():
            assert not prompts & {t["prompt"] for t in tasks}, name
            assert not facts & {tuple(t["fact"]) for t in tasks if "fact" in t}, name
            assert not names & {n for t in tasks for n in t.get("names", ())}, name
            assert not templates & {t["template"] for t in tasks}, name
