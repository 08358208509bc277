"""Asyrp: the asymmetric reverse process (Kwon, Jeong & Uh, ICLR 2023, "Diffusion Models Already Have a Semantic
Latent Space"; the name is often misspelt Asyrrp).

An image is inverted to x_T by deterministic DDIM inversion, then decoded with a shift delta_h added to the U-Net's
bottleneck (h-space) in the predicted clean image only:
    x_{t-1} = sqrt(abar_{t-1}) P_t(eps_theta(x_t | h_t + delta_h_t)) + D_t(eps_theta(x_t))      for t >= t_edit
then plain DDIM (eta = 0) down to t_boost and stochastic DDIM (eta = 1) below it (quality boosting).

Vocabulary shared with the other pipelines: `invert(image) -> x_T` (the DDIM inversion), `__call__(image=... | x_T=...)`
returns an output with `.images` and honours `output_type` and `return_dict`; `callback(step, t, x_t, x0_hat)` counts
the steps of the whole call, `total_steps(...)` of them. Finding and learning directions is in
`pipelines.asyrp.directions`; the shift reaches h through `pipelines.asyrp.h_space`, per call.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import PIL.Image
import torch
from diffusers import DDIMScheduler, DiffusionPipeline
from diffusers.utils import BaseOutput
from torch import nn

from ..core.images import check_output_type, postprocess, to_model_input
from ..core.inversion import ddim_invert
from ..core.sampling import Callback, abar, check_num_inference_steps, counted_from, eps_theta, prev_timestep
from ..core.schedulers import sampler
from .h_space import edit_h_space, h_space_shape
from .interval import DEFAULT_INTERVAL


def delta_h(direction, h: torch.Tensor, t, temb: torch.Tensor | None = None) -> torch.Tensor:
    """delta_h_t for h (B,C,h,w): a tensor (C,h,w) broadcast to every sample, f_t(h, t) for a module (f(h, temb) for
    one that `reads_temb`, temb (B,D) being the U-Net's time embedding, as the official releases), a list summed."""
    if direction is None:
        return torch.zeros_like(h)
    if isinstance(direction, (list, tuple)):
        return sum(delta_h(d, h, t, temb) for d in direction)
    if isinstance(direction, torch.Tensor):
        return direction.to(h).expand_as(h)
    return direction(h, temb) if getattr(direction, "reads_temb", False) else direction(h, t)


def official_coefficient(direction, num_inference_steps: int) -> float:
    """c / s of the official scale rule for released f_t (modules with `n_train_step`): c = s * n_train_step /
    n_test_step, each of k combined directions at 1/sqrt(k), so one s gives one edit at any number of steps.
    1 for every other direction."""
    directions = list(direction) if isinstance(direction, (list, tuple)) else [direction]
    trained = {getattr(d, "n_train_step", None) for d in directions}
    if trained <= {None}:
        return 1.0
    return trained.pop() / num_inference_steps / math.sqrt(len(directions))


def is_zero(direction) -> bool:
    """True for no direction or tensors that are all zero (an f_t module is never assumed to be zero)."""
    if direction is None:
        return True
    if isinstance(direction, (list, tuple)):
        return all(is_zero(d) for d in direction)
    return isinstance(direction, torch.Tensor) and not bool(direction.any())


def check_direction(direction, shape: tuple[int, int, int]) -> None:
    if isinstance(direction, (list, tuple)):
        for d in direction:
            check_direction(d, shape)
    elif isinstance(direction, torch.Tensor):
        if tuple(direction.shape) != shape:
            raise ValueError(f"a direction tensor must have the mid-block's shape {shape} (C,h,w); got {tuple(direction.shape)}")
    elif not isinstance(direction, nn.Module) and direction is not None:
        raise ValueError(f"direction must be None, a tensor of shape {shape}, an f_t module or a list of them; got {type(direction).__name__}")
    if isinstance(direction, (list, tuple)) and len({getattr(d, "n_train_step", None) for d in direction}) > 1:
        raise ValueError("released Asyrp directions combine only with each other (their scale is n_train_step / "
                         "num_inference_steps / sqrt(k)); edit with the others in a second run")


def check_interval(t_edit: int, t_boost: int, T: int) -> None:
    if not isinstance(t_edit, int) or not isinstance(t_boost, int) or not 0 <= t_boost <= t_edit <= T:
        raise ValueError(
            f"need 0 <= t_boost <= t_edit <= {T} (whole numbers); got t_edit={t_edit!r}, t_boost={t_boost!r}. "
            f"t_edit = {T} switches editing off, t_boost = 0 switches quality boosting off."
        )


def check_scales(scale) -> list[float]:
    """scale (a number or a non-empty list of numbers) as a list of floats."""
    scales = [scale] if isinstance(scale, (int, float)) else list(scale)
    if not scales or not all(isinstance(s, (int, float)) for s in scales):
        raise ValueError(f"scale must be a number or a non-empty list of numbers; got {scale!r}")
    return [float(s) for s in scales]


def asymmetric_step(ddim: DDIMScheduler, eps_edit, eps, t, x_t) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """x_{t-1} = sqrt(abar_{t-1}) P_t(eps_edit) + D_t(eps) -> (x_{t-1}, P_t(eps_edit), P_t(eps)), all (B,3,H,W).

    Written as the DDIM step of eps plus sqrt(abar_{t-1}) (P_t(eps_edit) - P_t(eps)), so equal eps give the DDIM
    step exactly; P_t is clipped as the scheduler clips.
    """
    out = ddim.step(eps, t, x_t, eta=0.0)
    p_edit = ddim.step(eps_edit, t, x_t, eta=0.0).pred_original_sample
    abar_prev = abar(ddim, prev_timestep(ddim, t))
    return out.prev_sample + abar_prev.sqrt() * (p_edit - out.pred_original_sample), p_edit, out.pred_original_sample


@dataclass
class AsyrpPipelineOutput(BaseOutput):
    """images: one edit per image and scale (image-major: image b at scale k is b * len(scales) + k);
    x_T: the latents (B,3,H,W) they start from; delta_h_norms: {t: (B*S,)} the norm of the shift s * delta_h_t
    added to h at each edited timestep, per output (empty when nothing is edited)."""

    images: list[PIL.Image.Image] | torch.Tensor
    x_T: torch.Tensor
    delta_h_norms: dict[int, torch.Tensor] | None = None


class AsyrpPipeline(DiffusionPipeline):
    """Semantic edits of real images in h-space of a frozen unconditional DDPM (unet + any scheduler of its schedule).

    The pipeline samples with its own unclipped DDIM whatever the scheduler's clip_sample: the inversion runs the
    DDIM step backwards, which a clipped P_t does not undo, so only unclipped decoding gives the image back at scale 0.
    """

    def __init__(self, unet, scheduler):
        super().__init__()
        self.register_modules(unet=unet, scheduler=scheduler)

    @property
    def h_shape(self) -> tuple[int, int, int]:
        return h_space_shape(self.unet)

    def ddim(self, num_inference_steps: int) -> DDIMScheduler:
        """A fresh, unclipped DDIM sampler of this model's noise schedule."""
        return sampler("ddim", self.scheduler.config, num_inference_steps, clip_sample=False)

    def total_steps(self, *, num_inference_steps: int, inverting: bool = True) -> int:
        """The callback's steps in one call: the inversion's (when it inverts an image) and the decoding's."""
        return num_inference_steps * (2 if inverting else 1)

    def check_inputs(self, *, image, x_T, direction, scale, t_edit, t_boost, num_inference_steps, output_type) -> list[float]:
        """Every argument of __call__, before the first U-Net evaluation; the scales as a list."""
        if (image is None) == (x_T is None):
            raise ValueError("give either an image to edit or its inverted latent x_T, not both")
        check_interval(t_edit, t_boost, self.scheduler.config.num_train_timesteps)
        check_num_inference_steps(num_inference_steps, self.scheduler)
        check_direction(direction, self.h_shape)
        check_output_type(output_type)
        return check_scales(scale)

    @torch.no_grad()
    def invert(self, image, *, num_inference_steps: int = 40, callback: Callback = None) -> torch.Tensor:
        """x_T = DDIM_inversion(x_0), eta = 0, unclipped: an image (PIL, path or (B,3,H,W) in [0,1]) -> (B,3,H,W)."""
        check_num_inference_steps(num_inference_steps, self.scheduler)
        x0 = to_model_input(image, self.unet.config.sample_size, self._execution_device, self.unet.dtype)  # [-1,1]
        return ddim_invert(lambda x, t: eps_theta(self.unet, x, t), self.scheduler.config, x0, num_inference_steps,
                           callback=callback, clip_sample=False)

    def eps_pair(self, x_t: torch.Tensor, t, direction, scales: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(eps_theta(x_t | h_t + scale * delta_h_t), eps_theta(x_t), |scale * delta_h_t| (B,)) in one U-Net call on
        the batch [x_t; x_t]."""
        B = x_t.shape[0]
        norms = []

        def shift(h, temb):  # h: (2B,C,h,w), temb: (2B,D); only the first B rows are edited
            delta = scales.to(h) * delta_h(direction, h[:B], t, temb[:B])
            norms.append(delta.detach().float().flatten(1).norm(dim=1))
            return torch.cat([delta, torch.zeros_like(delta)])

        with edit_h_space(self.unet, shift):
            eps = eps_theta(self.unet, torch.cat([x_t, x_t]), t)
        return eps[:B], eps[B:], norms[0]

    def reverse_process(self, x_T: torch.Tensor, *, direction, scales: torch.Tensor, t_edit: int, t_boost: int,
                        num_inference_steps: int, generator: torch.Generator | None = None,
                        callback: Callback = None, delta_h_norms: dict | None = None) -> torch.Tensor:
        """x_T (B,3,H,W) -> x_0 (B,3,H,W) in [-1,1], row b edited with scales[b] (B,1,1,1) times `direction`:
        the asymmetric reverse process while t >= t_edit, DDIM (eta = 0) down to t_boost, then eta = 1.
        Differentiable in the direction's parameters when autograd is on (directions.learning learns through it).
        delta_h_norms, when given, receives {t: |c * delta_h_t| (B,)} at every edited step, c = scales times the
        official scale rule for released directions (`official_coefficient`)."""
        editing = not is_zero(direction) and bool(scales.any())
        scales = scales * official_coefficient(direction, num_inference_steps)
        ddim = self.ddim(num_inference_steps)
        x = x_T
        for step, t in enumerate(self.progress_bar(ddim.timesteps)):
            if editing and t >= t_edit:
                # asymmetric reverse process: only P_t sees the shifted h
                eps_edit, eps, norms = self.eps_pair(x, t, direction, scales)
                x, x0_hat, _ = asymmetric_step(ddim, eps_edit, eps, t, x)
                if delta_h_norms is not None:
                    delta_h_norms[int(t)] = norms.cpu()
            else:
                # DDIM, eta = 0 down to t_boost, then eta = 1 (quality boosting)
                eta = 1.0 if t < t_boost else 0.0
                out = ddim.step(eps_theta(self.unet, x, t), t, x, eta=eta, generator=generator)
                x, x0_hat = out.prev_sample, out.pred_original_sample
            if callback is not None:
                callback(step, int(t), x, x0_hat)
        return x

    @torch.no_grad()
    def __call__(
        self,
        image=None,
        x_T: torch.Tensor | None = None,
        direction=None,
        scale: float | Sequence[float] = 1.0,
        t_edit: int = DEFAULT_INTERVAL[0],
        t_boost: int = DEFAULT_INTERVAL[1],
        num_inference_steps: int = 40,
        generator: torch.Generator | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        callback: Callback = None,
    ):
        """Edit `image` (or the latent `x_T` of an earlier `invert`) along `direction`; one output per value of
        `scale` (a list gives a strip of edits).

        image: PIL image, path or (B,3,H,W) tensor in [0,1]; x_T: (B,3,H,W) from `invert` with the same steps.
        direction: None, a tensor (C,h,w) shaped like the mid-block output, an f_t module (h, t) -> delta_h, or a list
        of those (they add); scale multiplies it (negative reverses it). With no direction, a zero one or scale 0 this
        is DDIM sampling from the inverted x_T (eta = 1 below t_boost): the image again when t_boost = 0.
        """
        scales = self.check_inputs(image=image, x_T=x_T, direction=direction, scale=scale, t_edit=t_edit,
                                   t_boost=t_boost, num_inference_steps=num_inference_steps, output_type=output_type)

        # 1. x_T = DDIM_inversion(x_0), unless given
        offset = 0
        if x_T is None:
            x_T = self.invert(image, num_inference_steps=num_inference_steps, callback=callback)  # (B,3,H,W)
            offset = num_inference_steps

        # 2. every image at every scale: row b * S + k is image b at scales[k]
        s = torch.tensor(scales, device=x_T.device).repeat(len(x_T)).view(-1, 1, 1, 1)  # (B*S,1,1,1)
        x = x_T.repeat_interleave(len(scales), dim=0)  # (B*S,3,H,W)

        # 3. the asymmetric reverse process over [T, t_edit], DDIM below, quality boosting below t_boost
        norms = {}
        x = self.reverse_process(
            x, direction=direction, scales=s, t_edit=t_edit, t_boost=t_boost, num_inference_steps=num_inference_steps,
            generator=generator, callback=counted_from(callback, offset), delta_h_norms=norms,
        )

        images = postprocess(x, output_type)
        if not return_dict:
            return images, x_T, norms
        return AsyrpPipelineOutput(images=images, x_T=x_T, delta_h_norms=norms)
