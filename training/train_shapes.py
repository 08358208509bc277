"""Train a bundled model: a class-conditional UNet2DModel and a noise-aware classifier p_phi(y | x_t, t).

    python -m training.train_shapes                  # trains, or resumes from runs/shapes-16/checkpoint.pt
    python -m training.train_shapes --data faces     # the same for faces-32 (runs/faces-32/)
    python -m training.train_shapes --export-only --out runs/shapes-16/now   # exports the checkpoint as it stands

--data picks the data set and, with it, the model: PRESETS holds each one's Config (name, image size, architecture,
batch size, step counts); shapes-16 is 16x16 coloured shapes (training.shapes), faces-32 32x32 cartoon faces
(training.faces).

Step counts may change between runs (--unet-steps, --classifier-steps): the learning rate is constant after
warm-up, so a run extended or cut short is the same run up to that step.

Data: the data set's generator, a fresh seeded batch every step (batch i is make_batch(B, size, seed * 1_000_003 + i)), so a
resumed run sees exactly the batches an uninterrupted one would. The U-Net learns eps prediction,
||eps - eps_theta(sqrt(abar_t) x_0 + sqrt(1-abar_t) eps, t, y)||^2 with t uniform over the 1000 training steps
of the hub models' schedule; y is replaced by the null class (num_class_embeds - 1) with probability p_uncond,
as classifier-free training does, so the same model also samples unconditionally. Its EMA weights are shipped.
The classifier then learns cross-entropy on x_t of the same schedule. Everything is written to runs/<name>/:
checkpoint.pt (every checkpoint_every steps), loss.csv (phase, step, loss, seconds), and finally the weights
in assets/<name>/ as DDPMPipeline.save_pretrained does (unet/, scheduler/) plus classifier/ and training.json.
Then `python -m training.evaluate_shapes --card` measures the model and writes its card, assets/<name>/README.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel
from diffusers.training_utils import EMAModel
from tqdm.auto import tqdm

from pipelines.models.classifier import NoiseAwareClassifier
from training import faces, shapes

ROOT = Path(__file__).resolve().parent.parent
DATA = {"shapes": shapes, "faces": faces}  # each has CLASSES and make_batch(n, size, seed) -> (images, attributes.label)


@dataclass
class Config:
    name: str = "shapes-16"
    data: str = "shapes"  # a key of DATA
    image_size: int = 16
    seed: int = 0
    batch_size: int = 64
    unet_steps: int = 3000
    classifier_steps: int = 2000
    lr: float = 1e-3
    warmup: int = 200
    p_uncond: float = 0.1
    ema_decay: float = 0.999
    checkpoint_every: int = 250
    block_out_channels: tuple[int, ...] = (32, 64, 64)  # one U-Net level per entry, the image halved between levels
    attention_levels: int = 1  # self-attention in this many of the lowest levels
    classifier_channels: tuple[int, ...] = (32, 64, 64)
    classifier_pool: str = "mean"  # "attention" where the classes differ in where features are (a smile, a frown)


PRESETS = {
    "shapes": Config(),
    "faces": Config(name="faces-32", data="faces", image_size=32, batch_size=32, unet_steps=5500, classifier_steps=3000,
                    block_out_channels=(32, 48, 64, 96), attention_levels=2, classifier_channels=(32, 64, 64, 96),
                    classifier_pool="attention"),
}


def classes(config: Config) -> tuple[str, ...]:
    return DATA[config.data].CLASSES


def make_unet(config: Config) -> UNet2DModel:
    """One level per block_out_channels, self-attention in the lowest attention_levels, one class embedding per class
    plus the null class: shapes-16 ~1.1M parameters (16, 8, 4 px, attention at 4), faces-32 ~2.1M (32, 16, 8, 4 px,
    attention at 8 and 4)."""
    levels = len(config.block_out_channels)
    attention = [level >= levels - config.attention_levels for level in range(levels)]
    return UNet2DModel(
        sample_size=config.image_size,
        block_out_channels=config.block_out_channels,
        layers_per_block=1,
        down_block_types=tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in attention),
        up_block_types=tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attention)),
        norm_num_groups=16,
        num_class_embeds=len(classes(config)) + 1,
    )


def make_classifier(config: Config) -> NoiseAwareClassifier:
    return NoiseAwareClassifier(sample_size=config.image_size, num_classes=len(classes(config)),
                                block_out_channels=config.classifier_channels, pool=config.classifier_pool)


def make_noise_scheduler() -> DDPMScheduler:
    """The hub DDPMs' schedule: linear betas 1e-4..0.02, 1000 steps, clip_sample, fixed_small."""
    return DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4, beta_end=0.02,
                         clip_sample=True, variance_type="fixed_small")


