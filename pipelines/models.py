"""Model registry and cached loaders: one instance per model id for the whole process.

Every tab and every click gets the same UNet2DModel (and the same CLIP), loaded lazily on first use (at import
on ZeroGPU, see `preload`), on CUDA in fp16 when there is a GPU and on the CPU in fp32 otherwise.

Weights policy: `.safetensors` whenever a model folder (or hub repository) has them; otherwise the pickled `.bin`
that google/ddpm-*-256 and openai/clip-vit-base-patch32 publish, read only through torch's restricted loader
(`torch.load(weights_only=True)`: tensors and plain containers, no pickled code runs). From the hub only the
configs, tokenizer files and that one weight format are downloaded. Nothing else is ever unpickled.

The default model is google/ddpm-celebahq-256 on a GPU that can reach the hub (or has a local copy), and the
bundled shapes-16 otherwise: a 16x16 class-conditional model of coloured shapes trained by this project
(training/train_shapes.py), shipped in assets/shapes-16 with its noise-aware classifier, which runs in
seconds on a CPU without network.
Schedulers are stateful (`set_timesteps`), so the loader hands out the scheduler *config* and each
request builds its own scheduler from it with `make_scheduler`.

Environment variables (documented in the README):
    STEER_MODEL       default diffusion model: a registry id or a local directory (overrides the choice above)
    STEER_CLIP_MODEL  CLIP model: a registry id or a local directory
    STEER_MODEL_DIR   folder of local copies, laid out as STEER_MODEL_DIR/<org>/<name>
                      (e.g. STEER_MODEL_DIR/google/ddpm-cat-256); used before the hub
    STEER_DEVICE      force "cpu" or "cuda" (default: cuda when available)
"""

from __future__ import annotations

import functools
import os
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

import torch
from diffusers import DDIMScheduler, DDPMScheduler, UNet2DModel
from diffusers.configuration_utils import ConfigMixin, FrozenDict, register_to_config
from diffusers.models.modeling_utils import ModelMixin

from .asyrp import DEFAULT_INTERVAL

if TYPE_CHECKING:
    from .clip import ClipJudge
    from transformers import CLIPModel, CLIPTokenizer


@dataclass(frozen=True)
class ModelInfo:
    """One registry entry: what the model is and what it is good for."""

    kind: str  # "ddpm" (a UNet2DModel + DDPMScheduler) or "clip"
    resolution: int  # image side in pixels (224 for CLIP's image tower)
    domain: str  # what the model has seen, shown in the UI
    note: str = ""
    path: str = ""  # bundled models: their directory, relative to the repository root
    class_names: tuple[str, ...] = ()  # class-conditional models: the name of every class label but the null class
    classifier: str = ""  # bundled noise-aware classifier p_phi(y | x_t, t): its directory, relative to the repository root
    download_mb: int = 0  # hub models: the size of the one weight file downloaded (parameters x 4 bytes, fp32)


# Asyrp's (t_edit, t_boost) per model, from kwonminki/Asyrp_official: t_edit from utils/t_edit_dic.py
# (T_EDIT_DIC_LPIPS_0_3, the first t with LPIPS(x, P_t) >= 0.3, i.e. 0.33 times a typical source/target text cosine);
# t_boost = the first t with LPIPS(x, x_t) >= 1.2 in utils/<dataset>_LPIPS_distance_x.tsv (church 293, bedroom 221,
# afhq 167); the repository has no CelebA-HQ x-distance table, so faces use its scripts' --user_defined_t_addnoise 200.
# Cats use AFHQ-dog's values (the closest dataset it has); CIFAR-10 has none and uses the scripts' 500 / 200.
# The bundled models: the interval their directions were learned on (training/shape_directions.py), without quality
# boosting, which has no fine detail to restore at 16 or 32 px and halves the share of strips that grow monotonically.
ASYRP_INTERVALS = {
    "google/ddpm-celebahq-256": (516, 200),
    "google/ddpm-ema-celebahq-256": (516, 200),
    "google/ddpm-cat-256": (444, 167),
    "google/ddpm-church-256": (370, 293),
    "google/ddpm-bedroom-256": (369, 221),
    "shapes-16": (500, 0),
    "faces-32": (250, 0),
}


def asyrp_interval(model_id: str) -> tuple[int, int]:
    """Asyrp's default (t_edit, t_boost) for a model: ASYRP_INTERVALS, else the official scripts' (500, 200)."""
    return ASYRP_INTERVALS.get(model_id, DEFAULT_INTERVAL)


