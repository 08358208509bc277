"""Scores to climb, their gradient at x_t, and the two guidance transforms (Dhariwal & Nichol 2021).

A score f(x_t, x0_hat) -> (B,) is a log-probability log p(y | x_t) (a classifier) or a CLIP text score of the
predicted clean image x0_hat = P_t(eps_theta(x_t)). Its gradient g = grad_{x_t} f(x_t, x0_hat(x_t)) is taken in one
of two ways, `gradient`:
    "exact"      through the U-Net: one U-Net forward with autograd and its backward (exact, ~3x the cost)
    "fixed_eps"  eps held fixed, d x0_hat / d x_t = 1/sqrt(abar_t): no U-Net backward (cheap)
and applied by one of the paper's two rules:
    guided_mean  Algorithm 1 (DDPM):  mu + s Sigma g
    guided_eps   Algorithm 2 (DDIM):  eps - sqrt(1 - abar_t) s g
(with a clipping schedule, pass `use_clipped_model_output=True` to DDIMScheduler.step after guided_eps).

x0_hat is left unclipped here so the gradient does not vanish where the prediction leaves [-1,1].
All images are (B,3,H,W) in [-1,1]; scores are (B,).
"""

from __future__ import annotations

from typing import Callable

import torch

from .clip import ClipJudge
from .sampling import P_t

# f(x_t, x0_hat) -> (B,): the log-probability or score to climb; differentiable in both
Score = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
GRADIENTS = ("exact", "fixed_eps")


def check_gradient(gradient: str) -> None:
    if gradient not in GRADIENTS:
        raise ValueError(f"gradient {gradient!r} is not supported; use 'exact' (through the U-Net) or 'fixed_eps' (cheap)")


def clip_text_score(judge: ClipJudge, target_emb: torch.Tensor, source_emb: torch.Tensor | None = None) -> Score:
    """s(x0_hat) = logit_scale (cos(x0_hat, target) - cos(x0_hat, source)): toward the target text, away from the source.

    With a source text this is log p(target) - log p(source) of the two-prompt zero-shot classifier;
    without one, the target logit alone. target_emb, source_emb: (1,D) or (D,) unit vectors.
    """
    direction = (target_emb.reshape(-1) - (0 if source_emb is None else source_emb.reshape(-1))).float()  # (D,)

    def score(x_t: torch.Tensor, x0_hat: torch.Tensor) -> torch.Tensor:
        return judge.model.logit_scale.exp().float() * (judge.image_embeds(x0_hat) @ direction)

    return score


def score_gradient(score: Score, x_t: torch.Tensor, eps_fn: Callable[[torch.Tensor], torch.Tensor],
                   abar_t: torch.Tensor, gradient: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(g, eps_theta(x_t)), g = grad_{x_t} score(x_t, P_t(eps_theta(x_t))), both (B,C,H,W) in x_t's dtype.

    eps_fn(x) = eps_theta(x, t) at this step; its forward is also the step's noise prediction. gradient "exact"
    differentiates through it, "fixed_eps" holds its output fixed (d x0_hat / d x_t = 1/sqrt(abar_t)).
    """
    with torch.enable_grad():
        x = x_t.detach().requires_grad_(True)
        if gradient == "exact":
            eps = eps_fn(x)
        else:
            with torch.no_grad():
                eps = eps_fn(x_t)
        value = score(x, P_t(x, eps, abar_t)).sum()
        return torch.autograd.grad(value, x)[0].to(x_t.dtype), eps.detach()


def guided_mean(mu: torch.Tensor, Sigma: torch.Tensor, g: torch.Tensor, scale: float) -> torch.Tensor:
    """Algorithm 1 (DDPM): the mean shifted along the gradient, mu + s Sigma g."""
    return mu + (scale * Sigma * g).to(mu.dtype)


def guided_eps(eps: torch.Tensor, g: torch.Tensor, abar_t: torch.Tensor, scale: float) -> torch.Tensor:
    """Algorithm 2 (DDIM): the noise prediction shifted against the gradient, eps_hat = eps - sqrt(1 - abar_t) s g."""
    return eps - (1 - abar_t).sqrt() * scale * g.to(eps.dtype)
