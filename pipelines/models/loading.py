"""Cached loaders: one instance per model id for the whole process.

Every tab and every click gets the same UNet2DModel (and the same CLIP, the same noise-aware classifier), loaded
lazily on first use (at import on ZeroGPU, see `preload`), on CUDA in fp16 when there is a GPU and on the CPU in fp32
otherwise (`pipelines.models.devices`). Which models exist, and of which kind, is `pipelines.models.registry`'s;
the text-to-image kind's loader is `pipelines.models.text_to_image`.

Weights policy: `.safetensors` whenever a model folder (or hub repository) has them; otherwise the pickled `.bin`
that google/ddpm-*-256 and openai/clip-vit-base-patch32 publish, read only through torch's restricted loader
(`torch.load(weights_only=True)`: tensors and plain containers, no pickled code runs). From the hub only the
configs, tokenizer files and that one weight format are downloaded. Nothing else is ever unpickled.

What is loaded is shared by every request and read only: modules in eval mode without gradients, and the scheduler
*config*, from which each request builds its own scheduler (`make_scheduler`; `set_timesteps` mutates one).
"""

from __future__ import annotations

import functools
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import torch
from diffusers import DDPMScheduler, UNet2DModel
from diffusers.configuration_utils import FrozenDict

from .classifier import NoiseAwareClassifier
from .devices import device_and_dtype
from ..core.schedulers import sampler
from .registry import REGISTRY, ROOT, ModelKind, default_clip_id, default_model_id, hub_offline

if TYPE_CHECKING:
    from ..core.clip import ClipJudge
    from transformers import CLIPModel, CLIPTokenizer


class ModelLoadError(RuntimeError):
    """A model could not be loaded; the message names it, says why, and how to use a local copy."""


def download_patterns(repo_files: list[str]) -> list[str]:
    """What to download of a hub repository: its configs and tokenizer files, and one weight format, the
    `.safetensors` when it publishes them, else the `.bin` (never both, never flax or tf weights)."""
    weights = "*.safetensors" if any(f.endswith(".safetensors") for f in repo_files) else "*.bin"
    return ["*.json", "*.txt", weights]


def _hub_snapshot(model_id: str, patterns_of: Callable[[list[str]], list[str]]) -> Path:
    """The hub repository `model_id` as a local folder: downloaded (what `patterns_of` the repository's file list
    names) or, when the hub cannot be reached, the copy in the hub cache."""
    from huggingface_hub import HfApi, snapshot_download

    try:
        patterns = patterns_of(HfApi().list_repo_files(model_id))
    except Exception:  # offline or unreachable: the hub client raises many kinds of network and HTTP errors
        return Path(snapshot_download(model_id, local_files_only=True))
    return Path(snapshot_download(model_id, allow_patterns=patterns))


def resolve(model_id: str, kind: ModelKind, patterns_of: Callable[[list[str]], list[str]] = download_patterns) -> Path:
    """A local directory holding `model_id`: the id itself if it is a directory, a copy under
    STEER_MODEL_DIR, or a snapshot from the hub of what `patterns_of` names (registry ids only)."""
    if Path(model_id).is_dir():
        return Path(model_id)
    info = REGISTRY.get(model_id)
    if info is not None and info.path:
        if not (ROOT / info.path).is_dir():
            raise ModelLoadError(f"The bundled model {model_id!r} is missing from {info.path}; train it as the "
                                 "README's section on the bundled models says (`python -m training.train_shapes` for "
                                 "faces-32 and shapes-16, `python -m training.train_faces_text` for faces-text-32).")
        return ROOT / info.path
    if info is None:
        known = ", ".join(n for n, i in REGISTRY.items() if i.kind == kind)
        raise ModelLoadError(
            f"{model_id!r} is neither a registry model nor a local directory. Registry {kind} models: {known}."
        )
    if info.kind != kind:
        raise ModelLoadError(f"{model_id!r} is a {info.kind} model, not a {kind} model.")
    local_root = os.environ.get("STEER_MODEL_DIR")
    if local_root and (Path(local_root) / model_id).is_dir():
        return Path(local_root) / model_id
    try:
        return _hub_snapshot(model_id, patterns_of)
    except Exception as err:  # the hub client raises many kinds of network and HTTP errors
        raise ModelLoadError(
            f"Could not load {model_id!r}: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}. "
            f"Without network, download it elsewhere (`hf download {model_id} --local-dir DIR`) and either set "
            f"STEER_MODEL_DIR so that STEER_MODEL_DIR/{model_id} is that copy, or point STEER_MODEL at DIR."
        ) from err


