"""The reward model's report card (labkit.reward_eval): pure statistics checked against hand-computed cases."""

import math

import pytest

from labkit import reward_eval, world


def test_calibration_against_hand_computed_cases():
    ln3 = math.log(3)  # σ(ln 3) = 0.75
    # Always predicts 0.75 for chosen and is always right: observed 1 vs 0.75 (and 0 vs 0.25) -> ECE 0.25.
    cal = reward_eval.calibration([ln3] * 4, n_bins=10)
    assert cal["ece"] == pytest.approx(0.25)
    assert [(b["bin"], b["count"]) for b in cal["bins"]] == [("0.20-0.30", 4), ("0.70-0.80", 4)]
    assert cal["bins"][1]["predicted"] == pytest.approx(0.75) and cal["bins"][1]["observed"] == 1.0
    # Right 3 times in 4 at 75%: perfectly calibrated.
    assert reward_eval.calibration([ln3, ln3, ln3, -ln3], n_bins=10)["ece"] == pytest.approx(0.0, abs=1e-12)
    # Δ = 0 says 50/50 and one side always wins: bin 0.5 observes 0.5.
    cal = reward_eval.calibration([0.0, 0.0], n_bins=2)
    assert cal["ece"] == pytest.approx(0.0) and cal["bins"] == [
        {"bin": "0.50-1.00", "count": 4, "predicted": 0.5, "observed": 0.5}]
    # Two bins, mixed: Δ = ln 3 (right) and Δ = ln 9 (σ = 0.9, wrong way round: -ln 9).
    cal = reward_eval.calibration([ln3, -math.log(9)], n_bins=2)
    # entries: (.75,1) (.25,0) (.1,1) (.9,0) -> high bin {.75:1, .9:0}: pred .825 obs .5; low bin {.25:0,.1:1}: .175 vs .5
    assert cal["ece"] == pytest.approx(0.5 * 0.325 + 0.5 * 0.325)


def test_verifier_agreement_ranks_and_lists_the_worst():
    rows = [{"task_id": "t1", "rm_score": 2.0, "true_score": 1.0}, {"task_id": "t1", "rm_score": 1.0, "true_score": 0.0},
            {"task_id": "t2", "rm_score": 3.0, "true_score": 0.0}, {"task_id": "t2", "rm_score": 0.0, "true_score": 1.0}]
    a = reward_eval.verifier_agreement(rows, worst_k=2)
    assert a["pair_accuracy"] == 50.0 and a["n_pairs"] == 2
    assert a["worst"][0]["rm_score"] == 3.0 and a["worst"][0]["rm_percentile"] == 100  # wrong, ranked top
    assert a["worst"][1]["rm_score"] == 0.0  # right, ranked bottom
    from scipy.stats import spearmanr
    assert a["spearman"] == pytest.approx(spearmanr([2, 1, 3, 0], [1, 0, 0, 1]).statistic)


def scored(family, chosen, rejected):
    """An eval_pairs.jsonl row as evaluate_pairs writes it (family None: a pair without a world task)."""
    return {"prompt": f"{family} {chosen} {rejected}", "chosen": "c", "rejected": "r", "score_chosen": chosen,
            "score_rejected": rejected, "task": family and {"family": family}}


def test_conduct_accuracy_counts_only_conduct_pairs():
    rows = [scored("harmful", 2.0, 1.0),        # win
            scored("unanswerable", 0.0, 1.0),   # loss
            scored("benign", 1.0, 1.0),         # tie: half
            scored("benign", 3.0, -1.0),        # win
            scored("arithmetic", 0.0, 5.0), scored("arithmetic", 0.0, 5.0), scored("story_qa", 1.0, 4.0),  # losses
            scored(None, 3.0, 0.0)]             # win, no family
    # conduct: (1 + 0 + 0.5 + 1) / 4 pairs; overall: (1 + 0 + 0.5 + 1 + 0 + 0 + 0 + 1) / 8 pairs
    assert reward_eval.pairwise_accuracy(rows, world.CONDUCT_FAMILIES) == pytest.approx(62.5)
    assert reward_eval.pairwise_accuracy(rows) == pytest.approx(43.75)
    assert reward_eval.pairwise_accuracy(rows, ("extract",)) is None
    acc, _ = reward_eval.by_family(rows, [])
    assert [(f["family"], f["pairs"], f["accuracy"]) for f in acc] == [
        ("-", 1, 100.0), ("arithmetic", 2, 0.0), ("benign", 2, 75.0), ("harmful", 1, 100.0),
        ("story_qa", 1, 0.0), ("unanswerable", 1, 0.0)]


def test_conduct_spearman_uses_only_conduct_samples():
    def sample(family, rm, true):
        return {"task_id": f"{family}-{rm}", "family": family, "rm_score": rm, "true_score": true}
    # conduct samples rank perfectly; the answer families' rank exactly backwards
    conduct = [sample("harmful", 3.0, 1.0), sample("harmful", 1.0, 0.0), sample("unanswerable", 2.0, 1.0),
               sample("benign", 0.0, 0.0)]
    answers = [sample("arithmetic", 5.0, 0.0), sample("arithmetic", -1.0, 1.0), sample("story_qa", 4.0, 0.0)]
    from scipy.stats import spearmanr
    assert reward_eval.spearman(conduct + answers, world.CONDUCT_FAMILIES) == pytest.approx(
        spearmanr([3, 1, 2, 0], [1, 0, 1, 0]).statistic)
    assert reward_eval.spearman(answers, world.CONDUCT_FAMILIES) is None  # no conduct sample
    overall = reward_eval.spearman(conduct + answers)
    assert overall == pytest.approx(spearmanr([3, 1, 2, 0, 5, -1, 4], [1, 0, 1, 0, 0, 1, 0]).statistic)
    assert overall < 0.5 < reward_eval.spearman(conduct + answers, world.CONDUCT_FAMILIES)
    _, rho = reward_eval.by_family([], conduct + answers)
    assert [(f["family"], f["samples"], f["spearman"]) for f in rho] == [
        ("arithmetic", 2, pytest.approx(-1.0)), ("benign", 1, None), ("harmful", 2, pytest.approx(1.0)),
        ("story_qa", 1, None), ("unanswerable", 1, None)]
