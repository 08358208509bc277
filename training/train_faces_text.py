"""Train the bundled text-to-image model faces-text-32: a pixel-space model of the Stable Diffusion family on captioned
cartoon faces, so that text edits and cross-attention maps run offline on a CPU.

    python -m training.train_faces_text --steps 12000       # trains, or resumes from runs/faces-text-32/checkpoint.pt
    python -m training.train_faces_text --export-only        # exports the checkpoint as it stands
    python -m training.train_faces_text --finetune-from assets/faces-text-32 --steps 25500 --lr 2e-4 \
        --mouth-weight 10 --full-size-cross-attention  # a run in runs/faces-text-32-from-<its steps>
    python -m training.train_faces_text --measure --per-caption 4 --captions 64   # the card's figures

Data: batch i is training.faces.make_batch(B, 32, seed * 1_000_003 + i) with captions drawn by
training.captions from random.Random of the same seed, so a resumed run sees exactly the batches an uninterrupted
one would. A caption is replaced by the empty string with probability p_uncond (classifier-free training).
The U-Net (UNet2DConditionModel, cross-attention to the text at 16 and 8 px, and at 32 px with
--full-size-cross-attention) and the text encoder (a small CLIPTextModel) learn together
||eps - eps_theta(sqrt(abar_t) x_0 + sqrt(1-abar_t) eps, t, tau(caption))||^2 with t uniform over the 1000 steps of
the hub DDPMs' schedule and x_0 (B,3,32,32) in [-1,1]: no VAE, the pixels are the latents. EMA weights of both
are shipped in the Stable Diffusion layout (unet/, text_encoder/, tokenizer/, scheduler/, model_index.json) as
safetensors.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from diffusers import DDIMScheduler, UNet2DConditionModel
from diffusers.training_utils import EMAModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from training import captions, faces
from training.train_shapes import ROOT, lr_at, make_noise_scheduler


@dataclass
class Config:
    name: str = "faces-text-32"
    image_size: int = 32
    seed: int = 0
    batch_size: int = 32
    steps: int = 12000
    lr: float = 1e-3
    warmup: int = 200
    p_uncond: float = 0.1
    ema_decay: float = 0.999
    checkpoint_every: int = 250
    block_out_channels: tuple[int, ...] = (32, 64, 64)  # 32, 16, 8 px; cross-attention at 16 and 8 px (32: below)
    heads: int = 4  # attention heads in the U-Net's transformer blocks
    text_width: int = 64  # the text encoder's hidden size, also the U-Net's cross_attention_dim
    text_layers: int = 2
    pooled_text: bool = True  # the caption, attention-pooled, also added to the time embedding (every ResBlock)
    mouth_weight: float = 1.0  # the loss's weight on the pixels in faces.MOUTH_BOX (1 elsewhere)
    hair_weight: float = 1.0  # the loss's weight on the pixels in faces.HAIR_BOX (1 elsewhere)
    full_size_cross_attention: bool = False  # cross-attention at 32 px too (there only: no 1024-pixel self-attention)


NO_POOLED_TEXT = f"{Config.name}-cross-attention-only"


def differs(saved: dict, config: Config, free: tuple[str, ...]) -> bool:
    """Whether a saved config (a checkpoint's, or an export's record) differs from config in a field not in `free`;
    a field the saved config predates has its default."""
    ours, theirs = (json.loads(json.dumps(c)) for c in (asdict(config), {**asdict(Config()), **saved}))  # lists
    return theirs.keys() != ours.keys() or any(theirs[k] != ours[k] for k in ours if k not in free)


def finetune_dir(config: Config, base: Path) -> Path:
    """runs/<name>-from-<the base's steps>: each fine-tune of a chain keeps its own checkpoint."""
    return ROOT / "runs" / f"{config.name}-from-{json.loads((base / 'training.json').read_text())['steps']}"


