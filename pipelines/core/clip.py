"""CLIP as a differentiable judge of images: preprocessing in torch, text and image embeddings, logits.

Images come in as (B,3,H,W) in [-1,1] (the samplers' range) and stay differentiable, so gradients of a
CLIP score flow back to x_t. The PIL processor of transformers is not used for that reason.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
CONTEXT_TOKENS = 77  # CLIP's text context, start and end tokens included


def token_count(tokenizer, text: str) -> int:
    """How many tokens CLIP's text encoder would read for `text`, start and end tokens included (not truncated)."""
    return len(tokenizer(text, truncation=False)["input_ids"])


class ClipJudge:
    """Wraps a transformers CLIPModel + tokenizer. Embeddings are L2-normalised, in fp32."""

    def __init__(self, model, tokenizer):
        self.model = model
        self.tokenizer = tokenizer
        self.size = model.config.vision_config.image_size

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """(B,3,H,W) in [-1,1] -> (B,3,S,S) CLIP input: resize shortest side to S (bicubic), centre crop, normalise."""
        height, width = x.shape[-2:]
        scale = self.size / min(height, width)
        new_h, new_w = max(self.size, round(height * scale)), max(self.size, round(width * scale))
        x = F.interpolate((x.float() + 1) / 2, size=(new_h, new_w), mode="bicubic", antialias=True, align_corners=False)
        top, left = (new_h - self.size) // 2, (new_w - self.size) // 2
        x = x[..., top : top + self.size, left : left + self.size]
        mean = x.new_tensor(CLIP_MEAN).view(1, 3, 1, 1)
        std = x.new_tensor(CLIP_STD).view(1, 3, 1, 1)
        return (x - mean) / std

    def image_embeds(self, x: torch.Tensor) -> torch.Tensor:
        """(B,3,H,W) in [-1,1] -> (B,D) unit vectors; differentiable in x."""
        pixels = self.preprocess(x).to(self.model.dtype)
        emb = self.model.get_image_features(pixel_values=pixels)
        emb = getattr(emb, "pooler_output", emb)
        return F.normalize(emb.float(), dim=-1)

    def check_prompts(self, prompts: list[str]) -> None:
        """Every prompt non-empty and within CLIP's context: a longer one is refused with its count, never cut."""
        if not prompts or any(not p.strip() for p in prompts):
            raise ValueError("every text prompt must be non-empty")
        for prompt in prompts:
            if (n := token_count(self.tokenizer, prompt)) > CONTEXT_TOKENS:
                raise ValueError(f"the text “{prompt[:40]}…” is {n} tokens long; CLIP reads at most {CONTEXT_TOKENS} "
                                 "(its start and end tokens included): shorten it")

    @torch.no_grad()
    def text_embeds(self, prompts: list[str]) -> torch.Tensor:
        """K prompts -> (K,D) unit vectors. Compute once per request and reuse."""
        self.check_prompts(prompts)
        tokens = self.tokenizer(prompts, padding=True, return_tensors="pt").to(self.device)
        emb = self.model.get_text_features(**tokens)
        emb = getattr(emb, "pooler_output", emb)
        return F.normalize(emb.float(), dim=-1)

    def logits(self, x: torch.Tensor, text_emb: torch.Tensor) -> torch.Tensor:
        """Zero-shot logits logit_scale * cos(image_emb, text_emb_k): (B,3,H,W), (K,D) -> (B,K)."""
        return self.model.logit_scale.exp().float() * self.image_embeds(x) @ text_emb.T

    def similarity(self, x: torch.Tensor, text_emb: torch.Tensor) -> torch.Tensor:
        """Cosine similarity of each image to one text: (B,3,H,W), (1,D) or (D,) -> (B,)."""
        return self.image_embeds(x) @ text_emb.reshape(-1)
