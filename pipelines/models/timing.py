"""How long one U-Net evaluation takes on this device, measured once per model, device, gradient and batch size on
first use; the time budget and the time estimates read it."""

from __future__ import annotations

import time

import torch

from .devices import device_and_dtype
from .loading import DiffusionModel

# (model id, device, grad, batch size) -> seconds. Bounded: the offered model ids x 2 x the few batch sizes callers
# ask for (they round a batch up to 1, 2, 4, 8, 16, ...).
_seconds: dict[tuple[str, str, bool, int], float] = {}


def _time_one_eval(model: DiffusionModel, grad: bool, batch_size: int) -> float:
    """Seconds of the faster of two U-Net calls on x_t (batch_size, C, H, W) at t = 500 (the first one pays for lazy
    initialisation, the faster one is the less disturbed by other work on the machine), with a backward pass to x_t
    when `grad`; class-conditional models get class 0, text-to-image ones an all-zero text embedding."""
    unet = model.unet
    size = unet.config.sample_size
    x_t = torch.randn(batch_size, unet.config.in_channels, size, size, device=unet.device, dtype=unet.dtype)
    labels = {}
    if getattr(unet.config, "num_class_embeds", None):
        labels["class_labels"] = torch.zeros(batch_size, dtype=torch.long, device=unet.device)
    if getattr(unet.config, "cross_attention_dim", None):  # a text-to-image U-Net: a 77-token text condition
        labels["encoder_hidden_states"] = torch.zeros(batch_size, 77, unet.config.cross_attention_dim,
                                                      device=unet.device, dtype=unet.dtype)
    best = float("inf")
    for _ in range(2):
        start = time.perf_counter()
        with torch.set_grad_enabled(grad):
            x_t.requires_grad_(grad)
            eps = unet(x_t, 500, **labels).sample
            if grad:
                torch.autograd.grad(eps.float().square().sum(), x_t)
        if unet.device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best


def seconds_per_eval(model: DiffusionModel, grad: bool = False, batch_size: int = 1) -> float:
    """Seconds one U-Net evaluation of a batch of `batch_size` takes on this device, without (`grad=False`) or with a
    backward pass to x_t (exact guidance gradients, plug-and-play, learning a direction); measured once per model,
    device and batch size, on first use."""
    key = (model.model_id, str(model.unet.device), grad, batch_size)
    if key not in _seconds:
        _seconds[key] = _time_one_eval(model, grad, batch_size)
    return _seconds[key]


def measured_seconds(model_id: str, grad: bool = False, batch_size: int = 1) -> float | None:
    """The seconds per U-Net evaluation of `model_id` at `batch_size` (see seconds_per_eval) on this device, if
    measured yet."""
    device = str(device_and_dtype()[0])
    return next((s for (m, d, g, b), s in _seconds.items()
                 if m == model_id and d.startswith(device) and g == grad and b == batch_size), None)