def full_size_attentions(config: Config) -> tuple[str, ...]:
    """The state-dict prefixes of the U-Net's attention blocks at full size (full_size_cross_attention)."""
    return "down_blocks.0.attentions.", f"up_blocks.{len(config.block_out_channels) - 1}.attentions."


def make_unet(config: Config) -> UNet2DConditionModel:
    """One level per block_out_channels, cross-attention to the caption in all but the first (and the middle); with
    full_size_cross_attention in the first too, where both attention layers of a transformer block attend to the
    caption (diffusers' only_cross_attention) and the output projection starts at zero (so that a model grown from
    one without them starts as that model); with pooled_text, diffusers' addition_embed_type="text" too: the caption
    attention-pooled and added to the time embedding, which reaches every ResBlock (the 32 px ones included, where
    the mouth's curve is drawn), its output scale zero at first (for the same reason)."""
    levels, first = len(config.block_out_channels), config.full_size_cross_attention
    unet = UNet2DConditionModel(
        sample_size=config.image_size, in_channels=3, out_channels=3, layers_per_block=1,
        block_out_channels=config.block_out_channels,
        down_block_types=("CrossAttnDownBlock2D" if first else "DownBlock2D",)
        + ("CrossAttnDownBlock2D",) * (levels - 1),
        up_block_types=("CrossAttnUpBlock2D",) * (levels - 1) + ("CrossAttnUpBlock2D" if first else "UpBlock2D",),
        only_cross_attention=(first,) + (False,) * (levels - 1),
        cross_attention_dim=config.text_width, attention_head_dim=config.heads, norm_num_groups=16,
        addition_embed_type="text" if config.pooled_text else None, addition_embed_type_num_heads=config.heads,
    )
    if first:
        for attention in (*unet.down_blocks[0].attentions, *unet.up_blocks[-1].attentions):
            torch.nn.init.zeros_(attention.proj_out.weight), torch.nn.init.zeros_(attention.proj_out.bias)
    if config.pooled_text:
        torch.nn.init.zeros_(unet.add_embedding.norm2.weight)
    return unet


def make_text_encoder(config: Config, vocab_size: int) -> CLIPTextModel:
    """A CLIPTextModel over the caption vocabulary, 77 positions as Stable Diffusion's, causal as CLIP's."""
    return CLIPTextModel(CLIPTextConfig(
        vocab_size=vocab_size, hidden_size=config.text_width, intermediate_size=4 * config.text_width,
        num_hidden_layers=config.text_layers, num_attention_heads=config.heads,
        max_position_embeddings=captions.MAX_LENGTH, bos_token_id=0, eos_token_id=1, pad_token_id=1))


def make_scheduler() -> DDIMScheduler:
    """The training schedule (linear betas 1e-4..0.02, 1000 steps, clip_sample) as the DDIM sampler that the
    Stable Diffusion pipelines step, with Stable Diffusion's set_alpha_to_one=False and steps_offset=1: the last
    step keeps some noise, which CycleDiffusion's stochastic sampler needs (sigma_t > 0 at every step)."""
    return DDIMScheduler.from_config(make_noise_scheduler().config, set_alpha_to_one=False, steps_offset=1)


def encode(tokenizer: CLIPTokenizer, text_encoder: CLIPTextModel, prompts: list[str]) -> torch.Tensor:
    """tau(prompts): the text encoder's last hidden states over the padded tokens, (B, 77, text_width)."""
    ids = tokenizer(prompts, padding="max_length", max_length=captions.MAX_LENGTH, return_tensors="pt").input_ids
    return text_encoder(ids).last_hidden_state


