"""The model layer: local directories through the registry loader, one cached instance, clear errors."""

import pytest
import torch

from pipelines import models


@pytest.fixture(autouse=True)
def empty_cache(monkeypatch):
    monkeypatch.setattr(models, "_cache", {})
    monkeypatch.setattr(models, "load_count", {})


def test_loads_a_local_save_pretrained_directory(tiny_model_dir):
    model = models.load_diffusion(str(tiny_model_dir))
    assert model.unet.config.sample_size == 32
    assert model.unet.device.type == "cpu" and model.unet.dtype == torch.float32  # no GPU here: CPU in fp32
    assert not model.unet.training and not any(p.requires_grad for p in model.unet.parameters())
    assert model.scheduler_config["num_train_timesteps"] == 1000


def test_cache_returns_the_same_object_and_loads_once(tiny_model_dir):
    first = models.load_diffusion(str(tiny_model_dir))
    second = models.load_diffusion(str(tiny_model_dir))
    assert first is second and first.unet is second.unet
    assert models.load_count[str(tiny_model_dir)] == 1


def test_default_model_comes_from_the_environment(tiny_model_dir, monkeypatch):
    monkeypatch.setenv("STEER_MODEL", str(tiny_model_dir))
    assert models.load_diffusion().model_id == str(tiny_model_dir)
    assert models.diffusion_model_ids()[0] == str(tiny_model_dir)


def test_model_dir_holds_local_copies_of_registry_models(tiny_model_dir, tmp_path, monkeypatch):
    copy = tmp_path / "copies" / "google" / "ddpm-cat-256"
    copy.parent.mkdir(parents=True)
    tiny_model_dir.rename(copy)
    monkeypatch.setenv("STEER_MODEL_DIR", str(tmp_path / "copies"))
    assert models.load_diffusion("google/ddpm-cat-256").unet.config.sample_size == 32


def test_flat_layout_of_the_google_repositories(tiny_model_dir, tmp_path):
    flat = tmp_path / "flat"
    (tiny_model_dir / "unet").rename(flat)
    for file in (tiny_model_dir / "scheduler").iterdir():
        file.rename(flat / file.name)
    assert models.load_diffusion(str(flat)).scheduler_config["beta_schedule"] == "linear"


def test_schedulers_are_fresh_per_request(tiny_model_dir):
    model = models.load_diffusion(str(tiny_model_dir))
    a, b = models.make_scheduler(model, "ddpm"), models.make_scheduler(model, "ddim")
    a.set_timesteps(10)
    assert type(b).__name__ == "DDIMScheduler" and b.num_inference_steps is None
    with pytest.raises(ValueError, match="'ddpm' or 'ddim'"):
        models.make_scheduler(model, "euler")


def test_unknown_ids_are_refused_without_touching_the_hub():
    with pytest.raises(models.ModelLoadError, match="neither a registry model nor a local directory"):
        models.load_diffusion("someone/arbitrary-model")
    with pytest.raises(models.ModelLoadError, match="is a clip model"):
        models.load_diffusion("openai/clip-vit-base-patch32")


def test_unreachable_hub_names_the_model_and_the_way_out(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub

    def offline(*args, **kwargs):
        raise huggingface_hub.errors.LocalEntryNotFoundError("no network and no cached copy")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(models.ModelLoadError) as err:
        models.load_diffusion("google/ddpm-cat-256")
    assert "google/ddpm-cat-256" in str(err.value) and "STEER_MODEL_DIR" in str(err.value)


def test_a_directory_without_a_model_says_what_layout_is_needed(tmp_path):
    with pytest.raises(models.ModelLoadError, match="save_pretrained"):
        models.load_diffusion(str(tmp_path))


def test_clip_loads_from_a_local_directory(tmp_path):
    from conftest import tiny_clip_components

    model, tokenizer = tiny_clip_components()
    model.save_pretrained(tmp_path / "clip")
    tokenizer.save_pretrained(tmp_path / "clip")
    clip = models.load_clip(str(tmp_path / "clip"))
    assert clip is models.load_clip(str(tmp_path / "clip"))
    assert clip.tokenizer("a photo")["input_ids"][0] == tokenizer.bos_token_id
