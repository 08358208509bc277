"""Four ways to steer a pretrained diffusion model without retraining it."""

from .cycle_diffusion import CycleDiffusionPipeline, CycleLatent
from .asyrp import AsyrpPipeline
from .asyrp_released import RELEASED, fetch_released, released_for, released_status
from .guidance import ClassifierGuidancePipeline, ClipZeroShotClassifier
from .ilvr import ILVRPipeline
from .stable_cycle_diffusion import StableCycleDiffusionPipeline
from .classifier import NoiseAwareClassifier
from .loading import ModelLoadError, load_classifier, load_clip, load_diffusion, make_scheduler
from .registry import REGISTRY

__all__ = ["AsyrpPipeline", "CycleDiffusionPipeline", "ClassifierGuidancePipeline", "ClipZeroShotClassifier", "CycleLatent", "ILVRPipeline", "REGISTRY", "ModelLoadError", "NoiseAwareClassifier", "StableCycleDiffusionPipeline", "load_classifier", "load_clip", "load_diffusion", "make_scheduler", "RELEASED", "fetch_released", "released_for", "released_status"]
