"""DDIB, dual diffusion implicit bridges (Su, Song, Meng & Ermon, ICLR 2023): the deterministic baseline of
CycleDiffusion's translation. The source model G1 encodes the image by DDIM inversion (eta = 0) up to x_{t0}, the
target model G2 decodes x_{t0} by DDIM (eta = 0):
    x_t    = sqrt(abar_t) P_s(eps_1(x_s, t | c)) + sqrt(1 - abar_t) eps_1(x_s, t | c)         s -> t, up to t0
    x_prev = sqrt(abar_prev) P_t(eps_2(x_t, t | c')) + sqrt(1 - abar_prev) eps_2(x_t, t | c')  t0 -> 0
P unclipped on both sides, so that one model and one class give the image back up to the inversion's error. t0 is
CycleDiffusion's: the first of the last round(strength * num_inference_steps) timesteps of its sampler, so the two
translations start from the same noise level; DDIB's x_{t0} is found by the model, CycleDiffusion's by q_sample,
and the noise below t0 is the model's own prediction here, the encoded eps_t there.

text_ddib is the same on a text-to-image model (StableCycleDiffusionPipeline): z0 = E(image), inverted under the
source prompt and decoded under the target prompt, eps the classifier-free guided eps_hat of each side, over the
text edit's chain (its t0 and K).
"""

from __future__ import annotations

import torch
from diffusers import DDIMScheduler, ImagePipelineOutput

from ..core.images import check_output_type, postprocess, to_model_input
from ..core.inversion import Eps, ddim_invert
from ..core.sampling import Callback, chain_length, check_class_labels, check_num_inference_steps, eps_theta
from ..core.schedulers import sampler
from .dpm_encoder import ENCODER_SCHEDULE, check_compatible
from .stable import prompt_list

# CycleDiffusion's sampler (its timesteps) made deterministic and invertible: P unclipped, abar = 1 after the last
# step, so that the decoding ends on P_t itself
DDIB_SCHEDULE = dict(ENCODER_SCHEDULE, clip_sample=False, set_alpha_to_one=True)


def check_strength(strength) -> None:
    if not isinstance(strength, (int, float)) or not 0 < strength <= 1:
        raise ValueError(f"strength must be in (0, 1] (1 inverts to pure noise, smaller keeps more); got {strength!r}")


def ddim_decode(eps_of: Eps, ddim: DDIMScheduler, x_t0: torch.Tensor, timesteps: torch.Tensor,
                callback: Callback = None, offset: int = 0) -> torch.Tensor:
    """x_{t0} (B,C,H,W) -> x_0 by DDIM with eta = 0 over `timesteps` (t0 first)."""
    x = x_t0
    for step, t in enumerate(timesteps):
        out = ddim.step(eps_of(x, t), t, x, eta=0.0)
        x = out.prev_sample
        if callback is not None:
            callback(offset + step, int(t), x, out.pred_original_sample)
    return x


