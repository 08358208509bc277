"""StableCycleDiffusionPipeline against diffusers' deprecated CycleDiffusionPipeline, same components, steps, settings
and seed, in one run; then with Replace cross-attention control (and the attention maps of one step). Two U-Net
architectures with random weights: Stable Diffusion 1.4's and nota-ai/bk-sdm-tiny's (the BK-SDM authors' unet_config
bk_tiny: three CrossAttn stages of one resnet each, no mid-block; 323,384,964 parameters), SD 1.4's VAE, and CLIP
ViT-L/14's text encoder over a character-level tokenizer.

    python benchmarks/bench_stable_cycle.py                                   # CPU default: 64 px, 4 steps, 3 repeats
    python benchmarks/bench_stable_cycle.py --size 512 --steps 20 --repeats 3  # on a GPU

Each step is one U-Net batch of 4 (both chains, classifier-free guidance). Target: the pipeline within 1.05x of
diffusers' class with the same images, Replace within 1.3x (explicit softmax instead of fused attention).
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import torch
from diffusers import AutoencoderKL, CycleDiffusionPipeline, DDIMScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import parse_args, print_table, timed  # noqa: E402
from pipelines import StableCycleDiffusionPipeline  # noqa: E402

SD14_UNET = dict(block_out_channels=(320, 640, 1280, 1280), layers_per_block=2, cross_attention_dim=768,
                 attention_head_dim=8, down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                 up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3)
BK_SDM_TINY_UNET = dict(block_out_channels=(320, 640, 1280), layers_per_block=1, cross_attention_dim=768,
                        attention_head_dim=8, down_block_types=("CrossAttnDownBlock2D",) * 3,
                        up_block_types=("CrossAttnUpBlock2D",) * 3, mid_block_type=None)


def components(unet_config: dict, device, dtype) -> dict:
    """Stable Diffusion 1.4's components with random weights and `unet_config`'s U-Net; its scheduler as DDIM."""
    chars = [chr(c) for c in range(ord("!"), ord("~") + 1)]
    tokens = chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
    tokenizer = CLIPTokenizer(vocab={token: i for i, token in enumerate(tokens)}, merges=[], model_max_length=77)
    torch.manual_seed(0)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokens), hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id))
    vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4,
                        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)
    unet = UNet2DConditionModel(sample_size=64, in_channels=4, out_channels=4, **unet_config)
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                              set_alpha_to_one=False, steps_offset=1)
    models = dict(vae=vae, text_encoder=text_encoder, unet=unet)
    models = {name: m.to(device, dtype).eval().requires_grad_(False) for name, m in models.items()}
    return dict(**models, tokenizer=tokenizer, scheduler=scheduler, safety_checker=None, feature_extractor=None,
                requires_safety_checker=False)


def main() -> None:
    args = parse_args(__doc__, size=64, steps=4, repeats=3)
    dtype = torch.float16 if args.device == "cuda" else torch.float32
    image = torch.rand(1, 3, args.size, args.size, generator=torch.Generator().manual_seed(0))
    settings = dict(prompt="a photo of a dog", source_prompt="a photo of a cat", image=image, strength=1.0,
                    num_inference_steps=args.steps, guidance_scale=5.0, source_guidance_scale=1.0, eta=0.1,
                    output_type="pt")
    rows = []
    for name, config in (("SD 1.4", SD14_UNET), ("bk-sdm-tiny", BK_SDM_TINY_UNET)):
        parts = components(config, args.device, dtype)
        ours, reference = StableCycleDiffusionPipeline(**parts), CycleDiffusionPipeline(**parts)
        for pipe in (ours, reference):
            pipe.set_progress_bar_config(disable=True)
        steps = ours.total_steps(num_inference_steps=args.steps, strength=settings["strength"])
        def run(pipe, **extra):
            return lambda: pipe(**settings, **extra, generator=torch.Generator().manual_seed(0))

        runs = {
            "diffusers CycleDiffusionPipeline": run(reference),
            "StableCycleDiffusionPipeline": run(ours),
            "  + Replace, maps of one step": run(ours, cross_attention_control="replace", attention_map_step=0),
        }
        with torch.inference_mode():
            images = {run: call().images for run, call in runs.items()}  # also the warm-up
            times = {run: float("inf") for run in runs}
            for _ in range(args.repeats):  # the runs take turns, so a busy spell of a shared machine hits them alike
                times = {run: min(times[run], timed(call, 1)) for run, call in runs.items()}
        base, reference_images = times["diffusers CycleDiffusionPipeline"], images["diffusers CycleDiffusionPipeline"]
        for run in runs:
            difference = (images[run].float() - reference_images.float()).abs().max().item()
            rows.append({"U-Net": name, "run": run, "s/step": f"{times[run] / steps:.2f}",
                         "ratio": f"{times[run] / base:.3f}", "max |image - diffusers'|": f"{difference:.1e}"})
        params = sum(p.numel() for p in parts["unet"].parameters())
        print(f"{name}: U-Net {params:,} parameters")
    print(f"device {args.device} ({dtype}), {args.size}x{args.size} images, {args.steps} steps, strength 1, guidance 5 "
          f"/ 1, eta 0.1, best of {args.repeats}")
    print_table(rows)


if __name__ == "__main__":
    warnings.filterwarnings("ignore", category=FutureWarning)
    main()
