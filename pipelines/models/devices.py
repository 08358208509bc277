"""Where the models run: CUDA in fp16 when there is a GPU, the CPU in fp32 otherwise.

Environment variable (documented in the README):
    STEER_DEVICE      force "cpu" or "cuda" (default: cuda when available)
"""

from __future__ import annotations

import os

import torch


def device_and_dtype() -> tuple[torch.device, torch.dtype]:
    """CUDA in fp16 when there is a GPU (or STEER_DEVICE=cuda), else the CPU in fp32."""
    wanted = os.environ.get("STEER_DEVICE", "cuda" if torch.cuda.is_available() else "cpu")
    if wanted not in ("cpu", "cuda"):
        raise ValueError(f"STEER_DEVICE={wanted!r} is not supported; use 'cpu' or 'cuda'")
    if wanted == "cuda":
        return torch.device("cuda"), torch.float16
    return torch.device("cpu"), torch.float32
