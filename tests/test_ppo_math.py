"""Tests for labkit.ppo_math: each function against a naive loop or numbers
worked out by hand, plus "padding never changes the result" checks."""

import math

import numpy as np
import pytest
import torch

from labkit import ppo_math as pm

torch.set_num_threads(1)


def _batch(B=3, T=6, seed=0):
    """Random per-token tensors and a right-padded mask with lengths T, 3, 1."""
    g = torch.Generator().manual_seed(seed)
    lengths = [T, 3, 1][:B]
    mask = torch.zeros(B, T, dtype=torch.long)
    for b, n in enumerate(lengths):
        mask[b, :n] = 1
    x = torch.randn(B, T, generator=g, dtype=torch.float64)
    y = torch.randn(B, T, generator=g, dtype=torch.float64)
    return x, y, mask, lengths


def _pad(x, n, fill):
    """Append n columns of `fill` (a float or 'nan'/'inf') to [B, T] x."""
    return torch.cat([x, torch.full((x.shape[0], n), float(fill), dtype=x.dtype)], dim=1)


# --------------------------------------------------------------------------- #
# masked statistics                                                           #
# --------------------------------------------------------------------------- #
def test_masked_mean_var_whiten_match_numpy():
    x, _, mask, lengths = _batch()
    valid = np.concatenate([x[b, :n].numpy() for b, n in enumerate(lengths)])
    assert pm.masked_mean(x, mask).item() == pytest.approx(valid.mean())
    assert pm.masked_var(x, mask).item() == pytest.approx(valid.var(ddof=1))
    assert pm.masked_var(x, mask, unbiased=False).item() == pytest.approx(valid.var(ddof=0))
    # per-row mean along dim=1
    rows = pm.masked_mean(x, mask, dim=1)
    for b, n in enumerate(lengths):
        assert rows[b].item() == pytest.approx(x[b, :n].mean().item())

    w = pm.masked_whiten(x, mask)
    expected = (valid - valid.mean()) / np.sqrt(valid.var(ddof=1) + 1e-8)
    got = np.concatenate([w[b, :n].numpy() for b, n in enumerate(lengths)])
    np.testing.assert_allclose(got, expected, rtol=1e-10)
    assert (w[mask == 0] == 0).all()

    w_keep = pm.masked_whiten(x, mask, shift_mean=False)
    got = np.concatenate([w_keep[b, :n].numpy() for b, n in enumerate(lengths)])
    np.testing.assert_allclose(got, expected + valid.mean(), rtol=1e-10)


def test_masked_stats_ignore_padding_even_nan():
    x, _, mask, _ = _batch()
    x_garbage = torch.where(mask.bool(), x, torch.tensor(float("nan"), dtype=x.dtype))
    assert pm.masked_mean(x_garbage, mask) == pm.masked_mean(x, mask)
    assert pm.masked_var(x_garbage, mask) == pm.masked_var(x, mask)
    torch.testing.assert_close(pm.masked_whiten(x_garbage, mask), pm.masked_whiten(x, mask))
    # mask dtypes are interchangeable
    assert pm.masked_mean(x, mask.bool()) == pm.masked_mean(x, mask.double())


def test_masked_var_rejects_degenerate_masks():
    x = torch.randn(2, 3)
    with pytest.raises(ValueError):
        pm.masked_var(x, torch.zeros(2, 3))
    one = torch.zeros(2, 3)
    one[0, 0] = 1
    with pytest.raises(ValueError):
        pm.masked_var(x, one)
    assert pm.masked_var(x, one, unbiased=False).item() == 0.0


# --------------------------------------------------------------------------- #
# KL estimators and the shaped reward                                         #
# --------------------------------------------------------------------------- #
def test_kl_estimators_match_formulas_and_k3_nonnegative():
    logp, logq, _, _ = _batch(seed=1)
    k1 = pm.kl_penalty(logp, logq, "k1")
    k3 = pm.kl_penalty(logp, logq, "k3")
    for b in range(logp.shape[0]):
        for t in range(logp.shape[1]):
            p, q = math.exp(logp[b, t]), math.exp(logq[b, t])
            assert k1[b, t].item() == pytest.approx(math.log(p) - math.log(q))
            r = q / p
            assert k3[b, t].item() == pytest.approx((r - 1) - math.log(r))
    assert (k3 >= 0).all()
    assert (k1 < 0).any()  # k1 is only non-negative in expectation
    assert (pm.kl_penalty(logp, logp, "k3") == 0).all()
    with pytest.raises(ValueError):
        pm.kl_penalty(logp, logq, "k2")


