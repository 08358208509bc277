"""ILVR: Iterative Latent Variable Refinement (Choi et al., ICCV 2021, Algorithm 1).

At every conditioned step the low frequencies of the DDPM proposal x'_{t-1} are replaced by those of the
reference noised to the same level:  x_{t-1} = phi_N(y_{t-1}) + (I - phi_N)(x'_{t-1}).
With a class-conditional model the proposal may come from a class y*: x'_{t-1} ~ p_theta(x_{t-1} | x_t, y*), the
reference then keeping the layout while the class sets what the model draws in it.
"""

from __future__ import annotations

from dataclasses import dataclass

import PIL.Image
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, DiffusionPipeline
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor

from .core.images import check_output_type, postprocess, to_model_input
from .core.sampling import (Callback, check_batch_size, check_class_labels, check_num_inference_steps, eps_theta,
                            initial_noise, prev_timestep)
from .core.schedulers import sampler

DOWN_FACTORS = (2, 4, 8, 16, 32, 64)


def phi_N(x: torch.Tensor, N: int) -> torch.Tensor:
    """Linear low-pass filter phi_N(x) = upsample_N(downsample_N(x)): (B,C,H,W) -> (B,C,H,W).

    Bicubic with antialiasing both ways, the closest torch match to the resizer of the official code
    (Keys cubic, a = -0.5). Computed in fp32 so fp16 models filter the same way.
    """
    height, width = x.shape[-2:]
    kwargs = dict(mode="bicubic", antialias=True, align_corners=False)
    low = F.interpolate(x.float(), size=(height // N, width // N), **kwargs)
    return F.interpolate(low, size=(height, width), **kwargs).to(x.dtype)


def check_ilvr_args(down_factor: int, range_t: int, size: int, T: int) -> None:
    allowed = [n for n in DOWN_FACTORS if size % n == 0 and n < size]
    if down_factor not in allowed:
        raise ValueError(
            f"down_factor {down_factor!r} is not allowed for {size}x{size} images; use one of "
            f"{', '.join(map(str, allowed))} (a power of two that divides the image size)"
        )
    if not isinstance(range_t, int) or not 0 <= range_t <= T:
        raise ValueError(
            f"range_t must be an integer from 0 (condition every step) to {T} (no conditioning); got {range_t!r}"
        )


@dataclass
class FrequencySplit:
    """One conditioned step of the first sample, split as the refinement sees it; every image (3,H,W) in [-1,1]:
    x_{t-1} = reference_low + proposal_high, where proposal_low is what the refinement threw away."""

    step: int
    t: int
    proposal_low: torch.Tensor  # phi_N(x'_{t-1}): the model's own low frequencies, replaced
    reference_low: torch.Tensor  # phi_N(y_{t-1}): the noised reference's low frequencies, put in their place
    proposal_high: torch.Tensor  # (I - phi_N)(x'_{t-1}): the high frequencies the model keeps
    x_prev: torch.Tensor  # x_{t-1}


@dataclass
class ILVRPipelineOutput(BaseOutput):
    """images: the samples; reference_low_pass: phi_N(y) of the reference, in the same output_type;
    frequency_split: the refinement at split_step (None unless asked for, or when that step is not conditioned)."""

    images: list[PIL.Image.Image] | torch.Tensor
    reference_low_pass: list[PIL.Image.Image] | torch.Tensor
    frequency_split: FrequencySplit | None = None


def q_sample_prev(scheduler: DDPMScheduler, y: torch.Tensor, t, generator) -> torch.Tensor:
    """y_{t-1} ~ q(y_{t-1} | y) at the timestep after t; past the last step (no prev) y itself: (B,3,H,W)."""
    prev = prev_timestep(scheduler, t)
    if prev < 0:
        return y
    eps = randn_tensor(y.shape, generator=generator, device=y.device, dtype=y.dtype)
    return scheduler.add_noise(y, eps, torch.as_tensor(prev).reshape(1))


class ILVRPipeline(DiffusionPipeline):
    """Reference-guided sampling from a DDPM (unet + DDPMScheduler), unconditional or class-conditional."""

    def __init__(self, unet, scheduler):
        super().__init__()
        self.register_modules(unet=unet, scheduler=scheduler)

    def total_steps(self, *, num_inference_steps: int) -> int:
        """The callback's steps in one call: one per DDPM step, conditioned or not."""
        return num_inference_steps

    def check_inputs(self, *, down_factor, range_t, num_inference_steps, batch_size, output_type,
                     split_step=None, class_labels=None) -> torch.Tensor | None:
        """Every argument of __call__, before its first U-Net evaluation (a ValueError says what is allowed); the class
        labels (B,) on the U-Net's device, or None."""
        T, size = self.scheduler.config.num_train_timesteps, self.unet.config.sample_size
        check_ilvr_args(down_factor, range_t, size, T)
        check_num_inference_steps(num_inference_steps, self.scheduler)
        if split_step is not None and not (isinstance(split_step, int) and 0 <= split_step < num_inference_steps):
            raise ValueError(f"split_step must be a step index from 0 to {num_inference_steps - 1}; got {split_step!r}")
        check_batch_size(batch_size)
        check_output_type(output_type)
        return check_class_labels(self.unet, class_labels, batch_size)

    @torch.no_grad()
    def __call__(
        self,
        reference,
        down_factor: int = 4,
        range_t: int = 0,
        num_inference_steps: int = 1000,
        batch_size: int = 1,
        generator: torch.Generator | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        callback: Callback = None,
        split_step: int | None = None,
        class_labels: int | list[int] | None = None,
    ):
        """Sample `batch_size` images whose low frequencies (at factor N = down_factor) follow `reference`.

        reference: PIL image, path or tensor (1,3,H,W) in [0,1]; resized to the model's size.
        range_t: condition while t > range_t (0: every step; >= T: never, which is plain DDPM sampling).
        callback(step, t, x_t, x0_hat) is called after every step.
        split_step: keep the refinement of that step (0-based) for the first sample, as `frequency_split`.
        class_labels: the class y* of a class-conditional model's proposals, an int or one per sample (None: the null
        class, as an unconditional model samples).
        """
        c = self.check_inputs(down_factor=down_factor, range_t=range_t, num_inference_steps=num_inference_steps,
                              batch_size=batch_size, output_type=output_type, split_step=split_step,
                              class_labels=class_labels)  # (B,) or None
        size = self.unet.config.sample_size
        device = self._execution_device

        # 1. the reference y in [-1,1], one copy per sample: (B,3,H,W)
        y = to_model_input(reference, size, device, self.unet.dtype)[:1].expand(batch_size, -1, -1, -1)

        # 2. x_T ~ N(0, I), drawn as DDPMPipeline draws it, and a DDPM sampler of the model's schedule
        x = initial_noise(self.unet, batch_size, generator, device)
        scheduler = sampler("ddpm", self.scheduler.config, num_inference_steps)

        split = None
        for step, t in enumerate(self.progress_bar(scheduler.timesteps)):
            # 3. the proposal x'_{t-1} ~ p_theta(x_{t-1} | x_t), or p_theta(x_{t-1} | x_t, y*) of a class
            out = scheduler.step(eps_theta(self.unet, x, t, c), t, x, generator=generator)
            x = out.prev_sample
            # 4. refine: x_{t-1} = phi_N(y_{t-1}) + (I - phi_N)(x'_{t-1}), with fresh noise for y_{t-1}
            if t > range_t:
                y_low = phi_N(q_sample_prev(scheduler, y, t, generator), down_factor)
                x_low = phi_N(x, down_factor)
                if step == split_step:
                    split = FrequencySplit(step, int(t), x_low[0], y_low[0], (x - x_low)[0], (y_low + x - x_low)[0])
                x = y_low + x - x_low
            if callback is not None:
                callback(step, int(t), x, out.pred_original_sample)

        images = postprocess(x, output_type)
        low_pass = postprocess(phi_N(y[:1], down_factor), output_type)
        if not return_dict:
            return images, low_pass
        return ILVRPipelineOutput(images=images, reference_low_pass=low_pass, frequency_split=split)
