"""CycleDiffusion's latent space (Wu & De la Torre, ICCV 2023): the DPM-Encoder, the decoder G and Langevin on z.

The latent of an image is z = (x_{t0}, eps_{t0}, ..., eps_1) of a stochastic DDIM sampler (eta > 0), and G(z | c) runs
    x_prev = mu_theta(x_t, t | c) + sigma_t eps_t
from x_{t0}. The DPM-Encoder draws z so that G(z | c) is the image again, one `encoder_step` per step:
    x_prev ~ q(x_prev | x_t, x0)  (x0 itself at the last step),   eps_t = (x_prev - mu_theta(x_t, t | c)) / sigma_t,
the same step for a pixel-space chain (here) and a latent one (Stable Diffusion's, `pipelines.cycle_diffusion.stable`).
Decoding the same z with another model, another class or CLIP guidance translates or edits the image; Langevin steps
on z with a CLIP energy are the paper's plug-and-play guidance.

Images are (B,3,H,W) in [-1,1]; the noise of a chain of K steps is (K,B,3,H,W).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable

import torch
from diffusers import DDIMScheduler
from diffusers.utils.torch_utils import randn_tensor
from torch.utils.checkpoint import checkpoint

from ..core.sampling import Callback, abar, eps_theta, prev_timestep, sigma_t
from ..core.schedulers import sampler
from ..core.scores import Score, guided_eps, score_gradient

# the scheduler config entries that define the noise schedule: two models can share a latent only if these agree
SCHEDULE_KEYS = ("num_train_timesteps", "beta_schedule", "beta_start", "beta_end", "trained_betas", "prediction_type",
                 "clip_sample", "clip_sample_range", "thresholding")


ENCODER_SCHEDULE = dict(set_alpha_to_one=False, timestep_spacing="leading", steps_offset=1)


def encoder_scheduler(config, num_inference_steps: int | None = None) -> DDIMScheduler:
    """A DDIM scheduler whose sigma_t > 0 at every step, the last included: abar after the last step is abar_0
    (set_alpha_to_one=False) and the last timestep is 1 (leading spacing, steps_offset=1)."""
    return sampler("ddim", config, num_inference_steps, **ENCODER_SCHEDULE)


def eps_of(x_t: torch.Tensor, x0: torch.Tensor, abar_t: torch.Tensor) -> torch.Tensor:
    """The noise in x_t given x0: eps = (x_t - sqrt(abar_t) x0) / sqrt(1 - abar_t), the inverse of q_sample."""
    return (x_t - abar_t.sqrt() * x0) / (1 - abar_t).sqrt()


def q_posterior_sample(scheduler: DDIMScheduler, x_t: torch.Tensor, x0: torch.Tensor, t: int, eta: float,
                       generator) -> torch.Tensor:
    """x_prev ~ q(x_prev | x_t, x0) = N(sqrt(abar_prev) x0 + sqrt(1 - abar_prev - sigma_t^2) eps_t, sigma_t^2 I) with
    eps_t = (x_t - sqrt(abar_t) x0) / sqrt(1 - abar_t); x0 itself, drawing nothing, when the step reaches t <= 0.
    (B,C,h,w)."""
    prev = prev_timestep(scheduler, t)
    if prev <= 0:
        return x0
    abar_prev, sigma = abar(scheduler, prev), sigma_t(scheduler, t, eta)
    n = randn_tensor(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    return abar_prev.sqrt() * x0 + (1 - abar_prev - sigma**2).sqrt() * eps_of(x_t, x0, abar(scheduler, t)) + sigma * n


def encoder_step(scheduler: DDIMScheduler, x_t: torch.Tensor, t, x0: torch.Tensor, eps: torch.Tensor, *, eta: float,
                 generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One step of the DPM-Encoder at t, eps = eps_theta(x_t, t | c) (B,C,h,w) given:
        x_prev ~ q(x_prev | x_t, x0),   eps_t = (x_prev - mu_theta(x_t, t | c)) / sigma_t,
    mu_theta the DDIM step of eps without noise. Returns (x_prev, eps_t, x0_hat), each (B,C,h,w)."""
    x_prev = q_posterior_sample(scheduler, x_t, x0, int(t), eta, generator)
    out = scheduler.step(eps, t, x_t, eta=eta, variance_noise=torch.zeros_like(x_t))
    return x_prev, (x_prev - out.prev_sample) / sigma_t(scheduler, int(t), eta), out.pred_original_sample


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


