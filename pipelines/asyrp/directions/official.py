"""Asyrp's released f_t files (kwonminki/Asyrp_official), read only when pinned.

A release is a `torch.save` of {'0': state_dict, 'optimizer': SGD state, 'scheduler': StepLR state}, tensors saved on
cuda:0. Unpickling can run code, so a .pth is opened only when its sha256 is one of the pinned releases
(`pipelines.asyrp.released.SHA256`), and then through torch's restricted loader (tensors and plain containers only).

The f_t of the 256 px DDPM releases (keys conv1, temb_proj, norm2, conv2; 512 channels) is
    f(h, temb) = conv2(silu(GN_32(conv1(h) + temb_proj(silu(temb)))))        no residual, GroupNorm eps 1e-6
with temb the U-Net's own time embedding (the vector its resnet blocks receive). AsyrpPipeline applies it as the
official code does: h <- h + c f(h, temb) in P_t only, at t >= t_edit, with c = s * n_train_step / n_test_step and
k released directions combined each at 1/sqrt(k) (`pipelines.asyrp.pipeline.official_coefficient`).
Entry point: `pipelines.asyrp.directions.load_direction`.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..released import COMMIT, REPO, RELEASED, SHA256, sha256_of

FORMAT = "asyrp-official"
N_TRAIN_STEP = 40  # every release was trained with 40 sampling steps (the "ngen40" of its name)
KEYS = {f"{layer}.{p}" for layer in ("conv1", "temb_proj", "norm2", "conv2") for p in ("weight", "bias")}
OTHER_ARCHITECTURE = re.compile(r"_LC_(dog|metfaces)_")  # the releases for iDDPM/ADM models: AFHQ-dog and MetFaces


class OfficialDeltaBlock(nn.Module):
    """The released f(h, temb) = conv2(silu(GN(conv1(h) + temb_proj(silu(temb))))), keys as in the official files."""

    reads_temb = True  # AsyrpPipeline calls it with the U-Net's time embedding instead of t
    n_train_step = N_TRAIN_STEP  # the official scale rule's numerator

    def __init__(self, channels: int = 512, temb_channels: int = 512):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 1)
        self.temb_proj = nn.Linear(temb_channels, channels)
        self.norm2 = nn.GroupNorm(32, channels, eps=1e-6)
        self.conv2 = nn.Conv2d(channels, channels, 1)

    def forward(self, h: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        """h (B,C,h,w), temb (B,C_temb) -> f(h, temb) (B,C,h,w); computed in the block's dtype, returned in h's."""
        dtype = self.conv1.weight.dtype
        x = self.conv1(h.to(dtype)) + self.temb_proj(F.silu(temb.to(dtype)))[:, :, None, None]
        return self.conv2(F.silu(self.norm2(x))).to(h.dtype)


def is_pickled(path: Path) -> bool:
    """A pickle (protocol 2+) or a torch.save zip archive, by its first bytes."""
    if not path.is_file():
        return False
    with open(path, "rb") as f:
        head = f.read(2)
    return head[:1] == b"\x80" or head == b"PK"


def other_architecture(name: str, dataset: str) -> str:
    return (f"{name} is an official Asyrp direction for the {'AFHQ-dog' if dataset == 'dog' else 'MetFaces'} iDDPM/ADM "
            "model, another f_t architecture (keys in_layers/emb_layers/out_layers) for a model this demo does not "
            "have; only the CelebA-HQ, LSUN church and LSUN bedroom releases (for the 256 px DDPMs) load")


def load_official(path, *, shape: tuple[int, int, int], model_id: str | None = None):
    """An official release -> (OfficialDeltaBlock, metadata). Only the files pinned in released.SHA256 are
    unpickled; every other one is refused before it is opened."""
    path = Path(path)
    other = OTHER_ARCHITECTURE.search(path.name)
    if other:
        raise ValueError(other_architecture(path.name, other[1]))
    file_of = {sha: file for file, sha in SHA256.items()}
    digest = sha256_of(path)
    if digest not in file_of:
        raise ValueError(
            f"{path.name} is a pickled PyTorch file whose sha256 ({digest[:16]}...) is not one of the {len(SHA256)} "
            f"pinned Asyrp releases ({REPO} at {COMMIT[:7]}); loading a pickle can run code, so no other one is "
            "read. Save your own directions with save_direction (safetensors)."
        )
    entry = {d.file: d for d in RELEASED.values()}[file_of[digest]]
    state = torch.load(path, map_location="cpu", weights_only=True)["0"]
    if set(state) != KEYS:
        raise ValueError(f"{path.name} holds an f_t with keys {sorted(state)}, another architecture than the 256 px "
                         f"DDPM releases' {sorted(KEYS)}")
    channels, temb_channels = state["temb_proj.weight"].shape
    if channels != shape[0]:
        raise ValueError(f"{path.name} holds an f_t for {channels} channels; this model's h-space has {shape[0]}")
    if model_id is not None and model_id not in entry.model_ids:
        raise ValueError(f"{path.name} was trained on {entry.dataset} and is offered on {', '.join(entry.model_ids)}; "
                         f"this is {model_id!r}. Directions only work on the model they come from.")
    block = OfficialDeltaBlock(channels, temb_channels)
    block.load_state_dict(state)
    metadata = {
        "format": FORMAT, "kind": "official", "name": entry.name, "dataset": entry.dataset,
        "model_ids": ",".join(entry.model_ids), "source": entry.source, "target": entry.target,
        "t_edit": str(entry.t_edit), "num_inference_steps": str(N_TRAIN_STEP), "url": entry.url, "sha256": digest,
    }
    return block.eval().requires_grad_(False), metadata
