"""CycleDiffusion (Wu & De la Torre, ICCV 2023): the latent space of a stochastic DDIM sampler (eta > 0).

The latent of an image is z = (x_{t0}, eps_{t0}, ..., eps_{t_n}), and G(z) runs x_prev = mu_theta(x_t, t) + sigma_t eps_t.
The DPM-Encoder draws z so that G(z) is the image again:
    x_prev ~ q(x_prev | x_t, x0)  (x0 itself at the last step),   eps_t = (x_prev - mu_theta(x_t, t)) / sigma_t.
Decoding the same z with another model translates the image (unpaired translation), and so does decoding it with the
same class-conditional model under another class: encode with G(z | c_source), decode with G(z | c_target). Decoding
it with the same model CLIP-guided toward a text edits it; Langevin steps on z with a CLIP energy are the paper's
plug-and-play guidance.

Vocabulary shared with the other pipelines: `encode(image) -> CycleLatent` (the DPM-Encoder) and `decode(latent)`
(G); `class_labels` is the class c an image is encoded under and `target_class_labels` the class it is decoded under;
`guidance_scale` is the CLIP guidance scale s and `gradient="exact"|"fixed_eps"` how its gradient is taken; every
method that returns images returns an output with `.images` and honours `output_type` and `return_dict`;
`callback(step, t, x_t, x0_hat)` counts the steps of the whole call, `total_steps(...)` of them.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import PIL.Image
import torch
from diffusers import DDIMScheduler, DiffusionPipeline, ImagePipelineOutput
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor
from torch.utils.checkpoint import checkpoint

from .clip import ClipJudge
from .images import check_output_type, postprocess, to_model_input
from .sampling import Callback, abar, class_label_list, counted_from, eps_theta, prev_timestep
from .scores import Score, check_gradient, clip_text_score, guided_eps, score_gradient

# the scheduler config entries that define the noise schedule: two models can share a latent only if these agree
SCHEDULE_KEYS = ("num_train_timesteps", "beta_schedule", "beta_start", "beta_end", "trained_betas", "prediction_type",
                 "clip_sample", "clip_sample_range", "thresholding")


def encoder_scheduler(config) -> DDIMScheduler:
    """A DDIM scheduler whose sigma_t > 0 at every step, the last included: abar after the last step is abar_0
    (set_alpha_to_one=False) and the last timestep is 1 (leading spacing, steps_offset=1)."""
    return DDIMScheduler.from_config(config, set_alpha_to_one=False, timestep_spacing="leading", steps_offset=1)


def sigma_t(scheduler: DDIMScheduler, t, eta: float) -> torch.Tensor:
    """sigma_t = eta sqrt((1-abar_prev)/(1-abar_t)) sqrt(1 - abar_t/abar_prev), as DDIMScheduler.step computes it."""
    return eta * scheduler._get_variance(int(t), prev_timestep(scheduler, t)).sqrt()


def eps_of(x_t: torch.Tensor, x0: torch.Tensor, abar_t: torch.Tensor) -> torch.Tensor:
    """The noise in x_t given x0: eps = (x_t - sqrt(abar_t) x0) / sqrt(1 - abar_t), the inverse of q_sample."""
    return (x_t - abar_t.sqrt() * x0) / (1 - abar_t).sqrt()


def chain_length(num_inference_steps: int, strength: float) -> int:
    """K, the steps of a chain started at t0: the sampler's last round(strength * num_inference_steps), at least 1."""
    return max(1, round(strength * num_inference_steps))


def check_encoder_args(num_inference_steps, eta, strength, T: int) -> None:
    if not isinstance(num_inference_steps, int) or not 1 <= num_inference_steps < T:
        raise ValueError(
            f"num_inference_steps must be an integer from 1 to {T - 1} (the encoder needs a last timestep > 0); "
            f"got {num_inference_steps!r}"
        )
    if not isinstance(eta, (int, float)) or not 0 < eta <= 1:
        raise ValueError(
            f"eta must be in (0, 1] for the DPM-Encoder: with eta = 0 the sampler is deterministic, sigma_t = 0 and "
            f"there is no noise to encode into; got {eta!r} (the paper uses 1.0 for DDPM models)"
        )
    if not isinstance(strength, (int, float)) or not 0 < strength <= 1:
        raise ValueError(f"strength must be in (0, 1] (1 encodes from pure noise, smaller keeps more); got {strength!r}")


