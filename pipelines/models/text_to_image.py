"""Text-to-image models as their repositories publish them (Stable Diffusion's layout): one folder per component
(unet/, vae/, text_encoder/, tokenizer/, scheduler/, and safety_checker/ + feature_extractor/ when the checker is on)
beside model_index.json, loaded once per id as shared, read-only components: each request builds its pipeline over
them (`TextToImageModel.components`, with a scheduler of its own).

From the hub only those folders are downloaded, each in one weight format: on a GPU the fp16 variant when the
repository has it (`*.fp16.safetensors`), else `.safetensors`, else the pickled `.bin` (segmind/tiny-sd publishes
only that), read through torch's restricted loader like every `.bin` here (loading.WEIGHTS_POLICY). A component
folder without a VAE (`vae/` absent) is a pixel-space model.

STEER_SAFETY_CHECKER=0 switches diffusers' safety checker off (it is on by default for a public Space). A model whose
model_index.json names no safety checker (the bundled faces-text-32, which draws only cartoon faces) runs without one.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers.configuration_utils import FrozenDict

from ..core.schedulers import sampler
from . import loading
from .devices import device_and_dtype
from .loading import ModelLoadError, from_pretrained, resolve
from .registry import ModelKind

COMPONENTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
SAFETY_COMPONENTS = ("safety_checker", "feature_extractor")
LAYOUT = ("A local copy needs Stable Diffusion's repository layout: model_index.json beside unet/, text_encoder/, "
          "tokenizer/, scheduler/ (and vae/ for a latent model, safety_checker/ + feature_extractor/ for the checker).")


def safety_checker_on() -> bool:
    return os.environ.get("STEER_SAFETY_CHECKER", "1").lower() not in ("0", "false", "no", "off")


def folders(safety: bool) -> tuple[str, ...]:
    return COMPONENTS + (SAFETY_COMPONENTS if safety else ())


def is_weight(name: str) -> bool:
    return name.endswith((".safetensors", ".bin"))


def chosen_weights(names: list[str], fp16: bool) -> list[str]:
    """One component's weight files to use: the fp16 variant when asked and published, else the plain
    `.safetensors`, else the fp16 variant anyway (cast when loaded), else the plain `.bin`, else its fp16 variant."""
    def pick(suffix: str, variant: bool) -> list[str]:
        return [n for n in names if n.endswith(suffix) and (".fp16." in n) == variant]

    order = [(".safetensors", True)] if fp16 else []
    order += [(".safetensors", False), (".safetensors", True), (".bin", False), (".bin", True)]
    return next((found for suffix, variant in order if (found := pick(suffix, variant))), [])


def text_to_image_patterns(repo_files: list[str], safety: bool, fp16: bool) -> list[str]:
    """What to download of a Stable Diffusion repository: model_index.json, the configs and tokenizer files of the
    components used, and each one's chosen weights (exact file names: never two formats, never flax or onnx)."""
    patterns = ["model_index.json"]
    for folder in folders(safety):
        files = [f for f in repo_files if f.startswith(f"{folder}/") and f.count("/") == 1]
        patterns += [f for f in files if f.endswith((".json", ".txt"))]
        patterns += chosen_weights([f for f in files if is_weight(f)], fp16)
    return patterns


def variant_of(folder: Path, fp16: bool) -> str | None:
    """"fp16" when that variant is the one to load from a component folder (see chosen_weights), else None."""
    chosen = chosen_weights([p.name for p in folder.iterdir() if is_weight(p.name)], fp16)
    return "fp16" if chosen and ".fp16." in chosen[0] else None


def publishes_safety_checker(root: Path) -> bool:
    """Whether the model's model_index.json names a safety checker (Stable Diffusion's do; a missing entry counts)."""
    try:
        index = json.loads((root / "model_index.json").read_text())
    except (OSError, ValueError):
        return True
    return index.get("safety_checker", ["", ""])[0] is not None


def load_component(cls, root: Path, name: str, model_id: str, fp16: bool, **kwargs):
    folder = root / name
    return from_pretrained(cls, folder, f"the {name} of {model_id!r}", LAYOUT, variant=variant_of(folder, fp16),
                           **kwargs)


@dataclass(frozen=True)
class TextToImageModel:
    """A loaded text-to-image model: its shared modules (vae None for a pixel-space model, safety_checker and
    feature_extractor None without the checker) and the config each request builds its scheduler from."""

    model_id: str
    unet: torch.nn.Module
    text_encoder: torch.nn.Module
    tokenizer: object
    vae: torch.nn.Module | None
    scheduler_config: FrozenDict
    safety_checker: torch.nn.Module | None
    feature_extractor: object | None

    def components(self) -> dict:
        """The keyword arguments of a pipeline over this model (StableCycleDiffusionPipeline's, diffusers' Stable
        Diffusion pipelines'), with a fresh DDIM scheduler of its schedule."""
        return dict(vae=self.vae, text_encoder=self.text_encoder, tokenizer=self.tokenizer, unet=self.unet,
                    scheduler=sampler("ddim", self.scheduler_config), safety_checker=self.safety_checker,
                    feature_extractor=self.feature_extractor, requires_safety_checker=self.safety_checker is not None)


def _load_text_to_image(model_id: str) -> TextToImageModel:
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPImageProcessor, CLIPTextModel, CLIPTokenizer

    device, dtype = device_and_dtype()
    fp16, safety = dtype == torch.float16, safety_checker_on()
    root = resolve(model_id, ModelKind.TEXT_TO_IMAGE,
                   lambda repo_files: text_to_image_patterns(repo_files, safety, fp16))
    if not (root / "unet").is_dir() or not (root / "text_encoder").is_dir():
        raise ModelLoadError(f"Could not load {model_id!r} from {root}: no unet/ or text_encoder/. {LAYOUT}")
    safety = safety and publishes_safety_checker(root)
    try:
        tokenizer = CLIPTokenizer.from_pretrained(root / "tokenizer")
        scheduler = DDIMScheduler.from_pretrained(root / "scheduler")
        extractor = CLIPImageProcessor.from_pretrained(root / "feature_extractor") if safety else None
    except (OSError, ValueError) as err:
        raise ModelLoadError(f"Could not load the tokenizer, scheduler or feature extractor of {model_id!r}: "
                             f"{err}. {LAYOUT}") from err

    def load(cls, name: str):
        module = load_component(cls, root, name, model_id, fp16, torch_dtype=dtype)
        return module.to(device).eval().requires_grad_(False)

    return TextToImageModel(
        model_id, unet=load(UNet2DConditionModel, "unet"), text_encoder=load(CLIPTextModel, "text_encoder"),
        tokenizer=tokenizer, vae=load(AutoencoderKL, "vae") if (root / "vae").is_dir() else None,
        scheduler_config=scheduler.config,
        safety_checker=load(StableDiffusionSafetyChecker, "safety_checker") if safety else None,
        feature_extractor=extractor)


def load_text_to_image(model_id: str) -> TextToImageModel:
    """The cached components of a registry text-to-image model or a local folder in its layout."""
    return loading.cache.get(ModelKind.TEXT_TO_IMAGE, model_id, _load_text_to_image)