REGISTRY: dict[str, ModelInfo] = {  # download sizes: 113,673,219 parameters at 256 px, 35.7M for cifar10, 151.3M for CLIP
    "google/ddpm-celebahq-256": ModelInfo("ddpm", 256, "faces (CelebA-HQ)", download_mb=455),
    "google/ddpm-ema-celebahq-256": ModelInfo("ddpm", 256, "faces (CelebA-HQ, EMA weights)", download_mb=455),
    "google/ddpm-cat-256": ModelInfo("ddpm", 256, "cats (LSUN cat)", download_mb=455),
    "google/ddpm-church-256": ModelInfo("ddpm", 256, "churches (LSUN church)", download_mb=455),
    "google/ddpm-bedroom-256": ModelInfo("ddpm", 256, "bedrooms (LSUN bedroom)", download_mb=455),
    "google/ddpm-cifar10-32": ModelInfo("ddpm", 32, "CIFAR-10 objects", "unconditional, 32x32", download_mb=143),
    "openai/clip-vit-base-patch32": ModelInfo("clip", 224, "image-text (CLIP ViT-B/32)", download_mb=605),
    "shapes-16": ModelInfo(
        "ddpm", 16, "coloured shapes (circle, square, triangle)",
        "class-conditional, 16x16, bundled: runs offline on a CPU", path="assets/shapes-16",
        class_names=("circle", "square", "triangle"), classifier="assets/shapes-16/classifier",
    ),
    "faces-32": ModelInfo(
        "ddpm", 32, "cartoon faces (smiling or frowning, with or without glasses)",
        "class-conditional, 32x32, bundled: runs offline on a CPU", path="assets/faces-32",
        class_names=("frowning", "smiling", "frowning with glasses", "smiling with glasses"),
        classifier="assets/faces-32/classifier",
    ),
}

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = "google/ddpm-celebahq-256"
BUNDLED_MODEL = "shapes-16"
DEFAULT_CLIP = "openai/clip-vit-base-patch32"


class ModelLoadError(RuntimeError):
    """A model could not be loaded; the message names it, says why, and how to use a local copy."""


def default_model_id() -> str:
    """STEER_MODEL if set; else DEFAULT_MODEL where it can serve (a GPU, and the hub or a local copy), else BUNDLED_MODEL."""
    if "STEER_MODEL" in os.environ:
        return os.environ["STEER_MODEL"]
    return DEFAULT_MODEL if _hub_default_can_serve() else BUNDLED_MODEL


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
    if _hub_offline():
        return False
    try:
        socket.create_connection((urlparse(constants.ENDPOINT).hostname, 443), timeout=3).close()
        return True
    except OSError:
        return False


def default_clip_id() -> str:
    return os.environ.get("STEER_CLIP_MODEL", DEFAULT_CLIP)


def diffusion_model_ids() -> list[str]:
    """The diffusion models the app offers: the registry's, plus the default if it is a local path."""
    ids = [name for name, info in REGISTRY.items() if info.kind == "ddpm"]
    if default_model_id() not in ids:
        ids.insert(0, default_model_id())
    return ids


def device_and_dtype() -> tuple[torch.device, torch.dtype]:
    """CUDA in fp16 when there is a GPU (or STEER_DEVICE=cuda), else the CPU in fp32."""
    wanted = os.environ.get("STEER_DEVICE", "cuda" if torch.cuda.is_available() else "cpu")
    if wanted not in ("cpu", "cuda"):
        raise ValueError(f"STEER_DEVICE={wanted!r} is not supported; use 'cpu' or 'cuda'")
    if wanted == "cuda":
        return torch.device("cuda"), torch.float16
    return torch.device("cpu"), torch.float32


def download_patterns(repo_files: list[str]) -> list[str]:
    """What to download of a hub repository: its configs and tokenizer files, and one weight format, the
    `.safetensors` when it publishes them, else the `.bin` (never both, never flax or tf weights)."""
    weights = "*.safetensors" if any(f.endswith(".safetensors") for f in repo_files) else "*.bin"
    return ["*.json", "*.txt", weights]


def _hub_snapshot(model_id: str) -> Path:
    """The hub repository `model_id` as a local folder: downloaded (configs and one weight format) or, when the hub
    cannot be reached, the copy in the hub cache."""
    from huggingface_hub import HfApi, snapshot_download

    try:
        patterns = download_patterns(HfApi().list_repo_files(model_id))
    except Exception:  # offline or unreachable: the hub client raises many kinds of network and HTTP errors
        return Path(snapshot_download(model_id, local_files_only=True))
    return Path(snapshot_download(model_id, allow_patterns=patterns))


