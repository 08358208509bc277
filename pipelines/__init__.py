"""Steering a pretrained diffusion model without retraining it: ILVR, classifier guidance, CycleDiffusion, Asyrp.

The public API: every name below is importable as `from pipelines import X`. The layout shows what is shared:
`core` (what two or more methods use), `models` (which models exist and how each kind is loaded), and one module or
subpackage per method (`ilvr`, `guidance`, `cycle_diffusion`, `asyrp`), each importing only `core` and `models`.
"""

from .asyrp import AsyrpPipeline
from .asyrp.directions import (DeltaBlock, learn_direction, load_direction, mean_difference_direction,
                               principal_directions, save_direction)
from .asyrp.released import RELEASED, fetch_released, released_for, released_status
from .cycle_diffusion import CycleDiffusionPipeline, CycleLatent, StableCycleDiffusionPipeline, ddib, text_ddib
from .guidance import ClassifierGuidancePipeline, ClipZeroShotClassifier
from .ilvr import ILVRPipeline
from .models.classifier import NoiseAwareClassifier
from .models.loading import ModelLoadError, load_classifier, load_clip, load_diffusion, make_scheduler
from .models.registry import REGISTRY, ModelKind
from .models.text_to_image import load_text_to_image

__all__ = ["AsyrpPipeline", "ClassifierGuidancePipeline", "ClipZeroShotClassifier", "CycleDiffusionPipeline",
           "CycleLatent", "DeltaBlock", "ILVRPipeline", "ModelKind", "ModelLoadError", "NoiseAwareClassifier",
           "RELEASED", "REGISTRY", "StableCycleDiffusionPipeline", "ddib", "fetch_released", "learn_direction",
           "load_classifier", "load_clip", "load_diffusion", "load_direction", "load_text_to_image", "make_scheduler",
           "mean_difference_direction", "principal_directions", "released_for", "released_status", "save_direction",
           "text_ddib"]