def check_langevin_args(langevin_steps, step_size) -> None:
    if not isinstance(langevin_steps, int) or not 1 <= langevin_steps <= 100:
        raise ValueError(f"langevin_steps must be an integer from 1 to 100; got {langevin_steps!r}")
    if not isinstance(step_size, (int, float)) or not 0 < step_size <= 1:
        raise ValueError(f"step_size (lambda) must be in (0, 1]; got {step_size!r}")


def check_text_edit(clip: ClipJudge | None, target_prompt: str, source_prompt: str | None) -> None:
    if clip is None:
        raise ValueError("a text edit needs a CLIP model: pass clip=ClipJudge(model, tokenizer)")
    clip.check_prompts([target_prompt] + ([source_prompt] if source_prompt else []))


def check_class_labels(unet, class_labels, batch_size: int) -> torch.Tensor | None:
    """class_labels (None, an int, or one int per image) -> (B,) long on the U-Net's device; None stays None (the null
    class of a class-conditional model, or no class at all). Raise ValueError for labels the U-Net cannot take."""
    if class_labels is None:
        return None
    num_classes = unet.config.num_class_embeds
    if num_classes is None:
        raise ValueError(
            "this model has no class embeddings (its config.num_class_embeds is None), so it takes no class labels; "
            "pass none, or use a class-conditional model such as shapes-16"
        )
    try:
        labels = class_label_list(class_labels, num_classes, batch_size)
    except ValueError as err:
        allowed = f"integers from 0 to {num_classes - 1} ({num_classes - 1} is the null class, unconditional)"
        raise ValueError(
            f"class labels must be one of the {allowed}, or a list of {batch_size} of them (one per image); "
            f"got {class_labels!r}"
        ) from err
    return torch.tensor(labels, dtype=torch.long, device=unet.device)  # (B,)


def check_compatible(unet, scheduler_config, other_unet, other_scheduler_config) -> None:
    """Raise ValueError unless a latent of one model can be decoded by the other: same image size, channels, schedule."""
    for key in ("sample_size", "in_channels", "out_channels"):
        if unet.config[key] != other_unet.config[key]:
            raise ValueError(
                f"the two models do not share a latent space: {key} is {unet.config[key]} for the source and "
                f"{other_unet.config[key]} for the target; pick models of the same resolution"
            )
    for key in SCHEDULE_KEYS:
        if scheduler_config.get(key) != other_scheduler_config.get(key):
            raise ValueError(
                f"the two models do not share a latent space: their noise schedules differ in {key} "
                f"({scheduler_config.get(key)!r} vs {other_scheduler_config.get(key)!r}); pick models trained with "
                "the same schedule"
            )


def text_score(clip: ClipJudge | None, target_prompt: str, source_prompt: str | None) -> Score:
    """CLIP's score of x0_hat toward target_prompt (and away from source_prompt, when given)."""
    check_text_edit(clip, target_prompt, source_prompt)
    source = clip.text_embeds([source_prompt]) if source_prompt else None
    return clip_text_score(clip, clip.text_embeds([target_prompt]), source)


def image_batch_size(image) -> int:
    """How many images a pipeline's image argument holds: B of a (B,3,H,W) tensor, else 1."""
    return image.shape[0] if isinstance(image, torch.Tensor) and image.ndim == 4 else 1


@dataclass
class CycleLatent:
    """z = (x_{t0}, eps per step) of the DDIM sampler with this eta and number of steps, and the class c it was
    encoded under: G(z | c) is the image."""

    x_t0: torch.Tensor  # (B,3,H,W), the chain's start x_{t0}
    eps: torch.Tensor  # (K,B,3,H,W), the noise of each of the K steps from t0 down
    timesteps: torch.Tensor  # (K,), t0 first
    num_inference_steps: int  # the full chain's steps (K <= this when strength < 1)
    eta: float
    class_labels: torch.Tensor | None = None  # (B,) long; None: the null class (or an unconditional model)

    @property
    def t0(self) -> int:
        return int(self.timesteps[0])

    def statistics(self) -> dict[str, float]:
        """Mean, standard deviation and |z|^2 / dim of z = (x_t0, eps_t0, ..., eps_1): under the sampler's own prior
        every part is nearly N(0, I), so |z|^2 / dim near 1 says the encoder found noise the model would draw itself."""
        z = torch.cat([self.x_t0.flatten(), self.eps.flatten()]).float()
        return {"mean": z.mean().item(), "std": z.std().item(), "squared_norm_per_dim": z.pow(2).mean().item()}

    def with_fresh_noise(self, generator: torch.Generator | None = None) -> "CycleLatent":
        """The SDEdit baseline of this latent: the same start x_t0 ~ q(x_t0 | x_0), fresh eps_t ~ N(0, I) instead of the
        encoded ones, so decoding it shows what the inferred noise contributes."""
        eps = randn_tensor(self.eps.shape, generator=generator, device=self.eps.device, dtype=self.eps.dtype)
        return dataclasses.replace(self, eps=eps)