def noisy_batch(config: Config, step: int, scheduler) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[str],
                                                               torch.Tensor]:
    """(x_t (B,3,H,W), t (B,), eps (B,3,H,W), prompts, w (B,1,H,W)) for training step `step`, a caption dropped to
    "" with probability p_uncond, w the loss's weight of each pixel: mouth_weight in the mouth's box, hair_weight in
    the hair's, else 1."""
    seed = config.seed * 1_000_003 + step
    images, drawn = faces.make_batch(config.batch_size, config.image_size, seed)
    rng = random.Random(seed)
    prompts = [c if rng.random() >= config.p_uncond else "" for c in captions.captions(drawn, rng)]
    g = torch.Generator().manual_seed(seed)
    t = torch.randint(0, scheduler.config.num_train_timesteps, (config.batch_size,), generator=g)
    eps = torch.randn(images.shape, generator=g)
    w = (1 + (config.mouth_weight - 1) * faces.in_box(drawn, config.image_size, faces.MOUTH_BOX)
         + (config.hair_weight - 1) * faces.in_box(drawn, config.image_size, faces.HAIR_BOX))[:, None].float()
    return scheduler.add_noise(images * 2 - 1, eps, t), t, eps, prompts, w


def weighted_mse(prediction: torch.Tensor, eps: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """sum w (eps_theta - eps)^2 / sum w over pixels and channels: the plain MSE when w is 1 everywhere."""
    return (w * (prediction - eps) ** 2).sum() / (w.sum() * eps.shape[1])


class Run:
    """Models, optimiser and progress of one training run, saved to and restored from <folder>/checkpoint.pt
    (default runs/<name>/, or finetune_dir for a fine-tune)."""

    def __init__(self, config: Config, folder: Path | None = None, grow_from: Path | None = None,
                 finetune_from: Path | None = None):
        self.config = config
        self.dir = Path(folder or (finetune_dir(config, Path(finetune_from)) if finetune_from else
                                   ROOT / "runs" / config.name))
        self.tokenizer = CLIPTokenizer.from_pretrained(captions.write_tokenizer(self.dir / "tokenizer"))
        torch.manual_seed(config.seed)
        self.unet = make_unet(config)
        self.text_encoder = make_text_encoder(config, len(self.tokenizer))
        self.ema = EMAModel(self.parameters(), decay=config.ema_decay)
        self.opt = torch.optim.AdamW(self.parameters(), lr=config.lr, weight_decay=0.0)
        # grown_at: the step a grown run started from; base: the exported model a fine-tuned run started from
        # ({"folder", "command"}: its folder as given and the command that made it)
        self.step, self.seconds, self.grown_at, self.base = 0, 0.0, None, None
        self.checkpoint = self.dir / "checkpoint.pt"
        if self.checkpoint.exists():
            state = torch.load(self.checkpoint, weights_only=False)
            if differs(state["config"], config, free=("steps",)):
                raise ValueError(f"{self.checkpoint} was written with another config: {state['config']}")
            self.unet.load_state_dict(state["unet"])
            self.text_encoder.load_state_dict(state["text_encoder"])
            self.ema.load_state_dict(state["ema"])
            self.opt.load_state_dict(state["opt"])
            self.step, self.seconds, self.grown_at = state["step"], state["seconds"], state.get("grown_at")
            self.base = state.get("base")
        elif grow_from is not None:
            self.grow(Path(grow_from))
        elif finetune_from is not None:
            self.finetune(Path(finetune_from))

    def grow(self, checkpoint: Path) -> None:
        """Start from the checkpoint of a run without pooled_text (its weights and EMA weights, its step and time),
        the pooled-text embedding added at zero output; the optimiser starts afresh."""
        state = torch.load(checkpoint, weights_only=False)
        if differs(state["config"], replace(self.config, pooled_text=False), free=("name", "steps")):
            raise ValueError(f"{checkpoint} is not this config without pooled_text: {state['config']}")
        old = replace(self.config, pooled_text=False)
        unet, text_encoder = make_unet(old), make_text_encoder(old, len(self.tokenizer))
        ema = EMAModel([*unet.parameters(), *text_encoder.parameters()], decay=self.config.ema_decay)
        ema.load_state_dict(state["ema"])
        ema.copy_to([*unet.parameters(), *text_encoder.parameters()])
        self.load_weights(unet.state_dict(), text_encoder.state_dict(), new=("add_embedding.",))
        self.ema = EMAModel(self.parameters(), decay=self.config.ema_decay)
        self.ema.optimization_step = ema.optimization_step
        self.load_weights(state["unet"], state["text_encoder"], new=("add_embedding.",))
        self.step, self.seconds, self.grown_at = state["step"], state["seconds"], state["step"]

    def finetune(self, folder: Path) -> None:
        """Start from a model this script exported (its EMA weights, as weights and EMA; its steps and time; the
        command that made it); the optimiser starts afresh. Only the learning rate and the loss's weights may differ
        from its config, and full-size cross-attention may be added (at zero output)."""
        record = json.loads((folder / "training.json").read_text())
        grown = self.config.full_size_cross_attention and not record["config"].get("full_size_cross_attention")
        if differs(record["config"], replace(self.config, full_size_cross_attention=False) if grown else self.config,
                   free=("steps", "lr", "mouth_weight", "hair_weight")):
            raise ValueError(f"{folder} was trained with another config: {record['config']}")
        unet, text_encoder, _, _ = load(folder)
        self.load_weights(unet.state_dict(), text_encoder.state_dict(),
                          new=full_size_attentions(self.config) if grown else ())
        self.ema = EMAModel(self.parameters(), decay=self.config.ema_decay)
        self.ema.optimization_step = record["steps"]
        self.step, self.seconds = record["steps"], 60 * record["minutes"]
        self.base = {"folder": str(folder), "command": record["command"]}

    def load_weights(self, unet: dict, text_encoder: dict, new: tuple[str, ...]) -> None:
        """Weights of a model without the modules named by the prefixes `new` (those keep their initial weights);
        ValueError if any other is missing."""
        missing, unexpected = self.unet.load_state_dict(unet, strict=False)
        if unexpected or any(not name.startswith(new) for name in missing):
            raise ValueError(f"not this U-Net without {new}: missing {missing}, unexpected {unexpected}")
        self.text_encoder.load_state_dict(text_encoder)

    def parameters(self) -> list[torch.nn.Parameter]:
        return [*self.unet.parameters(), *self.text_encoder.parameters()]

    def save(self) -> None:
        state = dict(config=asdict(self.config), unet=self.unet.state_dict(), ema=self.ema.state_dict(),
                     text_encoder=self.text_encoder.state_dict(), opt=self.opt.state_dict(), step=self.step,
                     seconds=self.seconds, grown_at=self.grown_at, base=self.base)
        tmp = self.checkpoint.with_suffix(".tmp")
        torch.save(state, tmp)
        tmp.replace(self.checkpoint)

    def train_step(self, scheduler) -> float:
        """One AdamW step on the eps loss of batch self.step; the loss."""
        x_t, t, eps, prompts, w = noisy_batch(self.config, self.step, scheduler)
        loss = weighted_mse(self.unet(x_t, t, encode(self.tokenizer, self.text_encoder, prompts)).sample, eps, w)
        for group in self.opt.param_groups:
            group["lr"] = lr_at(self.step, self.config)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.parameters(), 1.0)
        self.opt.step()
        self.ema.step(self.parameters())
        self.step += 1
        return loss.item()

    def train(self, log_every: int = 50) -> None:
        """Train up to config.steps, a line of (step, running loss, seconds per step) every log_every steps."""
        scheduler, running = make_noise_scheduler(), None
        self.unet.train(), self.text_encoder.train()
        while self.step < self.config.steps:
            began = time.perf_counter()
            loss = self.train_step(scheduler)
            self.seconds += time.perf_counter() - began
            running = loss if running is None else 0.98 * running + 0.02 * loss
            if self.step % log_every == 0:
                print(f"step {self.step} loss {running:.4f} {self.seconds / self.step:.3f} s/step", flush=True)
            if self.step % self.config.checkpoint_every == 0 or self.step == self.config.steps:
                self.save()
        self.unet.eval(), self.text_encoder.eval()

    def export(self, out: Path) -> Path:
        """The EMA weights in the Stable Diffusion layout (no vae), and training.json (config, steps, minutes)."""
        unet, text_encoder = make_unet(self.config), make_text_encoder(self.config, len(self.tokenizer))
        self.ema.copy_to([*unet.parameters(), *text_encoder.parameters()])
        out = Path(out)
        unet.save_pretrained(out / "unet", safe_serialization=True)
        text_encoder.save_pretrained(out / "text_encoder", safe_serialization=True)
        captions.write_tokenizer(out / "tokenizer")  # vocab.json and merges.txt beside tokenizer.json
        make_scheduler().save_pretrained(out / "scheduler")
        (out / "model_index.json").write_text(json.dumps(model_index(), indent=2) + "\n")
        stages = [f"--steps {self.step}"]
        if self.grown_at is not None:
            stages = [f"--no-pooled-text --steps {self.grown_at}",
                      f"{stages[0]} --grow-from runs/{NO_POOLED_TEXT}/checkpoint.pt"]
        command = " && ".join(f"python -m training.train_faces_text {stage}" for stage in stages)
        if self.base is not None:
            command = (f"{self.base['command']} && python -m training.train_faces_text --finetune-from "
                       f"{self.base['folder']} --steps {self.step} --lr {self.config.lr:g} "
                       f"--mouth-weight {self.config.mouth_weight:g} --hair-weight {self.config.hair_weight:g}"
                       + " --full-size-cross-attention" * self.config.full_size_cross_attention)
        record = dict(config=asdict(self.config), steps=self.step, minutes=round(self.seconds / 60, 1),
                      command=command)
        (out / "training.json").write_text(json.dumps(record, indent=2) + "\n")
        return out


