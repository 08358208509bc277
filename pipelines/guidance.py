"""Classifier guidance (Dhariwal & Nichol, NeurIPS 2021, Algorithms 1 and 2) for an unconditional diffusion model,
and its alternative without a classifier for a class-conditional one (Ho & Salimans 2022).

With g = grad_{x_t} log p_phi(y | x_t, t) and scale s (`guidance_scale`), one guided step per algorithm:
    DDPM (Alg. 1, condition_mean):   x_{t-1} ~ N(mu + s Sigma g, Sigma)
    DDIM (Alg. 2, condition_score):  eps_hat = eps_theta(x_t) - sqrt(1 - abar_t) s g, then the DDIM step with eps_hat
Classifier-free guidance (`classifier_free=True`, w = guidance_scale) steps with
    eps_hat = eps_theta(x_t, null) + w (eps_theta(x_t, y) - eps_theta(x_t, null))
(w = 1: class-conditional sampling, w = 0: the null class); a classifier, when there is one, then only reads
p(y | x_t). Sampling may start from an image instead of noise: x_{t0} = q_sample(x0, t0, eps) at the first of the
sampler's last round(strength * steps) timesteps, then the guided steps (at scale 0, SDEdit).

A classifier is any callable classifier(x_t, t, x0_hat) -> logits (B,K): x_t (B,3,H,W) in [-1,1] at timestep
t (B,) long, and x0_hat = P_t(eps_theta(x_t)) (B,3,H,W), unclipped. A noise-aware classifier (a torch.nn.Module
trained on noisy images) reads x_t and t and may ignore x0_hat; a clean-image classifier such as CLIP zero-shot
reads x0_hat. `gradient` chooses how x0_hat depends on x_t: "exact" differentiates through the U-Net,
"fixed_eps" holds eps fixed (d x0_hat / d x_t = 1/sqrt(abar_t)), which skips the U-Net backward.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from typing import Sequence

import PIL.Image
import torch
from diffusers import DDIMScheduler, DDPMScheduler, DiffusionPipeline
from diffusers.utils import BaseOutput

from .core.clip import ClipJudge
from .core.images import check_output_type, postprocess, to_model_input
from .core.sampling import (Callback, P_t, abar, beta_tilde, chain_length, check_batch_size, check_num_inference_steps,
                            class_label_list, eps_theta, initial_noise)
from .core.schedulers import sampler as make_sampler
from .core.scores import Score, check_gradient, guided_eps, guided_mean, score_gradient

SAMPLERS = ("ddim", "ddpm")  # Algorithm 2, Algorithm 1


class ClipZeroShotClassifier:
    """p(y=k | x0_hat) = softmax_k(logit_scale cos(CLIP(x0_hat), CLIP(prompt_k))) over K >= 2 label prompts.

    The text embeddings are computed once, here; each call embeds the predicted clean image with
    differentiable CLIP preprocessing. CLIP has no notion of noise, so x_t and t are ignored.
    """

    def __init__(self, judge: ClipJudge, prompts: list[str]):
        prompts = [p.strip() for p in prompts if p and p.strip()]
        if len(prompts) < 2:
            raise ValueError(
                f"give at least two non-empty label prompts (e.g. 'a photo of a smiling person', "
                f"'a photo of a person with glasses'); got {len(prompts)}"
            )
        self.judge = judge
        self.prompts = prompts
        self.num_classes = len(prompts)
        self.text_emb = judge.text_embeds(prompts)  # (K,D)

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor, x0_hat: torch.Tensor) -> torch.Tensor:
        """(B,3,H,W) in [-1,1] -> logits (B,K)."""
        return self.judge.logits(x0_hat, self.text_emb)


def log_p_y(classifier, t: torch.Tensor, y: torch.Tensor):
    """The score f(x_t, x0_hat) = log p_phi(y | x_t, t) = log_softmax(classifier(x_t, t, x0_hat))[y]: (B,)."""

    def f(x_t: torch.Tensor, x0_hat: torch.Tensor) -> torch.Tensor:
        logits = classifier(x_t, t, x0_hat).float()  # (B,K)
        class_label_list(y, logits.shape[-1])
        return logits.log_softmax(dim=-1).gather(1, y.view(-1, 1)).squeeze(1)

    return f


def Sigma_t(scheduler: DDPMScheduler, t) -> torch.Tensor:
    """Sigma of the DDPM step x_prev ~ N(mu, Sigma), a scalar: the posterior variance beta_tilde_t (variance_type
    fixed_small) or beta_t = 1 - abar_t / abar_prev (fixed_large), at the sampler's own previous timestep."""
    abar_t, abar_prev = abar(scheduler, t), abar(scheduler, scheduler.previous_timestep(t))
    if scheduler.config.variance_type == "fixed_large":
        return 1 - abar_t / abar_prev
    return beta_tilde(abar_t, abar_prev)


