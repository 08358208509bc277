"""CycleDiffusion (Wu & De la Torre, ICCV 2023): the DPM-Encoder's latent of a stochastic sampler (`dpm_encoder`, one
step for pixel and latent chains), its pipeline on pixel DDPMs (`pipeline`: translation, class translation, CLIP
guidance, plug-and-play) and on text-to-image models (`stable`: the paper's text edit, with prompt-to-prompt's
cross-attention control, `attention_control`), and DDIB, the deterministic baseline (`ddib`)."""

from .ddib import ddib, text_ddib
from .dpm_encoder import CycleLatent
from .pipeline import CycleDiffusionPipeline
from .stable import StableCycleDiffusionPipeline

__all__ = ["CycleDiffusionPipeline", "CycleLatent", "StableCycleDiffusionPipeline", "ddib", "text_ddib"]
