"""Deterministic DDIM inversion (Song et al. 2021, eq. 13 run backwards): the one inversion that Asyrp and DDIB share.

    x_t = sqrt(abar_t) P_s(eps(x_s, t)) + sqrt(1 - abar_t) eps(x_s, t)        s -> t, the DDIM sampler's timesteps
                                                                              visited upwards
eps evaluated at the lower level x_s with the higher timestep t, as diffusers' DDIMInverseScheduler does; decoding
the result with DDIMScheduler of the same steps and eta = 0 gives x_0 back up to the approximation eps(x_s) ~ eps(x_t).
"""

from __future__ import annotations

from typing import Callable

import torch

from .sampling import Callback
from .schedulers import sampler

Eps = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x_t (B,C,H,W), t) -> eps_theta(x_t, t | c)


def ddim_invert(eps_of: Eps, scheduler_config, x0: torch.Tensor, num_inference_steps: int, *,
                steps: int | None = None, callback: Callback = None, **overrides) -> torch.Tensor:
    """x_0 (B,C,H,W) -> x_t (B,C,H,W) by DDIM inversion over the first `steps` (None: all) of the
    num_inference_steps-step sampler's timesteps, counted upwards: the sampler of `scheduler_config` with
    `overrides` (clip_sample=False for an inversion that decoding undoes). callback(step, t, x_t, x0_hat)."""
    inverse = sampler("ddim_inverse", scheduler_config, num_inference_steps, **overrides)
    x = x0
    for step, t in enumerate(inverse.timesteps[:steps]):
        out = inverse.step(eps_of(x, t), t, x)
        x = out.prev_sample
        if callback is not None:
            callback(step, int(t), x, out.pred_original_sample)
    return x
