"""Probes of h-space's properties (Kwon, Jeong & Uh, ICLR 2023, section 5): what the paper contrasts an edit
delta_h with, built from the pipeline's asymmetric reverse process without changing it.

- `EpsShiftPipeline`: the asymmetric step with P_t's eps shifted in eps-space instead of h-space,
      x_{t-1} = sqrt(abar_{t-1}) P_t(eps_t + shift(delta_eps_t, |delta_h_t|)) + D_t(eps_t),
      delta_eps_t = eps_theta(x_t | h_t + delta_h_t) - eps_theta(x_t | h_t),
  with `shift` choosing what is added: one image's delta_eps_t for every image (homogeneity) or random noise of a
  multiple of |delta_h_t| (robustness: the same norm as the noise put into h).
- Directions that wrap a direction (each an nn.Module the pipeline takes where it takes f_t):
  `Combination` (several directions at per-row coefficients: a grid of (s_1, s_2) in one batch), `NoisyDirection`
  (random noise of a multiple of |delta_h_t| instead of delta_h_t) and `RecordedDirection` (delta_h_t kept at every t).
- `additivity_gap`: how far the edit by two directions is from the sum of the two single edits (linear combination).
- `cosine_matrix`: cos(delta_h_t, delta_h_t') over the recorded timesteps (consistency).

h is (B,C,h,w), eps and images (B,3,H,W); a wrapper is called as the pipeline calls f_t, with t, or with the time
embedding temb (B,D) when the wrapped direction `reads_temb` (the official releases).
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from torch import nn

from .pipeline import AsyrpPipeline, delta_h, official_coefficient

# (delta_eps_t (B,3,H,W), |scale delta_h_t| (B,)) -> what is added to P_t's eps (B,3,H,W)
Shift = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class EpsShiftPipeline(AsyrpPipeline):
    """An AsyrpPipeline whose edited steps shift eps itself: P_t sees eps_t + shift(delta_eps_t, |delta_h_t|), where
    delta_eps_t is the change the direction's delta_h_t makes to each row's eps (set `shift` before calling)."""

    shift: Shift | None = None

    def eps_pair(self, x_t, t, direction, scales):
        """(eps_t + shift(delta_eps_t, |scale delta_h_t|), eps_t, |scale delta_h_t| (B,)) for x_t (B,3,H,W)."""
        eps_edit, eps, norms = super().eps_pair(x_t, t, direction, scales)
        return eps + self.shift(eps_edit - eps, norms), eps, norms


def shifted_pipeline(pipe: AsyrpPipeline, shift: Shift) -> EpsShiftPipeline:
    """An EpsShiftPipeline on pipe's U-Net and scheduler with the given shift, progress bars off."""
    shifted = EpsShiftPipeline(unet=pipe.unet, scheduler=pipe.scheduler)
    shifted.shift = shift
    shifted.set_progress_bar_config(disable=True)
    return shifted


def first_row_shift(delta_eps: torch.Tensor, delta_h_norms: torch.Tensor) -> torch.Tensor:
    """Image 1's delta_eps_t for every row: (B,3,H,W) -> (B,3,H,W), all rows delta_eps_t[0]."""
    return delta_eps[:1].expand_as(delta_eps)


