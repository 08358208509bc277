"""The model layer: local directories through the registry loader, one cached instance, clear errors."""

import pytest
import torch

from pipelines.models import loading, registry, timing


@pytest.fixture(autouse=True)
def empty_cache(monkeypatch):
    monkeypatch.setattr(loading, "cache", loading.ModelCache())


def test_loads_a_local_save_pretrained_directory(tiny_model_dir):
    model = loading.load_diffusion(str(tiny_model_dir))
    assert model.unet.config.sample_size == 32
    assert model.unet.device.type == "cpu" and model.unet.dtype == torch.float32  # no GPU here: CPU in fp32
    assert not model.unet.training and not any(p.requires_grad for p in model.unet.parameters())
    assert model.scheduler_config["num_train_timesteps"] == 1000


def test_cache_returns_the_same_object_and_loads_once(tiny_model_dir):
    first = loading.load_diffusion(str(tiny_model_dir))
    second = loading.load_diffusion(str(tiny_model_dir))
    assert first is second and first.unet is second.unet
    assert loading.cache.load_count[str(tiny_model_dir)] == 1


def test_default_model_comes_from_the_environment(tiny_model_dir, monkeypatch):
    monkeypatch.setenv("STEER_MODEL", str(tiny_model_dir))
    assert loading.load_diffusion().model_id == str(tiny_model_dir)
    assert registry.diffusion_model_ids()[0] == str(tiny_model_dir)


def test_model_dir_holds_local_copies_of_registry_models(tiny_model_dir, tmp_path, monkeypatch):
    copy = tmp_path / "copies" / "google" / "ddpm-cat-256"
    copy.parent.mkdir(parents=True)
    tiny_model_dir.rename(copy)
    monkeypatch.setenv("STEER_MODEL_DIR", str(tmp_path / "copies"))
    assert loading.load_diffusion("google/ddpm-cat-256").unet.config.sample_size == 32


def test_flat_layout_of_the_google_repositories(tiny_model_dir, tmp_path):
    flat = tmp_path / "flat"
    (tiny_model_dir / "unet").rename(flat)
    for file in (tiny_model_dir / "scheduler").iterdir():
        file.rename(flat / file.name)
    assert loading.load_diffusion(str(flat)).scheduler_config["beta_schedule"] == "linear"


def test_schedulers_are_fresh_per_request(tiny_model_dir):
    model = loading.load_diffusion(str(tiny_model_dir))
    a, b = loading.make_scheduler(model, "ddpm"), loading.make_scheduler(model, "ddim")
    a.set_timesteps(10)
    assert type(b).__name__ == "DDIMScheduler" and b.num_inference_steps is None
    with pytest.raises(ValueError, match="'ddpm' or 'ddim'"):
        loading.make_scheduler(model, "euler")


def test_the_suite_runs_with_the_hub_offline():
    """The hub client reads HF_HUB_OFFLINE once, at import: conftest sets it before anything imports the client."""
    import huggingface_hub.constants

    assert huggingface_hub.constants.HF_HUB_OFFLINE


def test_unknown_ids_are_refused_without_touching_the_hub():
    with pytest.raises(loading.ModelLoadError, match="neither a registry model nor a local directory"):
        loading.load_diffusion("someone/arbitrary-model")
    with pytest.raises(loading.ModelLoadError, match="is a clip model"):
        loading.load_diffusion("openai/clip-vit-base-patch32")