WEIGHTS_POLICY = ("Weights are read from .safetensors, or from a .bin through torch's restricted loader "
                  "(torch.load with weights_only=True: tensors only, no pickled code runs).")


def weights_file(folder: Path) -> Path | None:
    """The weight file a model folder is loaded from: its .safetensors if it has one, else its .bin, else None."""
    for suffix in (".safetensors", ".bin"):
        found = sorted(folder.glob(f"*{suffix}"))
        if found:
            return found[0]
    return None


def _holds_only_tensors(path: Path) -> bool:
    import pickle

    try:
        torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        return False
    return True


def from_pretrained(cls, folder: Path, what: str, layout: str, **kwargs):
    """`cls.from_pretrained(folder)` under the weights policy (WEIGHTS_POLICY); a ModelLoadError that names `what`
    and the `layout` a folder needs when the folder cannot serve."""
    weights = weights_file(folder)
    if weights is None:
        raise ModelLoadError(f"Could not load {what} from {folder}: it holds no weights. {layout} {WEIGHTS_POLICY}")
    try:
        return cls.from_pretrained(folder, use_safetensors=weights.suffix == ".safetensors", **kwargs)
    except (OSError, ValueError) as err:
        if weights.suffix == ".bin" and not _holds_only_tensors(weights):
            raise ModelLoadError(
                f"Refused to load {what}: {weights.name} holds pickled objects other than tensors, and nothing but "
                f"tensors is ever unpickled here. {WEIGHTS_POLICY} Use a copy of the weights as .safetensors."
            ) from err
        raise ModelLoadError(f"Could not load {what} from {folder}: {err}. {layout} {WEIGHTS_POLICY}") from err


def availability(model_id: str, kind: ModelKind = ModelKind.DDPM) -> str:
    """Where a model would come from on its first use, without loading or downloading anything: "loaded",
    "bundled", "local copy", "in the hub cache", "downloads N MB from the hub" or "not available offline"."""
    if cache.loaded(kind, model_id):
        return "loaded"
    info = REGISTRY.get(model_id)
    if info is not None and info.path:
        return "bundled"
    local_root = os.environ.get("STEER_MODEL_DIR")
    if Path(model_id).is_dir() or (local_root and (Path(local_root) / model_id).is_dir()):
        return "local copy"
    if info is None:
        return "unknown"
    from huggingface_hub import try_to_load_from_cache

    if isinstance(try_to_load_from_cache(model_id, "config.json"), str):
        return "in the hub cache"
    return "not available offline" if hub_offline() else f"downloads {info.download_mb} MB from the hub"


@dataclass(frozen=True)
class DiffusionModel:
    """A loaded diffusion model: the shared UNet and the config every request builds its scheduler from."""

    model_id: str
    unet: UNet2DModel
    scheduler_config: FrozenDict


class ModelCache:
    """The loaded models, one per (kind, id) for the whole process, and how many times each id was actually loaded
    (the cache makes that 1). A lock makes two requests for a model that is not loaded yet load it once.

    Bounded by construction: a request never names a path (the page offers registry ids only), so the entries are
    the registry's models, the classifiers they ship, and the operator's local defaults (STEER_MODEL,
    STEER_CLIP_MODEL); code and tests that pass a directory add that one.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._entries: dict[tuple[str, str], object] = {}
        self.load_count: dict[str, int] = {}  # model id -> times actually loaded

    def get(self, kind: str, model_id: str, load: Callable[[str], object]):
        """The cached `load(model_id)` for (kind, model_id), loading it on first use."""
        with self._lock:
            key = (kind, model_id)
            if key not in self._entries:
                self._entries[key] = load(model_id)
                self.load_count[model_id] = self.load_count.get(model_id, 0) + 1
            return self._entries[key]

    def loaded(self, kind: str, model_id: str) -> bool:
        """Whether (kind, model_id) is loaded already."""
        return (kind, model_id) in self._entries


cache = ModelCache()  # tests replace it with a fresh one


def _component(root: Path, name: str) -> Path:
    """diffusers' pipeline layout keeps components in subfolders (unet/, scheduler/); the google/ddpm-* repos are flat."""
    return root / name if (root / name).is_dir() else root


