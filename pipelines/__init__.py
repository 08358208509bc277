"""Four ways to steer a pretrained diffusion model without retraining it."""

from .ilvr import ILVRPipeline
from .models import REGISTRY, ModelLoadError, load_clip, load_diffusion, make_scheduler

__all__ = ["ILVRPipeline", "REGISTRY", "ModelLoadError", "load_clip", "load_diffusion", "make_scheduler"]
