"""The arithmetic of PPO on masked trajectories, kept apart from the loop so it can be tested by hand.

Every tensor here is over the *policy tokens* of one episode, in generation order: the output
tokens of turn 0, then those of turn 1, and so on. Prompt and observation tokens never appear:
the environment wrote them, so they are not actions and get no value, no advantage and no loss
([4] in ppo.py). Skipping them, rather than inserting zero-reward steps, is what makes GAE run
"over policy tokens only".
"""

from __future__ import annotations

import torch


def token_rewards(
    logprobs: torch.Tensor, ref_logprobs: torch.Tensor, task_reward: float, kl_coef: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token rewards: -kl_coef * (log pi - log pi_ref) at every token, plus the task reward at the
    last generated token. Returns (rewards, per-token KL estimate)."""
    kl = logprobs - ref_logprobs
    rewards = -kl_coef * kl
    if rewards.numel():
        rewards = rewards.clone()
        rewards[-1] += task_reward
    return rewards, kl


def gae(
    rewards: torch.Tensor, values: torch.Tensor, gamma: float = 1.0, lam: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over one episode's policy tokens (terminal after the last).

    advantage_t = sum_k (gamma lam)^k delta_{t+k},  delta_t = r_t + gamma V_{t+1} - V_t,  V_T = 0.
    Returns (advantages, returns = advantages + values).
    """
    T = rewards.shape[0]
    advantages = torch.zeros_like(rewards)
    last = torch.zeros((), dtype=rewards.dtype)
    for t in reversed(range(T)):
        next_value = values[t + 1] if t + 1 < T else torch.zeros((), dtype=values.dtype)
        delta = rewards[t] + gamma * next_value - values[t]
        last = delta + gamma * lam * last
        advantages[t] = last
    return advantages, advantages + values


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum() / mask.sum().clamp(min=1)


def masked_whiten(
    x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8
) -> torch.Tensor:
    """Normalise x to zero mean and unit variance over the masked entries (unbiased variance)."""
    mean = masked_mean(x, mask)
    n = mask.sum()
    var = ((x - mean) ** 2 * mask).sum() / (n - 1).clamp(min=1)
    out = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return out * mask


def policy_loss(logprobs, old_logprobs, advantages, mask, clip: float = 0.2):
    """Clipped surrogate; returns (loss, clip fraction, approx KL (k3 estimator))."""
    log_ratio = logprobs - old_logprobs
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1 - clip, 1 + clip)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    clipfrac = masked_mean((clipped > unclipped).float(), mask)
    approx_kl = masked_mean(ratio - 1 - log_ratio, mask)
    return loss, clipfrac, approx_kl


def value_loss(values, old_values, returns, mask, clip: float = 0.2):
    """Clipped value loss (as in PPO2 / TRL): the worse of the clipped and unclipped squared errors."""
    clipped = old_values + torch.clamp(values - old_values, -clip, clip)
    loss = 0.5 * masked_mean(torch.maximum((values - returns) ** 2, (clipped - returns) ** 2), mask)
    return loss


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> float:
    """1 - Var[returns - values] / Var[returns] over the masked entries."""
    m = mask.bool()
    y, v = returns[m], values[m]
    var_y = y.var(unbiased=False)
    if var_y <= 0:
        return float("nan")
    return float(1 - (y - v).var(unbiased=False) / var_y)


def group_baseline(rewards: list[float], group: int) -> list[float]:
    """GRPO-style baseline: each episode's is the mean reward of its group, the `group` consecutive
    episodes that played the same task. A group whose episodes all scored the same teaches nothing."""
    if group < 1 or len(rewards) % group:
        raise ValueError(f"{len(rewards)} episodes do not split into groups of {group}")
    out = []
    for g in range(0, len(rewards), group):
        mean = sum(rewards[g : g + group]) / group
        out += [mean] * group
    return out
