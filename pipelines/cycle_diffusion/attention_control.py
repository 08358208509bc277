"""Cross-attention control (prompt-to-prompt, Hertz et al. 2022) as diffusers attention processors.

A U-Net batch that carries a source and a target branch side by side, its last two chunks being the source's and the
target's conditional rows (StableCycleDiffusionPipeline: [source uncond, target uncond, source cond, target cond], or
[source, target] without classifier-free guidance), has the attention probabilities M (queries: pixels, keys: tokens
or pixels) of its target rows edited with the source's at the same step:
- cross-attention (`attn2`), for the first int(cross_replace_steps * (n + 1)) steps run (n = num_inference_steps,
  counted as prompt-to-prompt and the CycleDiffusion authors' Space count them):
    replace  M_tgt <- M_src                                      (a word swap, prompts of the same token count)
    refine   M_tgt[:, j] <- M_src[:, A(j)] for aligned j, a new token keeps its own column   (the target adds words)
    reweight M_tgt[:, j] <- c M_tgt[:, j] for the tokens j of one word, after the mode's edit
- self-attention (`attn1`) of the layers with at most 16 x 16 queries (prompt-to-prompt's rule for Stable Diffusion),
  M_tgt <- M_src for the first int(self_replace_steps * n) steps.
The unconditional rows are never edited. The same control records the source's and the target's cross-attention maps,
averaged over heads and the layers of one resolution, at a chosen step: which pixels each word attends to.

The U-Net's processors are wrapped once (`control_attention`) and a call passes its control as an argument,
`cross_attention_kwargs={"control": control}`: a U-Net shared by concurrent calls runs its own processors, unchanged,
for every call that passes none.
"""

from __future__ import annotations

import threading

import torch

MODES = ("replace", "refine")
SELF_REPLACE_MAX_QUERIES = 16 * 16


def tokens(tokenizer, ids: list[int]) -> list[str]:
    return [token.replace("</w>", "") for token in tokenizer.convert_ids_to_tokens(ids)]


def prompt_ids(tokenizer, prompt: str) -> list[int]:
    """The token ids the text encoder sees, start and end tokens included, truncated as the pipeline truncates."""
    return tokenizer(prompt, truncation=True, max_length=tokenizer.model_max_length).input_ids


def token_alignment(tokenizer, mode: str, source: str, target: str) -> tuple[torch.Tensor, torch.Tensor]:
    """A (L,) long, the source column of each target token j, and keep (L,) bool, False for tokens new in the target;
    L = tokenizer.model_max_length, padding aligned to itself (prompt-to-prompt's mapper). ValueError when the prompts
    do not fit `mode`."""
    src, tgt = prompt_ids(tokenizer, source), prompt_ids(tokenizer, target)
    length = tokenizer.model_max_length
    A, keep = torch.arange(length), torch.ones(length, dtype=torch.bool)
    if mode == "replace":
        if len(src) != len(tgt):
            raise ValueError(
                f"cross_attention_control='replace' swaps words of the same token count, but the source prompt has "
                f"{len(src) - 2} tokens {tokens(tokenizer, src[1:-1])} and the target {len(tgt) - 2} "
                f"{tokens(tokenizer, tgt[1:-1])}. Change only words of one token each (e.g. 'a photo of a cat' -> "
                f"'a photo of a dog'), or use 'refine' when the target adds words to the source"
            )
        return A, keep
    i = 0
    for j, token in enumerate(tgt):
        if i < len(src) and token == src[i]:
            A[j], i = i, i + 1
        else:
            keep[j] = False
    if i < len(src):
        raise ValueError(
            f"cross_attention_control='refine' needs every token of the source prompt, in order, in the target prompt, "
            f"but {tokens(tokenizer, src[i:i + 1])[0]!r} of {source!r} is missing from {target!r}. Write the target by "
            f"adding words to the source (e.g. 'a cat' -> 'a fluffy cat'), or use 'replace' for a word swap"
        )
    return A, keep


def word_positions(tokenizer, word: str, target: str) -> list[int]:
    """The positions of `word`'s tokens in the target prompt (every occurrence); ValueError when it is not there."""
    ids, word_ids = prompt_ids(tokenizer, target), tokenizer(word, add_special_tokens=False).input_ids
    starts = [j for j in range(1, len(ids) - len(word_ids)) if word_ids and ids[j:j + len(word_ids)] == word_ids]
    if not starts:
        raise ValueError(
            f"the reweighted word {word!r} is not in the target prompt {target!r} (its tokens: "
            f"{tokens(tokenizer, ids[1:-1])}); name a word of the target prompt"
        )
    return [j + k for j in starts for k in range(len(word_ids))]


MIN_MAP_SIDE = 16  # the smallest map side the control records where the U-Net has a larger one