def test_kl_estimators_are_unbiased_for_kl_p_q():
    """Sampling tokens from p, both k1 and k3 average to KL(p || q)."""
    g = torch.Generator().manual_seed(0)
    p = torch.softmax(torch.randn(5, generator=g, dtype=torch.float64), -1)
    q = torch.softmax(torch.randn(5, generator=g, dtype=torch.float64), -1)
    exact = (p * (p.log() - q.log())).sum().item()
    # exact expectation under p (no sampling noise): sum_a p(a) * k(a)
    for est in ("k1", "k3"):
        k = pm.kl_penalty(p.log(), q.log(), est)
        assert (p * k).sum().item() == pytest.approx(exact)


def test_per_token_rewards_hand_example():
    # one response of 3 tokens + 1 pad; k1 = logp - logq = [0.1, -0.2, 0.3, (pad)]
    logp = torch.tensor([[-1.0, -2.0, -0.5, -9.0]])
    ref = torch.tensor([[-1.1, -1.8, -0.8, -1.0]])
    mask = torch.tensor([[1, 1, 1, 0]])
    rewards, kl = pm.per_token_rewards(torch.tensor([2.0]), logp, ref, mask, kl_coef=0.5, estimator="k1")
    torch.testing.assert_close(kl, torch.tensor([[0.1, -0.2, 0.3, 0.0]]))
    # -0.5 * kl, and the score 2.0 at the last valid token (index 2)
    torch.testing.assert_close(rewards, torch.tensor([[-0.05, 0.1, -0.15 + 2.0, 0.0]]))


def test_per_token_rewards_naive_loop_and_padding():
    logp, ref, mask, lengths = _batch(seed=2)
    score = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    for est in ("k1", "k3"):
        rewards, kl = pm.per_token_rewards(score, logp, ref, mask, 0.1, est)
        for b, n in enumerate(lengths):
            for t in range(logp.shape[1]):
                k = pm.kl_penalty(logp[b, t], ref[b, t], est).item() if t < n else 0.0
                expected = -0.1 * k + (score[b].item() if t == n - 1 else 0.0)
                assert kl[b, t].item() == pytest.approx(k)
                assert rewards[b, t].item() == pytest.approx(expected)
        # extra padding full of NaN changes nothing
        r2, kl2 = pm.per_token_rewards(score, _pad(logp, 2, "nan"), _pad(ref, 2, 0.0), _pad(mask, 2, 0).long(), 0.1, est)
        torch.testing.assert_close(r2[:, :-2], rewards)
        assert (r2[:, -2:] == 0).all() and (kl2[:, -2:] == 0).all()


def test_per_token_rewards_rejects_empty_response():
    with pytest.raises(ValueError):
        pm.per_token_rewards(torch.zeros(1), torch.zeros(1, 2), torch.zeros(1, 2), torch.zeros(1, 2), 0.1)


# --------------------------------------------------------------------------- #
# GAE                                                                         #
# --------------------------------------------------------------------------- #
def test_gae_by_hand_1x3():
    # gamma = 0.9, lam = 0.8, rewards [0, 0, 1], values [0.5, 0.4, 0.3]
    # t=2: delta = 1 + 0.9*0 - 0.3 = 0.7                A2 = 0.7
    # t=1: delta = 0 + 0.9*0.3 - 0.4 = -0.13            A1 = -0.13 + 0.72*0.7   = 0.374
    # t=0: delta = 0 + 0.9*0.4 - 0.5 = -0.14            A0 = -0.14 + 0.72*0.374 = 0.12928
    # returns = A + V = [0.62928, 0.774, 1.0]
    rewards = torch.tensor([[0.0, 0.0, 1.0]], dtype=torch.float64)
    values = torch.tensor([[0.5, 0.4, 0.3]], dtype=torch.float64)
    adv, ret = pm.gae(rewards, values, torch.ones(1, 3), gamma=0.9, lam=0.8)
    torch.testing.assert_close(adv, torch.tensor([[0.12928, 0.374, 0.7]], dtype=torch.float64))
    torch.testing.assert_close(ret, torch.tensor([[0.62928, 0.774, 1.0]], dtype=torch.float64))


