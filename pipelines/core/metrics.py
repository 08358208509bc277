"""PSNR, SSIM and CLIP similarity of results, for the tabs' tables and the tests.

Images come in as PIL images, lists of them, or float tensors (B,3,H,W) in [0,1].
"""

from __future__ import annotations

import numpy as np
import PIL.Image
import torch
from skimage.metrics import structural_similarity

from .clip import ClipJudge
from .images import pil_to_tensor


def _unit_tensor(image) -> torch.Tensor:
    """A PIL image, a list of them, or a tensor (B,3,H,W) in [0,1] -> float32 (B,3,H,W) in [0,1] on the CPU."""
    if isinstance(image, PIL.Image.Image):
        return pil_to_tensor(image)
    if isinstance(image, (list, tuple)):
        return torch.cat([_unit_tensor(i) for i in image])
    return image.detach().float().cpu()


def psnr(x: torch.Tensor, y: torch.Tensor) -> float:
    """PSNR in dB of two images (B,3,H,W) in [0,1]: 10 log10(1 / MSE)."""
    return float(10 * torch.log10(1 / ((x.float() - y.float()) ** 2).mean().clamp_min(1e-12)))


def ssim(x: torch.Tensor, y: torch.Tensor) -> float:
    """Mean SSIM (scikit-image, Gaussian window as in Wang et al. 2004) of two images (B,3,H,W) in [0,1]."""
    values = [
        structural_similarity(a, b, channel_axis=0, data_range=1.0, gaussian_weights=True, sigma=1.5,
                              use_sample_covariance=False)
        for a, b in zip(x.detach().float().cpu().numpy(), y.detach().float().cpu().numpy())
    ]
    return float(np.mean(values))


def faithfulness(image, result) -> dict[str, float]:
    """PSNR (dB) and SSIM of a result to the input (PIL or (B,3,H,W) in [0,1]): the paper's faithfulness metrics."""
    image, result = _unit_tensor(image), _unit_tensor(result)
    return {"psnr": psnr(result, image), "ssim": ssim(result, image)}


def clip_similarity(clip: ClipJudge, image, prompt: str) -> float:
    """Mean cosine similarity of CLIP's embedding of an image (PIL or (B,3,H,W) in [0,1]) to the prompt's."""
    with torch.no_grad():
        x = (_unit_tensor(image) * 2 - 1).to(clip.device, clip.model.dtype)
        return float(clip.similarity(x, clip.text_embeds([prompt])).mean())


def directional_clip(clip: ClipJudge, image, edited, source: str, target: str) -> float:
    """CLIP's directional similarity (StyleGAN-NADA, used by CycleDiffusion's paper): the cosine between the change of
    the image embedding, E(edited) - E(image), and the change of the text embedding, E(target) - E(source)."""
    with torch.no_grad():
        x = torch.cat([_unit_tensor(image), _unit_tensor(edited)]) * 2 - 1  # (2,3,H,W)
        before, after = clip.image_embeds(x.to(clip.device, clip.model.dtype))
        texts = clip.text_embeds([source, target])
        return float(torch.nn.functional.cosine_similarity(after - before, texts[1] - texts[0], dim=0))
