"""The bundled model's training script: seeded, resumable to the same weights, exported in the registry's layout."""

import pytest
import torch

from pipelines import models
from training import train_shapes
from training.train_shapes import Config, Run


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


def test_the_export_loads_through_the_registry_loader_and_samples_by_class(tiny_config, monkeypatch):
    monkeypatch.setattr(models, "_cache", {})
    run = train(Config(**tiny_config, unet_steps=2, classifier_steps=1))
    out = run.export(train_shapes.ROOT / "export")
    model = models.load_diffusion(str(out))
    assert model.unet.config.num_class_embeds == 4  # circle, square, triangle and the null class
    classifier = models.load_classifier(out / "classifier")
    x = torch.randn(3, 3, 16, 16)
    assert classifier(x, 500).shape == (3, 3)
    eps = [model.unet(x, 500, class_labels=torch.full((3,), y)).sample for y in range(4)]
    assert not torch.allclose(eps[0], eps[1])  # the label is an input
    assert '"unet_steps": 2' in (out / "training.json").read_text()