def _load_diffusion(model_id: str) -> DiffusionModel:
    root = resolve(model_id, ModelKind.DDPM)
    device, dtype = device_and_dtype()
    layout = ("A local copy needs the layout of DDPMPipeline.save_pretrained (unet/ and scheduler/) or of the "
              "google/ddpm-* repositories (config.json, scheduler_config.json and the weights side by side).")
    unet = from_pretrained(UNet2DModel, _component(root, "unet"), repr(model_id), layout, torch_dtype=dtype)
    try:
        scheduler = DDPMScheduler.from_pretrained(_component(root, "scheduler"))
    except (OSError, ValueError) as err:
        raise ModelLoadError(f"Could not load the scheduler of {model_id!r} from {root}: {err}. {layout}") from err
    unet = unet.to(device).eval().requires_grad_(False)
    return DiffusionModel(model_id, unet, scheduler.config)


def load_diffusion(model_id: str | None = None) -> DiffusionModel:
    """The cached UNet + scheduler config for a registry id or local directory (default: STEER_MODEL)."""
    return cache.get(ModelKind.DDPM, model_id or default_model_id(), _load_diffusion)


def preload() -> dict[str, str]:
    """Load the default diffusion model and CLIP now, for ZeroGPU, which runs every GPU function in a fresh worker:
    a model loaded at import (and placed on CUDA there) is shared with the workers, whereas one first loaded inside
    a worker would be loaded again on every call. Returns the ids that could not be loaded, with why; those say it
    again on first use."""
    failed = {}
    for load, model_id in ((load_diffusion, default_model_id()), (load_clip, default_clip_id())):
        try:
            load(model_id)
        except ModelLoadError as err:
            failed[model_id] = str(err)
    return failed


def make_scheduler(model: DiffusionModel, kind: str = "ddpm", **overrides):
    """A fresh scheduler for one request: "ddpm" (DDPMScheduler) or "ddim" (DDIMScheduler), same noise schedule."""
    if kind not in ("ddpm", "ddim"):
        raise ValueError(f"scheduler kind {kind!r} is not supported; use 'ddpm' or 'ddim'")
    return sampler(kind, model.scheduler_config, **overrides)


@dataclass(frozen=True)
class ClipModel:
    """A loaded CLIP: the shared model and its tokenizer."""

    model_id: str
    model: CLIPModel
    tokenizer: CLIPTokenizer

    @functools.cached_property
    def judge(self) -> ClipJudge:
        """CLIP as the pipelines read it: embeddings, logits and gradients of [-1,1] images and texts."""
        from ..core.clip import ClipJudge

        return ClipJudge(self.model, self.tokenizer)


def _load_clip(model_id: str) -> ClipModel:
    from transformers import CLIPModel, CLIPTokenizer

    root = resolve(model_id, ModelKind.CLIP)
    device, dtype = device_and_dtype()
    layout = ("A local copy needs the layout of openai/clip-vit-base-patch32 (or CLIPModel.save_pretrained): "
              "config.json, the tokenizer files and the weights side by side.")
    model = from_pretrained(CLIPModel, root, f"CLIP {model_id!r}", layout, dtype=dtype)
    try:
        tokenizer = CLIPTokenizer.from_pretrained(root)
    except (OSError, ValueError) as err:
        raise ModelLoadError(f"Could not load the tokenizer of CLIP {model_id!r} from {root}: {err}. {layout}") from err
    model = model.to(device).eval().requires_grad_(False)
    return ClipModel(model_id, model, tokenizer)


def load_clip(model_id: str | None = None) -> ClipModel:
    """The cached CLIP model and tokenizer (default: STEER_CLIP_MODEL or openai/clip-vit-base-patch32)."""
    return cache.get(ModelKind.CLIP, model_id or default_clip_id(), _load_clip)


def _load_classifier(path: str) -> NoiseAwareClassifier:
    device, dtype = device_and_dtype()
    classifier = from_pretrained(NoiseAwareClassifier, Path(path), f"the noise-aware classifier in {path}",
                                 "It needs the layout of NoiseAwareClassifier.save_pretrained.", torch_dtype=dtype)
    return classifier.to(device).eval().requires_grad_(False)


def load_classifier(model_id_or_path: str | os.PathLike) -> NoiseAwareClassifier:
    """The cached noise-aware classifier p_phi(y | x_t, t) of a registry model that ships one (e.g. "shapes-16"),
    or saved in a directory (NoiseAwareClassifier.save_pretrained)."""
    info = REGISTRY.get(str(model_id_or_path))
    if info is not None and not info.classifier:
        raise ModelLoadError(f"{model_id_or_path!r} comes with no noise-aware classifier; "
                             f"{', '.join(n for n, i in REGISTRY.items() if i.classifier)} do.")
    path = ROOT / info.classifier if info is not None else Path(model_id_or_path)
    return cache.get("classifier", str(path), _load_classifier)
