"""CycleDiffusion (Wu & De la Torre, ICCV 2023) as a pipeline: encode an image into the latent z of a stochastic DDIM
sampler (the DPM-Encoder), decode z with another model, another class or CLIP guidance (translation, text edit), or
move z by Langevin dynamics first (plug-and-play guidance). The math is in `pipelines.cycle_diffusion.dpm_encoder`.

Vocabulary shared with the other pipelines: `encode(image) -> CycleLatent` (the DPM-Encoder) and `decode(latent)`
(G); `class_labels` is the class c an image is encoded under and `target_class_labels` the class it is decoded under;
`guidance_scale` is the CLIP guidance scale s and `gradient="exact"|"fixed_eps"` how its gradient is taken; every
method that returns images returns an output with `.images` and honours `output_type` and `return_dict`;
`callback(step, t, x_t, x0_hat)` counts the steps of the whole call, `total_steps(...)` of them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import PIL.Image
import torch
from diffusers import DiffusionPipeline, ImagePipelineOutput
from diffusers.utils import BaseOutput

from ..core.clip import ClipJudge
from ..core.images import check_output_type, postprocess, to_model_input
from ..core.sampling import Callback, chain_length, check_class_labels, counted_from
from ..core.scores import Score, check_gradient, clip_text_score
from .dpm_encoder import (CycleLatent, G, check_compatible, check_encoder_args, check_langevin_args, dpm_encoder,
                          encoder_scheduler, langevin)


def check_text_edit(clip: ClipJudge | None, target_prompt: str, source_prompt: str | None) -> None:
    if clip is None:
        raise ValueError("a text edit needs a CLIP model: pass clip=ClipJudge(model, tokenizer)")
    clip.check_prompts([target_prompt] + ([source_prompt] if source_prompt else []))


def text_score(clip: ClipJudge | None, target_prompt: str, source_prompt: str | None) -> Score:
    """CLIP's score of x0_hat toward target_prompt (and away from source_prompt, when given)."""
    check_text_edit(clip, target_prompt, source_prompt)
    source = clip.text_embeds([source_prompt]) if source_prompt else None
    return clip_text_score(clip, clip.text_embeds([target_prompt]), source)


def image_batch_size(image) -> int:
    """How many images a pipeline's image argument holds: B of a (B,3,H,W) tensor, else 1."""
    return image.shape[0] if isinstance(image, torch.Tensor) and image.ndim == 4 else 1


@dataclass
class CycleDiffusionPipelineOutput(BaseOutput):
    """images: G2(z); reconstructions: G1(z), the input again up to float error (None unless asked for); latent: z;
    sdedit_images: the SDEdit baseline, z with fresh noise decoded as the result is (None unless asked for)."""

    images: list[PIL.Image.Image] | np.ndarray | torch.Tensor
    reconstructions: list[PIL.Image.Image] | np.ndarray | torch.Tensor | None
    latent: CycleLatent
    sdedit_images: list[PIL.Image.Image] | np.ndarray | torch.Tensor | None = None


