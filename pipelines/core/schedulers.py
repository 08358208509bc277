"""Samplers built from a model's scheduler config, one per request and stage.

A diffusers scheduler is stateful (`set_timesteps` writes its timesteps), so a pipeline never steps a scheduler that
another call can see: it builds the sampler it needs from the schedule of the one it was given.
"""

from __future__ import annotations

import inspect

from diffusers import DDIMInverseScheduler, DDIMScheduler, DDPMScheduler

SAMPLERS = {"ddpm": DDPMScheduler, "ddim": DDIMScheduler, "ddim_inverse": DDIMInverseScheduler}


def sampler(kind: str, config, num_inference_steps: int | None = None, **overrides):
    """A fresh scheduler of `kind` ("ddpm", "ddim" or "ddim_inverse") with `config`'s noise schedule and `overrides`,
    its timesteps set for num_inference_steps when given. Config entries the class does not take are left out."""
    if kind not in SAMPLERS:
        raise ValueError(f"scheduler kind {kind!r} is not supported; use one of {', '.join(map(repr, SAMPLERS))}")
    cls = SAMPLERS[kind]
    accepted = inspect.signature(cls.__init__).parameters
    scheduler = cls.from_config({k: v for k, v in config.items() if k in accepted}, **overrides)
    if num_inference_steps is not None:
        scheduler.set_timesteps(num_inference_steps)
    return scheduler
