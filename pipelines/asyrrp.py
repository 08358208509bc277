"""Asyrrp: the asymmetric reverse process (Kwon et al., ICLR 2023, "Diffusion Models Already Have a Semantic Latent Space").

An image is inverted to x_T with deterministic DDIM, then decoded with a shift delta_h added to the U-Net's
bottleneck (h-space) in the predicted clean image only:
    x_{t-1} = sqrt(abar_{t-1}) P_t(eps_theta(x_t | h_t + delta_h_t)) + D_t(eps_theta(x_t))      for t >= t_edit
then plain DDIM (eta = 0) down to t_boost and stochastic DDIM (eta = 1) below it (quality boosting).
"""

from __future__ import annotations

import hashlib
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Sequence

import PIL.Image
import torch
from diffusers import DDIMScheduler, DiffusionPipeline
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor

from .directions import DeltaBlock, check_direction, delta_h, directional_clip_loss, edit_h_space, h_space_shape, is_zero, principal_directions, record_h
from .images import check_output_type, postprocess, to_model_input
from .sampling import Callback, abar, check_num_inference_steps, ddim_invert, eps_theta, initial_noise

# (t_edit, t_boost) per model. kwonminki/Asyrp_official: t_edit from utils/t_edit_dic.py (T_EDIT_DIC_LPIPS_0_3,
# the first t with LPIPS(x, P_t) >= 0.3, i.e. 0.33 times a typical source/target text cosine); t_boost = the first t
# with LPIPS(x, x_t) >= 1.2 in utils/<dataset>_LPIPS_distance_x.tsv (church 293, bedroom 221, afhq 167); the
# repository has no CelebA-HQ x-distance table, so faces use its scripts' --user_defined_t_addnoise 200.
# Cats use AFHQ-dog's values (the closest dataset it has); CIFAR-10 has none and uses the scripts' 500 / 200.
# The bundled shapes-16: the interval its size direction was learned on (training/shape_directions.py), without
# quality boosting, which has no fine detail to restore at 16 px and halves the share of strips that grow monotonically.
DEFAULT_INTERVALS = {
    "shapes-16": (500, 0),
    "google/ddpm-celebahq-256": (516, 200),
    "google/ddpm-ema-celebahq-256": (516, 200),
    "google/ddpm-church-256": (370, 293),
    "google/ddpm-bedroom-256": (369, 221),
    "google/ddpm-cat-256": (444, 167),
    "google/ddpm-cifar10-32": (500, 200),
}
FALLBACK_INTERVAL = (500, 200)  # the official scripts' user-defined t_edit / t_addnoise
LPIPS_EDIT, LPIPS_BOOST = 0.33, 1.2  # the paper's thresholds: editing strength and quality deficiency
INVERSION_CACHE_SIZE = 8

_inversions: "weakref.WeakKeyDictionary[torch.nn.Module, OrderedDict]" = weakref.WeakKeyDictionary()


def default_interval(model_id: str) -> tuple[int, int]:
    """(t_edit, t_boost) from the official code for a registry model; (500, 200) for any other."""
    return DEFAULT_INTERVALS.get(model_id, FALLBACK_INTERVAL)


def load_lpips():
    """LPIPS(x, y) for (B,3,H,W) in [-1,1] -> (B,), or None when the `lpips` package or its weights are unavailable."""
    try:
        import lpips

        metric = lpips.LPIPS(net="alex", verbose=False).eval().requires_grad_(False)
    except Exception:  # not installed, or its backbone weights cannot be downloaded
        return None
    return lambda x, y: metric.to(x.device)(x.float(), y.float()).reshape(-1)


def check_interval(t_edit: int, t_boost: int, T: int) -> None:
    if not isinstance(t_edit, int) or not isinstance(t_boost, int) or not 0 <= t_boost <= t_edit <= T:
        raise ValueError(
            f"need 0 <= t_boost <= t_edit <= {T} (whole numbers); got t_edit={t_edit!r}, t_boost={t_boost!r}. "
            f"t_edit = {T} switches editing off, t_boost = 0 switches quality boosting off."
        )