@torch.no_grad()
def ddib(source_unet, source_scheduler, image, *, target_unet=None, target_scheduler=None, class_labels=None,
         target_class_labels=None, strength: float, num_inference_steps: int, callback: Callback = None,
         output_type: str = "pil", return_dict: bool = True):
    """Translate `image` (PIL, path or (B,3,H,W) in [0,1]) by DDIB: inversion with source_unet under class_labels c
    up to t0, decoding with target_unet (None: the source model) under target_class_labels c' (None: c with the
    source model, the null class with another). callback(step, t, x_t, x0_hat) sees the inversion's K steps, then
    the decoding's K, K = round(strength * num_inference_steps). Returns an ImagePipelineOutput (images,) or, with
    return_dict=False, the tuple (images,), images as `output_type` ("pil", "np" or "pt", in [0,1])."""
    check_strength(strength)
    check_num_inference_steps(num_inference_steps, source_scheduler)
    check_output_type(output_type)
    target_unet = source_unet if target_unet is None else target_unet
    target_scheduler = source_scheduler if target_scheduler is None else target_scheduler
    check_compatible(source_unet, source_scheduler.config, target_unet, target_scheduler.config)
    x0 = to_model_input(image, source_unet.config.sample_size, source_unet.device, source_unet.dtype)  # (B,3,H,W)
    c = check_class_labels(source_unet, class_labels, x0.shape[0])  # (B,) or None
    c_target = check_class_labels(target_unet, target_class_labels, x0.shape[0])
    if c_target is None and target_unet is source_unet:
        c_target = c

    # 1. x_{t0} = DDIM inversion of x_0 with the source model, over the last K timesteps
    K = chain_length(num_inference_steps, strength)
    x_t0 = ddim_invert(lambda x, t: eps_theta(source_unet, x, t, c), source_scheduler.config, x0, num_inference_steps,
                       steps=K, callback=callback, **DDIB_SCHEDULE)

    # 2. x_0' = DDIM decoding of x_{t0} with the target model, from t0
    ddim = sampler("ddim", target_scheduler.config, num_inference_steps, **DDIB_SCHEDULE)
    x = ddim_decode(lambda x, t: eps_theta(target_unet, x, t, c_target), ddim, x_t0,
                    ddim.timesteps[num_inference_steps - K:], callback, offset=K)
    images = postprocess(x, output_type)
    if not return_dict:
        return (images,)
    return ImagePipelineOutput(images=images)


@torch.no_grad()
def text_ddib(pipe, image, source_prompt: str | list[str], prompt: str | list[str], *, strength: float = 0.8,
              num_inference_steps: int = 50, guidance_scale: float = 7.5, source_guidance_scale: float = 1.0,
              generator=None, callback: Callback = None, output_type: str = "pil", return_dict: bool = True):
    """DDIB on a text-to-image StableCycleDiffusionPipeline: z0 = E(image) (the generator's first draw, as the text
    edit's) inverted by DDIM under source_prompt up to t0, decoded under prompt; each side guided when its scale > 1
    (the target's, diffusers' rule; the source's only then too). callback(step, t, x_t, x0_hat) sees the inversion's
    K steps, then the decoding's K, K = pipe.total_steps(...). Returns the pipeline's output (images,
    nsfw_content_detected)."""
    pipe.check_inputs(prompt=prompt, source_prompt=source_prompt, image=image, strength=strength,
                      num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
                      source_guidance_scale=source_guidance_scale, generator=generator, output_type=output_type)
    device, prompts = pipe._execution_device, prompt_list(prompt)
    z0 = pipe.image_to_latents(pipe.image_processor.preprocess(image).to(device, pipe.unet.dtype), generator)
    z0 = z0.repeat_interleave(len(prompts) // z0.shape[0], dim=0)  # (B,C,h,w)
    sources = prompt_list(source_prompt) * (len(prompts) // len(prompt_list(source_prompt)))
    guided = guidance_scale > 1
    c_src, c_u = pipe.text_conditions(sources, 1, guided)  # (B,L,D), and the empty prompt's when guided
    c_tgt = pipe.encode_text(prompts)  # (B,L,D)
    K = pipe.total_steps(num_inference_steps=num_inference_steps, strength=strength)
    ddim = sampler("ddim", pipe.scheduler.config, num_inference_steps, **DDIB_SCHEDULE)

    def eps_of(c: torch.Tensor, w: float) -> Eps:
        return lambda x, t: pipe.eps_hat([x], t, [c], [w], c_u if w > 1 else None)[0]

    x_t0 = ddim_invert(eps_of(c_src, source_guidance_scale), pipe.scheduler.config, z0, num_inference_steps, steps=K,
                       callback=callback, **DDIB_SCHEDULE)
    x = ddim_decode(eps_of(c_tgt, guidance_scale), ddim, x_t0, ddim.timesteps[num_inference_steps - K:], callback,
                    offset=K)
    return pipe.output(x, output_type, return_dict)
