"""Pieces every sampler shares: argument checks (class labels among them), the length of a chain started at t0, the
initial noise, eps_theta, abar_t and the previous timestep, the posterior variance beta_tilde and DDIM's sigma_t, P_t.

The schedulers own every schedule formula; what is here only reads `scheduler.alphas_cumprod`. beta_tilde and sigma_t
restate the variance the schedulers' steps sample with, which guidance and the DPM-Encoder need and they keep private.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
from diffusers.utils.torch_utils import randn_tensor

# callback(step, t, x_t, x0_hat): step index, timestep, current sample and predicted clean image, both (B,3,H,W) in [-1,1]
Callback = Optional[Callable[[int, int, torch.Tensor, torch.Tensor], None]]


def counted_from(callback: Callback, start: int) -> Callback:
    """callback with its step index counted from `start`, so that the stages of one call share one running index."""
    if callback is None:
        return None
    return lambda step, t, x_t, x0_hat: callback(start + step, t, x_t, x0_hat)


def check_num_inference_steps(num_inference_steps: int, scheduler) -> None:
    T = scheduler.config.num_train_timesteps
    if not isinstance(num_inference_steps, int) or not 1 <= num_inference_steps <= T:
        raise ValueError(f"num_inference_steps must be an integer from 1 to {T}; got {num_inference_steps!r}")


def check_batch_size(batch_size: int, limit: int = 64) -> None:
    if not isinstance(batch_size, int) or not 1 <= batch_size <= limit:
        raise ValueError(f"batch_size must be an integer from 1 to {limit}; got {batch_size!r}")


def class_label_list(class_labels, num_classes: int | None, batch_size: int | None = None,
                     what: str = "class_labels") -> list[int]:
    """class_labels (an int, a list of ints or a tensor) as a list of ints in 0..num_classes-1 (>= 0 when num_classes
    is None); an int stands for every one of batch_size samples, and a list must have batch_size entries when given."""
    if isinstance(class_labels, torch.Tensor):
        class_labels = class_labels.reshape(-1).tolist()
    if isinstance(class_labels, int) and not isinstance(class_labels, bool):
        class_labels = [class_labels] * (batch_size or 1)
    if not isinstance(class_labels, (list, tuple)) or not class_labels:
        raise ValueError(f"{what} must be a class index or a non-empty list of them, one per sample; got {class_labels!r}")
    if not all(isinstance(y, int) and not isinstance(y, bool) for y in class_labels):
        raise ValueError(f"{what} must be integers (class indices); got {class_labels!r}")
    if batch_size is not None and len(class_labels) != batch_size:
        raise ValueError(f"{what} must be one class index or a list of {batch_size} (one per sample); got {len(class_labels)}")
    if min(class_labels) < 0 or (num_classes is not None and max(class_labels) >= num_classes):
        allowed = "be >= 0" if num_classes is None else f"lie in 0..{num_classes - 1} ({num_classes} classes)"
        raise ValueError(f"{what} must {allowed}; got {list(class_labels)}")
    return list(class_labels)


def check_class_labels(unet, class_labels, batch_size: int) -> torch.Tensor | None:
    """class_labels (None, an int, or one int per image) -> (B,) long on the U-Net's device; None stays None (the null
    class of a class-conditional model, or no class at all). Raise ValueError for labels the U-Net cannot take."""
    if class_labels is None:
        return None
    num_classes = unet.config.num_class_embeds
    if num_classes is None:
        raise ValueError(
            "this model has no class embeddings (its config.num_class_embeds is None), so it takes no class labels; "
            "pass none, or use a class-conditional model such as shapes-16"
        )
    try:
        labels = class_label_list(class_labels, num_classes, batch_size)
    except ValueError as err:
        allowed = f"integers from 0 to {num_classes - 1} ({num_classes - 1} is the null class, unconditional)"
        raise ValueError(
            f"class labels must be one of the {allowed}, or a list of {batch_size} of them (one per image); "
            f"got {class_labels!r}"
        ) from err
    return torch.tensor(labels, dtype=torch.long, device=unet.device)  # (B,)


def chain_length(num_inference_steps: int, strength: float) -> int:
    """K, the steps of a chain started at t0: the sampler's last round(strength * num_inference_steps), at least 1."""
    return max(1, round(strength * num_inference_steps))


def sample_shape(unet, batch_size: int) -> tuple[int, int, int, int]:
    size = unet.config.sample_size
    height, width = (size, size) if isinstance(size, int) else size
    return (batch_size, unet.config.in_channels, height, width)


def initial_noise(unet, batch_size: int, generator, device) -> torch.Tensor:
    """x_T ~ N(0, I), drawn exactly as diffusers' DDPMPipeline/DDIMPipeline draw it: (B,C,H,W)."""
    return randn_tensor(sample_shape(unet, batch_size), generator=generator, device=device, dtype=unet.dtype)


def eps_theta(unet, x_t: torch.Tensor, t, class_labels: torch.Tensor | None = None) -> torch.Tensor:
    """The model's noise prediction eps_theta(x_t, t): (B,C,H,W) -> (B,C,H,W).

    A class-conditional UNet (config.num_class_embeds set; its last class is the null class of
    classifier-free training) samples unconditionally when no class_labels are given.
    """
    num_classes = unet.config.num_class_embeds
    if num_classes is not None and class_labels is None:
        class_labels = torch.full((x_t.shape[0],), num_classes - 1, device=x_t.device, dtype=torch.long)
    return unet(x_t, t, class_labels=class_labels).sample


def abar(scheduler, t) -> torch.Tensor:
    """abar_t = alphas_cumprod[t]; for t < 0 (past the last step) the scheduler's final value."""
    t = int(t)
    if t >= 0:
        return scheduler.alphas_cumprod[t]
    return scheduler.final_alpha_cumprod if hasattr(scheduler, "final_alpha_cumprod") else scheduler.one


def prev_timestep(scheduler, t) -> int:
    """The timestep the sampler steps to from t: t - T / num_inference_steps, as DDIMScheduler.step computes it (< 0 after the last)."""
    return int(t) - scheduler.config.num_train_timesteps // scheduler.num_inference_steps


def beta_tilde(abar_t: torch.Tensor, abar_prev: torch.Tensor) -> torch.Tensor:
    """beta_tilde = (1 - abar_prev) / (1 - abar_t) * (1 - abar_t / abar_prev), the variance of q(x_prev | x_t, x_0).

    DDPM's fixed_small Sigma_t, and DDIM's sigma_t^2 at eta = 1; a scalar tensor.
    """
    return (1 - abar_prev) / (1 - abar_t) * (1 - abar_t / abar_prev)


def sigma_t(scheduler, t, eta: float) -> torch.Tensor:
    """sigma_t = eta sqrt(beta_tilde_t), the noise level of DDIMScheduler.step(eta=eta) from t (Song et al. eq. 16)."""
    return eta * beta_tilde(abar(scheduler, t), abar(scheduler, prev_timestep(scheduler, t))).sqrt()


def P_t(x_t: torch.Tensor, eps: torch.Tensor, abar_t: torch.Tensor) -> torch.Tensor:
    """Predicted clean image P_t(eps) = (x_t - sqrt(1-abar_t) eps) / sqrt(abar_t), unclipped."""
    return (x_t - (1 - abar_t).sqrt() * eps) / abar_t.sqrt()