def G_step(unet, scheduler: DDIMScheduler, x_t: torch.Tensor, t, eps_t: torch.Tensor, *, c: torch.Tensor | None,
           eta: float, score: Score | None = None, guidance_scale: float = 0.0,
           gradient: str = "fixed_eps") -> tuple[torch.Tensor, torch.Tensor]:
    """One step of G: x_prev = mu_theta(x_t, t | c) + sigma_t eps_t -> (x_prev, x0_hat), both (B,3,H,W).

    With a score, mu_theta is CLIP-guided by Algorithm 2's rule eps_hat = eps_theta - sqrt(1-abar_t) s g,
    g = grad_{x_t} score taken as `gradient` says.
    """
    if score is None:
        eps, guided = eps_theta(unet, x_t, t, c), False
    else:
        abar_t = abar(scheduler, t)
        g, eps = score_gradient(score, x_t, lambda x: eps_theta(unet, x, t, c), abar_t, gradient)
        eps, guided = guided_eps(eps, g, abar_t, guidance_scale), True
    out = scheduler.step(eps, t, x_t, eta=eta, variance_noise=eps_t, use_clipped_model_output=guided)
    return out.prev_sample, out.pred_original_sample


def dpm_encoder(unet, scheduler: DDIMScheduler, x0: torch.Tensor, timesteps: torch.Tensor, *, eta: float,
                c: torch.Tensor | None, generator: torch.Generator | None = None, callback: Callback = None,
                progress_bar: Callable = iter) -> tuple[torch.Tensor, torch.Tensor]:
    """z ~ DPMEnc(z | x0, G(. | c)): x0 (B,3,H,W) -> (x_t0 (B,3,H,W), eps (K,B,3,H,W)) with G(z | c) = x0.

    timesteps: (K,) the chain's, t0 first, the last of the scheduler's (set to the full chain's steps) among them.
    progress_bar wraps the loop over them.
    """
    # 1. x_{t0} ~ q(x_{t0} | x0)
    noise = randn_tensor(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    x = x_t0 = scheduler.add_noise(x0, noise, timesteps[:1])
    eps = []
    for step, t in enumerate(progress_bar(timesteps)):
        # 2. x_prev ~ q(x_prev | x_t, x0), the chain ending on x0 itself; 3. eps_t = (x_prev - mu_theta) / sigma_t
        x_prev, eps_t, x0_hat = encoder_step(scheduler, x, t, x0, eps_theta(unet, x, t, c), eta=eta,
                                             generator=generator)
        eps.append(eps_t)
        if callback is not None:
            callback(step, int(t), x, x0_hat)
        x = x_prev
    return x_t0, torch.stack(eps)


def G(unet, scheduler: DDIMScheduler, x_t0: torch.Tensor, eps: torch.Tensor, timesteps: torch.Tensor, *, eta: float,
      c: torch.Tensor | None, score: Score | None = None, guidance_scale: float = 0.0, gradient: str = "fixed_eps",
      callback: Callback = None, progress_bar: Callable = iter) -> torch.Tensor:
    """G(z | c) = x0: the chain from x_t0 (B,3,H,W) with the noise eps (K,B,3,H,W) at `timesteps` (K,), -> (B,3,H,W)
    in [-1,1]. Differentiable in z when autograd is on, with one checkpoint per step."""
    kwargs = dict(c=c, eta=eta, score=score, guidance_scale=guidance_scale, gradient=gradient)
    x = x_t0.to(unet.device, unet.dtype)
    for step, (t, eps_t) in enumerate(zip(progress_bar(timesteps), eps)):
        if torch.is_grad_enabled():
            x, x0_hat = checkpoint(G_step, unet, scheduler, x, t, eps_t.to(x), use_reentrant=False, **kwargs)
        else:
            x, x0_hat = G_step(unet, scheduler, x, t, eps_t.to(x), **kwargs)
        if callback is not None:
            callback(step, int(t), x, x0_hat)
    return x


def langevin(latent: CycleLatent, *, unet, scheduler: DDIMScheduler, c: torch.Tensor | None, score: Score,
             guidance_scale: float, langevin_steps: int, step_size: float, generator: torch.Generator | None = None,
             callback: Callback = None) -> CycleLatent:
    """z <- z - (lambda/2) grad_z (|z|^2/2 + s E(G(z | c))) + sqrt(lambda) xi: Langevin dynamics toward
    p(z) exp(-s E(G(z | c))), E = -score(G(z | c)), from the encoded z; the result records c.

    Gradients run through the whole chain with one checkpoint per step (memory of one step, twice the forwards).
    callback(k, t0, x_t0, G(z)) once per Langevin step k.
    """
    z = [latent.x_t0.float(), latent.eps.float()]  # (B,3,H,W), (K,B,3,H,W)
    for k in range(langevin_steps):
        with torch.enable_grad():
            z = [part.detach().requires_grad_(True) for part in z]
            x0 = G(unet, scheduler, z[0], z[1], latent.timesteps, eta=latent.eta, c=c)
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