def lr_at(step: int, config: Config) -> float:
    """Linear warm-up, then constant: the EMA does the averaging, and a run can be extended or cut without changing its past."""
    return config.lr * min(1.0, (step + 1) / config.warmup)


def noisy_batch(config: Config, step: int, scheduler: DDPMScheduler):
    """(x_t, t, eps, y) for training step `step`: x_0 (B,3,H,W) in [-1,1] from the generator, t and eps seeded by the step."""
    seed = config.seed * 1_000_003 + step
    images, attributes = DATA[config.data].make_batch(config.batch_size, config.image_size, seed)
    x0 = images * 2 - 1
    g = torch.Generator().manual_seed(seed)
    t = torch.randint(0, scheduler.config.num_train_timesteps, (config.batch_size,), generator=g)
    eps = torch.randn(x0.shape, generator=g)
    drop = torch.rand(config.batch_size, generator=g) < config.p_uncond
    y = torch.where(drop, len(classes(config)), attributes.label)
    return scheduler.add_noise(x0, eps, t), t, eps, y, attributes.label


def _unet_part(config: dict) -> dict:
    """The settings the U-Net depends on: all but the classifier's."""
    return {k: v for k, v in config.items() if not k.startswith("classifier_")}


def _without_steps(config: dict) -> dict:
    """The parts of a config a checkpoint must share to be resumed: all but the step counts, which may grow or shrink.
    A field the checkpoint predates takes its default, as the run that wrote it did."""
    return {k: v for k, v in asdict(Config(**config)).items() if k not in ("unet_steps", "classifier_steps")}


