"""Which models exist: every diffusion model and CLIP the app offers, what each is for, and which one it opens on.

The default model is google/ddpm-celebahq-256 on a GPU that can reach the hub (or has a local copy), and the
bundled faces-32 otherwise: a 32x32 class-conditional model of cartoon faces (smiling or frowning, with or without
glasses) trained by this project (`python -m training.train_shapes --data faces`), shipped in assets/faces-32 with
its noise-aware classifier, which runs in seconds on a CPU without network. The other bundled model, shapes-16
(16x16 coloured shapes), is in every menu too. Whether the hub default can serve is probed on first use, never at
import. Loading is `pipelines.models.loading`'s.

Environment variables (documented in the README):
    STEER_MODEL       default diffusion model: a registry id or a local directory (overrides the choice above)
    STEER_CLIP_MODEL  CLIP model: a registry id or a local directory
    STEER_MODEL_DIR   folder of local copies, laid out as STEER_MODEL_DIR/<org>/<name>
                      (e.g. STEER_MODEL_DIR/google/ddpm-cat-256); used before the hub
"""

from __future__ import annotations

import functools
import os
import socket
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from urllib.parse import urlparse

from .devices import device_and_dtype


class ModelKind(StrEnum):
    """What a model is, which decides how it is loaded (`pipelines.models.loading`) and which tabs offer it."""

    DDPM = "ddpm"  # a pixel-space UNet2DModel + DDPMScheduler (flat, as google/ddpm-* publish, or in subfolders)
    TEXT_TO_IMAGE = "text-to-image"  # Stable Diffusion's layout: unet/, text_encoder/, tokenizer/, scheduler/, vae/
    CLIP = "clip"  # a CLIPModel and its tokenizer


@dataclass(frozen=True)
class ModelInfo:
    """One registry entry: what the model is and what it is good for."""

    kind: ModelKind
    resolution: int  # image side in pixels (224 for CLIP's image tower)
    domain: str  # what the model has seen, shown in the UI
    note: str = ""
    path: str = ""  # bundled models: their directory, relative to the repository root
    class_names: tuple[str, ...] = ()  # class-conditional models: the name of every class label but the null class
    classifier: str = ""  # bundled noise-aware classifier p_phi(y | x_t, t): its directory, relative to the repository root
    download_mb: int = 0  # hub models: the size of the one weight file downloaded (parameters x 4 bytes, fp32)


REGISTRY: dict[str, ModelInfo] = {  # download sizes: 113,673,219 parameters at 256 px, 35.7M for cifar10, 151.3M for CLIP
    "google/ddpm-celebahq-256": ModelInfo(ModelKind.DDPM, 256, "faces (CelebA-HQ)", download_mb=455),
    "google/ddpm-ema-celebahq-256": ModelInfo(ModelKind.DDPM, 256, "faces (CelebA-HQ, EMA weights)", download_mb=455),
    "google/ddpm-cat-256": ModelInfo(ModelKind.DDPM, 256, "cats (LSUN cat)", download_mb=455),
    "google/ddpm-church-256": ModelInfo(ModelKind.DDPM, 256, "churches (LSUN church)", download_mb=455),
    "google/ddpm-ema-church-256": ModelInfo(ModelKind.DDPM, 256, "churches (LSUN church, EMA weights)", download_mb=455),
    "google/ddpm-bedroom-256": ModelInfo(ModelKind.DDPM, 256, "bedrooms (LSUN bedroom)", download_mb=455),
    "google/ddpm-ema-bedroom-256": ModelInfo(ModelKind.DDPM, 256, "bedrooms (LSUN bedroom, EMA weights)", download_mb=455),
    "google/ddpm-cifar10-32": ModelInfo(ModelKind.DDPM, 32, "CIFAR-10 objects", "unconditional, 32x32", download_mb=143),
    "openai/clip-vit-base-patch32": ModelInfo(ModelKind.CLIP, 224, "image-text (CLIP ViT-B/32)", download_mb=605),
    # the text cosine of the Asyrp authors' t_edit rule (pipelines.asyrp.released.CLIP); 149.6M parameters
    "openai/clip-vit-base-patch16": ModelInfo(ModelKind.CLIP, 224, "image-text (CLIP ViT-B/16)", download_mb=599),
    # text-to-image latent models in Stable Diffusion's layout; sizes in fp32 (a GPU takes the fp16 variant, half),
    # without the safety checker (another 1,216 MB): U-Net 859.5M (bk-sdm-tiny 323.4M), text encoder 123.1M, VAE 83.7M
    "CompVis/stable-diffusion-v1-4": ModelInfo(ModelKind.TEXT_TO_IMAGE, 512, "text-to-image (Stable Diffusion 1.4)",
                                               "latent, 512x512: wants a GPU", download_mb=4265),
    "stable-diffusion-v1-5/stable-diffusion-v1-5": ModelInfo(ModelKind.TEXT_TO_IMAGE, 512, "text-to-image (Stable Diffusion 1.5)",
                                                             "latent, 512x512: wants a GPU", download_mb=4265),
    "nota-ai/bk-sdm-tiny": ModelInfo(ModelKind.TEXT_TO_IMAGE, 512, "text-to-image (BK-SDM-Tiny, a distilled SD 1.4)",
                                     "latent, 0.33B U-Net: the one a CPU can run, slowly", download_mb=2121),
    "faces-text-32": ModelInfo(ModelKind.TEXT_TO_IMAGE, 32, "captioned cartoon faces (text-to-image, 32x32)",
                               "pixel space (no VAE), bundled: runs offline on a CPU in seconds",
                               path="assets/faces-text-32"),
    "shapes-16": ModelInfo(
        ModelKind.DDPM, 16, "coloured shapes (circle, square, triangle)",
        "class-conditional, 16x16, bundled: runs offline on a CPU", path="assets/shapes-16",
        class_names=("circle", "square", "triangle"), classifier="assets/shapes-16/classifier",
    ),
    "faces-32": ModelInfo(
        ModelKind.DDPM, 32, "cartoon faces (smiling or frowning, with or without glasses)",
        "class-conditional, 32x32, bundled: runs offline on a CPU", path="assets/faces-32",
        class_names=("frowning", "smiling", "frowning with glasses", "smiling with glasses"),
        classifier="assets/faces-32/classifier",
    ),
}

