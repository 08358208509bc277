"""Asyrp's automatic editing interval (Kwon et al. 2023, §4): where editing starts (t_edit) and where quality
boosting takes over (t_boost), read from LPIPS distances of one image along the DDIM timesteps."""

from __future__ import annotations

import torch
from diffusers.utils.torch_utils import randn_tensor

from .asyrp import AsyrpPipeline
from .images import to_model_input
from .sampling import eps_theta

LPIPS_EDIT, LPIPS_BOOST = 0.33, 1.2  # the paper's thresholds: editing strength and quality deficiency


def load_lpips():
    """LPIPS(x, y) for (B,3,H,W) in [-1,1] -> (B,), or None when the `lpips` package or its weights are unavailable."""
    try:
        import lpips

        metric = lpips.LPIPS(net="alex", verbose=False).eval().requires_grad_(False)
    except Exception:  # not installed, or its backbone weights cannot be downloaded
        return None
    return lambda x, y: metric.to(x.device)(x.float(), y.float()).reshape(-1)


@torch.no_grad()
def choose_interval(pipe: AsyrpPipeline, image, lpips, *, num_inference_steps: int = 40,
                    generator: torch.Generator | None = None) -> tuple[int, int]:
    """The paper's automatic interval: t_edit = the smallest t with LPIPS(x_0, P_t(x_t)) >= 0.33,
    t_boost = the smallest t with LPIPS(x_0, x_t) >= 1.2, x_t = q_sample(x_0, t, eps), over the DDIM timesteps.
    lpips(x, y) -> (B,) on [-1,1] images (see load_lpips)."""
    x0 = to_model_input(image, pipe.unet.config.sample_size, pipe._execution_device, pipe.unet.dtype)
    T = pipe.scheduler.config.num_train_timesteps
    t_edit, t_boost = T, T
    ddim = pipe.ddim(num_inference_steps)
    for t in reversed(ddim.timesteps):  # increasing t
        x_t = ddim.add_noise(x0, randn_tensor(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype), t.reshape(1))
        p_t = ddim.step(eps_theta(pipe.unet, x_t, t), t, x_t).pred_original_sample
        if t_edit == T and lpips(x0, p_t).mean() >= LPIPS_EDIT:
            t_edit = int(t)
        if t_boost == T and lpips(x0, x_t).mean() >= LPIPS_BOOST:
            t_boost = int(t)
    return t_edit, min(t_boost, t_edit)