class Run:
    """Models, optimisers and progress of one training run, saved to and restored from runs/<name>/checkpoint.pt."""

    def __init__(self, config: Config):
        self.config = config
        self.dir = ROOT / "runs" / config.name
        self.dir.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(config.seed)
        self.unet = make_unet(config)
        self.ema = EMAModel(self.unet.parameters(), decay=config.ema_decay)
        self.unet_opt = torch.optim.AdamW(self.unet.parameters(), lr=config.lr, weight_decay=0.0)
        self.classifier = make_classifier(config)
        self.classifier_opt = torch.optim.AdamW(self.classifier.parameters(), lr=config.lr, weight_decay=1e-4)
        self.unet_step = self.classifier_step = 0
        self.seconds = 0.0
        self.checkpoint = self.dir / "checkpoint.pt"
        if self.checkpoint.exists():
            state = torch.load(self.checkpoint, weights_only=False)
            saved, wanted = _without_steps(state["config"]), _without_steps(asdict(config))
            if _unet_part(saved) != _unet_part(wanted):
                raise ValueError(f"{self.checkpoint} was written with another config: {state['config']}")
            self.unet.load_state_dict(state["unet"])
            self.ema.load_state_dict(state["ema"])
            self.unet_opt.load_state_dict(state["unet_opt"])
            self.unet_step, self.seconds = state["unet_step"], state["seconds"]
            if saved == wanted:  # otherwise the classifier's settings changed: a new one is trained on the same U-Net
                self.classifier.load_state_dict(state["classifier"])
                self.classifier_opt.load_state_dict(state["classifier_opt"])
                self.classifier_step = state["classifier_step"]

    def save(self) -> None:
        state = dict(config=asdict(self.config), unet=self.unet.state_dict(), ema=self.ema.state_dict(),
                     unet_opt=self.unet_opt.state_dict(), classifier=self.classifier.state_dict(),
                     classifier_opt=self.classifier_opt.state_dict(), unet_step=self.unet_step,
                     classifier_step=self.classifier_step, seconds=self.seconds)
        tmp = self.checkpoint.with_suffix(".tmp")
        torch.save(state, tmp)
        tmp.replace(self.checkpoint)

    def log(self, phase: str, step: int, loss: float) -> None:
        path = self.dir / "loss.csv"
        new = not path.exists()
        with path.open("a", newline="") as f:
            writer = csv.writer(f)
            if new:
                writer.writerow(["phase", "step", "loss", "seconds"])
            writer.writerow([phase, step, f"{loss:.5f}", f"{self.seconds:.1f}"])

    def train(self, phase: str) -> None:
        config, scheduler = self.config, make_noise_scheduler()
        model, opt, total = ((self.unet, self.unet_opt, config.unet_steps) if phase == "unet"
                             else (self.classifier, self.classifier_opt, config.classifier_steps))
        start = self.unet_step if phase == "unet" else self.classifier_step
        if start >= total:
            return
        model.train()
        bar = tqdm(range(start, total), initial=start, total=total, desc=phase, mininterval=10)
        running = None
        for step in bar:
            began = time.perf_counter()
            x_t, t, eps, y, label = noisy_batch(config, step, scheduler)
            if phase == "unet":
                loss = torch.nn.functional.mse_loss(model(x_t, t, class_labels=y).sample, eps)
            else:
                loss = torch.nn.functional.cross_entropy(model(x_t, t), label)
            for group in opt.param_groups:
                group["lr"] = lr_at(step, config)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            if phase == "unet":
                self.ema.step(model.parameters())
                self.unet_step = step + 1
            else:
                self.classifier_step = step + 1
            self.seconds += time.perf_counter() - began
            running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
            bar.set_postfix(loss=f"{running:.4f}")
            if (step + 1) % 50 == 0:
                self.log(phase, step + 1, running)
            if (step + 1) % config.checkpoint_every == 0 or step + 1 == total:
                self.save()
        model.eval()

    def export(self, out: Path) -> Path:
        """unet/ (EMA weights) and scheduler/ as DDPMPipeline.save_pretrained writes them, classifier/, and training.json
        (config, steps, minutes of training, the command that reproduces it)."""
        unet = make_unet(self.config)
        self.ema.copy_to(unet.parameters())
        DDPMPipeline(unet=unet, scheduler=make_noise_scheduler()).save_pretrained(out, safe_serialization=True)
        self.classifier.save_pretrained(out / "classifier", safe_serialization=True)
        record = dict(config=asdict(self.config), unet_steps=self.unet_step, classifier_steps=self.classifier_step,
                      minutes=round(self.seconds / 60, 1),
                      command=f"python -m training.train_shapes --data {self.config.data} "
                              f"--unet-steps {self.unet_step} --classifier-steps {self.classifier_step}")
        (out / "training.json").write_text(json.dumps(record, indent=2))
        return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", choices=PRESETS, default="shapes", help="the data set, and with it the model's preset")
    parser.add_argument("--unet-steps", type=int, default=None, help="default: the preset's")
    parser.add_argument("--classifier-steps", type=int, default=None, help="default: the preset's")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--export-only", action="store_true", help="only export the checkpoint as it stands")
    parser.add_argument("--out", type=Path, default=None, help="where to export (default: assets/<name>)")
    args = parser.parse_args()
    preset = PRESETS[args.data]
    config = replace(preset, unet_steps=preset.unet_steps if args.unet_steps is None else args.unet_steps,
                     classifier_steps=preset.classifier_steps if args.classifier_steps is None else args.classifier_steps)
    torch.set_num_threads(args.threads)
    run = Run(config)
    if not args.export_only:
        run.train("unet")
        run.train("classifier")
    out = run.export(args.out or ROOT / "assets" / config.name)
    print(f"exported {run.unet_step} U-Net + {run.classifier_step} classifier steps "
          f"({run.seconds / 60:.1f} min of training) to {out}")


if __name__ == "__main__":
    main()
