"""Directions found without text: the principal directions of h over random x_t (what the model varies most), and
the mean difference of h between two groups of images (Haas et al. 2023)."""

from __future__ import annotations

import math

import torch

from ...core.sampling import check_num_inference_steps, eps_theta, initial_noise
from ..h_space import record_h
from ..pipeline import AsyrpPipeline, check_interval

PCA_BATCH = 4  # noise images per U-Net call when reading h for principal directions: a 256 px batch of 32 needs ~14 GB


def principal_axes(h: torch.Tensor, k: int) -> torch.Tensor:
    """Top-k principal directions of h over samples, each scaled to one standard deviation: (N,C,h,w) -> (k,C,h,w)."""
    n = h.shape[0]
    if not 1 <= k < n:
        raise ValueError(f"k must be from 1 to {n - 1} (one less than the number of samples); got {k}")
    centred = h.flatten(1).float() - h.flatten(1).float().mean(0)  # (N,C*h*w)
    _, singular, v_h = torch.linalg.svd(centred, full_matrices=False)
    std = singular[:k] / math.sqrt(n - 1)
    return (v_h[:k] * std[:, None]).reshape(k, *h.shape[1:]).to(h.dtype)


@torch.no_grad()
def principal_directions(pipe: AsyrpPipeline, *, k: int = 8, num_samples: int = 32, t: int | None = None,
                         generator: torch.Generator | None = None) -> torch.Tensor:
    """The top-k principal directions of h_t over `num_samples` random x_t at timestep t (default: the first sampling
    step, where Asyrp edits): (k,C,h,w), each one standard deviation long. No text needed. h is read PCA_BATCH
    samples per U-Net call, so memory stays that of a small batch."""
    t = pipe.scheduler.config.num_train_timesteps - 1 if t is None else t
    x_t = initial_noise(pipe.unet, num_samples, generator, pipe._execution_device)  # (N,3,H,W)
    store: list[torch.Tensor] = []  # one (<=PCA_BATCH,C,h,w) per call
    with record_h(pipe.unet, store):
        for batch in x_t.split(PCA_BATCH):
            eps_theta(pipe.unet, batch, t)
    return principal_axes(torch.cat(store), k)


@torch.no_grad()
def mean_h(pipe: AsyrpPipeline, images, *, t_edit: int, num_inference_steps: int = 40) -> torch.Tensor:
    """The mean of h_t over `images` and over t in [T, t_edit] along each image's own DDIM trajectory
    (inverted, then sampled back with eta = 0) -> (C,h,w)."""
    x = pipe.invert(images, num_inference_steps=num_inference_steps)  # (B,3,H,W) = x_T
    ddim = pipe.ddim(num_inference_steps)
    store: list[torch.Tensor] = []  # one (B,C,h,w) per visited t
    with record_h(pipe.unet, store):
        for t in ddim.timesteps:
            if t < t_edit:
                break
            x = ddim.step(eps_theta(pipe.unet, x, t), t, x, eta=0.0).prev_sample
    return torch.stack(store).float().mean(dim=(0, 1))


def mean_difference_direction(pipe: AsyrpPipeline, positives, negatives, *, t_edit: int,
                              num_inference_steps: int = 40) -> torch.Tensor:
    """delta_h = E[h_t | attribute] - E[h_t | no attribute] over t in [T, t_edit] (Haas et al. 2023): (C,h,w).

    positives / negatives: images with and without the attribute; scale 1 moves h by the gap between the two
    groups' means, so negative scales move toward the negatives."""
    check_interval(t_edit, 0, pipe.scheduler.config.num_train_timesteps)
    check_num_inference_steps(num_inference_steps, pipe.scheduler)
    return (mean_h(pipe, positives, t_edit=t_edit, num_inference_steps=num_inference_steps)
            - mean_h(pipe, negatives, t_edit=t_edit, num_inference_steps=num_inference_steps))
