import os

import pytest
import torch
from diffusers import DDPMScheduler, UNet2DModel

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
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
