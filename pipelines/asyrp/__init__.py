"""Asyrp (Kwon, Jeong & Uh, ICLR 2023): edits in h-space with the asymmetric reverse process. The pipeline
(`pipeline`), h-space and how a call shifts it (`h_space`), directions (`directions`: files, f_t, finding,
learning), the editing interval (`interval`), the authors' released directions (`released`) and the probes of
h-space's properties (`probes`)."""

from .pipeline import AsyrpPipeline, AsyrpPipelineOutput

__all__ = ["AsyrpPipeline", "AsyrpPipelineOutput"]