def resolve(model_id: str, kind: str) -> Path:
    """A local directory holding `model_id`: the id itself if it is a directory, a copy under
    STEER_MODEL_DIR, or a snapshot from the hub (registry ids only; see `download_patterns`)."""
    if Path(model_id).is_dir():
        return Path(model_id)
    info = REGISTRY.get(model_id)
    if info is not None and info.path:
        if not (ROOT / info.path).is_dir():
            raise ModelLoadError(f"The bundled model {model_id!r} is missing from {info.path}; "
                                 "train it with `python -m training.train_shapes`.")
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
        return _hub_snapshot(model_id)
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


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def availability(model_id: str, kind: str = "ddpm") -> str:
    """Where a model would come from on its first use, without loading or downloading anything: "loaded",
    "bundled", "local copy", "in the hub cache", "downloads N MB from the hub" or "not available offline"."""
    if (kind, model_id) in _cache:
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
    return "not available offline" if _hub_offline() else f"downloads {info.download_mb} MB from the hub"


@dataclass(frozen=True)
class DiffusionModel:
    """A loaded diffusion model: the shared UNet and the config every request builds its scheduler from."""

    model_id: str
    unet: UNet2DModel
    scheduler_config: FrozenDict


_cache: dict[tuple[str, str], object] = {}
_lock = threading.Lock()
load_count: dict[str, int] = {}  # model id -> times actually loaded (the cache makes this 1)


def _cached(kind: str, model_id: str, load):
    with _lock:
        key = (kind, model_id)
        if key not in _cache:
            _cache[key] = load(model_id)
            load_count[model_id] = load_count.get(model_id, 0) + 1
        return _cache[key]


def _component(root: Path, name: str) -> Path:
    """diffusers' pipeline layout keeps components in subfolders (unet/, scheduler/); the google/ddpm-* repos are flat."""
    return root / name if (root / name).is_dir() else root


def _load_diffusion(model_id: str) -> DiffusionModel:
    root = resolve(model_id, "ddpm")
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
    return _cached("ddpm", model_id or default_model_id(), _load_diffusion)


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


_seconds: dict[tuple[str, str, bool], float] = {}


def seconds_per_eval(model: DiffusionModel, grad: bool = False) -> float:
    """Seconds one U-Net evaluation at batch 1 takes on this device, without (`grad=False`) or with a backward pass
    to x_t (exact guidance gradients, plug-and-play, learning a direction); measured once per model and device, on
    first use, by timing the second of two calls (the first one pays for lazy initialisation)."""
    unet = model.unet
    key = (model.model_id, str(unet.device), grad)
    if key not in _seconds:
        size = unet.config.sample_size
        x_t = torch.randn(1, unet.config.in_channels, size, size, device=unet.device, dtype=unet.dtype)
        labels = {}
        if unet.config.num_class_embeds:
            labels["class_labels"] = torch.zeros(1, dtype=torch.long, device=unet.device)
        for _ in range(2):
            start = time.perf_counter()
            with torch.set_grad_enabled(grad):
                x_t.requires_grad_(grad)
                eps = unet(x_t, 500, **labels).sample
                if grad:
                    torch.autograd.grad(eps.float().square().sum(), x_t)
            if unet.device.type == "cuda":
                torch.cuda.synchronize()
        _seconds[key] = time.perf_counter() - start
    return _seconds[key]


def measured_seconds(model_id: str, grad: bool = False) -> float | None:
    """The seconds per U-Net evaluation of `model_id` (see seconds_per_eval) on this device, if measured yet."""
    device = str(device_and_dtype()[0])
    return next((s for (m, d, g), s in _seconds.items() if m == model_id and d.startswith(device) and g == grad), None)


def make_scheduler(model: DiffusionModel, kind: str = "ddpm", **overrides):
    """A fresh scheduler for one request: "ddpm" (DDPMScheduler) or "ddim" (DDIMScheduler), same noise schedule."""
    schedulers = {"ddpm": DDPMScheduler, "ddim": DDIMScheduler}
    if kind not in schedulers:
        raise ValueError(f"scheduler kind {kind!r} is not supported; use 'ddpm' or 'ddim'")
    return schedulers[kind].from_config(model.scheduler_config, **overrides)