@dataclass
class CycleDiffusionPipelineOutput(BaseOutput):
    """images: G2(z); reconstructions: G1(z), the input again up to float error (None unless asked for); latent: z;
    sdedit_images: the SDEdit baseline, z with fresh noise decoded as the result is (None unless asked for)."""

    images: list[PIL.Image.Image] | np.ndarray | torch.Tensor
    reconstructions: list[PIL.Image.Image] | np.ndarray | torch.Tensor | None
    latent: CycleLatent
    sdedit_images: list[PIL.Image.Image] | np.ndarray | torch.Tensor | None = None


class CycleDiffusionPipeline(DiffusionPipeline):
    """DPM-Encoder and decoder of a DDPM (unet + its DDPM or DDIM scheduler's noise schedule), unconditional or
    class-conditional (config.num_class_embeds set, the last label the null class)."""

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
        scheduler = encoder_scheduler(self.scheduler.config)
        scheduler.set_timesteps(num_inference_steps)
        timesteps = scheduler.timesteps[num_inference_steps - chain_length(num_inference_steps, strength) :]  # (K,)

        # 1. x_{t0} ~ q(x_{t0} | x0)
        noise = randn_tensor(x0.shape, generator=generator, device=device, dtype=x0.dtype)
        x = scheduler.add_noise(x0, noise, timesteps[:1])
        x_t0, eps = x, []
        for step, t in enumerate(self.progress_bar(timesteps)):
            # 2. x_prev ~ q(x_prev | x_t, x0): the DDIM step with the true noise of x_t; the chain ends on x0 itself
            if step == len(timesteps) - 1:
                x_prev = x0
            else:
                n = randn_tensor(x0.shape, generator=generator, device=device, dtype=x0.dtype)
                x_prev = scheduler.step(eps_of(x, x0, abar(scheduler, t)), t, x, eta=eta, variance_noise=n).prev_sample
            # 3. eps_t = (x_prev - mu_theta(x_t, t | c)) / sigma_t, mu_theta = G's step with zero noise
            mu, x0_hat = self._G_step(self.unet, scheduler, x, t, torch.zeros_like(x), c=c, eta=eta)
            eps.append((x_prev - mu) / sigma_t(scheduler, t, eta))
            if callback is not None:
                callback(step, int(t), x, x0_hat)
            x = x_prev
        return CycleLatent(x_t0=x_t0, eps=torch.stack(eps), timesteps=timesteps.clone(),
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
        unet, sampler = self._decoder(unet=unet, scheduler=scheduler, latent=latent)
        c = self._c(unet=unet, class_labels=class_labels, latent=latent)
        score = text_score(clip, target_prompt, source_prompt) if guidance_scale and target_prompt else None
        x = self._G(latent.x_t0, latent.eps, timesteps=self.progress_bar(latent.timesteps), eta=latent.eta,
                    unet=unet, sampler=sampler, c=c, score=score, guidance_scale=guidance_scale, gradient=gradient,
                    callback=callback)  # (B,3,H,W) in [-1,1]
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
        """Langevin dynamics on z toward p(z) exp(-s E(G(z | c))), E = -CLIP text score of the decoded image:
        z <- z - (lambda/2) grad_z (|z|^2/2 + s E(G(z | c))) + sqrt(lambda) xi, from the encoded z.

        unet / scheduler: the model G runs (None: the pipeline's own), as in decode.
        class_labels: the class c of G (None: as in decode); the returned latent records it, so decode() uses it.
        Gradients run through the whole chain with one checkpoint per step (memory of one step, twice the forwards).
        callback(k, t0, x_t0, G(z)) once per Langevin step k.
        """
        check_langevin_args(langevin_steps, step_size)
        score = text_score(clip, target_prompt, source_prompt)
        unet, sampler = self._decoder(unet=unet, scheduler=scheduler, latent=latent)
        c = self._c(unet=unet, class_labels=class_labels, latent=latent)
        z = [latent.x_t0.float(), latent.eps.float()]  # (B,3,H,W), (K,B,3,H,W)
        for k in range(langevin_steps):
            with torch.enable_grad():
                z = [part.detach().requires_grad_(True) for part in z]
                x0 = self._G(z[0], z[1], timesteps=latent.timesteps, eta=latent.eta, unet=unet, sampler=sampler, c=c)
                energy = -guidance_scale * score(x0, x0).sum() + sum(0.5 * (part**2).sum() for part in z)
                grads = torch.autograd.grad(energy, z)
            with torch.no_grad():
                z = [part - step_size / 2 * g
                     + step_size**0.5 * randn_tensor(part.shape, generator=generator, device=part.device)
                     for part, g in zip(z, grads)]
            if callback is not None:
                callback(k, latent.t0, z[0], x0.detach())
        dtype = latent.x_t0.dtype
        return dataclasses.replace(latent, x_t0=z[0].to(dtype), eps=z[1].to(dtype), class_labels=c)

    def _decoder(self, *, unet, scheduler, latent: CycleLatent) -> tuple:
        """G's model (None: the pipeline's own), checked to share the latent space, and its sampler at z's steps."""
        unet = self.unet if unet is None else unet
        config = (scheduler or self.scheduler).config
        check_compatible(self.unet, self.scheduler.config, unet, config)
        sampler = encoder_scheduler(config)
        sampler.set_timesteps(latent.num_inference_steps)
        return unet, sampler

    def _c(self, *, unet, class_labels, latent: CycleLatent) -> torch.Tensor | None:
        """The class c to decode under, (B,) or None: class_labels for `unet`; None: the latent's own class with the
        pipeline's model, none with another."""
        if class_labels is not None:
            return check_class_labels(unet, class_labels, latent.x_t0.shape[0])
        if unet is self.unet and latent.class_labels is not None:
            return latent.class_labels.to(unet.device)
        return None

    def _G(self, x_t0: torch.Tensor, eps: torch.Tensor, *, timesteps, eta: float, unet, sampler: DDIMScheduler,
           c: torch.Tensor | None, score: Score | None = None, guidance_scale: float = 0.0, gradient: str = "fixed_eps",
           callback: Callback = None) -> torch.Tensor:
        """G(z | c) = x0: the chain from x_t0 (B,3,H,W) with the noise eps (K,B,3,H,W) at `timesteps` (K,), -> (B,3,H,W)
        in [-1,1]. Differentiable in z when autograd is on, with one checkpoint per step."""
        kwargs = dict(c=c, eta=eta, score=score, guidance_scale=guidance_scale, gradient=gradient)
        x = x_t0.to(unet.device, unet.dtype)
        for step, (t, eps_t) in enumerate(zip(timesteps, eps)):
            if torch.is_grad_enabled():
                x, x0_hat = checkpoint(self._G_step, unet, sampler, x, t, eps_t.to(x), use_reentrant=False, **kwargs)
            else:
                x, x0_hat = self._G_step(unet, sampler, x, t, eps_t.to(x), **kwargs)
            if callback is not None:
                callback(step, int(t), x, x0_hat)
        return x

    @staticmethod
    def _G_step(unet, sampler: DDIMScheduler, x_t: torch.Tensor, t, eps_t: torch.Tensor, *, c: torch.Tensor | None,
                eta: float, score: Score | None = None, guidance_scale: float = 0.0,
                gradient: str = "fixed_eps") -> tuple[torch.Tensor, torch.Tensor]:
        """One step of G: x_prev = mu_theta(x_t, t | c) + sigma_t eps_t -> (x_prev, x0_hat), both (B,3,H,W).

        With a score, mu_theta is CLIP-guided by Algorithm 2's rule eps_hat = eps_theta - sqrt(1-abar_t) s g,
        g = grad_{x_t} score taken as `gradient` says.
        """
        if score is None:
            eps, guided = eps_theta(unet, x_t, t, c), False
        else:
            abar_t = abar(sampler, t)
            g, eps = score_gradient(score, x_t, lambda x: eps_theta(unet, x, t, c), abar_t, gradient)
            eps, guided = guided_eps(eps, g, abar_t, guidance_scale), True
        out = sampler.step(eps, t, x_t, eta=eta, variance_noise=eps_t, use_clipped_model_output=guided)
        return out.prev_sample, out.pred_original_sample

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