class CycleDiffusionPipeline(DiffusionPipeline):
    """DPM-Encoder and decoder of a DDPM (unet + a scheduler of its noise schedule, from whose config each call builds
    the DPM-Encoder's DDIM sampler), unconditional or class-conditional (config.num_class_embeds set, the last label
    the null class)."""

    def __init__(self, unet, scheduler):
        super().__init__()
        self.register_modules(unet=unet, scheduler=scheduler)

    def total_steps(self, *, num_inference_steps: int, strength: float, reconstruct: bool = True,
                    plug_and_play_steps: int = 0, translate_or_edit: bool = True, sdedit_baseline: bool = False) -> int:
        """The callback's steps in one call: K = chain_length(...) for the encoder, K for the reconstruction (when
        `reconstruct`), one per Langevin step, K for the result unless it is the reconstruction (no target model,
        class or text: `translate_or_edit` False, with `reconstruct`), and K for the SDEdit baseline (when asked)."""
        K = chain_length(num_inference_steps, strength)
        decodings = int(reconstruct) + int(translate_or_edit or not reconstruct) + int(sdedit_baseline)
        return K * (1 + decodings) + plug_and_play_steps

    def check_inputs(self, *, image, target_unet=None, target_scheduler=None, class_labels=None,
                     target_class_labels=None, clip: ClipJudge | None = None, target_prompt: str | None = None,
                     source_prompt: str | None = None, guidance_scale: float = 10.0, gradient: str = "fixed_eps",
                     plug_and_play_steps: int = 0, step_size: float = 1e-3, strength: float = 1.0, eta: float = 1.0,
                     num_inference_steps: int = 100, output_type: str = "pil") -> None:
        """Every argument of __call__, before the encoder's first U-Net evaluation."""
        check_encoder_args(num_inference_steps, eta, strength, self.scheduler.config.num_train_timesteps)
        check_output_type(output_type)
        check_gradient(gradient)
        batch_size = image_batch_size(image)
        check_class_labels(self.unet, class_labels, batch_size)
        if target_unet is not None:
            check_compatible(self.unet, self.scheduler.config, target_unet, (target_scheduler or self.scheduler).config)
        check_class_labels(self.unet if target_unet is None else target_unet, target_class_labels, batch_size)
        if target_prompt is not None:
            check_text_edit(clip, target_prompt, source_prompt)
        if not isinstance(guidance_scale, (int, float)) or not math.isfinite(guidance_scale):
            raise ValueError(
                f"guidance_scale must be a finite number (0 switches CLIP guidance off); got {guidance_scale!r}"
            )
        if plug_and_play_steps != 0:
            if target_prompt is None:
                raise ValueError("plug-and-play guidance needs a target_prompt (and clip): its energy is CLIP's score "
                                 "of that text; pass plug_and_play_steps=0 otherwise")
            check_langevin_args(plug_and_play_steps, step_size)
            if gradient == "exact":
                raise ValueError(
                    "gradient='exact' does not apply to plug-and-play guidance: its Langevin steps differentiate "
                    "through the whole chain already, and the result is then decoded without guidance. Use "
                    "gradient='fixed_eps' with plug_and_play_steps > 0, or plug_and_play_steps=0 for an exact gradient "
                    "in the guided decoder"
                )

    @torch.no_grad()
    def encode(
        self,
        image,
        *,
        num_inference_steps: int = 100,
        eta: float = 1.0,
        strength: float = 1.0,
        class_labels: int | list[int] | None = None,
        generator: torch.Generator | None = None,
        callback: Callback = None,
    ) -> CycleLatent:
        """z ~ DPMEnc(z | x, G(. | c)): image (PIL, path or (B,3,H,W) in [0,1]) -> latent with G(z | c) = image.

        strength in (0,1]: the chain starts at t0, the first timestep of the last round(strength * steps) steps.
        class_labels: the class c, an int or one per image (class-conditional models); None: the null class.
        """
        check_encoder_args(num_inference_steps, eta, strength, self.scheduler.config.num_train_timesteps)
        device = self._execution_device
        x0 = to_model_input(image, self.unet.config.sample_size, device, self.unet.dtype)  # (B,3,H,W) in [-1,1]
        c = check_class_labels(self.unet, class_labels, x0.shape[0])  # (B,) or None
        scheduler = encoder_scheduler(self.scheduler.config, num_inference_steps)
        timesteps = scheduler.timesteps[num_inference_steps - chain_length(num_inference_steps, strength) :]  # (K,)
        x_t0, eps = dpm_encoder(self.unet, scheduler, x0, timesteps, eta=eta, c=c, generator=generator,
                                callback=callback, progress_bar=self.progress_bar)
        return CycleLatent(x_t0=x_t0, eps=eps, timesteps=timesteps.clone(),
                           num_inference_steps=num_inference_steps, eta=float(eta), class_labels=c)

    @torch.no_grad()
    def decode(
        self,
        latent: CycleLatent,
        *,
        unet=None,
        scheduler=None,
        class_labels: int | list[int] | None = None,
        clip: ClipJudge | None = None,
        target_prompt: str | None = None,
        source_prompt: str | None = None,
        guidance_scale: float = 10.0,
        gradient: str = "fixed_eps",
        output_type: str = "pil",
        return_dict: bool = True,
        callback: Callback = None,
    ):
        """G(z | c): x_prev = mu_theta(x_t, t | c) + sigma_t eps_t from x_{t0}; unet=None: the pipeline's own model.

        unet / scheduler: another model of the same size and noise schedule (translation).
        class_labels: the class c to decode under, an int or one per image; another class than the latent's translates.
        None: the latent's own class with the pipeline's model (so decode(latent) reconstructs); none with another.
        clip + target_prompt: mu_theta CLIP-guided toward target_prompt (and away from source_prompt) with the DDIM
        rule eps_hat = eps_theta - sqrt(1-abar_t) s grad log p; gradient "exact" differentiates through the U-Net.
        Returns an ImagePipelineOutput (images,) or, with return_dict=False, the tuple (images,).
        """
        check_output_type(output_type)
        check_gradient(gradient)
        unet, sampler, c = self._G_of(unet, scheduler, class_labels, latent)
        score = text_score(clip, target_prompt, source_prompt) if guidance_scale and target_prompt else None
        x = G(unet, sampler, latent.x_t0, latent.eps, latent.timesteps, eta=latent.eta, c=c, score=score,
              guidance_scale=guidance_scale, gradient=gradient, callback=callback,
              progress_bar=self.progress_bar)  # (B,3,H,W) in [-1,1]
        images = postprocess(x, output_type)
        if not return_dict:
            return (images,)
        return ImagePipelineOutput(images=images)

    def plug_and_play(
        self,
        latent: CycleLatent,
        *,
        clip: ClipJudge,
        target_prompt: str,
        source_prompt: str | None = None,
        langevin_steps: int = 10,
        step_size: float = 1e-3,
        guidance_scale: float = 10.0,
        unet=None,
        scheduler=None,
        class_labels: int | list[int] | None = None,
        generator: torch.Generator | None = None,
        callback: Callback = None,
    ) -> CycleLatent:
        """Langevin dynamics on z toward p(z) exp(-s E(G(z | c))), E = -CLIP text score of the decoded image
        (dpm_encoder.langevin), from the encoded z.

        unet / scheduler: the model G runs (None: the pipeline's own), as in decode.
        class_labels: the class c of G (None: as in decode); the returned latent records it, so decode() uses it.
        callback(k, t0, x_t0, G(z)) once per Langevin step k.
        """
        check_langevin_args(langevin_steps, step_size)
        score = text_score(clip, target_prompt, source_prompt)
        unet, sampler, c = self._G_of(unet, scheduler, class_labels, latent)
        return langevin(latent, unet=unet, scheduler=sampler, c=c, score=score, guidance_scale=guidance_scale,
                        langevin_steps=langevin_steps, step_size=step_size, generator=generator, callback=callback)

    def _G_of(self, unet, scheduler, class_labels, latent: CycleLatent) -> tuple:
        """G's model (None: the pipeline's own, else checked to share the latent space), its sampler at z's steps, and
        the class c, (B,) or None: class_labels for that model; None: the latent's own class with the pipeline's
        model, none with another."""
        unet = self.unet if unet is None else unet
        config = (scheduler or self.scheduler).config
        check_compatible(self.unet, self.scheduler.config, unet, config)
        sampler = encoder_scheduler(config, latent.num_inference_steps)
        if class_labels is not None:
            c = check_class_labels(unet, class_labels, latent.x_t0.shape[0])
        elif unet is self.unet and latent.class_labels is not None:
            c = latent.class_labels.to(unet.device)
        else:
            c = None
        return unet, sampler, c

    @torch.no_grad()
    def __call__(
        self,
        image,
        *,
        target_unet=None,
        target_scheduler=None,
        class_labels: int | list[int] | None = None,
        target_class_labels: int | list[int] | None = None,
        clip: ClipJudge | None = None,
        target_prompt: str | None = None,
        source_prompt: str | None = None,
        guidance_scale: float = 10.0,
        gradient: str = "fixed_eps",
        plug_and_play_steps: int = 0,
        step_size: float = 1e-3,
        strength: float = 1.0,
        eta: float = 1.0,
        num_inference_steps: int = 100,
        reconstruct: bool = True,
        sdedit_baseline: bool = False,
        generator: torch.Generator | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        callback: Callback = None,
    ):
        """Encode `image` with this pipeline's model G1 under class_labels c, then decode the same z:
        - no target: the reconstruction (G1(z | c) = image);
        - target_unet (+ target_scheduler): unpaired translation G2(z);
        - target_class_labels: class translation G1(z | c_target) (with target_unet: G2(z | c_target));
        - target_prompt + clip: a text edit, mu_theta CLIP-guided with guidance_scale and `gradient`, or, with
          plug_and_play_steps > 0, Langevin on z (step_size lambda) and an unguided decoding.
        class_labels, target_class_labels: an int or one per image, for class-conditional models; None: the null class.
        reconstruct: also return G1(z | c). sdedit_baseline: also return the SDEdit baseline, the same x_t0 with fresh
        noise (CycleLatent.with_fresh_noise) decoded as the result is. callback(step, t, x_t, x0_hat) sees every step of every stage with one
        running index, total_steps(...) steps in all.
        """
        self.check_inputs(
            image=image, target_unet=target_unet, target_scheduler=target_scheduler, class_labels=class_labels,
            target_class_labels=target_class_labels, clip=clip, target_prompt=target_prompt,
            source_prompt=source_prompt, guidance_scale=guidance_scale, gradient=gradient,
            plug_and_play_steps=plug_and_play_steps, step_size=step_size, strength=strength, eta=eta,
            num_inference_steps=num_inference_steps, output_type=output_type,
        )
        translate_or_edit = target_unet is not None or target_class_labels is not None or target_prompt is not None

        # 1. z = DPMEnc(x | G1, c)
        latent = self.encode(image, num_inference_steps=num_inference_steps, eta=eta, strength=strength,
                             class_labels=class_labels, generator=generator, callback=callback)
        K = done = len(latent.timesteps)

        # 2. the reconstruction G1(z | c): the input again up to float error
        reconstructions = None
        if reconstruct:
            reconstructions = self.decode(latent, output_type=output_type,
                                          callback=counted_from(callback, done)).images
            done += K

        # 3. plug-and-play guidance (optional): z <- Langevin dynamics toward p(z) exp(-s E(G2(z | c_target)))
        z = latent
        if plug_and_play_steps > 0:
            z = self.plug_and_play(
                latent, clip=clip, target_prompt=target_prompt, source_prompt=source_prompt,
                langevin_steps=plug_and_play_steps, step_size=step_size, guidance_scale=guidance_scale,
                unet=target_unet, scheduler=target_scheduler, class_labels=target_class_labels, generator=generator,
                callback=counted_from(callback, done),
            )
            done += plug_and_play_steps

        # 4. the result G2(z | c_target), CLIP-guided toward target_prompt unless plug-and-play already moved z
        as_result = dict(unet=target_unet, scheduler=target_scheduler, class_labels=target_class_labels, clip=clip,
                         target_prompt=target_prompt if plug_and_play_steps == 0 else None,
                         source_prompt=source_prompt, guidance_scale=guidance_scale, gradient=gradient,
                         output_type=output_type)
        if translate_or_edit or not reconstruct:
            images = self.decode(z, callback=counted_from(callback, done), **as_result).images
            done += K
        else:
            images = reconstructions

        # 5. the SDEdit baseline (optional): the same x_t0, fresh noise instead of the encoded eps, decoded alike
        sdedit_images = None
        if sdedit_baseline:
            sdedit_images = self.decode(latent.with_fresh_noise(generator), callback=counted_from(callback, done),
                                        **as_result).images

        if not return_dict:
            return images, reconstructions, latent, sdedit_images
        return CycleDiffusionPipelineOutput(images=images, reconstructions=reconstructions, latent=latent,
                                            sdedit_images=sdedit_images)
