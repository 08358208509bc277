"""h-space directions for an AsyrpPipeline: the implicit function f_t, direction files (safetensors with metadata,
never pickle), and finding directions: without text (principal directions of h), from two groups of images (mean
difference), from two texts (the paper's learned global delta_h or implicit f_t), and the paper's automatic interval.

h-space is the output of `unet.mid_block`: (B,C,h,w), 512x8x8 for the 256x256 hub models. A direction is a
tensor delta_h (C,h,w) (the same shift at every t), an f_t module (delta_h_t = f_t(h_t, t)), or a list of
directions, which add.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from diffusers.models.embeddings import Timesteps
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from .asyrp import AsyrpPipeline, asymmetric_step, check_interval, delta_h, edit_h_space, record_h
from .asyrp_official import is_pickled, load_official
from .sampling import check_num_inference_steps, eps_theta, initial_noise

FORMAT = "asyrp-direction/1"


class DeltaBlock(nn.Module):
    """The implicit function f_t(h, t) = W_2 silu(GN(W_1 h) + E(t)): two 1x1 convolutions and a time embedding.

    W_2 starts at zero, so an untrained f_t is the zero direction (no edit), as in the official code.
    """

    def __init__(self, channels: int, time_channels: int = 128):
        super().__init__()
        self.time_proj = Timesteps(time_channels, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embed = nn.Linear(time_channels, channels)
        self.conv1 = nn.Conv2d(channels, channels, 1)
        self.norm = nn.GroupNorm(math.gcd(32, channels), channels)
        self.conv2 = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, h: torch.Tensor, t) -> torch.Tensor:
        """(B,C,h,w), timestep -> delta_h_t (B,C,h,w); computed in the block's dtype (fp32), returned in h's."""
        x = h.to(self.conv1.weight.dtype)
        t = torch.as_tensor(t, device=h.device).reshape(-1).expand(h.shape[0])
        emb = self.time_embed(self.time_proj(t).to(x.dtype))  # (B,C)
        return self.conv2(F.silu(self.norm(self.conv1(x)) + emb[:, :, None, None])).to(h.dtype)


def save_direction(path, direction, *, model_id: str, t_edit: int, num_inference_steps: int, source: str = "", target: str = "", note: str = "") -> Path:
    """Write a direction (tensor (C,h,w) or DeltaBlock) as safetensors with its metadata; returns the path."""
    if isinstance(direction, torch.Tensor):
        kind, shape, tensors = "global", tuple(direction.shape), {"delta_h": direction.detach().float().contiguous().cpu()}
    elif isinstance(direction, DeltaBlock):
        kind = "implicit"
        shape = (direction.conv1.in_channels,)
        tensors = {f"f_t.{k}": v.detach().float().contiguous().cpu() for k, v in direction.state_dict().items()}
    else:
        raise ValueError("only a direction tensor or a DeltaBlock (f_t) can be saved")
    metadata = {
        "format": FORMAT, "kind": kind, "shape": ",".join(map(str, shape)), "model_id": model_id,
        "t_edit": str(int(t_edit)), "num_inference_steps": str(int(num_inference_steps)),
        "source": source, "target": target, "note": note,
    }
    if kind == "implicit":
        metadata["time_channels"] = str(direction.time_proj.num_channels)
    save_file(tensors, str(path), metadata=metadata)
    return Path(path)


def load_direction(path, *, shape: tuple[int, int, int], model_id: str | None = None):
    """Read a direction file -> (direction, metadata): one written by save_direction (safetensors), or an official
    Asyrp release (.pth), read by pipelines.asyrp_official only when its sha256 is pinned (an OfficialDeltaBlock).

    Refuses any other pickled file (unpickling can run code), a direction of another h-space shape, and, when
    model_id is given, a file made for another model.
    """
    path = Path(path)
    if is_pickled(path):
        return load_official(path, shape=shape, model_id=model_id)
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(f"{path.name} is not a safetensors direction file ({err}). Save directions with save_direction.") from err
    if metadata.get("format") != FORMAT:
        raise ValueError(f"{path.name} is a safetensors file but not an Asyrp direction (no '{FORMAT}' metadata)")
    if model_id is not None and metadata.get("model_id") != model_id:
        raise ValueError(f"{path.name} was learned on {metadata.get('model_id')!r}; this is {model_id!r}. Directions only work on the model they come from.")
    if metadata["kind"] == "global":
        direction = tensors["delta_h"]
        if tuple(direction.shape) != tuple(shape):
            raise ValueError(f"{path.name} holds a direction of shape {tuple(direction.shape)}; this model's h-space is {tuple(shape)}")
        return direction, metadata
    channels = int(metadata["shape"].split(",")[0])
    if channels != shape[0]:
        raise ValueError(f"{path.name} holds an f_t for {channels} channels; this model's h-space has {shape[0]}")
    block = DeltaBlock(channels, int(metadata["time_channels"]))
    block.load_state_dict({k.removeprefix("f_t."): v for k, v in tensors.items()})
    return block.eval(), metadata


OPTIMIZERS = {"adam": torch.optim.Adam, "sgd": torch.optim.SGD}
PCA_BATCH = 4  # noise images per U-Net call when reading h for principal directions: a 256 px batch of 32 needs ~14 GB


def principal_axes(h: torch.Tensor, k: int) -> torch.Tensor:
    """Top-k principal directions of h over samples, each scaled to one standard deviation: (N,C,h,w) -> (k,C,h,w)."""
    n = h.shape[0]
    if not 1 <= k < n:
        raise ValueError(f"k must be from 1 to {n - 1} (one less than the number of samples); got {k}")
    centred = h.flatten(1).float() - h.flatten(1).float().mean(0)  # (N,C*h*w)
    _, singular, v_h = torch.linalg.svd(centred, full_matrices=False)
    std = singular[:k] / math.sqrt(n - 1)
    return (v_h[:k] * std[:, None]).reshape(k, *h.shape[1:]).to(h.dtype)


@torch.no_grad()
def principal_directions(pipe: AsyrpPipeline, *, k: int = 8, num_samples: int = 32, t: int | None = None,
                         generator: torch.Generator | None = None) -> torch.Tensor:
    """The top-k principal directions of h_t over `num_samples` random x_t at timestep t (default: the first sampling
    step, where Asyrp edits): (k,C,h,w), each one standard deviation long. No text needed. h is read PCA_BATCH
    samples per U-Net call, so memory stays that of a small batch."""
    t = pipe.scheduler.config.num_train_timesteps - 1 if t is None else t
    x_t = initial_noise(pipe.unet, num_samples, generator, pipe._execution_device)  # (N,3,H,W)
    store: list[torch.Tensor] = []  # one (<=PCA_BATCH,C,h,w) per call
    with record_h(pipe.unet, store):
        for batch in x_t.split(PCA_BATCH):
            eps_theta(pipe.unet, batch, t)
    return principal_axes(torch.cat(store), k)


@torch.no_grad()
def mean_h(pipe: AsyrpPipeline, images, *, t_edit: int, num_inference_steps: int = 40) -> torch.Tensor:
    """The mean of h_t over `images` and over t in [T, t_edit] along each image's own DDIM trajectory
    (inverted, then sampled back with eta = 0) -> (C,h,w)."""
    x = pipe.invert(images, num_inference_steps=num_inference_steps)  # (B,3,H,W) = x_T
    ddim = pipe.ddim(num_inference_steps)
    store: list[torch.Tensor] = []  # one (B,C,h,w) per visited t
    with record_h(pipe.unet, store):
        for t in ddim.timesteps:
            if t < t_edit:
                break
            x = ddim.step(eps_theta(pipe.unet, x, t), t, x, eta=0.0).prev_sample
    return torch.stack(store).float().mean(dim=(0, 1))


def mean_difference_direction(pipe: AsyrpPipeline, positives, negatives, *, t_edit: int,
                              num_inference_steps: int = 40) -> torch.Tensor:
    """delta_h = E[h_t | attribute] - E[h_t | no attribute] over t in [T, t_edit] (Haas et al. 2023): (C,h,w).

    positives / negatives: images with and without the attribute; scale 1 moves h by the gap between the two
    groups' means, so negative scales move toward the negatives."""
    check_interval(t_edit, 0, pipe.scheduler.config.num_train_timesteps)
    check_num_inference_steps(num_inference_steps, pipe.scheduler)
    return (mean_h(pipe, positives, t_edit=t_edit, num_inference_steps=num_inference_steps)
            - mean_h(pipe, negatives, t_edit=t_edit, num_inference_steps=num_inference_steps))


