"""Directions learned from two texts (Kwon, Jeong & Uh, ICLR 2023, §3.3): a global delta_h or the implicit f_t,
trained through the asymmetric reverse process with the paper's loss, CLIP's directional loss plus L1 to the
unedited prediction."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from ...core.sampling import eps_theta
from ..h_space import edit_h_space
from ..pipeline import AsyrpPipeline, asymmetric_step, check_interval, delta_h
from .f_t import DeltaBlock

OPTIMIZERS = {"adam": torch.optim.Adam, "sgd": torch.optim.SGD}


def directional_clip_loss(judge, x_edit: torch.Tensor, x_src: torch.Tensor, text_delta: torch.Tensor) -> torch.Tensor:
    """L_direction = 1 - cos(E_I(x_edit) - E_I(x_src), E_T(target) - E_T(source)): (B,3,H,W) x2 in [-1,1], (D,) -> (B,)."""
    image_delta = judge.image_embeds(x_edit) - judge.image_embeds(x_src)  # (B,D)
    return 1 - F.cosine_similarity(image_delta, text_delta.reshape(1, -1).expand_as(image_delta), dim=-1)


def edit_losses(pipe: AsyrpPipeline, x_T, direction, judge, text_delta, *, t_edit: int, num_inference_steps: int,
                clip_weight: float = 1.0, l1_weight: float = 3.0, optimizer=None,
                should_stop: Callable[[], bool] | None = None) -> list[float]:
    """Walk the edit interval [T, t_edit] from x_T; at each t the loss clip_weight L_direction(P_t^edit, P_t^source)
    + l1_weight |P_t^edit - P_t^source|_1 (per pixel mean). With an optimizer, step it at every t. Returns the
    CLIP directional losses (one float per t)."""
    losses, x = [], x_T
    ddim = pipe.ddim(num_inference_steps)
    for t in ddim.timesteps:
        if t < t_edit or (should_stop is not None and should_stop()):
            break
        with torch.no_grad():
            eps = eps_theta(pipe.unet, x, t)
        with torch.set_grad_enabled(optimizer is not None), edit_h_space(pipe.unet, lambda h, temb: delta_h(direction, h, t, temb)):
            eps_edit = eps_theta(pipe.unet, x, t)
        x_prev, p_edit, p_src = asymmetric_step(ddim, eps_edit, eps, t, x)
        with torch.set_grad_enabled(optimizer is not None):
            l_dir = directional_clip_loss(judge, p_edit, p_src, text_delta).mean()
            loss = clip_weight * l_dir + l1_weight * (p_edit - p_src).abs().mean()
        if optimizer is not None:
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        losses.append(l_dir.item())
        x = x_prev.detach()
    return losses


def text_delta(judge, source: str, target: str, device) -> torch.Tensor:
    """E_T(target) - E_T(source): (D,)."""
    text = judge.text_embeds([source, target])
    return (text[1] - text[0]).to(device)


def learn_direction(
    pipe: AsyrpPipeline,
    images,
    judge,
    source: str,
    target: str,
    *,
    kind: str = "implicit",
    t_edit: int = 500,
    num_inference_steps: int = 40,
    iterations: int = 5,
    lr: float | None = None,
    optimizer: str = "adam",
    batch_size: int | None = None,
    clip_weight: float = 1.0,
    l1_weight: float = 3.0,
    x_T: torch.Tensor | None = None,
    prepare: Callable | None = None,
    progress: Callable[[int, int, float], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
):
    """Learn delta_h from `source` to `target` text on `images` with the paper's loss (CLIP directional + L1).
    kind "global": one tensor delta_h (C,h,w); "implicit": f_t, a DeltaBlock. x_T: the images' latents when already
    encoded. optimizer "adam" (lr 0.01 for f_t, 0.5 for delta_h) or "sgd" (the official code's, lr 0.5); each
    iteration walks [T, t_edit] once per batch of `batch_size` images (None: all at once), stepping at every t.
    prepare(f_t, optimizer) -> (f_t, optimizer) wraps them for data-parallel learning (accelerate's
    Accelerator.prepare; f_t only); the unwrapped f_t is returned.
    progress(iteration, iterations, mean directional loss) after each pass; should_stop() ends early."""
    if kind not in ("global", "implicit"):
        raise ValueError(f"kind {kind!r} is not supported; use 'global' (one delta_h) or 'implicit' (f_t)")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer {optimizer!r} is not supported; use {' or '.join(map(repr, OPTIMIZERS))}")
    if not isinstance(iterations, int) or iterations < 1:
        raise ValueError(f"iterations must be a whole number >= 1; got {iterations!r}")
    check_interval(t_edit, 0, pipe.scheduler.config.num_train_timesteps)
    device = pipe._execution_device
    if x_T is None:
        x_T = pipe.invert(images, num_inference_steps=num_inference_steps)
    delta_text = text_delta(judge, source, target, device)
    direction = (torch.zeros(pipe.h_shape, device=device, dtype=torch.float32, requires_grad=True) if kind == "global"
                 else DeltaBlock(pipe.h_shape[0]).to(device))
    params = [direction] if kind == "global" else list(direction.parameters())
    if any(p.requires_grad for p in pipe.unet.parameters()):  # a U-Net of the caller's own; a loaded one is frozen
        pipe.unet.requires_grad_(False)
    lr = (0.5 if kind == "global" or optimizer == "sgd" else 0.01) if lr is None else lr
    edited, optimizer = direction, OPTIMIZERS[optimizer](params, lr=lr)
    if prepare is not None:
        edited, optimizer = prepare(direction, optimizer)
    for iteration in range(iterations):
        losses = []
        for batch in x_T.split(batch_size or len(x_T)):  # (b,3,H,W)
            losses += edit_losses(pipe, batch, edited, judge, delta_text, t_edit=t_edit,
                                  num_inference_steps=num_inference_steps, clip_weight=clip_weight,
                                  l1_weight=l1_weight, optimizer=optimizer, should_stop=should_stop)
        if progress is not None and losses:
            progress(iteration + 1, iterations, sum(losses) / len(losses))
        if should_stop is not None and should_stop():
            break
    return direction.detach() if kind == "global" else direction.eval().requires_grad_(False)
