"""The mathematics of PPO for RLHF, as small pure functions tested against naive loops.

``ppo.py`` does the plumbing (generation, forward passes, minibatches, logging); everything that is
maths is here, read like a textbook: log-probs from logits, the first-EOS mask, KL estimators (k1,
k2, k3), per-token rewards with the KL penalty, GAE, whitening, the clipped policy and value losses,
the KL controllers, score shaping, best-of-n's KL.

Conventions: a batch holds B responses right-padded to T tokens; every per-token tensor is [B, T]
over *response* tokens; ``mask`` is 1 up to and including the first EOS. Padding never changes a
result: functions select with ``torch.where`` rather than multiplying by the mask, so NaN or inf in
padded positions cannot leak (0 * nan is nan). Sources, cited as [short name] in the functions:
[Ziegler19] Ziegler et al. 2019; [Schulman17] Schulman et al. 2017 (PPO); [GAE] Schulman et al.
2016; [KLblog] Schulman 2020, "Approximating KL Divergence"; [NDetails] Huang et al. 2024, "The N
Implementation Details of RLHF with PPO"; [TRL] huggingface/trl's PPOv2 trainer.
"""

from __future__ import annotations

import math
import zlib

import torch
import torch.nn.functional as F

__all__ = [
    "masked_mean",
    "masked_var",
    "masked_whiten",
    "kl_penalty",
    "per_token_rewards",
    "gae",
    "policy_loss",
    "value_loss",
    "AdaptiveKLController",
    "FixedKLController",
    "entropy_from_logits",
    "logprobs_from_logits",
    "explained_variance",
    "first_eos_mask",
    "apply_missing_eos_penalty",
]


# --------------------------------------------------------------------------- #
# Masked statistics                                                           #
# --------------------------------------------------------------------------- #
def _bool(mask: torch.Tensor) -> torch.Tensor:
    return mask.bool() if mask.dtype != torch.bool else mask


