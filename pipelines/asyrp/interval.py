"""Asyrp's editing interval (Kwon et al. 2023, §4): where editing starts (t_edit) and where quality boosting takes over
(t_boost): each model's defaults from the official code, and the paper's automatic rule, read from LPIPS distances of
one image along the DDIM timesteps."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from diffusers.utils.torch_utils import randn_tensor

from ..core.images import to_model_input
from ..core.sampling import eps_theta

if TYPE_CHECKING:
    from .pipeline import AsyrpPipeline

LPIPS_EDIT, LPIPS_BOOST = 0.33, 1.2  # the paper's thresholds: editing strength and quality deficiency
DEFAULT_INTERVAL = (500, 200)  # (t_edit, t_boost) of the official scripts' user-defined t_edit / t_addnoise

# Asyrp's (t_edit, t_boost) per model, from kwonminki/Asyrp_official: t_edit from utils/t_edit_dic.py
# (T_EDIT_DIC_LPIPS_0_3, the first t with LPIPS(x, P_t) >= 0.3, i.e. 0.33 times a typical source/target text cosine);
# t_boost = the first t with LPIPS(x, x_t) >= 1.2 in utils/<dataset>_LPIPS_distance_x.tsv (church 293, bedroom 221,
# afhq 167); the repository has no CelebA-HQ x-distance table, so faces use its scripts' --user_defined_t_addnoise 200.
# Cats use AFHQ-dog's values (the closest dataset it has); CIFAR-10 has none and uses the scripts' 500 / 200.
# The bundled models: the interval their directions were learned on (training/shape_directions.py), without quality
# boosting, which has no fine detail to restore at 16 or 32 px and halves the share of strips that grow monotonically.
ASYRP_INTERVALS = {
    "google/ddpm-celebahq-256": (516, 200),
    "google/ddpm-ema-celebahq-256": (516, 200),
    "google/ddpm-cat-256": (444, 167),
    "google/ddpm-church-256": (370, 293),
    "google/ddpm-ema-church-256": (370, 293),
    "google/ddpm-bedroom-256": (369, 221),
    "google/ddpm-ema-bedroom-256": (369, 221),
    "shapes-16": (500, 0),
    "faces-32": (250, 0),
}


def asyrp_interval(model_id: str) -> tuple[int, int]:
    """Asyrp's default (t_edit, t_boost) for a model: ASYRP_INTERVALS, else the official scripts' (500, 200)."""
    return ASYRP_INTERVALS.get(model_id, DEFAULT_INTERVAL)


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