def directional_clip_loss(judge, x_edit: torch.Tensor, x_src: torch.Tensor, text_delta: torch.Tensor) -> torch.Tensor:
    """L_direction = 1 - cos(E_I(x_edit) - E_I(x_src), E_T(target) - E_T(source)): (B,3,H,W) x2 in [-1,1], (D,) -> (B,)."""
    image_delta = judge.image_embeds(x_edit) - judge.image_embeds(x_src)  # (B,D)
    return 1 - F.cosine_similarity(image_delta, text_delta.reshape(1, -1).expand_as(image_delta), dim=-1)


def edit_losses(pipe: AsyrpPipeline, x_T, direction, judge, text_delta, *, t_edit: int, num_inference_steps: int,
                clip_weight: float = 1.0, l1_weight: float = 3.0, optimizer=None,
                should_stop: Callable[[], bool] | None = None) -> list[float]:
    """Walk the edit interval [T, t_edit] from x_T; at each t the loss clip_weight L_direction(P_t^edit, P_t^source)
    + l1_weight |P_t^edit - P_t^source|_1 (per pixel mean). With an optimizer, step it at every t. Returns the
    CLIP directional losses (one float per t)."""
    losses, x = [], x_T
    ddim = pipe.ddim(num_inference_steps)
    for t in ddim.timesteps:
        if t < t_edit or (should_stop is not None and should_stop()):
            break
        with torch.no_grad():
            eps = eps_theta(pipe.unet, x, t)
        with torch.set_grad_enabled(optimizer is not None), edit_h_space(pipe.unet, lambda h, temb: delta_h(direction, h, t, temb)):
            eps_edit = eps_theta(pipe.unet, x, t)
        x_prev, p_edit, p_src = asymmetric_step(ddim, eps_edit, eps, t, x)
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


