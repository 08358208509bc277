"""Four ways to steer a pretrained diffusion model without retraining it."""

from .cycle_diffusion import CycleDiffusionPipeline, CycleLatent
from .asyrrp import AsyrrpPipeline
from .ilvr import ILVRPipeline
from .models import REGISTRY, ModelLoadError, load_clip, load_diffusion, make_scheduler

__all__ = ["AsyrrpPipeline", "CycleDiffusionPipeline", "CycleLatent", "ILVRPipeline", "REGISTRY", "ModelLoadError", "load_clip", "load_diffusion", "make_scheduler"]
