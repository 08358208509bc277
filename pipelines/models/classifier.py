"""The noise-aware classifier p_phi(y | x_t, t) the bundled models ship for classifier guidance: the U-Net's encoder
half pooled to K logits (training/train_shapes.py trains it, `pipelines.models.loading.load_classifier` loads it)."""

from __future__ import annotations

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin


class AttentionPool2d(torch.nn.Module):
    """guided-diffusion's attention pooling: the mean of the feature map attends to every position (learned position
    embeddings), so the pooled vector keeps where features are, which a mean does not (a smile and a frown have the
    same local edges, on opposite sides)."""

    def __init__(self, channels: int, side: int, head_channels: int = 32):
        super().__init__()
        self.position = torch.nn.Parameter(torch.randn(side * side + 1, channels) / channels**0.5)
        self.attention = torch.nn.MultiheadAttention(channels, channels // head_channels, batch_first=True)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """(B,C,h,w) -> (B,C)."""
        tokens = h.flatten(2).transpose(1, 2)  # (B,hw,C)
        tokens = torch.cat([tokens.mean(dim=1, keepdim=True), tokens], dim=1) + self.position.to(h.dtype)  # (B,hw+1,C)
        return self.attention(tokens[:, :1], tokens, tokens, need_weights=False)[0][:, 0]


class NoiseAwareClassifier(ModelMixin, ConfigMixin):
    """p_phi(y | x_t, t): the U-Net's encoder half (time-conditioned ResNet blocks, downsampling) pooled to K logits,
    by a mean (shapes-16) or, as guided-diffusion's classifiers, by attention (faces-32).

    forward(x_t, t, x0_hat=None) -> logits (B, K); x_t (B,C,H,W) in [-1,1] at noise level t. Being trained on
    noisy x_t it needs no x0_hat, which it accepts and ignores so that it is a guidance classifier as it stands.
    """

    @register_to_config
    def __init__(self, sample_size: int = 16, in_channels: int = 3, num_classes: int = 3,
                 block_out_channels: tuple[int, ...] = (32, 64, 64), norm_num_groups: int = 16, pool: str = "mean"):
        super().__init__()
        from diffusers.models.embeddings import TimestepEmbedding, Timesteps
        from diffusers.models.resnet import Downsample2D, ResnetBlock2D

        temb_channels = 4 * block_out_channels[0]
        self.time_proj = Timesteps(block_out_channels[0], flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embedding = TimestepEmbedding(block_out_channels[0], temb_channels)
        self.conv_in = torch.nn.Conv2d(in_channels, block_out_channels[0], 3, padding=1)
        channels = [block_out_channels[0], *block_out_channels]
        self.resnets = torch.nn.ModuleList(
            ResnetBlock2D(in_channels=c_in, out_channels=c_out, temb_channels=temb_channels, groups=norm_num_groups)
            for c_in, c_out in zip(channels[:-1], channels[1:])
        )
        self.downsamplers = torch.nn.ModuleList(
            Downsample2D(c, use_conv=True, name="op") if i < len(block_out_channels) - 1 else torch.nn.Identity()
            for i, c in enumerate(block_out_channels)
        )
        self.norm_out = torch.nn.GroupNorm(norm_num_groups, block_out_channels[-1])
        if pool == "attention":
            self.attention_pool = AttentionPool2d(block_out_channels[-1], sample_size // 2 ** (len(block_out_channels) - 1))
        elif pool != "mean":
            raise ValueError(f"pool must be 'mean' or 'attention'; got {pool!r}")
        self.head = torch.nn.Linear(block_out_channels[-1], num_classes)

    def forward(self, x_t: torch.Tensor, t, x0_hat: torch.Tensor | None = None) -> torch.Tensor:
        t = torch.as_tensor(t, device=x_t.device).expand(x_t.shape[0])
        temb = self.time_embedding(self.time_proj(t).to(x_t.dtype))  # (B, 4*C0)
        h = self.conv_in(x_t)
        for resnet, down in zip(self.resnets, self.downsamplers):
            h = down(resnet(h, temb))
        h = torch.nn.functional.silu(self.norm_out(h))  # (B, C_last, h, w)
        return self.head(self.attention_pool(h) if self.config.pool == "attention" else h.mean(dim=(2, 3)))
