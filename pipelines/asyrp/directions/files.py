"""Direction files: this project's format (safetensors with metadata, never pickle) for a global delta_h (C,h,w) or
an f_t, and the Asyrp authors' released .pth files, read only when pinned (`official`)."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .f_t import DeltaBlock
from .official import is_pickled, load_official

FORMAT = "asyrp-direction/1"


def save_direction(path, direction, *, model_id: str, t_edit: int, num_inference_steps: int, source: str = "",
                   target: str = "", note: str = "") -> Path:
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
    Asyrp release (.pth), read by `official` only when its sha256 is pinned (an OfficialDeltaBlock).

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
