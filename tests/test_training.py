"""The bundled model's training script: seeded, resumable to the same weights, exported in the registry's layout."""

import pytest
import torch

from pipelines.models import loading
from training import train_shapes
from training.train_shapes import DATA, PRESETS, Config, Run, make_classifier, make_unet


@pytest.fixture
def tiny_config(tmp_path, monkeypatch):
    monkeypatch.setattr(train_shapes, "ROOT", tmp_path)
    return dict(name="tiny", batch_size=4, warmup=2, checkpoint_every=2, block_out_channels=(16, 16, 16))


def weights(run: Run) -> dict[str, torch.Tensor]:
    return {**{f"unet.{k}": v for k, v in run.unet.state_dict().items()},
            **{f"classifier.{k}": v for k, v in run.classifier.state_dict().items()},
            **{f"ema.{i}": p for i, p in enumerate(run.ema.shadow_params)}}


def train(config: Config) -> Run:
    run = Run(config)
    run.train("unet")
    run.train("classifier")
    return run


def test_a_resumed_run_ends_with_the_weights_of_an_uninterrupted_one(tiny_config):
    untrained = weights(Run(Config(**{**tiny_config, "name": "untrained"})))
    straight = weights(train(Config(**tiny_config, unet_steps=4, classifier_steps=2)))
    for part in ("unet.", "classifier.", "ema."):  # every part did train
        assert any(not torch.equal(straight[k], untrained[k]) for k in straight if k.startswith(part))
    (train_shapes.ROOT / "runs" / "tiny" / "checkpoint.pt").unlink()
    (train_shapes.ROOT / "runs" / "tiny" / "loss.csv").unlink(missing_ok=True)
    first = train(Config(**tiny_config, unet_steps=2, classifier_steps=0))  # stopped after 2 U-Net steps
    assert (first.unet_step, first.classifier_step) == (2, 0)
    resumed = train(Config(**tiny_config, unet_steps=4, classifier_steps=2))  # a new process picks up the checkpoint
    assert (resumed.unet_step, resumed.classifier_step) == (4, 2)
    after = weights(resumed)
    assert after.keys() == straight.keys()
    assert all(torch.equal(after[k], straight[k]) for k in straight)


def test_a_checkpoint_of_another_config_is_refused(tiny_config):
    train(Config(**tiny_config, unet_steps=2, classifier_steps=0))
    with pytest.raises(ValueError, match="another config"):
        Run(Config(**{**tiny_config, "lr": 5e-4}, unet_steps=2, classifier_steps=0))


def test_a_checkpoint_written_before_the_data_switch_resumes(tiny_config):
    run = train(Config(**tiny_config, unet_steps=2, classifier_steps=0))
    state = torch.load(run.checkpoint, weights_only=False)
    for field in ("data", "attention_levels", "classifier_channels"):  # the fields --data added
        del state["config"][field]
    torch.save(state, run.checkpoint)
    resumed = Run(Config(**tiny_config, unet_steps=4, classifier_steps=0))  # the defaults are what that run used
    assert resumed.unet_step == 2


@pytest.mark.parametrize("data", ["shapes", "faces"])
def test_the_export_loads_through_the_registry_loader_and_samples_by_class(tiny_config, monkeypatch, data):
    monkeypatch.setattr(loading, "cache", loading.ModelCache())
    size, k = PRESETS[data].image_size, len(DATA[data].CLASSES)
    run = train(Config(**tiny_config, data=data, image_size=size, unet_steps=2, classifier_steps=1))
    out = run.export(train_shapes.ROOT / "export")
    model = loading.load_diffusion(str(out))
    assert model.unet.config.num_class_embeds == k + 1  # the data set's classes and the null class
    classifier = loading.load_classifier(out / "classifier")
    x = torch.randn(3, 3, size, size)
    assert classifier(x, 500).shape == (3, k)
    eps = [model.unet(x, 500, class_labels=torch.full((3,), y)).sample for y in range(k + 1)]
    assert not torch.allclose(eps[0], eps[1])  # the label is an input
    record = (out / "training.json").read_text()
    assert '"unet_steps": 2' in record and f"--data {data}" in record


def test_the_shapes_preset_is_the_shipped_architecture():
    bundled = train_shapes.ROOT / "assets" / "shapes-16"
    if not bundled.is_dir():
        pytest.skip("assets/shapes-16 is not trained yet")
    from safetensors.torch import load_file

    config = PRESETS["shapes"]
    assert config == Config()  # `python -m training.train_shapes` trains what it always did
    make_unet(config).load_state_dict(load_file(bundled / "unet" / "diffusion_pytorch_model.safetensors"))
    make_classifier(config).load_state_dict(load_file(bundled / "classifier" / "diffusion_pytorch_model.safetensors"))


def test_the_faces_preset_fits_the_bundle():
    config = PRESETS["faces"]
    unet, classifier = make_unet(config), make_classifier(config)
    assert (unet.config.sample_size, unet.config.num_class_embeds) == (32, 5)  # four classes and the null class
    assert unet.config.down_block_types == ("DownBlock2D", "DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D")  # 32..4 px
    unet_params = sum(p.numel() for p in unet.parameters())
    classifier_params = sum(p.numel() for p in classifier.parameters())
    assert 1.5e6 <= unet_params <= 3e6
    # fp32 safetensors: with shapes-16's 5.3 MB, the bundled weights stay under 25 MB
    assert 4 * (unet_params + classifier_params) + 5.3e6 < 25e6