def random_with_norm(like: torch.Tensor, norms: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Gaussian noise shaped like `like` (B,...), each row b of random direction and norm norms[b] (B,), drawn on
    the CPU from `generator` (the same noise on every device)."""
    z = torch.randn(like.shape, generator=generator, dtype=torch.float32).to(like)
    scale = norms.to(like) / z.flatten(1).norm(dim=1).clamp_min(1e-12)  # (B,)
    return z * scale.view(-1, *[1] * (z.ndim - 1))


def times(multiple, norms: torch.Tensor) -> torch.Tensor:
    """multiple (a number, or one per row (B,) on any device) * norms (B,), on norms' device."""
    return torch.as_tensor(multiple).to(norms) * norms


def noise_shift(multiple, generator: torch.Generator) -> Shift:
    """A shift adding eps-noise of random direction and norm `multiple` * |scale delta_h_t| per row (the norm of the
    noise NoisyDirection puts into h), fresh at every t; multiple: a number, or one per row (B,)."""
    return lambda delta_eps, delta_h_norms: random_with_norm(delta_eps, times(multiple, delta_h_norms), generator)


class DirectionWrapper(nn.Module):
    """A module the pipeline calls as it calls `direction`: forward(h, t) or, when the wrapped direction
    `reads_temb`, forward(h, temb). The pipeline sees a plain module, so the wrapper applies the official scale rule
    of a released direction (n_train_step / num_inference_steps, official_coefficient) itself."""

    def __init__(self, direction, num_inference_steps: int):
        super().__init__()
        self.direction, self.coefficient = direction, official_coefficient(direction, num_inference_steps)
        self.reads_temb = getattr(direction, "reads_temb", False)

    def delta(self, h: torch.Tensor, t_or_temb) -> torch.Tensor:
        """coefficient * delta_h_t of the wrapped direction: (B,C,h,w)."""
        return self.coefficient * delta_h(self.direction, h, t_or_temb, t_or_temb)


class NoisyDirection(DirectionWrapper):
    """Random noise instead of delta_h_t: a fresh random direction at every call with norm `multiple` * |delta_h_t|
    (multiple: a number, or one per row (B,))."""

    def __init__(self, direction, multiple, generator: torch.Generator, num_inference_steps: int):
        super().__init__(direction, num_inference_steps)
        self.multiple, self.generator = multiple, generator

    def forward(self, h, t_or_temb):
        delta = self.delta(h, t_or_temb)  # (B,C,h,w)
        return random_with_norm(delta, times(self.multiple, delta.flatten(1).norm(dim=1)), self.generator)


class RecordedDirection(DirectionWrapper):
    """The wrapped direction unchanged, each delta_h_t it returns (B,C,h,w) kept in `record` in call order."""

    def __init__(self, direction, num_inference_steps: int):
        super().__init__(direction, num_inference_steps)
        self.record: list[torch.Tensor] = []

    def forward(self, h, t_or_temb):
        delta = self.delta(h, t_or_temb)
        self.record.append(delta.detach().float().cpu())
        return delta


class Combination(nn.Module):
    """delta_h_t = sum_i c_i[b] delta_h_t^i for row b: directions (k of them) at per-row coefficients (k,B)."""

    def __init__(self, directions: Sequence[DirectionWrapper], coefficients: torch.Tensor):
        super().__init__()
        self.directions, self.coefficients = nn.ModuleList(directions), coefficients
        if len({d.reads_temb for d in directions}) > 1:
            raise ValueError("combine directions of one kind: all read t, or all the time embedding (the releases)")
        self.reads_temb = directions[0].reads_temb

    def forward(self, h, t_or_temb):
        c = self.coefficients.to(h).view(len(self.directions), -1, 1, 1, 1)  # (k,B,1,1,1)
        return sum(c_i * d.delta(h, t_or_temb) for c_i, d in zip(c, self.directions))


def combination(directions: Sequence, scales: Sequence[Sequence[float]], num_inference_steps: int) -> Combination:
    """The official combination rule on a grid: row b is sum_i s_i[b] / sqrt(k) * delta_h^i, each released direction
    also at n_train_step / num_inference_steps (official_coefficient); scales: one (s_1, ..., s_k) per row."""
    k = len(directions)
    wrapped = [DirectionWrapper(d, num_inference_steps) for d in directions]
    coefficients = torch.tensor(scales, dtype=torch.float32).T / math.sqrt(k)  # (k,B)
    return Combination(wrapped, coefficients)


def additivity_gap(edits: dict[tuple[float, float], torch.Tensor]) -> float:
    """|x(a,b) - x(a,0) - x(0,b) + x(0,0)| / |x(a,b) - x(0,0)| averaged over the cells with a, b != 0: how far the
    joint edit's change is from the sum of the single edits' changes; edits: (s_1, s_2) -> image (3,H,W), with (0, 0)
    and every (a, 0) and (0, b) among them. 0 when no cell has both scales non-zero."""
    base = edits[(0.0, 0.0)]
    gaps = [float((x - edits[(a, 0.0)] - edits[(0.0, b)] + base).norm() / (x - base).norm().clamp_min(1e-6))
            for (a, b), x in edits.items() if a and b]
    return sum(gaps) / len(gaps) if gaps else 0.0


def cosine_matrix(record: Sequence[torch.Tensor]) -> torch.Tensor:
    """cos(delta_h_t, delta_h_t') between every pair of recorded steps, averaged over rows: n x (B,C,h,w) -> (n,n)."""
    v = torch.stack([d.flatten(1).double() for d in record])  # (n,B,D)
    v = v / v.norm(dim=2, keepdim=True).clamp_min(1e-12)
    return torch.einsum("ibd,jbd->ijb", v, v).mean(dim=2).clamp(-1, 1).float()


def mean_off_diagonal(m: torch.Tensor) -> float:
    """The mean of a square matrix (n,n) off its diagonal; 1.0 for n = 1 (one step: nothing to compare)."""
    n = m.shape[0]
    return 1.0 if n < 2 else float((m.sum() - m.diagonal().sum()) / (n * n - n))