def model_index() -> dict:
    """model_index.json of a Stable Diffusion repository whose vae is absent: the pixels are the latents."""
    import diffusers

    return {"_class_name": "StableDiffusionPipeline", "_diffusers_version": diffusers.__version__,
            "feature_extractor": [None, None], "requires_safety_checker": False, "safety_checker": [None, None],
            "scheduler": ["diffusers", "DDIMScheduler"], "text_encoder": ["transformers", "CLIPTextModel"],
            "tokenizer": ["transformers", "CLIPTokenizer"], "unet": ["diffusers", "UNet2DConditionModel"],
            "vae": [None, None]}


def load(folder: Path) -> tuple[UNet2DConditionModel, CLIPTextModel, CLIPTokenizer, DDIMScheduler]:
    """The exported model's components from its Stable Diffusion layout, in eval mode."""
    return (UNet2DConditionModel.from_pretrained(folder, subfolder="unet").eval(),
            CLIPTextModel.from_pretrained(folder, subfolder="text_encoder").eval(),
            CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer"),
            DDIMScheduler.from_pretrained(folder, subfolder="scheduler"))


@torch.no_grad()
def sample(model: tuple, prompts: list[str], guidance_scale: float, steps: int,
           generator: torch.Generator) -> torch.Tensor:
    """DDIM (eta 0) with classifier-free guidance, eps = eps(x, "") + w (eps(x, prompt) - eps(x, "")):
    one image per prompt, (B,3,H,W) in [0,1]."""
    unet, text_encoder, tokenizer, scheduler = model
    context = encode(tokenizer, text_encoder, [""] * len(prompts) + prompts)  # (2B, 77, D)
    size = unet.config.sample_size
    x = torch.randn(len(prompts), 3, size, size, generator=generator)
    scheduler.set_timesteps(steps)
    for t in scheduler.timesteps:
        eps_u, eps_c = unet(torch.cat([x, x]), t, context).sample.chunk(2)
        x = scheduler.step(eps_u + guidance_scale * (eps_c - eps_u), t, x).prev_sample
    return (x / 2 + 0.5).clamp(0, 1)