def test_unreachable_hub_names_the_model_and_the_way_out(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub

    def offline(*args, **kwargs):
        raise huggingface_hub.errors.LocalEntryNotFoundError("no network and no cached copy")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(loading.ModelLoadError) as err:
        loading.load_diffusion("google/ddpm-cat-256")
    assert "google/ddpm-cat-256" in str(err.value) and "STEER_MODEL_DIR" in str(err.value)


def test_a_directory_without_a_model_says_what_layout_is_needed(tmp_path):
    with pytest.raises(loading.ModelLoadError, match="save_pretrained"):
        loading.load_diffusion(str(tmp_path))


def test_clip_loads_from_a_local_directory(tmp_path):
    from conftest import tiny_clip_components

    model, tokenizer = tiny_clip_components()
    model.save_pretrained(tmp_path / "clip")
    tokenizer.save_pretrained(tmp_path / "clip")
    clip = loading.load_clip(str(tmp_path / "clip"))
    assert clip is loading.load_clip(str(tmp_path / "clip"))
    assert clip.tokenizer("a photo")["input_ids"][0] == tokenizer.bos_token_id


# The hub repositories as they publish: google/ddpm-*-256 and openai/clip-vit-base-patch32 have only pickled .bin
# weights on main, flat at the root; google/ddpm-cifar10-32 has both formats.
PUBLISHED_FILES = {
    "google/ddpm-celebahq-256": [".gitattributes", "README.md", "config.json", "diffusion_pytorch_model.bin",
                                 "model_index.json", "scheduler_config.json"],
    "google/ddpm-cifar10-32": [".gitattributes", "README.md", "config.json", "diffusion_pytorch_model.bin",
                               "diffusion_pytorch_model.safetensors", "model_index.json", "scheduler_config.json"],
    "openai/clip-vit-base-patch32": [".gitattributes", "README.md", "config.json", "flax_model.msgpack", "merges.txt",
                                     "preprocessor_config.json", "pytorch_model.bin", "special_tokens_map.json",
                                     "tf_model.h5", "tokenizer.json", "tokenizer_config.json", "vocab.json"],
}


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_a_published_ddpm_repository_loads_by_id_from_its_bin(tmp_path, monkeypatch):
    from conftest import ddpm_scheduler, tiny_unet, write_published_ddpm

    unet = tiny_unet(seed=3)
    write_published_ddpm(tmp_path / "google" / "ddpm-celebahq-256", unet, ddpm_scheduler())
    monkeypatch.setenv("STEER_MODEL_DIR", str(tmp_path))
    model = loading.load_diffusion("google/ddpm-celebahq-256")
    assert same_weights(model.unet, unet)
    assert model.scheduler_config["variance_type"] == "fixed_small"


def test_the_published_clip_repository_loads_by_id_from_its_bin(tmp_path, monkeypatch):
    from conftest import tiny_clip_components, write_published_clip

    model, tokenizer = tiny_clip_components(seed=4)
    write_published_clip(tmp_path / "openai" / "clip-vit-base-patch32", model, tokenizer)
    monkeypatch.setenv("STEER_MODEL_DIR", str(tmp_path))
    clip = loading.load_clip("openai/clip-vit-base-patch32")
    assert same_weights(clip.model, model)
    assert clip.tokenizer("a photo")["input_ids"] == tokenizer("a photo")["input_ids"]


def test_with_both_formats_the_safetensors_are_loaded(tmp_path):
    from conftest import ddpm_scheduler, tiny_unet, write_published_ddpm

    published, other = tiny_unet(seed=5), tiny_unet(seed=6)
    write_published_ddpm(tmp_path, other, ddpm_scheduler())  # the .bin holds other weights
    published.save_pretrained(tmp_path, safe_serialization=True)
    assert same_weights(loading.load_diffusion(str(tmp_path)).unet, published)


class Payload:
    """A pickled object that would run code when unpickled without torch's weights_only restriction."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_a_bin_holding_anything_but_tensors_is_refused_and_never_run(tmp_path):
    from conftest import ddpm_scheduler, tiny_unet, write_published_ddpm

    write_published_ddpm(tmp_path / "model", tiny_unet(), ddpm_scheduler())
    marker = tmp_path / "payload-ran"
    torch.save({"conv_in.weight": Payload(marker)}, tmp_path / "model" / "diffusion_pytorch_model.bin")
    with pytest.raises(loading.ModelLoadError, match="pickled objects other than tensors") as err:
        loading.load_diffusion(str(tmp_path / "model"))
    assert "safetensors" in str(err.value) and not marker.exists()


@pytest.mark.parametrize("repo, fetched", [
    ("google/ddpm-celebahq-256", ["config.json", "diffusion_pytorch_model.bin", "model_index.json", "scheduler_config.json"]),
    ("google/ddpm-cifar10-32", ["config.json", "diffusion_pytorch_model.safetensors", "model_index.json", "scheduler_config.json"]),
    ("openai/clip-vit-base-patch32", ["config.json", "merges.txt", "preprocessor_config.json", "pytorch_model.bin",
                                      "special_tokens_map.json", "tokenizer.json", "tokenizer_config.json", "vocab.json"]),
])
def test_from_the_hub_only_configs_tokenizer_files_and_one_weight_format_are_downloaded(repo, fetched, tmp_path, monkeypatch):
    import fnmatch

    import huggingface_hub

    asked = {}

    def snapshot_download(repo_id, allow_patterns=None, **kwargs):
        asked[repo_id] = sorted(f for f in PUBLISHED_FILES[repo_id] if any(fnmatch.fnmatch(f, p) for p in allow_patterns))
        return str(tmp_path)

    monkeypatch.setattr(huggingface_hub.HfApi, "list_repo_files", lambda self, repo_id, **kw: PUBLISHED_FILES[repo_id])
    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    monkeypatch.delenv("STEER_MODEL_DIR", raising=False)
    assert loading.resolve(repo, registry.REGISTRY[repo].kind) == tmp_path
    assert asked[repo] == fetched


def test_faces_32_is_the_default_without_a_gpu_and_shapes_16_is_still_offered(monkeypatch):
    monkeypatch.delenv("STEER_MODEL", raising=False)
    monkeypatch.setattr(registry, "device_and_dtype", lambda: (torch.device("cpu"), torch.float32))
    registry._hub_default_can_serve.cache_clear()
    assert registry.default_model_id() == "faces-32"
    assert {"faces-32", "shapes-16"} <= set(registry.diffusion_model_ids())
    registry._hub_default_can_serve.cache_clear()


def test_seconds_per_eval_is_measured_per_batch_size(tiny_model_dir, monkeypatch):
    monkeypatch.setattr(timing, "_seconds", {})
    model = loading.load_diffusion(str(tiny_model_dir))
    assert timing.measured_seconds(model.model_id, batch_size=4) is None
    one, four = timing.seconds_per_eval(model), timing.seconds_per_eval(model, batch_size=4)
    assert timing.seconds_per_eval(model, batch_size=4) == four  # measured once
    assert {key[3] for key in timing._seconds} == {1, 4}
    assert (timing.measured_seconds(model.model_id), timing.measured_seconds(model.model_id, batch_size=4)) == (one, four)
    assert timing.measured_seconds(model.model_id, grad=True, batch_size=4) is None