def text_delta(judge, source: str, target: str, device) -> torch.Tensor:
    """E_T(target) - E_T(source): (D,)."""
    text = judge.text_embeds([source, target])
    return (text[1] - text[0]).to(device)


def learn_direction(
    pipe: AsyrpPipeline,
    images,
    judge,
    source: str,
    target: str,
    *,
    kind: str = "implicit",
    t_edit: int = 500,
    num_inference_steps: int = 40,
    iterations: int = 5,
    lr: float | None = None,
    optimizer: str = "adam",
    batch_size: int | None = None,
    clip_weight: float = 1.0,
    l1_weight: float = 3.0,
    x_T: torch.Tensor | None = None,
    prepare: Callable | None = None,
    progress: Callable[[int, int, float], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
):
    """Learn delta_h from `source` to `target` text on `images` with the paper's loss (CLIP directional + L1).
    kind "global": one tensor delta_h (C,h,w); "implicit": f_t, a DeltaBlock. x_T: the images' latents when already
    encoded. optimizer "adam" (lr 0.01 for f_t, 0.5 for delta_h) or "sgd" (the official code's, lr 0.5); each
    iteration walks [T, t_edit] once per batch of `batch_size` images (None: all at once), stepping at every t.
    prepare(f_t, optimizer) -> (f_t, optimizer) wraps them for data-parallel learning (accelerate's
    Accelerator.prepare; f_t only); the unwrapped f_t is returned.
    progress(iteration, iterations, mean directional loss) after each pass; should_stop() ends early."""
    if kind not in ("global", "implicit"):
        raise ValueError(f"kind {kind!r} is not supported; use 'global' (one delta_h) or 'implicit' (f_t)")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer {optimizer!r} is not supported; use {' or '.join(map(repr, OPTIMIZERS))}")
    if not isinstance(iterations, int) or iterations < 1:
        raise ValueError(f"iterations must be a whole number >= 1; got {iterations!r}")
    check_interval(t_edit, 0, pipe.scheduler.config.num_train_timesteps)
    device = pipe._execution_device
    if x_T is None:
        x_T = pipe.invert(images, num_inference_steps=num_inference_steps)
    delta_text = text_delta(judge, source, target, device)
    direction = (torch.zeros(pipe.h_shape, device=device, dtype=torch.float32, requires_grad=True) if kind == "global"
                 else DeltaBlock(pipe.h_shape[0]).to(device))
    params = [direction] if kind == "global" else list(direction.parameters())
    pipe.unet.requires_grad_(False)
    lr = (0.5 if kind == "global" or optimizer == "sgd" else 0.01) if lr is None else lr
    edited, optimizer = direction, OPTIMIZERS[optimizer](params, lr=lr)
    if prepare is not None:
        edited, optimizer = prepare(direction, optimizer)
    for iteration in range(iterations):
        losses = []
        for batch in x_T.split(batch_size or len(x_T)):  # (b,3,H,W)
            losses += edit_losses(pipe, batch, edited, judge, delta_text, t_edit=t_edit,
                                  num_inference_steps=num_inference_steps, clip_weight=clip_weight,
                                  l1_weight=l1_weight, optimizer=optimizer, should_stop=should_stop)
        if progress is not None and losses:
            progress(iteration + 1, iterations, sum(losses) / len(losses))
        if should_stop is not None and should_stop():
            break
    return direction.detach() if kind == "global" else direction.eval().requires_grad_(False)


@torch.no_grad()
def directional_loss(pipe: AsyrpPipeline, images, judge, source: str, target: str, direction, *, t_edit: int,
                     num_inference_steps: int = 40) -> float:
    """Mean CLIP directional loss of `direction` over the edit interval on `images` (what learn_direction lowers)."""
    x_T = pipe.invert(images, num_inference_steps=num_inference_steps)
    losses = edit_losses(pipe, x_T, direction, judge, text_delta(judge, source, target, x_T.device), t_edit=t_edit,
                         num_inference_steps=num_inference_steps)
    return sum(losses) / len(losses)