def measure_model(folder: Path, n_captions: int, per_caption: int, guidance_scale: float, steps: int,
                  seed: int) -> dict[str, float]:
    """Shares of samples whose measured attributes match their caption's, per attribute and all at once, and the
    share of well-formed faces: n_captions captions of seeded generator faces, per_caption samples each."""
    model = load(folder)
    drawn = faces.sample_faces(n_captions, model[0].config.sample_size, torch.Generator().manual_seed(seed))
    rng = random.Random(seed)
    wanted = [captions.attributes(drawn, i) for i in range(n_captions)] * per_caption
    prompts = [captions.caption(named, rng) for named in wanted]
    images = torch.cat([sample(model, prompts[i:i + 64], guidance_scale, steps, torch.Generator().manual_seed(seed + i))
                        for i in range(0, len(prompts), 64)])
    seen = [captions.read_attributes(image) for image in images]
    shares = {k: sum(s[k] == w[k] for s, w in zip(seen, wanted)) / len(seen) for k in wanted[0]}
    shares["all"] = sum(s == w for s, w in zip(seen, wanted)) / len(seen)
    shares["well formed"] = sum(faces.measure(image).well_formed for image in images) / len(images)
    return shares


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=Config.steps)
    parser.add_argument("--seed", type=int, default=Config.seed)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--out", type=Path, default=ROOT / "assets" / Config.name)
    parser.add_argument("--export-only", action="store_true", help="only export the checkpoint as it stands")
    parser.add_argument("--no-pooled-text", action="store_true", help=f"cross-attention only (runs/{NO_POOLED_TEXT})")
    parser.add_argument("--grow-from", type=Path, help="a new run starts from this checkpoint of a run without "
                        "the pooled-text embedding (Run.grow)")
    parser.add_argument("--finetune-from", type=Path, help=f"a new run (runs/{Config.name}-from-<its steps>) starts "
                        "from this exported model (Run.finetune)")
    parser.add_argument("--lr", type=float, default=Config.lr, help="AdamW's learning rate (after the warm-up)")
    parser.add_argument("--mouth-weight", type=float, default=Config.mouth_weight, help="the loss's weight on the "
                        "mouth's box")
    parser.add_argument("--hair-weight", type=float, default=Config.hair_weight, help="the loss's weight on the "
                        "hair's box")
    parser.add_argument("--full-size-cross-attention", action="store_true", help="cross-attention at 32 px too "
                        "(added at zero output to a model fine-tuned without it)")
    parser.add_argument("--measure", action="store_true", help="measure the exported model in --out")
    parser.add_argument("--captions", type=int, default=64, help="--measure: captions of seeded faces")
    parser.add_argument("--per-caption", type=int, default=4, help="--measure: samples per caption")
    parser.add_argument("--guidance-scale", type=float, default=2.0, help="--measure: classifier-free guidance w")
    parser.add_argument("--sample-steps", type=int, default=50, help="--measure: DDIM steps")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.measure:
        began = time.perf_counter()
        shares = measure_model(args.out, args.captions, args.per_caption, args.guidance_scale, args.sample_steps,
                               args.seed)
        print(json.dumps({k: round(100 * v, 1) for k, v in shares.items()}, indent=2))
        print(f"{args.captions * args.per_caption} samples measured in {time.perf_counter() - began:.1f} s")
        return
    config = replace(Config(), steps=args.steps, seed=args.seed, lr=args.lr, mouth_weight=args.mouth_weight,
                     hair_weight=args.hair_weight, full_size_cross_attention=args.full_size_cross_attention)
    if args.no_pooled_text:
        config = replace(config, pooled_text=False, name=NO_POOLED_TEXT)
    run = Run(config, grow_from=args.grow_from, finetune_from=args.finetune_from)
    if not args.export_only:
        run.train()
    print(f"exported {run.step} steps ({run.seconds / 60:.1f} min of training) to {run.export(args.out)}")


if __name__ == "__main__":
    main()