def attention_map_size(unet, height: int, width: int) -> tuple[int, int]:
    """The resolution (h, w) of the cross-attention layers whose maps the control records: of those the U-Net has, the
    one nearest a quarter of the latent's height (prompt-to-prompt's 16 x 16 at Stable Diffusion's 64 x 64 latents)
    but no less than 16 (a small pixel-space model's 16 x 16 rather than its 8 x 8 at 32 x 32)."""
    sizes, h, w = [], height, width
    for block in unet.down_blocks:
        if getattr(block, "has_cross_attention", False):
            sizes.append((h, w))
        if getattr(block, "downsamplers", None):
            h, w = (h + 1) // 2, (w + 1) // 2
    if getattr(unet.mid_block, "has_cross_attention", False):
        sizes.append((h, w))
    wanted = max(height / 4, MIN_MAP_SIDE)
    return min(sizes, key=lambda size: (abs(size[0] - wanted), -size[0]))


class AttentionControl:
    """The edit of the target rows' attention probabilities, and the record of the cross-attention maps.

    alignment, keep: (N, L) from token_alignment, one row per image (None: no replacement); weights: (N, L), c at the
    reweighted word's tokens and 1 elsewhere (None: no reweighting). The pipeline sets `step` before each U-Net call.
    """

    def __init__(self, *, num_chunks: int, cross_steps: int, self_steps: int, alignment: torch.Tensor | None = None,
                 keep: torch.Tensor | None = None, weights: torch.Tensor | None = None, map_step: int | None = None,
                 map_size: tuple[int, int] | None = None, prompts: list[tuple[str, str]] = ()):
        self.num_chunks, self.cross_steps, self.self_steps = num_chunks, cross_steps, self_steps
        self.alignment, self.keep, self.weights = alignment, keep, weights
        self.map_step, self.map_size = map_step, map_size
        self.prompts = list(prompts)  # (source, target) per image, the words of the maps
        self.step = 0
        self.map_sums, self.map_layers = None, 0

    @classmethod
    def from_prompts(cls, tokenizer, sources: list[str], targets: list[str], *, mode: str | None = None,
                     reweight: tuple[str, float] | None = None, cross_replace_steps: float = 0.8,
                     self_replace_steps: float = 0.4, num_inference_steps: int = 50, **kwargs) -> "AttentionControl":
        """The control of N (source, target) pairs, one per image: token_alignment for `mode` (None: no replacement),
        reweight=(word, c) of the target's word, for the first int(cross_replace_steps * (n + 1)) and
        int(self_replace_steps * n) steps of the chain, n = num_inference_steps; kwargs as __init__."""
        alignment = keep = weights = None
        if mode is not None:
            A, keep = zip(*(token_alignment(tokenizer, mode, s, t) for s, t in zip(sources, targets)))
            alignment, keep = torch.stack(A), torch.stack(keep)  # (N, L)
        if reweight is not None:
            weights = torch.ones(len(targets), tokenizer.model_max_length)
            for i, target in enumerate(targets):
                weights[i, word_positions(tokenizer, reweight[0], target)] = reweight[1]
        return cls(alignment=alignment, keep=keep, weights=weights, prompts=list(zip(sources, targets)),
                   cross_steps=int(cross_replace_steps * (num_inference_steps + 1)),
                   self_steps=int(self_replace_steps * num_inference_steps), **kwargs)

    def __call__(self, probs: torch.Tensor, heads: int, is_cross: bool) -> torch.Tensor:
        """probs (num_chunks*N*heads, Q, L) -> the same with the target's conditional rows edited."""
        M = probs.view(self.num_chunks, -1, heads, *probs.shape[1:])  # (chunks, N, heads, Q, L)
        src, tgt = M[-2], M[-1]
        if is_cross:
            tgt = self.edit_cross(src, tgt)
            self.record(src, tgt)
        elif self.step < self.self_steps and probs.shape[1] <= SELF_REPLACE_MAX_QUERIES:
            tgt = src
        return torch.cat([M[:-1], tgt[None]]).view_as(probs)

    def edit_cross(self, src: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
        """M_tgt (N, heads, Q, L) after replace / refine and reweight, given M_src (N, heads, Q, L)."""
        if self.step >= self.cross_steps:
            return tgt
        if self.alignment is not None:
            A = self.alignment.to(src.device)[:, None, None, :].expand_as(src)
            tgt = torch.where(self.keep.to(src.device)[:, None, None, :], src.gather(-1, A), tgt)
        if self.weights is not None:
            tgt = tgt * self.weights.to(tgt)[:, None, None, :]
        return tgt

    def record(self, src: torch.Tensor, tgt: torch.Tensor) -> None:
        """Add the head-averaged maps (N, Q, L) of a layer at map_size to the sums, at map_step only."""
        if self.step != self.map_step or src.shape[2] != self.map_size[0] * self.map_size[1]:
            return
        maps = torch.stack([src.mean(1), tgt.mean(1)]).float()  # (2, N, Q, L)
        self.map_sums = maps if self.map_sums is None else self.map_sums + maps
        self.map_layers += 1

    def word_maps(self, tokenizer) -> list[dict[str, list[tuple[str, torch.Tensor]]]] | None:
        """Per image {"source": [(token, (h, w) map)], "target": [...]}: the recorded maps averaged over layers, start
        and end tokens left out; None when nothing was recorded."""
        if self.map_sums is None:
            return None
        maps = (self.map_sums / self.map_layers).unflatten(2, self.map_size).cpu()  # (2, N, h, w, L)
        return [{"source": prompt_maps(tokenizer, source, side[0]), "target": prompt_maps(tokenizer, target, side[1])}
                for (source, target), side in zip(self.prompts, maps.unbind(1))]


def prompt_maps(tokenizer, prompt: str, maps: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
    """(token, maps[..., j]) for each token j of the prompt, start and end tokens left out; maps (h, w, L)."""
    ids = prompt_ids(tokenizer, prompt)
    return [(token, maps[..., j]) for j, token in enumerate(tokens(tokenizer, ids[1:-1]), start=1)]


def check_control(tokenizer, sources: list[str], targets: list[str], mode, reweight, cross_replace_steps,
                  self_replace_steps, map_step, num_steps: int) -> None:
    """ValueError unless the control's arguments are allowed and every (source, target) pair fits the mode."""
    if mode not in (None, *MODES):
        raise ValueError(f"cross_attention_control must be None, 'replace' or 'refine'; got {mode!r}")
    for name, value in (("cross_replace_steps", cross_replace_steps), ("self_replace_steps", self_replace_steps)):
        if not isinstance(value, (int, float)) or not 0 <= value <= 1:
            raise ValueError(f"{name} is the fraction of the steps with replaced attention, in [0, 1]; got {value!r}")
    if reweight is not None and not (isinstance(reweight, (tuple, list)) and len(reweight) == 2
                                     and isinstance(reweight[0], str) and isinstance(reweight[1], (int, float))):
        raise ValueError(f"reweight must be (word, c): a word of the target prompt and its attention scale; got "
                         f"{reweight!r}")
    if map_step is not None and (not isinstance(map_step, int) or not 0 <= map_step < num_steps):
        raise ValueError(f"attention_map_step must be a step of the chain, 0 to {num_steps - 1}; got {map_step!r}")
    AttentionControl.from_prompts(tokenizer, sources, targets, mode=mode, reweight=reweight, num_chunks=2)


class ControlledAttnProcessor:
    """A layer's own processor, or, for a call that passes an AttentionControl, diffusers' AttnProcessor (an explicit
    softmax) with the attention probabilities M edited by it."""

    def __init__(self, processor):
        self.processor = processor  # the layer's own, run whenever no control is passed

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None,
                 control: AttentionControl | None = None):
        if control is None:
            return self.processor(attn, hidden_states, encoder_hidden_states=encoder_hidden_states,
                                  attention_mask=attention_mask, temb=temb)
        is_cross = encoder_hidden_states is not None
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch_size, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch_size, channel, height * width).transpose(1, 2)
        batch_size, sequence_length, _ = (encoder_hidden_states if is_cross else hidden_states).shape
        attention_mask = attn.prepare_attention_mask(attention_mask, sequence_length, batch_size)
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)

        query = attn.to_q(hidden_states)
        if not is_cross:
            encoder_hidden_states = hidden_states
        elif attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        query = attn.head_to_batch_dim(query)  # (B*heads, Q, d)
        key = attn.head_to_batch_dim(attn.to_k(encoder_hidden_states))  # (B*heads, L, d)
        value = attn.head_to_batch_dim(attn.to_v(encoder_hidden_states))

        probs = control(attn.get_attention_scores(query, key, attention_mask), attn.heads, is_cross)  # M
        hidden_states = attn.batch_to_head_dim(torch.bmm(probs, value))
        hidden_states = attn.to_out[1](attn.to_out[0](hidden_states))  # linear, dropout
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch_size, channel, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


_wrapping = threading.Lock()


def control_attention(unet) -> None:
    """Wrap every attention processor of `unet` in a ControlledAttnProcessor, once (a second call leaves them): a call
    then edits the attention by passing cross_attention_kwargs={"control": control}, and runs the U-Net's own
    processors without one."""
    with _wrapping:
        processors = unet.attn_processors
        if not all(isinstance(p, ControlledAttnProcessor) for p in processors.values()):
            unet.set_attn_processor({name: p if isinstance(p, ControlledAttnProcessor) else ControlledAttnProcessor(p)
                                     for name, p in processors.items()})