ROOT = Path(__file__).resolve().parents[2]  # the repository
DEFAULT_MODEL = "google/ddpm-celebahq-256"
BUNDLED_MODEL = "faces-32"  # the model the page opens on without a GPU
DEFAULT_CLIP = "openai/clip-vit-base-patch32"


def default_model_id() -> str:
    """STEER_MODEL if set; else DEFAULT_MODEL where it can serve (a GPU, and the hub or a local copy), else BUNDLED_MODEL."""
    if "STEER_MODEL" in os.environ:
        return os.environ["STEER_MODEL"]
    return DEFAULT_MODEL if _hub_default_can_serve() else BUNDLED_MODEL


def hub_offline() -> bool:
    """Whether HF_HUB_OFFLINE forbids the hub."""
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


@functools.cache
def _hub_default_can_serve() -> bool:
    """A GPU, and DEFAULT_MODEL in STEER_MODEL_DIR, in the hub cache, or on a reachable hub (checked once per process)."""
    if device_and_dtype()[0].type != "cuda":
        return False
    local_root = os.environ.get("STEER_MODEL_DIR")
    if local_root and (Path(local_root) / DEFAULT_MODEL).is_dir():
        return True
    from huggingface_hub import constants, snapshot_download

    try:
        snapshot_download(DEFAULT_MODEL, allow_patterns=["*.json"], local_files_only=True)
        return True
    except Exception:  # not in the cache: the hub client raises several kinds of error for that
        pass
    if hub_offline():
        return False
    try:
        socket.create_connection((urlparse(constants.ENDPOINT).hostname, 443), timeout=3).close()
        return True
    except OSError:
        return False


def default_clip_id() -> str:
    """STEER_CLIP_MODEL if set, else DEFAULT_CLIP."""
    return os.environ.get("STEER_CLIP_MODEL", DEFAULT_CLIP)


def text_to_image_model_ids() -> list[str]:
    """The text-to-image models the app offers (CycleDiffusion's text edit)."""
    return [name for name, info in REGISTRY.items() if info.kind == ModelKind.TEXT_TO_IMAGE]


def diffusion_model_ids() -> list[str]:
    """The diffusion models the app offers: the registry's, plus the default if it is a local path."""
    ids = [name for name, info in REGISTRY.items() if info.kind == ModelKind.DDPM]
    if default_model_id() not in ids:
        ids.insert(0, default_model_id())
    return ids
