"""CycleDiffusion (Wu & De la Torre, ICCV 2023): the latent space of a stochastic DDIM sampler (eta > 0).

The latent of an image is z = (x_{t0}, eps_{t0}, ..., eps_{t_n}), and G(z) runs x_prev = mu_theta(x_t, t) + sigma_t eps_t.
The DPM-Encoder draws z so that G(z) is the image again:
    x_prev ~ q(x_prev | x_t, x0)  (x0 itself at the last step),   eps_t = (x_prev - mu_theta(x_t, t)) / sigma_t.
Decoding the same z with another model translates the image (unpaired translation), and so does decoding it with the
same class-conditional model under another class: encode with G(z | c_source), decode with G(z | c_target). Decoding
it with the same model CLIP-guided toward a text edits it; Langevin steps on z with a CLIP energy are the paper's
plug-and-play guidance.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import PIL.Image
import torch
from diffusers import DDIMScheduler, DiffusionPipeline
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor
from skimage.metrics import structural_similarity
from torch.utils.checkpoint import checkpoint

from .clip import ClipJudge
from .clip_guidance import clip_text_score, grad_exact, grad_fixed_eps, guided_eps
from .images import check_output_type, pil_to_tensor, postprocess, to_model_input
from .sampling import Callback, abar, eps_theta

# the scheduler config entries that define the noise schedule: two models can share a latent only if these agree
SCHEDULE_KEYS = ("num_train_timesteps", "beta_schedule", "beta_start", "beta_end", "trained_betas", "prediction_type",
                 "clip_sample", "clip_sample_range", "thresholding")


def encoder_scheduler(config) -> DDIMScheduler:
    """A DDIM scheduler whose sigma_t > 0 at every step, the last included: abar after the last step is abar_0
    (set_alpha_to_one=False) and the last timestep is 1 (leading spacing, steps_offset=1)."""
    return DDIMScheduler.from_config(config, set_alpha_to_one=False, timestep_spacing="leading", steps_offset=1)


def sigma_t(scheduler: DDIMScheduler, t, eta: float) -> torch.Tensor:
    """sigma_t = eta sqrt((1-abar_prev)/(1-abar_t)) sqrt(1 - abar_t/abar_prev), as DDIMScheduler.step computes it."""
    prev = int(t) - scheduler.config.num_train_timesteps // scheduler.num_inference_steps
    return eta * scheduler._get_variance(int(t), prev).sqrt()


def eps_of(x_t: torch.Tensor, x0: torch.Tensor, abar_t: torch.Tensor) -> torch.Tensor:
    """The noise in x_t given x0: eps = (x_t - sqrt(abar_t) x0) / sqrt(1 - abar_t), the inverse of q_sample."""
    return (x_t - abar_t.sqrt() * x0) / (1 - abar_t).sqrt()


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
    labels = class_labels.reshape(-1).tolist() if isinstance(class_labels, torch.Tensor) else class_labels
    labels = [labels] * batch_size if isinstance(labels, int) else labels
    allowed = f"integers from 0 to {num_classes - 1} ({num_classes - 1} is the null class, unconditional)"
    if (not isinstance(labels, (list, tuple)) or len(labels) != batch_size
            or not all(isinstance(y, int) and not isinstance(y, bool) and 0 <= y < num_classes for y in labels)):
        raise ValueError(
            f"class labels must be one of the {allowed}, or a list of {batch_size} of them (one per image); "
            f"got {class_labels!r}"
        )
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


@dataclass
class CycleDiffusionPipelineOutput(BaseOutput):
    """images: G2(z); reconstructions: G1(z), the input again up to float error (None unless asked for); latent: z."""

    images: list[PIL.Image.Image] | np.ndarray | torch.Tensor
    reconstructions: list[PIL.Image.Image] | np.ndarray | torch.Tensor | None
    latent: CycleLatent


class CycleDiffusionPipeline(DiffusionPipeline):
    """DPM-Encoder and decoder of a DDPM (unet + its DDPM or DDIM scheduler's noise schedule), unconditional or
    class-conditional (config.num_class_embeds set, the last label the null class)."""

    def __init__(self, unet, scheduler):
        super().__init__()
        self.register_modules(unet=unet, scheduler=scheduler)

    @torch.no_grad()
    def encode(
        self,
        image,
        num_inference_steps: int = 100,
        eta: float = 1.0,
        strength: float = 1.0,
        generator: torch.Generator | None = None,
        callback: Callback = None,
        class_labels: int | list[int] | None = None,
    ) -> CycleLatent:
        """z ~ DPMEnc(z | x, G(. | c)): image (PIL, path or (B,3,H,W) in [0,1]) -> latent with G(z | c) = image.

        strength in (0,1]: the chain starts at t0, the first timestep of the last round(strength * steps) steps.
        class_labels: the class c, an int or one per image (class-conditional models); None: the null class.
        """
        T = self.scheduler.config.num_train_timesteps
        check_encoder_args(num_inference_steps, eta, strength, T)
        device = self._execution_device
        x0 = to_model_input(image, self.unet.config.sample_size, device, self.unet.dtype)  # (B,3,H,W) in [-1,1]
        c = check_class_labels(self.unet, class_labels, x0.shape[0])  # (B,) or None
        scheduler = encoder_scheduler(self.scheduler.config)
        scheduler.set_timesteps(num_inference_steps)
        timesteps = scheduler.timesteps[num_inference_steps - max(1, round(strength * num_inference_steps)) :]

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
            # 3. eps_t = (x_prev - mu_theta(x_t, t)) / sigma_t, mu_theta = the model's step with zero noise
            out = scheduler.step(eps_theta(self.unet, x, t, c), t, x, eta=eta, variance_noise=torch.zeros_like(x))
            eps.append((x_prev - out.prev_sample) / sigma_t(scheduler, t, eta))
            if callback is not None:
                callback(step, int(t), x, out.pred_original_sample)
            x = x_prev
        return CycleLatent(x_t0, torch.stack(eps), timesteps.clone(), num_inference_steps, float(eta), c)

    @torch.no_grad()
    def decode(
        self,
        latent: CycleLatent,
        unet=None,
        scheduler=None,
        clip: ClipJudge | None = None,
        target_prompt: str | None = None,
        source_prompt: str | None = None,
        guidance_scale: float = 10.0,
        exact_gradient: bool = False,
        output_type: str = "pil",
        callback: Callback = None,
        class_labels: int | list[int] | None = None,
    ):
        """G(z | c): x_prev = mu_theta(x_t, t, c) + sigma_t eps_t from x_{t0}; unet=None: the pipeline's own model.

        unet / scheduler: another model of the same size and noise schedule (translation).
        class_labels: the class c to decode under, an int or one per image; another class than the latent's translates.
        None: the latent's own class with the pipeline's model (so decode(latent) reconstructs); none with another.
        clip + target_prompt: mu_theta CLIP-guided toward target_prompt (and away from source_prompt) with the DDIM
        rule eps_hat = eps_theta - sqrt(1-abar_t) s grad log p; exact_gradient differentiates through the U-Net.
        """
        check_output_type(output_type)
        own_model = unet is None or unet is self.unet
        unet = unet or self.unet
        config = (scheduler or self.scheduler).config
        check_compatible(self.unet, self.scheduler.config, unet, config)
        if class_labels is None:
            c = latent.class_labels.to(unet.device) if own_model and latent.class_labels is not None else None
        else:
            c = check_class_labels(unet, class_labels, latent.x_t0.shape[0])  # (B,)
        score = self._text_score(clip, target_prompt, source_prompt) if guidance_scale and target_prompt else None
        sampler = encoder_scheduler(config)
        sampler.set_timesteps(latent.num_inference_steps)
        x = latent.x_t0.to(unet.device, unet.dtype)
        for step, (t, eps_t) in enumerate(zip(self.progress_bar(latent.timesteps), latent.eps)):
            x_prev, x0_hat = self._mu_plus_noise(unet, sampler, x, t, c, eps_t.to(x), latent.eta, score, guidance_scale,
                                                 exact_gradient)
            if callback is not None:
                callback(step, int(t), x, x0_hat)
            x = x_prev
        return postprocess(x, output_type)

    def _mu_plus_noise(self, unet, sampler, x, t, c, eps_t, eta, score, scale, exact_gradient):
        """One step of G: x_prev = mu_theta(x_t, t, c) + sigma_t eps_t, mu_theta CLIP-guided when a score is given."""
        if score is None:
            out = sampler.step(eps_theta(unet, x, t, c), t, x, eta=eta, variance_noise=eps_t)
            return out.prev_sample, out.pred_original_sample
        abar_t = abar(sampler, t)
        if exact_gradient:
            g, eps = grad_exact(score, x, lambda x_: eps_theta(unet, x_, t, c), abar_t)
        else:
            eps = eps_theta(unet, x, t, c)
            g = grad_fixed_eps(score, x, eps, abar_t)
        out = sampler.step(guided_eps(eps, g, abar_t, scale), t, x, eta=eta, variance_noise=eps_t,
                           use_clipped_model_output=True)
        return out.prev_sample, out.pred_original_sample

    @staticmethod
    def _text_score(clip: ClipJudge | None, target_prompt: str, source_prompt: str | None):
        if clip is None:
            raise ValueError("a text edit needs a CLIP model: pass clip=ClipJudge(model, tokenizer)")
        source = clip.text_embeds([source_prompt]) if source_prompt else None
        return clip_text_score(clip, clip.text_embeds([target_prompt]), source)

    def plug_and_play(
        self,
        latent: CycleLatent,
        clip: ClipJudge,
        target_prompt: str,
        source_prompt: str | None = None,
        langevin_steps: int = 10,
        step_size: float = 1e-3,
        guidance_scale: float = 10.0,
        generator: torch.Generator | None = None,
        callback: Callback = None,
        class_labels: int | list[int] | None = None,
    ) -> CycleLatent:
        """Langevin dynamics on z toward p(z) exp(-s E(G(z | c))), E = -CLIP text score of the decoded image:
        z <- z - (lambda/2) grad_z (|z|^2/2 + s E(G(z | c))) + sqrt(lambda) xi, from the encoded z.

        class_labels: the class c of G (None: the latent's); the returned latent records it, so decode() uses it.
        Gradients run through the whole chain with one checkpoint per step (memory of one step, twice the forwards).
        """
        check_langevin_args(langevin_steps, step_size)
        score = self._text_score(clip, target_prompt, source_prompt)
        c = latent.class_labels if class_labels is None else check_class_labels(self.unet, class_labels,
                                                                                 latent.x_t0.shape[0])
        sampler = encoder_scheduler(self.scheduler.config)
        sampler.set_timesteps(latent.num_inference_steps)
        z = [latent.x_t0.float(), latent.eps.float()]
        for k in range(langevin_steps):
            with torch.enable_grad():
                z = [part.detach().requires_grad_(True) for part in z]
                x0 = self._G(sampler, z[0], z[1], latent, c)
                energy = -guidance_scale * score(x0, x0).sum() + sum(0.5 * (part**2).sum() for part in z)
                grads = torch.autograd.grad(energy, z)
            with torch.no_grad():
                z = [part - step_size / 2 * g
                     + step_size**0.5 * randn_tensor(part.shape, generator=generator, device=part.device)
                     for part, g in zip(z, grads)]
            if callback is not None:
                callback(k, latent.t0, z[0], x0.detach())
        dtype = latent.x_t0.dtype
        return CycleLatent(z[0].to(dtype), z[1].to(dtype), latent.timesteps, latent.num_inference_steps, latent.eta, c)

    def _G(self, sampler, x_t0, eps, latent: CycleLatent, c: torch.Tensor | None) -> torch.Tensor:
        """G(z | c) with autograd, one checkpoint per step: (B,3,H,W) in [-1,1]."""

        def step(x, eps_t, t):
            return sampler.step(eps_theta(self.unet, x, t, c), t, x, eta=latent.eta, variance_noise=eps_t).prev_sample

        x = x_t0.to(self.unet.dtype)
        for t, eps_t in zip(latent.timesteps, eps):
            x = checkpoint(step, x, eps_t.to(x.dtype), t, use_reentrant=False)
        return x

    def check_inputs(self, target_unet, target_scheduler, clip, target_prompt, plug_and_play_steps, step_size,
                     strength, eta, num_inference_steps, output_type, target_class) -> None:
        """Every argument of __call__, before the encoder's first U-Net evaluation."""
        check_encoder_args(num_inference_steps, eta, strength, self.scheduler.config.num_train_timesteps)
        check_output_type(output_type)
        if target_unet is not None:
            check_compatible(self.unet, self.scheduler.config, target_unet, (target_scheduler or self.scheduler).config)
        if target_prompt is not None and clip is None:
            raise ValueError("a text edit needs a CLIP model: pass clip=ClipJudge(model, tokenizer)")
        if target_prompt is not None and plug_and_play_steps > 0:
            check_langevin_args(plug_and_play_steps, step_size)
        if target_class is not None:
            check_class_labels(target_unet or self.unet, target_class,
                               len(target_class) if isinstance(target_class, (list, tuple, torch.Tensor)) else 1)

    @torch.no_grad()
    def __call__(
        self,
        image,
        target_unet=None,
        target_scheduler=None,
        clip: ClipJudge | None = None,
        target_prompt: str | None = None,
        source_prompt: str | None = None,
        guidance_scale: float = 10.0,
        exact_gradient: bool = False,
        plug_and_play_steps: int = 0,
        step_size: float = 1e-3,
        strength: float = 1.0,
        eta: float = 1.0,
        num_inference_steps: int = 100,
        reconstruct: bool = True,
        generator: torch.Generator | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        callback: Callback = None,
        source_class: int | list[int] | None = None,
        target_class: int | list[int] | None = None,
    ):
        """Encode `image` with this pipeline's model (under source_class), then decode the same z:
        - no target: the reconstruction (G1(z | c_source) = image);
        - target_unet (+ target_scheduler): unpaired translation G2(z);
        - target_class: class translation G1(z | c_target) (with target_unet: G2(z | c_target));
        - target_prompt + clip: a text edit, mu_theta CLIP-guided (or, with plug_and_play_steps > 0, Langevin on z).
        source_class, target_class: an int or one per image, for class-conditional models; None: the null class.
        reconstruct: also return G1(z | c_source). callback(step, t, x_t, x0_hat) sees every step of every stage.
        """
        self.check_inputs(target_unet, target_scheduler, clip, target_prompt, plug_and_play_steps, step_size, strength,
                          eta, num_inference_steps, output_type, target_class)
        latent = self.encode(image, num_inference_steps, eta, strength, generator, callback, source_class)
        reconstructions = self.decode(latent, output_type=output_type) if reconstruct else None
        if target_prompt is not None and plug_and_play_steps > 0:
            edited = self.plug_and_play(latent, clip, target_prompt, source_prompt, plug_and_play_steps, step_size,
                                        guidance_scale, generator, callback, target_class)
            images = self.decode(edited, output_type=output_type, callback=callback)
        elif target_unet is None and target_prompt is None and target_class is None and reconstruct:
            images = reconstructions
        else:
            images = self.decode(latent, target_unet, target_scheduler, clip, target_prompt, source_prompt,
                                 guidance_scale, exact_gradient, output_type, callback, target_class)
        if not return_dict:
            return images, reconstructions, latent
        return CycleDiffusionPipelineOutput(images=images, reconstructions=reconstructions, latent=latent)


def _unit_tensor(image) -> torch.Tensor:
    """A PIL image, a list of them, or a tensor (B,3,H,W) in [0,1] -> float32 (B,3,H,W) in [0,1] on the CPU."""
    if isinstance(image, PIL.Image.Image):
        return pil_to_tensor(image)
    if isinstance(image, (list, tuple)):
        return torch.cat([_unit_tensor(i) for i in image])
    return image.detach().float().cpu()


def clip_similarity(clip: ClipJudge, image, prompt: str) -> float:
    """Mean cosine similarity of CLIP's embedding of an image (PIL or (B,3,H,W) in [0,1]) to the prompt's."""
    with torch.no_grad():
        x = (_unit_tensor(image) * 2 - 1).to(clip.device, clip.model.dtype)
        return float(clip.similarity(x, clip.text_embeds([prompt])).mean())


def faithfulness(image, result) -> dict[str, float]:
    """PSNR (dB) and SSIM of a result to the input (PIL or (B,3,H,W) in [0,1]): the paper's faithfulness metrics."""
    image, result = _unit_tensor(image), _unit_tensor(result)
    return {"psnr": psnr(result, image), "ssim": ssim(result, image)}
