import os
import tempfile

# set before huggingface_hub and gradio are imported: both read these once, at import
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
# Gradio's cache folder, the tests' own: Gradio names its files by their content and a page that closes deletes those
# it made (the app's delete_cache), which would take them from an app another process serves from a shared folder
os.environ.setdefault("GRADIO_TEMP_DIR", tempfile.mkdtemp(prefix="gradio-tests-"))
# the time budget is measured on this machine, which tests share with other work: only the budget tests set one
os.environ.setdefault("STEER_MAX_SECONDS", "3600")

from typing import NamedTuple  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
from diffusers import DDPMScheduler, UNet2DModel  # noqa: E402

torch.set_num_threads(2)


def tiny_unet(sample_size: int = 32, seed: int = 0) -> UNet2DModel:
    """A ~0.2M-parameter random UNet2DModel with the hub models' block layout, in eval mode."""
    torch.manual_seed(seed)
    return UNet2DModel(
        sample_size=sample_size,
        in_channels=3,
        out_channels=3,
        layers_per_block=1,
        block_out_channels=(16, 32),
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=8,
    ).eval()


def tiny_class_unet(sample_size: int = 16, classes: int = 3, seed: int = 0) -> UNet2DModel:
    """tiny_unet with class embeddings for `classes` classes and the null class after them (num_class_embeds =
    classes + 1), as the bundled models are trained for classifier-free guidance."""
    torch.manual_seed(seed)
    return UNet2DModel(sample_size=sample_size, layers_per_block=1, block_out_channels=(16, 32), norm_num_groups=8,
                       down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
                       num_class_embeds=classes + 1).eval()


def class_conditional_ddpm(unet: UNet2DModel, labels: list[int], steps: int, seed: int) -> torch.Tensor:
    """Plain class-conditional DDPM sampling with diffusers' scheduler, the reference the guided samplers are held to:
    x_T drawn as DDPMPipeline draws it, then x_{t-1} ~ p_theta(x_{t-1} | x_t, y): (B,3,H,W) in [-1,1]."""
    from diffusers.utils.torch_utils import randn_tensor

    scheduler, generator = ddpm_scheduler(), torch.Generator().manual_seed(seed)
    scheduler.set_timesteps(steps)
    size = unet.config.sample_size
    x = randn_tensor((len(labels), 3, size, size), generator=generator)
    y = torch.tensor(labels)
    for t in scheduler.timesteps:
        x = scheduler.step(unet(x, t, class_labels=y).sample, t, x, generator=generator).prev_sample
    return x


def ddpm_scheduler() -> DDPMScheduler:
    """The hub DDPMs' schedule: linear betas 1e-4..0.02, 1000 steps, clip_sample, fixed_small."""
    return DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", clip_sample=True, variance_type="fixed_small")


@pytest.fixture
def unet():
    return tiny_unet()


@pytest.fixture
def scheduler():
    return ddpm_scheduler()


@pytest.fixture
def tiny_model_dir(tmp_path):
    """A DDPMPipeline saved with save_pretrained, as a local model directory."""
    from diffusers import DDPMPipeline

    path = tmp_path / "tiny-ddpm"
    DDPMPipeline(unet=tiny_unet(), scheduler=ddpm_scheduler()).save_pretrained(path, safe_serialization=True)
    return path


def tiny_clip_components(seed: int = 0):
    """A random ~0.1M-parameter CLIPModel and a character-level CLIPTokenizer (no merges), built offline."""
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

    chars = [chr(c) for c in range(ord("!"), ord("~") + 1)]  # printable ASCII, as byte-level BPE shows it
    tokens = chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
    tokenizer = CLIPTokenizer(vocab={tok: i for i, tok in enumerate(tokens)}, merges=[])
    torch.manual_seed(seed)
    config = CLIPConfig(
        text_config=dict(vocab_size=len(tokens), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=77, projection_dim=16,
                         bos_token_id=len(tokens) - 2, eos_token_id=len(tokens) - 1, pad_token_id=len(tokens) - 1),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=32, patch_size=8, projection_dim=16),
        projection_dim=16,
    )
    return CLIPModel(config).eval(), tokenizer


