"""Offline replicas of the hub repositories the app loads: the published files and layout, random weights.

    python -m benchmarks.replicas DIR

writes DIR/google/ddpm-celebahq-256, DIR/google/ddpm-cat-256 and DIR/openai/clip-vit-base-patch32 as the hub
publishes them (flat at the repository root, weights only as pickled `.bin` written by torch.save(state_dict), no
safetensors), so that `STEER_MODEL_DIR=DIR` exercises the app's loaders on the real layout without network.

Where the files come from:
- UNet2DModel and DDPMScheduler configs: google/ddpm-cat-256's published config.json and scheduler_config.json
  (as quoted in whaler404/Hf-Learn, diffusers_learn/api/models/unets/unet2dmodel/unet2dmodel.md). The celebahq
  repository publishes the same architecture and schedule (113,673,219 parameters, mid-block 512x8x8; linear betas
  1e-4..0.02, 1000 steps, clip_sample, fixed_small), so both replicas use these configs.
- model_index.json: the DDPMPipeline index both repositories publish (unet + scheduler).
- The U-Net state dict keeps the attention parameter names of diffusers 0.0.4, which wrote these checkpoints
  (`query`/`key`/`value`/`proj_attn`; diffusers renames them to `to_q`/`to_k`/`to_v`/`to_out.0` when it loads a
  non-sharded checkpoint, `ModelMixin._fix_state_dict_keys_on_load`).
- CLIP: openai/clip-vit-base-patch32's published config.json (quoted in whaler404/Hf-Learn,
  transformers_learn/api/models/multimodal_models/clip/clip.md; 151,277,313 parameters) and its original
  preprocessor_config.json; its state dict keeps the persistent `position_ids` buffers the published file has.
  The tokenizer cannot be downloaded: a byte-level BPE vocabulary of the real size and layout (256 byte symbols,
  the same with `</w>`, 48,894 merge products, then `<|startoftext|>` = 49406 and `<|endoftext|>` = 49407) whose
  merges are generated (letter n-grams) instead of learned, written as the same five tokenizer files.
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import string
import tempfile
from pathlib import Path

import torch

UNET_PARAMETERS = 113_673_219
CLIP_PARAMETERS = 151_277_313
DDPM_REPOS = {"google/ddpm-celebahq-256": 0, "google/ddpm-cat-256": 1}  # repository -> weight seed
CLIP_REPO = "openai/clip-vit-base-patch32"
CLIP_SEED = 2

UNET_CONFIG = {
    "_class_name": "UNet2DModel",
    "_diffusers_version": "0.0.4",
    "act_fn": "silu",
    "attention_head_dim": None,
    "block_out_channels": [128, 128, 256, 256, 512, 512],
    "center_input_sample": False,
    "down_block_types": ["DownBlock2D", "DownBlock2D", "DownBlock2D", "DownBlock2D", "AttnDownBlock2D", "DownBlock2D"],
    "downsample_padding": 0,
    "flip_sin_to_cos": False,
    "freq_shift": 1,
    "in_channels": 3,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-06,
    "norm_num_groups": 32,
    "out_channels": 3,
    "sample_size": 256,
    "time_embedding_type": "positional",
    "up_block_types": ["UpBlock2D", "AttnUpBlock2D", "UpBlock2D", "UpBlock2D", "UpBlock2D", "UpBlock2D"],
}

SCHEDULER_CONFIG = {
    "_class_name": "DDPMScheduler",
    "_diffusers_version": "0.1.1",
    "beta_end": 0.02,
    "beta_schedule": "linear",
    "beta_start": 0.0001,
    "clip_sample": True,
    "num_train_timesteps": 1000,
    "trained_betas": None,
    "variance_type": "fixed_small",
}

MODEL_INDEX = {
    "_class_name": "DDPMPipeline",
    "_diffusers_version": "0.1.1",
    "scheduler": ["diffusers", "DDPMScheduler"],
    "unet": ["diffusers", "UNet2DModel"],
}

# the attention names of diffusers 0.0.4's AttentionBlock, as the published .bin files store them
LEGACY_ATTENTION = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}


def _generic_config(model_type: str, **fields) -> dict:
    """A sub-config as transformers 4.16 wrote it: every generation default spelled out, then the model's fields."""
    config = {
        "_name_or_path": "", "add_cross_attention": False, "architectures": None, "attention_dropout": 0.0,
        "bad_words_ids": None, "bos_token_id": None, "chunk_size_feed_forward": 0, "cross_attention_hidden_size": None,
        "decoder_start_token_id": None, "diversity_penalty": 0.0, "do_sample": False, "dropout": 0.0,
        "early_stopping": False, "encoder_no_repeat_ngram_size": 0, "eos_token_id": None, "finetuning_task": None,
        "forced_bos_token_id": None, "forced_eos_token_id": None, "hidden_act": "quick_gelu",
        "id2label": {"0": "LABEL_0", "1": "LABEL_1"}, "initializer_factor": 1.0, "initializer_range": 0.02,
        "is_decoder": False, "is_encoder_decoder": False, "label2id": {"LABEL_0": 0, "LABEL_1": 1},
        "layer_norm_eps": 1e-05, "length_penalty": 1.0, "max_length": 20, "min_length": 0, "model_type": model_type,
        "no_repeat_ngram_size": 0, "num_beam_groups": 1, "num_beams": 1, "num_hidden_layers": 12,
        "num_return_sequences": 1, "output_attentions": False, "output_hidden_states": False, "output_scores": False,
        "pad_token_id": None, "prefix": None, "projection_dim": 512, "problem_type": None, "pruned_heads": {},
        "remove_invalid_values": False, "repetition_penalty": 1.0, "return_dict": True,
        "return_dict_in_generate": False, "sep_token_id": None, "task_specific_params": None, "temperature": 1.0,
        "tie_encoder_decoder": False, "tie_word_embeddings": True, "tokenizer_class": None, "top_k": 50,
        "top_p": 1.0, "torch_dtype": None, "torchscript": False, "transformers_version": "4.16.0.dev0",
        "use_bfloat16": False,
    }
    config.update(fields)
    return dict(sorted(config.items()))