def masked_mean(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of `values` over positions where `mask` is set (over `dim`, or all).

    A token-level mean: every valid token weighs the same, so long responses
    weigh more than short ones -- as in [TRL] and [NDetails].
    """
    m = _bool(mask)
    total = torch.where(m, values, torch.zeros_like(values)).sum(dim=dim)
    return total / m.sum(dim=dim).to(values.dtype)


def masked_var(values: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Variance of `values` over the masked positions, a scalar.

    `unbiased=True` applies Bessel's correction n/(n-1), as [TRL]'s
    `masked_var` does (and as torch.var does by default).
    """
    m = _bool(mask)
    n = m.sum()
    if n == 0:
        raise ValueError("masked_var: the mask is empty, there is nothing to take the variance of.")
    if unbiased and n == 1:
        raise ValueError("masked_var: unbiased variance of a single value divides by zero.")
    mean = masked_mean(values, m)
    var = masked_mean((values - mean) ** 2, m)
    if unbiased:
        n = n.to(values.dtype)  # in the values' precision: long / long gives float32
        var = var * n / (n - 1)
    return var


def masked_whiten(values: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    """(values - mean) / std over the masked positions; padding comes out as 0.

    Whitening advantages is detail "advantage whitening" of [NDetails]; rewards
    are whitened (when at all) with `shift_mean=False`: scale them but keep
    their mean, since a constant shift of every per-token reward would change
    which response lengths are preferred [TRL `whiten_rewards`].
    eps = 1e-8 inside the rsqrt guards a constant batch, as in [TRL].
    """
    m = _bool(mask)
    mean, var = masked_mean(values, m), masked_var(values, m)
    whitened = (values - mean) * torch.rsqrt(var + 1e-8)
    if not shift_mean:
        whitened = whitened + mean
    return torch.where(m, whitened, torch.zeros_like(whitened))


# --------------------------------------------------------------------------- #
# KL penalty and the shaped reward                                            #
# --------------------------------------------------------------------------- #
def kl_penalty(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, estimator: str = "k1") -> torch.Tensor:
    """Per-token estimate of KL(pi_theta || pi_ref), elementwise, [B, T].

    Both inputs are log-probabilities of the *sampled* tokens; the tokens were
    sampled from the policy p = pi_theta, and q = pi_ref is the reference
    (SFT) model. So each estimator's expectation under p is the "reverse" KL
    of the policy from the reference, KL(p || q) = E_p[log p - log q], which
    is the leash in [Ziegler19] eq. 2.

    - "k1": log p - log q. Unbiased, but a single token's value can be
            negative (high variance) [KLblog].
    - "k3": (r - 1) - log r with r = q / p. Also unbiased under p
            (E_p[r] = 1), always >= 0 because log r <= r - 1, and lower
            variance [KLblog]. Computed as expm1(log r) - log r for accuracy
            when p and q are close.
    """
    log_ratio = logprobs - ref_logprobs  # log p - log q
    if estimator == "k1":
        return log_ratio
    if estimator == "k3":
        log_r = -log_ratio  # log r = log q - log p
        return torch.expm1(log_r) - log_r
    raise ValueError(f"kl_penalty: unknown estimator {estimator!r}; use 'k1' or 'k3'.")


def _last_valid_index(mask: torch.Tensor) -> torch.Tensor:
    """Index of the last set position in each row of `mask`, [B]."""
    m = _bool(mask)
    if not m.any(dim=1).all():
        raise ValueError("a response has an empty mask; first_eos_mask always keeps at least one token.")
    positions = torch.arange(m.shape[1], device=m.device).expand_as(m)
    return torch.where(m, positions, -1).max(dim=1).values


def per_token_rewards(
    score: torch.Tensor,
    logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    mask: torch.Tensor,
    kl_coef: float,
    estimator: str = "k1",
) -> tuple[torch.Tensor, torch.Tensor]:
    """The KL-shaped reward of [Ziegler19] eq. 2, spread over tokens.

        R(x, y) = score(x, y) - kl_coef * KL(pi_theta(.|x) || pi_ref(.|x))

    Every response token t gets -kl_coef * kl_t; the reward model's scalar
    `score` [B] is added at the last valid token only (the EOS, or the final
    token of a truncated response): it judges the whole response, which is
    only complete there [NDetails, "reward at the last token"].
    Padding gets reward 0 and kl 0.

    Note: [TRL]'s PPOv2 added the score one position *after* the last valid
    token (its `sequence_lengths_p1`); we follow [NDetails] and put it on
    the last valid token itself.

    Returns (rewards [B, T], kl [B, T]).
    """
    m = _bool(mask)
    kl = kl_penalty(logprobs, ref_logprobs, estimator)
    kl = torch.where(m, kl, torch.zeros_like(kl))
    rewards = -kl_coef * kl
    last = _last_valid_index(m)
    rows = torch.arange(rewards.shape[0], device=rewards.device)
    rewards[rows, last] += score.to(rewards.dtype)
    return rewards, kl


# --------------------------------------------------------------------------- #
# Generalised advantage estimation                                            #
# --------------------------------------------------------------------------- #
def gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    mask: torch.Tensor,
    gamma: float,
    lam: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimates and returns, [GAE] eq. 16:

        delta_t = r_t + gamma * V_{t+1} - V_t
        A_t     = delta_t + gamma * lam * A_{t+1}        (computed backwards)
        returns = A + V                                  (the value target)

    Each response is one episode: after its last valid token the episode has
    ended, so V beyond the mask is 0 (bootstrap 0) and padded rewards are 0.
    Padded positions therefore get A = 0 and returns = 0. Advantages are *not*
    whitened here; do it with `masked_whiten` [NDetails, TRL].

    Returns (advantages [B, T], returns [B, T]), both without gradient
    history of their own: they are targets, so call this under no_grad.
    """
    m = _bool(mask)
    values = torch.where(m, values, torch.zeros_like(values))
    rewards = torch.where(m, rewards, torch.zeros_like(rewards))
    T = rewards.shape[1]
    last_gae = torch.zeros_like(rewards[:, 0])
    advantages_reversed = []
    for t in reversed(range(T)):
        next_values = values[:, t + 1] if t < T - 1 else torch.zeros_like(values[:, t])
        delta = rewards[:, t] + gamma * next_values - values[:, t]
        last_gae = delta + gamma * lam * last_gae
        # Zero the padding so that it cannot carry anything back into the
        # episode (it holds 0 anyway for a right-padded mask; this keeps a
        # stray hole in the mask from leaking, too).
        last_gae = torch.where(m[:, t], last_gae, torch.zeros_like(last_gae))
        advantages_reversed.append(last_gae)
    advantages = torch.stack(advantages_reversed[::-1], dim=1)
    returns = advantages + values
    return advantages, returns


# --------------------------------------------------------------------------- #
# The two PPO losses                                                          #
# --------------------------------------------------------------------------- #
def policy_loss(
    new_logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_range: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """PPO's clipped surrogate, [Schulman17] eq. 7, as a loss to minimise:

        ratio = pi_new(a|s) / pi_old(a|s)
        loss  = mean_t max(-A_t * ratio_t, -A_t * clip(ratio_t, 1-eps, 1+eps))

    (max of the negatives = -min of the objectives.) Where the clipped term
    wins, its gradient is zero: the update stops pushing a token's probability
    further once it has moved by more than `clip_range` in the helpful
    direction. The mean is over all valid tokens of the batch [TRL].

    Returns, as detached scalars besides the loss:
    - clipfrac: share of valid tokens where the clipped term was chosen
      (strictly larger), as in [TRL] / [NDetails].
    - approx_kl: masked mean of k3 = (ratio - 1) - log ratio, an unbiased,
      non-negative estimate of KL(pi_old || pi_new) under the old policy's
      samples [KLblog]. ([TRL] logged k2 = 0.5 * log_ratio**2 instead, also
      unmasked; k3 is unbiased.)
    """
    m = _bool(mask)
    # Zero log-ratio on padding *before* exp: an inf there would make the
    # backward pass 0 * inf = nan even though the forward is masked.
    log_ratio = torch.where(m, new_logprobs - old_logprobs, torch.zeros_like(new_logprobs))
    advantages = torch.where(m, advantages, torch.zeros_like(advantages))
    ratio = torch.exp(log_ratio)
    pg_losses = -advantages * ratio
    pg_losses_clipped = -advantages * torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range)
    loss = masked_mean(torch.max(pg_losses, pg_losses_clipped), m)
    with torch.no_grad():
        clipfrac = masked_mean((pg_losses_clipped > pg_losses).to(loss.dtype), m)
        approx_kl = masked_mean((ratio - 1) - log_ratio, m)
    return loss, clipfrac, approx_kl


def value_loss(
    new_values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    clip_range_value: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Clipped value loss, as in OpenAI baselines' PPO2, [NDetails] and [TRL]:

        V_clip = old_values + clip(new_values - old_values, -eps_v, +eps_v)
        loss   = 0.5 * mean_t max((V_t - R_t)^2, (V_clip_t - R_t)^2)

    The max makes it pessimistic: a value prediction that moved further than
    `clip_range_value` (an absolute distance, in reward units) from the one
    used during rollout gets no gradient when moving it further would have
    looked like an improvement. The 0.5 makes the gradient (V - R).

    Returns (loss, vf_clipfrac): the share of valid tokens where the clipped
    error was strictly larger, detached.
    """
    m = _bool(mask)
    zeros = torch.zeros_like(new_values)
    new_values = torch.where(m, new_values, zeros)
    old_values = torch.where(m, old_values, zeros)
    returns = torch.where(m, returns, zeros)
    values_clipped = old_values + torch.clamp(new_values - old_values, -clip_range_value, clip_range_value)
    vf_losses = (new_values - returns) ** 2
    vf_losses_clipped = (values_clipped - returns) ** 2
    loss = 0.5 * masked_mean(torch.max(vf_losses, vf_losses_clipped), m)
    with torch.no_grad():
        vf_clipfrac = masked_mean((vf_losses_clipped > vf_losses).to(loss.dtype), m)
    return loss, vf_clipfrac


# --------------------------------------------------------------------------- #
# KL coefficient controllers                                                  #
# --------------------------------------------------------------------------- #
class AdaptiveKLController:
    """Adapt kl_coef so that the measured KL tracks a target, [Ziegler19] sec. 2.2:

        e_t    = clip(KL_t / target - 1, -0.2, 0.2)
        beta  <- beta * (1 + K_beta * e_t),   K_beta = n_steps / horizon

    A proportional controller: KL above target -> stronger leash. Clipping the
    error to +-0.2 keeps one odd batch from swinging beta far. `n_steps` is how
    many samples (episodes) the KL was measured on, so `horizon` is in the same
    unit: beta changes by at most a factor e^{+-0.2} every `horizon` samples.
    (As lm-human-preferences' `AdaptiveKLController` and [TRL]'s.)
    """

    def __init__(self, init_kl_coef: float, target: float, horizon: int):
        self.value = float(init_kl_coef)
        self.target = float(target)
        self.horizon = float(horizon)

    def update(self, current_kl: float, n_steps: int) -> float:
        proportional_error = min(max(float(current_kl) / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + proportional_error * n_steps / self.horizon
        return self.value

    def state_dict(self) -> dict:
        return {"value": self.value}

    def load_state_dict(self, state: dict) -> None:
        self.value = float(state["value"])


class FixedKLController:
    """A constant kl_coef, with the same interface as AdaptiveKLController."""

    def __init__(self, kl_coef: float):
        self.value = float(kl_coef)

    def update(self, current_kl: float, n_steps: int) -> float:
        return self.value

    def state_dict(self) -> dict:
        return {"value": self.value}

    def load_state_dict(self, state: dict) -> None:
        self.value = float(state["value"])


# --------------------------------------------------------------------------- #
# From logits                                                                 #
# --------------------------------------------------------------------------- #
def logprobs_from_logits(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[label] for each position: [B, T, V], [B, T] -> [B, T].

    Same as `log_softmax(logits, -1).gather(-1, labels[..., None])`, without
    materialising a second [B, T, V] tensor: for float32/64 we gather the label
    logit and subtract a logsumexp computed one row at a time; bf16/fp16
    logsumexp loses precision, so there we take log_softmax one row at a time
    [TRL `selective_log_softmax`]. The caller aligns the logits with the
    labels (logits at position t predict token t+1) and divides them by the
    sampling temperature first [NDetails, "temperature"]. Labels must be valid
    token ids (no -100) also at padding; mask the result instead.
    """
    if logits.dtype in (torch.float32, torch.float64):
        label_logits = torch.gather(logits, -1, labels.unsqueeze(-1)).squeeze(-1)
        logsumexp = torch.stack([torch.logsumexp(row, dim=-1) for row in logits])
        return label_logits - logsumexp
    rows = []
    for row_logits, row_labels in zip(logits, labels):
        row_logps = F.log_softmax(row_logits, dim=-1)
        rows.append(row_logps.gather(-1, row_labels.unsqueeze(-1)).squeeze(-1))
    return torch.stack(rows)


def entropy_from_logits(logits: torch.Tensor, chunk_size: int = 128) -> torch.Tensor:
    """Entropy of softmax(logits) per position, [..., V] -> [...].

        H = -sum_v p_v log p_v = logsumexp(z) - sum_v p_v z_v

    (the second form avoids log 0 where p underflows). Computed `chunk_size`
    positions at a time to bound the [*, V] temporaries, as [TRL] does.
    """
    flat = logits.reshape(-1, logits.shape[-1])
    out = []
    for chunk in flat.split(chunk_size):
        p = F.softmax(chunk, dim=-1)
        out.append(torch.logsumexp(chunk, dim=-1) - (p * chunk).sum(dim=-1))
    return torch.cat(out).reshape(logits.shape[:-1])


# --------------------------------------------------------------------------- #
# Diagnostics                                                                 #
# --------------------------------------------------------------------------- #
def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """1 - Var[returns - values] / Var[returns] over valid tokens, a scalar.

    1 means the value head predicts the returns perfectly, 0 no better than
    their mean, negative worse than that. NaN when the returns are constant
    (as CleanRL's PPO returns). A logging metric only.
    """
    m = _bool(mask)
    var_returns = masked_var(returns, m, unbiased=False)
    if var_returns == 0:
        return torch.tensor(float("nan"), dtype=returns.dtype, device=returns.device)
    return 1.0 - masked_var(returns - values, m, unbiased=False) / var_returns


# --------------------------------------------------------------------------- #
# EOS handling                                                                #
# --------------------------------------------------------------------------- #
def first_eos_mask(response_ids: torch.Tensor, eos_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask of valid response tokens, and whether each response stopped.

    Position t is valid iff no EOS occurs strictly before t: so the mask runs
    up to and including the first EOS, and over the whole row when there is
    none (a response cut off at the token limit). Everything after the first
    EOS is padding, even if the model kept generating, and even when the pad
    token *is* the EOS token -- a common setup [NDetails, "truncate after
    EOS"; TRL `truncate_response`].

    Returns (mask [B, T] long, has_eos [B] bool).
    """
    is_eos = response_ids == eos_id
    # Number of EOS tokens strictly before each position (exclusive cumsum).
    eos_before = is_eos.long().cumsum(dim=1) - is_eos.long()
    mask = (eos_before == 0).long()
    return mask, is_eos.any(dim=1)


def apply_missing_eos_penalty(scores: torch.Tensor, has_eos: torch.Tensor, penalty: float) -> torch.Tensor:
    """Subtract `penalty` (a positive number) from the score of every response
    that never emitted EOS, returning a new tensor.

    Otherwise the policy learns that rambling to the token limit is free;
    [NDetails] and [TRL `missing_eos_penalty`] penalise it the same way.
    """
    return scores - penalty * (~_bool(has_eos)).to(scores.dtype)


def shape_scores(raw: torch.Tensor, has_eos: torch.Tensor, norm: dict | None, missing_eos_penalty: float,
                 score_clip: float | None = None) -> torch.Tensor:
    """The score PPO maximises: normalised (``norm`` = mean/std on SFT samples, or None), minus
    ``missing_eos_penalty`` where the response never stopped [NDetails], clipped to +-``score_clip``."""
    s = (raw - norm["mean"]) / norm["std"] if norm is not None else raw
    s = apply_missing_eos_penalty(s, has_eos.to(s.device), missing_eos_penalty)
    return s.clamp(-score_clip, score_clip) if score_clip else s


def seed_for(*parts) -> int:
    """A seed from (seed, purpose, rank, step): every step re-seeds, so a resumed run draws exactly the same."""
    return zlib.crc32(repr(parts).encode())


def best_of_n_kl(n: int) -> float:
    """KL(best-of-n ‖ base) <= log n − (n−1)/n nats (Stiennon et al. 2020, appendix G.3): the analytic KL of
    keeping the best of n samples, which Gao et al. 2022 plot best-of-n against; Beirami et al. 2024 show it
    is an upper bound on the exact KL (equal when no two samples tie)."""
    return math.log(n) - (n - 1) / n