@pytest.fixture
def tiny_clip():
    """(CLIPModel, CLIPTokenizer), tiny and random, built offline."""
    return tiny_clip_components()


class LiveApp(NamedTuple):
    """The locally launched app and the local models it serves."""

    url: str
    model_dir: str  # the default diffusion model (STEER_MODEL)
    other_model_dir: str  # a second model of the same size and schedule, another seed (CycleDiffusion translate)
    other_model_id: str  # the registry id it is served as (a STEER_MODEL_DIR copy of a 32 px registry model)
    clip_dir: str  # the CLIP model (STEER_CLIP_MODEL)


@pytest.fixture(scope="session")
def live_app(tmp_path_factory) -> LiveApp:
    """The app launched locally on tiny random models saved to local directories (diffusion models and CLIP)."""
    import importlib

    from diffusers import DDPMPipeline

    root = tmp_path_factory.mktemp("models")
    other_model_id = "google/ddpm-cifar10-32"  # offered by the page, 32 px as the tiny model
    model_dir, other_model_dir, clip_dir = root / "tiny-ddpm", root / "copies" / other_model_id, root / "tiny-clip"
    DDPMPipeline(unet=tiny_unet(), scheduler=ddpm_scheduler()).save_pretrained(model_dir)
    DDPMPipeline(unet=tiny_unet(seed=1), scheduler=ddpm_scheduler()).save_pretrained(other_model_dir)
    clip_model, tokenizer = tiny_clip_components()
    tokenizer.model_max_length = 77  # as openai/clip-vit-base-patch32's tokenizer: long prompts are truncated
    clip_model.save_pretrained(clip_dir)
    tokenizer.save_pretrained(clip_dir)
    from test_stable_cycle_diffusion import sd_components
    from test_text_to_image import write_published

    write_published(root / "copies" / "nota-ai/bk-sdm-tiny", sd_components(root), "both")  # text-to-image, tiny
    mp = pytest.MonkeyPatch()
    mp.setenv("STEER_SAFETY_CHECKER", "0")
    mp.setenv("STEER_MODEL", str(model_dir))
    mp.setenv("STEER_CLIP_MODEL", str(clip_dir))
    mp.setenv("STEER_MODEL_DIR", str(root / "copies"))
    import app

    demo = importlib.reload(app).build_demo()
    _, url, _ = demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", quiet=True, **app.launch_options())
    yield LiveApp(url, str(model_dir), str(other_model_dir), other_model_id, str(clip_dir))
    demo.close()
    mp.undo()


@pytest.fixture(scope="session")
def bundled():
    """The bundled model (assets/shapes-16), loaded through the registry like the hub models; tests of what the
    methods mean use it."""
    from pipelines.models import loading, registry

    if not (registry.ROOT / registry.REGISTRY["shapes-16"].path / "unet").is_dir():
        pytest.skip("assets/shapes-16 is not trained yet: python -m training.train_shapes")
    return loading.load_diffusion("shapes-16")


def write_published_ddpm(folder, unet: UNet2DModel, scheduler: DDPMScheduler) -> None:
    """`unet` and `scheduler` as google/ddpm-*-256 publish them: flat at the root, the weights only as a pickled
    state dict (diffusion_pytorch_model.bin) beside config.json, scheduler_config.json and model_index.json."""
    import json

    folder.mkdir(parents=True, exist_ok=True)
    unet.save_config(folder)
    scheduler.save_config(folder)
    torch.save(unet.state_dict(), folder / "diffusion_pytorch_model.bin")
    index = {"_class_name": "DDPMPipeline", "_diffusers_version": "0.0.4",
             "scheduler": ["diffusers", "DDPMScheduler"], "unet": ["diffusers", "UNet2DModel"]}
    (folder / "model_index.json").write_text(json.dumps(index))


def write_published_clip(folder, model, tokenizer) -> None:
    """A CLIP model as openai/clip-vit-base-patch32 publishes it: config.json, the tokenizer files and the weights
    only as a pickled state dict (pytorch_model.bin)."""
    folder.mkdir(parents=True, exist_ok=True)
    model.config.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
