"""CLIP as a guide for an unconditional sampler: scores of the predicted clean image and their gradient at x_t.

A CLIP model has no notion of noise, so a score f is evaluated on x0_hat = P_t(eps_theta(x_t)) and
differentiated back to x_t (Dhariwal & Nichol 2021, with the judge on x0_hat):

    g = grad_{x_t} f(x_t, x0_hat(x_t))        f: log p(y | x0_hat) of a zero-shot classifier, or a text score

in one of two ways:
    grad_fixed_eps  eps held fixed, d x0_hat / d x_t = 1/sqrt(abar_t): one CLIP backward, no U-Net backward (cheap)
    grad_exact      through the U-Net: one U-Net forward with autograd and its backward (exact, ~3x the cost)
and applied to the DDIM step with `guided_eps` (section 2's rule, Algorithm 2); pass
`use_clipped_model_output=True` to DDIMScheduler.step when the schedule clips x0.

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


def clip_log_prob(judge: ClipJudge, text_emb: torch.Tensor, labels: torch.Tensor) -> Score:
    """log p(y | x0_hat) = log_softmax_k(logit_scale cos(CLIP(x0_hat), text_k))[y]: text_emb (K,D), labels (B,)."""

    def log_p(x_t: torch.Tensor, x0_hat: torch.Tensor) -> torch.Tensor:
        log_probs = judge.logits(x0_hat, text_emb).log_softmax(dim=-1)  # (B,K)
        return log_probs.gather(1, labels.view(-1, 1)).squeeze(1)

    return log_p


def clip_text_score(judge: ClipJudge, target_emb: torch.Tensor, source_emb: torch.Tensor | None = None) -> Score:
    """s(x0_hat) = logit_scale (cos(x0_hat, target) - cos(x0_hat, source)): toward the target text, away from the source.

    With a source text this is log p(target) - log p(source) of the two-prompt zero-shot classifier;
    without one, the target logit alone. target_emb, source_emb: (1,D) or (D,) unit vectors.
    """
    direction = (target_emb.reshape(-1) - (0 if source_emb is None else source_emb.reshape(-1))).float()  # (D,)

    def score(x_t: torch.Tensor, x0_hat: torch.Tensor) -> torch.Tensor:
        return judge.model.logit_scale.exp().float() * (judge.image_embeds(x0_hat) @ direction)

    return score


def grad_fixed_eps(score: Score, x_t: torch.Tensor, eps: torch.Tensor, abar_t: torch.Tensor) -> torch.Tensor:
    """g = grad_{x_t} f(x_t, P_t(eps)) with eps held fixed (so d x0_hat / d x_t = 1/sqrt(abar_t)): (B,C,H,W)."""
    with torch.enable_grad():
        x = x_t.detach().requires_grad_(True)
        value = score(x, P_t(x, eps.detach(), abar_t)).sum()
        return torch.autograd.grad(value, x)[0]


def grad_exact(
    score: Score, x_t: torch.Tensor, eps_fn: Callable[[torch.Tensor], torch.Tensor], abar_t: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """g = grad_{x_t} f(x_t, P_t(eps_theta(x_t))) through the U-Net; returns (g, eps_theta(x_t)), both (B,C,H,W).

    eps_fn(x) = eps_theta(x, t) at this step; its forward is reused as the step's noise prediction.
    """
    with torch.enable_grad():
        x = x_t.detach().requires_grad_(True)
        eps = eps_fn(x)
        value = score(x, P_t(x, eps, abar_t)).sum()
        return torch.autograd.grad(value, x)[0], eps.detach()


def guided_eps(eps: torch.Tensor, g: torch.Tensor, abar_t: torch.Tensor, scale: float) -> torch.Tensor:
    """DDIM classifier guidance: eps_hat = eps_theta(x_t) - sqrt(1 - abar_t) s g."""
    return eps - (1 - abar_t).sqrt() * scale * g.to(eps.dtype)
