"""h-space directions for Asyrrp: the edit hook on the U-Net bottleneck, the implicit function f_t, the CLIP
directional loss, principal directions of h, and direction files (safetensors with metadata, never pickle).

h-space is the output of `unet.mid_block`: (B,C,h,w), 512x8x8 for the 256x256 hub models. A direction is a
tensor delta_h (C,h,w) (the same shift at every t), an f_t module (delta_h_t = f_t(h_t, t)), or a list of
directions, which add.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers.models.embeddings import Timesteps
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

FORMAT = "asyrrp-direction/1"


def h_space_shape(unet) -> tuple[int, int, int]:
    """(C,h,w) of the mid-block output: the last block's channels at the size after every downsampling block."""
    size = unet.config.sample_size
    side = (size if isinstance(size, int) else size[0]) // 2 ** (len(unet.config.block_out_channels) - 1)
    return (unet.config.block_out_channels[-1], side, side)


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


def delta_h(direction, h: torch.Tensor, t) -> torch.Tensor:
    """delta_h_t for h (B,C,h,w): a tensor (C,h,w) broadcast to every sample, f_t(h, t) for a module, a list summed."""
    if direction is None:
        return torch.zeros_like(h)
    if isinstance(direction, (list, tuple)):
        return sum(delta_h(d, h, t) for d in direction)
    if isinstance(direction, torch.Tensor):
        return direction.to(h).expand_as(h)
    return direction(h, t)


def is_zero(direction) -> bool:
    """True for no direction or tensors that are all zero (an f_t module is never assumed to be zero)."""
    if direction is None:
        return True
    if isinstance(direction, (list, tuple)):
        return all(is_zero(d) for d in direction)
    return isinstance(direction, torch.Tensor) and not bool(direction.any())


def check_direction(direction, shape: tuple[int, int, int]) -> None:
    if isinstance(direction, (list, tuple)):
        for d in direction:
            check_direction(d, shape)
    elif isinstance(direction, torch.Tensor):
        if tuple(direction.shape) != shape:
            raise ValueError(f"a direction tensor must have the mid-block's shape {shape} (C,h,w); got {tuple(direction.shape)}")
    elif not isinstance(direction, nn.Module) and direction is not None:
        raise ValueError(f"direction must be None, a tensor of shape {shape}, an f_t module or a list of them; got {type(direction).__name__}")


@contextmanager
def edit_h_space(unet, delta_fn):
    """Inside the block every U-Net call has its mid-block output h replaced by h + delta_fn(h)."""
    handle = unet.mid_block.register_forward_hook(lambda module, args, h: h + delta_fn(h))
    try:
        yield
    finally:
        handle.remove()


@contextmanager
def record_h(unet, store: list):
    """Inside the block the mid-block output h (B,C,h,w) of every U-Net call is appended to `store`."""
    handle = unet.mid_block.register_forward_hook(lambda module, args, h: store.append(h.detach()))
    try:
        yield
    finally:
        handle.remove()


def directional_clip_loss(judge, x_edit: torch.Tensor, x_src: torch.Tensor, text_delta: torch.Tensor) -> torch.Tensor:
    """L_direction = 1 - cos(E_I(x_edit) - E_I(x_src), E_T(target) - E_T(source)): (B,3,H,W) x2 in [-1,1], (D,) -> (B,)."""
    image_delta = judge.image_embeds(x_edit) - judge.image_embeds(x_src)  # (B,D)
    return 1 - F.cosine_similarity(image_delta, text_delta.reshape(1, -1).expand_as(image_delta), dim=-1)


def principal_directions(h: torch.Tensor, k: int) -> torch.Tensor:
    """Top-k principal directions of h over samples, each scaled to one standard deviation: (N,C,h,w) -> (k,C,h,w)."""
    n = h.shape[0]
    if not 1 <= k < n:
        raise ValueError(f"k must be from 1 to {n - 1} (one less than the number of samples); got {k}")
    centred = h.flatten(1).float() - h.flatten(1).float().mean(0)  # (N,C*h*w)
    _, singular, v_h = torch.linalg.svd(centred, full_matrices=False)
    std = singular[:k] / math.sqrt(n - 1)
    return (v_h[:k] * std[:, None]).reshape(k, *h.shape[1:]).to(h.dtype)


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
    """Read a direction file written by save_direction -> (direction, metadata).

    Refuses anything that is not safetensors (pickled .pt/.pth files can run code when loaded), a direction of
    another h-space shape, and, when model_id is given, a file made for another model.
    """
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as err:
        head = path.read_bytes()[:2] if path.is_file() else b""
        pickled = head[:1] == b"\x80" or head == b"PK"
        why = "it looks like a pickled PyTorch file, which we never load because loading it can run code" if pickled else str(err)
        raise ValueError(f"{path.name} is not a safetensors direction file ({why}). Save directions with save_direction.") from err
    if metadata.get("format") != FORMAT:
        raise ValueError(f"{path.name} is a safetensors file but not an Asyrrp direction (no '{FORMAT}' metadata)")
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