@dataclass(frozen=True)
class ClipModel:
    model_id: str
    model: CLIPModel
    tokenizer: CLIPTokenizer

    @functools.cached_property
    def judge(self) -> ClipJudge:
        """CLIP as the pipelines read it: embeddings, logits and gradients of [-1,1] images and texts."""
        from .clip import ClipJudge

        return ClipJudge(self.model, self.tokenizer)


def _load_clip(model_id: str) -> ClipModel:
    from transformers import CLIPModel, CLIPTokenizer

    root = resolve(model_id, "clip")
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
    return _cached("clip", model_id or default_clip_id(), _load_clip)


class AttentionPool2d(torch.nn.Module):
    """guided-diffusion's attention pooling: the mean of the feature map attends to every position (learned position
    embeddings), so the pooled vector keeps where features are, which a mean does not (a smile and a frown have the
    same local edges, on opposite sides)."""

    def __init__(self, channels: int, side: int, head_channels: int = 32):
        super().__init__()
        self.position = torch.nn.Parameter(torch.randn(side * side + 1, channels) / channels**0.5)
        self.attention = torch.nn.MultiheadAttention(channels, channels // head_channels, batch_first=True)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """(B,C,h,w) -> (B,C)."""
        tokens = h.flatten(2).transpose(1, 2)  # (B,hw,C)
        tokens = torch.cat([tokens.mean(dim=1, keepdim=True), tokens], dim=1) + self.position.to(h.dtype)  # (B,hw+1,C)
        return self.attention(tokens[:, :1], tokens, tokens, need_weights=False)[0][:, 0]


class NoiseAwareClassifier(ModelMixin, ConfigMixin):
    """p_phi(y | x_t, t): the U-Net's encoder half (time-conditioned ResNet blocks, downsampling) pooled to K logits,
    by a mean (shapes-16) or, as guided-diffusion's classifiers, by attention (faces-32).

    forward(x_t, t, x0_hat=None) -> logits (B, K); x_t (B,C,H,W) in [-1,1] at noise level t. Being trained on
    noisy x_t it needs no x0_hat, which it accepts and ignores so that it is a guidance classifier as it stands.
    """

    @register_to_config
    def __init__(self, sample_size: int = 16, in_channels: int = 3, num_classes: int = 3,
                 block_out_channels: tuple[int, ...] = (32, 64, 64), norm_num_groups: int = 16, pool: str = "mean"):
        super().__init__()
        from diffusers.models.embeddings import TimestepEmbedding, Timesteps
        from diffusers.models.resnet import Downsample2D, ResnetBlock2D

        temb_channels = 4 * block_out_channels[0]
        self.time_proj = Timesteps(block_out_channels[0], flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embedding = TimestepEmbedding(block_out_channels[0], temb_channels)
        self.conv_in = torch.nn.Conv2d(in_channels, block_out_channels[0], 3, padding=1)
        channels = [block_out_channels[0], *block_out_channels]
        self.resnets = torch.nn.ModuleList(
            ResnetBlock2D(in_channels=c_in, out_channels=c_out, temb_channels=temb_channels, groups=norm_num_groups)
            for c_in, c_out in zip(channels[:-1], channels[1:])
        )
        self.downsamplers = torch.nn.ModuleList(
            Downsample2D(c, use_conv=True, name="op") if i < len(block_out_channels) - 1 else torch.nn.Identity()
            for i, c in enumerate(block_out_channels)
        )
        self.norm_out = torch.nn.GroupNorm(norm_num_groups, block_out_channels[-1])
        if pool == "attention":
            self.attention_pool = AttentionPool2d(block_out_channels[-1], sample_size // 2 ** (len(block_out_channels) - 1))
        elif pool != "mean":
            raise ValueError(f"pool must be 'mean' or 'attention'; got {pool!r}")
        self.head = torch.nn.Linear(block_out_channels[-1], num_classes)

    def forward(self, x_t: torch.Tensor, t, x0_hat: torch.Tensor | None = None) -> torch.Tensor:
        t = torch.as_tensor(t, device=x_t.device).expand(x_t.shape[0])
        temb = self.time_embedding(self.time_proj(t).to(x_t.dtype))  # (B, 4*C0)
        h = self.conv_in(x_t)
        for resnet, down in zip(self.resnets, self.downsamplers):
            h = down(resnet(h, temb))
        h = torch.nn.functional.silu(self.norm_out(h))  # (B, C_last, h, w)
        return self.head(self.attention_pool(h) if self.config.pool == "attention" else h.mean(dim=(2, 3)))


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
    return _cached("classifier", str(path), _load_classifier)