def _naive_gae(rewards, values, lengths, gamma, lam):
    """GAE from its definition: A_t = sum_l (gamma*lam)^l delta_{t+l}, V_n = 0."""
    B, T = rewards.shape
    adv = np.zeros((B, T))
    for b, n in enumerate(lengths):
        r, v = rewards[b, :n].tolist(), values[b, :n].tolist() + [0.0]
        deltas = [r[t] + gamma * v[t + 1] - v[t] for t in range(n)]
        for t in range(n):
            adv[b, t] = sum((gamma * lam) ** l * deltas[t + l] for l in range(n - t))
    return adv


def test_gae_matches_definition_and_ignores_padding():
    rewards, values, mask, lengths = _batch(seed=3)
    adv, ret = pm.gae(rewards, values, mask, gamma=0.95, lam=0.9)
    expected = _naive_gae(rewards, values, lengths, 0.95, 0.9)
    np.testing.assert_allclose(adv.numpy(), expected, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ret.numpy(), expected + (values * mask).numpy(), rtol=1e-10, atol=1e-12)
    assert (adv[mask == 0] == 0).all() and (ret[mask == 0] == 0).all()
    # values and rewards after the mask (here NaN) are never read: bootstrap is 0
    adv2, ret2 = pm.gae(_pad(rewards, 3, "nan"), _pad(values, 3, "nan"), _pad(mask, 3, 0).long(), 0.95, 0.9)
    torch.testing.assert_close(adv2[:, :-3], adv)
    torch.testing.assert_close(ret2[:, :-3], ret)


def test_gae_gamma_lam_one_is_monte_carlo():
    rewards, values, mask, lengths = _batch(seed=4)
    adv, ret = pm.gae(rewards, values, mask, gamma=1.0, lam=1.0)
    for b, n in enumerate(lengths):
        for t in range(n):
            reward_to_go = rewards[b, t:n].sum().item()
            assert ret[b, t].item() == pytest.approx(reward_to_go)
            assert adv[b, t].item() == pytest.approx(reward_to_go - values[b, t].item())


# --------------------------------------------------------------------------- #
# Policy loss                                                                 #
# --------------------------------------------------------------------------- #
def _one_token_policy_loss(log_ratio, advantage, clip_range=0.2):
    new = torch.tensor([[log_ratio]], dtype=torch.float64, requires_grad=True)
    old = torch.zeros(1, 1, dtype=torch.float64)
    loss, clipfrac, approx_kl = pm.policy_loss(new, old, torch.tensor([[advantage]], dtype=torch.float64),
                                               torch.ones(1, 1), clip_range)
    loss.backward()
    return loss.item(), new.grad.item(), clipfrac.item(), approx_kl.item()


@pytest.mark.parametrize(
    "ratio, advantage, clipped",
    [
        (1.5, +1.0, True),   # moved too far up on a good action: no further push
        (0.5, -1.0, True),   # moved too far down on a bad action: no further push
        (1.5, -1.0, False),  # too far up on a bad action: unclipped, still pulled back
        (0.5, +1.0, False),  # too far down on a good action: unclipped, still pushed up
        (1.1, +1.0, False),  # inside the trust region
    ],
)
def test_policy_loss_clipping_and_gradients(ratio, advantage, clipped):
    loss, grad, clipfrac, approx_kl = _one_token_policy_loss(math.log(ratio), advantage)
    if clipped:
        assert grad == 0.0
        assert loss == pytest.approx(-advantage * min(max(ratio, 0.8), 1.2))
        assert clipfrac == 1.0
    else:
        # d/dlogp of -A * exp(logp - logp_old) = -A * ratio
        assert grad == pytest.approx(-advantage * ratio)
        assert loss == pytest.approx(-advantage * ratio)
        assert clipfrac == 0.0
    assert approx_kl == pytest.approx((ratio - 1) - math.log(ratio))


