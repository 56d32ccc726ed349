"""Squeeze-and-excitation as EfficientNet uses it (1x1 convs with bias, sigmoid gate)."""
from __future__ import annotations

import torch
import torch.nn as nn

from .activations import create_act_layer


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, rd_channels: int, act_layer: str | type[nn.Module] = "swish") -> None:
        super().__init__()
        self.conv_reduce = nn.Conv2d(channels, rd_channels, 1, bias=True)
        self.act1 = create_act_layer(act_layer, inplace=True)
        self.conv_expand = nn.Conv2d(rd_channels, channels, 1, bias=True)
        self.gate = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x.mean, not adaptive_avg_pool2d: the same op timm uses, so FLOP counters see the same graph.
        x_se = x.mean((2, 3), keepdim=True)
        x_se = self.conv_expand(self.act1(self.conv_reduce(x_se)))
        return x * self.gate(x_se)
