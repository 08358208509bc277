"""The status at the top of the page: one line of the device and the default model, and where each other offered
model stands."""

from __future__ import annotations

from pipelines.asyrp import released as asyrp_released
from pipelines.models import loading, registry, timing
from pipelines.models.text_to_image import load_text_to_image

from . import cycle_text


def preload() -> dict[str, str]:
    """ZeroGPU: the default model, CLIP and the default text-to-image model loaded at import, shared with the GPU
    workers; the ids that could not be loaded, with why (they say it again on first use)."""
    failed = loading.preload()
    model_id = cycle_text.default_model()
    try:
        load_text_to_image(model_id)
    except loading.ModelLoadError as err:
        failed[model_id] = str(err)
    return failed


def model_state(model_id: str, kind: str) -> str:
    state = loading.availability(model_id, kind)
    seconds = timing.measured_seconds(model_id)
    return state + (f", {seconds:.3g} s per U-Net evaluation here" if seconds is not None else "")


def status_markdown() -> str:
    """One line: the device, and the default model, loaded (or why it cannot be)."""
    device, dtype = loading.device_and_dtype()
    model_id = registry.default_model_id()
    try:
        loading.load_diffusion(model_id)
        state = f"default model **{model_id}** ready ({model_state(model_id, 'ddpm')})"
    except loading.ModelLoadError:
        state = f"⚠️ **{model_id}** cannot be loaded (see *About*)"
    return f"Running on **{device.type.upper()}** ({str(dtype).removeprefix('torch.')}) · {state}"


def models_markdown() -> str:
    """Where every model the page offers stands: ready (or, for the default, why it cannot be), or where it would
    come from (with the download size) and, once it has run, its measured seconds per U-Net evaluation; and Asyrp's
    released directions."""
    model_id, clip_id = registry.default_model_id(), registry.default_clip_id()
    try:
        loading.load_diffusion(model_id)
        default = f"- the default model {model_id}: {model_state(model_id, 'ddpm')}"
    except loading.ModelLoadError as err:
        default = f"- ⚠️ the default model {model_id} cannot be loaded: {err}"
    others = [f"- {m}: {model_state(m, 'ddpm')}" for m in registry.diffusion_model_ids() if m != model_id]
    released = asyrp_released.released_status()
    ready = sum(state in ("offline copy", "cached") for state in released.values())
    return "\n".join([default, f"- CLIP {clip_id}: {model_state(clip_id, 'clip')}", *others,
                      f"- Asyrp's released directions: {ready} of {len(released)} ready here (the others download on "
                      f"first use)"])