def test_policy_loss_naive_loop_and_padding():
    new, old, mask, lengths = _batch(seed=5)
    old = new - 0.3 * old  # log ratios of a realistic size
    adv = torch.randn(new.shape, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    loss, clipfrac, approx_kl = pm.policy_loss(new, old, adv, mask, 0.2)
    terms, clipped, kls = [], [], []
    for b, n in enumerate(lengths):
        for t in range(n):
            r = math.exp(new[b, t].item() - old[b, t].item())
            a = adv[b, t].item()
            unclipped, clip = -a * r, -a * min(max(r, 0.8), 1.2)
            terms.append(max(unclipped, clip))
            clipped.append(clip > unclipped)
            kls.append((r - 1) - math.log(r))
    assert loss.item() == pytest.approx(np.mean(terms))
    assert clipfrac.item() == pytest.approx(np.mean(clipped))
    assert approx_kl.item() == pytest.approx(np.mean(kls))
    assert 0 < clipfrac.item() < 1  # the example exercises both branches

    # padding with inf/nan changes neither the loss nor the gradient
    new_a = new.clone().requires_grad_(True)
    pm.policy_loss(new_a, old, adv, mask, 0.2)[0].backward()
    new_b = _pad(new, 2, "inf").requires_grad_(True)
    loss_b, _, _ = pm.policy_loss(new_b, _pad(old, 2, "-inf"), _pad(adv, 2, "nan"), _pad(mask, 2, 0), 0.2)
    loss_b.backward()
    assert loss_b.item() == pytest.approx(loss.item())
    torch.testing.assert_close(new_b.grad[:, :-2], new_a.grad)
    assert (new_b.grad[:, -2:] == 0).all()
    assert (new_a.grad[mask == 0] == 0).all()


# --------------------------------------------------------------------------- #
# Value loss                                                                  #
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize(
    "new_value, expected_loss, expected_grad, expected_clipfrac",
    [
        # old=0, return=1, clip=0.2.
        # new=2.0: unclipped (2-1)^2 = 1 > clipped (0.2-1)^2 = 0.64 -> 0.5*1; grad (V-R) = 1
        (2.0, 0.5, 1.0, 0.0),
        # new=0.5: unclipped 0.25 < clipped 0.64 -> 0.5*0.64 = 0.32; clipped branch: no gradient
        (0.5, 0.32, 0.0, 1.0),
        # new=0.1 inside the clip range: both equal (0.81) -> 0.405, grad 0.1-1 = -0.9
        (0.1, 0.405, -0.9, 0.0),
    ],
)
def test_value_loss_clipping_by_hand(new_value, expected_loss, expected_grad, expected_clipfrac):
    new = torch.tensor([[new_value]], dtype=torch.float64, requires_grad=True)
    loss, clipfrac = pm.value_loss(new, torch.zeros(1, 1, dtype=torch.float64),
                                   torch.ones(1, 1, dtype=torch.float64), torch.ones(1, 1), 0.2)
    loss.backward()
    assert loss.item() == pytest.approx(expected_loss)
    assert new.grad.item() == pytest.approx(expected_grad)
    assert clipfrac.item() == expected_clipfrac


def test_value_loss_naive_loop_and_padding():
    new, old, mask, lengths = _batch(seed=7)
    ret = torch.randn(new.shape, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    loss, clipfrac = pm.value_loss(new, old, ret, mask, 0.5)
    terms, clipped = [], []
    for b, n in enumerate(lengths):
        for t in range(n):
            v, v_old, r = new[b, t].item(), old[b, t].item(), ret[b, t].item()
            v_clip = v_old + min(max(v - v_old, -0.5), 0.5)
            terms.append(max((v - r) ** 2, (v_clip - r) ** 2))
            clipped.append((v_clip - r) ** 2 > (v - r) ** 2)
    assert loss.item() == pytest.approx(0.5 * np.mean(terms))
    assert clipfrac.item() == pytest.approx(np.mean(clipped))
    new_b = _pad(new, 2, "nan").requires_grad_(True)
    loss_b, _ = pm.value_loss(new_b, _pad(old, 2, "inf"), _pad(ret, 2, "nan"), _pad(mask, 2, 0), 0.5)
    loss_b.backward()
    assert loss_b.item() == pytest.approx(loss.item())
    assert torch.isfinite(new_b.grad).all() and (new_b.grad[:, -2:] == 0).all()


# --------------------------------------------------------------------------- #
# KL controllers                                                              #
# --------------------------------------------------------------------------- #
def test_adaptive_kl_controller():
    def step(kl):
        c = pm.AdaptiveKLController(init_kl_coef=0.1, target=6.0, horizon=10000)
        return c.update(kl, n_steps=256)

    assert step(12.0) > 0.1  # KL above target: tighter leash
    assert step(3.0) < 0.1   # KL below target: looser leash
    assert step(6.0) == pytest.approx(0.1)
    # proportional error inside the clip: 6.6/6 - 1 = 0.1
    assert step(6.6) == pytest.approx(0.1 * (1 + 0.1 * 256 / 10000))
    # error clipped to +-0.2: KL 100x or 0x the target moves beta as far as 1.2x or 0.8x
    assert step(600.0) == pytest.approx(0.1 * (1 + 0.2 * 256 / 10000))
    assert step(7.2) == pytest.approx(step(600.0))
    assert step(0.0) == pytest.approx(0.1 * (1 - 0.2 * 256 / 10000))
    # accepts a tensor KL; state round-trips
    c = pm.AdaptiveKLController(0.1, 6.0, 10000)
    c.update(torch.tensor(12.0), 256)
    c2 = pm.AdaptiveKLController(0.5, 6.0, 10000)
    c2.load_state_dict(c.state_dict())
    assert c2.value == c.value


def test_fixed_kl_controller():
    c = pm.FixedKLController(0.05)
    assert c.update(100.0, 256) == 0.05 and c.value == 0.05


# --------------------------------------------------------------------------- #
# From logits                                                                 #
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_logprobs_from_logits_matches_log_softmax(dtype):
    g = torch.Generator().manual_seed(9)
    logits = (3 * torch.randn(2, 5, 11, generator=g)).to(dtype)
    labels = torch.randint(0, 11, (2, 5), generator=g)
    got = pm.logprobs_from_logits(logits, labels)
    expected = torch.log_softmax(logits.double(), -1).gather(-1, labels[..., None]).squeeze(-1)
    tol = 1e-5 if dtype != torch.bfloat16 else 5e-2
    torch.testing.assert_close(got.double(), expected, atol=tol, rtol=tol)
    assert got.shape == (2, 5)
    # differentiable
    logits32 = logits.float().requires_grad_(True)
    pm.logprobs_from_logits(logits32, labels).sum().backward()
    assert torch.isfinite(logits32.grad).all()


def test_entropy_from_logits():
    g = torch.Generator().manual_seed(10)
    logits = torch.randn(3, 7, 5, generator=g, dtype=torch.float64)
    got = pm.entropy_from_logits(logits, chunk_size=4)  # chunks that do not divide 21
    p = torch.softmax(logits, -1)
    torch.testing.assert_close(got, -(p * p.log()).sum(-1))
    # uniform: log V; one-hot (large logit gap): ~0, and no NaN from log 0
    torch.testing.assert_close(pm.entropy_from_logits(torch.zeros(2, 8)), torch.full((2,), math.log(8)))
    peaked = torch.tensor([[1000.0, 0.0, 0.0]])
    assert pm.entropy_from_logits(peaked).item() == pytest.approx(0.0, abs=1e-6)


# --------------------------------------------------------------------------- #
# Diagnostics                                                                 #
# --------------------------------------------------------------------------- #
def test_explained_variance():
    returns, noise, mask, lengths = _batch(seed=11)
    assert pm.explained_variance(returns, returns, mask).item() == pytest.approx(1.0)
    mean_pred = torch.full_like(returns, pm.masked_mean(returns, mask).item())
    assert pm.explained_variance(mean_pred, returns, mask).item() == pytest.approx(0.0, abs=1e-12)
    values = returns + 0.5 * noise
    r = np.concatenate([returns[b, :n].numpy() for b, n in enumerate(lengths)])
    v = np.concatenate([values[b, :n].numpy() for b, n in enumerate(lengths)])
    assert pm.explained_variance(values, returns, mask).item() == pytest.approx(1 - np.var(r - v) / np.var(r))
    # padding is ignored; constant returns give NaN
    ev = pm.explained_variance(_pad(values, 2, "nan"), _pad(returns, 2, "inf"), _pad(mask, 2, 0))
    assert ev.item() == pytest.approx(1 - np.var(r - v) / np.var(r))
    assert math.isnan(pm.explained_variance(values, torch.ones_like(returns), mask).item())


# --------------------------------------------------------------------------- #
# EOS handling                                                                #
# --------------------------------------------------------------------------- #
def test_first_eos_mask():
    EOS = 2
    ids = torch.tensor([
        [5, 6, 2, 7, 2, 9],  # EOS at 2, junk after it (including a second EOS)
        [2, 2, 2, 2, 2, 2],  # EOS first, padded with EOS (pad == eos)
        [5, 6, 7, 8, 9, 4],  # no EOS: truncated, every token valid
        [5, 6, 7, 8, 9, 2],  # EOS as the very last token
    ])
    mask, has_eos = pm.first_eos_mask(ids, EOS)
    expected = torch.tensor([
        [1, 1, 1, 0, 0, 0],
        [1, 0, 0, 0, 0, 0],
        [1, 1, 1, 1, 1, 1],
        [1, 1, 1, 1, 1, 1],
    ])
    assert torch.equal(mask, expected)
    assert has_eos.tolist() == [True, True, False, True]
    # naive loop
    for b in range(ids.shape[0]):
        row = ids[b].tolist()
        n = row.index(EOS) + 1 if EOS in row else len(row)
        assert mask[b].tolist() == [1] * n + [0] * (len(row) - n)


def test_apply_missing_eos_penalty():
    scores = torch.tensor([1.0, 0.5, -1.0])
    has_eos = torch.tensor([True, False, False])
    out = pm.apply_missing_eos_penalty(scores, has_eos, penalty=1.0)
    torch.testing.assert_close(out, torch.tensor([1.0, -0.5, -2.0]))
    torch.testing.assert_close(scores, torch.tensor([1.0, 0.5, -1.0]))  # not modified in place


def test_pipeline_end_to_end_on_padded_batch():
    """EOS mask -> shaped rewards -> GAE -> whitening -> both losses: finite,
    and identical with or without extra padding columns of garbage. (The mask
    is padded, not the ids: appending EOS tokens to a truncated row would make
    it a different, longer response.)"""
    g = torch.Generator().manual_seed(12)
    ids = torch.tensor([[4, 5, 2, 9], [4, 5, 6, 7]])
    logp, ref, values = (torch.randn(2, 4, generator=g) for _ in range(3))
    scores = torch.tensor([1.0, 2.0])

    mask, has_eos = pm.first_eos_mask(ids, eos_id=2)
    assert mask.tolist() == [[1, 1, 1, 0], [1, 1, 1, 1]] and has_eos.tolist() == [True, False]

    def run(mask, logp, ref, values):
        score = pm.apply_missing_eos_penalty(scores, has_eos, 1.0)
        rewards, _ = pm.per_token_rewards(score, logp, ref, mask, 0.05, "k3")
        adv, ret = pm.gae(rewards, values, mask, 1.0, 0.95)
        adv = pm.masked_whiten(adv, mask)
        pl, _, _ = pm.policy_loss(logp + 0.1, logp, adv, mask, 0.2)
        vl, _ = pm.value_loss(values + 0.3, values, ret, mask, 0.2)
        return pl, vl

    pl, vl = run(mask, logp, ref, values)
    assert torch.isfinite(pl) and torch.isfinite(vl)
    pl2, vl2 = run(_pad(mask, 2, 0).long(), _pad(logp, 2, "nan"), _pad(ref, 2, "nan"), _pad(values, 2, "nan"))
    torch.testing.assert_close((pl2, vl2), (pl, vl))


def test_shape_scores_normalises_applies_the_missing_eos_penalty_and_clips():
    s = pm.shape_scores(torch.tensor([1.0, 1.0, 3.0]), torch.tensor([True, False, True]), {"mean": 1.0, "std": 2.0}, 2.0)
    assert s.tolist() == [0.0, -2.0, 1.0]
    s = pm.shape_scores(torch.tensor([5.0, -5.0]), torch.tensor([False, True]), None, 1.0, score_clip=3.0)
    assert s.tolist() == [3.0, -3.0]


def test_seed_for_is_stable_and_separates_purposes():
    assert pm.seed_for(0, "rollout", 0, 3) == pm.seed_for(0, "rollout", 0, 3)
    assert len({pm.seed_for(0, p, r, s) for p in ("rollout", "eval") for r in (0, 1) for s in (0, 1)}) == 8


@pytest.mark.parametrize("n", [1, 2, 4, 8, 16, 32, 64])
def test_best_of_n_kl_is_the_kl_of_keeping_the_best_of_n_draws(n):
    """Base: N equally likely outcomes ranked by the reward, no ties. Best-of-n picks outcome i (of rank i)
    with probability (i/N)^n - ((i-1)/N)^n; its exact KL to the base tends to log n - (n-1)/n as N grows."""
    N = 200_000
    i = np.arange(1, N + 1, dtype=np.float64)
    p = (i / N) ** n - ((i - 1) / N) ** n
    exact = float(np.sum(np.where(p > 0, p * np.log(np.maximum(p, 1e-300) * N), 0.0)))
    assert pm.best_of_n_kl(n) == pytest.approx(exact, abs=1e-3)
    assert pm.best_of_n_kl(n) == pytest.approx(math.log(n) - (n - 1) / n)
