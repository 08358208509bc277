"""The time budget: a request's cost in U-Net evaluations, priced at its batch size on this device, refused before
any sampling when it would take longer than one request may.

A batch of B is not priced as B single samples: a batch's seconds per evaluation are measured at B's power-of-two
bracket (1, 2, 4, 8, ...) and interpolated, and only when the batch-1 price does not already settle the question
(B x the batch-1 time is an upper bound, the batch-1 time a lower one), so a large model on a CPU is never timed at a
large batch just to be refused.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

from pipelines.models import loading, registry, timing


ZERO_GPU_MAX_SECONDS = 120  # the longest duration one ZeroGPU call is granted here


@dataclass(frozen=True)
class Work:
    """`evals` U-Net evaluations of a batch of `batch_size`, with a backward pass to x_t when `grad`."""

    evals: int
    batch_size: int = 1
    grad: bool = False


@dataclass(frozen=True)
class Cost:
    """What one request asks of its model: a few kinds of work (plain and back-propagated, at their batch sizes)."""

    model_id: str
    work: tuple[Work, ...]

    @property
    def evaluations(self) -> int:
        return sum(w.evals * w.batch_size for w in self.work)


def max_seconds() -> float:
    """STEER_MAX_SECONDS, else what one ZeroGPU call may take on ZeroGPU, else 300."""
    if "STEER_MAX_SECONDS" in os.environ:
        return float(os.environ["STEER_MAX_SECONDS"])
    return ZERO_GPU_MAX_SECONDS if os.environ.get("SPACES_ZERO_GPU") else 300.0


def brackets(batch_size: int) -> tuple[int, int]:
    """The powers of two around a batch size: (4, 8) for 5, (4, 4) for 4."""
    low = 1 << (batch_size.bit_length() - 1)
    return low, low if low == batch_size else 2 * low


def seconds_at(model_id: str, batch_size: int, grad: bool, model=None) -> float | None:
    """Seconds per U-Net evaluation of a batch, interpolated between its brackets: measured on `model` when it is
    given and they are not measured yet, else None until they are."""
    low, high = brackets(batch_size)
    times = []
    for size in (low, high):
        seconds = timing.measured_seconds(model_id, grad=grad, batch_size=size)
        if seconds is None and model is not None:
            seconds = timing.seconds_per_eval(model, grad=grad, batch_size=size)
        if seconds is None:
            return None
        times.append(seconds)
    share = 0.0 if high == low else (batch_size - low) / (high - low)
    return times[0] + share * (times[1] - times[0])


def estimate_seconds(cost: Cost, model=None) -> float | None:
    """The request's seconds on this device: each kind of work at its batch size. Given the loaded `model`, what is
    not measured yet is measured, and a batch size only when the bounds at batch 1 do not decide (see the module's
    docstring); without it, None until measured."""
    total = 0.0
    for w in cost.work:
        single = seconds_at(cost.model_id, 1, w.grad, model)
        if single is None:
            return None
        if w.batch_size > 1:
            upper, lower, limit = w.evals * w.batch_size * single, w.evals * single, max_seconds()
            if model is not None and (upper <= limit or lower > limit):
                total += upper if upper <= limit else lower
                continue
            batched = seconds_at(cost.model_id, w.batch_size, w.grad, model)
            single = batched if batched is not None else w.batch_size * single
        total += w.evals * single
    return total


def device_name() -> str:
    return loading.device_and_dtype()[0].type.upper()


def check_budget(model, cost: Cost, lower: str, smallest: Cost | None = None) -> float:
    """The request's estimated seconds, or a ValueError before any sampling when they exceed max_seconds(); `lower`
    says what to lower, unless even `smallest` (the tab's lightest settings) is over the limit: then it says that no
    setting fits on this device. The first request of a model on this device measures its cost first."""
    seconds, limit = estimate_seconds(cost, model), max_seconds()
    if seconds <= limit:
        return seconds
    floor = estimate_seconds(smallest, model) if smallest else 0.0
    advice = (f"Even the lightest settings take about {floor:.0f} s with {model.model_id} here: pick a smaller model "
              f"(the bundled ones run in seconds) or run the Space on a GPU." if floor > limit else f"Lower {lower}.")
    raise ValueError(f"This request would take about {seconds:.0f} s on this {device_name()} ({cost.evaluations} "
                     f"U-Net evaluations); the limit is {limit:.0f} s. {advice}")


def estimate_text(settings, cost: Callable, model_field: str = "model_id") -> str:
    """The estimate shown next to a Run button ("About 40 s on this CPU") from what is measured: nothing is loaded,
    timed or downloaded for it; "" while the settings are being typed (not valid yet)."""
    model_id = getattr(settings, model_field, None) or registry.default_model_id()
    if not any(loading.cache.loaded(kind, model_id) for kind in ("ddpm", "text-to-image")):
        return f"Time: measured on the first run of {model_id}."
    try:
        found = cost(settings)
    except ValueError:
        return ""
    seconds = estimate_seconds(found)
    if seconds is None:
        return f"Time: measured on the first run of {model_id} ({found.evaluations} U-Net evaluations)."
    over = f" — over the {max_seconds():.0f} s limit: lower the settings" if seconds > max_seconds() else ""
    return f"About **{max(seconds, 1):.0f} s** on this {device_name()}{over}."