def _digest(x: torch.Tensor) -> str:
    return hashlib.sha1(x.detach().float().cpu().numpy().tobytes()).hexdigest() + str(tuple(x.shape))


@dataclass
class AsyrrpPipelineOutput(BaseOutput):
    """images: one edit per image and scale (image-major: image b at scale k is b * len(scales) + k);
    x_T: the inverted latents (B,3,H,W) they start from."""

    images: list[PIL.Image.Image] | torch.Tensor
    x_T: torch.Tensor


class AsyrrpPipeline(DiffusionPipeline):
    """Semantic edits of real images in h-space of a frozen unconditional DDPM (unet + any scheduler of its schedule)."""

    def __init__(self, unet, scheduler):
        super().__init__()
        self.register_modules(unet=unet, scheduler=scheduler)

    @property
    def h_shape(self) -> tuple[int, int, int]:
        return h_space_shape(self.unet)

    def ddim(self, num_inference_steps: int) -> DDIMScheduler:
        """A fresh DDIM sampler of this model's noise schedule."""
        ddim = DDIMScheduler.from_config(self.scheduler.config)
        ddim.set_timesteps(num_inference_steps)
        return ddim

    def x0_of(self, image) -> torch.Tensor:
        """A PIL image, path or (B,3,H,W) tensor in [0,1] -> (B,3,H,W) in [-1,1] on the model's device."""
        return to_model_input(image, self.unet.config.sample_size, self._execution_device, self.unet.dtype)

    @torch.no_grad()
    def invert(self, image, num_inference_steps: int = 40, callback: Callback = None) -> torch.Tensor:
        """x_T = DDIM_inversion(x_0), eta = 0, for an image (PIL, path or (B,3,H,W) in [0,1]): (B,3,H,W).
        Cached per (image, model, steps), so a new scale or direction does not invert again."""
        check_num_inference_steps(num_inference_steps, self.scheduler)
        x0 = self.x0_of(image)  # (B,3,H,W) in [-1,1]
        cache = _inversions.setdefault(self.unet, OrderedDict())
        key = (_digest(x0), num_inference_steps, str(sorted(self.scheduler.config.items())))
        if key in cache:
            cache.move_to_end(key)
            return cache[key]
        x_T = ddim_invert(self.unet, self.scheduler.config, x0, num_inference_steps, callback)
        cache[key] = x_T
        if len(cache) > INVERSION_CACHE_SIZE:
            cache.popitem(last=False)
        return x_T

    def eps_pair(self, x: torch.Tensor, t, direction, scales: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(eps_theta(x_t | h_t + scale * delta_h_t), eps_theta(x_t)) in one U-Net call on the batch [x; x]: (B,...) each."""
        B = x.shape[0]

        def shift(h):  # h: (2B,C,h,w); only the first B rows are edited
            delta = scales.to(h) * delta_h(direction, h[:B], t)
            return torch.cat([delta, torch.zeros_like(delta)])

        with edit_h_space(self.unet, shift):
            eps = eps_theta(self.unet, torch.cat([x, x]), t)
        return eps[:B], eps[B:]

    def asymmetric_step(self, ddim, eps_edit, eps, t, x) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x_{t-1} = sqrt(abar_{t-1}) P_t(eps_edit) + D_t(eps) -> (x_{t-1}, P_t(eps_edit), P_t(eps)), P_t clipped as the scheduler clips.

        Written as the DDIM step of eps plus sqrt(abar_{t-1}) (P_t(eps_edit) - P_t(eps)), so equal eps give the DDIM step exactly.
        """
        out = ddim.step(eps, t, x, eta=0.0)
        p_edit = ddim.step(eps_edit, t, x, eta=0.0).pred_original_sample
        abar_prev = abar(ddim, int(t) - ddim.config.num_train_timesteps // ddim.num_inference_steps)
        return out.prev_sample + abar_prev.sqrt() * (p_edit - out.pred_original_sample), p_edit, out.pred_original_sample

    def check_inputs(self, direction, scale, t_edit, t_boost, num_inference_steps, output_type) -> list[float]:
        """Every argument of __call__, before the inversion; the scales as a list."""
        check_interval(t_edit, t_boost, self.scheduler.config.num_train_timesteps)
        check_num_inference_steps(num_inference_steps, self.scheduler)
        check_direction(direction, self.h_shape)
        check_output_type(output_type)
        scales = [float(scale)] if isinstance(scale, (int, float)) else [float(s) for s in scale]
        if not scales:
            raise ValueError("scale must be a number or a non-empty list of numbers")
        return scales

    @torch.no_grad()
    def __call__(
        self,
        image,
        direction=None,
        scale: float | Sequence[float] = 1.0,
        t_edit: int | None = None,
        t_boost: int | None = None,
        num_inference_steps: int = 40,
        generator: torch.Generator | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        callback: Callback = None,
        model_id: str | None = None,
    ):
        """Edit `image` along `direction`; one output per value of `scale` (a list gives a strip of edits).

        image: PIL image, path or (B,3,H,W) tensor in [0,1]. direction: None, a tensor (C,h,w) shaped like the
        mid-block output, an f_t module (h, t) -> delta_h, or a list of those (they add); scale multiplies it
        (negative reverses it). t_edit/t_boost default to the official values for `model_id` (see DEFAULT_INTERVALS).
        With no direction, a zero one or scale 0 this is DDIM sampling from the inverted x_T, eta = 1 below t_boost.
        """
        default_edit, default_boost = default_interval(model_id or "")
        t_edit = default_edit if t_edit is None else t_edit
        t_boost = default_boost if t_boost is None else t_boost
        scales = self.check_inputs(direction, scale, t_edit, t_boost, num_inference_steps, output_type)

        # 1. x_T = DDIM_inversion(x_0), shared by every scale: row b * S + k is image b at scales[k]
        x_T = self.invert(image, num_inference_steps)  # (B,3,H,W)
        s = torch.tensor(scales, device=x_T.device).repeat(len(x_T)).view(-1, 1, 1, 1)  # (B*S,1,1,1)
        x = self.decode(x_T.repeat_interleave(len(scales), dim=0), direction, s, t_edit, t_boost, num_inference_steps, generator, callback)

        images = postprocess(x, output_type)
        if not return_dict:
            return images, x_T
        return AsyrrpPipelineOutput(images=images, x_T=x_T)

    def decode(self, x_T, direction, scales: torch.Tensor, t_edit: int, t_boost: int, num_inference_steps: int,
               generator: torch.Generator | None = None, callback: Callback = None) -> torch.Tensor:
        """x_T (B,3,H,W) -> x_0 (B,3,H,W) in [-1,1], row b edited with scales[b] (B,1,1,1) times `direction`:
        2. the asymmetric reverse process while t >= t_edit, 3. DDIM (eta = 0) down to t_boost, then eta = 1.
        Differentiable in the direction's parameters when autograd is on (shape_directions learns f_t through it)."""
        editing = not is_zero(direction) and bool(scales.any())
        ddim = self.ddim(num_inference_steps)
        x = x_T
        for step, t in enumerate(self.progress_bar(ddim.timesteps)):
            if editing and t >= t_edit:
                # 2. asymmetric reverse process: only P_t sees the shifted h
                eps_edit, eps = self.eps_pair(x, t, direction, scales)
                x, x0_hat, _ = self.asymmetric_step(ddim, eps_edit, eps, t, x)
            else:
                # 3. DDIM, eta = 0 down to t_boost, then eta = 1 (quality boosting)
                eta = 1.0 if t < t_boost else 0.0
                out = ddim.step(eps_theta(self.unet, x, t), t, x, eta=eta, generator=generator)
                x, x0_hat = out.prev_sample, out.pred_original_sample
            if callback is not None:
                callback(step, int(t), x, x0_hat)
        return x

    def edit_losses(self, x_T, direction, judge, text_delta, t_edit, ddim, clip_weight=1.0, l1_weight=3.0, optimizer=None, should_stop=None):
        """Walk the edit interval [T, t_edit] from x_T; at each t the loss clip_weight L_direction(P_t^edit, P_t^source)
        + l1_weight |P_t^edit - P_t^source|_1 (per pixel mean). With an optimizer, step it at every t. Returns the
        CLIP directional losses (one float per t)."""
        losses, x = [], x_T
        for t in ddim.timesteps:
            if t < t_edit or (should_stop is not None and should_stop()):
                break
            with torch.no_grad():
                eps = eps_theta(self.unet, x, t)
            with torch.set_grad_enabled(optimizer is not None), edit_h_space(self.unet, lambda h: delta_h(direction, h, t)):
                eps_edit = eps_theta(self.unet, x, t)
            x_prev, p_edit, p_src = self.asymmetric_step(ddim, eps_edit, eps, t, x)
            with torch.set_grad_enabled(optimizer is not None):
                l_dir = directional_clip_loss(judge, p_edit, p_src, text_delta).mean()
                loss = clip_weight * l_dir + l1_weight * (p_edit - p_src).abs().mean()
            if optimizer is not None:
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            losses.append(l_dir.item())
            x = x_prev.detach()
        return losses

    def learn_direction(
        self,
        images,
        judge,
        source: str,
        target: str,
        kind: str = "implicit",
        t_edit: int | None = None,
        num_inference_steps: int = 40,
        iterations: int = 5,
        lr: float | None = None,
        clip_weight: float = 1.0,
        l1_weight: float = 3.0,
        model_id: str | None = None,
        progress: Callable[[int, int, float], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ):
        """Learn delta_h from `source` to `target` text on `images` (B,3,H,W) in [0,1] or PIL, with the paper's loss
        (CLIP directional + L1). kind "global": one tensor delta_h (C,h,w); "implicit": f_t, a DeltaBlock.
        progress(iteration, iterations, mean directional loss) after each pass; should_stop() ends early."""
        if kind not in ("global", "implicit"):
            raise ValueError(f"kind {kind!r} is not supported; use 'global' (one delta_h) or 'implicit' (f_t)")
        if not isinstance(iterations, int) or iterations < 1:
            raise ValueError(f"iterations must be a whole number >= 1; got {iterations!r}")
        T = self.scheduler.config.num_train_timesteps
        t_edit = default_interval(model_id or "")[0] if t_edit is None else t_edit
        check_interval(t_edit, 0, T)
        device = self._execution_device
        x_T = self.invert(images, num_inference_steps)
        text = judge.text_embeds([source, target])
        text_delta = (text[1] - text[0]).to(device)
        if kind == "global":
            direction = torch.zeros(self.h_shape, device=device, dtype=torch.float32, requires_grad=True)
            params, lr = [direction], 0.5 if lr is None else lr
        else:
            direction = DeltaBlock(self.h_shape[0]).to(device)
            params, lr = list(direction.parameters()), 0.01 if lr is None else lr
        self.unet.requires_grad_(False)
        optimizer = torch.optim.Adam(params, lr=lr)
        ddim = self.ddim(num_inference_steps)
        for iteration in range(iterations):
            losses = self.edit_losses(x_T, direction, judge, text_delta, t_edit, ddim, clip_weight, l1_weight, optimizer, should_stop)
            if progress is not None and losses:
                progress(iteration + 1, iterations, sum(losses) / len(losses))
            if should_stop is not None and should_stop():
                break
        return direction.detach() if kind == "global" else direction.eval().requires_grad_(False)

    @torch.no_grad()
    def directional_loss(self, images, judge, source: str, target: str, direction, t_edit: int, num_inference_steps: int = 40) -> float:
        """Mean CLIP directional loss of `direction` over the edit interval on `images` (what learn_direction lowers)."""
        x_T = self.invert(images, num_inference_steps)
        text = judge.text_embeds([source, target])
        losses = self.edit_losses(x_T, direction, judge, (text[1] - text[0]).to(x_T.device), t_edit, self.ddim(num_inference_steps))
        return sum(losses) / len(losses)

    @torch.no_grad()
    def mean_h(self, images, t_edit: int, num_inference_steps: int = 40) -> torch.Tensor:
        """The mean of h_t over `images` and over t in [T, t_edit] along each image's own DDIM trajectory
        (inverted, then sampled back with eta = 0): (B,3,H,W) in [0,1] or PIL -> (C,h,w)."""
        x = self.invert(images, num_inference_steps)  # (B,3,H,W) = x_T
        ddim = self.ddim(num_inference_steps)
        store: list[torch.Tensor] = []  # one (B,C,h,w) per visited t
        with record_h(self.unet, store):
            for t in ddim.timesteps:
                if t < t_edit:
                    break
                x = ddim.step(eps_theta(self.unet, x, t), t, x, eta=0.0).prev_sample
        return torch.stack(store).float().mean(dim=(0, 1))

    def mean_difference_direction(self, positives, negatives, t_edit: int, num_inference_steps: int = 40) -> torch.Tensor:
        """delta_h = E[h_t | attribute] - E[h_t | no attribute] over t in [T, t_edit] (Haas et al. 2023): (C,h,w).

        positives / negatives: images (B,3,H,W) in [0,1] (or PIL) with and without the attribute; scale 1 moves h
        by the gap between the two groups' means, so negative scales move toward the negatives."""
        check_interval(t_edit, 0, self.scheduler.config.num_train_timesteps)
        check_num_inference_steps(num_inference_steps, self.scheduler)
        return self.mean_h(positives, t_edit, num_inference_steps) - self.mean_h(negatives, t_edit, num_inference_steps)

    @torch.no_grad()
    def unsupervised_directions(self, k: int = 8, num_samples: int = 32, t: int | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        """The top-k principal directions of h_t over `num_samples` random x_t at timestep t (default: the first
        sampling step, where Asyrrp edits): (k,C,h,w), each one standard deviation long. No text needed."""
        t = self.scheduler.config.num_train_timesteps - 1 if t is None else t
        x_t = initial_noise(self.unet, num_samples, generator, self._execution_device)  # (N,3,H,W)
        store: list[torch.Tensor] = []
        with record_h(self.unet, store):
            eps_theta(self.unet, x_t, t)
        return principal_directions(store[0], k)

    @torch.no_grad()
    def choose_interval(self, image, lpips, num_inference_steps: int = 40, generator: torch.Generator | None = None) -> tuple[int, int]:
        """The paper's automatic interval: t_edit = the smallest t with LPIPS(x_0, P_t(x_t)) >= 0.33,
        t_boost = the smallest t with LPIPS(x_0, x_t) >= 1.2, x_t = q_sample(x_0, t, eps), over the DDIM timesteps.
        lpips(x, y) -> (B,) on [-1,1] images (see load_lpips)."""
        x0 = self.x0_of(image)
        T = self.scheduler.config.num_train_timesteps
        t_edit, t_boost = T, T
        ddim = self.ddim(num_inference_steps)
        for t in reversed(ddim.timesteps):  # increasing t
            x_t = ddim.add_noise(x0, randn_tensor(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype), t.reshape(1))
            p_t = ddim.step(eps_theta(self.unet, x_t, t), t, x_t).pred_original_sample
            if t_edit == T and lpips(x0, p_t).mean() >= LPIPS_EDIT:
                t_edit = int(t)
            if t_boost == T and lpips(x0, x_t).mean() >= LPIPS_BOOST:
                t_boost = int(t)
        return t_edit, min(t_boost, t_edit)