# note the published text config's bos/eos/pad ids 0/2/1: the tokenizer's are 49406/49407/49407; transformers keeps
# the old eos_token_id == 2 meaning "pool at the highest token id", which is <|endoftext|>
CLIP_CONFIG = {
    "_name_or_path": "openai/clip-vit-base-patch32",
    "architectures": ["CLIPModel"],
    "initializer_factor": 1.0,
    "logit_scale_init_value": 2.6592,
    "model_type": "clip",
    "projection_dim": 512,
    "text_config": _generic_config(
        "clip_text_model", bos_token_id=0, eos_token_id=2, pad_token_id=1, hidden_size=512, intermediate_size=2048,
        max_position_embeddings=77, num_attention_heads=8, vocab_size=49408,
    ),
    "text_config_dict": None,
    "transformers_version": None,
    "vision_config": _generic_config(
        "clip_vision_model", hidden_size=768, image_size=224, intermediate_size=3072, num_attention_heads=12,
        patch_size=32,
    ),
    "vision_config_dict": None,
}

CLIP_PREPROCESSOR = {
    "crop_size": 224,
    "do_center_crop": True,
    "do_normalize": True,
    "do_resize": True,
    "feature_extractor_type": "CLIPFeatureExtractor",
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_std": [0.26862954, 0.26130258, 0.27577711],
    "resample": 3,
    "size": 224,
}

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
VOCAB_SIZE, NUM_MERGES = 49408, 48894


def _added_token(content: str, legacy_type: bool) -> dict:
    token = {"content": content, "single_word": False, "lstrip": False, "rstrip": False, "normalized": True}
    return token | {"__type": "AddedToken"} if legacy_type else token


SPECIAL_TOKENS_MAP = {
    "bos_token": _added_token(BOS, False), "eos_token": _added_token(EOS, False),
    "unk_token": _added_token(EOS, False), "pad_token": EOS,
}

TOKENIZER_CONFIG = {
    "unk_token": _added_token(EOS, True), "bos_token": _added_token(BOS, True), "eos_token": _added_token(EOS, True),
    "pad_token": EOS, "add_prefix_space": False, "errors": "replace", "do_lower_case": True,
    "name_or_path": CLIP_REPO, "model_max_length": 77, "special_tokens_map_file": "./special_tokens_map.json",
    "tokenizer_class": "CLIPTokenizer",
}


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map, which CLIP's byte-level BPE shares."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = printable[:], 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, chars)))


def bpe_vocabulary() -> tuple[dict[str, int], list[str]]:
    """(vocab, merges) laid out as CLIP's: byte symbols, byte symbols + '</w>', one product per merge, BOS, EOS.

    The merges join lower-case letter n-grams, shortest first (in-word and word-final), until there are 48,894."""
    symbols = list(bytes_to_unicode().values())
    tokens = symbols + [s + "</w>" for s in symbols]
    merges: list[str] = []
    prefixes = list(string.ascii_lowercase)
    while len(merges) < NUM_MERGES:
        longer = []
        for prefix, letter in itertools.product(prefixes, string.ascii_lowercase):
            for suffix in ("", "</w>"):
                merges.append(f"{prefix} {letter}{suffix}")
                tokens.append(f"{prefix}{letter}{suffix}")
            longer.append(prefix + letter)
            if len(merges) >= NUM_MERGES:
                break
        prefixes = longer
    merges, tokens = merges[:NUM_MERGES], tokens[: 512 + NUM_MERGES]
    tokens += [BOS, EOS]
    assert len(tokens) == len(set(tokens)) == VOCAB_SIZE
    return {token: i for i, token in enumerate(tokens)}, merges


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n")


