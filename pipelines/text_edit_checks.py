"""The arguments of CycleDiffusion's text edit (pipelines.stable_cycle_diffusion), checked before any model work."""

from __future__ import annotations

import math

import PIL.Image

from .attention_control import check_control
from .clip import token_count
from .dpm_encoder import check_encoder_args
from .images import OUTPUT_TYPES


def prompt_list(prompt, what: str = "prompt") -> list[str]:
    if isinstance(prompt, str):
        return [prompt]
    if isinstance(prompt, (list, tuple)) and prompt and all(isinstance(p, str) for p in prompt):
        return list(prompt)
    raise ValueError(f"{what} must be a string or a non-empty list of strings (one per image); got {prompt!r}")


def per_image(texts: list[str], n: int) -> list[str]:
    """Each text once for each of its n images, in the order of the batch."""
    return [text for text in texts for _ in range(n)]


def pixel_size(image) -> tuple[int, int]:
    """(H, W) of an image as diffusers' image processor takes it: PIL, a tensor (..., C, H, W), an array (..., H, W, C)."""
    if isinstance(image, PIL.Image.Image):
        return image.height, image.width
    return tuple(image.shape[-2:]) if hasattr(image, "dim") else tuple(image.shape[-3:-1])


def is_number(value, low: float = -math.inf) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= low


def check_edit_inputs(pipe, *, prompt=None, source_prompt=None, image=None, strength=0.8, num_inference_steps=50,
                 guidance_scale=7.5, source_guidance_scale=1.0, num_images_per_prompt=1, eta=0.1, generator=None,
                 prompt_embeds=None, output_type="pil", cross_attention_control=None, cross_replace_steps=0.8,
                 self_replace_steps=0.4, reweight=None, attention_map_step=None) -> None:
    """Every argument of StableCycleDiffusionPipeline.__call__ (encode: its own), before the first U-Net evaluation:
    a ValueError says what was wrong and what is allowed."""
    if (prompt is None) == (prompt_embeds is None):
        raise ValueError("pass exactly one of prompt (the text of the edit) and prompt_embeds (its embeddings)")
    batch = len(prompt_list(prompt)) if prompt_embeds is None else prompt_embeds.shape[0]
    sources = prompt_list(source_prompt, "source_prompt (the text of the input image)")
    images = len(image) if isinstance(image, list) else image.shape[0] if getattr(image, "ndim", 3) == 4 else 1
    for text in (prompt_list(prompt) if prompt is not None else []) + sources:
        if (n := token_count(pipe.tokenizer, text)) > pipe.tokenizer.model_max_length:
            raise ValueError(f"the prompt “{text[:40]}…” is {n} tokens long; the text encoder reads at most "
                             f"{pipe.tokenizer.model_max_length} (start and end included): shorten it, it is never cut")
    for name, count in (("source_prompt", len(sources)), ("image", 0 if image is None else images)):
        if count not in (1, batch):
            raise ValueError(f"{name} must be one, or one per prompt ({batch}); got {count}")
    if pipe.vae is None and image is not None:
        side = pipe.unet.config.sample_size
        for h, w in map(pixel_size, image if isinstance(image, list) else [image]):
            if (h, w) != (side, side):
                raise ValueError(f"this model has no VAE: its latents are its {side}x{side} pixels, so the image must "
                                 f"be {side}x{side}; got {h}x{w}: resize it first")
    check_encoder_args(num_inference_steps, eta, strength, pipe.scheduler.config.num_train_timesteps)
    K = pipe.total_steps(num_inference_steps=num_inference_steps, strength=strength)
    if K < 1:
        raise ValueError(f"strength * num_inference_steps must make at least one step; got {strength} * "
                         f"{num_inference_steps}")
    if not (is_number(guidance_scale, 0) and is_number(source_guidance_scale, 0)):
        raise ValueError(f"guidance_scale and source_guidance_scale must be numbers >= 0; got {guidance_scale!r} "
                         f"and {source_guidance_scale!r}")
    if guidance_scale <= 1 < source_guidance_scale:
        raise ValueError(f"source_guidance_scale {source_guidance_scale} needs classifier-free guidance, which "
                         f"runs when guidance_scale > 1; raise guidance_scale or pass source_guidance_scale=1")
    if not isinstance(num_images_per_prompt, int) or num_images_per_prompt < 1:
        raise ValueError(f"num_images_per_prompt must be an integer >= 1; got {num_images_per_prompt!r}")
    if pipe.scheduler.config.set_alpha_to_one:
        raise ValueError("the scheduler has set_alpha_to_one=True, so sigma_t = 0 at the last step; build it with "
                         "set_alpha_to_one=False, as Stable Diffusion's config does")
    if output_type not in ("latent", *OUTPUT_TYPES):
        raise ValueError(f"output_type must be one of {('latent', *OUTPUT_TYPES)}; got {output_type!r}")
    if isinstance(generator, list) and len(generator) != batch * num_images_per_prompt:
        raise ValueError(f"a list of generators needs one per image ({batch * num_images_per_prompt})")
    if cross_attention_control is not None or reweight is not None or attention_map_step is not None:
        if prompt is None:
            raise ValueError("cross-attention control and maps work on words: pass prompt, not prompt_embeds")
        check_control(pipe.tokenizer, sources * (batch // len(sources)), prompt_list(prompt),
                      cross_attention_control, reweight, cross_replace_steps, self_replace_steps,
                      attention_map_step, K)