def eps_and_grad(unet, x_t: torch.Tensor, t, log_p: Score, abar_t: torch.Tensor, gradient: str,
                 scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(eps_theta(x_t), g = grad_{x_t} log p_phi(y | x_t, t)), both (B,3,H,W); at s = 0 no gradient is taken: g = 0."""
    if scale == 0:
        return eps_theta(unet, x_t, t), torch.zeros_like(x_t)
    g, eps = score_gradient(log_p, x_t, lambda x: eps_theta(unet, x, t), abar_t, gradient)
    return eps, g


def eps_classifier_free(unet, x_t: torch.Tensor, t, y: torch.Tensor, w: float) -> torch.Tensor:
    """eps_hat = eps_theta(x_t, null) + w (eps_theta(x_t, y) - eps_theta(x_t, null)), written as w eps_theta(x_t, y)
    + (1 - w) eps_theta(x_t, null) so that w = 1 and w = 0 give either prediction exactly: (B,C,H,W). The two are
    separate U-Net calls of the batch, as class-conditional sampling calls it."""
    return w * eps_theta(unet, x_t, t, y) + (1 - w) * eps_theta(unet, x_t, t)


def condition_mean(scheduler: DDPMScheduler, x_t: torch.Tensor, t, eps: torch.Tensor, g: torch.Tensor, scale: float,
                   generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Algorithm 1 (DDPM): x_prev ~ N(mu + s Sigma g, Sigma) -> (x_prev, x0_hat), both (B,3,H,W).

    A sample of N(mu, Sigma) moved by s Sigma g is a sample of N(mu + s Sigma g, Sigma).
    """
    out = scheduler.step(eps, t, x_t, generator=generator)
    return guided_mean(out.prev_sample, Sigma_t(scheduler, t), g, scale), out.pred_original_sample


def condition_score(scheduler: DDIMScheduler, x_t: torch.Tensor, t, eps: torch.Tensor, g: torch.Tensor, scale: float,
                    generator: torch.Generator | None, eta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Algorithm 2 (DDIM): eps_hat = eps - sqrt(1 - abar_t) s g, then the DDIM step (noise level eta) with eps_hat
    -> (x_prev, x0_hat), both (B,3,H,W).

    With clip_sample, eps is re-derived from the clipped x0 (use_clipped_model_output), otherwise the clipped x0 and
    the shifted eps disagree and strong guidance pushes the wrong way; at s = 0 this is
    DDIMPipeline(use_clipped_model_output=True), which differs from DDIMPipeline's default whenever the clip is
    active. One clipping convention for every scale, so the guided and plain runs stay comparable.
    """
    eps_hat = guided_eps(eps, g, abar(scheduler, t), scale)
    clipped = bool(scheduler.config.get("clip_sample", False))
    out = scheduler.step(eps_hat, t, x_t, eta=eta, use_clipped_model_output=clipped, generator=generator)
    return out.prev_sample, out.pred_original_sample


def check_variance_type(scheduler: DDPMScheduler) -> None:
    variance_type = scheduler.config.variance_type
    if variance_type not in ("fixed_small", "fixed_large"):
        raise ValueError(
            f"the guided DDPM sampler supports variance_type 'fixed_small' or 'fixed_large' (the hub DDPMs); "
            f"this scheduler has {variance_type!r}; use sampler='ddim'"
        )


def declared_num_classes(classifier) -> int | None:
    """K when the classifier declares it (an attribute, or a diffusers/transformers config entry), else None."""
    config = getattr(classifier, "config", None)
    return getattr(config, "num_classes", None) or getattr(classifier, "__dict__", {}).get("num_classes")


def check_guidance_args(class_labels, guidance_scale, sampler, gradient, eta, num_classes: int | None) -> list[int]:
    """The arguments of a guided call; the class labels (checked against num_classes when the classifier declares
    it, else against its first logits) as a list."""
    labels = class_label_list(class_labels, num_classes)
    check_batch_size(len(labels))
    if not isinstance(guidance_scale, (int, float)) or not math.isfinite(guidance_scale) or guidance_scale < 0:
        raise ValueError(f"guidance_scale must be a finite number >= 0 (0 = no guidance); got {guidance_scale!r}")
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler {sampler!r} is not supported; use 'ddim' or 'ddpm'")
    check_gradient(gradient)
    if not isinstance(eta, (int, float)) or not 0 <= eta <= 1:
        raise ValueError(f"eta must be a number from 0 (deterministic DDIM) to 1 (DDPM-like); got {eta!r}")
    return labels


def check_finite(x: torch.Tensor, what: str, step: int, t, scale: float) -> None:
    """Raise when guidance (scale > 0) has made x NaN or infinite."""
    if scale and not torch.isfinite(x).all():
        raise ValueError(
            f"the {what} became NaN or infinite at step {step} (t={int(t)}) with guidance_scale={scale:g}; "
            f"try a smaller guidance_scale"
        )


@dataclass
class ClassifierGuidancePipelineOutput(BaseOutput):
    """images: the samples; probabilities: (B,K) float32, the classifier's p(k | x_0) of each final sample (None
    without a classifier);
    log_probs (return_log_probs): (steps,B) float32, log p_phi(y | x_t, t) of the target at each step's x_t, read with
    x0_hat of the unguided eps_theta; gradient_maps: {step: (B,H,W) float32} for each of gradient_map_steps, the
    per-pixel norm over channels of g = grad_{x_t} log p_phi(y | x_t, t) (zero at guidance_scale 0: no gradient);
    timesteps: (steps,) the t of each step."""

    images: list[PIL.Image.Image] | torch.Tensor
    probabilities: torch.Tensor | None
    log_probs: torch.Tensor | None = None
    gradient_maps: dict[int, torch.Tensor] | None = None
    timesteps: torch.Tensor | None = None


class ClassifierGuidancePipeline(DiffusionPipeline):
    """Sampling from a DDPM (unet + scheduler) steered toward a class: by a classifier's gradient, or, for a
    class-conditional model, by classifier-free guidance (the classifier then optional, only reading p(y | x_t))."""

    def __init__(self, unet, scheduler, classifier=None):
        super().__init__()
        self.register_modules(unet=unet, scheduler=scheduler, classifier=classifier)

    def total_steps(self, *, num_inference_steps: int, strength: float | None = None) -> int:
        """The callback's steps in one call: one per sampler step, from x_T or, started from an image at `strength`,
        from t0."""
        return num_inference_steps if strength is None else chain_length(num_inference_steps, strength)

    def check_inputs(self, *, class_labels, guidance_scale, sampler, num_inference_steps, eta, gradient,
                     output_type, classifier_free=False, image=None, strength=1.0) -> list[int]:
        """Every argument of __call__, before its first U-Net evaluation; the class labels as a list."""
        classes = self.unet.config.num_class_embeds
        if classifier_free and classes is None:
            raise ValueError("classifier-free guidance needs a class-conditional model (config.num_class_embeds set, "
                             "its last class the null class), such as faces-32 or shapes-16")
        if self.classifier is None and not classifier_free:
            raise ValueError("this pipeline has no classifier; pass classifier=... when building it")
        num_classes = classes - 1 if classifier_free else declared_num_classes(self.classifier)
        labels = check_guidance_args(class_labels, guidance_scale, sampler, gradient, eta, num_classes)
        check_num_inference_steps(num_inference_steps, self.scheduler)
        check_output_type(output_type)
        if image is not None and (not isinstance(strength, (int, float)) or not 0 < strength <= 1):
            raise ValueError(f"strength must be in (0, 1] (1 starts from pure noise, smaller keeps more of the image); "
                             f"got {strength!r}")
        return labels

    @torch.no_grad()
    def __call__(
        self,
        class_labels,
        guidance_scale: float = 1.0,
        sampler: str = "ddim",
        num_inference_steps: int = 50,
        eta: float = 0.0,
        gradient: str = "exact",
        generator: torch.Generator | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        callback: Callback = None,
        return_log_probs: bool = False,
        gradient_map_steps: Sequence[int] = (),
        classifier_free: bool = False,
        image=None,
        strength: float = 1.0,
    ):
        """Sample one image per entry of `class_labels`, guided toward that class.

        class_labels: an int or a list of ints, one target class per sample (batch size = its length).
        guidance_scale: s >= 0; 0 is the plain sampler (DDPMPipeline / DDIMPipeline bit for bit).
        sampler: "ddim" (Algorithm 2, noise level eta, 0 = deterministic) or "ddpm" (Algorithm 1; eta unused).
        gradient: "exact" (through the U-Net) or "fixed_eps" (eps held fixed, no U-Net backward).
        callback(step, t, x_t, x0_hat) is called after every step.
        return_log_probs: also return the target's log-probability at every step (one more classifier call a step);
        gradient_map_steps: the steps (0-based) whose gradient norm map to return.
        classifier_free: guide by eps_theta(x_t, null) + w (eps_theta(x_t, y) - eps_theta(x_t, null)), w =
        guidance_scale, instead of a classifier's gradient (a class-conditional model).
        image: start from it (PIL, path or (1 or B,3,H,W) in [0,1]) noised to t0, the first of the last
        round(strength * num_inference_steps) timesteps, instead of from pure noise; the noise is the draw x_T would be.
        """
        labels = self.check_inputs(class_labels=class_labels, guidance_scale=guidance_scale, sampler=sampler,
                                   num_inference_steps=num_inference_steps, eta=eta, gradient=gradient,
                                   output_type=output_type, classifier_free=classifier_free, image=image,
                                   strength=strength)
        device = self._execution_device
        batch_size = len(labels)
        y = torch.tensor(labels, device=device)  # (B,)

        # 1. a fresh scheduler of the sampler's kind from the model's schedule, as DDPMPipeline/DDIMPipeline build it,
        #    and its guided step: Algorithm 1 (DDPM) or 2 (DDIM)
        scheduler = make_sampler(sampler, self.scheduler.config, num_inference_steps)
        if sampler == "ddpm":
            check_variance_type(scheduler)
        guided_step = condition_mean if sampler == "ddpm" else partial(condition_score, eta=eta)

        # 2. x_T ~ N(0, I), drawn as DDPMPipeline/DDIMPipeline draw it; from an image, x_{t0} = q_sample(x0, t0, x_T)
        timesteps = scheduler.timesteps
        x = initial_noise(self.unet, batch_size, generator, device)
        if image is not None:
            timesteps = timesteps[num_inference_steps - chain_length(num_inference_steps, strength):]  # (K,), t0 first
            x0 = to_model_input(image, self.unet.config.sample_size, device, self.unet.dtype)  # (1 or B,3,H,W)
            x = scheduler.add_noise(x0.expand_as(x), x, timesteps[:1])
        log_probs, gradient_maps = [], {}

        for step, t in enumerate(self.progress_bar(timesteps)):
            abar_t = abar(scheduler, t)
            log_p = None if self.classifier is None else log_p_y(
                self.classifier, torch.full((batch_size,), int(t), device=device, dtype=torch.long), y)
            # 3. eps_theta(x_t) and g = grad_{x_t} log p_phi(y | x_t, t), or classifier-free guidance's eps_hat, g = 0
            if classifier_free:
                eps, g = eps_classifier_free(self.unet, x, t, y, guidance_scale), torch.zeros_like(x)
            else:
                eps, g = eps_and_grad(self.unet, x, t, log_p, abar_t, gradient, guidance_scale)
                check_finite(g, "classifier gradient", step, t, guidance_scale)
            # 4. what the guidance sees at x_t: log p_phi(y | x_t, t) with x0_hat of the unguided eps, and |g| per pixel
            if return_log_probs and log_p is not None:
                log_probs.append(log_p(x, P_t(x, eps, abar_t)).float().cpu())  # (B,)
            if step in gradient_map_steps:
                gradient_maps[step] = g.norm(dim=1).float().cpu()  # (B,H,W)
            # 5. the guided step (the plain step of eps_hat under classifier-free guidance)
            x, x0_hat = guided_step(scheduler, x, t, eps, g, 0.0 if classifier_free else guidance_scale, generator)
            check_finite(x, "sample", step, t, guidance_scale)
            if callback is not None:
                callback(step, int(t), x, x0_hat)

        # 6. the classifier's verdict on the final samples, at t = 0 where x_0 is its own clean image
        probabilities = None
        if self.classifier is not None:
            zero = torch.zeros(batch_size, device=device, dtype=torch.long)
            logits = self.classifier(x, zero, x).float()
            class_label_list(y, logits.shape[-1])
            probabilities = logits.softmax(dim=-1).cpu()

        images = postprocess(x, output_type)
        log_probs = torch.stack(log_probs) if log_probs else None
        gradient_maps = gradient_maps if gradient_map_steps else None
        if not return_dict:
            return images, probabilities, log_probs, gradient_maps, timesteps
        return ClassifierGuidancePipelineOutput(images, probabilities, log_probs, gradient_maps, timesteps)