def _parameters(state_dict: dict[str, torch.Tensor], skip: tuple[str, ...] = ()) -> int:
    return sum(v.numel() for k, v in state_dict.items() if not k.endswith(skip))


def write_ddpm(path: Path, seed: int) -> Path:
    """One google/ddpm-*-256 repository: config.json, scheduler_config.json, model_index.json,
    diffusion_pytorch_model.bin (a torch.save'd state dict with diffusers 0.0.4's attention names)."""
    from diffusers import UNet2DModel

    path.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    unet = UNet2DModel.from_config(UNET_CONFIG)
    attention = [name for name, module in unet.named_modules() if getattr(module, "_from_deprecated_attn_block", False)]
    state_dict = {}
    for key, value in unet.state_dict().items():
        for block in attention:
            for new, old in LEGACY_ATTENTION.items():
                if key.startswith(f"{block}.{new}."):
                    key = f"{block}.{old}." + key.removeprefix(f"{block}.{new}.")
        state_dict[key] = value.contiguous()
    count = _parameters(state_dict)
    if count != UNET_PARAMETERS:
        raise AssertionError(f"the replica U-Net has {count:,} parameters; the published one has {UNET_PARAMETERS:,}")
    _write_json(path / "config.json", UNET_CONFIG)
    _write_json(path / "scheduler_config.json", SCHEDULER_CONFIG)
    _write_json(path / "model_index.json", MODEL_INDEX)
    torch.save(state_dict, path / "diffusion_pytorch_model.bin")
    return path


def write_clip(path: Path, seed: int = CLIP_SEED) -> Path:
    """openai/clip-vit-base-patch32 as published (less its flax/tf weights): config.json, preprocessor_config.json,
    vocab.json, merges.txt, tokenizer.json, tokenizer_config.json, special_tokens_map.json, pytorch_model.bin."""
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

    path.mkdir(parents=True, exist_ok=True)
    vocab, merges = bpe_vocabulary()
    _write_json(path / "vocab.json", vocab)
    (path / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    with tempfile.TemporaryDirectory() as tmp:  # tokenizer.json as the library serialises this vocabulary
        CLIPTokenizer(vocab=vocab, merges=[tuple(m.split()) for m in merges], model_max_length=77).save_pretrained(tmp)
        shutil.copy(Path(tmp) / "tokenizer.json", path / "tokenizer.json")
    _write_json(path / "tokenizer_config.json", TOKENIZER_CONFIG)
    _write_json(path / "special_tokens_map.json", SPECIAL_TOKENS_MAP)
    _write_json(path / "preprocessor_config.json", CLIP_PREPROCESSOR)
    _write_json(path / "config.json", CLIP_CONFIG)

    torch.manual_seed(seed)
    model = CLIPModel(CLIPConfig.from_pretrained(path))
    state_dict = {k: v.contiguous() for k, v in model.state_dict().items()}
    for tower, positions in (("text_model", 77), ("vision_model", 50)):  # persistent buffers in the published file
        state_dict[f"{tower}.embeddings.position_ids"] = torch.arange(positions).expand(1, -1).contiguous()
    count = _parameters(state_dict, skip=("position_ids",))
    if count != CLIP_PARAMETERS:
        raise AssertionError(f"the replica CLIP has {count:,} parameters; the published one has {CLIP_PARAMETERS:,}")
    torch.save(state_dict, path / "pytorch_model.bin")
    return path


def write_replicas(root) -> dict[str, Path]:
    """Write the three replicas under root/<org>/<name>; returns {repository id: directory}."""
    root = Path(root)
    written = {repo: write_ddpm(root / repo, seed) for repo, seed in DDPM_REPOS.items()}
    written[CLIP_REPO] = write_clip(root / CLIP_REPO)
    for directory in written.values():  # the published layout has none; a stray one would hide the .bin path
        for stray in directory.rglob("*.safetensors"):
            stray.unlink()
    return written


def replicas_present(root) -> bool:
    """Whether root already holds all three replicas (their weights and configs)."""
    root = Path(root)
    files = [root / repo / name for repo in DDPM_REPOS for name in ("config.json", "diffusion_pytorch_model.bin")]
    files += [root / CLIP_REPO / name for name in ("config.json", "tokenizer.json", "pytorch_model.bin")]
    return all(f.is_file() for f in files)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", help="the folder to write into (STEER_MODEL_DIR)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    for repo, directory in write_replicas(args.root).items():
        files = ", ".join(f"{p.name} ({p.stat().st_size / 2**20:.1f} MiB)" for p in sorted(directory.iterdir()))
        print(f"{repo}: {files}")


if __name__ == "__main__":
    main()
