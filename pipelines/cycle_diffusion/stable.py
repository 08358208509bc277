"""CycleDiffusion on a text-to-image latent model (Wu & De la Torre, ICCV 2023: zero-shot editing with Stable
Diffusion), with prompt-to-prompt cross-attention control; a drop-in for diffusers' deprecated CycleDiffusionPipeline.

Two DDIM chains (eta > 0) start at x_{t0} = q_sample(z0, t0) in the VAE's latent space, z0 = E(image):
    source  x_src_prev ~ q(x_prev | x_src, z0) (z0 once t <= 0),   n_t = (x_src_prev - mu(x_src)) / sigma_t
    target  x_prev = mu(x) + sigma_t n_t
mu: the DDIM step without noise of eps_hat = eps_u + w (eps_c - eps_u), under source_prompt (w = source_guidance_scale)
and prompt (w = guidance_scale). The source chain is the DPM-Encoder, the target decodes its noise; with the same
prompt and scale they coincide and end on z0 whatever the strength.

Same images for the same seed as diffusers' class (the generator draws E's sample, x_{t0}'s noise, then one posterior
noise per step; one U-Net batch [source uncond, target uncond, source cond, target cond] a step), except where it goes
wrong: with guidance it mixes the images of a batch (here each is edited as if alone), and it drops
source_guidance_scale when guidance_scale <= 1 (refused here). With vae=None (pixel space) the latents are the image.

Each call steps a copy of the pipeline's DDIM scheduler (steps_offset=1, as diffusers' class forces), and passes its
cross-attention control to the U-Net's attention processors as an argument (`cross_attention_kwargs`): nothing a call
sets is seen by another call on the same components.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import PIL.Image
import torch
from diffusers import DDIMScheduler, DiffusionPipeline
from diffusers.image_processor import VaeImageProcessor
from diffusers.utils import BaseOutput, logging
from diffusers.utils.torch_utils import randn_tensor

from ..core.clip import token_count
from ..core.images import OUTPUT_TYPES, postprocess
from ..core.sampling import Callback
from ..core.schedulers import sampler
from .attention_control import AttentionControl, attention_map_size, check_control, control_attention
from .dpm_encoder import CycleLatent, check_encoder_args, encoder_step

logger = logging.get_logger(__name__)


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


@dataclass
class StableCycleDiffusionPipelineOutput(BaseOutput):
    """images: the edits (latents (B,C,h,w) with output_type="latent"); nsfw_content_detected: one flag per image, None
    without a safety checker (a flagged image is black); latent: z; attention_maps: one {"source": [(token, (h,w) map)],
    "target": [...]} per image, the cross-attention at attention_map_step, averaged over heads and layers."""

    images: list[PIL.Image.Image] | np.ndarray | torch.Tensor
    nsfw_content_detected: list[bool] | None
    latent: CycleLatent | None = None  # z, latents (B,C,h,w) and noise (K,B,C,h,w); no class labels
    attention_maps: list[dict[str, list[tuple[str, torch.Tensor]]]] | None = None


class StableCycleDiffusionPipeline(DiffusionPipeline):
    """CycleDiffusion with a text-to-image latent model: vae (None for a pixel-space model), text_encoder, tokenizer,
    unet (UNet2DConditionModel), scheduler (a DDIMScheduler, or another of the schedule, which becomes one), optional
    safety_checker + feature_extractor."""

    model_cpu_offload_seq = "text_encoder->unet->vae"
    _optional_components = ["vae", "safety_checker", "feature_extractor"]

    def __init__(self, vae, text_encoder, tokenizer, unet, scheduler, safety_checker=None, feature_extractor=None,
                 requires_safety_checker: bool = True):
        super().__init__()
        if safety_checker is None and requires_safety_checker:
            logger.warning("safety_checker=None: edits go unchecked; keep the checker on in a public service")
        if safety_checker is not None and feature_extractor is None:
            raise ValueError("a safety_checker needs its feature_extractor; pass both, or safety_checker=None")
        if not (isinstance(scheduler, DDIMScheduler) and scheduler.config.steps_offset == 1):
            # Stable Diffusion repositories ship PNDM; diffusers' class forces steps_offset=1 too
            scheduler = sampler("ddim", scheduler.config, steps_offset=1)
        self.register_modules(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
                              safety_checker=safety_checker, feature_extractor=feature_extractor)
        self.vae_scale_factor = 2 ** (len(vae.config.block_out_channels) - 1) if vae is not None else 1
        self.image_processor = VaeImageProcessor(vae_scale_factor=self.vae_scale_factor)
        self.register_to_config(requires_safety_checker=requires_safety_checker)
        control_attention(unet)

    def ddim(self, num_inference_steps: int) -> DDIMScheduler:
        """A copy of the pipeline's DDIM scheduler for one call, its timesteps set: the call steps its own."""
        return sampler("ddim", self.scheduler.config, num_inference_steps)

    def total_steps(self, *, num_inference_steps: int = 50, strength: float = 0.8) -> int:
        """K, the callback's steps in a call of __call__, encode or decode: int(strength * steps), as diffusers counts."""
        return min(int(num_inference_steps * strength), num_inference_steps)

    def check_inputs(self, *, prompt=None, source_prompt=None, image=None, strength=0.8, num_inference_steps=50,
                     guidance_scale=7.5, source_guidance_scale=1.0, num_images_per_prompt=1, eta=0.1, generator=None,
                     prompt_embeds=None, output_type="pil", cross_attention_control=None, cross_replace_steps=0.8,
                     self_replace_steps=0.4, reweight=None, attention_map_step=None) -> None:
        """Every argument of __call__ (encode: its own), before the first U-Net evaluation: a ValueError says what
        was wrong and what is allowed."""
        if (prompt is None) == (prompt_embeds is None):
            raise ValueError("pass exactly one of prompt (the text of the edit) and prompt_embeds (its embeddings)")
        batch = len(prompt_list(prompt)) if prompt_embeds is None else prompt_embeds.shape[0]
        sources = prompt_list(source_prompt, "source_prompt (the text of the input image)")
        images = len(image) if isinstance(image, list) else image.shape[0] if getattr(image, "ndim", 3) == 4 else 1
        for text in (prompt_list(prompt) if prompt is not None else []) + sources:
            if (n := token_count(self.tokenizer, text)) > self.tokenizer.model_max_length:
                raise ValueError(f"the prompt “{text[:40]}…” is {n} tokens long; the text encoder reads at most "
                                 f"{self.tokenizer.model_max_length} (start and end included): shorten it, it is never "
                                 f"cut")
        for name, count in (("source_prompt", len(sources)), ("image", 0 if image is None else images)):
            if count not in (1, batch):
                raise ValueError(f"{name} must be one, or one per prompt ({batch}); got {count}")
        if self.vae is None and image is not None:
            side = self.unet.config.sample_size
            for h, w in map(pixel_size, image if isinstance(image, list) else [image]):
                if (h, w) != (side, side):
                    raise ValueError(f"this model has no VAE: its latents are its {side}x{side} pixels, so the image "
                                     f"must be {side}x{side}; got {h}x{w}: resize it first")
        check_encoder_args(num_inference_steps, eta, strength, self.scheduler.config.num_train_timesteps)
        K = self.total_steps(num_inference_steps=num_inference_steps, strength=strength)
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
        if self.scheduler.config.set_alpha_to_one:
            raise ValueError("the scheduler has set_alpha_to_one=True, so sigma_t = 0 at the last step; build it with "
                             "set_alpha_to_one=False, as Stable Diffusion's config does")
        if output_type not in ("latent", *OUTPUT_TYPES):
            raise ValueError(f"output_type must be one of {('latent', *OUTPUT_TYPES)}; got {output_type!r}")
        if isinstance(generator, list) and len(generator) != batch * num_images_per_prompt:
            raise ValueError(f"a list of generators needs one per image ({batch * num_images_per_prompt})")
        if cross_attention_control is not None or reweight is not None or attention_map_step is not None:
            if prompt is None:
                raise ValueError("cross-attention control and maps work on words: pass prompt, not prompt_embeds")
            check_control(self.tokenizer, sources * (batch // len(sources)), prompt_list(prompt),
                          cross_attention_control, reweight, cross_replace_steps, self_replace_steps,
                          attention_map_step, K)

    def encode_text(self, prompts: list[str], clip_skip: int | None = None) -> torch.Tensor:
        """The text encoder's hidden states (N, L, D), L = tokenizer.model_max_length; with clip_skip, those that many
        layers before the last, through the final layer norm (diffusers' convention)."""
        inputs = self.tokenizer(prompts, padding="max_length", max_length=self.tokenizer.model_max_length,
                                truncation=True, return_tensors="pt").to(self._execution_device)
        mask = inputs.attention_mask if getattr(self.text_encoder.config, "use_attention_mask", False) else None
        if clip_skip is None:
            c = self.text_encoder(inputs.input_ids, attention_mask=mask)[0]
        else:
            hidden = self.text_encoder(inputs.input_ids, attention_mask=mask, output_hidden_states=True).hidden_states
            c = self.text_encoder.text_model.final_layer_norm(hidden[-(clip_skip + 1)])
        return c.to(self.text_encoder.dtype)

    def text_conditions(self, prompts: list[str], repeats: int, guided: bool, clip_skip: int | None = None):
        """c (N*repeats, L, D), each prompt's once per image, and c_u, the empty prompt's (None when not guided)."""
        c = self.encode_text(prompts, clip_skip).repeat_interleave(repeats, dim=0)
        return c, self.encode_text([""]).expand_as(c) if guided else None

    def image_to_latents(self, x: torch.Tensor, generator=None) -> torch.Tensor:
        """z0 = E(x): (B,3,H,W) in [-1,1] -> a sample of the VAE's posterior times its scaling factor, (B,C,H/f,W/f).
        Without a VAE, or given latents already (C channels), x itself."""
        if self.vae is None or x.shape[1] == self.vae.config.latent_channels:
            return x
        return self.vae.encode(x).latent_dist.sample(generator) * self.vae.config.scaling_factor

    def latents_to_image(self, z: torch.Tensor) -> torch.Tensor:
        """x = D(z / scaling factor): (B,C,h,w) -> (B,3,H,W) in [-1,1] (unclamped); without a VAE, z itself."""
        if self.vae is None:
            return z
        return self.vae.decode(z / self.vae.config.scaling_factor, return_dict=False)[0]

    def prepare_latents(self, image, batch_size: int, ddim: DDIMScheduler, *, strength: float, generator):
        """z0 = E(image) (B,C,h,w), each image repeated for its batch_size / images rows, the chain's timesteps (K,)
        of `ddim`, and x_{t0} = q_sample(z0, t0, eps): the generator's first two draws."""
        device = self._execution_device
        z0 = self.image_to_latents(self.image_processor.preprocess(image).to(device, self.unet.dtype), generator)
        z0 = z0.repeat_interleave(batch_size // z0.shape[0], dim=0)
        n = ddim.num_inference_steps
        timesteps = ddim.timesteps[n - self.total_steps(num_inference_steps=n, strength=strength):]
        eps = randn_tensor(z0.shape, generator=generator, device=device, dtype=z0.dtype)
        return z0, timesteps, ddim.add_noise(z0, eps, timesteps[:1])

    def eps_hat(self, xs: list[torch.Tensor], t, conds: list[torch.Tensor], scales: list[float],
                c_u: torch.Tensor | None, cross_attention_kwargs=None) -> list[torch.Tensor]:
        """eps_hat = eps_u + w (eps_c - eps_u) for each chain x (B,C,h,w) with its text c (B,L,D) and scale w, from one
        U-Net batch [every chain uncond, every chain cond]; without c_u (no classifier-free guidance) eps_c itself."""
        copies = 1 if c_u is None else 2
        c = torch.cat(([] if c_u is None else [c_u] * len(xs)) + conds)
        eps = self.unet(torch.cat(xs * copies), t, encoder_hidden_states=c,
                        cross_attention_kwargs=cross_attention_kwargs).sample.chunk(copies * len(xs))
        if c_u is None:
            return list(eps)
        return [u + w * (e - u) for u, e, w in zip(eps[: len(xs)], eps[len(xs):], scales)]

    def chains(self, ddim: DDIMScheduler, timesteps, *, eta: float, conds, scales, c_u, x_src=None, z0=None, x=None,
               noise=None, generator=None, control: AttentionControl | None = None, callback: Callback = None,
               cross_attention_kwargs=None) -> tuple[torch.Tensor | None, torch.Tensor]:
        """Over `timesteps` (K,) of `ddim`, side by side: the source chain x_src toward z0 (the DPM-Encoder, when x_src
        is given) and the target chain x driven by the source's noise, or by `noise` (K,B,C,h,w) without a source
        chain; the target's attention edited by `control`. Returns (the target's x_0 (B,C,h,w) or None, the noise n
        (K,B,C,h,w))."""
        if control is not None:
            cross_attention_kwargs = {**(cross_attention_kwargs or {}), "control": control}
        noises = []
        for k, t in enumerate(self.progress_bar(timesteps)):
            if control is not None:
                control.step = k
            eps = self.eps_hat([v for v in (x_src, x) if v is not None], t, conds, scales, c_u, cross_attention_kwargs)
            if x_src is not None:
                # 1. x_src_prev ~ q(x_prev | x_src, z0), n_t = (x_src_prev - mu(x_src, eps_src)) / sigma_t
                x_src, n_t, x0_hat = encoder_step(ddim, x_src, t, z0, eps[0], eta=eta, generator=generator)
            else:
                n_t = noise[k].to(x)
            if x is not None:
                # 2. x_prev = mu(x, eps_tgt) + sigma_t n_t
                out = ddim.step(eps[-1], t, x, eta=eta, variance_noise=n_t)
                x, x0_hat = out.prev_sample, out.pred_original_sample
            noises.append(n_t)
            if callback is not None:
                callback(k, int(t), x_src if x is None else x, x0_hat)
        return x, torch.stack(noises)

    def run_safety_checker(self, x: torch.Tensor) -> tuple[torch.Tensor, list[bool] | None]:
        """(B,3,H,W) in [-1,1] -> the same with flagged images black, and the flags (None without a checker)."""
        if self.safety_checker is None:
            return x, None
        clip_input = self.feature_extractor(postprocess(x, "pil"), return_tensors="pt").pixel_values
        x, flagged = self.safety_checker(images=x, clip_input=clip_input.to(x.device, x.dtype))
        x[torch.tensor(flagged, device=x.device)] = -1
        return x, [bool(f) for f in flagged]

    def output(self, x: torch.Tensor, output_type: str, return_dict: bool, **extra):
        """The target's x_0 latents (B,C,h,w) -> images (D, the safety checker, post-processing) as asked."""
        images, flagged = x, None
        if output_type != "latent":
            image, flagged = self.run_safety_checker(self.latents_to_image(x))
            images = postprocess(image, output_type)
        self.maybe_free_model_hooks()
        if not return_dict:
            return images, flagged
        return StableCycleDiffusionPipelineOutput(images=images, nsfw_content_detected=flagged, **extra)

    @torch.no_grad()
    def encode(self, image, source_prompt: str | list[str], *, strength: float = 0.8, num_inference_steps: int = 50,
               source_guidance_scale: float = 1.0, eta: float = 0.1, num_images_per_prompt: int = 1, generator=None,
               clip_skip: int | None = None, callback: Callback = None) -> CycleLatent:
        """z ~ DPMEnc(z | z0, G(. | source_prompt)), z0 = E(image), guided when source_guidance_scale > 1; the generator
        is drawn as in __call__, so decode(z, prompt) is __call__'s edit up to float rounding."""
        self.check_inputs(prompt=source_prompt, source_prompt=source_prompt, image=image, strength=strength,
                          num_inference_steps=num_inference_steps, guidance_scale=source_guidance_scale,
                          source_guidance_scale=source_guidance_scale, num_images_per_prompt=num_images_per_prompt,
                          eta=eta, generator=generator)
        c_src, c_u = self.text_conditions(prompt_list(source_prompt), num_images_per_prompt, source_guidance_scale > 1,
                                          clip_skip)
        ddim = self.ddim(num_inference_steps)
        z0, timesteps, x_t0 = self.prepare_latents(image, len(c_src), ddim, strength=strength, generator=generator)
        _, noise = self.chains(ddim, timesteps, eta=eta, conds=[c_src], scales=[source_guidance_scale], c_u=c_u,
                               x_src=x_t0, z0=z0, generator=generator, callback=callback)
        return CycleLatent(x_t0, noise, timesteps, num_inference_steps, float(eta))

    @torch.no_grad()
    def decode(self, latent: CycleLatent, prompt: str | list[str], *, guidance_scale: float = 7.5,
               clip_skip: int | None = None, output_type: str = "pil", return_dict: bool = True,
               callback: Callback = None, cross_attention_kwargs=None):
        """G(z | prompt): x_prev = mu(x_t, eps_hat(x_t | prompt)) + sigma_t n_t from x_{t0}, then D; guided when
        guidance_scale > 1 (diffusers' rule). prompt: one text, or one per image of the latent."""
        prompts, batch = prompt_list(prompt), latent.x_t0.shape[0]
        if batch % len(prompts) or not is_number(guidance_scale, 0) or output_type not in ("latent", *OUTPUT_TYPES):
            raise ValueError(f"decode takes one prompt or one per image ({batch}), a guidance_scale >= 0 and an "
                             f"output_type of {('latent', *OUTPUT_TYPES)}; got {len(prompts)} prompts, "
                             f"{guidance_scale!r}, {output_type!r}")
        c, c_u = self.text_conditions(prompts, batch // len(prompts), guidance_scale > 1, clip_skip)
        x, _ = self.chains(self.ddim(latent.num_inference_steps), latent.timesteps, eta=latent.eta, conds=[c],
                           scales=[guidance_scale], c_u=c_u,
                           x=latent.x_t0.to(self._execution_device), noise=latent.eps, callback=callback,
                           cross_attention_kwargs=cross_attention_kwargs)
        return self.output(x, output_type, return_dict, latent=latent)

    @torch.no_grad()
    def __call__(self, prompt: str | list[str] | None = None, source_prompt: str | list[str] | None = None, image=None,
                 strength: float = 0.8, num_inference_steps: int = 50, guidance_scale: float = 7.5,
                 source_guidance_scale: float = 1.0, num_images_per_prompt: int = 1, eta: float = 0.1, generator=None,
                 prompt_embeds: torch.Tensor | None = None, output_type: str = "pil", return_dict: bool = True,
                 callback: Callback = None, cross_attention_kwargs: dict | None = None, clip_skip: int | None = None,
                 *, cross_attention_control: str | None = None, cross_replace_steps: float = 0.8,
                 self_replace_steps: float = 0.4, reweight: tuple[str, float] | None = None,
                 attention_map_step: int | None = None):
        """Edit `image` (PIL or (B,3,H,W) in [0,1]; one, or one per prompt) from source_prompt toward prompt, with
        diffusers' CycleDiffusionPipeline's arguments; callback(step, t, x_t, x0_hat) of the target chain. Added:
        cross_attention_control None, "replace" (a word swap) or "refine" (the target adds words) for the first
        cross_replace_steps / self_replace_steps of the steps, reweight=(word, c) of a target word, and the per-word
        cross-attention maps of attention_map_step (0: the chain's first step) in the output."""
        self.check_inputs(prompt=prompt, source_prompt=source_prompt, image=image, strength=strength,
                          num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
                          source_guidance_scale=source_guidance_scale, num_images_per_prompt=num_images_per_prompt,
                          eta=eta, generator=generator, prompt_embeds=prompt_embeds, output_type=output_type,
                          cross_attention_control=cross_attention_control, cross_replace_steps=cross_replace_steps,
                          self_replace_steps=self_replace_steps, reweight=reweight,
                          attention_map_step=attention_map_step)
        n = num_images_per_prompt
        # 1. the texts: c_tgt, c_src (B*n, L, D), and c_u of the empty prompt under classifier-free guidance
        c_tgt = self.encode_text(prompt_list(prompt), clip_skip) if prompt_embeds is None else prompt_embeds
        c_tgt = c_tgt.to(self._execution_device, self.text_encoder.dtype).repeat_interleave(n, dim=0)
        sources = prompt_list(source_prompt) * (len(c_tgt) // n // len(prompt_list(source_prompt)))
        c_src, c_u = self.text_conditions(sources, n, guidance_scale > 1, clip_skip)

        # 2. z0 = E(image), x_{t0} = q_sample(z0, t0, eps)
        ddim = self.ddim(num_inference_steps)
        z0, timesteps, x_t0 = self.prepare_latents(image, len(c_tgt), ddim, strength=strength, generator=generator)

        # 3. both chains side by side; with control, the target's attention edited by the source's
        control = None
        if cross_attention_control is not None or reweight is not None or attention_map_step is not None:
            control = AttentionControl.from_prompts(
                self.tokenizer, per_image(sources, n), per_image(prompt_list(prompt), n),
                mode=cross_attention_control, reweight=reweight, num_chunks=2 if c_u is None else 4,
                cross_replace_steps=cross_replace_steps, self_replace_steps=self_replace_steps,
                num_inference_steps=num_inference_steps, map_step=attention_map_step,
                map_size=attention_map_size(self.unet, *z0.shape[-2:]))
        x, noise = self.chains(ddim, timesteps, eta=eta, conds=[c_src, c_tgt],
                               scales=[source_guidance_scale, guidance_scale], c_u=c_u, x_src=x_t0, z0=z0, x=x_t0,
                               generator=generator, control=control, callback=callback,
                               cross_attention_kwargs=cross_attention_kwargs)
        latent = CycleLatent(x_t0, noise, timesteps, num_inference_steps, float(eta))

        # 4. x_0 = D(x), checked and post-processed
        maps = None if control is None else control.word_maps(self.tokenizer)
        return self.output(x, output_type, return_dict, latent=latent, attention_maps=maps)
