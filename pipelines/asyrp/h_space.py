"""h-space (Kwon, Jeong & Uh, ICLR 2023): the output h of the U-Net's mid-block, (B,C,h,w), 512x8x8 for the 256 px
hub DDPMs. A call shifts or records h through one forward hook installed on the mid-block once, which reads the
call's own edit from a ContextVar and leaves h alone when there is none: concurrent calls on a shared U-Net never see
each other's edits.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Callable

import torch

# the call's (mid-block it applies to, h (B,C,h,w), temb (B,D) -> the mid-block's new output, or None to keep h)
_edit: ContextVar[tuple[torch.nn.Module, Callable] | None] = ContextVar("h_space_edit", default=None)
_installing = threading.Lock()


def h_space_shape(unet) -> tuple[int, int, int]:
    """(C,h,w) of the mid-block output: the last block's channels at the size after every downsampling block."""
    size = unet.config.sample_size
    side = (size if isinstance(size, int) else size[0]) // 2 ** (len(unet.config.block_out_channels) - 1)
    return (unet.config.block_out_channels[-1], side, side)


def _apply(module: torch.nn.Module, args: tuple, h: torch.Tensor) -> torch.Tensor | None:
    """The mid-block's forward hook: the current call's edit of h, if it has one for this mid-block
    (UNet2DModel calls mid_block(sample, emb), so args[1] is temb)."""
    edit = _edit.get()
    if edit is None or edit[0] is not module:
        return None
    return edit[1](h, args[1])


def install(unet) -> None:
    """The hook on `unet`'s mid-block, installed once (a second call leaves it)."""
    with _installing:
        if _apply not in unet.mid_block._forward_hooks.values():
            unet.mid_block.register_forward_hook(_apply)


@contextmanager
def _editing(unet, fn: Callable):
    install(unet)
    token = _edit.set((unet.mid_block, fn))
    try:
        yield
    finally:
        _edit.reset(token)


def edit_h_space(unet, delta_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]):
    """Inside the block, this call's U-Net evaluations have the mid-block output h replaced by h + delta_fn(h, temb),
    temb (B,D) the time embedding the mid-block receives."""
    return _editing(unet, lambda h, temb: h + delta_fn(h, temb))


def record_h(unet, store: list):
    """Inside the block, the mid-block output h (B,C,h,w) of this call's every U-Net evaluation is appended to
    `store`."""
    return _editing(unet, lambda h, temb: store.append(h.detach()))
